//! The socket API: routing, the two endpoints, and the stable JSON error codes.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/credentials` | 200, the credentials-URI JSON (see [`Credentials::to_response_body`](crate::credentials::Credentials::to_response_body)) of the caller's profile, else of the instance role; or 503 `CredentialsUnavailable` with the reason (a profile's caller never falls back to the instance role) |
//! | `GET /v1/health` | 200 while the caller's credentials (its profile's, else the instance role's) are servable, else 503; [`Health`] JSON, never a secret; root and the agent's own uid also see every profile (`Profiles`) |
//! | `GET /metrics` | 200, Prometheus metrics as OpenMetrics text ([`crate::metrics`]), never a secret |
//! | carrying `X-Forwarded-For`, `Forwarded` or `Via`, or a request body | 400 `BadRequest` |
//! | caller's uid/groups not allowed | 403 `Forbidden`, naming the uid and gid and the keys that would allow them |
//! | caller admitted, but no `[[profile]]` matches and `[profiles] unmatched = "deny"` | 403 `Forbidden`, saying so and naming those keys |
//! | loopback TCP caller not identified in the kernel's socket table | 403 `Forbidden` ([`UNIDENTIFIED`]) |
//! | loopback TCP request whose `Host` is not `127.0.0.1` or `localhost` (without a port, or with the listener's) | 400 `BadRequest` |
//! | another path | 404 `NotFound` |
//! | another method on a known path | 405 `MethodNotAllowed`, `Allow: GET` |
//!
//! Errors are `{"Code": "...", "Message": "..."}`; `Code` is stable ([`ApiError::code`]).
//! Requests that are not valid HTTP/1.1 at all are answered by hyper itself (400, or 431 when
//! the head is too large) without a JSON body.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::credentials::state::{wait_for_credentials, StateReceiver};
use crate::credentials::Issued;
use crate::identity::{Caller, Transport};
use crate::metrics::{self, Metrics};
use crate::policy::Decision;

mod health;

pub use health::{health, Health};

/// The response type of every route.
pub type Reply = Response<Full<Bytes>>;

/// What a request asks for, once it passed [`route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/credentials`.
    Credentials,
    /// `GET /v1/health`.
    Health,
    /// `GET /metrics`.
    Metrics,
}

/// Every way a request can fail. [`ApiError::status`] and [`ApiError::code`] are decided in
/// one exhaustive match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the request carries a proxy header or a body.
    BadRequest(&'static str),
    /// 403: the caller's uid and groups are not allowed. The message names the caller's uid
    /// and primary gid (numbers only, as the kernel reported them) and the keys that would
    /// allow it.
    Forbidden {
        /// The caller's effective uid.
        uid: u32,
        /// The caller's effective (primary) gid.
        gid: u32,
        /// How it connected: the keys that would allow it differ (a TCP caller's groups come
        /// from the user database; the socket's mode and group do not apply to it).
        transport: Transport,
    },
    /// 403: the caller is admitted by `allowed_uids`/`allowed_gids`, but no profile matches it
    /// and `[profiles] unmatched = "deny"`.
    NoProfile {
        /// The caller's effective uid.
        uid: u32,
    },
    /// 403: the caller of a loopback TCP connection could not be identified (its socket was
    /// not found open in the kernel's socket table, or the lookup failed): never taken for
    /// anyone, least of all root.
    Unidentified,
    /// 404: unknown path.
    NotFound,
    /// 405: known path, method other than `GET`.
    MethodNotAllowed,
    /// 503: no servable credentials; the text is [`Unavailable::message`](crate::credentials::Unavailable::message).
    CredentialsUnavailable(String),
    /// 503: `max_connections` reached.
    TooManyConnections,
    /// 500: a bug (a handler panicked).
    Internal,
}

