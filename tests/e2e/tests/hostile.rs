//! End-to-end: hostile or broken local clients against the agent binary under test (the release
//! build in CI, through `ECS_AGENT_BIN`; see [`agent_bin_under_test`]).
//!
//! The main test keeps one legitimate client asking for credentials on fresh connections the
//! whole time while the socket gets malformed request lines, invalid UTF-8, oversized heads,
//! pipelining, an HTTP/2 preface, half-closed connections, clients that never read, slowloris
//! heads, and then 10,000 connection attempts beyond `max_connections`. It asserts that the
//! legitimate client never fails while the agent is under `max_connections`, that the agent's
//! peak memory stays under [`RSS_CEILING_KIB`] and that its descriptor count returns to where
//! it was, and prints the legitimate client's latency percentiles.
//!
//! Load is bounded: at most [`FLOOD_IN_FLIGHT`] flood connections at once, every connection
//! with a deadline, the whole file in well under a minute.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ecs_metadata_emulator::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// `[server] max_connections` of the test agent.
const MAX_CONNECTIONS: usize = 128;
/// `[server] header_timeout_ms` of the test agent.
const HEADER_TIMEOUT: Duration = Duration::from_millis(500);
/// `[server] idle_timeout_ms` of the test agent.
const IDLE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Peak resident memory (`VmHWM`) the agent must stay under: generous (it idles at a few MiB).
const RSS_CEILING_KIB: u64 = 64 * 1024;
/// Connection attempts made while every connection slot is taken.
const FLOOD_ATTEMPTS: usize = 10_000;
/// Flood connections open at once.
const FLOOD_IN_FLIGHT: usize = 200;
/// How long any single hostile exchange may take before the agent is deemed to hang on it.
const EXCHANGE_DEADLINE: Duration = Duration::from_secs(5);

fn hostile_config(endpoint: &str) -> AgentConfig {
    let mut config = AgentConfig::new(endpoint);
    config.set("server", "max_connections", &MAX_CONNECTIONS.to_string());
    let ms = |d: Duration| d.as_millis().to_string();
    config.set("server", "header_timeout_ms", &ms(HEADER_TIMEOUT));
    config.set("server", "idle_timeout_ms", &ms(IDLE_TIMEOUT));
    config.set("log", "format", "\"json\"");
    config
}

async fn start(config: &AgentConfig) -> TestAgent {
    let bin = agent_bin_under_test();
    eprintln!("agent under test: {}", bin.display());
    TestAgent::start_bin(&bin, config).await
}

// ---- the agent process seen from /proc ----

