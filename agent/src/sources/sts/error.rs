//! Errors of an `AssumeRole` call, named by what failed, and how STS's error answers map to
//! them ([`from_answer`]).
//!
//! STS answers an error with HTTP 4xx/5xx and a JSON body `{"RequestId", "HostId", "Code",
//! "Message", "Recommend"}`. The agent keeps `Code` (checked against a fixed shape) and
//! `RequestId` (for a support ticket) and leaves `Message` out of every error and log line: for a
//! signature mismatch STS may echo the string it signed, which can carry the instance role's
//! AccessKeyId and SecurityToken. The `Display` of each variant says the reason in words
//! instead.

use std::time::Duration;

use crate::credentials::SourceError;
use crate::sources::metadata::MetadataError;

/// What went wrong assuming a profile's RAM role. `Display` is one short line for logs and for
/// callers' 503 messages; it never contains a secret, a token or STS's raw answer.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// The instance role has no credentials the agent may use now (none fetched yet, or they
    /// reached the expiry margin while refreshing fails). Never falls back to anything.
    #[error("cannot assume {role_arn}: the instance role has no usable credentials ({reason})")]
    InstanceRoleUnavailable {
        /// The target role ARN.
        role_arn: String,
        /// Why, in words ([`Unavailable::message`](crate::credentials::Unavailable::message)).
        reason: String,
    },
    /// The region or instance id could not be read from the metadata service.
    #[error("cannot assume {role_arn}: cannot read the instance's region and id: {source}")]
    InstanceFactsUnavailable {
        /// The target role ARN.
        role_arn: String,
        /// The metadata error.
        #[source]
        source: MetadataError,
    },
    /// The `RoleSessionName` built from the instance id and profile name is not one STS accepts.
    #[error("cannot assume {role_arn}: {reason}")]
    InvalidSessionName {
        /// The target role ARN.
        role_arn: String,
        /// What is wrong.
        reason: String,
    },
    /// `NoPermission` (HTTP 403).
    #[error(
        "STS refused to let the instance role assume {role_arn} (NoPermission{}): either the \
         instance role's RAM policies do not grant sts:AssumeRole on that role ARN, or the \
         target role's trust policy does not name the instance role (or its account) as a \
         principal; fix whichever is missing",
        id_hint(.request_id)
    )]
    NoPermission {
        /// The target role ARN.
        role_arn: String,
        /// STS's `RequestId`, when well-formed.
        request_id: Option<String>,
    },
    /// `EntityNotExist.Role` (HTTP 404).
    #[error(
        "role {role_arn} does not exist (EntityNotExist.Role{}): check the profile's role_arn",
        id_hint(.request_id)
    )]
    RoleNotFound {
        /// The target role ARN.
        role_arn: String,
        /// STS's `RequestId`, when well-formed.
        request_id: Option<String>,
    },
    /// `InvalidParameter` or `InvalidParameter.*` (HTTP 400).
    #[error("STS rejected a parameter assuming {role_arn} ({code}{}): {}",
        id_hint(.request_id), parameter_hint(.code))]
    InvalidParameter {
        /// The target role ARN.
        role_arn: String,
        /// The code, e.g. `InvalidParameter.PolicyGrammar`.
        code: String,
        /// STS's `RequestId`, when well-formed.
        request_id: Option<String>,
    },
    /// `InvalidTimeStamp.Expired` or `IllegalTimestamp`: the request's time is too far from
    /// STS's.
    #[error(
        "STS rejected the request time ({code}): this instance's clock differs from STS's by \
         more than 15 minutes; check the clock and its time synchronisation (chrony, NTP)"
    )]
    ClockSkew {
        /// The code.
        code: String,
    },
    /// `SignatureDoesNotMatch`.
    #[error(
        "STS says the request signature does not match (SignatureDoesNotMatch{}): the instance \
         role's AccessKeySecret did not verify the request; a proxy may have altered it",
        id_hint(.request_id)
    )]
    SignatureRejected {
        /// STS's `RequestId`, when well-formed.
        request_id: Option<String>,
    },
    /// `InvalidAccessKeyId.*`, `MissingSecurityToken`, `InvalidSecurityToken.*`: STS does not
    /// accept the instance role's AccessKeyId or SecurityToken.
    #[error(
        "STS refused the instance role's credentials ({code}): the AccessKeyId is unknown or its \
         SecurityToken missing or invalid; the instance role's credentials may have been revoked"
    )]
    InstanceCredentialsRejected {
        /// The code.
        code: String,
    },
    /// `Throttling*`, HTTP 429, or the "user flow control" answer.
    #[error(
        "STS is throttling AssumeRole ({code}): the account's rate limit, shared by all its RAM \
         users and roles, is exceeded; retrying with backoff"
    )]
    Throttled {
        /// The code, or `user flow control`.
        code: String,
    },
    /// HTTP 5xx (`InternalError`, `ServiceUnavailable`, …).
    #[error("STS unavailable: HTTP {status}{}", code_hint(.code))]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// The code, when well-formed.
        code: Option<String>,
    },
    /// Another error answer.
    #[error("STS refused AssumeRole of {role_arn}: HTTP {status}{}{}",
        code_hint(.code), id_hint(.request_id))]
    Rejected {
        /// The target role ARN.
        role_arn: String,
        /// HTTP status.
        status: u16,
        /// The code, when well-formed.
        code: Option<String>,
        /// STS's `RequestId`, when well-formed.
        request_id: Option<String>,
    },
    /// Could not connect, TLS failed, or the connection broke before a whole answer came.
    #[error("cannot reach STS at {endpoint}: {reason}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What the connection reported.
        reason: String,
    },
    /// No whole answer within the limit.
    #[error("STS at {endpoint} did not answer within {after:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The limit that passed.
        after: Duration,
    },
    /// A 200 answer that is not the documented JSON, or an error answer that is not JSON.
    #[error("invalid response from STS (HTTP {status}): {what}")]
    InvalidResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong, never a secret value.
        what: String,
    },
}

