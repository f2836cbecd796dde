//! The optional loopback TCP listener of `[metrics] listen` (a second transport beside the
//! Unix socket): `GET /metrics` and nothing else.
//!
//! Metrics carry no secret, so there is no peer check here; the address is checked to be
//! loopback when the configuration is parsed ([`crate::metrics::config::Config`]). Every other
//! path answers 404, another method on `/metrics` 405. Each connection serves one request and
//! closes (no keep-alive).
//!
//! # Slots
//!
//! Any local user can connect, so the listener must stay usable while someone holds
//! connections open without sending anything. It serves at most [`MAX_CONNECTIONS`] at once
//! (bounding memory and file descriptors), and a connection:
//!
//! - must send its request head within [`HEADER_TIMEOUT`] of being accepted, and be done
//!   (answer written) within [`CONNECTION_TIMEOUT`]; past either it is closed;
//! - is never refused: when every slot is taken, the connection that has waited longest for
//!   its request head is closed to admit the new one (`victim`). Only when every slot is
//!   answering (a peer that does not read an answer too large for the socket buffers) is the
//!   oldest of those closed instead.
//!
//! So a peer holding any number of idle or half-sent connections cannot keep out a scraper
//! that sends its request at once: the scraper's connection is closed only if it is the
//! oldest still waiting for its head when a new one arrives, that is after at least
//! [`MAX_CONNECTIONS`]` - 1` newer connections were accepted before its head was read (in
//! microseconds on loopback: the accept loop yields after each accept so that a head which
//! came with its connection is read before the next victim is chosen). A peer able to open
//! connections that fast, in that moment, can make one scrape fail; it cannot hold the
//! endpoint. The slots are many so that this moment is long, and cheap: an idle connection
//! holds about 14 KiB and one file descriptor, [`MAX_CONNECTIONS`] of them a few MiB.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, Id, JoinHandle, JoinSet};

use super::routes::{self, Reply};
use crate::metrics::Metrics;

/// A scraper must send its request head within this of being accepted.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection is closed this long after being accepted, answered or not (a peer that does
/// not read its answer).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once; a new one beyond takes the slot of the one that has
/// waited longest for its request head (`victim`). A scraper whose head is not read yet
/// survives this many newer connections, less one.
pub const MAX_CONNECTIONS: usize = 256;
/// hyper's read buffer limit (its minimum, 8 KiB).
const MAX_BUF_SIZE: usize = 8 * 1024;
/// Pause after an `accept(2)` error such as `EMFILE`, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The metrics listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr} ([metrics] listen): {source}")]
pub struct MetricsBindError {
    /// The configured address.
    pub addr: SocketAddr,
    /// What `bind(2)` reported (for example "Address already in use").
    #[source]
    pub source: io::Error,
}

/// Binds `addr` (TCP).
///
/// # Errors
/// [`MetricsBindError`] naming the address and the cause.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsBindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsBindError { addr, source })
}

