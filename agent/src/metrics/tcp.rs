//! The optional loopback TCP listener of `[metrics] listen`: `GET /metrics` and nothing else.
//!
//! Metrics carry no secret, so there is no peer check here; the address is checked to be
//! loopback when the configuration is parsed ([`crate::config::MetricsConfig`]). Every other
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

use super::Metrics;
use crate::server::routes::{self, Reply};

/// A scraper must send its request head within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// hyper's read buffer limit (its minimum, 8 KiB).
const MAX_BUF_SIZE: usize = 8 * 1024;

/// The metrics listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr} ([metrics] listen): {source}")]
pub struct BindError {
    /// The configured address.
    pub addr: SocketAddr,
    /// What `bind(2)` reported (for example "Address already in use").
    #[source]
    pub source: io::Error,
}

/// Binds `addr` (TCP).
///
/// # Errors
/// [`BindError`] naming the address and the cause.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// The running metrics listener; dropping it stops it (open scrapes are cut off).
#[derive(Debug)]
pub struct Server {
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` from `metrics` on `listener` until the returned [`Server`] is dropped.
///
/// # Panics
/// Outside a tokio runtime (like `tokio::spawn`).
pub fn spawn(listener: TcpListener, metrics: Metrics) -> Server {
    Server {
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