fn id_hint(id: &Option<String>) -> String {
    id.as_ref()
        .map_or_else(String::new, |id| format!(", RequestId {id}"))
}

fn code_hint(code: &Option<String>) -> String {
    code.as_ref()
        .map_or_else(String::new, |c| format!(" ({c})"))
}

/// What an `InvalidParameter.*` code asks the operator to check.
fn parameter_hint(code: &str) -> &'static str {
    match code.strip_prefix("InvalidParameter.").unwrap_or("") {
        "RoleArn" => "the profile's role_arn is not acs:ram::<account id>:role/<role name>",
        "RoleSessionName" => "the session name (instance id and profile name) is not accepted",
        "PolicyGrammar" => "the profile's session policy is not a valid RAM policy document",
        "PolicySize" => "the profile's session policy is too long",
        "DurationSeconds" => "duration_secs is outside 900 to the target role's MaxSessionDuration",
        _ => "check the profile's role_arn, policy and duration_secs",
    }
}

impl StsError {
    /// A fixed word per variant, for the `result` label of the refresh metric and for health
    /// output: `instance_role_unavailable`, `instance_facts_unavailable`,
    /// `invalid_session_name`, `no_permission`, `role_not_found`, `invalid_parameter`,
    /// `clock_skew`, `signature_rejected`, `instance_credentials_rejected`, `throttled`,
    /// `sts_unavailable`, `rejected`, `unreachable`, `timeout`, `invalid_response`.
    pub fn kind(&self) -> &'static str {
        match self {
            StsError::InstanceRoleUnavailable { .. } => "instance_role_unavailable",
            StsError::InstanceFactsUnavailable { .. } => "instance_facts_unavailable",
            StsError::InvalidSessionName { .. } => "invalid_session_name",
            StsError::NoPermission { .. } => "no_permission",
            StsError::RoleNotFound { .. } => "role_not_found",
            StsError::InvalidParameter { .. } => "invalid_parameter",
            StsError::ClockSkew { .. } => "clock_skew",
            StsError::SignatureRejected { .. } => "signature_rejected",
            StsError::InstanceCredentialsRejected { .. } => "instance_credentials_rejected",
            StsError::Throttled { .. } => "throttled",
            StsError::Unavailable { .. } => "sts_unavailable",
            StsError::Rejected { .. } => "rejected",
            StsError::Unreachable { .. } => "unreachable",
            StsError::Timeout { .. } => "timeout",
            StsError::InvalidResponse { .. } => "invalid_response",
        }
    }

    /// Whether this is STS's `InvalidParameter.DurationSeconds` (retried once with 3600).
    pub fn is_duration_rejected(&self) -> bool {
        matches!(self, StsError::InvalidParameter { code, .. }
            if code == "InvalidParameter.DurationSeconds")
    }
}