/// The running metrics listener; dropping it stops it (open scrapes are cut off).
#[derive(Debug)]
pub struct MetricsListener {
    task: JoinHandle<()>,
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` from `metrics` on `listener` until the returned [`MetricsListener`]
/// is dropped.
///
/// # Panics
/// Outside a tokio runtime (like `tokio::spawn`).
pub fn spawn(listener: TcpListener, metrics: Metrics) -> MetricsListener {
    MetricsListener {
        task: tokio::spawn(accept_loop(listener, metrics)),
    }
}

async fn accept_loop(listener: TcpListener, metrics: Metrics) {
    let mut slots = Slots::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    slots.admit(|answering| serve_connection(stream, metrics.clone(), answering));
                    // Lets the new connection read a request head that came with it before the
                    // next accept picks a victim: without this, a burst of accepts can run
                    // before the new task is first polled.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(ended) = slots.tasks.join_next_with_id() => {
                slots.release(ended.map_or_else(|e| e.id(), |(id, ())| id));
            }
        }
    }
}

/// The connections being served: their tasks (aborted when the set is dropped) and, oldest
/// first, whether each has read its request head.
#[derive(Default)]
struct Slots {
    tasks: JoinSet<()>,
    held: VecDeque<Slot>,
}

/// One connection being served.
struct Slot {
    task: AbortHandle,
    /// Set once the request head has been read (the connection is being answered).
    answering: Arc<AtomicBool>,
}

impl Slots {
    /// Starts `serve(answering)` for a new connection, first closing the [`victim`] if every
    /// slot is taken. `answering` is for the connection to set once its request head is read.
    fn admit<F: Future<Output = ()> + Send + 'static>(
        &mut self,
        serve: impl FnOnce(Arc<AtomicBool>) -> F,
    ) {
        if self.held.len() >= MAX_CONNECTIONS {
            let flags = self
                .held
                .iter()
                .map(|s| s.answering.load(Ordering::Relaxed));
            if let Some(old) = victim(flags).and_then(|i| self.held.remove(i)) {
                // Its socket closes when the runtime drops the aborted task, at once.
                old.task.abort();
                tracing::debug!("metrics listener full; closed the oldest waiting connection");
            }
        }
        let answering = Arc::new(AtomicBool::new(false));
        let task = self.tasks.spawn(serve(Arc::clone(&answering)));
        self.held.push_back(Slot { task, answering });
    }

    /// Forgets the task `id`, which has ended (a slot closed by [`Slots::admit`] is already
    /// forgotten).
    fn release(&mut self, id: Id) {
        if let Some(i) = self.held.iter().position(|s| s.task.id() == id) {
            self.held.remove(i);
        }
    }
}

/// Which held connection to close for a new one, given, oldest first, whether each has read
/// its request head: the oldest still waiting for it, else the oldest (`None` when none is
/// held).
fn victim(answering: impl IntoIterator<Item = bool>) -> Option<usize> {
    let mut any = false;
    for (i, answering) in answering.into_iter().enumerate() {
        if !answering {
            return Some(i);
        }
        any = true;
    }
    any.then_some(0)
}

/// Serves one request on `io`, setting `answering` once its head is read, within the
/// connection's timeouts.
async fn serve_connection<I>(io: I, metrics: Metrics, answering: Arc<AtomicBool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        answering.store(true, Ordering::Relaxed);
        let reply = respond(req.method(), req.uri().path(), &metrics);
        async move { Ok::<_, Infallible>(reply) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_BUF_SIZE)
        .serve_connection(TokioIo::new(io), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection ended with an error"),
        Err(_) => tracing::debug!("metrics connection closed after CONNECTION_TIMEOUT"),
    }
}

/// The answer to `method path` on the metrics listener (no I/O).
pub fn respond(method: &Method, path: &str, metrics: &Metrics) -> Reply {
    match (path, method) {
        ("/metrics", &Method::GET) => routes::metrics(metrics),
        ("/metrics", _) => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: this port serves only GET /metrics\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

    #[test]
    fn tcp_answers_only_get_metrics() {
        let m = Metrics::new();
        let ok = respond(&http::Method::GET, "/metrics", &m);
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()[CONTENT_TYPE], METRICS_CONTENT_TYPE);
        for path in ["/v1/credentials", "/v1/health", "/", "/metrics/"] {
            assert_eq!(
                respond(&http::Method::GET, path, &m).status(),
                404,
                "{path}"
            );
        }
        let post = respond(&http::Method::POST, "/metrics", &m);
        assert_eq!(post.status(), 405);
        assert_eq!(post.headers()[http::header::ALLOW], "GET");
    }

    async fn tcp_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn tcp_listener_serves_metrics_and_stops_when_dropped() {
        let m = Metrics::new();
        m.caller_denied();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(listener, m.clone());
        let ok = tcp_get(addr, "/metrics").await.unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
        assert!(
            ok.contains(&format!(
                "{}_callers_denied_total 1\n",
                crate::metrics::PREFIX
            )),
            "{ok}"
        );
        assert!(
            ok.to_lowercase().contains("connection: close"),
            "no keep-alive: {ok}"
        );
        let other = tcp_get(addr, "/v1/credentials").await.unwrap();
        assert!(other.starts_with("HTTP/1.1 404 "), "{other}");

        // The same address cannot be bound twice; the error names it and the key.
        let err = bind(addr).await.unwrap_err().to_string();
        assert!(
            err.contains(&addr.to_string()) && err.contains("[metrics] listen"),
            "{err}"
        );

        drop(server);
        // Up to 10 s, for a loaded machine.
        for _ in 0..1_000 {
            if tcp_get(addr, "/metrics").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the metrics listener still answers after being dropped");
    }

    /// Connections that send nothing, each held until the listener closes it (as an attacker
    /// holding slots would: letting go of one the listener still serves would free its slot).
    #[derive(Default)]
    struct Idle(Vec<std::net::TcpStream>);

    impl Idle {
        /// Opens `n` more.
        async fn open(&mut self, addr: SocketAddr, n: usize) {
            for _ in 0..n {
                let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                // Non-blocking, as tokio left it: `peek` below never waits.
                self.0.push(s.into_std().unwrap());
            }
        }

        /// Lets go of those the listener has closed (end of stream or reset).
        fn prune(&mut self) {
            self.0.retain(
                |s| matches!(s.peek(&mut [0u8]), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            );
        }
    }

    /// Issue 10 item 5: a peer holding every slot with connections that send nothing (and
    /// opening fresh ones, as one that reconnects would) does not keep a scraper out. Each
    /// round opens `MAX_CONNECTIONS + 1` idle connections (the first round twice as many) and
    /// keeps every one the listener has not closed, so the slots are full of idle connections
    /// when the scrape arrives. The bound: every scrape is answered `200`, none is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_do_not_starve_a_scraper() {
        const ROUNDS: usize = 20;
        // About three times MAX_CONNECTIONS descriptors are open at once.
        crate::process::raise_open_files_limit().unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = spawn(listener, Metrics::new());
        let mut idle = Idle::default();
        let mut failed = Vec::new();
        for round in 0..ROUNDS {
            idle.prune();
            let fresh = if round == 0 {
                2 * MAX_CONNECTIONS
            } else {
                MAX_CONNECTIONS + 1
            };
            idle.open(addr, fresh).await;
            // Generous, for a loaded machine: a refused scrape ends at once, not at the deadline.
            match tokio::time::timeout(Duration::from_secs(30), tcp_get(addr, "/metrics")).await {
                Ok(Ok(reply)) if reply.starts_with("HTTP/1.1 200 ") => {}
                other => failed.push(format!("round {round}: {other:?}")),
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {ROUNDS} scrapes failed: {failed:?}",
            failed.len()
        );
    }

    #[test]
    fn victim_is_the_oldest_waiting_for_its_head_else_the_oldest() {
        // (answering flags of the held connections, oldest first; the one to close)
        let table: &[(&[bool], Option<usize>)] = &[
            (&[], None),
            (&[false], Some(0)),
            (&[false, false, false], Some(0)),
            (&[true, false, false], Some(1)),
            (&[true, true, false], Some(2)),
            (&[true, true, true], Some(0)),
        ];
        for &(answering, expected) in table {
            assert_eq!(victim(answering.iter().copied()), expected, "{answering:?}");
        }
    }

    /// A connection that sends nothing is closed `HEADER_TIMEOUT` after it started, and was
    /// never marked as answering.
    #[tokio::test(start_paused = true)]
    async fn silent_connection_closes_after_header_timeout() {
        let (server, mut client) = tokio::io::duplex(4096);
        let answering = Arc::new(AtomicBool::new(false));
        let start = tokio::time::Instant::now();
        serve_connection(server, Metrics::new(), Arc::clone(&answering)).await;
        let took = start.elapsed();
        assert!(
            took >= HEADER_TIMEOUT && took < HEADER_TIMEOUT + Duration::from_millis(10),
            "{took:?}"
        );
        assert!(!answering.load(Ordering::Relaxed));
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "no answer without a request: {rest:?}");
    }

    /// A connection that sends its head but does not read an answer that does not fit the
    /// buffer is marked as answering, then closed `CONNECTION_TIMEOUT` after it started.
    #[tokio::test(start_paused = true)]
    async fn unread_answer_closes_after_connection_timeout() {
        let (server, mut client) = tokio::io::duplex(64);
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answering = Arc::new(AtomicBool::new(false));
        let start = tokio::time::Instant::now();
        serve_connection(server, Metrics::new(), Arc::clone(&answering)).await;
        let took = start.elapsed();
        assert!(
            took >= CONNECTION_TIMEOUT && took < CONNECTION_TIMEOUT + Duration::from_millis(10),
            "{took:?}"
        );
        assert!(answering.load(Ordering::Relaxed));
    }

    /// Ended connections free their slots; a full set closes the oldest waiting one for a new
    /// one and never holds more than `MAX_CONNECTIONS`.
    #[tokio::test(start_paused = true)]
    async fn slots_are_freed_and_bounded() {
        let mut slots = Slots::default();
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        for _ in 0..MAX_CONNECTIONS {
            let mut done = done_rx.clone();
            slots.admit(|_| async move {
                let _ = done.wait_for(|d| *d).await;
            });
        }
        // Mark the oldest as answering: the new one takes the second oldest's slot.
        slots.held[0].answering.store(true, Ordering::Relaxed);
        let second = slots.held[1].task.id();
        slots.admit(|_| std::future::pending());
        assert_eq!(slots.held.len(), MAX_CONNECTIONS);
        assert!(slots.held.iter().all(|s| s.task.id() != second));
        let closed = slots.tasks.join_next_with_id().await.unwrap().unwrap_err();
        assert!(closed.is_cancelled() && closed.id() == second);
        slots.release(closed.id());
        assert_eq!(slots.held.len(), MAX_CONNECTIONS);

        done_tx.send(true).unwrap();
        for _ in 0..MAX_CONNECTIONS - 1 {
            let (id, ()) = slots.tasks.join_next_with_id().await.unwrap().unwrap();
            slots.release(id);
        }
        assert_eq!(slots.held.len(), 1, "only the pending one is left");
    }
}
