//! The background refresher: the one task that fetches credentials from a [`Source`] and the
//! only writer of its [`State`].
//!
//! # Behaviour
//!
//! The same rules hold for every source (the instance role, an assumed role):
//!
//! - It fetches at once on [`Builder::spawn`], then one fetch at a time, forever. Requests never
//!   trigger a fetch: early callers wait on the watch channel
//!   ([`wait_for_credentials`](super::state::wait_for_credentials)), so the cold start is
//!   single-flight by construction (failure report 10).
//! - On success it reads the wall clock once (the injected [`TimeSource`](crate::time::TimeSource))
//!   and turns `Expiration` into a monotonic deadline ([`Issued::new`]); a later step of the
//!   system clock changes nothing. A new generation (changed `AccessKeyId`, `LastUpdated` or
//!   role) is published and the next refresh scheduled by [`schedule::next_refresh`]; the same
//!   generation again is kept as it was and checked again after
//!   [`schedule::recheck_unchanged`]. Credentials already inside the expiry margin on arrival
//!   count as a failure ([`RefreshError::ExpiredOnArrival`]).
//! - On failure it keeps serving the last good credentials (failure report 9), records the
//!   error, and retries after [`schedule::backoff`], waking early at `serve_until` to stop
//!   serving credentials that have reached `Expiration` minus the margin. An error the source
//!   calls [`withdrawn`](SourceError::withdrawn) (for the metadata service: HTTP 404, no RAM role
//!   attached) drops the held credentials at once.
//! - Dropped credentials are only released by the `Arc`; the response body zeroizes when the
//!   last request holding it finishes.
//!
//! # Heartbeat
//!
//! The task records the monotonic time on every wake-up, at least every [`HEARTBEAT_INTERVAL`]
//! while it sleeps ([`Refresher::last_heartbeat`]). A watchdog (systemd `WatchdogSec=`) can
//! check that it is recent; a fetch that hangs beyond the source's own timeouts stops it.

mod builder;
mod error;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::schedule;
use super::state::{Issued, NearExpiry, State, StateReceiver, Unavailable};
use super::{format_utc, Credentials, Fetched, Source, SourceError};
use crate::credentials::RefreshPolicy;
use crate::time::SharedTimeSource;

pub use builder::{Builder, RecordRefresh};
pub use error::RefreshError;

/// A credential lifetime (`Expiration − LastUpdated`) above this is logged as unusual: every
/// documented example has 6 h.
const UNUSUAL_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The longest the refresher sleeps without updating its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// The running refresher task of one source. Dropping it aborts the task; receivers then see
/// the channel closed (`changed()` returns an error) but keep the last state.
///
/// Built with [`Refresher::builder`].
#[derive(Debug)]
pub struct Refresher {
    task: JoinHandle<()>,
    state: StateReceiver,
    heartbeat: watch::Receiver<Instant>,
}

impl Refresher {
    /// A builder for the refresher of `source`, refreshing under `policy` and reading the wall
    /// clock from `time`; [`Builder::spawn`] starts it.
    pub fn builder<S: Source>(
        source: S,
        policy: RefreshPolicy,
        time: SharedTimeSource,
    ) -> Builder<S> {
        Builder::new(source, policy, time)
    }

    /// A new receiver of the published [`State`], for the socket server (one per listener or
    /// per connection; clones are cheap).
    pub fn subscribe(&self) -> StateReceiver {
        self.state.clone()
    }

    /// The monotonic time the task last showed it was alive: at most [`HEARTBEAT_INTERVAL`] ago
    /// unless a fetch is in progress or the task has stopped.
    pub fn last_heartbeat(&self) -> Instant {
        *self.heartbeat.borrow()
    }

    /// A reader of the heartbeat (the time of [`Refresher::last_heartbeat`]), for a watchdog
    /// that outlives this borrow (see [`crate::heartbeat::Watched`]).
    pub fn heartbeat(&self) -> watch::Receiver<Instant> {
        self.heartbeat.clone()
    }

    /// Whether the task has stopped (it only stops by panicking or being aborted).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the task for `source` on the current tokio runtime (see [`Builder::spawn`]).
fn spawn_task<S: Source>(
    source: S,
    cfg: RefreshPolicy,
    time: SharedTimeSource,
    jitter: fn() -> f64,
    record: Option<Box<dyn RecordRefresh<S::Error>>>,
) -> Refresher {
    let (tx, state) = watch::channel(State::default());
    let (heartbeat_tx, heartbeat) = watch::channel(Instant::now());
    let task = Task {
        source,
        cfg,
        time,
        jitter,
        tx,
        heartbeat: heartbeat_tx,
        current: None,
        generation: 0,
        attempt: 0,
        record,
    };
    Refresher {
        task: tokio::spawn(task.run()),
        state,
        heartbeat,
    }
}

/// The task's own bookkeeping; `current` mirrors `State::credentials`.
struct Task<S: Source> {
    source: S,
    cfg: RefreshPolicy,
    time: SharedTimeSource,
    jitter: fn() -> f64,
    tx: watch::Sender<State>,
    heartbeat: watch::Sender<Instant>,
    current: Option<Arc<Issued>>,
    generation: u64,
    /// Consecutive failures so far (the next backoff's attempt number).
    attempt: u32,
    /// Where each attempt's outcome is recorded (metrics), if anywhere.
    record: Option<Box<dyn RecordRefresh<S::Error>>>,
}

impl<S: Source> Task<S> {
    async fn run(mut self) {
        loop {
            self.heartbeat.send_replace(Instant::now());
            let wake = match self.source.fetch().await {
                Ok(fetched) => match self.accept(fetched) {
                    Ok(delay) => Instant::now() + delay,
                    Err(error) => self.fail(error),
                },
                Err(error) => self.fail(RefreshError::Source(error)),
            };
            self.sleep_until(wake).await;
            if self.attempt > 0 {
                self.drop_if_unservable(Instant::now());
            }
        }
    }

