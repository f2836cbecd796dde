//! The Unix socket server: HTTP/1.1 (hyper 1) for local callers.
//!
//! - [`listener`]: binding the socket safely, or taking one over from systemd.
//! - [`peer`]: the caller's uid, gid, groups and pid from the kernel; [`peer::authorize`].
//! - [`routes`]: routing (a pure function), the endpoints, the stable JSON error codes.
//! - [`audit`]: who received which credential generation; who was denied.
//! - `conn` (private): one connection, its timeouts, a panicking handler answered with 500.
//!
//! The server only reads the refresher's [`State`](crate::credentials::State); it never calls
//! the metadata service.
//!
//! # Limits
//!
//! Per connection: the request head must arrive within `header_timeout` (a new connection's
//! first request too), an idle keep-alive connection is closed after `idle_timeout`, the head
//! must fit in 8 KiB, and a request body is refused (400). At most `max_connections`
//! connections are served at once; the next one gets an immediate `503 TooManyConnections`
//! with `Connection: close`, so clients fail fast instead of queueing.
//!
//! # Shutdown
//!
//! When the `shutdown` future passed to [`run`] completes, the server stops accepting, removes
//! the socket file it created (a socket passed by systemd stays), asks
//! every connection to finish (hyper's graceful shutdown: in-flight requests complete, their
//! responses carry `Connection: close`), waits up to `shutdown_grace`, drops what is left,
//! flushes the audit counts, and returns. [`run`] only borrows the listener; the caller may
//! call [`Listener::remove_socket`] again after an error (it removes only its own inode).

pub mod audit;
pub mod config;
mod conn;
pub mod listener;
pub mod peer;
pub mod routes;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

pub use listener::{BindError, Listener};

use crate::config::ServerConfig;
use crate::credentials::state::StateReceiver;
use crate::heartbeat::Heartbeat;
use crate::metrics::Metrics;
use audit::Audit;
use conn::Shared;

/// The server configuration as [`run`] reads it: the current value of a `watch` channel, so a
/// reload (SIGHUP) can replace it. Each connection uses the value current when it was accepted.
/// A receiver whose sender was dropped keeps its last value (a fixed configuration).
pub type ConfigReceiver = watch::Receiver<Arc<ServerConfig>>;

/// A [`ConfigReceiver`] that always holds `cfg`.
pub fn fixed_config(cfg: ServerConfig) -> ConfigReceiver {
    watch::channel(Arc::new(cfg)).1
}

/// How often pending audit counts are checked for a summary event.
const AUDIT_FLUSH_EVERY: Duration = Duration::from_secs(10);
/// The most excess connections kept open at once to deliver `TooManyConnections` gracefully
/// (see `conn::reject`); beyond it the answer is written without waiting and the connection
/// closed at once (`conn::reject_at_once`).
const MAX_REJECTING: usize = 64;
/// Pause after an `accept(2)` error such as `EMFILE`, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How often the accept loop beats its [`Heartbeat`], even when no connection arrives.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// What [`run_with`] does besides serving: liveness for the systemd watchdog.
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
}

/// Serves `listener` until `shutdown` completes (see the module docs), counting requests,
/// denials and rejected connections in `metrics` (and serving them on `GET /metrics`).
///
/// # Errors
///
/// A non-transient `accept(2)` error (the listener is unusable). Transient errors (`EMFILE`,
/// `ENFILE`, `ENOBUFS`, `ENOMEM`, aborted connections) are logged and retried.
pub async fn run(
    listener: &Listener,
    config: ConfigReceiver,
    state: StateReceiver,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with(
        listener,
        config,
        state,
        metrics,
        Supervision::default(),
        shutdown,
    )
    .await
}

/// [`run`], beating `supervision.heartbeat` from the accept loop.
///
/// # Errors
///
/// As [`run`].
pub async fn run_with(
    listener: &Listener,
    config: ConfigReceiver,
    state: StateReceiver,
    metrics: Metrics,
    supervision: Supervision,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(Stop::No);
    let mut conns = Connections {
        shared: Shared {
            state,
            audit: Arc::new(Mutex::new(Audit::default())),
            metrics,
            panic_on_path: supervision.panic_on_path.clone().map(Arc::from),
        },
        stop: stop_rx,
        active: Arc::new(Gauge::default()),
        rejecting: Arc::new(AtomicUsize::new(0)),
        rejected: 0,
        rejected_logged: None,
    };
    let mut flush = tokio::time::interval(AUDIT_FLUSH_EVERY);
    let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut trimmer = std::pin::pin!(trim_after_bursts(Arc::clone(&conns.active)));
    let wedge = sleep_for(supervision.wedge_after);
    let mut wedge = std::pin::pin!(wedge);
    let mut shutdown = std::pin::pin!(shutdown);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(stream) => conns.start(stream, Arc::clone(&config.borrow())),
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                Err(e) => break Err(e),
            },
            _ = flush.tick() => flush_audit(&conns.shared.audit, false),
            _ = beat.tick() => supervision.heartbeat.beat(),
            () = &mut trimmer => {}
            () = &mut wedge => {
                tracing::warn!("test hook: wedging the accept loop for good");
                std::future::pending::<()>().await;
            }
        }
    };
    // New clients get "no such socket" at once instead of waiting in the backlog of a server
    // that no longer accepts (a socket passed by systemd stays: it queues them for the next
    // instance).
    if let Err(e) = listener.remove_socket() {
        tracing::warn!(error = %e, "cannot remove the socket");
    }
    stop_tx.send_replace(Stop::Graceful);
    let grace = config.borrow().shutdown_grace;
    conns.drain(grace, &stop_tx).await;
    flush_audit(&conns.shared.audit, true);
    result
}

