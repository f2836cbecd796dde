//! Request-level tests of [`Client`]: one test per row of the retry table, against the scripted
//! server in [`script`] on 127.0.0.1. Real sockets, so real (short) time, no paused clock.

mod facts;
mod script;
mod setup;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use time::macros::datetime;

use self::script::{Canned, Server};
use super::*;
use crate::test_logs::{capture_logs, logs};
use crate::time::TimeSource;

const TOKEN_1: &str = "MARKER-METADATA-TOKEN-1";
const TOKEN_2: &str = "MARKER-METADATA-TOKEN-2";
const SECRET: &str = "MARKER-ACCESS-KEY-SECRET";
const STS_TOKEN: &str = "MARKER-SECURITY-TOKEN";
const ROLE_PATH: &str = "/latest/meta-data/ram/security-credentials/EcsRole";

/// A wall clock fixed between the sample's LastUpdated and Expiration.
#[derive(Debug)]
struct FixedClock;

impl TimeSource for FixedClock {
    fn now(&self) -> SystemTime {
        SystemTime::from(datetime!(2024-11-08 04:00:00 UTC))
    }
}

fn config(endpoint: String) -> MetadataConfig {
    MetadataConfig {
        // Unchecked, so the client's own check is tested too (`setup`).
        endpoint: crate::sources::metadata::config::Endpoint::unchecked(&endpoint),
        // Generous: on a loaded machine the local test server may take seconds to answer. The
        // timeout tests set short ones (`short_timeouts`).
        read_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        ..MetadataConfig::default()
    }
}

/// Read timeout 200 ms, connect timeout 500 ms: for the tests of the timeouts themselves.
fn short_timeouts(c: &mut MetadataConfig) {
    c.read_timeout = Duration::from_millis(200);
    c.connect_timeout = Duration::from_millis(500);
}

fn client(config: &MetadataConfig) -> Client {
    Client::new(config, Arc::new(FixedClock)).unwrap()
}

fn reply(status: u16, content_type: &'static str, body: &[u8]) -> Canned {
    Canned::Reply {
        status,
        content_type,
        body: body.to_vec(),
    }
}

fn status(code: u16) -> Canned {
    reply(code, "text/plain", b"")
}

fn token(value: &str) -> Canned {
    reply(200, "text/plain", value.as_bytes())
}

fn role() -> Canned {
    reply(200, "text/plain", b"EcsRole\n")
}

fn credentials() -> Canned {
    let body = serde_json::json!({
        "AccessKeyId": "STS.NTexample", "AccessKeySecret": SECRET,
        "Expiration": "2024-11-08T09:44:50Z", "SecurityToken": STS_TOKEN,
        "LastUpdated": "2024-11-08T03:44:50Z", "Code": "Success"
    });
    reply(200, "application/json", &serde_json::to_vec(&body).unwrap())
}

fn html_404() -> Canned {
    let page = b"<html><head><title>404 - Not Found</title></head><body></body></html>";
    reply(404, "text/html", page)
}

/// Runs one fetch against a server answering with `script`.
async fn fetch_with(
    script: Vec<Canned>,
    edit: impl FnOnce(&mut MetadataConfig),
) -> (Result<Fetched, MetadataError>, Server) {
    let server = Server::start(script).await;
    let mut config = config(server.endpoint());
    edit(&mut config);
    let result = client(&config).fetch().await;
    (result, server)
}