impl ApiError {
    /// HTTP status and stable `Code`, in one exhaustive match.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Forbidden { .. } | ApiError::NoProfile { .. } | ApiError::Unidentified => {
                (StatusCode::FORBIDDEN, "Forbidden")
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::CredentialsUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "CredentialsUnavailable")
            }
            ApiError::TooManyConnections => (StatusCode::SERVICE_UNAVAILABLE, "TooManyConnections"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The stable error code sent as `Code`.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// The human-readable `Message` (never internal error text or a secret).
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            ApiError::BadRequest(why) => Cow::Borrowed(why),
            ApiError::Forbidden {
                uid,
                gid,
                transport,
            } => forbidden_message(*uid, *gid, *transport).into(),
            ApiError::NoProfile { uid } => format!(
                "caller uid {uid} matches no profile and [profiles] unmatched = \"deny\": add \
                 a [[profile]] whose match selects it, or set [profiles] unmatched = \
                 \"instance-role\""
            )
            .into(),
            ApiError::Unidentified => UNIDENTIFIED.into(),
            ApiError::NotFound => {
                "unknown path; use /v1/credentials, /v1/health or /metrics".into()
            }
            ApiError::MethodNotAllowed => "only GET is allowed".into(),
            ApiError::CredentialsUnavailable(why) => Cow::Owned(why.clone()),
            ApiError::TooManyConnections => "too many connections; retry shortly".into(),
            ApiError::Internal => "internal error".into(),
        }
    }

    /// The JSON body `{"Code": ..., "Message": ...}`.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({ "Code": self.code(), "Message": self.message() });
        Bytes::from(body.to_string())
    }

    /// The complete response.
    pub fn to_response(&self) -> Reply {
        let mut resp = json_response(self.status(), self.body());
        if *self == ApiError::MethodNotAllowed {
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
        }
        resp
    }

    /// The complete response as raw HTTP/1.1 bytes with `Connection: close`, for answering a
    /// connection that hyper never serves (beyond `max_connections`).
    pub fn to_raw_http(&self) -> Vec<u8> {
        let status = self.status();
        let body = self.body();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

/// The `403` for `caller`, refused by `decision` (not allowed, or matched by no profile under
/// `[profiles] unmatched = "deny"`).
pub(crate) fn refusal(caller: &Caller, decision: Decision) -> ApiError {
    match decision {
        Decision::Unmatched => ApiError::NoProfile { uid: caller.uid },
        _ => ApiError::Forbidden {
            uid: caller.uid,
            gid: caller.gid(),
            transport: caller.transport,
        },
    }
}

/// The `Message` of the `403` for a TCP caller that could not be identified.
pub const UNIDENTIFIED: &str = "the caller could not be identified: its connection was not \
     found open in the kernel's socket table (a client must keep its connection open until it \
     has read the answer)";

/// The `Message` of a `403`: who was refused (numbers only) and which keys would allow it
/// over `transport` (the socket's `socket_group` and `socket_mode` decide who may connect to
/// the socket, not to the loopback listener, whose callers' groups come from the user
/// database). At most about 250 characters, so clients that cap the messages they keep (the
/// client library keeps 300) show all of it.
fn forbidden_message(uid: u32, gid: u32, transport: Transport) -> String {
    let why = match transport {
        Transport::Unix => {
            "the socket's [server] socket_group and socket_mode decide who may connect"
        }
        Transport::Tcp => "a TCP caller's groups are those the user database gives its uid",
    };
    format!(
        "caller uid {uid} (gid {gid}) is not allowed: add the uid to [server] allowed_uids, or \
         one of its groups to [server] allowed_gids, in the agent's configuration; {why}"
    )
}

/// Whether a header is one a forwarding proxy adds (`X-Forwarded-*`, `X-Real-IP`,
/// `Forwarded`, `Via`). A request carrying one did not come straight from a local process (an
/// SSRF through a local proxy), and is refused, like the metadata service refuses a token `PUT`
/// with `X-Forwarded-For`: the socket is never meant to be reached through a proxy.
fn is_proxy_header(name: &str) -> bool {
    matches!(name, "forwarded" | "via" | "x-real-ip") || name.starts_with("x-forwarded-")
}

/// Decides what a request asks for from its method, path and headers alone (no I/O), so it
/// can be fuzzed. One pass over the headers (it runs for every request).
///
/// # Errors
///
/// [`ApiError::BadRequest`] for proxy headers or a body (`Content-Length` other than 0, or any
/// `Transfer-Encoding`), [`ApiError::NotFound`], [`ApiError::MethodNotAllowed`].
pub fn route(method: &Method, path: &str, headers: &HeaderMap) -> Result<Route, ApiError> {
    let mut has_body = false;
    for (name, value) in headers {
        let name = name.as_str();
        if is_proxy_header(name) {
            return Err(ApiError::BadRequest(
                "proxy headers (X-Forwarded-*, X-Real-IP, Forwarded, Via) are not accepted",
            ));
        }
        has_body |=
            name == "transfer-encoding" || (name == "content-length" && value.as_bytes() != b"0");
    }
    if has_body {
        return Err(ApiError::BadRequest("requests must not have a body"));
    }
    let route = match path {
        "/v1/credentials" => Route::Credentials,
        "/v1/health" => Route::Health,
        "/metrics" => Route::Metrics,
        _ => return Err(ApiError::NotFound),
    };
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    Ok(route)
}

/// The `endpoint` label of a request path in metrics: one fixed word per route, `other` for
/// any path no route serves (so a caller cannot create label values).
pub fn label(path: &str) -> &'static str {
    match path {
        "/v1/credentials" => "credentials",
        "/v1/health" => "health",
        "/metrics" => "metrics",
        _ => "other",
    }
}

