//! A raw HTTP/1.1 client over the agent's Unix socket: whole requests written as bytes, answers
//! read to the end (or to `Content-Length`) and parsed into [`Response`]s. Raw on purpose: the
//! suites send what no well-behaved client library would (malformed heads, pipelining,
//! half-closes) and check every byte of what comes back.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long one exchange ([`exchange`]) may take before the agent is deemed to hang on it.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(30);

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `Code` of an error body (empty when absent).
    pub fn code(&self) -> String {
        self.json()["Code"].as_str().unwrap_or_default().to_owned()
    }

    /// The `Message` of an error body (empty when absent).
    pub fn message(&self) -> String {
        self.json()["Message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The bytes of `GET path` with `Connection: close` (`close`) or `keep-alive`.
pub fn get_request(path: &str, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n")
}

/// One HTTP/1.1 request with `Connection: close` and `headers` on a new connection to
/// `socket`, read to the end.
///
/// # Panics
/// When the connection fails or no whole answer arrives within 30 s.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut stream = UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .unwrap();
    parse_response(&raw)
}

/// Parses one complete HTTP/1.1 response; the body is everything after the head.
///
/// # Panics
/// When there is no head end or no valid status line.
pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Splits consecutive HTTP/1.1 responses (each with `Content-Length`), as pipelined answers
/// arrive.
///
/// # Panics
/// When a head has no end or no `Content-Length`.
pub fn responses(mut raw: &[u8]) -> Vec<Response> {
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

/// Sends `bytes` on a new connection (then half-closes if `half_close`) and reads until the
/// agent closes.
///
/// # Panics
/// When the connection fails, or the agent neither answers nor closes within
/// [`EXCHANGE_DEADLINE`].
pub async fn exchange(socket: &Path, bytes: &[u8], half_close: bool) -> Vec<u8> {
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
pub async fn read_until_closed(stream: &mut UnixStream, within: Duration) -> Option<Vec<u8>> {
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

/// One `GET /v1/credentials` on a kept-alive connection (to the Unix socket or the loopback
/// listener: `Host: localhost` suits both), read to `Content-Length` (up to 20 s).
///
/// # Errors
/// A description when writing fails, no answer comes in time, or the agent closes the
/// connection before the whole answer.
pub async fn keep_alive_get<S>(s: &mut S) -> Result<Response, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .map_err(|_| "no answer within 20 s".to_owned())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes", raw.len()));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = parse_response(&raw[..head_end]);
    let len: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or("no Content-Length")?;
    while raw.len() < head_end + len {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("read body: {e}"))?;
        if n == 0 {
            return Err("closed in the body".into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    Ok(parse_response(&raw[..head_end + len]))
}

/// [`keep_alive_get`] on a new connection, never panicking.
///
/// # Errors
/// As [`keep_alive_get`], and when the connection fails.
pub async fn fresh_get(socket: &Path) -> Result<Response, String> {
    let mut s = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    keep_alive_get(&mut s).await
}

/// A free loopback TCP port for the agent to bind right after (bound here, then released).
///
/// Chosen below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), where the
/// kernel never hands out ports to outgoing connections or to `bind(port 0)`: between the
/// release here and the agent's bind, only another test choosing the same port by chance (1 in
/// several thousand) could take it, not the many client sockets of a loaded run. Falls back to
/// a port the kernel picks when none below the range is free. Where a test can keep the
/// socket, prefer passing it (as [`AgentBuilder::bridge_activated`](crate::agent::AgentBuilder::bridge_activated)).
pub fn free_loopback_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if low > 12000 {
        // Spread processes (the pid) and calls (a counter) over [10000, low).
        let span = low - 10000;
        let seed = std::process::id().wrapping_mul(2654435761);
        for _ in 0..64 {
            let n = NEXT.fetch_add(7919, Ordering::Relaxed);
            let port = 10000 + seed.wrapping_add(n) % span;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
                return l.local_addr().expect("local address").port();
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// One `GET path` over loopback TCP to `addr` (the agent's `[bridge] listen`), `Host: 127.0.0.1`,
/// on a fresh connection closed after the answer.
pub async fn tcp_get(addr: std::net::SocketAddr, path: &str) -> Response {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(raw.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("an answer over TCP within 30 s")
        .expect("a TCP exchange");
    parse_response(&out)
}
