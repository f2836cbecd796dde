//! The socket API end to end over a real Unix socket.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;

use super::*;
use crate::credentials::State;

#[tokio::test]
async fn credentials_served_with_exact_body_and_headers() {
    let (state, issued) = valid_state();
    let h = Harness::start(state, |_| {});
    let r = h.get("/v1/credentials").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body, issued.body.as_ref());
    let v = r.json();
    assert_eq!(v["Code"], "Success");
    assert_eq!(v["AccessKeyId"], "STS.test1");
    assert_eq!(v["AccessKeySecret"], SECRET);
    assert_eq!(v["SecurityToken"], TOKEN);
}

#[tokio::test]
async fn health_ok_without_secrets() {
    let (mut state, _) = valid_state();
    state.last_error = Some("metadata service unavailable: HTTP 500".to_owned());
    let h = Harness::start(state, |_| {});
    let r = h.get("/v1/health").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["Status"], "Stale");
    assert_eq!(v["Stale"], true);
    assert_eq!(v["RoleName"], "EcsRole");
    assert_eq!(v["Generation"], 1);
    assert_eq!(v["Expiration"], "2023-11-15T04:13:20Z");
    assert_eq!(v["LastSuccess"], "2023-11-14T22:13:20Z");
    assert_eq!(v["ClockSkewSeconds"], 0);
    assert!(v["SecondsLeft"].as_u64().unwrap() > 21_000);
    assert!(v["LastError"].as_str().unwrap().contains("HTTP 500"));
    let text = r.text();
    assert!(!text.contains(SECRET) && !text.contains(TOKEN), "{text}");
    assert!(
        !text.contains("STS.test1"),
        "health names no AccessKeyId: {text}"
    );
}

#[tokio::test]
async fn health_unavailable_before_credentials() {
    let h = Harness::start(State::default(), |_| {});
    let r = h.get("/v1/health").await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["Status"], "Unavailable");
    assert_eq!(v["Stale"], false);
    assert!(v["RoleName"].is_null());
    assert_eq!(
        v["Message"],
        "agent is starting: no credentials fetched yet"
    );
}

#[tokio::test]
async fn unknown_path_and_wrong_method() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |_| {});
    h.get("/v1/nope").await.assert_error(404, "NotFound");
    let r = h
        .raw("POST /v1/credentials HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    r.assert_error(405, "MethodNotAllowed");
    assert_eq!(r.header("allow"), Some("GET"));
}

#[tokio::test]
async fn proxied_or_bodied_requests_refused() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |_| {});
    for header in [
        "X-Forwarded-For: 10.0.0.1",
        "Forwarded: for=10.0.0.1",
        "Via: 1.1 squid",
    ] {
        let raw = format!(
            "GET /v1/credentials HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n"
        );
        let r = h.raw(&raw).await;
        r.assert_error(400, "BadRequest");
        assert!(!r.text().contains(SECRET));
    }
    let raw = "GET /v1/credentials HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
               Connection: close\r\n\r\nabc";
    h.raw(raw).await.assert_error(400, "BadRequest");
}

#[tokio::test]
async fn malformed_request_line_gets_400() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |_| {});
    // hyper answers unparsable requests itself (400, no JSON body) and closes.
    let r = h.raw("GET\r\n\r\n").await;
    assert_eq!(r.status, 400, "{}", r.head);
    assert!(!r.text().contains(SECRET));
}

#[tokio::test]
async fn unavailable_after_the_first_wait() {
    let h = Harness::start(State::default(), |c| {
        c.first_credentials_wait = Duration::from_millis(50)
    });
    let r = h.get("/v1/credentials").await;
    r.assert_error(503, "CredentialsUnavailable");
    assert_eq!(
        r.json()["Message"],
        "agent is starting: no credentials fetched yet"
    );
}

#[tokio::test]
async fn credentials_arriving_during_the_wait_are_served() {
    let h = Harness::start(State::default(), |c| {
        c.first_credentials_wait = Duration::from_secs(10)
    });
    let mut s = h.request_waiting_for_credentials().await;
    let (state, issued) = valid_state();
    h.state.send_replace(state);
    let r = read_response(&mut s).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, issued.body.as_ref());
}

/// Regression (hostile-clients suite): a client that shuts down its writing side after the
/// request got no answer at all; hyper dropped the connection on the EOF.
#[tokio::test]
async fn a_half_closed_client_gets_its_answer() {
    let (state, issued) = valid_state();
    let h = Harness::start(state, |_| {});
    let mut s = h.connect().await;
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let r = read_response(&mut s).await.expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, issued.body.as_ref());
    assert!(closed_within(&mut s, Duration::from_secs(30))
        .await
        .is_some());

    // Also while the answer waits for the first credentials.
    let h = Harness::start(State::default(), |c| {
        c.first_credentials_wait = Duration::from_secs(10)
    });
    let mut s = h.request_waiting_for_credentials().await;
    s.shutdown().await.unwrap();
    let (state, issued) = valid_state();
    h.state.send_replace(state);
    let r = read_response(&mut s).await.expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, issued.body.as_ref());
}

