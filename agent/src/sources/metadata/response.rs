//! Parsing and validating what the metadata service answers: the role name and the credential
//! JSON. Pure functions over bytes, no I/O, so they can be table-tested and fuzzed.
//!
//! Shapes (ECS documentation "实例元数据", summarised in
//! `docs/metadata-service.md` §Paths and §Credential JSON):
//! - `GET /latest/meta-data/ram/security-credentials/` → the role name, plain text;
//! - `GET /latest/meta-data/ram/security-credentials/<role>` →
//!   `{"Code":"Success","AccessKeyId":…,"AccessKeySecret":…,"SecurityToken":…,
//!   "Expiration":"YYYY-MM-DDTHH:MM:SSZ","LastUpdated":"YYYY-MM-DDTHH:MM:SSZ"}`;
//! - a missing role is a 404 with an HTML page, which must never be parsed as JSON.
//!
//! Errors name the field that was wrong and never include the value of `AccessKeySecret` or
//! `SecurityToken`.

use std::fmt;
use std::time::SystemTime;

use secrecy::SecretString;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use zeroize::Zeroize;

use super::MetadataError;
use crate::credentials::Credentials;

/// The largest response body accepted from the metadata service, in bytes. A credential body is
/// about 2 KiB (the `SecurityToken` is the bulk); anything past this cap is an error and the
/// rest of the body is not read.
pub const MAX_BODY_BYTES: usize = 65_536;

/// The longest RAM role name, in characters (RAM `CreateRole`: `RoleName` is 1 to 64 characters).
pub const MAX_ROLE_NAME_CHARS: usize = 64;

/// Appends `chunk` to `body` unless that would take it past [`MAX_BODY_BYTES`].
///
/// Callers allocate `body` with capacity [`MAX_BODY_BYTES`] so it never reallocates (a
/// reallocation would leave an unzeroized copy of the secrets behind).
///
/// # Errors
/// [`MetadataError::InvalidResponse`] "body larger than 65536 bytes"; `body` is left unchanged.
pub fn append_capped(body: &mut Vec<u8>, chunk: &[u8], path: &str) -> Result<(), MetadataError> {
    if body.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
        return Err(body_too_large(path));
    }
    body.extend_from_slice(chunk);
    Ok(())
}

/// The error for a body past [`MAX_BODY_BYTES`] (also used when `Content-Length` announces one).
pub fn body_too_large(path: &str) -> MetadataError {
    invalid(path, format!("body larger than {MAX_BODY_BYTES} bytes"))
}

/// The longest metadata token accepted, in bytes. The documentation gives no length (tokens
/// seen are tens of characters); this bound keeps a page answered as plain text from being sent
/// back as a header.
pub const MAX_TOKEN_BYTES: usize = 1_024;

/// How an answer differs from what the metadata service sends, in words that never quote the
/// answer, e.g. "an HTML page instead of JSON". [`describe_answer`] gives the rest of the
/// picture (status, `Content-Type`, length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape(pub String);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Describes an answer by its shape alone: `HTTP 200 with Content-Type text/html, 35 bytes`.
/// The `Content-Type` is shown without parameters, and only when it looks like a media type
/// (at most 64 characters of letters, digits and `!#$&^_.+-/`); otherwise "an unusual
/// Content-Type". The body is never quoted.
pub fn describe_answer(status: u16, content_type: Option<&str>, body_len: usize) -> String {
    let media_type = content_type.map(|t| t.split(';').next().unwrap_or("").trim());
    let is_plain = |t: &str| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-/".contains(&b))
    };
    let content_type = match media_type {
        None => "no Content-Type".to_owned(),
        Some(t) if is_plain(t) => format!("Content-Type {t}"),
        Some(_) => "an unusual Content-Type".to_owned(),
    };
    let unit = if body_len == 1 { "byte" } else { "bytes" };
    format!("HTTP {status} with {content_type}, {body_len} {unit}")
}

/// Rejects an HTML page (a `Content-Type` of `text/html`, or a body whose first non-blank byte
/// is `<`), as a captive portal, a proxy's error page or a web server sends. `expected` names
/// what was wanted instead, e.g. `"JSON"`.
///
/// # Errors
/// The [`Shape`] "an HTML page instead of {expected}".
pub fn reject_html(content_type: Option<&str>, body: &[u8], expected: &str) -> Result<(), Shape> {
    let html_type = content_type.is_some_and(|t| {
        t.trim_start()
            .get(..9)
            .is_some_and(|m| m.eq_ignore_ascii_case("text/html"))
    });
    let html_body = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
    if html_type || html_body {
        return Err(Shape(format!("an HTML page instead of {expected}")));
    }
    Ok(())
}

