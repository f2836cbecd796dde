//! The hostile and the legitimate clients of `hostile.rs` (raw exchanges come from the
//! harness's `http` module).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use ecs_credential_agent_e2e::http::{
    exchange, get_request, parse_response, read_until_closed, responses, EXCHANGE_DEADLINE,
};

use super::{FLOOD_ATTEMPTS, FLOOD_IN_FLIGHT, HEADER_TIMEOUT, IDLE_TIMEOUT};

// ---- the legitimate client ----

/// What the legitimate client saw.
#[derive(Debug, Default)]
pub(crate) struct Legit {
    /// Set while the test deliberately holds every connection slot.
    pub(crate) over_limit: AtomicBool,
    pub(crate) ok: AtomicU64,
    /// Failed requests while under `max_connections` (must stay empty).
    pub(crate) failures: Mutex<Vec<String>>,
    /// Failed requests while every slot was taken (expected: 503 or a refused connect).
    pub(crate) failures_over_limit: AtomicU64,
    pub(crate) latencies: Mutex<Vec<Duration>>,
}

impl Legit {
    pub(crate) async fn run(
        self: Arc<Self>,
        socket: PathBuf,
        key_id: String,
        stop: Arc<AtomicBool>,
    ) {
        while !stop.load(Ordering::SeqCst) {
            let over_limit = self.over_limit.load(Ordering::SeqCst);
            let started = Instant::now();
            match self.one(&socket, &key_id).await {
                Ok(()) => {
                    self.ok.fetch_add(1, Ordering::SeqCst);
                    self.latencies.lock().unwrap().push(started.elapsed());
                }
                Err(_) if over_limit || self.over_limit.load(Ordering::SeqCst) => {
                    self.failures_over_limit.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => self.failures.lock().unwrap().push(e),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn one(&self, socket: &Path, key_id: &str) -> Result<(), String> {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(get_request("/v1/credentials", true).as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        // Generous for a loaded machine; a starved client waits for good.
        let raw = read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .ok_or("no answer within 10 s")?;
        if raw.is_empty() {
            return Err("closed without an answer".into());
        }
        let r = parse_response(&raw);
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.body));
        }
        match r.json()["AccessKeyId"].as_str() {
            Some(k) if k == key_id => Ok(()),
            other => Err(format!("unexpected AccessKeyId {other:?}")),
        }
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.lock().unwrap().clone();
        l.sort_unstable();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() - 1) as f64 * p).round() as usize]
    }
}

// ---- hostile clients ----

/// Malformed or refused request heads and the status the agent answers each with (then it
/// closes the connection).
pub(crate) fn malformed() -> Vec<(&'static str, Vec<u8>, u16)> {
    let big_header = format!(
        "GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let many_headers = format!(
        "GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_path = format!(
        "GET /v1/{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "c".repeat(10 * 1024)
    );
    vec![
        ("garbage line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("method only", b"GET\r\n\r\n".to_vec(), 400),
        (
            "extra token",
            b"GET /v1/credentials HTTP/1.1 x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "binary",
            b"\x00\x01\x02\xff\xfe GET\r\n\r\n".to_vec(),
            400,
        ),
        (
            "header without colon",
            b"GET /v1/credentials HTTP/1.1\r\nHost localhost\r\n\r\n".to_vec(),
            400,
        ),
        (
            "NUL in header value",
            b"GET /v1/credentials HTTP/1.1\r\nHost: a\x00b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "invalid UTF-8 in the path",
            b"GET /v1/cred\xff\xfeentials HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            400,
        ),
        (
            "overlong UTF-8 in the path",
            b"GET /v1/\xc0\xafcredentials HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            400,
        ),
        (
            "negative content-length",
            b"GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "conflicting content-length",
            b"GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
        ),
        (
            "chunked body",
            b"GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        ("16 KiB header", big_header.into_bytes(), 431),
        ("150 headers", many_headers.into_bytes(), 431),
        ("10 KiB path", long_path.into_bytes(), 431),
    ]
}

/// Every malformed head gets its status (never credentials) and a closed connection.
pub(crate) async fn malformed_requests(socket: PathBuf) {
    for (name, bytes, want) in malformed() {
        let raw = exchange(&socket, &bytes, false).await;
        let got = responses(&raw);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].status, want, "{name}: {got:?}");
        assert!(!got[0].body.contains("AccessKeySecret"), "{name}");
    }
}