impl SourceError for StsError {
    fn kind(&self) -> &'static str {
        StsError::kind(self)
    }
}

/// The JSON error body STS sends, the fields the agent reads.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
    request_id: Option<String>,
}

/// `s` if it looks like an STS code or request id (`[A-Za-z0-9._-]`, 1 to 128 characters),
/// so nothing else the answer holds reaches a log line.
fn well_formed(s: Option<String>) -> Option<String> {
    s.filter(|s| {
        (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// The error for an STS answer with HTTP `status` (not 200) and `body`, assuming `role_arn`:
///
/// | HTTP | `Code` | error |
/// |---|---|---|
/// | any | `NoPermission` | [`NoPermission`](StsError::NoPermission) |
/// | any | `EntityNotExist.Role` | [`RoleNotFound`](StsError::RoleNotFound) |
/// | any | `InvalidParameter`, `InvalidParameter.*` | [`InvalidParameter`](StsError::InvalidParameter) |
/// | any | `InvalidTimeStamp.Expired`, `IllegalTimestamp`, `InvalidTimeStamp.*` | [`ClockSkew`](StsError::ClockSkew) |
/// | any | `SignatureDoesNotMatch` | [`SignatureRejected`](StsError::SignatureRejected) |
/// | any | `InvalidAccessKeyId.*`, `MissingSecurityToken`, `InvalidSecurityToken.*` | [`InstanceCredentialsRejected`](StsError::InstanceCredentialsRejected) |
/// | any | `Throttling*`, or `Message` mentions "flow control" | [`Throttled`](StsError::Throttled) |
/// | 429 | other | `Throttled` |
/// | 5xx | other | [`Unavailable`](StsError::Unavailable) |
/// | 4xx | other, or no JSON | [`Rejected`](StsError::Rejected) |
/// | other | not JSON | [`InvalidResponse`](StsError::InvalidResponse) |
pub fn from_answer(status: u16, body: &[u8], role_arn: &str) -> StsError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let flow_control = parsed
        .as_ref()
        .and_then(|b| b.message.as_deref())
        .is_some_and(|m| m.to_ascii_lowercase().contains("flow control"));
    let (code, request_id) = match parsed {
        Some(b) => (well_formed(b.code), well_formed(b.request_id)),
        None => (None, None),
    };
    let role_arn = role_arn.to_owned();
    let c = code.as_deref().unwrap_or("");
    match c {
        "NoPermission" => StsError::NoPermission {
            role_arn,
            request_id,
        },
        "EntityNotExist.Role" => StsError::RoleNotFound {
            role_arn,
            request_id,
        },
        _ if c == "InvalidParameter" || c.starts_with("InvalidParameter.") => {
            StsError::InvalidParameter {
                role_arn,
                code: c.to_owned(),
                request_id,
            }
        }
        _ if c == "IllegalTimestamp" || c.starts_with("InvalidTimeStamp.") => {
            StsError::ClockSkew { code: c.to_owned() }
        }
        "SignatureDoesNotMatch" => StsError::SignatureRejected { request_id },
        _ if c == "MissingSecurityToken"
            || c.starts_with("InvalidAccessKeyId.")
            || c.starts_with("InvalidSecurityToken.") =>
        {
            StsError::InstanceCredentialsRejected { code: c.to_owned() }
        }
        _ if c.starts_with("Throttling") => StsError::Throttled { code: c.to_owned() },
        _ if flow_control || status == 429 => StsError::Throttled {
            code: code.unwrap_or_else(|| "user flow control".to_owned()),
        },
        _ if (500..=599).contains(&status) => StsError::Unavailable { status, code },
        _ if (400..=499).contains(&status) => StsError::Rejected {
            role_arn,
            status,
            code,
            request_id,
        },
        _ => StsError::InvalidResponse {
            status,
            what: format!("an unexpected status with {} bytes", body.len()),
        },
    }
}

#[cfg(test)]
mod tests;
