//! One connection: peer identity, the HTTP/1.1 state machine, its timeouts, and requests.
//!
//! # Timeouts
//!
//! hyper 1's `header_read_timeout` starts as soon as hyper waits for a request head, including
//! while a keep-alive connection sits idle, so it cannot express "idle for 60 s, but a started
//! head within 5 s". The connection therefore tracks its own [`Phase`]: the socket wrapper
//! ([`Watched`]) moves `Idle → Head` on the first byte of a request, the service moves
//! `Head → Idle` when it answers (`Head → Busy → Idle` for a request that waits for the first
//! credentials). A new connection starts in `Head`: it must send its first request within
//! `header_timeout`. A connection past its deadline is dropped (closed).
//!
//! A head may also start in the same read as the end of the request being answered (a client
//! pipelining, then falling silent): hyper then already holds its start, and the socket sees
//! no new byte. [`Watched`] therefore also tells whether the bytes read so far end inside a
//! head ([`HeadScan`]); the answer then moves `Head → Head` (a new `header_timeout` from the
//! answer) instead of `Head → Idle`.
//!
//! The phase is a plain value behind an uncontended lock, not a channel: changing it wakes
//! nothing and arms no timer, so a request costs no timer operation. One timer per
//! connection checks the phase instead ([`next_check`]): at the phase's deadline when that is
//! known to be the earliest one possible, else at most `header_timeout` later (a head that
//! starts in between has a deadline no earlier than that check). Every deadline is thus
//! enforced exactly, and moving a timer later is lock-free in tokio.
//!
//! # The request path
//!
//! Every request on a connection is answered inside hyper's call to the [`Service`], from
//! the connection's own [`ConnState`]: the credential generation it last read (re-read only
//! when the refresher has published since, which costs one atomic load to find out), its
//! phase, and its audit [`Batch`]. A request thus takes that uncontended lock twice, reads the clock
//! once in the service and once in [`Watched`], and allocates nothing of its own; the only
//! memory it writes that other connections also write is the request counter and the shared
//! body's reference count (as any hyper server returning shared bytes does). The `bench`
//! benchmark measures this path against a bare hyper server (README, "Performance").

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::audit::{Audit, AuditEvent};
use super::peer::{authorize, Decision, Peer};
use super::routes::{self, route, ApiError, Reply, Route};
use super::Stop;
use crate::config::ServerConfig;
use crate::credentials::state::StateReceiver;
use crate::credentials::Issued;
use crate::metrics::Metrics;

/// hyper's read buffer limit: the request head must fit (hyper's minimum, 8 KiB).
const MAX_BUF_SIZE: usize = 8 * 1024;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head to start, since this instant.
    Idle(Instant),
    /// A request head has started (or the connection is new); it must be complete by then.
    Head(Instant),
    /// A request is being handled (only a request that waits for the first credentials stays
    /// in this phase across polls; the others are answered within one call).
    Busy,
}

/// What every connection of a server shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// The refresher's snapshot.
    pub(crate) state: StateReceiver,
    /// The audit trail (a `std` mutex: held for a few map operations, never across `.await`).
    pub(crate) audit: Arc<Mutex<Audit>>,
    /// Where requests and denials are counted; also what `GET /metrics` serves.
    pub(crate) metrics: Metrics,
    /// Test-only: [`Supervision::panic_on_path`](super::Supervision::panic_on_path).
    pub(crate) panic_on_path: Option<Arc<str>>,
}

/// One connection: what it was accepted with, and its [`ConnState`].
#[derive(Debug)]
struct Ctx {
    audit: Arc<Mutex<Audit>>,
    metrics: Metrics,
    panic_on_path: Option<Arc<str>>,
    cfg: Arc<ServerConfig>,
    peer: Peer,
    decision: Decision,
    conn: Mutex<ConnState>,
}