/// Percent-encoded junk in the path is a plain 404 with the connection kept usable.
pub(crate) async fn encoded_junk_paths(socket: PathBuf) {
    for path in [
        "/v1/%ff%fe",
        "/v1/credentials%00",
        "/v1/credentials/../health",
    ] {
        let raw = exchange(&socket, get_request(path, true).as_bytes(), false).await;
        let got = responses(&raw);
        assert_eq!(got.len(), 1, "{path}: {got:?}");
        assert_eq!(got[0].status, 404, "{path}: {got:?}");
    }
}

/// An HTTP/2 client's preface (and SETTINGS frame): the connection is closed at once, unanswered
/// (hyper's HTTP/1-only server), so the client fails fast.
pub(crate) async fn http2_preface(socket: PathBuf) {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    for _ in 0..5 {
        let raw = exchange(&socket, &bytes, false).await;
        assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));
    }
}

/// Twenty requests in one write, answered in order on the one connection.
pub(crate) async fn pipelined(socket: PathBuf, key_id: String) {
    let mut bytes = String::new();
    for i in 0..20 {
        let path = if i % 2 == 0 {
            "/v1/credentials"
        } else {
            "/v1/health"
        };
        bytes.push_str(&get_request(path, i == 19));
    }
    for _ in 0..5 {
        let got = responses(&exchange(&socket, bytes.as_bytes(), false).await);
        assert_eq!(got.len(), 20, "{got:?}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.status, 200, "response {i}: {r:?}");
            if i % 2 == 0 {
                assert_eq!(r.json()["AccessKeyId"], key_id.as_str(), "response {i}");
            } else {
                assert!(r.json().get("AccessKeyId").is_none(), "response {i}: {r:?}");
            }
        }
    }
}

/// A client that sends its request and then shuts down its writing side still gets the answer.
pub(crate) async fn half_closed(socket: PathBuf, key_id: String) {
    for _ in 0..10 {
        let raw = exchange(
            &socket,
            get_request("/v1/credentials", false).as_bytes(),
            true,
        )
        .await;
        let got = responses(&raw);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].json()["AccessKeyId"], key_id.as_str());
    }
    // Half-closed before the head is complete: closed without an answer, promptly.
    for _ in 0..10 {
        let raw = exchange(&socket, b"GET /v1/credentials HTTP/1.1\r\nHo", true).await;
        assert!(!String::from_utf8_lossy(&raw).contains("AccessKeyId"));
    }
}

