//! One ActionTrail event: the fields the audit reads, borrowed from the record's bytes, and
//! what makes a call a long-term AccessKey call.
//!
//! Field names are the event structure's (`userIdentity.accessKeyId`, `sourceIpAddress`,
//! `vpcId`, `eventTime`, …). A Log Service export line carries the event as a JSON string in
//! `event` (`pull_log_dump`); it is parsed a second time.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The kind of a long-term AccessKeyId.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// Starts with `LTAI` (current and older ids).
    Ltai,
    /// Any other non-STS id (very old keys have no prefix).
    Legacy,
}

impl KeyKind {
    /// The kind of `access_key_id`, or `None` for an STS id (`STS.` prefix) or an empty one.
    pub fn of(access_key_id: &str) -> Option<KeyKind> {
        if access_key_id.is_empty() || access_key_id.starts_with("STS.") {
            None
        } else if access_key_id.starts_with("LTAI") {
            Some(KeyKind::Ltai)
        } else {
            Some(KeyKind::Legacy)
        }
    }

    /// `ltai` or `legacy`, as in the reports.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Ltai => "ltai",
            KeyKind::Legacy => "legacy",
        }
    }
}

/// A string borrowed from the record when it has no escapes (serde's `Cow<str>` always
/// copies inside an `Option`).
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

#[derive(Debug, Deserialize)]
struct RawIdentity<'a> {
    #[serde(rename = "accessKeyId", borrow, default)]
    access_key_id: Option<Text<'a>>,
}

#[derive(Debug, Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "eventId", borrow, default)]
    event_id: Option<Text<'a>>,
    #[serde(rename = "eventTime", borrow, default)]
    event_time: Option<Text<'a>>,
    #[serde(rename = "eventName", borrow, default)]
    event_name: Option<Text<'a>>,
    #[serde(rename = "serviceName", borrow, default)]
    service_name: Option<Text<'a>>,
    #[serde(rename = "userAgent", borrow, default)]
    user_agent: Option<Text<'a>>,
    #[serde(rename = "errorCode", borrow, default)]
    error_code: Option<Text<'a>>,
    #[serde(rename = "sourceIpAddress", borrow, default)]
    source_ip_address: Option<Text<'a>>,
    #[serde(rename = "vpcId", borrow, default)]
    vpc_id: Option<Text<'a>>,
    #[serde(rename = "userIdentity", borrow, default)]
    user_identity: Option<RawIdentity<'a>>,
    /// Log Service exports: the whole event, as a JSON string (or, leniently, an object).
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
}

/// A long-term AccessKey call, borrowed from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call<'a> {
    /// `eventId` (de-duplication of `LookupEvents` pages).
    pub event_id: Option<Cow<'a, str>>,
    /// `userIdentity.accessKeyId`.
    pub access_key_id: Cow<'a, str>,
    /// `vpcId`, `None` when absent or empty.
    pub vpc_id: Option<Cow<'a, str>>,
    /// `sourceIpAddress` as written (an IP, a service host, `Internal`), `None` when absent.
    pub source_ip: Option<Cow<'a, str>>,
    /// `eventTime`, Unix seconds (UTC).
    pub time: i64,
    /// `serviceName` (empty when absent).
    pub service: Cow<'a, str>,
    /// `eventName`.
    pub event_name: Cow<'a, str>,
    /// `userAgent`, `None` when absent.
    pub user_agent: Option<Cow<'a, str>>,
    /// `errorCode` present and not empty.
    pub error: bool,
}

/// Why a record is not a usable event (reported with file and line; the run goes on).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// Not JSON, or not an object of the expected shape (serde_json's message: position only).
    #[error("not an ActionTrail event: {0}")]
    NotJson(String),
    /// A required field is absent.
    #[error("event missing {0}")]
    Missing(&'static str),
    /// `eventTime` is not an RFC 3339 time.
    #[error("eventTime is not an RFC 3339 time")]
    BadTime,
}

/// Parses one record: an event object, a JSON string holding one, or a Log Service line whose
/// `event` holds one. Calls `on_call` with the call when it used a long-term AccessKey.
///
/// # Errors
/// [`EventError`] when the record is not an event, or misses `eventTime`/`eventName`.
pub fn parse(bytes: &[u8], on_call: &mut dyn FnMut(Call<'_>)) -> Result<(), EventError> {
    if bytes.first() == Some(&b'"') {
        let inner: Cow<'_, str> = from_slice(bytes)?;
        return parse(inner.as_bytes(), on_call);
    }
    let raw: RawEvent<'_> = from_slice(bytes)?;
    if let Some(event) = raw.event {
        return parse(event.get().as_bytes(), on_call);
    }
    let event_time = raw.event_time.ok_or(EventError::Missing("eventTime"))?.0;
    let event_name = raw.event_name.ok_or(EventError::Missing("eventName"))?.0;
    let time = parse_time(&event_time).ok_or(EventError::BadTime)?;
    let Some(access_key_id) = raw.user_identity.and_then(|u| u.access_key_id).map(|t| t.0) else {
        return Ok(());
    };
    if KeyKind::of(&access_key_id).is_none() {
        return Ok(());
    }
    on_call(Call {
        event_id: raw.event_id.map(|t| t.0),
        access_key_id,
        vpc_id: raw.vpc_id.map(|t| t.0).filter(|v| !v.is_empty()),
        source_ip: raw.source_ip_address.map(|t| t.0),
        time,
        service: raw.service_name.map(|t| t.0).unwrap_or_default(),
        event_name,
        user_agent: raw.user_agent.map(|t| t.0),
        error: raw.error_code.is_some_and(|c| !c.0.is_empty()),
    });
    Ok(())
}

fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, EventError> {
    serde_json::from_slice(bytes).map_err(|e| EventError::NotJson(position_only(&e)))
}

/// serde_json's message without any input text (its messages quote field names, never
/// values, but a stray key could be anything): the category and column.
fn position_only(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected type",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{what} at column {}", e.column())
}

