//! The Unix socket server: HTTP/1.1 (hyper 1) for local callers.
//!
//! - [`Server`]: built with [`Server::new`], run until a shutdown future completes; the
//!   accept loop, the audit flush, the heartbeat and the shutdown drain.
//! - [`listener`]: binding the socket safely, or taking one over from systemd; accepting a
//!   connection with its [`Caller`] (the transport).
//! - `admission` (private): connection limits (`max_connections`, `max_connections_per_uid`),
//!   the immediate `503 TooManyConnections` for connections beyond them, and the immediate
//!   `403 Forbidden` for callers that are not allowed.
//! - `connection` (private): one connection's life: its caller judged again after a reload
//!   ([`policy::authorize`]), its timeouts and shutdown stages.
//! - `timed_io` (private): the connection's socket, seeing request heads start (`HeadScan`).
//! - `service` (private): the hyper service; a panicking handler answered with 500.
//! - `tally` (private): a connection's repeated issuances, reported to the audit in batches.
//! - [`routes`]: routing (a pure function), the endpoints, the stable JSON error codes.
//! - [`audit`]: who received which credential generation; who was denied.
//! - `memory` (private): freed memory given back to the kernel after a burst of connections.
//! - [`metrics_listener`]: the optional loopback TCP listener serving only `GET /metrics`.
//! - [`bridge`]: the optional loopback TCP listener for credentials URIs (`[bridge] listen`),
//!   accepted by the same [`Server`] ([`Server::bridge`]); `stream` (private): [`Stream`], a
//!   connection from either listener.
//!
//! Unit tests sit at the bottom of their file (`#[cfg(test)] mod tests`); the larger suites
//! in a sibling `x/tests.rs` (`audit/tests.rs`), and the tests of the whole server over real
//! sockets in `tests/`.
//!
//! The server only reads the refresher's [`State`](crate::credentials::State); it never calls
//! the metadata service.
//!
//! # Limits
//!
//! Per connection: the request head must arrive within `header_timeout` (a new connection's
//! first request too), an idle keep-alive connection is closed after `idle_timeout`, the head
//! must fit in 8 KiB, and a request body is refused (400). At most `max_connections`
//! connections are served at once, at most `max_connections_per_uid` of them from one uid
//! (root and the agent's own uid are exempt); the next one gets an immediate
//! `503 TooManyConnections` with `Connection: close`, so clients fail fast instead of queueing.
//!
//! # Authorization
//!
//! Each connection's caller is judged when it is accepted
//! ([`policy::authorize`]). A caller that is not allowed takes no
//! connection slot: it is audited (`denied`), counted (`callers_denied_total`), answered
//! `403 Forbidden` with `Connection: close` at once and closed (after a short drain, so a
//! client that sends late still reads the answer). An allowed caller's connection is judged
//! again at its next request after a reload changed the configuration: one atomic load per
//! request finds out; a caller the reload revoked gets `403` and the connection closes.
//!
//! # Shutdown
//!
//! When the `shutdown` future passed to [`Server::run`] completes, the server stops accepting
//! (connections still in the backlog of a socket passed by systemd wait there for the next
//! instance), removes the socket file it created (a socket passed by systemd stays), and asks
//! every connection to finish: every connection it accepted gets its request answered, with
//! `Connection: close`. A request in flight completes; a connection accepted before its first
//! request arrived waits for it (within `header_timeout`), since its client, whose `connect`
//! succeeded, is about to send it; a request waiting for the first credentials is answered
//! `503` ("agent is shutting down") at once; an idle keep-alive connection is closed (see
//! `connection`, "Shutdown"). The server waits up to `shutdown_grace` for them, drops what is
//! left, flushes the audit counts, and returns. [`Server`] only borrows the listener; the
//! caller may call [`Listener::remove_socket`] again after an error (it removes only its own
//! inode).

mod admission;
pub mod audit;
pub mod bridge;
mod chores;
pub mod config;
mod connection;
pub mod listener;
mod memory;
pub mod metrics_listener;
pub mod routes;
mod service;
mod stream;
mod tally;
mod timed_io;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use listener::{Listener, SocketBindError, Stream};

use crate::credentials::state::StateReceiver;
use crate::heartbeat::Heartbeat;
use crate::identity::{self, Caller};
use crate::metrics::Metrics;
use crate::policy::{self, Decision, Trusted};
use crate::profiles;
use crate::server::config::Config as ServerConfig;
use admission::Admission;
use audit::emit_events;
use audit::Audit;
use chores::Chores;
use connection::{Accepted, Common, ConfigVersions, ConfigWatch, Shared};

