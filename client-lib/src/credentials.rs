//! The values the agent returns, and their parsing from its JSON.

use std::fmt;

use secrecy::SecretString;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::Zeroize;

use crate::error::Error;

/// The instance RAM role's STS credentials, as served by `GET /v1/credentials`.
///
/// Shape: the agent's JSON body `{"Code":"Success","AccessKeyId":…,"AccessKeySecret":…,
/// "SecurityToken":…,"Expiration":"YYYY-MM-DDTHH:MM:SSZ","LastUpdated":…}`, the same as the
/// ECS metadata service's credential document.
///
/// `Debug` prints `** redacted **` in place of `AccessKeySecret` and `SecurityToken`; both
/// zeroize their memory on drop ([`secrecy`]). Read them with
/// [`secrecy::ExposeSecret::expose_secret`] only where the request is signed.
#[derive(Clone)]
pub struct Credentials {
    /// `AccessKeyId`, e.g. `STS.NT…`; not secret.
    pub access_key_id: String,
    /// `AccessKeySecret`; secret.
    pub access_key_secret: SecretString,
    /// `SecurityToken` (send it as `x-acs-security-token` or the SDK's equivalent); secret.
    pub security_token: SecretString,
    /// `Expiration` (UTC): after this instant Alibaba Cloud rejects these credentials.
    pub expiration: OffsetDateTime,
    /// `LastUpdated` (UTC): when the metadata service issued them, if the agent said.
    pub last_updated: Option<OffsetDateTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"** redacted **")
            .field("security_token", &"** redacted **")
            .field("expiration", &format_utc(self.expiration))
            .field("last_updated", &self.last_updated.map(format_utc))
            .finish()
    }
}

impl Credentials {
    /// Time left until [`expiration`](Credentials::expiration) at `now`; negative once expired.
    pub fn expires_in(&self, now: OffsetDateTime) -> time::Duration {
        self.expiration - now
    }

    /// Parses the body of a `200` answer to `GET /v1/credentials`. `AccessKeyId` must be
    /// visible ASCII (no space or control character), since errors and logs quote it.
    ///
    /// Errors never quote the body: a malformed body could hold a secret.
    pub(crate) fn from_body(body: &[u8]) -> Result<Credentials, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Wire {
            code: Option<String>,
            access_key_id: Option<String>,
            access_key_secret: Option<String>,
            security_token: Option<String>,
            expiration: Option<String>,
            last_updated: Option<String>,
        }
        let wire: Wire = serde_json::from_slice(body).map_err(|e| {
            // serde_json's message may quote a value (e.g. "invalid type: integer `5`"): keep
            // only the category and the position.
            Error::protocol(format!(
                "credential response is not the expected JSON object ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let access_key_secret = wire.access_key_secret.map(into_secret);
        let security_token = wire.security_token.map(into_secret);
        if let Some(code) = wire.code.as_deref().filter(|c| *c != "Success") {
            return Err(Error::protocol(format!(
                "credential response has Code {:?}, expected \"Success\"",
                crate::error::sanitize_agent_message(code)
            )));
        }
        let access_key_id = required(wire.access_key_id, "AccessKeyId")?;
        // Quoted in errors and logged (`get` prints errors to a terminal): only visible ASCII,
        // as every `AccessKeyId` is; anything else is described, never quoted.
        if !access_key_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::protocol(format!(
                "credential response has an AccessKeyId ({} characters) that is not visible ASCII",
                access_key_id.chars().count()
            )));
        }
        Ok(Credentials {
            access_key_id,
            access_key_secret: required(access_key_secret, "AccessKeySecret")?,
            security_token: required(security_token, "SecurityToken")?,
            expiration: parse_utc(&required(wire.expiration, "Expiration")?, "Expiration")?,
            last_updated: wire
                .last_updated
                .map(|t| parse_utc(&t, "LastUpdated"))
                .transpose()?,
        })
    }
}

/// A field the agent must send.
fn required<T>(value: Option<T>, field: &str) -> Result<T, Error> {
    value.ok_or_else(|| Error::protocol(format!("credential response lacks field {field}")))
}

/// Moves a deserialized string into a [`SecretString`], zeroizing the original buffer.
///
/// (`SecretString::from(String)` may reallocate while shrinking, leaving a copy behind.)
fn into_secret(mut s: String) -> SecretString {
    let secret = SecretString::from(s.as_str());
    s.zeroize();
    secret
}

/// Formats a time as RFC 3339 UTC, whole seconds (`2024-11-08T09:44:50Z`): the shape of
/// `Expiration` and `LastUpdated` in the agent's answer, as the metadata service writes them.
pub fn format_utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&format).unwrap_or_else(|_| format!("{t}"))
}

/// Parses an RFC 3339 time that must be in UTC (`…Z` or `+00:00`), e.g. `2024-11-08T09:44:50Z`.
pub(crate) fn parse_utc(value: &str, field: &str) -> Result<OffsetDateTime, Error> {
    let shown = crate::error::sanitize_agent_message(value);
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        Error::protocol_from(format!("{field} {shown:?} is not an RFC 3339 time"), e)
    })?;
    if !t.offset().is_utc() {
        return Err(Error::protocol(format!("{field} {shown:?} is not in UTC")));
    }
    Ok(t)
}

