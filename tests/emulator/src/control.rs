//! The control API under `/_emulator/`, for scripts and non-Rust tests. The routes are listed in
//! the crate docs.

use std::collections::HashMap;
use std::time::Duration;

use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::body::ReplyBody;
use crate::fault::{Endpoint, Fault, Times};
use crate::server::response;
use crate::state::Shared;

/// Path prefix of the control API.
pub(crate) const PREFIX: &str = "/_emulator/";

const JSON: &str = "application/json";

/// Answers one control request.
pub(crate) fn handle(shared: &Shared, req: &Parts) -> Response<ReplyBody> {
    let route = &req.uri.path()[PREFIX.len()..];
    let query = parse_query(req.uri.query().unwrap_or(""));
    let get = req.method == Method::GET;
    let post = req.method == Method::POST;
    let result = match route {
        "counts" if get => Ok(to_json(&shared.counts())),
        "credentials" if get => match shared.current_credentials() {
            Some(creds) => Ok(creds.to_json()),
            None => Err((StatusCode::NOT_FOUND, "no RAM role attached".to_owned())),
        },
        "reset-counts" if post => done(|| shared.reset_counts()),
        "clear" if post => done(|| shared.clear_faults()),
        "detach" if post => done(|| shared.detach_role()),
        "rotate" if post => match shared.rotate_now() {
            true => Ok(ok()),
            false => Err((StatusCode::CONFLICT, "no RAM role attached".to_owned())),
        },
        "expire-tokens" if post => done(|| shared.expire_tokens()),
        "attach" if post => match query.get("role").filter(|r| valid_role(r)) {
            Some(role) => done(|| shared.attach_role(role)),
            None => Err(bad(
                "attach needs role=NAME (letters, digits, '-', '_', '.')",
            )),
        },
        "fault" if post => parse_fault(&query).map(|(endpoint, fault, times)| {
            shared.add_fault(endpoint, fault, times);
            ok()
        }),
        "counts" | "credentials" | "reset-counts" | "clear" | "detach" | "rotate"
        | "expire-tokens" | "attach" | "fault" => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("wrong method {} for {PREFIX}{route}", req.method),
        )),
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("no control route {PREFIX}{route}"),
        )),
    };
    match result {
        Ok(body) => response(StatusCode::OK, JSON, ReplyBody::whole(body)),
        Err((status, message)) => {
            let body = to_json(&serde_json::json!({ "error": message }));
            response(status, JSON, ReplyBody::whole(body))
        }
    }
}

type ControlResult = Result<String, (StatusCode, String)>;

fn done(action: impl FnOnce()) -> ControlResult {
    action();
    Ok(ok())
}

fn ok() -> String {
    r#"{"ok":true}"#.to_owned()
}

fn bad(message: &str) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.to_owned())
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Counts and json! values always serialise.
    serde_json::to_string(value).expect("serialise control answer")
}

/// RAM role names: letters, digits, `-`, `_`, `.` (a conservative subset of what RAM allows).
fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `POST /_emulator/fault?endpoint=E&times=N|always&(status=N | kind=K[&...])`.
fn parse_fault(
    q: &HashMap<String, String>,
) -> Result<(Endpoint, Fault, Times), (StatusCode, String)> {
    let endpoint = q
        .get("endpoint")
        .and_then(|e| Endpoint::parse(e))
        .ok_or_else(|| bad("fault needs endpoint=token|role-list|credentials|any"))?;
    let times = match q.get("times").map(String::as_str) {
        None => Times::Next(1),
        Some("always") => Times::Always,
        Some(n) => Times::Next(
            n.parse()
                .map_err(|_| bad("times must be a number or 'always'"))?,
        ),
    };
    let num = |key: &str| -> Result<u64, (StatusCode, String)> {
        let value = q
            .get(key)
            .ok_or_else(|| bad(&format!("this fault kind needs {key}=NUMBER")))?;
        value
            .parse()
            .map_err(|_| bad(&format!("{key} must be a whole number, got {value:?}")))
    };
    let field = || {
        q.get("field")
            .cloned()
            .ok_or_else(|| bad("this fault kind needs field=NAME"))
    };
    if let Some(status) = q.get("status") {
        let code = status
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=999).contains(c))
            .ok_or_else(|| bad("status must be an HTTP status code (100-999)"))?;
        return Ok((endpoint, Fault::Status(code), times));
    }
    let fault = match q.get("kind").map(String::as_str) {
        Some("delay") => Fault::Delay(Duration::from_millis(num("ms")?)),
        Some("hang") => Fault::Hang,
        Some("hang-after-headers") => Fault::HangAfterHeaders,
        Some("slow-body") => Fault::SlowBody {
            chunk_bytes: usize::try_from(num("chunk")?).unwrap_or(usize::MAX),
            interval: Duration::from_millis(num("interval_ms")?),
        },
        Some("reset") => Fault::Reset,
        Some("malformed-json") => Fault::MalformedJson,
        Some("html-200") => Fault::HtmlWith200,
        Some("oversized") => {
            Fault::OversizedBody(usize::try_from(num("bytes")?).unwrap_or(usize::MAX))
        }
        Some("missing-field") => Fault::MissingField(field()?),
        Some("empty-field") => Fault::EmptyField(field()?),
        Some("code-not-success") => Fault::CodeNotSuccess,
        Some("expired") => Fault::ExpiredCredentials,
        Some("fractional-seconds") => Fault::FractionalSecondsExpiration,
        Some("numeric-offset") => Fault::NumericOffsetExpiration,
        Some("years-ahead") => Fault::ExpirationYearsAhead,
        Some(other) => return Err(bad(&format!("unknown fault kind {other:?}"))),
        None => return Err(bad("fault needs status=CODE or kind=KIND")),
    };
    Ok((endpoint, fault, times))
}

/// `a=1&b=x%20y` → {a: "1", b: "x y"}; `+` is a space; a repeated key keeps the last value.
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("role=My%2DRole&x=a+b&flag&bad=%zz&end=%4");
        assert_eq!(q["role"], "My-Role");
        assert_eq!(q["x"], "a b");
        assert_eq!(q["flag"], "");
        assert_eq!(q["bad"], "%zz");
        assert_eq!(q["end"], "%4");
    }

    #[test]
    fn fault_parsing() {
        let parse = |s: &str| parse_fault(&parse_query(s));
        assert_eq!(
            parse("endpoint=credentials&status=503&times=3").unwrap(),
            (Endpoint::Credentials, Fault::Status(503), Times::Next(3))
        );
        assert_eq!(
            parse("endpoint=any&kind=missing-field&field=SecurityToken&times=always").unwrap(),
            (
                Endpoint::Any,
                Fault::MissingField("SecurityToken".into()),
                Times::Always
            )
        );
        assert_eq!(
            parse("endpoint=token&kind=delay&ms=250").unwrap(),
            (
                Endpoint::Token,
                Fault::Delay(Duration::from_millis(250)),
                Times::Next(1)
            )
        );
        for (query, needle) in [
            ("status=503", "endpoint="),
            ("endpoint=nope&status=503", "endpoint="),
            ("endpoint=token&status=42", "status"),
            ("endpoint=token&kind=delay", "ms=NUMBER"),
            ("endpoint=token&kind=zap", "unknown fault kind"),
            ("endpoint=token", "status=CODE or kind=KIND"),
            ("endpoint=token&status=500&times=x", "times"),
        ] {
            let (status, message) = parse(query).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(message.contains(needle), "{query}: {message}");
        }
    }
}
