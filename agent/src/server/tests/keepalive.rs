//! A kept-alive connection answers from the credential generation it cached: these tests pin
//! that the cache never outlives what the refresher publishes, `serve_until`, or an idle
//! connection, and that the issuances it counts still reach the audit.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{get_on, issued, read_response, state_with, valid_state, Harness, Response, SECRET};
use crate::credentials::{State, Unavailable};
use crate::test_logs::{capture_logs, logs};

#[tokio::test]
async fn a_kept_connection_follows_every_publication() {
    let (state, first) = valid_state();
    let h = Harness::start(state, |_| {});
    let mut s = h.connect().await;
    let r = get_on(&mut s, "/v1/credentials").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, first.body.as_ref());

    // A new generation: served at once on the same connection.
    let second = Arc::new(issued(
        2,
        "STS.test2",
        Duration::from_secs(21_600),
        Duration::from_secs(60),
    ));
    h.state.send_replace(state_with(&second));
    let r = get_on(&mut s, "/v1/credentials").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["AccessKeyId"], "STS.test2");

    // The role detached (404): nothing is served any more, on this connection either.
    h.state.send_replace(State {
        reason: Unavailable::RoleNotAttached { role_name: None },
        ..State::default()
    });
    let r = get_on(&mut s, "/v1/credentials").await;
    r.assert_error(503, "CredentialsUnavailable");
    assert!(!r.text().contains(SECRET));

    // Credentials again.
    h.state.send_replace(state_with(&second));
    let r = get_on(&mut s, "/v1/credentials").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["AccessKeyId"], "STS.test2");
}

// The next two run on real time: with paused time, tokio advances the clock to the next timer
// while a test waits for socket I/O, which would fire the connection's timer at random points.

#[tokio::test]
async fn a_kept_connection_stops_serving_at_serve_until_without_a_publication() {
    let mut c = issued(
        1,
        "STS.short",
        Duration::from_secs(21_600),
        Duration::from_secs(60),
    );
    let serve_until = Instant::now() + Duration::from_secs(1);
    c.serve_until = serve_until;
    let c = Arc::new(c);
    let h = Harness::start(state_with(&c), |_| {});
    let mut s = h.connect().await;
    assert_eq!(get_on(&mut s, "/v1/credentials").await.status, 200);
    assert!(Instant::now() < serve_until, "the machine stalled for 1 s");
    // The refresher publishes nothing: the connection's cached generation is still checked
    // against `serve_until` on every request.
    tokio::time::sleep_until(serve_until).await;
    let r = get_on(&mut s, "/v1/credentials").await;
    r.assert_error(503, "CredentialsUnavailable");
    assert!(!r.text().contains(SECRET));
}

