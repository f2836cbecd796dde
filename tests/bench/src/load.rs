//! The load generators, each run in its own process (`bench load …`, `bench client-lib …`,
//! `bench direct …`, `bench herd …`, `bench hold …`). Each prints one JSON [`LoadResult`] line
//! on stdout.
//!
//! The HTTP client is a few lines over a raw socket (write the request, read the head, then
//! `Content-Length` bytes), so the load generator costs as little CPU as possible and the same
//! for every server measured.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// The request every socket target receives (the same bytes for the floor, hyper and the agent).
pub const REQUEST: &[u8] =
    b"GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ecs-credential-bench\r\nAccept: */*\r\n\r\n";

/// The same request over the loopback TCP listener, whose `Host` rule wants `127.0.0.1` (the
/// same length as [`REQUEST`]).
pub const REQUEST_TCP: &[u8] =
    b"GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ecs-credential-bench\r\nAccept: */*\r\n\r\n";

/// Where a server listens: a Unix socket's path, or a loopback TCP address (written
/// `127.0.0.1:PORT`; anything that does not parse as a socket address is a path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl std::str::FromStr for Addr {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Addr, Self::Err> {
        Ok(match s.parse() {
            Ok(a) => Addr::Tcp(a),
            Err(_) => Addr::Unix(PathBuf::from(s)),
        })
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "{}", p.display()),
            Addr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl Addr {
    /// The request this address gets: [`REQUEST_TCP`] over TCP, else [`REQUEST`].
    pub fn request(&self) -> &'static [u8] {
        match self {
            Addr::Unix(_) => REQUEST,
            Addr::Tcp(_) => REQUEST_TCP,
        }
    }

    /// A blocking connection (`TCP_NODELAY` set over TCP, as the SDKs' HTTP clients do).
    ///
    /// # Errors
    ///
    /// The OS error of `connect(2)`.
    pub fn connect(&self) -> io::Result<Conn> {
        match self {
            Addr::Unix(p) => std::os::unix::net::UnixStream::connect(p).map(Conn::Unix),
            Addr::Tcp(a) => {
                let s = std::net::TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
        }
    }
}

/// A blocking connection to an [`Addr`].
#[derive(Debug)]
pub enum Conn {
    /// Over a Unix socket.
    Unix(std::os::unix::net::UnixStream),
    /// Over TCP.
    Tcp(std::net::TcpStream),
}

impl io::Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl io::Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Keep-alive, or a new connection per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One connection per client, reused.
    KeepAlive,
    /// A new connection for every request (`curl`-style).
    NewConn,
}

/// What a load run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Requests completed (status 200) in the measured window.
    pub requests: u64,
    /// Failed requests (I/O error or a status other than 200), whole run.
    pub errors: u64,
    /// The measured window, seconds.
    pub seconds: f64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The first error seen, if any (never a secret: I/O errors and status codes only).
    pub first_error: Option<String>,
    /// Successful requests including the warm-up.
    #[serde(default)]
    pub all_requests: u64,
    /// CPU time the server used per request (warm-up included), microseconds; filled in by
    /// the orchestrator for servers it started.
    #[serde(default)]
    pub server_cpu_us: Option<f64>,
    /// CPU time the load generator itself used per request (warm-up included), microseconds
    /// (the raw client only): what it took from the cores the server runs on.
    #[serde(default)]
    pub client_cpu_us: Option<f64>,
}

impl LoadResult {
    fn from_samples(
        mut lat_ns: Vec<u64>,
        all: u64,
        errors: u64,
        seconds: f64,
        first: Option<String>,
    ) -> Self {
        lat_ns.sort_unstable();
        let pct = |q: f64| -> f64 {
            if lat_ns.is_empty() {
                return 0.0;
            }
            let i = ((q * lat_ns.len() as f64) as usize).min(lat_ns.len() - 1);
            lat_ns[i] as f64 / 1000.0
        };
        LoadResult {
            requests: lat_ns.len() as u64,
            errors,
            seconds,
            throughput: lat_ns.len() as f64 / seconds,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            first_error: first,
            all_requests: all,
            server_cpu_us: None,
            client_cpu_us: None,
        }
    }
}

/// The status, the head's length and the `Content-Length` of a response whose first bytes are
/// `buf`; `None` while the head is incomplete.
///
/// # Errors
///
/// A head without a status or a `Content-Length`.
pub fn parse_head(buf: &[u8]) -> io::Result<Option<(u16, usize, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(io::Error::other)?;
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("bad status line"))?;
    let len = head
        .split("\r\n")
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| io::Error::other("no content-length"))?;
    Ok(Some((status, end + 4, len)))
}

