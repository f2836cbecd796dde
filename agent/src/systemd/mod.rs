//! Behaviour under systemd: readiness, status, watchdog (`sd_notify(3)` through the
//! `sd-notify` crate) and socket activation ([`activation`]).
//!
//! # Messages (`Type=notify`)
//!
//! | when | message |
//! |---|---|
//! | the socket listens and the first credentials are held | `READY=1` with `STATUS=` |
//! | no credentials `[systemd] ready_timeout_secs` after start | `READY=1` anyway, so boot is never blocked (health answers 503 meanwhile) |
//! | the state in words changes (role, minutes to `Expiration`, last error) | `STATUS=…` ([`status::describe`]), checked on every refresher update and every [`STATUS_EVERY`] |
//! | every half of `WATCHDOG_USEC`, after `READY=1`, while the refresher and the accept loop both beat recently | `WATCHDOG=1` |
//! | shutdown begins | `STOPPING=1` with `STATUS=stopping…`; nothing after it |
//!
//! Without `NOTIFY_SOCKET` in the environment nothing is sent and no task runs. The protocol
//! (a datagram of `KEY=VALUE` lines to the `AF_UNIX` socket named by `NOTIFY_SOCKET`; the
//! watchdog period in `WATCHDOG_USEC`, honoured only when `WATCHDOG_PID` is unset or ours) is
//! systemd's `sd_notify(3)` and `sd_watchdog_enabled(3)`.
//!
//! # Watchdog
//!
//! Each loop beats a [`crate::heartbeat`]: the accept loop every
//! [`server::HEARTBEAT_INTERVAL`](crate::server::HEARTBEAT_INTERVAL), the refresher at every
//! wake-up and at least every
//! [`refresher::HEARTBEAT_INTERVAL`](crate::credentials::refresher::HEARTBEAT_INTERVAL). A loop
//! counts as alive while its last beat is within its own `max_gap` (the daemon sets them); when
//! either is not, no `WATCHDOG=1` is sent, a warning names the stuck loop, and systemd restarts
//! the agent after `WatchdogSec=`.

pub mod activation;
pub mod config;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::credentials::state::StateReceiver;
use crate::heartbeat::Watched;

/// How often the status text is recomputed between refresher updates (it changes at most once a
/// minute while credentials are served).
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Where notifications go: systemd ([`SdNotify`]) or, in tests, a recorder.
pub trait Sink: Send + Sync + 'static {
    /// Sends one message made of `states` (one datagram). Failures are the sink's to log.
    fn send(&self, states: &[NotifyState<'_>]);
}

/// Sends to `NOTIFY_SOCKET` with `sd_notify::notify`; a failure is logged at debug level (the
/// manager may have gone away during shutdown).
#[derive(Debug, Clone, Copy)]
pub struct SdNotify;

impl Sink for SdNotify {
    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
}

/// What the notifier watches and when it gives up waiting for credentials.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `[systemd] ready_timeout_secs`: `READY=1` this long after start even without credentials.
    pub ready_timeout: Duration,
    /// `WATCHDOG_USEC` (`None`: no watchdog); pings go out every half of it.
    pub watchdog: Option<Duration>,
    /// The loops that must all be alive for a ping.
    pub watched: Vec<Watched>,
}

/// The running notifier task. Dropping it stops the task without `STOPPING=1`.
pub struct Notifier {
    sink: Option<Arc<dyn Sink>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("enabled", &self.sink.is_some())
            .finish()
    }
}

impl Notifier {
    /// Starts notifying systemd when `NOTIFY_SOCKET` is set, with the watchdog period from
    /// `WATCHDOG_USEC`/`WATCHDOG_PID`; otherwise returns a notifier that does nothing.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn from_env(state: StateReceiver, ready_timeout: Duration, watched: Vec<Watched>) -> Self {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Notifier {
                sink: None,
                task: None,
            };
        }
        let watchdog = sd_notify::watchdog_enabled();
        tracing::debug!(?watchdog, ?ready_timeout, "notifying systemd");
        let cfg = NotifyConfig {
            ready_timeout,
            watchdog,
            watched,
        };
        Notifier::spawn(Arc::new(SdNotify), state, cfg)
    }

    /// Starts the notifier task sending to `sink` (see the module docs for what it sends).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(sink: Arc<dyn Sink>, state: StateReceiver, cfg: NotifyConfig) -> Self {
        let task = tokio::spawn(run(Arc::clone(&sink), state, cfg));
        Notifier {
            sink: Some(sink),
            task: Some(task),
        }
    }

    /// Stops the task and sends `STOPPING=1` (once; later calls do nothing).
    pub fn stopping(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(sink) = self.sink.take() {
            sink.send(&[
                NotifyState::Stopping,
                NotifyState::Status("stopping: finishing in-flight requests"),
            ]);
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The notifier loop: READY once, STATUS on change, WATCHDOG while alive.
async fn run(sink: Arc<dyn Sink>, mut state: StateReceiver, cfg: NotifyConfig) {
    let ready_at = Instant::now() + cfg.ready_timeout;
    let mut ready = false;
    let mut last_status = String::new();
    let mut state_open = true;
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ping_every = cfg.watchdog.map(|w| (w / 2).max(Duration::from_millis(1)));
    let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        tokio::select! {
            changed = state.changed(), if state_open => state_open = changed.is_ok(),
            () = tokio::time::sleep_until(ready_at), if !ready => {}
            _ = status_tick.tick() => {}
            _ = ping.tick(), if ready && ping_every.is_some() => {
                stalled = watchdog_ping(&*sink, &cfg.watched, stalled);
                continue;
            }
        }
        let now = Instant::now();
        let (text, held) = {
            let s = state.borrow_and_update();
            (status::describe(&s, now), s.credentials_at(now).is_ok())
        };
        if !ready && (held || now >= ready_at) {
            ready = true;
            if !held {
                tracing::warn!(
                    ready_timeout = ?cfg.ready_timeout,
                    status = %text,
                    "no credentials yet; telling systemd the agent is ready anyway \
                     (health answers 503 until credentials arrive)"
                );
            }
            sink.send(&[NotifyState::Ready, NotifyState::Status(&text)]);
            last_status = text;
        } else if ready && text != last_status {
            sink.send(&[NotifyState::Status(&text)]);
            last_status = text;
        }
    }
}

/// Sends `WATCHDOG=1` when every watched loop is alive; otherwise warns once per stall about
/// the stuck loops. Returns whether a stall is in progress.
fn watchdog_ping(sink: &dyn Sink, watched: &[Watched], stalled: bool) -> bool {
    let now = Instant::now();
    let stuck: Vec<&str> = watched
        .iter()
        .filter(|w| !w.is_alive(now))
        .map(|w| w.name)
        .collect();
    if stuck.is_empty() {
        if stalled {
            tracing::info!("all loops beat again; watchdog pings resume");
        }
        sink.send(&[NotifyState::Watchdog]);
        return false;
    }
    if !stalled {
        tracing::error!(
            stuck = %stuck.join(", "),
            "a loop stopped beating; withholding watchdog pings so systemd restarts the agent"
        );
    }
    true
}

#[cfg(test)]
mod tests;