/// The agent's descriptor count once it has stopped changing (the last connection the test
/// closed may take the agent a moment to notice). The agent is not dumpable, so its
/// `/proc/<pid>/fd` is root's: callers skip descriptor checks (visibly) unless root.
async fn settled_fd_count(pid: u32) -> usize {
    let mut last = fd_count(pid);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fd_count(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the agent's descriptor count never settled")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the agent's /proc/<pid>/fd (needs root or the same uid)")
        .count()
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

// ---- raw exchanges ----

/// Sends `bytes` on a new connection (then half-closes if `half_close`) and reads until the
/// agent closes. Panics if the agent neither answers nor closes within [`EXCHANGE_DEADLINE`].
async fn exchange(socket: &Path, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    // The agent may close before reading everything (e.g. a too-large head): not an error.
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    read_until_closed(&mut stream, EXCHANGE_DEADLINE)
        .await
        .unwrap_or_else(|| {
            panic!(
                "agent neither answered nor closed within {EXCHANGE_DEADLINE:?} after {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            )
        })
}

/// Reads until EOF (a reset counts as EOF); `None` if still open after `within`.
async fn read_until_closed(stream: &mut UnixStream, within: Duration) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.is_ok().then_some(raw)
}

/// Splits consecutive HTTP/1.1 responses (each with `Content-Length`).
fn responses(mut raw: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
        let head = parse_response(&raw[..end + 4]);
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no content-length: {head:?}"));
        let body = &raw[end + 4..end + 4 + len];
        out.push(Response {
            body: String::from_utf8_lossy(body).into_owned(),
            ..head
        });
        raw = &raw[end + 4 + len..];
    }
    out
}

fn get(path: &str, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n")
}

// ---- the legitimate client ----

/// What the legitimate client saw.
#[derive(Debug, Default)]
struct Legit {
    /// Set while the test deliberately holds every connection slot.
    over_limit: AtomicBool,
    ok: AtomicU64,
    /// Failed requests while under `max_connections` (must stay empty).
    failures: Mutex<Vec<String>>,
    /// Failed requests while every slot was taken (expected: 503 or a refused connect).
    failures_over_limit: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

impl Legit {
    async fn run(self: Arc<Self>, socket: PathBuf, key_id: String, stop: Arc<AtomicBool>) {
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
            .write_all(get("/v1/credentials", true).as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let raw = read_until_closed(&mut stream, Duration::from_secs(5))
            .await
            .ok_or("no answer within 5 s")?;
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

    fn percentile(&self, p: f64) -> Duration {
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
fn malformed() -> Vec<(&'static str, Vec<u8>, u16)> {
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
async fn malformed_requests(socket: PathBuf) {
    for (name, bytes, want) in malformed() {
        let raw = exchange(&socket, &bytes, false).await;
        let got = responses(&raw);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].status, want, "{name}: {got:?}");
        assert!(!got[0].body.contains("AccessKeySecret"), "{name}");
    }
}

/// Percent-encoded junk in the path is a plain 404 with the connection kept usable.
async fn encoded_junk_paths(socket: PathBuf) {
    for path in [
        "/v1/%ff%fe",
        "/v1/credentials%00",
        "/v1/credentials/../health",
    ] {
        let raw = exchange(&socket, get(path, true).as_bytes(), false).await;
        let got = responses(&raw);
        assert_eq!(got.len(), 1, "{path}: {got:?}");
        assert_eq!(got[0].status, 404, "{path}: {got:?}");
    }
}

/// An HTTP/2 client's preface (and SETTINGS frame): the connection is closed at once, unanswered
/// (hyper's HTTP/1-only server), so the client fails fast.
async fn http2_preface(socket: PathBuf) {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    for _ in 0..5 {
        let raw = exchange(&socket, &bytes, false).await;
        assert!(raw.is_empty(), "{:?}", String::from_utf8_lossy(&raw));
    }
}

/// Twenty requests in one write, answered in order on the one connection.
async fn pipelined(socket: PathBuf, key_id: String) {
    let mut bytes = String::new();
    for i in 0..20 {
        let path = if i % 2 == 0 {
            "/v1/credentials"
        } else {
            "/v1/health"
        };
        bytes.push_str(&get(path, i == 19));
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
async fn half_closed(socket: PathBuf, key_id: String) {
    for _ in 0..10 {
        let raw = exchange(&socket, get("/v1/credentials", false).as_bytes(), true).await;
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
async fn never_reading(socket: PathBuf, clients: usize) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = UnixStream::connect(&socket).await.unwrap();
            let request = get("/v1/credentials", false);
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
            let within = IDLE_TIMEOUT + HEADER_TIMEOUT + Duration::from_secs(2);
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
async fn slowloris(socket: PathBuf, clients: usize) {
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
            assert!(
                lasted < HEADER_TIMEOUT + Duration::from_secs(1),
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
async fn hold_slot(socket: PathBuf, stop: Arc<AtomicBool>) {
    let request = get("/v1/health", false);
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
struct Flood {
    too_many: AtomicU64,
    /// Closed without an answer at once: a rejection that lost its answer (must not happen).
    closed_unanswered: AtomicU64,
    /// Closed without an answer after the head timeout: a slot came free (a holder
    /// reconnecting) and this silent connection was served, then timed out. Rare, allowed.
    served_silent: AtomicU64,
    refused: AtomicU64,
    other: Mutex<Vec<String>>,
}

async fn flood(socket: PathBuf) -> Arc<Flood> {
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
async fn refused_as_full(socket: &Path) -> bool {
    let raw = exchange(socket, get("/v1/health", true).as_bytes(), false).await;
    !raw.is_empty() && {
        let r = parse_response(&raw);
        r.status == 503 && r.code() == "TooManyConnections"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_neither_starve_a_legitimate_one_nor_leak() {
    raise_open_files_limit();
    let emu = emulator(Default::default()).await;
    let agent = start(&hostile_config(&emu.endpoint())).await;
    let pid = agent.child.id();
    let key_id = agent.credentials().await["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let socket = agent.socket.clone();
    let fd_checks = is_root();
    if !fd_checks {
        eprintln!("SKIPPED: descriptor checks need root (the agent's /proc/<pid>/fd is root's)");
    }
    let fds_before = if fd_checks {
        settled_fd_count(pid).await
    } else {
        0
    };
    let rss_before = status_kib(pid, "VmRSS:");
    let log_lines_before = agent.logs().lines().count();
    let started = Instant::now();

    let legit = Arc::new(Legit::default());
    let stop_legit = Arc::new(AtomicBool::new(false));
    let legit_task = tokio::spawn(Arc::clone(&legit).run(
        socket.clone(),
        key_id.clone(),
        Arc::clone(&stop_legit),
    ));

    // Phase 1: every kind of broken client at once, well under max_connections in total.
    let s = || socket.clone();
    let (a, b, c, d, e, f, g) = tokio::join!(
        tokio::spawn(malformed_requests(s())),
        tokio::spawn(encoded_junk_paths(s())),
        tokio::spawn(http2_preface(s())),
        tokio::spawn(pipelined(s(), key_id.clone())),
        tokio::spawn(half_closed(s(), key_id.clone())),
        tokio::spawn(never_reading(s(), 30)),
        tokio::spawn(slowloris(s(), 30)),
    );
    for (name, r) in [
        ("malformed", a),
        ("encoded junk", b),
        ("http2", c),
        ("pipelined", d),
        ("half-closed", e),
        ("never reading", f),
        ("slowloris", g),
    ] {
        if let Err(e) = r {
            panic!("{name} clients: {e}\nagent logs:\n{}", agent.logs());
        }
    }
    let phase1 = started.elapsed();

    // Phase 2: hold every slot, then 10,000 connection attempts beyond max_connections.
    legit.over_limit.store(true, Ordering::SeqCst);
    let stop_holders = Arc::new(AtomicBool::new(false));
    let holders: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|_| tokio::spawn(hold_slot(socket.clone(), Arc::clone(&stop_holders))))
        .collect();
    let full = eventually(Duration::from_secs(5), || async {
        refused_as_full(&socket).await.then_some(())
    })
    .await;
    assert!(full.is_some(), "the holders never filled max_connections");
    let flood_started = Instant::now();
    let flooded = flood(socket.clone()).await;
    let flood_took = flood_started.elapsed();
    stop_holders.store(true, Ordering::SeqCst);
    for h in holders {
        h.await.unwrap();
    }
    // Recovery: the legitimate client is served again at once.
    let ok_before = legit.ok.load(Ordering::SeqCst);
    let recovered = eventually(Duration::from_secs(3), || async {
        (legit.ok.load(Ordering::SeqCst) > ok_before + 5).then_some(())
    })
    .await;
    assert!(recovered.is_some(), "no recovery after the flood");
    legit.over_limit.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_legit.store(true, Ordering::SeqCst);
    legit_task.await.unwrap();

    // The agent is alive, every hostile connection is gone, memory stayed bounded.
    assert!(agent_alive(&agent), "agent died; logs:\n{}", agent.logs());
    let fds_after = if fd_checks {
        eventually(Duration::from_secs(5), || async {
            let n = fd_count(pid);
            (n == fds_before).then_some(n)
        })
        .await
        .unwrap_or_else(|| fd_count(pid))
    } else {
        0
    };
    let rss_after = status_kib(pid, "VmRSS:");
    let peak = status_kib(pid, "VmHWM:");
    let rejected = metric(&agent, "connections_rejected_total").await;
    let log_lines = agent.logs().lines().count() - log_lines_before;

    let failures = legit.failures.lock().unwrap().clone();
    let other = flooded.other.lock().unwrap().clone();
    let (too_many, unanswered, served_silent, refused) = (
        flooded.too_many.load(Ordering::SeqCst),
        flooded.closed_unanswered.load(Ordering::SeqCst),
        flooded.served_silent.load(Ordering::SeqCst),
        flooded.refused.load(Ordering::SeqCst),
    );
    println!(
        "hostile clients: legitimate client {} ok, {} failed under max_connections, {} refused \
         while all {MAX_CONNECTIONS} slots were held; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        legit.ok.load(Ordering::SeqCst),
        failures.len(),
        legit.failures_over_limit.load(Ordering::SeqCst),
        ms(legit.percentile(0.5)),
        ms(legit.percentile(0.99)),
        ms(legit.percentile(1.0)),
    );
    println!(
        "hostile clients: flood of {FLOOD_ATTEMPTS} beyond max_connections in {flood_took:.1?}: \
         {too_many} answered 503 TooManyConnections, {unanswered} closed unanswered, \
         {served_silent} served (a slot came free), {refused} refused at connect, {} other; \
         broken-client phase {phase1:.1?}",
        other.len()
    );
    println!(
        "hostile clients: agent fds {fds_before} before, {fds_after} after; VmRSS {rss_before} \
         KiB before, {rss_after} KiB after, peak VmHWM {peak} KiB (ceiling {RSS_CEILING_KIB} KiB)"
    );
    println!(
        "hostile clients: {rejected} connections_rejected_total, {log_lines} log lines during \
         the run"
    );
    assert!(
        failures.is_empty(),
        "legitimate client failed: {failures:#?}"
    );
    // Every turned-away connection is counted (the legitimate client's and the holders' too).
    assert!(rejected >= too_many, "{rejected}");
    // Hostile clients do not flood the log: the 503 warning is rate-limited, parse errors and
    // timeouts are debug-level.
    assert!(log_lines <= 5, "{log_lines} log lines:\n{}", agent.logs());
    assert!(other.is_empty(), "unexpected flood outcomes: {other:#?}");
    assert_eq!(
        too_many + unanswered + served_silent + refused,
        FLOOD_ATTEMPTS as u64,
        "every flood attempt ended"
    );
    // Every turned-away connection reads the reason, however many arrive at once.
    assert_eq!(unanswered, 0, "excess connections closed without the 503");
    assert!(too_many > 0, "no flood connection was answered 503");
    assert_eq!(fds_after, fds_before, "descriptor leak");
    assert!(peak < RSS_CEILING_KIB, "peak VmHWM {peak} KiB");
    assert!(
        flood_took < Duration::from_secs(60),
        "flood took {flood_took:?}"
    );
}

/// The value of the agent's metric whose name ends with `suffix` (`GET /metrics`).
async fn metric(agent: &TestAgent, suffix: &str) -> u64 {
    let r = agent.get("/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.split_once(' ')?;
            name.ends_with(suffix)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no metric *{suffix} in:\n{}", r.body)) as u64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn agent_alive(agent: &TestAgent) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.child.id() as i32), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{}/stat", agent.child.id()))
            .unwrap_or_default()
            .contains(") Z ")
}

/// A half-closed client whose request waits for the first credentials (the metadata service
/// is slow) still gets them once they arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_waiting_for_the_first_credentials_gets_them() {
    let emu = emulator(Default::default()).await;
    let gate = emu.gate(Endpoint::Credentials);
    let agent = start(&hostile_config(&emu.endpoint())).await;
    let socket = agent.socket.clone();
    let client = tokio::spawn(async move {
        exchange(&socket, get("/v1/credentials", false).as_bytes(), true).await
    });
    let held = eventually(Duration::from_secs(5), || async {
        (gate.waiting() == 1).then_some(())
    })
    .await;
    assert!(held.is_some(), "the agent never asked for credentials");
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.release();
    let got = responses(&client.await.unwrap());
    assert_eq!(got.len(), 1, "{got:?}\nlogs:\n{}", agent.logs());
    assert_eq!(got[0].status, 200, "{got:?}");
    let cur = emu.current_credentials().unwrap();
    assert_eq!(got[0].json()["AccessKeyId"], cur.access_key_id.as_str());
}

// ---- denied callers flooding the socket ----

/// Callers run as this uid (`nobody`), which the agent does not allow.
const NOBODY: u32 = 65534;

/// Forks a child that drops to uid/gid [`NOBODY`] and makes `requests` credential requests, each
/// on a new connection; returns how many were answered `403`.
///
/// The test process is multi-threaded, so the child does only what is safe after `fork(2)`:
/// raw system calls on memory prepared before the fork (as `std::process::Command` does between
/// fork and exec), then `_exit(2)`.
fn requests_as_nobody(socket: &Path, requests: u64) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: `sockaddr_un` is plain old data; all-zero is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_bytes();
    assert!(path.len() < addr.sun_path.len(), "socket path too long");
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    let addr_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let request = get("/v1/credentials", true);
    let (read_end, write_end) = nix::unistd::pipe()?;
    // SAFETY: between fork and `_exit` the child calls only async-signal-safe functions
    // (setgroups, setgid, setuid, socket, connect, write, read, close, _exit) on `addr`,
    // `request` and the pipe, all created before the fork; it allocates nothing.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => unsafe {
            use std::os::fd::AsRawFd;
            let out = write_end.as_raw_fd();
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                libc::_exit(2);
            }
            let mut forbidden: u64 = 0;
            for _ in 0..requests {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    libc::_exit(3);
                }
                let sa = (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>();
                if libc::connect(fd, sa, addr_len) == 0 {
                    let mut sent = 0;
                    while sent < request.len() {
                        let rest = &request.as_bytes()[sent..];
                        let n = libc::write(fd, rest.as_ptr().cast(), rest.len());
                        if n <= 0 {
                            break;
                        }
                        sent += n as usize;
                    }
                    let mut head = [0u8; 12];
                    let mut got = 0;
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                        if n <= 0 {
                            break;
                        }
                        let n = n as usize;
                        let take = (head.len() - got).min(n);
                        head[got..got + take].copy_from_slice(&buf[..take]);
                        got += take;
                    }
                    if &head == b"HTTP/1.1 403" {
                        forbidden += 1;
                    }
                }
                libc::close(fd);
            }
            let bytes = forbidden.to_ne_bytes();
            libc::write(out, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let mut answer = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(read_end), &mut answer)?;
            let status = nix::sys::wait::waitpid(child, None)?;
            let exited_ok = matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0));
            match <[u8; 8]>::try_from(answer.as_slice()) {
                Ok(bytes) if exited_ok => Ok(u64::from_ne_bytes(bytes)),
                _ => Err(io::Error::other(format!("flood child ended {status:?}"))),
            }
        }
    }
}

/// The agent's JSON log lines whose `event` field is `event` and `uid` is `uid`.
fn audit_lines(agent: &TestAgent, event: &str, uid: u32) -> Vec<serde_json::Value> {
    agent
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event && v["uid"] == uid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_uid_flooding_the_socket_gets_one_log_line_and_a_suppressed_count() {
    require_root!();
    const CHILDREN: u64 = 4;
    const REQUESTS: u64 = 500;
    let emu = emulator(Default::default()).await;
    let mut config = hostile_config(&emu.endpoint());
    // Open the file mode so the peer check is what refuses uid 65534.
    config.set("server", "socket_mode", "\"0666\"");
    let mut agent = start(&config).await;
    agent.open_dir();
    agent.credentials().await;
    let pid = agent.child.id();
    let fds_before = settled_fd_count(pid).await;
    let lines_before = agent.logs().lines().count();

    let started = Instant::now();
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            let socket = agent.socket.clone();
            tokio::task::spawn_blocking(move || requests_as_nobody(&socket, REQUESTS))
        })
        .collect();
    for c in children {
        let forbidden = c.await.unwrap().expect("flood child");
        assert_eq!(forbidden, REQUESTS, "every request answered 403");
    }
    let took = started.elapsed();
    let total = CHILDREN * REQUESTS;
    assert_eq!(metric(&agent, "callers_denied_total").await, total);
    let denied = audit_lines(&agent, "denied", NOBODY);
    assert_eq!(
        denied.len(),
        1,
        "one denial line per uid:\n{}",
        agent.logs()
    );
    let fds_after = eventually(Duration::from_secs(5), || async {
        let n = fd_count(pid);
        (n == fds_before).then_some(n)
    })
    .await;
    assert_eq!(fds_after, Some(fds_before), "descriptor leak");
    let lines_during = agent.logs().lines().count() - lines_before;

    // At shutdown the suppressed denials are summarised in one line with their count.
    let status = agent.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status:?}");
    let suppressed = audit_lines(&agent, "denials_suppressed", NOBODY);
    assert_eq!(suppressed.len(), 1, "{}", agent.logs());
    assert_eq!(suppressed[0]["count"], total - 1, "{}", suppressed[0]);
    let about_nobody = agent
        .logs()
        .lines()
        .filter(|l| l.contains(&format!("\"uid\":{NOBODY}")))
        .count();
    println!(
        "denial flood: {total} requests as uid {NOBODY} from {CHILDREN} processes in \
         {took:.1?}, all 403; {lines_during} log lines during the flood, {about_nobody} about the \
         uid in all (1 denied, 1 denials_suppressed count {})",
        suppressed[0]["count"]
    );
    assert_eq!(about_nobody, 2, "{}", agent.logs());
    assert!(lines_during <= 2, "{}", agent.logs());
}