    /// Sleeps until `wake`, updating the heartbeat at least every [`HEARTBEAT_INTERVAL`].
    async fn sleep_until(&self, wake: Instant) {
        loop {
            let now = Instant::now();
            self.heartbeat.send_replace(now);
            if now >= wake {
                return;
            }
            tokio::time::sleep_until(wake.min(now + HEARTBEAT_INTERVAL)).await;
        }
    }

    /// Takes a successful fetch: publishes a new generation or notes an unchanged one, and
    /// returns the delay until the next fetch.
    ///
    /// # Errors
    /// [`RefreshError::ExpiredOnArrival`] when the credentials are already inside the margin.
    fn accept(&mut self, fetched: Fetched) -> Result<Duration, RefreshError<S::Error>> {
        let local = self.time.now();
        let now = Instant::now();
        let Fetched {
            role_name,
            credentials,
            service_time,
        } = fetched;
        let service = service_time.unwrap_or(SystemTime::from(credentials.last_updated));
        let skew = (OffsetDateTime::from(local) - OffsetDateTime::from(service)).whole_seconds();
        let wall = lifetime_clock(local, service_time, &credentials);
        let held = self.current.clone();
        match held.filter(|held| same_generation(held, &role_name, &credentials)) {
            Some(held) => self.accept_unchanged(&held, &credentials, wall, now, skew),
            None => self.accept_new(role_name, &credentials, wall, now, skew),
        }
    }

    /// The service returned the generation already held: keep it (and its deadline, computed
    /// at its first arrival) and check again sooner.
    fn accept_unchanged(
        &mut self,
        held: &Issued,
        credentials: &Credentials,
        wall: SystemTime,
        now: Instant,
        skew: i64,
    ) -> Result<Duration, RefreshError<S::Error>> {
        if now >= held.serve_until {
            return Err(expired_on_arrival(credentials));
        }
        let remaining = held.expires_at - now;
        let delay = schedule::recheck_unchanged(remaining, &self.cfg, (self.jitter)());
        tracing::debug!(
            source = %self.source.label(),
            role = held.role_name.as_str(),
            access_key_id = held.access_key_id.as_str(),
            recheck_in_secs = delay.as_secs(),
            "the source returned the same credential generation"
        );
        self.record_success(wall, skew, None);
        Ok(delay)
    }

    /// A new generation (or a new role): publish it and schedule its refresh.
    fn accept_new(
        &mut self,
        role_name: String,
        credentials: &Credentials,
        wall: SystemTime,
        now: Instant,
        skew: i64,
    ) -> Result<Duration, RefreshError<S::Error>> {
        let margin = self.cfg.expiry_margin;
        let generation = self.generation + 1;
        let issued = Issued::new(generation, role_name, credentials, wall, now, margin)
            .ok_or_else(|| expired_on_arrival(credentials))?;
        self.generation = generation;
        let lifetime = Duration::try_from(credentials.expiration - credentials.last_updated)
            .unwrap_or(Duration::ZERO);
        let remaining = issued.expires_at - now;
        let delay = schedule::next_refresh(lifetime, remaining, &self.cfg, (self.jitter)());
        if lifetime > UNUSUAL_LIFETIME {
            tracing::warn!(
                lifetime_secs = lifetime.as_secs(),
                "Expiration is unusually far after LastUpdated (documented: 6 h); \
                 checking again after at most {} s anyway",
                schedule::MAX_REFRESH_DELAY.as_secs()
            );
        }
        tracing::info!(
            source = %self.source.label(),
            generation,
            role = issued.role_name.as_str(),
            access_key_id = issued.access_key_id.as_str(),
            expiration = %format_utc(issued.expiration),
            next_refresh_in_secs = delay.as_secs(),
            "new credential generation"
        );
        let issued = Arc::new(issued);
        self.current = Some(Arc::clone(&issued));
        self.record_success(wall, skew, Some(issued));
        Ok(delay)
    }

    /// Publishes a success; `issued` replaces the held credentials when it is a new generation.
    fn record_success(&mut self, wall: SystemTime, skew: i64, issued: Option<Arc<Issued>>) {
        self.attempt = 0;
        if let Some(record) = &self.record {
            record.record(Ok(issued.is_some()));
        }
        self.tx.send_modify(|s| {
            if let Some(issued) = issued {
                s.credentials = Some(issued);
            }
            s.last_success = Some(wall);
            s.last_error = None;
            s.failing_since = None;
            s.failing_since_instant = None;
            s.clock_skew_secs = Some(skew);
        });
    }

