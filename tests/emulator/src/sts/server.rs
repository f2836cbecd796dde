//! The HTTPS server: TLS accept loop and the request pipeline (fault, signature, AssumeRole).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::assume;
use super::error::{StsError, HOST_ID};
use super::state::{Outcome, StsFault};
use super::verify::{self, Received};
use super::Inner;

/// Largest request body read (a 2048-character policy, percent-encoded, fits many times over).
const MAX_BODY: usize = 64 * 1024;

/// Accepts TLS connections until `shutdown` fires, then drops every open connection.
pub(crate) async fn run(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    inner: Arc<Inner>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, acceptor.clone(), Arc::clone(&inner)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "STS emulator: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

async fn serve(stream: TcpStream, acceptor: TlsAcceptor, inner: Arc<Inner>) {
    let _ = stream.set_nodelay(true);
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(e) => {
            tracing::debug!(error = %e, "STS emulator: TLS handshake failed");
            return;
        }
    };
    let service = service_fn(move |req| handle(Arc::clone(&inner), req));
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(error = %e, "STS emulator: connection ended");
    }
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let request_id = assume::request_id();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let refusal = StsError::with("InvalidParameter", "The request body is too large.");
            inner.script.count(None, Outcome::Refused(&refusal.code));
            return Ok(error(&refusal, &request_id));
        }
    };
    let received = received(&parts, body);
    let params = received.params();
    let role_arn = params.get("RoleArn").map(String::as_str);
    let fault = inner.script.take_fault(role_arn);
    let expired_on_arrival = fault == Some(StsFault::ExpiredOnArrival);
    let refusal = match fault {
        Some(StsFault::Hang) => {
            inner.script.count(role_arn, Outcome::Hung);
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        Some(StsFault::InternalError) => Some(StsError::of("InternalError")),
        Some(StsFault::Throttling) => Some(StsError::of("Throttling.User")),
        Some(StsFault::Error(e)) => Some(e),
        Some(StsFault::ExpiredOnArrival) | None => None,
    };
    let answer = match refusal {
        Some(refusal) => Err(refusal),
        None if parts.uri.path() != "/" => Err(StsError::of("InvalidAction.NotFound")),
        None => assume_role(&inner, &received, expired_on_arrival, &request_id),
    };
    match answer {
        Ok((body, scheme)) => {
            inner.script.count(role_arn, Outcome::Accepted(scheme));
            Ok(json(StatusCode::OK, body))
        }
        Err(refusal) => {
            inner
                .script
                .count(role_arn, Outcome::Refused(&refusal.code));
            Ok(error(&refusal, &request_id))
        }
    }
}

fn assume_role(
    inner: &Inner,
    received: &Received,
    expired_on_arrival: bool,
    request_id: &str,
) -> Result<(String, verify::Scheme), StsError> {
    let now = inner.clock.now();
    let verified = verify::verify(received, &inner.keys, &inner.nonces, now)?;
    let grant = assume::check(
        verified.action.as_deref(),
        verified.version.as_deref(),
        &verified.params,
        &verified.principal,
        &inner.roles,
    )?;
    tracing::debug!(
        role_arn = %grant.role_arn.escape_debug(),
        principal = %verified.principal.to_string().escape_debug(),
        scheme = ?verified.scheme,
        "STS emulator: AssumeRole granted"
    );
    let body = assume::issue(&grant, &inner.keys, now, expired_on_arrival, request_id);
    Ok((body, verified.scheme))
}

fn received(parts: &http::request::Parts, body: Bytes) -> Received {
    let decode = |bytes: &[u8]| -> Vec<(String, String)> {
        form_urlencoded::parse(bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    Received {
        method: parts.method.as_str().to_owned(),
        query: decode(parts.uri.query().unwrap_or_default().as_bytes()),
        form: if is_form { decode(&body) } else { Vec::new() },
        headers: parts.headers.clone(),
        body,
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json;charset=utf-8"),
    );
    headers.insert("x-acs-host-id", header::HeaderValue::from_static(HOST_ID));
    response
}

fn error(refusal: &StsError, request_id: &str) -> Response<Full<Bytes>> {
    json(refusal.status_code(), refusal.body(request_id))
}
