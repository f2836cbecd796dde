//! The connection's hyper service: judging, routing and answering a request, counting it,
//! and a panicking handler answered with 500.
//!
//! # The request path
//!
//! Every request on a connection is answered inside hyper's call to the [`Service`], from
//! the connection's own [`ConnState`]: the credential generation it last read (re-read only
//! when the refresher has published since, which costs one atomic load to find out), its
//! phase, its caller's decision (judged again only after a reload published new rules, which
//! also costs one atomic load to find out), and its audit [`Tally`](super::tally::Tally). A
//! request thus takes that
//! uncontended lock twice, reads the clock once in the service and once in
//! [`TimedIo`](super::timed_io::TimedIo), and allocates nothing of its own; the only
//! memory it writes that other connections also write is the request counter and the shared
//! body's reference count (as any hyper server returning shared bytes does). The `bench`
//! benchmark measures this path against a bare hyper server (README, "Performance").

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll};

use http::Request;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::audit::emit_events;
use super::connection::{stopped, ConnState, Ctx, Phase};
use super::routes::{self, route, ApiError, Reply, Route};
use super::{bridge, Stop};
use crate::credentials::state::StateReceiver;
use crate::identity::Transport;

/// The connection's hyper service: each request is answered within the call when it can be
/// (every request once credentials are held), so the usual request allocates nothing of its
/// own and moves no future; only a request that has to wait for the first credentials gets a
/// boxed future ([`respond_later`]).
pub(super) struct Service(pub(super) Arc<Ctx>);

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Reply;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        let ctx = &self.0;
        let now = Instant::now();
        let endpoint = routes::label(req.uri().path());
        let mut conn = ctx.lock();
        // A panicking handler becomes a 500 for this request only. The guard stays outside
        // the closure, so the lock is not poisoned.
        let reply = match std::panic::catch_unwind(AssertUnwindSafe(|| {
            respond_now(&req, ctx, &mut conn, now)
        })) {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                conn.phase = Phase::Busy;
                let rx = conn.state.clone();
                drop(conn);
                return Answer::Later(Box::pin(respond_later(Arc::clone(ctx), rx, endpoint)));
            }
            Err(panic) => internal_error(&*panic),
        };
        let reply = answered(ctx, conn, now, endpoint, reply);
        Answer::Now(Some(reply))
    }
}

/// The future of [`Service::call`].
pub(super) enum Answer {
    /// Answered within the call.
    Now(Option<Reply>),
    /// Waiting for the first credentials.
    Later(Pin<Box<dyn Future<Output = Reply> + Send>>),
}