/// What a reload publishes to the server: its configuration and the profiles in force,
/// together, so that a connection judged again sees both from the same reload. Dereferences to
/// the server configuration.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[profiles]` and `[[profile]]`, with each profile's credentials.
    pub profiles: Arc<profiles::Set>,
}

impl std::ops::Deref for Published {
    type Target = ServerConfig;
    fn deref(&self) -> &ServerConfig {
        &self.server
    }
}

impl From<ServerConfig> for Published {
    /// `server` with no profile.
    fn from(server: ServerConfig) -> Published {
        Published {
            server,
            profiles: Arc::default(),
        }
    }
}

/// The configuration as [`Server::run`] reads it: the current value of a `watch` channel, so a
/// reload (SIGHUP) can replace it. Each connection uses the server configuration current when
/// it was accepted, and is judged again (profiles included) after each publication.
/// A receiver whose sender was dropped keeps its last value (a fixed configuration).
pub type ConfigReceiver = watch::Receiver<Arc<Published>>;

/// A [`ConfigReceiver`] that always holds `cfg`, with no profile.
pub fn fixed_config(cfg: ServerConfig) -> ConfigReceiver {
    watch::channel(Arc::new(Published::from(cfg))).1
}

/// How often pending audit counts are checked for a summary event.
const AUDIT_FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Pause after an `accept(2)` error such as `EMFILE`, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// File descriptors an open connection may hold: its socket (lent to the caller, through which
/// its groups and process are read when needed) and the caller's pidfd once asked for
/// ([`crate::identity`]).
pub const FDS_PER_CONNECTION: usize = 2;

/// How often the accept loop beats its [`Heartbeat`], even when no connection arrives.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// What the server does besides serving: liveness for the systemd watchdog, and test hooks.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    /// Beaten by the accept loop at least every [`HEARTBEAT_INTERVAL`], idle or not; it stops
    /// beating only when the loop is stuck (or has returned).
    pub heartbeat: Heartbeat,
    /// Test-only hook: after this long, the accept loop stops for good (it neither accepts nor
    /// beats nor notices shutdown), so tests can check that the watchdog pings stop. Only the
    /// end-to-end test binary sets it (`e2e-agent`, from an environment variable); the
    /// `ecs-credential-agent` binary has no way to set it.
    #[doc(hidden)]
    pub wedge_after: Option<Duration>,
    /// Test-only hook: a request for this path panics inside its handler, with the held
    /// [`State`](crate::credentials::State) (`Debug`) in the panic message, so tests can check
    /// that a panic caught at the task boundary answers 500 and logs no secret. Set only by
    /// `e2e-agent`, like `wedge_after`.
    #[doc(hidden)]
    pub panic_on_path: Option<String>,
    /// Test-only hook: root and the agent's own uid are judged by `allowed_uids` and
    /// `allowed_gids` like any other caller instead of always allowed, so that tests, which run
    /// as root or as the agent's uid, can be denied. Set only by `e2e-agent` and unit tests.
    #[doc(hidden)]
    pub judge_every_uid: bool,
}

/// The Unix socket server, built then run:
///
/// ```no_run
/// # async fn example(
/// #     listener: ecs_credential_agent::server::Listener,
/// #     state: ecs_credential_agent::credentials::state::StateReceiver,
/// # ) -> std::io::Result<()> {
/// use ecs_credential_agent::server::config::Config as ServerConfig;
/// use ecs_credential_agent::metrics::Metrics;
/// use ecs_credential_agent::server::{fixed_config, Server, Supervision};
///
/// let config = fixed_config(ServerConfig::default());
/// Server::new(&listener, config, state, Metrics::new())
///     .supervision(Supervision::default())
///     .run(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct Server<'a> {
    listener: &'a Listener,
    bridge: Option<&'a bridge::BridgeListener>,
    config: ConfigReceiver,
    state: StateReceiver,
    metrics: Metrics,
    supervision: Supervision,
}

