//! The HTTP/1.1 server: accepting connections, the request pipeline, faults that act on the
//! connection itself.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::body::ReplyBody;
use crate::control;
use crate::fault::{Fault, Route};
use crate::protocol::{self, Reply};
use crate::shape;
use crate::state::Shared;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Accepts and serves connections until `shutdown` fires (or its sender is dropped), then drops
/// every open connection, held and hanging ones included.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "emulator: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResetOnDrop {
        inner: stream,
        reset: Arc::clone(&reset),
    });
    let service = service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&reset), req));
    if let Err(e) = http1::Builder::new().serve_connection(io, service).await {
        tracing::debug!(error = %e, "emulator: connection ended");
    }
}

/// The error a request returns to make hyper drop the connection without answering.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault injection")
    }
}

impl std::error::Error for ResetConnection {}

async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, ResetConnection> {
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path();
    if shared.settings.control_api && path.starts_with(control::PREFIX) {
        return Ok(control::handle(&shared, &parts));
    }
    let route = Route::of(path);
    shared.count_request(
        route,
        parts.method == Method::GET,
        parts.method == Method::PUT,
    );
    for gate in shared.gates_for(route) {
        gate.hold().await;
    }
    let fault = shared.take_fault(route);
    match &fault {
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::Reset) => {
            reset.store(true, Ordering::Relaxed);
            return Err(ResetConnection);
        }
        Some(Fault::Delay(by)) => tokio::time::sleep(*by).await,
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reply = Reply::error(status, None);
            shared.count_answer(status.as_u16());
            let (content_type, bytes) = shape::body(&shared, reply, None);
            return Ok(response(status, content_type, ReplyBody::whole(bytes)));
        }
        _ => {}
    }
    let reply = protocol::answer(&shared, &parts, route);
    let status = reply.status;
    shared.count_answer(status.as_u16());
    let (content_type, bytes) = shape::body(&shared, reply, fault.as_ref());
    let body = match fault {
        Some(Fault::HangAfterHeaders) => ReplyBody::never(bytes.len()),
        Some(Fault::SlowBody {
            chunk_bytes,
            interval,
        }) => ReplyBody::slow(bytes, chunk_bytes, interval),
        _ => ReplyBody::whole(bytes),
    };
    Ok(response(status, content_type, body))
}

pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: ReplyBody,
) -> Response<ReplyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// A TCP stream that, when the reset flag is set, closes with RST instead of FIN.
struct ResetOnDrop {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // SO_LINGER 0: the kernel answers the close with RST and discards unsent data.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResetOnDrop {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetOnDrop {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
