//! STS error answers: the documented JSON body and the status per code.

use http::StatusCode;
use serde::Serialize;

/// `HostId` in every answer, as the real service names its endpoint.
pub(crate) const HOST_ID: &str = "sts.aliyuncs.com";

/// A refusal: HTTP status, `Code` and `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsError {
    /// The HTTP status.
    pub status: u16,
    /// `Code`, e.g. `SignatureDoesNotMatch`.
    pub code: String,
    /// `Message`, in words.
    pub message: String,
}

impl StsError {
    /// An error with any status and code (what [`StsFault::Error`](super::StsFault::Error)
    /// answers).
    pub fn new(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// `code` with the status and message STS gives it (see the table in
    /// `docs/sts-emulator.md`); an unknown code gets 400 and a generic message.
    pub fn of(code: &str) -> Self {
        let (status, message) = match code {
            "SignatureDoesNotMatch" => (400, "Specified signature is not matched with our calculation."),
            "SignatureNonceUsed" => (400, "Specified signature nonce was used already."),
            "IncompleteSignature" => (400, "The request signature does not conform to Aliyun standards."),
            "InvalidTimeStamp.Expired" => (400, "Specified time stamp or date value is expired."),
            "MissingSecurityToken" => (400, "SecurityToken is mandatory for this action."),
            "InvalidSecurityToken.MismatchWithAccessKey" => (400, "Specified SecurityToken mismatch with the AccessKey."),
            "InvalidSecurityToken.Expired" => (400, "Specified SecurityToken is expired."),
            "InvalidAccessKeyId.NotFound" => (404, "Specified access key is not found."),
            "MissingParameter" => (400, "The input parameter that is mandatory for processing this request is not supplied."),
            "InvalidParameter" => (400, "The specified parameter is not valid."),
            "InvalidParameter.RoleArn" => (400, "The parameter RoleArn is wrongly formed."),
            "InvalidParameter.RoleSessionName" => (400, "The parameter RoleSessionName is wrongly formed."),
            "InvalidParameter.DurationSeconds" => (400, "The Min/Max value of DurationSeconds is 15min/the role's MaxSessionDuration."),
            "InvalidParameter.PolicySize" => (400, "The size of Policy must be smaller than 2048 bytes."),
            "InvalidParameter.PolicyGrammar" => (400, "The parameter Policy has not passed grammar check."),
            "InvalidAction.NotFound" => (404, "Specified api is not found, please check your url and method."),
            "InvalidVersion" => (400, "Specified parameter Version is not valid."),
            "NoPermission" => (403, "You are not authorized to do this action. You should be authorized by RAM."),
            "EntityNotExist.Role" => (404, "The role not exists."),
            "InternalError" => (500, "The request processing has failed due to some unknown error."),
            "Throttling.User" => (400, "Request was denied due to user flow control."),
            _ => (400, "The request was refused."),
        };
        Self::new(status, code, message)
    }

    /// `code` with STS's status and a message of the caller's choosing.
    pub(crate) fn with(code: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::of(code)
        }
    }

    /// The HTTP status (500 for a number that is not one).
    pub(crate) fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The documented error body.
    pub(crate) fn body(&self, request_id: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body<'a> {
            request_id: &'a str,
            host_id: &'a str,
            code: &'a str,
            message: &'a str,
            recommend: String,
        }
        let recommend = format!(
            "https://api.aliyun.com/troubleshoot?q={}&product=Sts&requestId={request_id}",
            self.code
        );
        serde_json::to_string(&Body {
            request_id,
            host_id: HOST_ID,
            code: &self.code,
            message: &self.message,
            recommend,
        })
        .expect("serialising strings cannot fail")
    }
}