/// What a connection keeps between requests. The socket wrapper, the service and the timer
/// all run in the connection's own task, so this lock is never contended: a request takes it
/// twice (first byte of the head, then the answer) and touches no memory that other
/// connections write, except the metrics counter and the answer body's reference count.
#[derive(Debug)]
struct ConnState {
    phase: Phase,
    /// This connection's receiver of the refresher's state.
    state: StateReceiver,
    /// The credential generation this connection last read, valid while the refresher has
    /// published nothing newer (checked per request with one atomic load). Dropped when the
    /// timer finds the connection idle, so an idle connection keeps no credential generation
    /// alive for longer than `header_timeout`.
    cached: Option<Arc<Issued>>,
    /// Issuances not yet reported to the shared audit.
    batch: Option<Batch>,
    /// Where the bytes read so far end: inside a request head, hyper holds the start of a
    /// head it has not received in full.
    scan: HeadScan,
}

impl ConnState {
    /// Brings [`cached`](ConnState::cached) up to date: kept while the refresher has published
    /// nothing since it was read (one atomic load: no lock or reference count that other
    /// connections write), else read anew. The caller still checks `serve_until`.
    fn refresh_cached(&mut self) {
        // Nothing cached (a new connection, or after an idle check) reads anew, and so does
        // `Err` (the refresher is gone: its last value still counts).
        if self.cached.is_none() || !matches!(self.state.has_changed(), Ok(false)) {
            self.cached = self.state.borrow_and_update().credentials.clone();
        }
    }

    /// The phase once a request is answered at `now`: idle, unless the start of the next head
    /// was read with this request (pipelined), which must then be complete within
    /// `header_timeout` like any other.
    fn answered(&self, now: Instant, header_timeout: Duration) -> Phase {
        if self.scan.in_head {
            Phase::Head(now + header_timeout)
        } else {
            Phase::Idle(now)
        }
    }
}

/// How long a connection may keep counting repeated issuances before it reports them to the
/// shared audit (and at the latest when the generation changes, the connection's timer finds
/// it idle, or it closes).
const AUDIT_BATCH: Duration = Duration::from_secs(1);

/// Repeated issuances of one generation on one connection, counted without the shared audit
/// lock (which every connection would otherwise take for every request).
#[derive(Debug)]
struct Batch {
    generation: u64,
    access_key_id: String,
    /// Issuances not yet reported.
    count: u64,
    since: Instant,
}

impl Ctx {
    fn lock(&self) -> MutexGuard<'_, ConnState> {
        // Nothing panics while holding it except a request handler, whose panic is caught
        // while the guard is held outside it (so it is not poisoned either way).
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accounts for one issuance of `issued` at `now`: the connection's first of a generation
    /// goes to the shared audit at once (its `issued` event is immediate), the others are
    /// counted in `batch` and reported at least every [`AUDIT_BATCH`].
    fn count_issuance(&self, batch: &mut Option<Batch>, issued: &Issued, now: Instant) {
        if let Some(b) = batch.as_mut() {
            if b.generation == issued.generation && now.duration_since(b.since) < AUDIT_BATCH {
                b.count += 1;
                return;
            }
        }
        let (report, first) = match batch.take() {
            Some(b) if b.generation == issued.generation => (Some(b), false),
            other => (other, true),
        };
        *batch = Some(Batch {
            generation: issued.generation,
            access_key_id: issued.access_key_id.clone(),
            count: u64::from(!first),
            since: now,
        });
        if !first && report.as_ref().is_some_and(|b| b.count == 0) {
            return;
        }
        emit(self.audit.lock().map(|mut a| {
            let mut events = report.map_or_else(Vec::new, |b| {
                a.record_repeats(&self.peer, b.generation, &b.access_key_id, b.count, now)
            });
            if first {
                events.extend(a.record_issuance(&self.peer, issued, now));
            }
            events
        }));
    }

