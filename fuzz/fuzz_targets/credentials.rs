//! `parse_credentials`: never panics. Accepted credentials are consistent (`LastUpdated` before
//! `Expiration`, `Expiration` after `now`, times in the documented shape) and survive a round
//! trip through the served body. Errors never contain secret text: in `Planted` inputs the
//! `AccessKeySecret` and `SecurityToken` values hold marker text, in many shapes (plain, escaped,
//! of the wrong type, nested, duplicated), and the document is then cut or has a byte inserted.
//! The input's first byte chooses: 0 for a raw body, anything else for a planted document.
#![no_main]

use std::time::{Duration, SystemTime};

use ecs_credential_agent::credentials::{format_utc, Credentials};
use ecs_credential_agent::sources::metadata::response::parse_credentials;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

const SECRET: &str = "SECRETMARKERk3Jw";
const TOKEN: &str = "TOKENMARKERp9Vh";
/// Any run of this many marker characters in an error is a leak.
const WINDOW: usize = 6;

/// The fixed "now" of raw inputs: 2024-11-08T00:00:00Z, a few hours before the documented
/// example's `Expiration`, so seed documents are accepted.
const RAW_NOW: u32 = 1_731_024_000;

#[derive(Arbitrary, Debug)]
struct Planted {
    code: String,
    access_key_id: String,
    expiration: String,
    last_updated: String,
    secret: Shape,
    token: Shape,
    extra: String,
    order: u8,
    cut: Option<u16>,
    insert: Option<(u16, u8)>,
    now: u32,
}

/// How a secret field's value is written.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Shape {
    Plain,
    Escaped,
    Prefixed(u8),
    Number,
    InArray,
    InObject,
    Duplicated,
    Missing,
    Empty,
    Null,
}

// A first byte of 0 means the rest is a raw body (the seeds are documents); anything else
// means the rest describes a `Planted` document.
fuzz_target!(|data: &[u8]| match data.split_first() {
    Some((0, body)) => {
        if let Ok(c) = parse_credentials(body, at(RAW_NOW), "/p") {
            check_accepted(&c, RAW_NOW);
        }
    }
    Some((_, rest)) => {
        if let Ok(p) = Planted::arbitrary(&mut arbitrary::Unstructured::new(rest)) {
            planted(&p);
        }
    }
    None => {}
});

fn at(secs: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(secs))
}

fn planted(p: &Planted) {
    let visible = [
        &p.code,
        &p.access_key_id,
        &p.expiration,
        &p.last_updated,
        &p.extra,
    ];
    if visible.iter().any(|s| has_marker(s)) {
        return; // marker text outside the secret fields is not secret
    }
    let mut fields = vec![
        format!("\"Code\":{}", json(&p.code)),
        format!("\"AccessKeyId\":{}", json(&p.access_key_id)),
        format!("\"Expiration\":{}", json(&p.expiration)),
        format!("\"LastUpdated\":{}", json(&p.last_updated)),
    ];
    fields.extend(secret_field("AccessKeySecret", SECRET, p.secret));
    fields.extend(secret_field("SecurityToken", TOKEN, p.token));
    if !p.extra.is_empty() {
        fields.push(format!("{}:{}", json(&p.extra), json(&p.extra)));
    }
    let n = fields.len();
    fields.rotate_left(usize::from(p.order) % n);
    let mut body = format!("{{{}}}", fields.join(",")).into_bytes();
    if let Some(cut) = p.cut {
        body.truncate(usize::from(cut) % (body.len() + 1));
    }
    if let Some((at_pos, byte)) = p.insert {
        body.insert(usize::from(at_pos) % (body.len() + 1), byte);
    }
    // A cut or an insertion can move marker text into a field that is not secret; then it is
    // not secret any more, and an error may quote it.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        let moved = ["Code", "AccessKeyId", "Expiration", "LastUpdated"]
            .iter()
            .any(|k| v.get(k).is_some_and(|f| has_marker(&f.to_string())));
        if moved {
            return;
        }
    }
    match parse_credentials(&body, at(p.now), "/p") {
        Ok(c) => {
            check_accepted(&c, p.now);
            assert!(c.access_key_secret.expose_secret().contains(SECRET));
            assert!(c.security_token.expose_secret().contains(TOKEN));
            assert!(!has_marker(&format!("{c:?}")), "secret in Debug: {c:?}");
        }
        Err(e) => {
            let shown = format!("{e} {e:?}");
            assert!(!has_marker(&shown), "secret text in an error: {shown}");
        }
    }
}

fn secret_field(name: &str, marker: &str, shape: Shape) -> Vec<String> {
    let value = match shape {
        Shape::Plain | Shape::Duplicated => json(marker),
        Shape::Escaped => {
            let escaped: String = marker
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect();
            format!("\"{escaped}\"")
        }
        Shape::Prefixed(b) => json(&format!("{}{marker}", char::from(b))),
        Shape::Number => format!("{}", marker.len()),
        Shape::InArray => format!("[{}]", json(marker)),
        Shape::InObject => format!("{{{}:{}}}", json(marker), json(marker)),
        Shape::Missing => return Vec::new(),
        Shape::Empty => json(""),
        Shape::Null => "null".to_owned(),
    };
    let field = format!("{}:{value}", json(name));
    match shape {
        Shape::Duplicated => vec![field.clone(), field],
        _ => vec![field],
    }
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Whether `s` holds `WINDOW` consecutive characters of either marker.
fn has_marker(s: &str) -> bool {
    [SECRET, TOKEN].iter().any(|m| {
        m.as_bytes()
            .windows(WINDOW)
            .any(|w| s.contains(std::str::from_utf8(w).unwrap()))
    })
}

fn check_accepted(c: &Credentials, now: u32) {
    assert!(c.last_updated < c.expiration);
    assert!(time::OffsetDateTime::from(at(now)) < c.expiration);
    for t in [c.expiration, c.last_updated] {
        let shown = format_utc(t);
        assert_eq!(shown.len(), 20, "{shown:?}");
        assert!(
            shown.ends_with('Z') && shown.as_bytes()[10] == b'T',
            "{shown:?}"
        );
    }
    assert!(!c.access_key_id.is_empty());
    assert!(!c.access_key_secret.expose_secret().is_empty());
    assert!(!c.security_token.expose_secret().is_empty());
    // What the agent serves parses back to the same credentials.
    let body = c.to_response_body();
    let again = parse_credentials(&body, at(now), "/p").expect("the served body parses");
    assert!(again.same_generation(c));
    assert_eq!(again.expiration, c.expiration);
    assert_eq!(
        again.access_key_secret.expose_secret(),
        c.access_key_secret.expose_secret()
    );
    assert_eq!(
        again.security_token.expose_secret(),
        c.security_token.expose_secret()
    );
}