/// Clients that write many pipelined requests and never read: the agent's writes back up, and
/// it must drop them (idle timeout) rather than keep them forever.
pub(crate) async fn never_reading(socket: PathBuf, clients: usize) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = UnixStream::connect(&socket).await.unwrap();
            let request = get_request("/v1/credentials", false);
            let start = Instant::now();
            // Write until the socket stops taking requests (both buffers full) or 300 ms pass.
            let mut sent = 0usize;
            while start.elapsed() < Duration::from_millis(300) {
                let w = tokio::time::timeout(
                    Duration::from_millis(100),
                    stream.write_all(request.as_bytes()),
                );
                match w.await {
                    Ok(Ok(())) => sent += 1,
                    _ => break,
                }
            }
            assert!(sent > 0);
            // Never read. Within the idle (or head) timeout plus slack the agent has closed:
            // a write then fails with EPIPE/ECONNRESET instead of blocking or succeeding.
            let within = IDLE_TIMEOUT + HEADER_TIMEOUT + Duration::from_secs(10);
            let deadline = Instant::now() + within;
            let mut closed = false;
            while !closed && Instant::now() < deadline {
                let w = tokio::time::timeout(
                    Duration::from_millis(50),
                    stream.write(request.as_bytes()),
                );
                closed = matches!(w.await, Ok(Err(_)));
                if !closed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            assert!(closed, "a never-reading client was kept open");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Slowloris: a head dribbled one byte every 100 ms is cut off at the head timeout, unanswered.
pub(crate) async fn slowloris(socket: PathBuf, clients: usize) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = UnixStream::connect(&socket).await.unwrap();
            let start = Instant::now();
            let head = b"GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
            let dribble = std::iter::repeat_n(b'a', 1000);
            for byte in head.iter().copied().chain(dribble) {
                if stream.write_all(&[byte]).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
                {
                    Err(_) => continue, // still open, nothing said
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => panic!(
                        "slowloris client answered: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                }
            }
            let lasted = start.elapsed();
            // Slack for a loaded machine; a head kept open would last the whole dribble (100 s).
            assert!(
                lasted < HEADER_TIMEOUT + Duration::from_secs(10),
                "a slowloris head was kept for {lasted:?}"
            );
            assert!(
                lasted >= HEADER_TIMEOUT - Duration::from_millis(50),
                "{lasted:?}"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

// ---- holding every slot, and the flood ----

/// Keeps one connection slot busy with a keep-alive `GET /v1/health` every 200 ms until
/// `stop`; reconnects when refused (another client held the slot at that moment).
pub(crate) async fn hold_slot(socket: PathBuf, stop: Arc<AtomicBool>) {
    let request = get_request("/v1/health", false);
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut stream) = UnixStream::connect(&socket).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut buf = vec![0u8; 8192];
        while !stop.load(Ordering::SeqCst) {
            if stream.write_all(request.as_bytes()).await.is_err() {
                break;
            }
            let n = match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            if !buf[..n].starts_with(b"HTTP/1.1 200") {
                break; // 503 TooManyConnections: the agent closes; try again
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the flood's connection attempts ended.
#[derive(Debug, Default)]
pub(crate) struct Flood {
    pub(crate) too_many: AtomicU64,
    /// Closed without an answer at once: a rejection that lost its answer (must not happen).
    pub(crate) closed_unanswered: AtomicU64,
    /// Closed without an answer after the head timeout: a slot came free (a holder
    /// reconnecting) and this silent connection was served, then timed out. Rare, allowed.
    pub(crate) served_silent: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) other: Mutex<Vec<String>>,
}

pub(crate) async fn flood(socket: PathBuf) -> Arc<Flood> {
    let outcome = Arc::new(Flood::default());
    let permits = Arc::new(tokio::sync::Semaphore::new(FLOOD_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..FLOOD_ATTEMPTS {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let (socket, outcome) = (socket.clone(), Arc::clone(&outcome));
        tasks.spawn(async move {
            let _permit = permit;
            let mut stream = match UnixStream::connect(&socket).await {
                Ok(s) => s,
                Err(_) => {
                    // A full accept backlog refuses at once (EAGAIN): bounded, not a hang.
                    outcome.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let connected = Instant::now();
            let raw = read_until_closed(&mut stream, EXCHANGE_DEADLINE).await;
            match raw.as_deref() {
                None => outcome.other.lock().unwrap().push("hung".into()),
                Some([]) if connected.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(50) => {
                    outcome.served_silent.fetch_add(1, Ordering::Relaxed);
                }
                Some([]) => {
                    outcome.closed_unanswered.fetch_add(1, Ordering::Relaxed);
                }
                Some(raw) => {
                    let r = parse_response(raw);
                    if r.status == 503 && r.code() == "TooManyConnections" {
                        outcome.too_many.fetch_add(1, Ordering::Relaxed);
                    } else {
                        outcome.other.lock().unwrap().push(format!("{r:?}"));
                    }
                }
            }
        });
        while let Some(joined) = tasks.try_join_next() {
            joined.unwrap();
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    outcome
}

/// Whether a new connection is turned away with `503 TooManyConnections`.
pub(crate) async fn refused_as_full(socket: &Path) -> bool {
    let raw = exchange(socket, get_request("/v1/health", true).as_bytes(), false).await;
    !raw.is_empty() && {
        let r = parse_response(&raw);
        r.status == 503 && r.code() == "TooManyConnections"
    }
}