    /// Reports the repeats counted in `batch` if they are at least [`AUDIT_BATCH`] old (the
    /// timer's check of an idle connection).
    fn report_old_repeats(&self, batch: &mut Option<Batch>, now: Instant) {
        let Some(b) = batch.as_mut() else { return };
        if b.count == 0 || now.duration_since(b.since) < AUDIT_BATCH {
            return;
        }
        let count = std::mem::take(&mut b.count);
        b.since = now;
        emit(
            self.audit.lock().map(|mut a| {
                a.record_repeats(&self.peer, b.generation, &b.access_key_id, count, now)
            }),
        );
    }
}

impl Drop for Ctx {
    /// Reports the issuances still counted when the connection ends.
    fn drop(&mut self) {
        let batch = self
            .conn
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .batch
            .take();
        if let Some(b) = batch.filter(|b| b.count > 0) {
            let now = Instant::now();
            emit(self.audit.lock().map(|mut a| {
                a.record_repeats(&self.peer, b.generation, &b.access_key_id, b.count, now)
            }));
        }
    }
}

/// When the connection's timer should next look at `phase` (checked at `now`): `Err` when
/// its deadline has passed (close the connection), else the instant to check again.
fn next_check(
    phase: Phase,
    now: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
) -> Result<Instant, ()> {
    let deadline = match phase {
        Phase::Idle(since) => since + idle_timeout,
        Phase::Head(by) => by,
        // A request being handled has no deadline; look again later.
        Phase::Busy => return Ok(now + header_timeout),
    };
    if deadline <= now {
        return Err(());
    }
    Ok(match phase {
        // A head may start at any moment, with a deadline `header_timeout` after it starts.
        Phase::Idle(_) => deadline.min(now + header_timeout),
        _ => deadline,
    })
}

/// Serves one accepted connection until it closes, times out, or `stop` turns true (then
/// in-flight requests finish and the connection closes).
pub(crate) async fn serve(
    stream: UnixStream,
    cfg: Arc<ServerConfig>,
    shared: Shared,
    stop: watch::Receiver<Stop>,
) {
    let peer = match Peer::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials (SO_PEERCRED); closing");
            return;
        }
    };
    let decision = authorize(&peer, &cfg);
    let first_deadline = Instant::now() + cfg.header_timeout;
    let (header_timeout, idle_timeout) = (cfg.header_timeout, cfg.idle_timeout);
    let Shared {
        state,
        audit,
        metrics,
        panic_on_path,
    } = shared;
    let ctx = Arc::new(Ctx {
        audit,
        metrics,
        panic_on_path,
        cfg,
        peer,
        decision,
        conn: Mutex::new(ConnState {
            phase: Phase::Head(first_deadline),
            state,
            cached: None,
            batch: None,
            scan: HeadScan::default(),
        }),
    });
    let io = Watched {
        inner: stream,
        ctx: Arc::clone(&ctx),
        header_timeout,
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Timeouts are ours (module docs); hyper's would also close idle keep-alive connections.
        .header_read_timeout(None)
        // A client may shut down its writing side once its request is sent (`nc -N`, `socat`,
        // `printf ... | nc -U`); without this, hyper takes that EOF for an abort and drops the
        // connection before the answer is written. Our timeouts still bound the connection.
        .half_close(true)
        .max_buf_size(MAX_BUF_SIZE);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), Service(Arc::clone(&ctx))));
    let mut stopping = false;
    let mut timer = pin!(tokio::time::sleep_until(first_deadline));
    // One future per stage for the connection's life: a `stop.changed()` made anew at every
    // wake-up would join and leave the waiter list every connection shares, per request.
    let later = stop.clone();
    let mut stop = pin!(stopped(stop, Stop::Graceful));
    let mut wakes = Wakes::default();
    loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Ended(res));
            }
            // The timer and the stop signal keep the waker they were last polled with; they
            // are polled again only when they may be ready (or the waker changed), not at
            // every wake-up of the connection: polling the stop signal locks a waiter list
            // that every connection shares.
            let fresh = wakes.fresh(cx.waker());
            if (!fresh || timer.is_elapsed()) && timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            if (!fresh || !matches!(later.has_changed(), Ok(false)))
                && stop.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Event::Stop);
            }
            // A poll refused for lack of coop budget returns `Pending` without registering
            // its waker: then poll both again at the next wake-up, with a new budget.
            if tokio::task::coop::has_budget_remaining() {
                wakes.registered(cx.waker());
            } else {
                wakes.forget();
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Ended(res) => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            Event::Timer => {
                let now = Instant::now();
                let mut c = ctx.lock();
                if let Phase::Idle(_) = c.phase {
                    c.cached = None;
                    ctx.report_old_repeats(&mut c.batch, now);
                }
                match next_check(c.phase, now, header_timeout, idle_timeout) {
                    Ok(at) => timer.as_mut().reset(at),
                    Err(()) => {
                        tracing::debug!(
                            ?header_timeout,
                            ?idle_timeout,
                            "connection timed out; closing"
                        );
                        return;
                    }
                }
            }
            Event::Stop => {
                if stopping {
                    tracing::debug!("shutdown grace over; closing the connection");
                    return;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
                stop.set(stopped(later.clone(), Stop::Now));
            }
        }
        // A reset timer or a new stop future must be polled (registered) again.
        wakes.forget();
    }
}

