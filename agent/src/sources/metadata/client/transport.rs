//! What a transport failure means: could not connect, connected but no answer in time, or
//! connected and answered with something that is not HTTP.
//!
//! The classification walks the error's `source()` chain for the [`hyper::Error`] underneath
//! `reqwest`, never matching message text: a parse error there means the peer sent bytes that
//! are not an HTTP/1.1 response, so something other than the metadata service listens on the
//! endpoint. Its description ("invalid HTTP version parsed") is hyper's own words about the
//! bytes, never the bytes.

use std::error::Error as StdError;
use std::time::Duration;

use reqwest::Method;

use crate::sources::metadata::MetadataError;

/// The client's time limits, named in timeout errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) connect_timeout: Duration,
    pub(super) read_timeout: Duration,
}

/// The [`MetadataError`] for a transport failure `e` of `method path` to `endpoint`:
///
/// | failure | error |
/// |---|---|
/// | connect failed or timed out | [`Unreachable`](MetadataError::Unreachable) |
/// | the answer is not HTTP (a hyper parse error in the chain) | [`NotMetadataService`](MetadataError::NotMetadataService) "not HTTP (…)" |
/// | no answer within the read timeout | [`Timeout`](MetadataError::Timeout) |
/// | anything else (reset, closed before an answer) | `Unreachable` "connection failed during …" |
pub(super) fn classify(
    e: &reqwest::Error,
    endpoint: &str,
    method: &Method,
    path: &str,
    limits: Limits,
) -> MetadataError {
    if e.is_connect() {
        let reason = if e.is_timeout() {
            format!("no connection within {:?}", limits.connect_timeout)
        } else {
            innermost(e)
        };
        return MetadataError::Unreachable {
            endpoint: endpoint.to_owned(),
            reason,
        };
    }
    if let Some(parse) = hyper_parse_error(e) {
        return MetadataError::NotMetadataService {
            endpoint: endpoint.to_owned(),
            method: method_name(method),
            path: path.to_owned(),
            shape: format!("not HTTP ({parse})"),
        };
    }
    if e.is_timeout() {
        return MetadataError::Timeout {
            path: path.to_owned(),
            after: limits.read_timeout,
        };
    }
    MetadataError::Unreachable {
        endpoint: endpoint.to_owned(),
        reason: format!("connection failed during {path}: {}", innermost(e)),
    }
}

/// The first [`hyper::Error`] in `e`'s source chain that is a parse error: the peer's bytes
/// are not an HTTP/1.1 response (bad status line, version, header, or a head too large).
pub(super) fn hyper_parse_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a hyper::Error> {
    let mut cause = Some(e);
    while let Some(current) = cause {
        if let Some(hyper) = current.downcast_ref::<hyper::Error>() {
            if hyper.is_parse() {
                return Some(hyper);
            }
        }
        cause = current.source();
    }
    None
}

/// The method's name for error messages (the client sends only `PUT` and `GET`).
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::PUT => "PUT",
        Method::GET => "GET",
        _ => "a request",
    }
}

/// The innermost cause of `e` (e.g. "Connection refused (os error 111)").
pub(super) fn innermost(e: &(dyn StdError + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