/// Parses the body of a 200 on the token `PUT`: the metadata token as plain text, trimmed.
/// It must be non-empty visible ASCII of at most [`MAX_TOKEN_BYTES`], since it is sent back in
/// a header (`docs/metadata-service.md` §Token). HTML is checked apart ([`reject_html`]).
///
/// # Errors
/// The [`Shape`] of what came instead, giving the token's length, never its value.
pub fn parse_token(body: &[u8]) -> Result<SecretString, Shape> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Err(Shape("an empty metadata token".to_owned()));
    }
    if trimmed.len() > MAX_TOKEN_BYTES {
        return Err(Shape(format!(
            "a metadata token (token_len {}) longer than {MAX_TOKEN_BYTES} bytes",
            trimmed.len()
        )));
    }
    if !trimmed.iter().all(u8::is_ascii_graphic) {
        return Err(Shape(format!(
            "a metadata token (token_len {}) that is not printable ASCII",
            trimmed.len()
        )));
    }
    // Visible ASCII is UTF-8.
    let text = std::str::from_utf8(trimmed)
        .map_err(|_| Shape("a metadata token that is not printable ASCII".to_owned()))?;
    Ok(SecretString::from(text))
}

/// Parses the role list body: the first non-empty line, trimmed, checked by
/// [`check_role_name`]. (The service lists at most one role, and answers 404 when none is
/// attached: `docs/metadata-service.md` §Paths.)
///
/// # Errors
/// The [`Shape`] of the body when it is not UTF-8, holds no role name, or its first line is not
/// a plausible RAM role name; described by length, never quoted.
pub fn parse_role_name(body: &[u8]) -> Result<String, Shape> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Shape("a role list that is not UTF-8 text".to_owned()))?;
    let name = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .ok_or_else(|| Shape("an empty role list (no RAM role attached?)".to_owned()))?;
    // The line came from the network and could be anything (a page, a misrouted credential
    // body): describe it, never quote it.
    check_role_name(name).map_err(|_| {
        Shape(format!(
            "a role list that is not a single role name: its first line ({} characters) is not \
             a RAM role name (1 to {MAX_ROLE_NAME_CHARS} letters, digits, '.', '-' or '_')",
            name.chars().count()
        ))
    })?;
    Ok(name.to_owned())
}

/// Checks that `name` is a plausible RAM role name: 1 to [`MAX_ROLE_NAME_CHARS`] characters,
/// only ASCII letters, digits, `.`, `-` and `_`, and not `.` or `..`. RAM documents letters,
/// digits, `.` and `-` (`CreateRole`); `_` is allowed in case older roles have it. The name
/// goes into a URL path, so anything that could change the path (`/`, `?`, `#`, `%`, dot
/// segments, whitespace, control characters) is refused.
///
/// # Errors
/// A short description of what is wrong, quoting at most the first 64 characters, escaped.
pub fn check_role_name(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(MAX_ROLE_NAME_CHARS).collect();
    if name.is_empty() {
        return Err("empty role name".to_owned());
    }
    if name.chars().count() > MAX_ROLE_NAME_CHARS {
        return Err(format!(
            "role name longer than {MAX_ROLE_NAME_CHARS} characters (starts {shown:?})"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("role name {shown:?} is a path segment"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if let Some(bad) = name.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "role name {shown:?} contains {bad:?}: a RAM role name has only letters, digits, '.', '-' and '_'"
        ));
    }
    Ok(())
}

/// Parses and validates a credential body received at wall time `now` (the injected clock).
///
/// Rules: valid JSON object; `Code` is `"Success"`; `AccessKeyId`, `AccessKeySecret`,
/// `SecurityToken`, `Expiration` and `LastUpdated` are present, strings and non-empty; the
/// `AccessKeyId` is printable ASCII without spaces (it is logged); both times are RFC 3339 (see
/// [`parse_time`]); `LastUpdated < Expiration`; `Expiration > now`. Unknown fields are ignored.
///
/// The secrets are copied straight from `body` into [`SecretString`]s; the caller should hold
/// `body` in a `Zeroizing` buffer.
///
/// # Errors
/// [`MetadataError::InvalidResponse`] naming the field (never a secret value), or
/// [`MetadataError::ExpiredOnArrival`].
pub fn parse_credentials(
    body: &[u8],
    now: SystemTime,
    path: &str,
) -> Result<Credentials, MetadataError> {
    let raw: RawCredentials = serde_json::from_slice(body).map_err(|e| {
        // Position and category only: a serde_json message may quote input.
        let what = format!(
            "malformed JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        );
        invalid(path, what)
    })?;
    let code = required(raw.code, "Code", path)?;
    if code != "Success" {
        return Err(invalid(path, format!("Code is {code:?}, not \"Success\"")));
    }
    let access_key_id = required(raw.access_key_id, "AccessKeyId", path)?;
    if !access_key_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(path, "AccessKeyId has a non-printable character"));
    }
    let access_key_secret = required(raw.access_key_secret, "AccessKeySecret", path)?;
    let security_token = required(raw.security_token, "SecurityToken", path)?;
    let expiration_text = required(raw.expiration, "Expiration", path)?;
    let last_updated_text = required(raw.last_updated, "LastUpdated", path)?;
    let expiration = parse_time(&expiration_text, "Expiration", path)?;
    let last_updated = parse_time(&last_updated_text, "LastUpdated", path)?;
    if expiration <= last_updated {
        return Err(invalid(
            path,
            format!(
                "Expiration {expiration_text:?} is not after LastUpdated {last_updated_text:?}"
            ),
        ));
    }
    if expiration <= OffsetDateTime::from(now) {
        return Err(MetadataError::ExpiredOnArrival {
            expiration: expiration_text,
        });
    }
    Ok(Credentials {
        access_key_id,
        access_key_secret,
        security_token,
        expiration,
        last_updated,
    })
}