/// What woke a connection's loop in [`serve`].
enum Event {
    Ended(hyper::Result<()>),
    Timer,
    Stop,
}

/// The waker the timer and the stop signal were last polled with, in [`serve`]'s loop.
#[derive(Default)]
struct Wakes(Option<std::task::Waker>);

impl Wakes {
    /// Whether both were last polled with a waker that wakes the same task as `waker`.
    fn fresh(&self, waker: &std::task::Waker) -> bool {
        self.0.as_ref().is_some_and(|w| w.will_wake(waker))
    }

    fn registered(&mut self, waker: &std::task::Waker) {
        if !self.fresh(waker) {
            self.0 = Some(waker.clone());
        }
    }

    fn forget(&mut self) {
        self.0 = None;
    }
}

/// Completes when `stop` reaches `level`; never, if its sender is gone first.
async fn stopped(mut stop: watch::Receiver<Stop>, level: Stop) {
    if stop.wait_for(|stop| *stop >= level).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// [`serve`], logging a panic outside the request handlers (which answer 500 themselves)
/// instead of losing it: connection tasks are detached.
pub(crate) async fn serve_catching_panics(
    stream: UnixStream,
    cfg: Arc<ServerConfig>,
    shared: Shared,
    stop: watch::Receiver<Stop>,
) {
    if CatchUnwind(Box::pin(serve(stream, cfg, shared, stop)))
        .await
        .is_err()
    {
        tracing::error!("a connection task panicked; the connection was closed");
    }
}

/// The connection's hyper service: each request is answered within the call when it can be
/// (every request once credentials are held), so the usual request allocates nothing of its
/// own and moves no future; only a request that has to wait for the first credentials gets a
/// boxed future ([`respond_later`]).
struct Service(Arc<Ctx>);

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
        conn.phase = conn.answered(now, ctx.cfg.header_timeout);
        drop(conn);
        ctx.metrics
            .socket_request(endpoint, reply.status().as_u16());
        Answer::Now(Some(reply))
    }
}

