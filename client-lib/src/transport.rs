//! One HTTP/1.1 `GET` over the agent's Unix socket: connect, send, read a bounded body.
//!
//! A new connection per request: connecting to a local Unix socket costs microseconds, and the
//! agent checks the caller's identity per connection anyway. Nothing here retries or caches;
//! that is [`crate::client`]'s policy.
//!
//! The agent answers a caller it does not allow as soon as it accepts the connection
//! (`403 Forbidden`, then it closes), possibly before the request is sent. hyper's client takes
//! bytes that arrive before it has written a request for an error ("unexpected message"), so
//! the socket is read only once the request is written ([`RequestFirst`]), and a write refused
//! because the agent has closed already does not hide the answer it sent before closing.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, HOST};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use zeroize::Zeroizing;

use crate::error::{Error, TimedOut};
use crate::path_check::{check_socket_path, UnsafeSocketPath};

/// Largest response body accepted, in bytes. A credential body is about 2 KB (the
/// `SecurityToken` is the bulk of it).
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A response: its status and its whole body. The body buffer zeroizes on drop, since a
/// credential body holds secrets.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Zeroizing<Vec<u8>>,
}

/// `GET path` on the agent listening at `socket`, all of it (connect, request, body) within
/// `timeout`.
///
/// # Errors
///
/// A socket path others could redirect is [`Error::UnsafeSocketPath`]. Connect failures map to
/// [`Error::AgentNotRunning`] or (for `EACCES`/`EPERM`) [`Error::PermissionDenied`]; anything after connecting, including the timeout, to
/// [`Error::Protocol`]. Any HTTP status is a successful [`Response`].
pub(crate) async fn get(socket: &Path, path: &str, timeout: Duration) -> Result<Response, Error> {
    match tokio::time::timeout(timeout, exchange(socket, path)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(Error::protocol_from(
            format!(
                "no answer to GET {path} on socket {} within {timeout:?}",
                socket.display()
            ),
            TimedOut,
        )),
    }
}

async fn exchange(socket: &Path, path: &str) -> Result<Response, Error> {
    trust(socket)?;
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| connect_error(socket, e))?;
    exchange_on(stream, path).await
}

/// `GET path` on the connected `stream`.
async fn exchange_on(stream: UnixStream, path: &str) -> Result<Response, Error> {
    let io = TokioIo::new(RequestFirst::new(stream));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Error::protocol_from("HTTP/1.1 handshake with the agent failed", e))?;
    let request = http::Request::get(path)
        // HTTP/1.1 requires a Host header; a Unix socket has no host name.
        .header(HOST, "localhost")
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::protocol_from(format!("cannot build request for {path}"), e))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Error::protocol_from(format!("GET {path} failed"), e))?;
        let status = response.status().as_u16();
        let body = read_body(response.into_body()).await?;
        Ok(Response { status, body })
    };
    drive(connection, exchange).await
}

/// Runs the connection future alongside the exchange (no task spawned, so this works on any
/// runtime) until the exchange finishes. Dropping the connection afterwards closes it.
async fn drive<C, E>(connection: C, exchange: E) -> Result<Response, Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
    E: Future<Output = Result<Response, Error>>,
{
    let mut connection = pin!(connection);
    let mut exchange = pin!(exchange);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        closed = &mut connection => match closed {
            // The agent closed the connection after answering; the answer is buffered.
            Ok(()) => exchange.await,
            Err(e) => Err(Error::protocol_from("connection to the agent failed", e)),
        },
    }
}

/// The connection's socket, read only once something was written to it (the request), so an
/// answer the agent sent early is read as the response to it (module docs). A write that fails
/// because the agent has closed its side (`EPIPE`, `ECONNRESET`) counts as written: what the
/// agent sent before closing is then read, and a connection closed without an answer still
/// fails, as an incomplete response.
struct RequestFirst {
    stream: UnixStream,
    written: bool,
    /// The reader waiting for the first write.
    reader: Option<Waker>,
}

impl RequestFirst {
    fn new(stream: UnixStream) -> RequestFirst {
        RequestFirst {
            stream,
            written: false,
            reader: None,
        }
    }