fn calls(server: &Server) -> Vec<String> {
    let requests = server.requests();
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

// ---- token PUT rows ----

#[tokio::test]
async fn token_put_200_is_cached_and_reused_across_fetches() {
    let script = vec![token(TOKEN_1), role(), credentials(), role(), credentials()];
    let server = Server::start(script).await;
    let client = client(&config(server.endpoint()));
    let first = client.fetch().await.unwrap();
    let second = client.fetch().await.unwrap();
    assert_eq!(first.role_name, "EcsRole");
    assert_eq!(second.credentials.access_key_id, "STS.NTexample");
    assert_eq!(first.credentials.access_key_secret.expose_secret(), SECRET);
    let requests = server.requests();
    let put = "PUT /latest/api/token";
    let list = "GET /latest/meta-data/ram/security-credentials/";
    let creds = format!("GET {ROLE_PATH}");
    assert_eq!(
        calls(&server),
        [put, list, &creds, list, &creds],
        "one PUT for two fetches"
    );
    assert_eq!(requests[0].header(TOKEN_TTL_HEADER), Some("21600"));
    assert_eq!(requests[0].header(TOKEN_HEADER), None);
    for get in &requests[1..] {
        assert_eq!(get.header(TOKEN_HEADER), Some(TOKEN_1), "{get:?}");
    }
    for request in &requests {
        assert_eq!(request.header("x-forwarded-for"), None, "{request:?}");
        assert_eq!(request.header("forwarded"), None, "{request:?}");
    }
}

#[tokio::test]
async fn token_put_400_is_rejected_without_retry() {
    let (result, server) = fetch_with(vec![status(400)], |_| {}).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            &err,
            MetadataError::Rejected {
                method: "PUT",
                status: 400,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        calls(&server),
        ["PUT /latest/api/token"],
        "no GET without a token"
    );
}

#[tokio::test]
async fn token_put_403_is_token_refused() {
    let (result, server) = fetch_with(vec![status(403)], |_| {}).await;
    let err = result.unwrap_err();
    assert!(matches!(err, MetadataError::TokenRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("metadata token refused"), "{err}");
    assert!(!err.is_transient());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn token_put_405_and_other_4xx_are_rejected() {
    for code in [405, 404, 418, 302, 204] {
        let (result, server) = fetch_with(vec![status(code)], |_| {}).await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, MetadataError::Rejected { method: "PUT", status, .. } if *status == code),
            "{code}: {err:?}"
        );
        assert_eq!(server.requests().len(), 1, "{code}");
    }
}

#[tokio::test]
async fn token_put_429_and_5xx_are_unavailable() {
    for code in [429, 500, 503] {
        let (result, server) = fetch_with(vec![status(code)], |_| {}).await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, MetadataError::Unavailable { status, .. } if *status == code),
            "{code}: {err:?}"
        );
        assert!(err.is_transient());
        assert_eq!(server.requests().len(), 1, "no retry within the fetch");
    }
}

#[tokio::test]
async fn token_put_connection_refused_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client(&config(format!("http://127.0.0.1:{port}")));
    let err = client.fetch().await.unwrap_err();
    assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn token_put_hanging_server_is_timeout() {
    let started = std::time::Instant::now();
    let (result, _server) = fetch_with(vec![Canned::Hang], short_timeouts).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, MetadataError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn token_put_failure_without_fallback_never_gets_tokenless() {
    let (result, server) = fetch_with(vec![status(403), role(), credentials()], |_| {}).await;
    assert!(result.is_err());
    assert_eq!(calls(&server), ["PUT /latest/api/token"]);
}

#[tokio::test]
async fn token_put_failure_with_fallback_gets_without_token_and_warns() {
    let (buf, _guard) = capture_logs();
    let script = vec![status(403), role(), credentials()];
    let (result, server) = fetch_with(script, |c| c.allow_imdsv1_fallback = true).await;
    assert_eq!(result.unwrap().role_name, "EcsRole");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[1..]
        .iter()
        .all(|r| r.header(TOKEN_HEADER).is_none()));
    let logs = logs(&buf);
    assert!(
        logs.contains("WARN") && logs.contains("falling back"),
        "{logs}"
    );
}

// ---- GET rows ----

#[tokio::test]
async fn get_200_with_configured_role_skips_discovery() {
    let script = vec![token(TOKEN_1), credentials()];
    let (result, server) =
        fetch_with(script, |c| c.role_name = Some("EcsRole".parse().unwrap())).await;
    assert_eq!(result.unwrap().role_name, "EcsRole");
    let expected = format!("GET {ROLE_PATH}");
    assert_eq!(calls(&server), ["PUT /latest/api/token", expected.as_str()]);
}

#[tokio::test]
async fn get_401_renews_token_and_retries_once() {
    let script = vec![
        token(TOKEN_1),
        status(401),
        token(TOKEN_2),
        role(),
        credentials(),
    ];
    let (result, server) = fetch_with(script, |_| {}).await;
    assert!(result.is_ok(), "{result:?}");
    let requests = server.requests();
    let tokens: Vec<_> = requests.iter().map(|r| r.header(TOKEN_HEADER)).collect();
    assert_eq!(
        tokens,
        [None, Some(TOKEN_1), None, Some(TOKEN_2), Some(TOKEN_2)]
    );
    assert_eq!(requests[2].method, "PUT");
}

#[tokio::test]
async fn get_401_twice_is_token_rejected() {
    let script = vec![
        token(TOKEN_1),
        status(401),
        token(TOKEN_2),
        status(401),
        role(),
    ];
    let (result, server) = fetch_with(script, |_| {}).await;
    let err = result.unwrap_err();
    assert!(matches!(err, MetadataError::TokenRejected), "{err:?}");
    assert_eq!(server.requests().len(), 4, "one retry only");
}