/// Parses `eventTime` into Unix seconds: the fast path for `YYYY-MM-DDTHH:MM:SSZ` (what
/// ActionTrail writes), any RFC 3339 time otherwise.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[19] == b'Z' {
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            b[r].iter().try_fold(0i64, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
            })
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let valid = b[13] == b':'
            && b[16] == b':'
            && (1..=12).contains(&mo)
            && (1..=31).contains(&d)
            && h < 24
            && mi < 60
            && se < 61;
        return valid.then(|| days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => String::from("invalid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(json: &str) -> Result<Vec<String>, EventError> {
        let mut out = Vec::new();
        parse(json.as_bytes(), &mut |c| {
            out.push(format!(
                "{} {:?} {:?} {} {}:{} {:?} {}",
                c.access_key_id,
                c.vpc_id,
                c.source_ip,
                format_time(c.time),
                c.service,
                c.event_name,
                c.user_agent,
                c.error
            ))
        })?;
        Ok(out)
    }

    #[test]
    fn key_kinds() {
        assert_eq!(KeyKind::of("LTAITESTfakeKEY0NOTreal1"), Some(KeyKind::Ltai));
        assert_eq!(KeyKind::of("abcdEFGH12345678"), Some(KeyKind::Legacy));
        assert_eq!(KeyKind::of("STS.NUQNP4PiGyckMsNiGELCs"), None);
        assert_eq!(KeyKind::of(""), None);
    }

    #[test]
    fn event_object_string_and_log_service_line() {
        let ev = r#"{"eventId":"1","eventTime":"2024-02-29T23:59:59Z","eventName":"DescribeInstances","serviceName":"Ecs","userAgent":"cli","errorCode":"Forbidden","sourceIpAddress":"10.0.0.1","vpcId":"vpc-1","userIdentity":{"type":"ram-user","accessKeyId":"LTAIxyz"},"requestParameters":{"a":[1,{"b":null}]}}"#;
        let want = r#"LTAIxyz Some("vpc-1") Some("10.0.0.1") 2024-02-29T23:59:59Z Ecs:DescribeInstances Some("cli") true"#;
        assert_eq!(calls(ev).unwrap(), [want]);
        let as_string = serde_json::to_string(ev).unwrap();
        assert_eq!(calls(&as_string).unwrap(), [want]);
        let sls = format!(r#"{{"__topic__":"actiontrail_audit_event","event":{as_string}}}"#);
        assert_eq!(calls(&sls).unwrap(), [want]);
    }

    #[test]
    fn sts_and_keyless_events_are_not_calls_and_missing_fields_are_errors() {
        let sts = r#"{"eventTime":"2024-01-01T00:00:00Z","eventName":"X","userIdentity":{"accessKeyId":"STS.abc"}}"#;
        assert_eq!(calls(sts).unwrap(), Vec::<String>::new());
        let console = r#"{"eventTime":"2024-01-01T00:00:00Z","eventName":"X","userIdentity":{"type":"root-account"}}"#;
        assert_eq!(calls(console).unwrap(), Vec::<String>::new());
        assert_eq!(
            calls(r#"{"eventName":"X"}"#),
            Err(EventError::Missing("eventTime"))
        );
        assert_eq!(
            calls(r#"{"eventTime":"2024-01-01T00:00:00Z"}"#),
            Err(EventError::Missing("eventName"))
        );
        assert_eq!(
            calls(r#"{"eventTime":"yesterday","eventName":"X"}"#),
            Err(EventError::BadTime)
        );
        assert!(matches!(calls("not json"), Err(EventError::NotJson(_))));
        assert!(matches!(calls("7"), Err(EventError::NotJson(_))));
    }

    #[test]
    fn times_fast_path_matches_rfc3339() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2016-01-04T01:53:12Z",
            "2024-02-29T23:59:59Z",
            "2100-03-01T12:00:00Z",
        ] {
            let slow =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .unwrap()
                    .unix_timestamp();
            assert_eq!(parse_time(s), Some(slow), "{s}");
            assert_eq!(format_time(slow), s);
        }
        assert_eq!(
            parse_time("2024-01-01T08:00:00+08:00"),
            parse_time("2024-01-01T00:00:00Z")
        );
        assert_eq!(parse_time("2024-13-01T00:00:00Z"), None);
    }
}