/// The future of [`Service::call`].
enum Answer {
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
    if !ctx.decision.is_allowed() {
        ctx.metrics.caller_denied();
        emit(
            ctx.audit
                .lock()
                .map(|mut a| a.record_denial(&ctx.peer, now)),
        );
        // Close the connection after the 403: a denied caller must not hold one of the
        // `max_connections` slots allowed callers need.
        let mut reply = ApiError::Forbidden.to_response();
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
    if ctx.panic_on_path.as_deref() == Some(req.uri().path()) {
        panic!(
            "test hook: panicking while holding {:?}",
            *conn.state.borrow()
        );
    }
    Some(match route(req.method(), req.uri().path(), req.headers()) {
        Err(e) => e.to_response(),
        Ok(Route::Health) => routes::health(&conn.state),
        Ok(Route::Metrics) => routes::metrics(&ctx.metrics),
        Ok(Route::Credentials) => {
            conn.refresh_cached();
            // Nothing servable (none yet, or past `serve_until`): the slow path reads the
            // state itself, waits for the first credentials or says why there are none.
            let issued = conn.cached.as_ref().filter(|c| now < c.serve_until)?;
            let reply = routes::credentials_reply(issued);
            ctx.count_issuance(&mut conn.batch, issued, now);
            reply
        }
    })
}

/// `GET /v1/credentials` when the connection holds nothing servable: waits for the first
/// credentials ([`routes::credentials`]) or answers why there are none.
async fn respond_later(ctx: Arc<Ctx>, rx: StateReceiver, endpoint: &'static str) -> Reply {
    let wait = ctx.cfg.first_credentials_wait;
    let answer = CatchUnwind(Box::pin(routes::credentials(rx, wait))).await;
    let now = Instant::now();
    let mut conn = ctx.lock();
    let reply = match answer {
        Ok(Ok((reply, issued))) => {
            ctx.count_issuance(&mut conn.batch, &issued, now);
            reply
        }
        Ok(Err(e)) => e.to_response(),
        Err(panic) => internal_error(&*panic),
    };
    conn.phase = conn.answered(now, ctx.cfg.header_timeout);
    drop(conn);
    ctx.metrics
        .socket_request(endpoint, reply.status().as_u16());
    reply
}

/// Emits audit events; a poisoned audit lock (a panic while holding it) is reported, not fatal.
fn emit<E>(events: Result<Vec<AuditEvent>, E>) {
    match events {
        Ok(events) => events.iter().for_each(AuditEvent::emit),
        Err(_) => {
            tracing::error!(target: "audit", "audit state poisoned by an earlier panic; event lost")
        }
    }
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
struct CatchUnwind<F>(Pin<Box<F>>);

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

/// The socket, noticing the first byte of each request head (`Idle → Head`) and whether what
/// it read ends inside a head.
struct Watched {
    inner: UnixStream,
    ctx: Arc<Ctx>,
    header_timeout: Duration,
}

/// Follows where request heads end in the bytes read, as httparse reads them: a head ends
/// with an empty line (`\r\n` or `\n`); empty lines before a head are skipped. A request body
/// (always refused) is taken for the start of a head: at worst such a connection then gets
/// `header_timeout` instead of `idle_timeout` once answered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct HeadScan {
    /// A non-empty line has been read since the last head ended.
    in_head: bool,
    /// The current line has a byte other than `\r`.
    line_has_content: bool,
}

impl HeadScan {
    /// Moves past `bytes`, the next bytes read. Only the chunk's last two lines matter (where
    /// the last complete line ends and what follows it), so this looks at a few bytes from the
    /// end, not at every byte read ([`HeadScan::scan_every_byte`] is the plain definition it
    /// is tested against).
    fn scan(&mut self, bytes: &[u8]) {
        let content = |s: &[u8]| s.iter().any(|&b| b != b'\r');
        let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
            if content(bytes) {
                self.line_has_content = true;
                self.in_head = true;
            }
            return;
        };
        // The line the last `\n` ends: from the previous `\n`, or continued from earlier reads.
        let ended_has_content = match bytes[..last].iter().rposition(|&b| b == b'\n') {
            Some(prev) => content(&bytes[prev + 1..last]),
            None => self.line_has_content || content(&bytes[..last]),
        };
        // A line with content is part of a head; an empty one ends it (or is skipped).
        self.in_head = ended_has_content;
        self.line_has_content = content(&bytes[last + 1..]);
        self.in_head |= self.line_has_content;
    }

