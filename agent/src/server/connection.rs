//! One connection's life: its context ([`Ctx`], [`ConnState`]), the serve loop with its
//! timeouts and shutdown stages, and a panic outside a request handler caught at the task's
//! edge. The requests themselves are answered by [`service`](super::service); the socket
//! wrapper that sees request heads start is [`timed_io`](super::timed_io).
//!
//! # Timeouts
//!
//! hyper 1's `header_read_timeout` starts as soon as hyper waits for a request head, including
//! while a keep-alive connection sits idle, so it cannot express "idle for 60 s, but a started
//! head within 5 s". The connection therefore tracks its own [`Phase`]: the socket wrapper
//! ([`TimedIo`]) moves `Idle → Head` on the first byte of a request, the service moves
//! `Head → Idle` when it answers (`Head → Busy → Idle` for a request that waits for the first
//! credentials). A new connection starts in `Head`: it must send its first request within
//! `header_timeout`. A connection past its deadline is dropped (closed).
//!
//! A head may also start in the same read as the end of the request being answered (a client
//! pipelining, then falling silent): hyper then already holds its start, and the socket sees
//! no new byte. [`TimedIo`] therefore also tells whether the bytes read so far end inside a
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
//! # Shutdown
//!
//! At [`Stop::Graceful`] hyper is told to shut the connection down gracefully: a request in
//! flight is answered (with `Connection: close`), an idle keep-alive connection is closed.
//! hyper's graceful shutdown also closes at once a connection on which nothing has been read
//! yet; but its client's `connect` succeeded, and it may be about to send its request: closed,
//! it would write into a closed socket (`EPIPE`) and lose the request. A connection told to
//! stop before its first byte arrived therefore waits for its first request (within its
//! `header_timeout`, like any first request) and answers it with `Connection: close`
//! ([`ConnState::last_answer`]): every connection the server accepted gets its request
//! answered. A request waiting for the first credentials is answered `503` at once
//! ([`service`](super::service)). At [`Stop::Now`] (the shutdown grace is over) the
//! connection is closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::pin;
use tokio::sync::watch;
use tokio::time::Instant;

use super::audit::{self, Audit};
use super::listener::Stream;
use super::service::{CatchUnwind, Service};
use super::tally::Tally;
use super::timed_io::{HeadScan, TimedIo};
use super::{ConfigReceiver, Published, Stop};
use crate::credentials::state::StateReceiver;
use crate::credentials::Issued;
use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::policy::{Decision, Rules, Trusted};
use crate::profiles::Profile;

/// hyper's read buffer limit: the request head must fit (hyper's minimum, 8 KiB).
pub(super) const MAX_BUF_SIZE: usize = 8 * 1024;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
    /// The refresher's snapshot (each connection has its own receiver).
    pub(crate) state: StateReceiver,
    /// The rest, behind one reference count: a new connection takes one reference, not one
    /// per part (each is a write to memory every connection shares).
    pub(crate) common: Arc<Common>,
}

/// What every connection of a server shares, behind one reference.
#[derive(Debug)]
pub(crate) struct Common {
    /// The instance role's state, for connections a reload moves from a profile back to the
    /// instance role (each connection has its own receiver).
    pub(crate) instance: StateReceiver,
    /// The audit trail (a `std` mutex: held for a few map operations, never across `.await`).
    pub(crate) audit: Arc<Mutex<Audit>>,
    /// Where requests and denials are counted; also what `GET /metrics` serves.
    pub(crate) metrics: Metrics,
    /// Test-only: [`Supervision::panic_on_path`](super::Supervision::panic_on_path).
    pub(crate) panic_on_path: Option<Arc<str>>,
    /// The uids always allowed (root and the agent's own; none under the test hook
    /// [`Supervision::judge_every_uid`](super::Supervision::judge_every_uid)).
    pub(crate) trusted: Trusted,
    /// The server configuration as reloads publish it.
    pub(crate) config: ConfigVersions,
    /// The loopback listener's port, when there is one: the only port a `Host` may name
    /// ([`bridge::host_allowed`](super::bridge::host_allowed)).
    pub(crate) bridge_port: Option<u16>,
    /// The caller last found known to the audit ([`audit::read_exe_if_audited`]).
    pub(crate) known_caller: audit::KnownCaller,
    /// How far the server is in stopping (each connection and each request waiting for the
    /// first credentials watches a clone).
    pub(crate) stop: watch::Receiver<Stop>,
}