    /// Records a failed fetch and returns when to try again.
    fn fail(&mut self, error: RefreshError<S::Error>) -> Instant {
        let wall = self.time.now();
        let now = Instant::now();
        let message = error.to_string();
        if let Some(record) = &self.record {
            record.record(Err(&error));
        }
        let delay = schedule::backoff(self.attempt, &self.cfg, (self.jitter)());
        self.attempt = self.attempt.saturating_add(1);
        let withdrawn = error.withdrawn();
        if let Some(reason) = &withdrawn {
            self.drop_credentials(reason.clone());
        }
        self.tx.send_modify(|s| {
            let since = *s.failing_since.get_or_insert(wall);
            s.failing_since_instant.get_or_insert(now);
            s.last_error = Some(message.clone());
            if s.credentials.is_none() {
                let failing = self.source.failing(since, message.clone());
                s.reason = reason_after_failure(&s.reason, withdrawn.clone(), &message, failing);
            }
        });
        self.drop_if_unservable(now);
        let mut wake = now + delay;
        if let Some(cur) = &self.current {
            wake = wake.min(cur.serve_until);
        }
        tracing::warn!(
            source = %self.source.label(),
            error = message.as_str(),
            attempt = self.attempt,
            retry_in_ms = u64::try_from((wake - now).as_millis()).unwrap_or(u64::MAX),
            serving = self.current.is_some(),
            "credential refresh failed"
        );
        wake
    }

    /// Drops the held credentials once they reach `serve_until` while refreshing fails.
    fn drop_if_unservable(&mut self, now: Instant) {
        if let Some(expiry) = self
            .current
            .as_ref()
            .filter(|c| now >= c.serve_until)
            .map(|c| NearExpiry::of(c, now))
        {
            let error = self.tx.borrow().last_error.clone();
            tracing::warn!(
                error = error.as_deref().unwrap_or("none"),
                "credentials reached Expiration minus the expiry margin while refresh fails: \
                 no longer served"
            );
            self.drop_credentials(Unavailable::ExpiredRefreshFailing { error, expiry });
        }
    }

    /// Publishes "no credentials" with `reason`; the `Arc<Issued>` is released here.
    fn drop_credentials(&mut self, reason: Unavailable) {
        self.current = None;
        self.tx.send_modify(|s| {
            s.credentials = None;
            s.reason = reason;
        });
    }
}

/// Why nothing is served after a failed fetch whose message is `error`, given the previous
/// reason (no credentials held) and what the error [withdraws](SourceError::withdrawn).
///
/// | error | previous reason | new reason |
/// |---|---|---|
/// | withdraws (`RoleNotAttached`) | any | the error's reason |
/// | other | `ExpiredRefreshFailing` | `ExpiredRefreshFailing` with this error |
/// | other | any other | `failing`: the source's [`Source::failing`] (`MetadataUnreachable { since, error }` for the instance role) |
fn reason_after_failure(
    previous: &Unavailable,
    withdrawn: Option<Unavailable>,
    error: &str,
    failing: Unavailable,
) -> Unavailable {
    match (withdrawn, previous) {
        (Some(reason), _) => reason,
        (None, Unavailable::ExpiredRefreshFailing { expiry, .. }) => {
            Unavailable::ExpiredRefreshFailing {
                error: Some(error.to_owned()),
                expiry: expiry.clone(),
            }
        }
        (None, _) => failing,
    }
}

/// The wall-clock time at which the credentials' remaining lifetime is measured: the local
/// clock, unless the metadata service shows it is behind. The service wrote `Expiration` by its
/// own clock; its `Date` and `LastUpdated` (whole seconds) are times it has certainly reached,
/// so a local clock earlier than either would make the credentials look longer-lived than they
/// are (fault matrix row "local clock an hour behind"). Then the service's time is taken, plus
/// the second its whole-second times may hide. A local clock at or ahead of the service's is
/// kept: ahead only shortens the serving time.
fn lifetime_clock(
    local: SystemTime,
    service_time: Option<SystemTime>,
    credentials: &Credentials,
) -> SystemTime {
    let issued = SystemTime::from(credentials.last_updated);
    let reached = service_time.map_or(issued, |d| d.max(issued));
    if local < reached {
        reached + Duration::from_secs(1)
    } else {
        local
    }
}

/// Same role, `AccessKeyId` and `LastUpdated` as the held generation.
fn same_generation(held: &Issued, role_name: &str, credentials: &Credentials) -> bool {
    held.role_name == role_name
        && held.access_key_id == credentials.access_key_id
        && held.last_updated == credentials.last_updated
}

fn expired_on_arrival<E>(credentials: &Credentials) -> RefreshError<E> {
    RefreshError::ExpiredOnArrival {
        expiration: format_utc(credentials.expiration),
    }
}

#[cfg(test)]
mod tests;