impl<'a> Server<'a> {
    /// A server on `listener` (borrowed: the caller may [`Listener::remove_socket`] again
    /// after [`Server::run`] returns), answering from `state` under `config`, counting
    /// requests, denials and rejected connections in `metrics` (and serving them on
    /// `GET /metrics`). No supervision until [`Server::supervision`].
    pub fn new(
        listener: &'a Listener,
        config: ConfigReceiver,
        state: StateReceiver,
        metrics: Metrics,
    ) -> Server<'a> {
        Server {
            listener,
            bridge: None,
            config,
            state,
            metrics,
            supervision: Supervision::default(),
        }
    }

    /// Also accepts on the loopback TCP listener `bridge` ([`mod@bridge`]): same
    /// routes, limits, audit and drain as the socket.
    pub fn bridge(mut self, bridge: &'a bridge::BridgeListener) -> Server<'a> {
        self.bridge = Some(bridge);
        self
    }

    /// Beats `supervision.heartbeat` from the accept loop and arms its test hooks.
    pub fn supervision(mut self, supervision: Supervision) -> Server<'a> {
        self.supervision = supervision;
        self
    }

    /// Serves until `shutdown` completes (see the module docs).
    ///
    /// # Errors
    ///
    /// A non-transient `accept(2)` error (the listener is unusable). Transient errors
    /// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, aborted connections) are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server {
            listener,
            bridge,
            config,
            state,
            metrics,
            supervision,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(Stop::No);
        let trusted = if supervision.judge_every_uid {
            Trusted::nobody()
        } else {
            Trusted::this_process()
        };
        let mut conns = Connections {
            shared: Shared {
                state: state.clone(),
                common: Arc::new(Common {
                    instance: state,
                    audit: Arc::new(Mutex::new(Audit::default())),
                    metrics,
                    panic_on_path: supervision.panic_on_path.clone().map(Arc::from),
                    trusted,
                    config: ConfigVersions::new(config.clone()),
                    bridge_port: bridge.map(|b| b.local_addr().port()),
                    known_caller: Default::default(),
                    stop: stop_rx,
                }),
            },
            admission: Admission::default(),
        };
        let mut flush = tokio::time::interval(AUDIT_FLUSH_EVERY);
        let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
        let mut trimmer = pin!(memory::trim_after_bursts(Arc::clone(
            conns.admission.gauge()
        )));
        let mut wedge = pin!(sleep_for(supervision.wedge_after));
        // Tells connections of each reload (polled as a chore: a publication wakes the loop).
        let common = Arc::clone(&conns.shared.common);
        let mut follow_config = pin!(async {
            common.config.follow().await;
            // The sender is gone: nothing to follow (and a finished future is not polled).
            std::future::pending::<()>().await
        });
        let mut shutdown = pin!(shutdown);
        // The listener is polled at every wake-up; the rest only when one of them woke the
        // loop ([`Chores`]).
        let mut chores = Chores::new();
        let result = loop {
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                    return Poll::Ready(Event::Accepted(accepted));
                }
                if let Some(Poll::Ready(bridged)) = bridge.map(|b| b.poll_accept(cx)) {
                    return Poll::Ready(Event::Bridged(bridged));
                }
                let Some(waker) = chores.waker(cx.waker()) else {
                    return Poll::Pending;
                };
                let mut cx = Context::from_waker(&waker);
                if shutdown.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::Shutdown);
                }
                if flush.poll_tick(&mut cx).is_ready() {
                    return Poll::Ready(Event::Flush);
                }
                if beat.poll_tick(&mut cx).is_ready() {
                    return Poll::Ready(Event::Beat);
                }
                let _ = trimmer.as_mut().poll(&mut cx);
                let _ = follow_config.as_mut().poll(&mut cx);
                if wedge.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::Wedge);
                }
                Poll::Pending
            })
            .await;
            if !matches!(event, Event::Accepted(_) | Event::Bridged(_)) {
                chores.mark_due();
            }
            match event {
                Event::Shutdown => break Ok(()),
                Event::Accepted(Ok((stream, caller))) => {
                    conns.start(stream, caller);
                }
                Event::Bridged(Ok((stream, Ok(caller)))) => conns.start(stream, caller),
                Event::Bridged(Ok((stream, Err(why)))) => conns.unidentified(stream, &why),
                Event::Accepted(Err(e)) | Event::Bridged(Err(e)) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                Event::Accepted(Err(e)) | Event::Bridged(Err(e)) => break Err(e),
                Event::Flush => flush_audit(&conns.shared.common.audit, false),
                Event::Beat => supervision.heartbeat.beat(),
                Event::Wedge => {
                    tracing::warn!("test hook: wedging the accept loop for good");
                    std::future::pending::<()>().await;
                }
            }
        };
        // New clients get "no such socket" at once instead of waiting in the backlog of a
        // server that no longer accepts (a socket passed by systemd stays: it queues them for
        // the next instance).
        if let Err(e) = listener.remove_socket() {
            tracing::warn!(error = %e, "cannot remove the socket");
        }
        stop_tx.send_replace(Stop::Graceful);
        let grace = config.borrow().shutdown_grace;
        conns.drain(grace, &stop_tx).await;
        flush_audit(&conns.shared.common.audit, true);
        result
    }
}