/// What a connection was accepted with.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// Who is on the other end, captured at accept.
    pub(crate) caller: Caller,
    /// What the caller may get, judged at accept (allowed, or it would not be served).
    pub(crate) decision: Decision,
    /// The configuration in force at accept.
    pub(crate) cfg: Arc<Published>,
    /// The server configuration as reloads publish it, having seen `cfg`.
    pub(crate) watch: ConfigWatch,
}

/// The server configuration as reloads publish it, shared by every connection: a generation
/// number, bumped by [`ConfigVersions::follow`] after each publication, tells a connection
/// with one atomic load whether to look again, and the configuration is read only then. A
/// connection thus keeps no receiver of its own (whose clone and drop would write to memory
/// every connection shares).
#[derive(Debug)]
pub(crate) struct ConfigVersions {
    generation: AtomicU64,
    /// Only read ([`watch::Receiver::borrow`]); [`ConfigVersions::follow`] has its own.
    rx: ConfigReceiver,
}

impl ConfigVersions {
    pub(crate) fn new(rx: ConfigReceiver) -> ConfigVersions {
        ConfigVersions {
            generation: AtomicU64::new(0),
            rx,
        }
    }

    /// Bumps the generation after each publication (the new value is in the channel before
    /// the bump, so a connection that sees the bump reads it), until the sender is gone.
    pub(crate) async fn follow(&self) {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        while rx.changed().await.is_ok() {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// [`ConfigVersions`] seen from one connection: the generation it last looked at.
#[derive(Debug)]
pub(crate) struct ConfigWatch {
    seen: u64,
}

impl ConfigWatch {
    /// The configuration in force now, and a watch that has seen it.
    pub(crate) fn current(versions: &ConfigVersions) -> (Arc<Published>, ConfigWatch) {
        // The generation first: the configuration read next is at least that new.
        let seen = versions.generation.load(Ordering::Acquire);
        let cfg = Arc::clone(&versions.rx.borrow());
        (cfg, ConfigWatch { seen })
    }

    /// The configuration published since the last look, if any (marked seen).
    pub(super) fn changed(&mut self, versions: &ConfigVersions) -> Option<Arc<Published>> {
        let now = versions.generation.load(Ordering::Acquire);
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some(Arc::clone(&versions.rx.borrow()))
    }
}

/// One connection: what it was accepted with, and its [`ConnState`].
#[derive(Debug)]
pub(super) struct Ctx {
    pub(super) common: Arc<Common>,
    pub(super) cfg: Arc<Published>,
    /// Who is on the other end, captured at accept.
    pub(super) caller: Caller,
    conn: Mutex<ConnState>,
}

/// What a connection keeps between requests. The socket wrapper, the service and the timer
/// all run in the connection's own task, so this lock is never contended: a request takes it
/// twice (first byte of the head, then the answer) and touches no memory that other
/// connections write, except the metrics counter and the answer body's reference count.
#[derive(Debug)]
pub(super) struct ConnState {
    pub(super) phase: Phase,
    /// What the caller may get, under the rules it was last judged by: at accept, then again
    /// at the first request after each reload ([`ConnState::judge`]).
    pub(super) decision: Decision,
    /// The server configuration as reloads publish it.
    pub(super) watch: ConfigWatch,
    /// This connection's receiver of its credentials' state: the instance role's refresher,
    /// or its profile's ([`ConnState::select`]).
    pub(super) state: StateReceiver,
    /// The caller's profile, when it has one (its name, and its served counter).
    pub(super) profile: Option<Profile>,
    /// The credential generation this connection last read, valid while the refresher has
    /// published nothing newer (checked per request with one atomic load). Dropped when the
    /// timer finds the connection idle, so an idle connection keeps no credential generation
    /// alive for longer than `header_timeout`.
    pub(super) cached: Option<Arc<Issued>>,
    /// Issuances not yet reported to the shared audit.
    pub(super) tally: Tally,
    /// Where the bytes read so far end: inside a request head, hyper holds the start of a
    /// head it has not received in full.
    pub(super) scan: HeadScan,
    /// Whether a byte has been read on the connection (its first request has begun).
    pub(super) begun: bool,
    /// The next answer is the connection's last: it carries `Connection: close`, and hyper
    /// closes the connection once it is written (module docs, "Shutdown").
    pub(super) last_answer: bool,
}

impl ConnState {
    /// Judges `caller` again when a reload published a configuration since it was last
    /// judged (one atomic load finds out); returns the decision in force.
    pub(super) fn judge(&mut self, caller: &Caller, common: &Common) -> Decision {
        let trusted = common.trusted;
        if let Some(cfg) = self.watch.changed(&common.config) {
            let decision = crate::policy::authorize(caller, rules(&cfg, trusted));
            self.select(decision, &cfg, &common.instance);
        }
        self.decision
    }

    /// Takes `decision`, made under `cfg`: the state of its profile's credentials (or the
    /// instance role's, `instance`) becomes the connection's, re-read at the next request
    /// when it is another refresher's.
    fn select(&mut self, decision: Decision, cfg: &Published, instance: &StateReceiver) {
        self.decision = decision;
        let profile = match decision {
            Decision::Profile(i) => cfg.profiles.profiles.get(i).cloned(),
            _ => None,
        };
        let state = profile.as_ref().map_or(instance, |p| &p.state);
        if !self.state.same_channel(state) {
            self.state = state.clone();
            self.cached = None;
        }
        self.profile = profile;
    }

    /// Brings [`cached`](ConnState::cached) up to date: kept while the refresher has published
    /// nothing since it was read (one atomic load: no lock or reference count that other
    /// connections write), else read anew. The caller still checks `serve_until`.
    pub(super) fn refresh_cached(&mut self) {
        // Nothing cached (a new connection, or after an idle check) reads anew, and so does
        // `Err` (the refresher is gone: its last value still counts).
        if self.cached.is_none() || !matches!(self.state.has_changed(), Ok(false)) {
            self.cached = self.state.borrow_and_update().credentials.clone();
        }
    }

    /// The phase once a request is answered at `now`: idle, unless the start of the next head
    /// was read with this request (pipelined), which must then be complete within
    /// `header_timeout` like any other.
    pub(super) fn answered(&self, now: Instant, header_timeout: Duration) -> Phase {
        if self.scan.in_head {
            Phase::Head(now + header_timeout)
        } else {
            Phase::Idle(now)
        }
    }
}

impl Ctx {
    /// A new connection's context: what it was `accepted` with, its first request head due by
    /// `first_deadline`.
    fn new(accepted: Accepted, shared: Shared, first_deadline: Instant) -> Arc<Ctx> {
        let Accepted {
            caller,
            decision,
            cfg,
            watch,
        } = accepted;
        let Shared { state, common } = shared;
        let profile = match decision {
            Decision::Profile(i) => cfg.profiles.profiles.get(i).cloned(),
            _ => None,
        };
        let state = profile.as_ref().map_or(state, |p| p.state.clone());
        audit::read_exe_if_audited(
            &common.audit,
            &common.known_caller,
            &caller,
            decision.is_allowed(),
            &state,
        );
        Arc::new(Ctx {
            common,
            cfg,
            caller,
            conn: Mutex::new(ConnState {
                phase: Phase::Head(first_deadline),
                decision,
                watch,
                state,
                profile,
                cached: None,
                tally: Tally::default(),
                scan: HeadScan::default(),
                begun: false,
                last_answer: false,
            }),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ConnState> {
        // Nothing panics while holding it except a request handler, whose panic is caught
        // while the guard is held outside it (so it is not poisoned either way).
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Ctx {
    /// Reports the issuances still counted when the connection ends.
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
        conn.tally.report_all(&self.common.audit, &self.caller);
    }
}

/// hyper's HTTP/1.1 settings for a connection.
fn http1_builder() -> http1::Builder {
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
    builder
}

/// The rules a caller is judged by under `cfg`, besides the `trusted` uids.
pub(super) fn rules(cfg: &Published, trusted: Trusted) -> Rules<'_> {
    Rules {
        trusted,
        allowed_uids: &cfg.server.allowed_uids,
        allowed_gids: &cfg.server.allowed_gids,
        profiles: &cfg.profiles.specs,
        unmatched: cfg.profiles.unmatched,
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

/// Serves one accepted connection until it closes, times out, or `stop` says so (module
/// docs, "Shutdown").
pub(crate) async fn serve(
    stream: Stream,
    accepted: Accepted,
    shared: Shared,
    stop: watch::Receiver<Stop>,
) {
    let cfg = &accepted.cfg;
    let first_deadline = Instant::now() + cfg.header_timeout;
    let (header_timeout, idle_timeout) = (cfg.header_timeout, cfg.idle_timeout);
    let ctx = Ctx::new(accepted, shared, first_deadline);
    let io = TimedIo::new(stream, Arc::clone(&ctx), header_timeout);
    let service = Service(Arc::clone(&ctx));
    let mut conn = pin!(http1_builder().serve_connection(TokioIo::new(io), service));
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
            Event::Timer => match check_timer(&ctx, Instant::now(), header_timeout, idle_timeout) {
                Ok(at) => timer.as_mut().reset(at),
                Err(()) => return,
            },
            Event::Stop if stopping => {
                tracing::debug!("shutdown grace over; closing the connection");
                return;
            }
            Event::Stop => {
                stopping = true;
                stop.set(stopped(later.clone(), Stop::Now));
                let mut c = ctx.lock();
                if c.begun {
                    drop(c);
                    conn.as_mut().graceful_shutdown();
                } else {
                    // Not hyper's graceful shutdown: it would close the connection at once.
                    c.last_answer = true;
                    tracing::debug!(
                        "shutting down; the connection's first request is still to come"
                    );
                }
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

/// The connection's timer fired at `now`: an idle connection drops its cached generation and
/// reports its old issuances; `Err` when the phase's deadline has passed (close the
/// connection), else when to check again ([`next_check`]).
fn check_timer(
    ctx: &Ctx,
    now: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
) -> Result<Instant, ()> {
    let mut c = ctx.lock();
    if let Phase::Idle(_) = c.phase {
        c.cached = None;
        c.tally.report_old(&ctx.common.audit, &ctx.caller, now);
    }
    let next = next_check(c.phase, now, header_timeout, idle_timeout);
    if next.is_err() {
        tracing::debug!(
            ?header_timeout,
            ?idle_timeout,
            "connection timed out; closing"
        );
    }
    next
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
pub(super) async fn stopped(mut stop: watch::Receiver<Stop>, level: Stop) {
    if stop.wait_for(|stop| *stop >= level).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// [`serve`], logging a panic outside the request handlers (which answer 500 themselves)
/// instead of losing it: connection tasks are detached.
pub(crate) async fn serve_catching_panics(
    stream: Stream,
    accepted: Accepted,
    shared: Shared,
    stop: watch::Receiver<Stop>,
) {
    if CatchUnwind(Box::pin(serve(stream, accepted, shared, stop)))
        .await
        .is_err()
    {
        tracing::error!("a connection task panicked; the connection was closed");
    }
}

#[cfg(test)]
mod tests;