/// The agent's answer to `GET /v1/health`: `200` when it holds valid credentials, `503` when
/// not. Never contains a secret.
///
/// Every field but [`status`](Health::status) is optional and parsed leniently (a field of an
/// unexpected type is `None`), so an older or newer agent still yields a report; the whole
/// JSON document is kept in [`body`](Health::body).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The HTTP status: `200` healthy, `503` no valid credentials.
    pub status: u16,
    /// `RoleName`: the RAM role the agent serves, if known.
    pub role_name: Option<String>,
    /// `Expiration` of the credentials held, if any (RFC 3339 UTC).
    pub expiration: Option<OffsetDateTime>,
    /// `SecondsLeft`: seconds until that expiration, as the agent computed it.
    pub seconds_left: Option<u64>,
    /// `LastError`: the agent's last refresh error, in words.
    pub last_error: Option<String>,
    /// `Code`, on a `503`: e.g. `CredentialsUnavailable`.
    pub code: Option<String>,
    /// `Message`, on a `503`: why no credentials are available.
    pub message: Option<String>,
    /// The whole JSON body as received.
    pub body: serde_json::Value,
}

impl Health {
    /// Whether the agent reported itself healthy (`200`).
    pub fn is_healthy(&self) -> bool {
        self.status == 200
    }

    /// Parses a `/v1/health` body given with its HTTP status.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Result<Health, Error> {
        let body: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            Error::protocol_from(format!("health response (HTTP {status}) is not JSON"), e)
        })?;
        let text = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| body.get(*n).and_then(|v| v.as_str()))
                .map(str::to_owned)
        };
        let seconds_left = ["SecondsLeft", "seconds_left", "ExpiresInSeconds"]
            .iter()
            .find_map(|n| body.get(*n).and_then(|v| v.as_u64()));
        Ok(Health {
            status,
            role_name: text(&["RoleName", "role_name", "Role"]),
            expiration: text(&["Expiration", "expiration"])
                .and_then(|t| parse_utc(&t, "Expiration").ok()),
            seconds_left,
            last_error: text(&["LastError", "last_error"]),
            code: text(&["Code"]),
            message: text(&["Message"]),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use time::macros::datetime;

    use super::*;

    const MARKER: &str = "MARKER-SECRET-4f1c";

    fn body(expiration: &str) -> String {
        format!(
            r#"{{"Code":"Success","AccessKeyId":"STS.id","AccessKeySecret":"{MARKER}","SecurityToken":"{MARKER}-token","Expiration":"{expiration}","LastUpdated":"2024-11-08T03:44:50Z"}}"#
        )
    }

    #[test]
    fn parses_the_agent_body() {
        let c = Credentials::from_body(body("2024-11-08T09:44:50Z").as_bytes()).unwrap();
        assert_eq!(c.access_key_id, "STS.id");
        assert_eq!(c.access_key_secret.expose_secret(), MARKER);
        assert_eq!(c.security_token.expose_secret(), format!("{MARKER}-token"));
        assert_eq!(c.expiration, datetime!(2024-11-08 09:44:50 UTC));
        assert_eq!(c.last_updated, Some(datetime!(2024-11-08 03:44:50 UTC)));
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::from_body(body("2024-11-08T09:44:50Z").as_bytes()).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains(MARKER), "{debug}");
        assert!(debug.contains("** redacted **"), "{debug}");
        assert!(debug.contains("STS.id"), "{debug}");
        assert!(debug.contains("2024-11-08T09:44:50Z"), "{debug}");
    }

    #[test]
    fn expiration_must_be_rfc3339_utc() {
        for bad in [
            "2024-11-08 09:44:50",
            "2024-11-08T09:44:50+08:00",
            "tomorrow",
            "",
        ] {
            let err = Credentials::from_body(body(bad).as_bytes()).unwrap_err();
            assert!(matches!(err, Error::Protocol { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains("Expiration"), "{err}");
        }
        let plus_zero = Credentials::from_body(body("2024-11-08T09:44:50+00:00").as_bytes());
        assert_eq!(
            plus_zero.unwrap().expiration,
            datetime!(2024-11-08 09:44:50 UTC)
        );
    }

    #[test]
    fn missing_fields_are_named_and_values_never_quoted() {
        let no_secret = r#"{"Code":"Success","AccessKeyId":"STS.id","SecurityToken":"t","Expiration":"2024-11-08T09:44:50Z"}"#;
        let err = Credentials::from_body(no_secret.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("AccessKeySecret"), "{err}");

        // A wrongly typed field makes serde_json quote a value; our message must not.
        let wrong_type =
            r#"{"AccessKeyId":"STS.id","AccessKeySecret":12345987,"SecurityToken":"t"}"#;
        let err = Credentials::from_body(wrong_type.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains("12345987"), "{err}");
        assert!(std::error::Error::source(&err).is_none());

        let not_json = format!("{MARKER} not json");
        let err = Credentials::from_body(not_json.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains(MARKER), "{err}");
    }

    #[test]
    fn a_code_other_than_success_is_refused() {
        let b = body("2024-11-08T09:44:50Z").replace("Success", "Failed");
        let err = Credentials::from_body(b.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("Failed"), "{err}");
    }

    #[test]
    fn health_is_lenient() {
        let h = Health::from_body(
            503,
            br#"{"Code":"CredentialsUnavailable","Message":"agent is starting","RoleName":"web","SecondsLeft":"oops"}"#,
        )
        .unwrap();
        assert!(!h.is_healthy());
        assert_eq!(h.role_name.as_deref(), Some("web"));
        assert_eq!(h.seconds_left, None);
        assert_eq!(h.code.as_deref(), Some("CredentialsUnavailable"));
        assert_eq!(h.message.as_deref(), Some("agent is starting"));

        let h = Health::from_body(
            200,
            br#"{"RoleName":"web","Expiration":"2024-11-08T09:44:50Z","SecondsLeft":3600}"#,
        )
        .unwrap();
        assert!(h.is_healthy());
        assert_eq!(h.expiration, Some(datetime!(2024-11-08 09:44:50 UTC)));
        assert_eq!(h.seconds_left, Some(3600));
        assert!(Health::from_body(200, b"<html>").is_err());
    }
}
