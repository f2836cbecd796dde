//! Parsing `AssumeRole`'s answer (HTTP 200).
//!
//! Documented shape (AssumeRole API reference):
//! `{"RequestId", "AssumedRoleUser": {"Arn", "AssumedRoleId"}, "Credentials": {"AccessKeyId",
//! "AccessKeySecret", "SecurityToken", "Expiration"}}`. Only `Credentials` is required (older
//! documentation names the `AssumedRoleUser` fields differently; the credentials SDKs read only
//! `Credentials` too). `Expiration` is UTC `YYYY-MM-DDTHH:MM:SSZ`.

use std::time::SystemTime;

use secrecy::SecretString;
use time::OffsetDateTime;

use super::error::StsError;
use crate::credentials::Credentials;

/// Bodies over this many bytes are refused (a SecurityToken is a few KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    credentials: Option<RawCredentials>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawCredentials {
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
    security_token: Option<String>,
    expiration: Option<String>,
}

fn invalid(what: impl Into<String>) -> StsError {
    StsError::InvalidResponse {
        status: 200,
        what: what.into(),
    }
}

fn required(value: Option<String>, field: &str) -> Result<String, StsError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        Some(_) => Err(invalid(format!("Credentials.{field} is empty"))),
        None => Err(invalid(format!(
            "Credentials.{field} is missing or not a string"
        ))),
    }
}

/// Parses an `AssumeRole` answer received at wall time `now` into [`Credentials`], with
/// `LastUpdated` = `now` (whole seconds): STS sends no issue time, and the refresher schedules
/// the next call from `Expiration` − `LastUpdated`.
///
/// Rules: a JSON object with an object `Credentials` whose `AccessKeyId`, `AccessKeySecret`,
/// `SecurityToken` and `Expiration` are non-empty strings; `AccessKeyId` printable ASCII
/// without spaces (it is logged); `Expiration` exactly `YYYY-MM-DDTHH:MM:SSZ`. Whether
/// `Expiration` is far enough ahead is the refresher's check (expired on arrival).
///
/// # Errors
/// [`StsError::InvalidResponse`] naming the field, never a secret value.
pub fn parse_credentials(body: &[u8], now: SystemTime) -> Result<Credentials, StsError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        // Position and category only: a serde_json message may quote the input.
        invalid(format!(
            "malformed JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let raw = answer
        .credentials
        .ok_or_else(|| invalid("no Credentials object"))?;
    let access_key_id = required(raw.access_key_id, "AccessKeyId")?;
    if access_key_id.len() > 256 || !access_key_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "Credentials.AccessKeyId is over 256 bytes or has a non-printable character",
        ));
    }
    let access_key_secret = SecretString::from(required(raw.access_key_secret, "AccessKeySecret")?);
    let security_token = SecretString::from(required(raw.security_token, "SecurityToken")?);
    let expiration_text = required(raw.expiration, "Expiration")?;
    let expiration = parse_expiration(&expiration_text)?;
    let last_updated = OffsetDateTime::from(now)
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond");
    Ok(Credentials {
        access_key_id,
        access_key_secret,
        security_token,
        expiration,
        last_updated,
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ`, UTC.
///
/// # Errors
/// [`StsError::InvalidResponse`] quoting the value (at most 40 characters; times are not
/// secret).
pub fn parse_expiration(text: &str) -> Result<OffsetDateTime, StsError> {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::PrimitiveDateTime::parse(text, format)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|_| {
            let shown: String = text.chars().take(40).collect();
            invalid(format!(
                "Credentials.Expiration {shown:?} is not a UTC time like 2015-04-09T11:52:19Z"
            ))
        })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use time::macros::datetime;

    use super::*;

    const SECRET: &str = "MARKER-ASSUMED-SECRET";
    const TOKEN: &str = "MARKER-ASSUMED-TOKEN";

    fn now() -> SystemTime {
        SystemTime::from(datetime!(2015-04-09 10:52:19.75 UTC))
    }

    fn answer(credentials: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "RequestId": "6894B13B-6D71-4EF5-88FA-F32781734A7F",
            "AssumedRoleUser": {"Arn": "acs:ram::1:role/app/i-1.app", "AssumedRoleId": "3:i-1.app"},
            "Credentials": credentials,
        }))
        .unwrap()
    }

    fn documented() -> serde_json::Value {
        serde_json::json!({
            "AccessKeyId": "STS.L4aBSCSJVMuKg5U1vFDw",
            "AccessKeySecret": SECRET,
            "SecurityToken": TOKEN,
            "Expiration": "2015-04-09T11:52:19Z",
        })
    }

    #[test]
    fn the_documented_answer_parses_with_last_updated_now() {
        let c = parse_credentials(&answer(documented()), now()).unwrap();
        assert_eq!(c.access_key_id, "STS.L4aBSCSJVMuKg5U1vFDw");
        assert_eq!(c.access_key_secret.expose_secret(), SECRET);
        assert_eq!(c.security_token.expose_secret(), TOKEN);
        assert_eq!(c.expiration, datetime!(2015-04-09 11:52:19 UTC));
        assert_eq!(c.last_updated, datetime!(2015-04-09 10:52:19 UTC));
    }

    #[test]
    fn only_credentials_are_required() {
        let body = serde_json::to_vec(&serde_json::json!({"Credentials": documented()})).unwrap();
        assert!(parse_credentials(&body, now()).is_ok());
        let e = parse_credentials(br#"{"RequestId":"x"}"#, now()).unwrap_err();
        assert!(e.to_string().contains("no Credentials"), "{e}");
    }

    #[test]
    fn each_missing_or_empty_field_is_named_without_secrets() {
        for field in [
            "AccessKeyId",
            "AccessKeySecret",
            "SecurityToken",
            "Expiration",
        ] {
            for value in [serde_json::Value::Null, serde_json::json!("")] {
                let mut c = documented();
                c[field] = value.clone();
                let e = parse_credentials(&answer(c), now()).unwrap_err();
                assert_eq!(e.kind(), "invalid_response");
                let text = e.to_string();
                assert!(text.contains(field), "{field} {value}: {text}");
                assert!(!text.contains(SECRET) && !text.contains(TOKEN), "{text}");
            }
        }
    }

    #[test]
    fn a_bad_expiration_is_refused_and_quoted() {
        for bad in [
            "2015-04-09 11:52:19",
            "2015-04-09T11:52:19+08:00",
            "2015-04-09T11:52:19.5Z",
            "2015-13-09T11:52:19Z",
            "tomorrow",
        ] {
            let mut c = documented();
            c["Expiration"] = serde_json::json!(bad);
            let e = parse_credentials(&answer(c), now()).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn malformed_json_is_described_by_position_only() {
        let body = format!("{{\"Credentials\": {{\"AccessKeySecret\": \"{SECRET}\"");
        let e = parse_credentials(body.as_bytes(), now()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("malformed JSON"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        let e = parse_credentials(b"<html></html>", now()).unwrap_err();
        assert!(e.to_string().contains("malformed JSON"), "{e}");
    }

    #[test]
    fn an_access_key_id_with_control_characters_is_refused() {
        let mut c = documented();
        c["AccessKeyId"] = serde_json::json!("STS.\nforged log line");
        let e = parse_credentials(&answer(c), now()).unwrap_err();
        assert!(!e.to_string().contains("forged"), "{e}");
    }
}
