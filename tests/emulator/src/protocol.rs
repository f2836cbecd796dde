//! The documented protocol: metadata tokens, hardened mode, the two credential paths, the
//! instance's `region-id` and `instance-id`.
//!
//! Every rule here is from `docs/metadata-service.md` unless marked "inferred".

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};

use crate::credentials::EmulatedCredentials;
use crate::fault::Route;
use crate::state::Shared;

/// Request header carrying the wanted metadata token TTL in seconds.
pub const TOKEN_TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
/// Request header carrying the metadata token on GETs.
pub const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";
/// A request carrying this header is refused with 403 (anti-proxy rule).
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// `Content-Type` of plain answers. Inferred: the documentation does not name it.
pub(crate) const TEXT_PLAIN: &str = "text/plain";
/// `Content-Type` of error pages.
pub(crate) const TEXT_HTML: &str = "text/html";

/// What a request gets, before faults shape the body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) payload: Payload,
}

#[derive(Debug)]
pub(crate) enum Payload {
    Text(Bytes),
    Credentials(Box<EmulatedCredentials>),
}

impl Reply {
    fn text(text: impl Into<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: TEXT_PLAIN,
            payload: Payload::Text(text.into()),
        }
    }

    /// An HTML error page. The 404 page has the documented `<title>404 - Not Found</title>`;
    /// the other pages copy its shape (inferred).
    pub(crate) fn error(status: StatusCode, detail: Option<&str>) -> Self {
        Self {
            status,
            content_type: TEXT_HTML,
            payload: Payload::Text(html_page(status, detail).into()),
        }
    }
}

/// An HTML page titled `<code> - <reason>`, e.g. `404 - Not Found`.
pub(crate) fn html_page(status: StatusCode, detail: Option<&str>) -> String {
    let title = format!(
        "{} - {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let detail = detail.map(|d| format!("<p>{d}</p>\n")).unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n\
         {detail}</body>\n</html>\n"
    )
}

/// The answer to a metadata request (not a control API request).
pub(crate) fn answer(shared: &Shared, req: &Parts, route: Route) -> Reply {
    if req.headers.contains_key(FORWARDED_FOR_HEADER) {
        // Documented for the token PUT; applied to every request as the brief asks.
        return Reply::error(StatusCode::FORBIDDEN, None);
    }
    match route {
        Route::Token if req.method == Method::PUT => issue_token(shared, &req.headers),
        // Observed for GET; other methods answered the same way (inferred).
        Route::Token => Reply::error(StatusCode::METHOD_NOT_ALLOWED, None),
        // Inferred: only GET reads metadata.
        _ if req.method != Method::GET => Reply::error(StatusCode::METHOD_NOT_ALLOWED, None),
        _ => match check_token(shared, &req.headers) {
            Some(refused) => refused,
            None => read(shared, route, req.uri.path()),
        },
    }
}

fn issue_token(shared: &Shared, headers: &HeaderMap) -> Reply {
    let max = shared.settings.max_token_ttl_secs;
    let ttl = headers
        .get(TOKEN_TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ttl| (1..=max).contains(ttl));
    match ttl {
        Some(ttl) => Reply::text(shared.issue_token(ttl)),
        None => Reply::error(
            StatusCode::BAD_REQUEST,
            Some("Missing or Invalid Parameters"),
        ),
    }
}

/// `None` when the request may read metadata, otherwise the refusal.
fn check_token(shared: &Shared, headers: &HeaderMap) -> Option<Reply> {
    match headers.get(TOKEN_HEADER) {
        Some(token) => {
            let valid = token.to_str().is_ok_and(|t| shared.token_valid(t));
            // Expired tokens answer 401 like invalid ones (inferred).
            (!valid).then(|| Reply::error(StatusCode::UNAUTHORIZED, None))
        }
        None if shared.settings.hardened_only => Some(Reply::error(StatusCode::FORBIDDEN, None)),
        None => None,
    }
}

fn read(shared: &Shared, route: Route, path: &str) -> Reply {
    let not_found = || Reply::error(StatusCode::NOT_FOUND, None);
    match route {
        Route::RoleList => shared.role_name().map_or_else(not_found, Reply::text),
        Route::Credentials => {
            let wanted = &path[Route::CREDENTIALS_PREFIX.len()..];
            match shared.current_credentials() {
                Some(creds) if creds.role_name == wanted => Reply {
                    status: StatusCode::OK,
                    content_type: TEXT_PLAIN,
                    payload: Payload::Credentials(Box::new(creds)),
                },
                _ => not_found(),
            }
        }
        Route::InstanceFact if path == Route::REGION_ID_PATH => {
            Reply::text(shared.settings.region_id.clone())
        }
        Route::InstanceFact => Reply::text(shared.settings.instance_id.clone()),
        Route::Token | Route::Other => not_found(),
    }
}