/// Parses an RFC 3339 time: the documented `YYYY-MM-DDTHH:MM:SSZ`, and also fractional seconds
/// or a numeric offset. The result is UTC with the fraction truncated toward the past, so it
/// prints back as the documented format (see [`crate::credentials::format_utc`]).
///
/// # Errors
/// [`MetadataError::InvalidResponse`] naming `field` and quoting the value (times are not secret).
pub fn parse_time(text: &str, field: &str, path: &str) -> Result<OffsetDateTime, MetadataError> {
    let bad = || {
        invalid(
            path,
            format!("{field} {text:?} is not an RFC 3339 time like 2024-11-08T09:44:50Z"),
        )
    };
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| bad())?;
    // In UTC the year must stay 0000..=9999: `9999-12-31T23:59:59-01:00` is past what `time`
    // represents (converting it would panic) and `0000-01-01T00:00:00+01:00` falls in year -1,
    // which does not print as `YYYY`.
    let utc = t
        .checked_to_offset(UtcOffset::UTC)
        .filter(|u| (0..=9999).contains(&u.year()))
        .ok_or_else(|| {
            invalid(
                path,
                format!("{field} {text:?} is outside the years 0000 to 9999 in UTC"),
            )
        })?;
    // Offsets are whole minutes, so truncating the fraction after converting to UTC is exact.
    Ok(utc.replace_nanosecond(0).expect("0 is a valid nanosecond"))
}

/// Parses an HTTP `Date` header in the IMF-fixdate form every HTTP/1.1 server sends
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7); `None` for anything else.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(text.trim(), format).ok()?;
    Some(SystemTime::from(t.assume_utc()))
}

fn invalid(path: &str, what: impl Into<String>) -> MetadataError {
    MetadataError::InvalidResponse {
        path: path.to_owned(),
        what: what.into(),
    }
}

/// A present field's string value, or an error naming the field.
fn required<T: FieldText>(
    field: Option<Field<T>>,
    name: &str,
    path: &str,
) -> Result<T, MetadataError> {
    match field {
        None => Err(invalid(path, format!("missing or null field {name}"))),
        Some(Field::NotString(kind)) => Err(invalid(
            path,
            format!("field {name} is {kind}, not a string"),
        )),
        Some(Field::Text(v)) if v.is_empty_text() => {
            Err(invalid(path, format!("empty field {name}")))
        }
        Some(Field::Text(v)) => Ok(v),
    }
}

/// The credential JSON, each field kept apart so errors can name it.
#[derive(Deserialize)]
struct RawCredentials {
    #[serde(rename = "Code")]
    code: Option<Field<String>>,
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<Field<String>>,
    #[serde(rename = "AccessKeySecret")]
    access_key_secret: Option<Field<SecretString>>,
    #[serde(rename = "SecurityToken")]
    security_token: Option<Field<SecretString>>,
    #[serde(rename = "Expiration")]
    expiration: Option<Field<String>>,
    #[serde(rename = "LastUpdated")]
    last_updated: Option<Field<String>>,
}

/// A JSON value where a string is expected: the string, or what came instead (a type name,
/// never the value). Deserializing never fails on a wrong type, so the caller names the field.
enum Field<T> {
    Text(T),
    NotString(&'static str),
}

/// How a [`Field`] stores a string.
trait FieldText: Sized {
    fn from_text(s: &str) -> Self;
    fn is_empty_text(&self) -> bool;
}

impl FieldText for String {
    fn from_text(s: &str) -> Self {
        s.to_owned()
    }
    fn is_empty_text(&self) -> bool {
        self.is_empty()
    }
}

impl FieldText for SecretString {
    fn from_text(s: &str) -> Self {
        SecretString::from(s)
    }
    fn is_empty_text(&self) -> bool {
        secrecy::ExposeSecret::expose_secret(self).is_empty()
    }
}

impl<'de, T: FieldText> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(std::marker::PhantomData))
    }
}

struct FieldVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: FieldText> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Text(T::from_text(v)))
    }
    fn visit_string<E: de::Error>(self, mut v: String) -> Result<Self::Value, E> {
        let out = T::from_text(&v);
        v.zeroize();
        Ok(Field::Text(out))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::NotString("a boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Field::NotString("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Field::NotString("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Field::NotString("a number"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::NotString("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::NotString("an object"))
    }
}

#[cfg(test)]
mod tests;