#[tokio::test]
async fn an_idle_connection_lets_go_of_a_replaced_generation() {
    let (state, first) = valid_state();
    let h = Harness::start(state, |cfg| {
        cfg.header_timeout = Duration::from_millis(200);
        cfg.idle_timeout = Duration::from_secs(600);
    });
    let mut s = h.connect().await;
    assert_eq!(get_on(&mut s, "/v1/credentials").await.status, 200);
    let first: Weak<_> = {
        let weak = Arc::downgrade(&first);
        drop(first);
        weak
    };
    // Rotation: the refresher drops the old generation; only the idle connection's cache
    // still holds it (its timer checks an idle connection every `header_timeout`).
    let second = Arc::new(issued(
        2,
        "STS.test2",
        Duration::from_secs(21_600),
        Duration::from_secs(60),
    ));
    h.state.send_replace(state_with(&second));
    // Within two checks, the timer drops it: the old generation's memory (secrets included)
    // is freed although the connection stays open.
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.upgrade().is_some() {
        assert!(
            Instant::now() < deadline,
            "an idle connection still holds a replaced generation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = get_on(&mut s, "/v1/credentials").await;
    assert_eq!(
        r.json()["AccessKeyId"],
        "STS.test2",
        "still open and current"
    );
}

#[tokio::test(start_paused = true)]
async fn repeats_on_an_idle_connection_reach_the_audit_without_closing_it() {
    let (buf, _guard) = capture_logs();
    let (state, _first) = valid_state();
    let h = Harness::start(state, |cfg| {
        cfg.header_timeout = Duration::from_secs(5);
        cfg.idle_timeout = Duration::from_secs(3_600);
    });
    let mut s = h.connect().await;
    for _ in 0..5 {
        assert_eq!(get_on(&mut s, "/v1/credentials").await.status, 200);
    }
    // The connection stays open and silent. Its 4 repeats reach the shared audit at its next
    // timer check, and the audit's periodic flush reports them once the summary interval
    // (60 s) is over.
    tokio::time::sleep(Duration::from_secs(75)).await;
    let text = logs(&buf);
    let repeats: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("event=\"repeats\""))
        .collect();
    assert_eq!(repeats.len(), 1, "{text}");
    assert!(repeats[0].contains("count=4"), "{text}");
    assert_eq!(
        text.matches("event=\"issued\"").count(),
        1,
        "one issued event per caller and generation: {text}"
    );
    assert_eq!(get_on(&mut s, "/v1/credentials").await.status, 200);
}

/// Every credential answer is accounted for in the audit exactly once (an `issued` event
/// counts one, a `repeats` event its `count`, an `untracked` event its `issuances`) and in the
/// request counter, whatever path it took: kept-alive connections (counted in batches, reported
/// on the next request, by the idle timer, on rotation), new connections, pipelined requests,
/// a request that waited for the first credentials, and connections still open at shutdown.
#[tokio::test]
async fn the_audit_and_the_counter_account_for_every_credential_answer() {
    let (buf, _guard) = capture_logs();
    let mut h = Harness::start(State::default(), |cfg| {
        cfg.header_timeout = Duration::from_millis(300);
        cfg.idle_timeout = Duration::from_secs(30);
        cfg.first_credentials_wait = Duration::from_secs(5);
    });
    let mut served = 0u64;
    let mut expect_200 = |r: Response, key: &str| {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["AccessKeyId"], key);
        served += 1;
    };
    // One request waits for the first credentials.
    let mut a = h.request_waiting_for_credentials().await;
    let (state, _first) = valid_state();
    h.state.send_replace(state);
    expect_200(read_response(&mut a).await.unwrap(), "STS.test1");
    for _ in 0..30 {
        expect_200(get_on(&mut a, "/v1/credentials").await, "STS.test1");
    }
    for _ in 0..3 {
        expect_200(h.get("/v1/credentials").await, "STS.test1");
    }
    // Idle past the batch interval: the timer reports the kept connection's repeats.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    for _ in 0..7 {
        expect_200(get_on(&mut a, "/v1/credentials").await, "STS.test1");
    }
    // Rotation in the middle of the kept connection.
    let second = Arc::new(issued(
        2,
        "STS.test2",
        Duration::from_secs(21_600),
        Duration::from_secs(60),
    ));
    h.state.send_replace(state_with(&second));
    for _ in 0..5 {
        expect_200(get_on(&mut a, "/v1/credentials").await, "STS.test2");
    }
    // Pipelined on another kept connection.
    let mut b = h.connect().await;
    b.write_all(
        "GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n"
            .repeat(4)
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    while String::from_utf8_lossy(&raw).matches("STS.test2").count() < 4 {
        let mut chunk = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut b, &mut chunk)
            .await
            .unwrap();
        assert!(n > 0, "closed early");
        raw.extend_from_slice(&chunk[..n]);
    }
    served += 4;
    // Shutdown with both connections open and idle: their batches are reported as they close.
    let (_, result) = tokio::time::timeout(Duration::from_secs(30), h.shutdown())
        .await
        .expect("idle connections closed promptly at shutdown")
        .unwrap();
    result.unwrap();

    let text = logs(&buf);
    let count_of = |line: &str, field: &str| -> u64 {
        let at = line
            .find(&format!("{field}="))
            .unwrap_or_else(|| panic!("{line}"));
        line[at + field.len() + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut audited = 0;
    for line in text.lines() {
        if line.contains("event=\"issued\"") {
            audited += 1;
        } else if line.contains("event=\"repeats\"") {
            audited += count_of(line, "count");
        } else if line.contains("event=\"untracked\"") {
            audited += count_of(line, "issuances");
        }
    }
    assert_eq!(audited, served, "{text}");
    assert_eq!(text.matches("event=\"issued\"").count(), 2, "{text}");
    assert!(
        h.metrics.encode().contains(&format!(
            "ecs_credential_agent_socket_requests_total{{endpoint=\"credentials\",status=\"200\"}} {served}\n"
        )),
        "{}",
        h.metrics.encode()
    );
}

/// A handler that panics answers 500 on its own request only: the kept connection (its state
/// lock, cached generation and phase) serves the next request, is still closed by its timer
/// when idle, and every answer is counted.
#[tokio::test]
async fn a_panicking_handler_leaves_the_kept_connection_usable() {
    let (state, _first) = valid_state();
    let supervision = crate::server::Supervision {
        panic_on_path: Some("/v1/health".to_owned()),
        ..crate::server::Supervision::default()
    };
    let h = Harness::start_with(
        state,
        |cfg| {
            // Room for a loaded machine between the requests below.
            cfg.header_timeout = Duration::from_millis(500);
            cfg.idle_timeout = Duration::from_secs(3);
        },
        supervision,
    );
    let mut s = h.connect().await;
    assert_eq!(get_on(&mut s, "/v1/credentials").await.status, 200);
    for _ in 0..2 {
        let r = get_on(&mut s, "/v1/health").await;
        r.assert_error(500, "InternalError");
        assert!(!r.text().contains(SECRET));
        assert_eq!(r.header("connection"), None, "kept alive");
        let r = get_on(&mut s, "/v1/credentials").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["AccessKeyId"], "STS.test1");
    }
    let text = h.metrics.encode();
    for line in [
        "ecs_credential_agent_socket_requests_total{endpoint=\"health\",status=\"500\"} 2\n",
        "ecs_credential_agent_socket_requests_total{endpoint=\"credentials\",status=\"200\"} 3\n",
    ] {
        assert!(text.contains(line), "{line}{text}");
    }
    let took = super::closed_within(&mut s, Duration::from_secs(30))
        .await
        .expect("an idle connection is still closed after a panic");
    assert!(took >= Duration::from_secs(2), "idle timeout: {took:?}");
}