#[tokio::test]
async fn never_served_past_serve_until() {
    let mut c = issued(
        3,
        "STS.old",
        Duration::from_secs(120),
        Duration::from_secs(60),
    );
    c.serve_until = Instant::now() - Duration::from_millis(1);
    let state = State {
        credentials: Some(Arc::new(c)),
        last_success: Some(SystemTime::UNIX_EPOCH),
        last_error: Some("metadata service unavailable: HTTP 503".to_owned()),
        ..State::default()
    };
    let h = Harness::start(state, |cfg| {
        cfg.first_credentials_wait = Duration::from_secs(10)
    });
    let started = std::time::Instant::now();
    let r = h.get("/v1/credentials").await;
    r.assert_error(503, "CredentialsUnavailable");
    assert!(r.json()["Message"]
        .as_str()
        .unwrap()
        .starts_with("credentials are within the expiry margin (Expiration "));
    assert!(r.json()["Message"]
        .as_str()
        .unwrap()
        .ends_with("and refresh is failing: metadata service unavailable: HTTP 503"));
    assert!(!r.text().contains(SECRET));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an agent that once had credentials does not wait"
    );
    let health = h.get("/v1/health").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["Status"], "Unavailable");
}

#[tokio::test]
async fn denied_caller_gets_403_on_every_route() {
    let (state, _) = valid_state();
    let h = Harness::start_judging_every_uid(state, |c| c.allowed_uids = Vec::new());
    for path in ["/v1/credentials", "/v1/health", "/nope"] {
        let r = h.get(path).await;
        r.assert_error(403, "Forbidden");
        assert!(!r.text().contains(SECRET));
    }
}

#[tokio::test]
async fn root_allowed_through_its_group() {
    let (state, _) = valid_state();
    let h = Harness::start_judging_every_uid(state, |c| {
        c.allowed_uids = Vec::new();
        c.allowed_gids = vec![nix::unistd::getgid().as_raw()];
    });
    assert_eq!(h.get("/v1/credentials").await.status, 200);
}

#[tokio::test]
async fn beyond_max_connections_gets_503_at_once() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |c| c.max_connections = 2);
    let keep_alive = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = h.connect().await;
    let mut second = h.connect().await;
    for s in [&mut first, &mut second] {
        s.write_all(keep_alive.as_bytes()).await.unwrap();
        assert_eq!(read_response(s).await.unwrap().status, 200);
    }
    let started = std::time::Instant::now();
    let r = h.get("/v1/credentials").await;
    r.assert_error(503, "TooManyConnections");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        // Well below the 5 s it would take to wait for a slot, a head or credentials.
        started.elapsed() < Duration::from_secs(3),
        "answered at once"
    );
    assert!(h
        .metrics
        .encode()
        .contains("ecs_credential_agent_connections_rejected_total 1\n"));
    drop(first);
    // The slot frees once the server notices the close.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while h.get("/v1/health").await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connection's slot was not released within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Regression (hostile-clients suite): in a burst beyond `max_connections`, connections past
/// the lingering rejections were closed without the 503 (more than half of 10,000 in the e2e
/// flood); each now reads `503 TooManyConnections`.
#[tokio::test]
async fn a_burst_beyond_the_lingering_rejections_still_reads_503() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |c| c.max_connections = 1);
    let mut held = h.connect().await;
    held.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut held).await.unwrap().status, 200);
    // Neither reading nor closing: every rejection lingers (up to its 1 s), so the ones beyond
    // MAX_ANSWERING are answered at once.
    let mut burst = Vec::new();
    for _ in 0..crate::server::admission::MAX_ANSWERING + 20 {
        burst.push(h.connect().await);
    }
    for (i, s) in burst.iter_mut().enumerate() {
        let r = read_response(s).await;
        let r = r.unwrap_or_else(|| panic!("connection {i} closed without an answer"));
        r.assert_error(503, "TooManyConnections");
    }
}

#[tokio::test]
async fn slow_header_is_dropped() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |c| c.header_timeout = Duration::from_millis(200));
    let mut s = h.connect().await;
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut s, Duration::from_secs(30))
        .await
        .expect("closed");
    assert!(took >= Duration::from_millis(150), "{took:?}");
    // A connection that never sends anything is held no longer.
    let mut silent = h.connect().await;
    closed_within(&mut silent, Duration::from_secs(30))
        .await
        .expect("closed");
}

#[tokio::test]
async fn idle_keep_alive_closed_after_idle_timeout_not_header_timeout() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |c| {
        // Far apart, and the header timeout long enough for a loaded machine to send the
        // request in time.
        c.header_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_secs(3);
    });
    let mut s = h.connect().await;
    assert_eq!(get_on(&mut s, "/v1/health").await.status, 200);
    let took = closed_within(&mut s, Duration::from_secs(30))
        .await
        .expect("closed");
    assert!(
        took >= Duration::from_secs(2),
        "idle, not header, timeout: {took:?}"
    );
}