/// Reads one HTTP/1.1 response with a `Content-Length` body into `buf`; returns the status.
pub async fn read_response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    let (status, head_end, len) = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("response head too large"));
        }
    };
    let want = head_end + len;
    while buf.len() < want {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in the body",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// Connects, retrying briefly while the listen backlog is full (`EAGAIN`).
pub async fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    let mut tries = 0;
    loop {
        match UnixStream::connect(path).await {
            // A full listen backlog (`EAGAIN`), or a socket bound but not yet listening.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                ) && tries < 2000 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

async fn one_request<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> io::Result<u16> {
    s.write_all(req).await?;
    read_response(s, buf).await
}

/// One client's tallies.
#[derive(Default)]
pub struct Tally {
    lat: Vec<u64>,
    all: u64,
    errors: u64,
    first: Option<String>,
}

impl Tally {
    /// Whether a client should give up (the server is failing every request).
    pub fn too_many_errors(&self) -> bool {
        self.errors > 1000
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first.get_or_insert(e);
    }

    /// Records one outcome that finished at `done`, `took` after it started; its latency
    /// counts when it finished after `from` (the end of the warm-up).
    pub fn record(
        &mut self,
        outcome: io::Result<u16>,
        took: Duration,
        done: Instant,
        from: Instant,
    ) {
        match outcome {
            Ok(200) => {
                self.all += 1;
                if done >= from {
                    self.lat.push(took.as_nanos() as u64);
                }
            }
            Ok(status) => self.error(format!("status {status}")),
            Err(e) => self.error(e.to_string()),
        }
    }
}

impl Tally {
    /// All the clients' tallies together.
    pub fn merge(tallies: impl IntoIterator<Item = Tally>) -> Tally {
        let mut all = Tally::default();
        for t in tallies {
            all.lat.extend(t.lat);
            all.all += t.all;
            all.errors += t.errors;
            if all.first.is_none() {
                all.first = t.first;
            }
        }
        all
    }

    /// The result over a measured window of `seconds`.
    pub fn result(self, seconds: f64) -> LoadResult {
        LoadResult::from_samples(self.lat, self.all, self.errors, seconds, self.first)
    }
}

async fn merge(tasks: Vec<tokio::task::JoinHandle<Tally>>, seconds: f64) -> LoadResult {
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await.expect("load task"));
    }
    Tally::merge(all).result(seconds)
}

/// Timing of a run: `warmup`, then `duration` measured.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Not measured.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
}

impl Window {
    fn bounds(&self) -> (Instant, Instant) {
        let from = Instant::now() + self.warmup;
        (from, from + self.duration)
    }
}

/// `concurrency` clients sending `GET /v1/credentials` over `socket` for the window.
pub async fn socket_load(socket: PathBuf, mode: Mode, concurrency: usize, w: Window) -> LoadResult {
    let (from, end) = w.bounds();
    let socket = Arc::new(socket);
    let tasks = (0..concurrency)
        .map(|_| {
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut buf = Vec::with_capacity(4096);
                let mut conn: Option<UnixStream> = None;
                while Instant::now() < end {
                    let start = Instant::now();
                    let outcome = async {
                        let s = match conn.as_mut() {
                            Some(s) => s,
                            None => conn.insert(connect_unix(&socket).await?),
                        };
                        one_request(s, REQUEST, &mut buf).await
                    }
                    .await;
                    let done = Instant::now();
                    if outcome.is_err() || mode == Mode::NewConn {
                        conn = None;
                    }
                    t.record(outcome, done - start, done, from);
                    if t.too_many_errors() {
                        break;
                    }
                }
                t
            })
        })
        .collect();
    merge(tasks, w.duration.as_secs_f64()).await
}

/// `credentials()` through `ecs-credential-client`; `cached: false` makes every call fetch.
pub async fn client_lib_load(
    socket: PathBuf,
    cached: bool,
    concurrency: usize,
    w: Window,
) -> LoadResult {
    let mut builder = ecs_credential_client::Client::builder()
        .socket_path(socket)
        .unavailable_retries(0);
    if !cached {
        // Re-fetch whenever less than ten years remain: always.
        builder = builder.refresh_before(Duration::from_secs(10 * 365 * 86_400));
    }
    let client = builder.build();
    let (from, end) = w.bounds();
    let tasks = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < end {
                    let start = Instant::now();
                    let outcome = match client.credentials().await {
                        Ok(c) if c.access_key_id.starts_with("STS.") => Ok(200),
                        Ok(_) => Ok(0),
                        Err(e) => Err(io::Error::other(e.to_string())),
                    };
                    let done = Instant::now();
                    t.record(outcome, done - start, done, from);
                    if t.too_many_errors() {
                        break;
                    }
                }
                t
            })
        })
        .collect();
    merge(tasks, w.duration.as_secs_f64()).await
}