    fn mark_written(&mut self) {
        self.written = true;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
    }
}

impl AsyncRead for RequestFirst {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.written {
            this.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for RequestFirst {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Err(e)) if closed_by_peer(&e) => {
                this.mark_written();
                Poll::Ready(Ok(buf.len()))
            }
            Poll::Ready(Ok(n)) => {
                this.mark_written();
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.get_mut().stream).poll_flush(cx) {
            Poll::Ready(Err(e)) if closed_by_peer(&e) => Poll::Ready(Ok(())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.mark_written();
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// Whether a write failed because the agent has closed the connection.
fn closed_by_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Reads the body into one buffer of fixed capacity (no reallocation leaves copies behind).
async fn read_body(mut body: Incoming) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut out = Zeroizing::new(Vec::with_capacity(MAX_RESPONSE_BYTES));
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::protocol_from("reading the agent's response failed", e))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_RESPONSE_BYTES {
                return Err(Error::protocol(format!(
                    "response body larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// Refuses a socket path that a user other than root and this process's could make lead to
/// a fake agent ([`check_socket_path`]). A few `lstat(2)` calls, made inline: the client spawns
/// nothing, and they do not block for long. A missing or unsearchable component is reported as
/// `connect(2)` would report it (not running, or permission denied).
fn trust(socket: &Path) -> Result<(), Error> {
    match check_socket_path(socket) {
        Ok(()) => Ok(()),
        Err(UnsafeSocketPath::Inspect { source, .. }) => Err(connect_error(socket, source)),
        Err(unsafe_path) => Err(Error::UnsafeSocketPath {
            path: socket.to_owned(),
            source: unsafe_path,
        }),
    }
}

/// Maps a `connect(2)` failure to what the application should do about it.
fn connect_error(socket: &Path, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            path: socket.to_owned(),
            message: format!(
                "this process may not open the socket ({e}); run as a user the agent allows"
            ),
            source: Some(e),
        },
        _ => Error::AgentNotRunning {
            path: socket.to_owned(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
        connection: close\r\ncontent-length: 2\r\n\r\n{}";

    /// The agent answers a caller it does not allow as soon as it accepts the connection,
    /// before the request arrives: a client that has not sent its request yet (a slow sender)
    /// must still read that answer.
    #[tokio::test]
    async fn an_answer_sent_before_the_request_is_read() {
        let (client, mut agent) = UnixStream::pair().unwrap();
        agent.write_all(FORBIDDEN).await.unwrap();
        agent.shutdown().await.unwrap();
        let drain = tokio::spawn(async move {
            let mut request = Vec::new();
            let _ = agent.read_to_end(&mut request).await;
            request
        });
        // The runtime has seen the answer arrive (as after `connect`, which waits for the new
        // socket's first readiness event) before the client sends.
        client.readable().await.unwrap();
        let response = exchange_on(client, "/v1/credentials")
            .await
            .expect("the early answer");
        assert_eq!(response.status, 403);
        assert_eq!(response.body.as_slice(), b"{}");
        let request = drain.await.unwrap();
        assert!(request.starts_with(b"GET /v1/credentials HTTP/1.1\r\n"));
    }

    /// An agent that answered and closed before the request was sent (too many refused
    /// connections to wait for their requests): the answer is still read.
    #[tokio::test]
    async fn an_answer_sent_before_the_agent_closed_is_read() {
        let (client, mut agent) = UnixStream::pair().unwrap();
        agent.write_all(FORBIDDEN).await.unwrap();
        drop(agent);
        client.readable().await.unwrap();
        let response = exchange_on(client, "/v1/credentials")
            .await
            .expect("the answer sent before the close");
        assert_eq!(response.status, 403);
    }

    /// A connection closed without an answer is still an error.
    #[tokio::test]
    async fn a_connection_closed_without_an_answer_fails() {
        let (client, agent) = UnixStream::pair().unwrap();
        drop(agent);
        let e = exchange_on(client, "/v1/credentials").await.err();
        assert!(matches!(e, Some(Error::Protocol { .. })), "{e:?}");
    }
}
