//! Faults that change the body of an answer.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use time::UtcOffset;

use crate::credentials::{
    format_at, format_utc, render_fields, whole_seconds, EmulatedCredentials,
};
use crate::fault::Fault;
use crate::protocol::{html_page, Payload, Reply, TEXT_HTML};
use crate::state::Shared;

/// How far in the past [`Fault::ExpiredCredentials`] puts `Expiration`.
const EXPIRED_BY: Duration = Duration::from_secs(60);
/// How far after `LastUpdated` [`Fault::ExpirationYearsAhead`] puts `Expiration`.
const YEARS_AHEAD: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The content type and body bytes to send for `reply`, after a body-changing `fault`.
/// Only 200 answers are changed.
pub(crate) fn body(shared: &Shared, reply: Reply, fault: Option<&Fault>) -> (&'static str, Bytes) {
    let fault = fault.filter(|_| reply.status == StatusCode::OK);
    match (fault, reply.payload) {
        (Some(Fault::HtmlWith200), _) => {
            (TEXT_HTML, html_page(StatusCode::OK, Some("Welcome")).into())
        }
        (Some(Fault::MalformedJson), Payload::Credentials(creds)) => {
            let json = creds.to_json();
            (
                reply.content_type,
                Bytes::from(json[..json.len() / 2].to_owned()),
            )
        }
        (Some(Fault::MalformedJson), Payload::Text(_)) => (
            reply.content_type,
            Bytes::from_static(b"{\"Code\":\"Success\",\"AccessKeyId\":"),
        ),
        (Some(Fault::OversizedBody(len)), Payload::Credentials(creds)) => {
            (reply.content_type, padded_json(&creds, *len))
        }
        (Some(Fault::OversizedBody(len)), Payload::Text(_)) => {
            (reply.content_type, Bytes::from(vec![b'A'; *len]))
        }
        (Some(fault), Payload::Credentials(creds)) if fault.edits_credentials() => {
            let json = edit_credentials(shared, &creds, fault);
            (reply.content_type, Bytes::from(json))
        }
        (_, Payload::Credentials(creds)) => (reply.content_type, Bytes::from(creds.to_json())),
        (_, Payload::Text(text)) => (reply.content_type, text),
    }
}

/// The credential JSON with an extra `Padding` field making it exactly `len` bytes (cut to
/// `len` if the JSON alone is longer).
///
/// The padding is appended as bytes, not serialised: an 8 MiB value through `serde_json` in a
/// debug build on a loaded machine delayed the answer's head past the agent's read timeout.
fn padded_json(creds: &EmulatedCredentials, len: usize) -> Bytes {
    let mut json = render_fields(&creds.fields()).into_bytes();
    json.pop(); // the closing brace
    json.extend_from_slice(br#","Padding":""#);
    let padding = len.saturating_sub(json.len() + 2);
    json.resize(json.len() + padding, b'A');
    json.extend_from_slice(b"\"}");
    json.truncate(len);
    Bytes::from(json)
}

fn edit_credentials(shared: &Shared, creds: &EmulatedCredentials, fault: &Fault) -> String {
    let mut fields = creds.fields();
    let mut set = |name: &str, value: String| {
        fields
            .iter_mut()
            .filter(|(k, _)| k == name)
            .for_each(|(_, v)| *v = value.clone());
    };
    match fault {
        Fault::EmptyField(name) => set(name, String::new()),
        Fault::CodeNotSuccess => set("Code", "Failure".to_owned()),
        Fault::ExpiredCredentials => {
            let expiration = whole_seconds(shared.now()) - EXPIRED_BY;
            set("Expiration", format_utc(expiration));
            set(
                "LastUpdated",
                format_utc(expiration - shared.settings.lifetime),
            );
        }
        Fault::FractionalSecondsExpiration => {
            set(
                "Expiration",
                format_at(creds.expiration, UtcOffset::UTC, ".123", "Z"),
            );
        }
        Fault::NumericOffsetExpiration => {
            let plus8 = UtcOffset::from_hms(8, 0, 0).expect("+08:00 is a valid offset");
            set(
                "Expiration",
                format_at(creds.expiration, plus8, "", "+08:00"),
            );
        }
        Fault::ExpirationYearsAhead => {
            set("Expiration", format_utc(creds.last_updated + YEARS_AHEAD))
        }
        Fault::MissingField(name) => fields.retain(|(k, _)| k != name),
        _ => {}
    }
    render_fields(&fields)
}