/// What woke the accept loop.
// Made once per wake-up and matched at once: boxing the accepted connection would allocate
// per connection to save moving a few hundred bytes.
#[allow(clippy::large_enum_variant)]
enum Event {
    Accepted(io::Result<(Stream, Caller)>),
    Bridged(io::Result<bridge::Bridged>),
    Shutdown,
    Flush,
    Beat,
    Wedge,
}

/// Sleeps for `d`, or forever when `None`.
async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// How far the server is in stopping; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stop {
    /// Serving.
    No,
    /// Finish in-flight requests, then close.
    Graceful,
    /// The shutdown grace is over: close now.
    Now,
}

/// The server's connections. Connection tasks are detached (a finished one wakes nothing);
/// the [`Admission`]'s gauge counts them and tells the drain when the last one is gone.
struct Connections {
    shared: Shared,
    /// The connection limits.
    admission: Admission,
}

impl Connections {
    /// Serves `stream` from `caller` under the configuration in force; or answers `Forbidden`
    /// when the caller is not allowed, `TooManyConnections` when full.
    fn start(&mut self, stream: Stream, caller: Caller) {
        let (cfg, watch) = ConfigWatch::current(&self.shared.common.config);
        let common = &self.shared.common;
        let decision = policy::authorize(&caller, connection::rules(&cfg, common.trusted));
        if !decision.is_allowed() {
            self.deny(stream, &caller, decision);
            return;
        }
        let exempt = common.trusted.contains(caller.uid);
        let slot = match self.admission.admit(&cfg, caller.uid, exempt) {
            Ok(slot) => slot,
            Err(why) => {
                self.admission.reject(stream, why, &cfg, &common.metrics);
                return;
            }
        };
        let (shared, stop) = (self.shared.clone(), common.stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let accepted = Accepted {
                caller,
                decision,
                cfg,
                watch,
            };
            connection::serve_catching_panics(stream, accepted, shared, stop).await;
        });
    }

    /// A caller that is not allowed: audited (rate-limited by the [`Audit`]), counted, and
    /// answered `403 Forbidden` outside the slots of allowed callers.
    fn deny(&mut self, stream: Stream, caller: &Caller, decision: Decision) {
        let common = &self.shared.common;
        common.metrics.caller_denied();
        let now = Instant::now();
        emit_events(
            common
                .audit
                .lock()
                .map(|mut a| a.record_denial(caller, now)),
        );
        self.admission
            .deny(stream, routes::refusal(caller, decision));
    }

    /// A loopback TCP connection whose caller could not be identified (`why`): counted,
    /// logged (at most once per summary interval) and answered `403` like a denied caller,
    /// never taken for anyone.
    fn unidentified(&mut self, stream: Stream, why: &identity::TcpLookupError) {
        self.shared.common.metrics.bridge_caller_unidentified();
        self.admission.unidentified(stream, why);
    }

    /// Waits up to `grace` for every connection to finish, then tells the rest to close and
    /// waits (briefly) until they have.
    async fn drain(&mut self, grace: Duration, stop: &watch::Sender<Stop>) {
        let open = self.admission.gauge();
        if tokio::time::timeout(grace, open.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                left = open.count(),
                ?grace,
                "connections still open after the shutdown grace; closing them"
            );
            stop.send_replace(Stop::Now);
            let _ = tokio::time::timeout(CLOSE_WAIT, open.all_closed()).await;
        }
    }
}

/// How long the drain waits for connections told to close now.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
        )
    )
}

fn flush_audit(audit: &Mutex<Audit>, all: bool) {
    let now = Instant::now();
    let events = match audit.lock() {
        Ok(mut a) if all => a.flush_all(now),
        Ok(mut a) => a.flush(now),
        Err(_) => {
            tracing::error!(target: "audit", "audit state poisoned by a panic; counts lost");
            return;
        }
    };
    events.iter().for_each(audit::AuditEvent::emit);
}