/// A request in flight when the shutdown begins (its head begun, here) is answered, with
/// `Connection: close`, before `run` returns. (A request waiting for the first credentials is
/// answered `503` at once instead: `tests/shutdown.rs`.)
#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_request() {
    let (state, issued) = valid_state();
    let mut h = Harness::start(state, |c| c.header_timeout = Duration::from_secs(60));
    let mut s = h.connect().await;
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\n")
        .await
        .unwrap();
    let done = h.shutdown();
    // The stop is seen at once (the socket is removed first); the drain then waits for the
    // request, which cannot end before the rest of its head below arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while h.path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "shutdown not begun in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!done.is_finished(), "waits for the in-flight request");
    s.write_all(b"Host: x\r\n\r\n").await.unwrap();
    let r = read_response(&mut s).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, issued.body.as_ref());
    assert_eq!(r.header("connection"), Some("close"));
    let (listener, result) = tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .unwrap()
        .unwrap();
    result.unwrap();
    assert!(
        !h.path.exists(),
        "run removes its own socket when it stops accepting"
    );
    assert!(!listener.remove_socket().unwrap(), "nothing left to remove");
}

/// A request that never completes (its head begun, the rest never sent, `header_timeout`
/// far away) holds the drain only `shutdown_grace`; then its connection is dropped.
#[tokio::test]
async fn shutdown_grace_bounds_the_wait() {
    let (state, _) = valid_state();
    let mut h = Harness::start(state, |c| {
        c.header_timeout = Duration::from_secs(600);
        c.shutdown_grace = Duration::from_millis(200);
    });
    let mut s = h.connect().await;
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\n")
        .await
        .unwrap();
    let done = h.shutdown();
    let (_, result) = tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .unwrap()
        .unwrap();
    result.unwrap();
    assert!(
        read_response(&mut s).await.is_none(),
        "the connection was dropped"
    );
}

#[tokio::test]
async fn a_denied_connection_is_closed_after_the_403() {
    use tokio::io::AsyncReadExt;
    let (state, _) = valid_state();
    let h = Harness::start_judging_every_uid(state, |c| {
        c.allowed_uids = Vec::new();
        c.max_connections = 1;
    });
    let mut s = h.connect().await;
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The server answers and closes: read_to_end returns instead of waiting for idle_timeout.
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("the server closes a denied connection at once")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 403"), "{text:?}");
    assert!(
        text.to_lowercase().contains("connection: close"),
        "{text:?}"
    );
}

#[tokio::test]
async fn absolute_form_proxy_requests_are_refused() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |_| {});
    let r = h
        .raw("GET http://evil.example/v1/credentials HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .await;
    r.assert_error(400, "BadRequest");
    assert!(r.text().contains("absolute-form"), "{}", r.text());
}

/// Regression: a request head that starts in the same read as the end of the previous request
/// (pipelined, then silence) must be complete within `header_timeout`, like any other head.
/// The socket wrapper only saw bytes arrive while the connection was busy, so the answer put
/// the connection back to idle and the started head was held until `idle_timeout`.
#[tokio::test]
async fn a_pipelined_partial_head_is_held_only_header_timeout() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |c| {
        c.header_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_secs(30);
    });
    let mut s = h.connect().await;
    // One write: two complete requests and the start of a third, then nothing more.
    s.write_all(
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /v1/cre",
    )
    .await
    .unwrap();
    read_answers(&mut s, 2).await;
    let took = closed_within(&mut s, Duration::from_secs(30))
        .await
        .expect("a started head is held no longer than header_timeout, not idle_timeout");
    // Far below idle_timeout, with room for a loaded machine.
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Complete pipelined requests then silence: idle, so `idle_timeout` (not `header_timeout`)
    // applies after the last answer.
    let h = Harness::start(valid_state().0, |c| {
        c.header_timeout = Duration::from_millis(500);
        c.idle_timeout = Duration::from_secs(3);
    });
    let mut s = h.connect().await;
    s.write_all(
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    read_answers(&mut s, 2).await;
    let took = closed_within(&mut s, Duration::from_secs(30))
        .await
        .expect("closed");
    assert!(
        took >= Duration::from_secs(2),
        "idle, not header, timeout: {took:?}"
    );
}

/// Reads until `n` complete `200` answers have arrived (pipelined answers may share a read).
async fn read_answers(s: &mut tokio::net::UnixStream, n: usize) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    while String::from_utf8_lossy(&buf)
        .matches("HTTP/1.1 200 OK")
        .count()
        < n
        || !buf.ends_with(b"}")
    {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk));
        let got = read.await.expect("answers in time").unwrap();
        assert!(
            got > 0,
            "closed before {n} answers: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..got]);
    }
    assert_eq!(
        String::from_utf8_lossy(&buf).matches("HTTP/1.1 ").count(),
        n,
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}
