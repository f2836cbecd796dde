//! One HTTPS exchange with STS: TCP (direct, or through `[sts] proxy` with HTTP `CONNECT`),
//! TLS (rustls, `ring`), one HTTP/1.1 request (hyper) on a fresh connection, the body capped.
//!
//! No connection is reused: a profile calls STS once an hour or so. No redirect is followed
//! (a 3xx is an error answer like any other). The caller bounds the whole exchange with its
//! deadline; connecting (TCP, the proxy's `CONNECT`, the TLS handshake) is bounded by
//! `connect_timeout`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use super::config::{Endpoint, Proxy};
use super::error::StsError;
use super::response::MAX_BODY_BYTES;
use crate::sources::metadata::response::parse_http_date;

/// The longest response head a proxy may send to `CONNECT`.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

/// An answer: status, STS's `Date`, the body (zeroized on drop).
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) date: Option<SystemTime>,
    pub(super) body: Zeroizing<Vec<u8>>,
}

/// The HTTPS transport, shared by every call.
pub(super) struct Https {
    tls: TlsConnector,
    proxy: Option<(String, u16)>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("proxy", &self.proxy)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Https {
    pub(super) fn new(
        tls: rustls::ClientConfig,
        proxy: Option<&Proxy>,
        connect_timeout: Duration,
    ) -> Https {
        Https {
            tls: TlsConnector::from(Arc::new(tls)),
            proxy: proxy.map(|p| (p.host().to_owned(), p.port())),
            connect_timeout,
        }
    }

    /// Sends `request` (origin-form URI, `Host` set by the caller) to `endpoint`.
    ///
    /// # Errors
    /// [`StsError::Unreachable`] (connect, proxy, TLS or connection failures),
    /// [`StsError::Timeout`] (no connection within `connect_timeout`),
    /// [`StsError::InvalidResponse`] (body over [`MAX_BODY_BYTES`]).
    pub(super) async fn exchange(
        &self,
        endpoint: &Endpoint,
        request: http::Request<Empty<Bytes>>,
    ) -> Result<Answer, StsError> {
        let unreachable = |reason: String| StsError::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let tls = tokio::time::timeout(self.connect_timeout, self.connect(endpoint))
            .await
            .map_err(|_| StsError::Timeout {
                endpoint: endpoint.to_string(),
                after: self.connect_timeout,
            })??;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(innermost(&e)))?;
        // Ends when the answer is read and `sender` dropped, or the peer closes; when the
        // caller's deadline drops this exchange first, hyper sees the answer abandoned and
        // closes the connection (test: a_timed_out_call_leaves_no_connection_open).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(format!("no answer: {}", innermost(&e))))?;
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let too_large = || StsError::InvalidResponse {
            status,
            what: format!("body over {MAX_BODY_BYTES} bytes"),
        };
        let mut body = response.into_body();
        // Allocated once at the cap: the buffer never reallocates, leaving no unzeroized copy.
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_BODY_BYTES));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| unreachable(format!("answer cut: {}", innermost(&e))))?;
            if let Some(chunk) = frame.data_ref() {
                if out.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(too_large());
                }
                out.extend_from_slice(chunk);
            }
        }
        Ok(Answer {
            status,
            date,
            body: out,
        })
    }

    /// TCP (direct or through the proxy), then TLS with `endpoint`'s host as the server name.
    async fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, StsError> {
        let unreachable = |reason: String| StsError::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let (host, port) = (endpoint.host(), endpoint.port());
        let tcp = match &self.proxy {
            None => TcpStream::connect((host, port))
                .await
                .map_err(|e| unreachable(e.to_string()))?,
            Some((proxy_host, proxy_port)) => {
                let mut tcp = TcpStream::connect((proxy_host.as_str(), *proxy_port))
                    .await
                    .map_err(|e| unreachable(format!("proxy {proxy_host}:{proxy_port}: {e}")))?;
                tunnel(&mut tcp, &endpoint.host_port())
                    .await
                    .map_err(|e| unreachable(format!("proxy {proxy_host}:{proxy_port}: {e}")))?;
                tcp
            }
        };
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| unreachable(format!("not a TLS server name ({e})")))?
            .to_owned();
        self.tls
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {}", innermost(&e))))
    }
}

/// Asks the proxy on `tcp` for a tunnel to `authority` (`CONNECT host:port`) and reads its
/// answer head; anything but a 2xx is an error naming the status line.
async fn tunnel(tcp: &mut TcpStream, authority: &str) -> std::io::Result<()> {
    let ask = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(ask.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_HEAD || tcp.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("no complete answer to CONNECT"));
        }
        head.push(byte[0]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let ok = line
        .split(' ')
        .nth(1)
        .is_some_and(|code| code.len() == 3 && code.starts_with('2'));
    if ok && line.starts_with("HTTP/1.") {
        Ok(())
    } else {
        let shown: String = line.chars().take(80).collect();
        Err(std::io::Error::other(format!("CONNECT refused: {shown:?}")))
    }
}

/// The innermost cause of `e` (e.g. "invalid peer certificate: UnknownIssuer").
pub(super) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
