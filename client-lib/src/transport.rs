//! One HTTP/1.1 `GET` over the agent's Unix socket: connect, send, read a bounded body.
//!
//! A new connection per request: connecting to a local Unix socket costs microseconds, and the
//! agent checks the caller's identity per connection anyway. Nothing here retries or caches;
//! that is [`crate::client`]'s policy.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, HOST};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
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