    /// [`HeadScan::scan`], byte by byte.
    #[cfg(test)]
    fn scan_every_byte(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => {
                    if !self.line_has_content {
                        self.in_head = false;
                    }
                    self.line_has_content = false;
                }
                b'\r' => {}
                _ => {
                    self.line_has_content = true;
                    self.in_head = true;
                }
            }
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut conn = self.ctx.lock();
            conn.scan.scan(&buf.filled()[before..]);
            if let Phase::Idle(_) = conn.phase {
                conn.phase = Phase::Head(Instant::now() + self.header_timeout);
            }
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    /// Vectored writes let hyper send the head and the body with one `writev(2)` instead of
    /// copying the body into its own buffer first.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How long a rejected connection is given to read the answer and finish sending its request.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Answers a connection beyond `max_connections` at once with `503 TooManyConnections` and
/// `Connection: close`, then reads and discards what the client sends (at most
/// [`MAX_BUF_SIZE`] bytes, for at most [`REJECT_LINGER`]) before closing, so that the
/// client's own write does not fail and it reads the answer rather than a reset.
pub(crate) async fn reject(mut stream: UnixStream) {
    let answer = ApiError::TooManyConnections.to_raw_http();
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 1024];
        let mut read = 0;
        while read < MAX_BUF_SIZE {
            match stream.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Answers an excess connection when [`reject`] cannot linger on it (too many already are):
/// writes `503 TooManyConnections` without waiting (a new socket's buffer always has room for
/// it) and closes. The client still reads the answer before seeing the connection end, so even
/// a burst of thousands of connections gets the reason rather than a bare close.
///
/// The write goes through the plain socket: tokio's `try_write` refuses (`WouldBlock`) until
/// the runtime has seen the new socket's first readiness event, which a just-accepted one may
/// not have had yet.
pub(crate) fn reject_at_once(stream: UnixStream) {
    if let Ok(mut stream) = stream.into_std() {
        let _ = io::Write::write(&mut stream, &ApiError::TooManyConnections.to_raw_http());
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

    #[test]
    fn head_scan_tells_whether_the_bytes_read_end_inside_a_head() {
        let ends_inside = |chunks: &[&[u8]]| {
            let mut scan = HeadScan::default();
            chunks.iter().for_each(|c| scan.scan(c));
            scan.in_head
        };
        let get = b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(!ends_inside(&[]));
        assert!(!ends_inside(&[get]));
        assert!(!ends_inside(&[b"GET / HTTP/1.1\nHost: x\n\n"]), "bare LF");
        assert!(ends_inside(&[b"G"]));
        assert!(ends_inside(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]));
        assert!(ends_inside(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r"]));
        // Split anywhere, even inside the final empty line.
        for i in 0..get.len() {
            assert!(ends_inside(&[&get[..i], &get[i..], b"GET"]), "{i}");
            assert_eq!(ends_inside(&[&get[..i]]), i > 0, "{i}");
            assert!(!ends_inside(&[&get[..i], &get[i..]]), "{i}");
        }
        // Pipelined: complete heads, then the start of one.
        assert!(ends_inside(&[
            &[&get[..], &get[..], b"GET /v1/cre"].concat()
        ]));
        assert!(!ends_inside(&[&[&get[..], &get[..]].concat()]));
        // Empty lines between heads are skipped, not the start of a head.
        assert!(!ends_inside(&[&[&get[..], b"\r\n\r\n\n"].concat()]));
    }

    proptest::proptest! {
        /// Looking only at each chunk's last lines gives the same state as reading every byte.
        #[test]
        fn head_scan_of_the_last_lines_matches_every_byte(
            chunks in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec![b'\r', b'\n', b'G', b' ']),
                    0..12,
                ),
                0..8,
            )
        ) {
            let (mut fast, mut slow) = (HeadScan::default(), HeadScan::default());
            for chunk in &chunks {
                fast.scan(chunk);
                slow.scan_every_byte(chunk);
                proptest::prop_assert_eq!(fast, slow, "after {:?}", chunk);
            }
        }
    }
}
