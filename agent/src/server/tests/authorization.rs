//! Who is served, over real sockets: a caller that is not allowed is answered at accept and
//! takes no slot, a reload's rules apply to open connections at their next request, and no
//! uid holds more than its share of the connections.
//!
//! The tests run as root (CI) or as the agent's own uid, both always allowed; to be denied
//! they judge every uid by the configuration ([`Harness::start_judging_every_uid`]).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{closed_within, get_on, read_response, valid_state, Harness, SECRET};
use crate::test_logs::{capture_logs, logs};

/// The test's own uid, which the server sees as the caller's.
fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Reads what the server sends until it closes its side (bounded by a generous deadline).
async fn read_until_eof(s: &mut UnixStream) -> String {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the server shuts down its side")
        .expect("reading the answer");
    String::from_utf8_lossy(&raw).into_owned()
}

/// Regression (issue 10, item 1): a denied caller's connections used to sit in a slot until
/// `header_timeout` (answered only once a request arrived), so a user holding idle connections
/// starved allowed callers, and nothing was counted or audited.
#[tokio::test]
async fn a_denied_caller_is_answered_at_accept_and_takes_no_slot() {
    let (buf, _guard) = capture_logs();
    let (state, _) = valid_state();
    let h = Harness::start_judging_every_uid(state, |c| {
        c.allowed_uids = Vec::new();
        c.max_connections = 2;
        c.header_timeout = Duration::from_secs(600);
    });
    // Five idle connections, more than `max_connections`: each reads the 403 although it sends
    // nothing, and its write side is shut down.
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut s = h.connect().await;
        let text = read_until_eof(&mut s).await;
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text:?}");
        assert!(text.contains("connection: close\r\n"), "{text:?}");
        assert!(text.contains(r#""Code":"Forbidden""#), "{text:?}");
        assert!(!text.contains(SECRET));
        idle.push(s);
    }
    let metrics = h.metrics.encode();
    assert_eq!(
        sample(&metrics, "ecs_credential_agent_callers_denied_total"),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "ecs_credential_agent_connections_rejected_total"),
        Some(0.0),
        "denied connections are not counted as rejected: {metrics}"
    );
    // Audited once (later denials of the same uid are summarised).
    let text = logs(&buf);
    let denied: Vec<_> = text
        .lines()
        .filter(|l| l.contains("event=\"denied\""))
        .collect();
    assert_eq!(denied.len(), 1, "{text}");
    assert!(denied[0].contains(&format!("uid={}", me())), "{text}");

    // The uid is allowed now: it is served although the denied connections are still open.
    h.reload(|c| c.allowed_uids = vec![me()]);
    let mut s = h.connect().await;
    assert_eq!(get_on(&mut s, "/v1/credentials").await.status, 200);
    drop(idle);
}

/// A client that sends its request only after the 403 arrived still sends it without error
/// and reads the whole answer: the server drains what the client sends before closing.
#[tokio::test]
async fn a_slow_sender_still_reads_the_403() {
    let (state, _) = valid_state();
    let h = Harness::start_judging_every_uid(state, |c| c.allowed_uids = Vec::new());
    let mut s = h.connect().await;
    // Wait until the answer is there before sending anything.
    s.readable().await.unwrap();
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("the server still reads what a denied client sends");
    let r = read_response(&mut s).await.expect("the 403");
    r.assert_error(403, "Forbidden");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_within(&mut s, Duration::from_secs(10))
        .await
        .is_some());
}

/// Regression (issue 10, item 2): a connection kept the decision made at accept, so a caller
/// revoked by a reload kept being served on its open keep-alive connection.
#[tokio::test]
async fn a_reload_revokes_a_caller_at_its_next_request_on_an_open_connection() {
    let (state, _) = valid_state();
    let h = Harness::start_judging_every_uid(state, |c| c.allowed_uids = vec![me()]);
    let mut kept = h.connect().await;
    assert_eq!(get_on(&mut kept, "/v1/credentials").await.status, 200);
    // A reload that changes nothing about this caller keeps it served.
    h.reload(|c| c.idle_timeout = Duration::from_secs(30));
    assert_eq!(get_on(&mut kept, "/v1/credentials").await.status, 200);

    h.reload(|c| c.allowed_uids = Vec::new());
    let r = get_on(&mut kept, "/v1/credentials").await;
    r.assert_error(403, "Forbidden");
    assert!(!r.text().contains(SECRET));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        closed_within(&mut kept, Duration::from_secs(10))
            .await
            .is_some(),
        "the revoked caller's connection is closed"
    );
    let metrics = h.metrics.encode();
    assert_eq!(
        sample(&metrics, "ecs_credential_agent_callers_denied_total"),
        Some(1.0),
        "{metrics}"
    );
}

/// A reload that allows a caller again serves it on new connections.
#[tokio::test]
async fn a_reload_that_allows_a_caller_serves_its_new_connections() {
    let (state, _) = valid_state();
    let h = Harness::start_judging_every_uid(state, |c| c.allowed_uids = Vec::new());
    h.get("/v1/credentials")
        .await
        .assert_error(403, "Forbidden");
    h.reload(|c| c.allowed_gids = vec![nix::unistd::getegid().as_raw()]);
    assert_eq!(h.get("/v1/credentials").await.status, 200);
}

/// `max_connections_per_uid`: a uid beyond its share gets `503 TooManyConnections`, counted
/// apart from the global limit's rejections; a closed connection gives its place back.
#[tokio::test]
async fn a_uid_beyond_its_share_gets_503() {
    let (state, _) = valid_state();
    let h = Harness::start_judging_every_uid(state, |c| {
        c.allowed_uids = vec![me()];
        c.max_connections = 10;
        c.max_connections_per_uid = Some(2);
    });
    let mut first = h.connect().await;
    let mut second = h.connect().await;
    for s in [&mut first, &mut second] {
        assert_eq!(get_on(s, "/v1/health").await.status, 200);
    }
    let r = h.get("/v1/credentials").await;
    r.assert_error(503, "TooManyConnections");
    assert_eq!(r.header("connection"), Some("close"));
    let metrics = h.metrics.encode();
    assert_eq!(
        sample(
            &metrics,
            "ecs_credential_agent_connections_rejected_per_uid_total"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "ecs_credential_agent_connections_rejected_total"),
        Some(0.0),
        "{metrics}"
    );
    drop(first);
    // The place frees once the server notices the close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.get("/v1/health").await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connection's place in the share was never given back"
        );
        tokio::task::yield_now().await;
    }
}

/// Root and the agent's own uid have no share: they may take every slot.
#[tokio::test]
async fn root_and_the_agents_uid_are_exempt_from_the_share() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |c| {
        c.max_connections = 10;
        c.max_connections_per_uid = Some(1);
    });
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = h.connect().await;
        assert_eq!(get_on(&mut s, "/v1/health").await.status, 200);
        held.push(s);
    }
}

/// Item 8: with the default rules (`allowed_uids = []`), the agent's own uid (the test's, root
/// in CI) is served.
#[tokio::test]
async fn the_agents_own_uid_is_served_by_default() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |c| {
        *c = crate::server::config::Config {
            socket_path: c.socket_path.clone(),
            ..crate::server::config::Config::default()
        };
    });
    assert!(h.config.borrow().allowed_uids.is_empty());
    assert!(h.config.borrow().allowed_gids.is_empty());
    assert_eq!(h.get("/v1/credentials").await.status, 200);
}
