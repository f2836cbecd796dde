//! Shutdown: every connection the server accepted gets its request answered before
//! [`Server::run`](super::Server::run) returns, and nothing waits longer than it has to.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use super::*;
use crate::credentials::State;

/// Waits (real time, up to 60 s) until `cond` holds; panics with `what` otherwise.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what} after 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A new connection, once the server has accepted it (a connection holds a receiver of the
/// refresher's state from its accept on).
async fn accepted(h: &Harness) -> UnixStream {
    let before = h.state.receiver_count();
    let s = h.connect().await;
    until("the server has not accepted the connection", || {
        h.state.receiver_count() > before
    })
    .await;
    s
}

/// Waits for `run` to return after a shutdown (up to 30 s) and checks it returned `Ok`.
async fn stopped(done: JoinHandle<(Listener, std::io::Result<()>)>) {
    let (_, result) = tokio::time::timeout(Duration::from_secs(30), done)
        .await
        .expect("run returns once the connections are answered")
        .unwrap();
    result.unwrap();
}

/// Regression (issue 11, item 1): a restart under load lost a request with `write: Broken
/// pipe`. The stopping server had accepted a connection whose client had not sent its request
/// yet; hyper's graceful shutdown closes a connection that has read nothing at once, so the
/// client, whose `connect` had succeeded, wrote into a closed socket. The interleaving is
/// forced here: accepted, then the shutdown seen by the connection, then the request.
///
/// On the current-thread runtime (tasks interleave only at `.await`): once the socket file is
/// gone, the server has sent the stop and woken the connection's task in the same poll;
/// `yield_now` then lets every task already woken run before this one resumes, so the
/// connection has handled the stop before the request is written.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_accepted_before_shutdown_gets_its_first_request_answered() {
    let (state, issued) = valid_state();
    let mut h = Harness::start(state, |c| c.header_timeout = Duration::from_secs(60));
    let mut s = accepted(&h).await;
    let done = h.shutdown();
    until("shutdown not begun", || !h.path.exists()).await;
    tokio::task::yield_now().await;
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("the accepted connection is still open");
    let r = read_response(&mut s)
        .await
        .expect("the accepted connection is answered, not closed");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, issued.body.as_ref());
    assert_eq!(r.header("connection"), Some("close"));
    stopped(done).await;
}

/// A connection accepted before the shutdown whose client never sends a request holds the
/// drain no longer than its `header_timeout`.
#[tokio::test]
async fn a_silent_accepted_connection_holds_the_shutdown_only_header_timeout() {
    let (state, _) = valid_state();
    let mut h = Harness::start(state, |c| {
        c.header_timeout = Duration::from_millis(300);
        c.shutdown_grace = Duration::from_secs(600);
    });
    let mut s = accepted(&h).await;
    let done = h.shutdown();
    stopped(done).await;
    assert!(read_response(&mut s).await.is_none(), "closed, no answer");
}

/// Regression (issue 11, item 13): SIGTERM while a request waited for the first credentials
/// took the whole `first_credentials_wait_ms`; the request is now answered `503` as soon as
/// the shutdown begins. Paused time: on the old code the clock jumps to the end of the wait
/// (which began a moment before `begun`).
#[tokio::test(start_paused = true)]
async fn shutdown_answers_a_request_waiting_for_the_first_credentials_at_once() {
    let wait = Duration::from_secs(300);
    let mut h = Harness::start(State::default(), |c| {
        c.first_credentials_wait = wait;
        c.shutdown_grace = Duration::from_secs(600);
    });
    let mut s = h.request_waiting_for_credentials().await;
    let begun = tokio::time::Instant::now();
    let done = h.shutdown();
    let r = read_response(&mut s).await.expect("an answer");
    assert!(
        begun.elapsed() < wait / 2,
        "answered after {:?}",
        begun.elapsed()
    );
    r.assert_error(503, "CredentialsUnavailable");
    assert_eq!(
        r.json()["Message"],
        "agent is shutting down: no credentials fetched yet"
    );
    assert_eq!(r.header("connection"), Some("close"));
    stopped(done).await;
    assert!(
        begun.elapsed() < wait / 2,
        "stopped after {:?}",
        begun.elapsed()
    );
}

/// A request arriving on an accepted connection after the shutdown began, before any
/// credentials, is answered `503` at once too.
#[tokio::test(start_paused = true)]
async fn a_request_after_the_shutdown_began_does_not_wait_for_credentials() {
    let wait = Duration::from_secs(300);
    let mut h = Harness::start(State::default(), |c| {
        c.first_credentials_wait = wait;
        c.header_timeout = Duration::from_secs(600);
        c.shutdown_grace = Duration::from_secs(600);
    });
    let mut s = accepted(&h).await;
    let begun = tokio::time::Instant::now();
    let done = h.shutdown();
    until("shutdown not begun", || !h.path.exists()).await;
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await.expect("an answer");
    r.assert_error(503, "CredentialsUnavailable");
    assert!(r.text().contains("shutting down"), "{}", r.text());
    stopped(done).await;
    assert!(
        begun.elapsed() < wait / 2,
        "stopped after {:?}",
        begun.elapsed()
    );
}
