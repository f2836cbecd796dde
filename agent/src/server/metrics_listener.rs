//! The optional loopback TCP listener of `[metrics] listen` (a second transport beside the
//! Unix socket): `GET /metrics` and nothing else.
//!
//! Metrics carry no secret, so there is no peer check here; the address is checked to be
//! loopback when the configuration is parsed ([`crate::metrics::config::Config`]). Every other
//! path answers 404, another method on `/metrics` 405. Each connection serves one request and
//! closes (no keep-alive), must send its request head within [`HEADER_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] are served at once (further ones are closed at once).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::routes::{self, Reply};
use crate::metrics::Metrics;

/// A scraper must send its request head within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// hyper's read buffer limit (its minimum, 8 KiB).
const MAX_BUF_SIZE: usize = 8 * 1024;

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
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if conns.len() < MAX_CONNECTIONS => {
                    conns.spawn(serve_connection(stream, metrics.clone()));
                }
                Ok(_) => tracing::debug!("too many metrics connections; closing a new one"),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next() => {}
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, metrics: Metrics) {
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let reply = respond(req.method(), req.uri().path(), &metrics);
        async move { Ok::<_, Infallible>(reply) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_BUF_SIZE)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "metrics connection ended with an error");
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
}