impl Future for Answer {
    type Output = Result<Reply, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Now(reply) => {
                Poll::Ready(Ok(reply.take().expect("Answer polled after it completed")))
            }
            Answer::Later(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

/// Logs a handler's panic and answers 500.
fn internal_error(panic: &(dyn Any + Send)) -> Reply {
    tracing::error!(panic = %panic_text(panic), "request handler panicked");
    ApiError::Internal.to_response()
}

/// Answers `req` at `now` without waiting, or `None` when it has to wait for the first
/// credentials.
fn respond_now(
    req: &Request<Incoming>,
    ctx: &Ctx,
    conn: &mut ConnState,
    now: Instant,
) -> Option<Reply> {
    // Judged at accept; judged again only after a reload (one atomic load per request).
    let decision = conn.judge(&ctx.caller, &ctx.common);
    if !decision.is_allowed() {
        ctx.common.metrics.caller_denied();
        emit_events(
            ctx.common
                .audit
                .lock()
                .map(|mut a| a.record_denial(&ctx.caller, now)),
        );
        // A reload revoked the caller: close the connection after the 403, so it holds none of
        // the `max_connections` slots allowed callers need.
        let mut reply = routes::refusal(&ctx.caller, decision).to_response();
        reply.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return Some(reply);
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        return Some(
            ApiError::BadRequest("absolute-form request targets (proxy requests) are not accepted")
                .to_response(),
        );
    }
    if ctx.caller.transport == Transport::Tcp
        && !bridge::host_allowed(
            req.headers().get(http::header::HOST),
            ctx.common.bridge_port,
        )
    {
        return Some(ApiError::BadRequest(bridge::WRONG_HOST).to_response());
    }
    if ctx.common.panic_on_path.as_deref() == Some(req.uri().path()) {
        panic!(
            "test hook: panicking while holding {:?}",
            *conn.state.borrow()
        );
    }
    Some(match route(req.method(), req.uri().path(), req.headers()) {
        Err(e) => e.to_response(),
        Ok(Route::Health) => {
            // Root and the agent's own uid also see every profile's state.
            let all = ctx.common.trusted.contains(ctx.caller.uid).then(|| {
                let (cfg, _) = super::connection::ConfigWatch::current(&ctx.common.config);
                Arc::clone(&cfg.profiles)
            });
            let profile = conn.profile.as_ref().map(|p| &*p.name);
            routes::health(&conn.state, profile, all.as_deref())
        }
        Ok(Route::Metrics) => routes::metrics(&ctx.common.metrics),
        Ok(Route::Credentials) => {
            conn.refresh_cached();
            // Nothing servable (none yet, or past `serve_until`): the slow path reads the
            // state itself, waits for the first credentials or says why there are none.
            let issued = conn.cached.as_ref().filter(|c| now < c.serve_until)?;
            let reply = routes::credentials_reply(issued);
            let profile = conn.profile.as_ref();
            if let Some(p) = profile {
                p.served.inc();
            }
            let name = profile.map(|p| &*p.name);
            conn.tally
                .count(&ctx.common.audit, &ctx.caller, issued, name, now);
            reply
        }
    })
}

/// The `Message` of the `503` a request waiting for the first credentials gets when the
/// server begins to shut down.
pub(super) const SHUTTING_DOWN: &str = "agent is shutting down: no credentials fetched yet";

/// `GET /v1/credentials` when the connection holds nothing servable: waits for the first
/// credentials ([`routes::credentials`]) or answers why there are none; answers
/// `503` [`SHUTTING_DOWN`] (with `Connection: close`) as soon as the server begins to shut
/// down instead of waiting on.
async fn respond_later(ctx: Arc<Ctx>, rx: StateReceiver, endpoint: &'static str) -> Reply {
    let wait = ctx.cfg.first_credentials_wait;
    let answer = tokio::select! {
        biased;
        answer = CatchUnwind(Box::pin(routes::credentials(rx, wait))) => Some(answer),
        () = stopped(ctx.common.stop.clone(), Stop::Graceful) => None,
    };
    let now = Instant::now();
    let mut conn = ctx.lock();
    let reply = match answer {
        Some(Ok(Ok((reply, issued)))) => {
            let conn = &mut *conn;
            if let Some(p) = &conn.profile {
                p.served.inc();
            }
            let name = conn.profile.as_ref().map(|p| &*p.name);
            conn.tally
                .count(&ctx.common.audit, &ctx.caller, &issued, name, now);
            reply
        }
        Some(Ok(Err(e))) => e.to_response(),
        Some(Err(panic)) => internal_error(&*panic),
        None => {
            // The connection closes after this answer, whether it has begun to stop yet or not.
            conn.last_answer = true;
            ApiError::CredentialsUnavailable(SHUTTING_DOWN.to_owned()).to_response()
        }
    };
    answered(&ctx, conn, now, endpoint, reply)
}

/// Ends a request answered with `reply` at `now`: the connection's phase moves on (idle, or
/// a pipelined head due), its lock is released, and the answer is counted under `endpoint`.
/// The connection's last answer ([`ConnState::last_answer`]) gets `Connection: close`.
fn answered(
    ctx: &Ctx,
    mut conn: MutexGuard<'_, ConnState>,
    now: Instant,
    endpoint: &'static str,
    mut reply: Reply,
) -> Reply {
    conn.phase = conn.answered(now, ctx.cfg.header_timeout);
    let last = conn.last_answer;
    drop(conn);
    if last {
        reply.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let status = reply.status().as_u16();
    match ctx.caller.transport {
        Transport::Unix => ctx.common.metrics.socket_request(endpoint, status),
        Transport::Tcp => ctx.common.metrics.bridge_request(endpoint, status),
    }
    reply
}

fn panic_text(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic)"
    }
}

/// A future that turns a panic while polling `F` into `Err` with the panic payload.
pub(super) struct CatchUnwind<F>(pub(super) Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_becomes_an_error_not_a_crash() {
        let caught = CatchUnwind(Box::pin(async {
            tokio::task::yield_now().await;
            panic!("handler bug {}", 42);
        }))
        .await;
        let Err(panic) = caught else {
            panic!("the panic was not caught")
        };
        assert_eq!(panic_text(&*panic), "handler bug 42");
        let fine = CatchUnwind(Box::pin(async { 7 })).await;
        assert_eq!(fine.ok(), Some(7));
        assert_eq!(panic_text(&"static"), "static");
    }
}