/// A head started late in a kept connection's idle period gets its full `header_timeout` from
/// its first byte (neither cut at the idle deadline nor extended by each further byte), after
/// many requests on the connection.
///
/// Real time, as the timeouts are what is tested (paused time would fire the connection's
/// timer whenever the test waits for socket I/O). The timeouts are seconds so that a loaded
/// machine's stalls of a second neither move the head past the idle deadline nor the close
/// past the upper bound; the idle wait is checked against the answer it follows.
#[tokio::test]
async fn a_slow_head_after_many_requests_gets_header_timeout_from_its_first_byte() {
    const HEADER: Duration = Duration::from_secs(3);
    const IDLE: Duration = Duration::from_secs(6);
    let (state, _first) = valid_state();
    let h = Harness::start(state, |cfg| {
        cfg.header_timeout = HEADER;
        cfg.idle_timeout = IDLE;
    });
    let mut s = h.connect().await;
    for _ in 0..20 {
        assert_eq!(get_on(&mut s, "/v1/credentials").await.status, 200);
    }
    let answered = Instant::now();
    // Idle for most of `idle_timeout` (the head's start late in it is the thing tested), then a
    // head dribbled a byte every 50 ms for up to four header timeouts.
    tokio::time::sleep(IDLE - HEADER / 2).await;
    let started = Instant::now();
    let idle_left = (answered + IDLE).saturating_duration_since(started);
    assert!(
        idle_left >= HEADER / 4,
        "the machine stalled: the head starts {idle_left:?} before the idle deadline"
    );
    let mut closed_after = None;
    let slow_head = b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    for byte in slow_head.iter().chain(std::iter::repeat(&b'a')) {
        if started.elapsed() > 4 * HEADER {
            break;
        }
        if s.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        if let Some(took) = super::closed_within(&mut s, Duration::from_millis(50)).await {
            closed_after = Some(started.elapsed().max(took));
            break;
        }
    }
    let took = closed_after.expect("a dribbled head is cut off");
    assert!(
        took >= HEADER - Duration::from_millis(50) && took < 2 * HEADER,
        "closed {took:?} after the head's first byte (header_timeout {HEADER:?}, the idle \
         deadline was {idle_left:?} away)"
    );
}