#[tokio::test]
async fn get_401_without_token_is_rejected() {
    let script = vec![status(500), status(401)];
    let (result, server) = fetch_with(script, |c| c.allow_imdsv1_fallback = true).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, MetadataError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 2, "no token to renew");
}

#[tokio::test]
async fn get_403_without_token_is_hardened_mode_required() {
    let script = vec![status(403), status(403)];
    let (result, _server) = fetch_with(script, |c| c.allow_imdsv1_fallback = true).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, MetadataError::HardenedModeRequired),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_403_with_token_is_rejected() {
    let (result, _server) = fetch_with(vec![token(TOKEN_1), status(403)], |_| {}).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            &err,
            MetadataError::Rejected {
                method: "GET",
                status: 403,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_404_is_role_not_attached() {
    let script = vec![token(TOKEN_1), html_404()];
    let (result, _server) =
        fetch_with(script, |c| c.role_name = Some("EcsRole".parse().unwrap())).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, MetadataError::RoleNotAttached { role_name: Some(r) } if r == "EcsRole"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"EcsRole\""), "{err}");
    // On the role list there is no role name to report.
    let (result, _server) = fetch_with(vec![token(TOKEN_1), html_404()], |_| {}).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, MetadataError::RoleNotAttached { role_name: None }),
        "{err:?}"
    );
}

#[tokio::test]
async fn get_400_405_and_other_4xx_are_rejected() {
    for code in [400, 405, 410, 418, 301] {
        let (result, server) = fetch_with(vec![token(TOKEN_1), status(code)], |_| {}).await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, MetadataError::Rejected { method: "GET", status, .. } if *status == code),
            "{code}: {err:?}"
        );
        assert!(!err.is_transient());
        assert_eq!(server.requests().len(), 2, "{code}");
    }
}

#[tokio::test]
async fn get_429_and_5xx_are_transient() {
    for code in [429, 500, 502, 503] {
        let (result, server) = fetch_with(vec![token(TOKEN_1), status(code)], |_| {}).await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, MetadataError::Unavailable { status, .. } if *status == code),
            "{code}: {err:?}"
        );
        assert!(err.is_transient());
        assert_eq!(server.requests().len(), 2, "no retry within the fetch");
    }
}