/// What an application does without the agent, as the official SDKs do: a token `PUT` and a
/// credential `GET`, each on a new TCP connection. One sample is the pair.
pub async fn direct_load(addr: String, role: String, concurrency: usize, w: Window) -> LoadResult {
    let (from, end) = w.bounds();
    let put = Arc::new(
        "PUT /latest/api/token HTTP/1.1\r\nHost: 100.100.100.200\r\nUser-Agent: ecs-credential-bench\r\n\
         X-aliyun-ecs-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n"
            .to_owned(),
    );
    let get_path = Arc::new(format!("/latest/meta-data/ram/security-credentials/{role}"));
    let addr = Arc::new(addr);
    let tasks = (0..concurrency)
        .map(|_| {
            let (put, get_path, addr) = (Arc::clone(&put), Arc::clone(&get_path), Arc::clone(&addr));
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut buf = Vec::with_capacity(4096);
                while Instant::now() < end {
                    let start = Instant::now();
                    let outcome = async {
                        let mut s = TcpStream::connect(addr.as_str()).await?;
                        s.set_nodelay(true)?;
                        let status = one_request(&mut s, put.as_bytes(), &mut buf).await?;
                        if status != 200 {
                            return Ok(status);
                        }
                        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                        let token = String::from_utf8_lossy(&buf[head_end..]).into_owned();
                        drop(s);
                        let get = format!(
                            "GET {get_path} HTTP/1.1\r\nHost: 100.100.100.200\r\nUser-Agent: ecs-credential-bench\r\n\
                             X-aliyun-ecs-metadata-token: {token}\r\n\r\n"
                        );
                        let mut s = TcpStream::connect(addr.as_str()).await?;
                        s.set_nodelay(true)?;
                        one_request(&mut s, get.as_bytes(), &mut buf).await
                    }
                    .await;
                    let done = Instant::now();
                    t.record(outcome, done - start, done, from);
                    if t.too_many_errors() {
                        break;
                    }
                }
                t
            })
        })
        .collect();
    merge(tasks, w.duration.as_secs_f64()).await
}

/// The cold-start herd: waits for `socket` to appear, then `n` clients each open a connection
/// and send one request at once. Latencies are from the herd's start.
pub async fn herd(socket: PathBuf, n: usize, timeout: Duration) -> LoadResult {
    let give_up = Instant::now() + timeout;
    while !socket.exists() {
        if Instant::now() > give_up {
            return LoadResult {
                errors: n as u64,
                first_error: Some("socket never appeared".into()),
                ..LoadResult::default()
            };
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let start = Instant::now();
    let socket = Arc::new(socket);
    let tasks = (0..n)
        .map(|_| {
            let socket = Arc::clone(&socket);
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut buf = Vec::with_capacity(4096);
                let outcome = tokio::time::timeout(timeout, async {
                    let mut s = connect_unix(&socket).await?;
                    one_request(&mut s, REQUEST, &mut buf).await
                })
                .await
                .unwrap_or_else(|_| Err(io::Error::other("timed out")));
                let done = Instant::now();
                t.record(outcome, done - start, done, start);
                t
            })
        })
        .collect();
    let mut r = merge(tasks, 1.0).await;
    r.seconds = start.elapsed().as_secs_f64();
    r.throughput = r.requests as f64 / r.seconds;
    r
}

/// Opens `n` connections, sends one request on each and keeps them open, idle; prints `ready`
/// and then the result, and closes them all when stdin closes or gets a line.
pub async fn hold(socket: PathBuf, n: usize) -> LoadResult {
    let mut conns = Vec::with_capacity(n);
    let mut t = Tally::default();
    let mut buf = Vec::with_capacity(4096);
    let from = Instant::now();
    // One after the other, so the listen backlog never overflows.
    for _ in 0..n {
        let start = Instant::now();
        let outcome = async {
            let mut s = connect_unix(&socket).await?;
            let status = one_request(&mut s, REQUEST, &mut buf).await?;
            conns.push(s);
            Ok(status)
        }
        .await;
        let done = Instant::now();
        t.record(outcome, done - start, done, from);
    }
    println!("ready {}", conns.len());
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
    drop(conns);
    LoadResult::from_samples(
        t.lat,
        t.all,
        t.errors,
        from.elapsed().as_secs_f64(),
        t.first,
    )
}