/// The `200` answer to `GET /v1/credentials` with `issued`'s body (serialised once per
/// generation; cloning it is a reference-count increment).
pub(crate) fn credentials_reply(issued: &Issued) -> Reply {
    json_response(StatusCode::OK, issued.body.clone())
}

/// `GET /v1/credentials` when the connection holds nothing servable (the usual request is
/// answered from the connection's cached generation, `service.rs`): the credentials `rx` holds,
/// or (before the first credentials) waits up to `wait` for them
/// ([`wait_for_credentials`]).
///
/// # Errors
///
/// [`ApiError::CredentialsUnavailable`] with the reason.
pub async fn credentials(
    mut rx: StateReceiver,
    wait: std::time::Duration,
) -> Result<(Reply, Arc<Issued>), ApiError> {
    let issued = wait_for_credentials(&mut rx, wait)
        .await
        .map_err(|u| ApiError::CredentialsUnavailable(u.message()))?;
    Ok((credentials_reply(&issued), issued))
}

/// `GET /metrics`: the registry as OpenMetrics text ([`metrics::CONTENT_TYPE`]).
pub fn metrics(metrics: &Metrics) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(metrics.encode())));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn json_response(status: StatusCode, body: Bytes) -> Reply {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn route_table() {
        let get = Method::GET;
        let bad = |s| Err(ApiError::BadRequest(s));
        let proxy = "proxy headers (X-Forwarded-*, X-Real-IP, Forwarded, Via) are not accepted";
        let body = "requests must not have a body";
        let rows: Vec<(Method, &str, HeaderMap, Result<Route, ApiError>)> = vec![
            (
                get.clone(),
                "/v1/credentials",
                headers(&[]),
                Ok(Route::Credentials),
            ),
            (get.clone(), "/v1/health", headers(&[]), Ok(Route::Health)),
            (get.clone(), "/metrics", headers(&[]), Ok(Route::Metrics)),
            (
                Method::POST,
                "/metrics",
                headers(&[]),
                Err(ApiError::MethodNotAllowed),
            ),
            (
                get.clone(),
                "/v1/credentials",
                headers(&[("content-length", "0")]),
                Ok(Route::Credentials),
            ),
            (
                get.clone(),
                "/v1/credentials/",
                headers(&[]),
                Err(ApiError::NotFound),
            ),
            (get.clone(), "/", headers(&[]), Err(ApiError::NotFound)),
            (
                Method::POST,
                "/v1/credentials",
                headers(&[]),
                Err(ApiError::MethodNotAllowed),
            ),
            (
                Method::HEAD,
                "/v1/health",
                headers(&[]),
                Err(ApiError::MethodNotAllowed),
            ),
            (Method::POST, "/nope", headers(&[]), Err(ApiError::NotFound)),
            (
                get.clone(),
                "/v1/credentials",
                headers(&[("x-forwarded-for", "1.2.3.4")]),
                bad(proxy),
            ),
            (
                get.clone(),
                "/v1/credentials",
                headers(&[("forwarded", "for=1.2.3.4")]),
                bad(proxy),
            ),
            (
                get.clone(),
                "/nope",
                headers(&[("via", "1.1 proxy")]),
                bad(proxy),
            ),
            (
                get.clone(),
                "/v1/credentials",
                headers(&[("x-real-ip", "1.2.3.4")]),
                bad(proxy),
            ),
            (
                get.clone(),
                "/v1/credentials",
                headers(&[("x-forwarded-host", "evil.example")]),
                bad(proxy),
            ),
            (
                get.clone(),
                "/v1/health",
                headers(&[("x-forwarded-proto", "https")]),
                bad(proxy),
            ),
            (
                get.clone(),
                "/v1/credentials",
                headers(&[("content-length", "5")]),
                bad(body),
            ),
            (
                get.clone(),
                "/v1/health",
                headers(&[("transfer-encoding", "chunked")]),
                bad(body),
            ),
        ];
        for (m, p, h, want) in rows {
            assert_eq!(route(&m, p, &h), want, "{m} {p} {h:?}");
        }
    }

    #[test]
    fn error_codes_are_stable() {
        let rows = [
            (ApiError::BadRequest("x"), 400, "BadRequest"),
            (
                ApiError::Forbidden {
                    uid: 1000,
                    gid: 100,
                    transport: Transport::Unix,
                },
                403,
                "Forbidden",
            ),
            (ApiError::NoProfile { uid: 1000 }, 403, "Forbidden"),
            (ApiError::NotFound, 404, "NotFound"),
            (ApiError::MethodNotAllowed, 405, "MethodNotAllowed"),
            (
                ApiError::CredentialsUnavailable("x".into()),
                503,
                "CredentialsUnavailable",
            ),
            (ApiError::TooManyConnections, 503, "TooManyConnections"),
            (ApiError::Internal, 500, "InternalError"),
        ];
        for (e, status, code) in rows {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.code(), code);
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(v["Code"], code);
            assert_eq!(v["Message"], e.message().as_ref());
        }
        assert_eq!(
            ApiError::MethodNotAllowed.to_response().headers()[ALLOW],
            "GET"
        );
    }

    /// Regression (issue 11, item 7): the `403` named neither the caller nor what to change.
    #[test]
    fn forbidden_names_the_caller_and_the_keys_to_change() {
        let e = ApiError::Forbidden {
            uid: 65534,
            gid: 4243,
            transport: Transport::Unix,
        };
        let message = e.message();
        for needle in [
            "caller uid 65534 (gid 4243) is not allowed",
            "[server] allowed_uids",
            "[server] allowed_gids",
            "socket_group",
            "socket_mode",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        for transport in [Transport::Unix, Transport::Tcp] {
            let widest = ApiError::Forbidden {
                uid: u32::MAX,
                gid: u32::MAX,
                transport,
            };
            assert!(
                widest.message().chars().count() <= 250,
                "{}",
                widest.message()
            );
        }
        let raw = String::from_utf8(e.to_raw_http()).unwrap();
        assert!(raw.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{raw}");
        assert!(raw.contains("caller uid 65534 (gid 4243)"), "{raw}");
    }

    /// Regression (issue 12): a TCP caller was told to change `socket_group` and
    /// `socket_mode`, which decide who may connect to the socket, not to the listener.
    #[test]
    fn forbidden_over_tcp_names_the_keys_that_apply_to_tcp() {
        let e = ApiError::Forbidden {
            uid: 65534,
            gid: 65534,
            transport: Transport::Tcp,
        };
        let message = e.message();
        for needle in [
            "caller uid 65534 (gid 65534) is not allowed",
            "[server] allowed_uids",
            "[server] allowed_gids",
            "user database",
        ] {
            assert!(message.contains(needle), "{needle:?} not in {message:?}");
        }
        for wrong in ["socket_group", "socket_mode"] {
            assert!(!message.contains(wrong), "{wrong:?} in {message:?}");
        }
    }

    #[test]
    fn raw_response_is_complete_http() {
        let raw = String::from_utf8(ApiError::TooManyConnections.to_raw_http()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            body,
            r#"{"Code":"TooManyConnections","Message":"too many connections; retry shortly"}"#
        );
    }
}