#[tokio::test]
async fn get_connection_closed_is_unreachable() {
    let (result, _server) = fetch_with(vec![token(TOKEN_1), Canned::Close], |_| {}).await;
    let err = result.unwrap_err();
    assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn get_hanging_server_is_timeout() {
    let (result, _server) = fetch_with(vec![token(TOKEN_1), Canned::Hang], short_timeouts).await;
    let err = result.unwrap_err();
    assert!(matches!(err, MetadataError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn trickling_body_hits_the_overall_deadline() {
    let trickle = Canned::Trickle {
        every: Duration::from_millis(50),
        // 20 s of trickle: far longer than the deadline and the bound below.
        bytes: 400,
    };
    let started = std::time::Instant::now();
    let (result, _server) = fetch_with(vec![token(TOKEN_1), trickle], short_timeouts).await;
    let err = result.unwrap_err();
    // connect 500 ms + 2 × read 200 ms.
    let deadline = Duration::from_millis(900);
    assert!(
        matches!(err, MetadataError::Timeout { after, .. } if after == deadline),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ---- bodies ----

#[tokio::test]
async fn html_page_with_200_is_invalid_response() {
    let page = reply(200, "text/html", b"<html>captive portal</html>");
    let (result, _server) = fetch_with(vec![token(TOKEN_1), role(), page], |_| {}).await;
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("HTML page instead of JSON"),
        "{err}"
    );
}

// ---- an endpoint that is not the metadata service ----

/// Asserts `err` says `endpoint` is not the metadata service, with `shape`, the request, and
/// what to do; and that it quotes nothing the peer sent (`MARKER`).
fn assert_not_the_service(err: &MetadataError, endpoint: &str, shape: &str, request: &str) {
    assert!(
        matches!(err, MetadataError::NotMetadataService { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), "not_metadata_service");
    assert!(!err.is_transient());
    let text = err.to_string();
    let expected = format!("{endpoint} does not answer like the ECS metadata service: {shape}");
    assert!(text.starts_with(&expected), "{text}\nexpected: {expected}");
    assert!(
        text.contains(&format!(" in answer to {request}; ")),
        "{text}"
    );
    assert!(
        text.ends_with("check [metadata] endpoint (on ECS it is http://100.100.100.200)"),
        "{text}"
    );
    assert!(!text.contains("MARKER"), "the answer is quoted: {text}");
    assert!(!text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn garbage_bytes_to_the_token_put_are_not_http() {
    let garbage = Canned::Raw(b"SSH-2.0-MARKER_garbage \x01\x02\r\n");
    let (result, server) = fetch_with(vec![garbage], |_| {}).await;
    let err = result.unwrap_err();
    let shape = "not HTTP (invalid HTTP version parsed)";
    assert_not_the_service(&err, &server.endpoint(), shape, "PUT /latest/api/token");
    assert_eq!(calls(&server), ["PUT /latest/api/token"]);
}

#[tokio::test]
async fn garbage_bytes_to_a_get_are_not_http() {
    let garbage = Canned::Raw(b"HTTP/1.1 MARKER\r\n\r\n");
    let (result, server) = fetch_with(vec![token(TOKEN_1), garbage], |_| {}).await;
    let err = result.unwrap_err();
    let list = "GET /latest/meta-data/ram/security-credentials/";
    assert_not_the_service(&err, &server.endpoint(), "not HTTP (", list);
}

#[tokio::test]
async fn a_closed_connection_is_still_unreachable_not_garbage() {
    // Nothing at all is not "not HTTP": the real service may reset a connection.
    let (result, _server) = fetch_with(vec![Canned::Close], |_| {}).await;
    let err = result.unwrap_err();
    assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn html_page_with_200_to_the_token_put_is_not_the_service() {
    let page = b"<html><body>MARKER hi</body></html>";
    assert_eq!(page.len(), 35);
    let script = vec![reply(200, "text/html", page), role(), credentials()];
    let (result, server) = fetch_with(script, |_| {}).await;
    let err = result.unwrap_err();
    let shape = "HTTP 200 with Content-Type text/html, 35 bytes: \
                 an HTML page instead of a metadata token";
    assert_not_the_service(&err, &server.endpoint(), shape, "PUT /latest/api/token");
    assert!(!err.to_string().contains("header"), "{err}");
    assert_eq!(
        calls(&server),
        ["PUT /latest/api/token"],
        "never used as a token"
    );
}

#[tokio::test]
async fn token_put_answers_of_the_wrong_shape_are_not_the_service() {
    let long = vec![b'A'; 1_025];
    let cases: [(Canned, &str); 3] = [
        (
            reply(200, "text/plain", b"MARKER is not a token"),
            "HTTP 200 with Content-Type text/plain, 21 bytes: \
             a metadata token (token_len 21) that is not printable ASCII",
        ),
        (
            reply(200, "application/octet-stream", &long),
            "HTTP 200 with Content-Type application/octet-stream, 1025 bytes: \
             a metadata token (token_len 1025) longer than 1024 bytes",
        ),
        (
            reply(200, "text/plain", b"\r\n"),
            "HTTP 200 with Content-Type text/plain, 2 bytes: an empty metadata token",
        ),
    ];
    for (canned, shape) in cases {
        let (result, server) = fetch_with(vec![canned, role(), credentials()], |_| {}).await;
        let err = result.unwrap_err();
        assert_not_the_service(&err, &server.endpoint(), shape, "PUT /latest/api/token");
        assert_eq!(server.requests().len(), 1, "{shape}");
    }
}

#[tokio::test]
async fn html_role_list_with_200_is_not_the_service() {
    let page = reply(200, "text/html", b"<html>MARKER portal</html>");
    let (result, server) = fetch_with(vec![token(TOKEN_1), page], |_| {}).await;
    let err = result.unwrap_err();
    let shape =
        "HTTP 200 with Content-Type text/html, 26 bytes: an HTML page instead of a role name";
    let list = "GET /latest/meta-data/ram/security-credentials/";
    assert_not_the_service(&err, &server.endpoint(), shape, list);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let huge = 8 * 1024 * 1024;
    for canned in [
        Canned::Huge { len: huge },
        Canned::HugeChunked { len: huge },
    ] {
        let (result, _server) =
            fetch_with(vec![token(TOKEN_1), role(), canned.clone()], |_| {}).await;
        let err = result.unwrap_err();
        assert!(
            err.to_string().contains("body larger than 65536 bytes"),
            "{canned:?}: {err}"
        );
    }
}

#[tokio::test]
async fn implausible_discovered_role_name_is_not_the_service() {
    let list = reply(200, "text/plain", b"../../api/token\n");
    let (result, server) = fetch_with(vec![token(TOKEN_1), list], |_| {}).await;
    let err = result.unwrap_err();
    let shape = "HTTP 200 with Content-Type text/plain, 16 bytes: \
                 a role list that is not a single role name: its first line (15 characters)";
    let list = "GET /latest/meta-data/ram/security-credentials/";
    assert_not_the_service(&err, &server.endpoint(), shape, list);
    assert_eq!(
        server.requests().len(),
        2,
        "the bad name is never requested"
    );
}