/// Gives freed memory back to the kernel [`TRIM_DELAY`] after the last connection of a burst
/// of at least [`TRIM_AFTER_CONNECTIONS`] closed ([`ConnSlot`]); under steady connection churn,
/// at most once per [`TRIM_DELAY`]. Never completes.
async fn trim_after_bursts(gauge: Arc<Gauge>) {
    loop {
        gauge.trim_wanted.notified().await;
        tokio::time::sleep(TRIM_DELAY).await;
        release_free_memory();
    }
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

/// The server's connections and their limits. Connection tasks are detached (a finished one
/// wakes nothing); [`Gauge`] counts them and tells the drain when the last one is gone.
struct Connections {
    shared: Shared,
    /// How far the server is in stopping.
    stop: watch::Receiver<Stop>,
    /// Connections being served (at most `max_connections`).
    active: Arc<Gauge>,
    /// Connections being answered `TooManyConnections` (at most [`MAX_REJECTING`]).
    rejecting: Arc<AtomicUsize>,
    /// Connections rejected since the last warning.
    rejected: u64,
    /// When the last warning about rejected connections was logged.
    rejected_logged: Option<Instant>,
}

impl Connections {
    /// Serves `stream` under `cfg`, or answers `TooManyConnections` when full.
    fn start(&mut self, stream: tokio::net::UnixStream, cfg: Arc<ServerConfig>) {
        if let Some(slot) = ConnSlot::take(&self.active, cfg.max_connections) {
            let (shared, stop) = (self.shared.clone(), self.stop.clone());
            tokio::spawn(async move {
                let _slot = slot;
                conn::serve_catching_panics(stream, cfg, shared, stop).await;
            });
            return;
        }
        self.rejected += 1;
        self.shared.metrics.connection_rejected();
        let now = Instant::now();
        if self
            .rejected_logged
            .is_none_or(|t| now.duration_since(t) >= audit::SUMMARY_INTERVAL)
        {
            tracing::warn!(
                max_connections = cfg.max_connections,
                rejected = std::mem::take(&mut self.rejected),
                "too many connections; answering 503 TooManyConnections"
            );
            self.rejected_logged = Some(now);
        }
        if let Some(slot) = Slot::take(&self.rejecting, MAX_REJECTING) {
            tokio::spawn(async move {
                let _slot = slot;
                conn::reject(stream).await;
            });
        } else {
            conn::reject_at_once(stream);
        }
    }

    /// Waits up to `grace` for every connection to finish, then tells the rest to close and
    /// waits (briefly) until they have.
    async fn drain(&mut self, grace: Duration, stop: &watch::Sender<Stop>) {
        if tokio::time::timeout(grace, self.active.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.active.count(),
                ?grace,
                "connections still open after the shutdown grace; closing them"
            );
            stop.send_replace(Stop::Now);
            let _ = tokio::time::timeout(CLOSE_WAIT, self.active.all_closed()).await;
        }
    }
}

/// How long the drain waits for connections told to close now.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The open connections: how many, the most at once since memory was last given back, and a
/// signal when the last one closes.
#[derive(Debug, Default)]
struct Gauge {
    active: AtomicUsize,
    high_water: AtomicUsize,
    all_closed: Notify,
    /// Signalled when the last connection of a burst closes (see [`trim_after_bursts`]).
    trim_wanted: Notify,
}

impl Gauge {
    fn count(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Completes once no connection is open.
    async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A counted connection; released on drop. When the last of a burst of at least
/// [`TRIM_AFTER_CONNECTIONS`] closes, the memory their buffers used is given back to the
/// kernel a moment later ([`trim_after_bursts`], [`release_free_memory`]): the allocator keeps
/// freed memory otherwise, and the agent's RSS would stay at its peak. Not at once: with many
/// short connections (a new one per request), the count drops to zero again and again, and
/// trimming each time cost more CPU than the connections themselves.
struct ConnSlot(Arc<Gauge>);

impl ConnSlot {
    fn take(gauge: &Arc<Gauge>, max: usize) -> Option<ConnSlot> {
        let n = gauge
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        gauge.high_water.fetch_max(n + 1, Ordering::Relaxed);
        Some(ConnSlot(Arc::clone(gauge)))
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
            if self.0.high_water.swap(0, Ordering::Relaxed) >= TRIM_AFTER_CONNECTIONS {
                self.0.trim_wanted.notify_one();
            }
        }
    }
}

/// A counted place among at most `max`; released on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(counter)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections open at once after which, when they have all closed, freed memory is given
/// back to the kernel.
const TRIM_AFTER_CONNECTIONS: usize = 64;
/// How long after such a burst freed memory is given back (the most often it is, too).
const TRIM_DELAY: Duration = Duration::from_secs(1);

/// Returns the allocator's free memory to the kernel (glibc `malloc_trim(0)`, which releases
/// free pages in every arena, not only at the top of the heap). A no-op on other C libraries.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists under its locks; it
    // takes no pointer and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

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
