//! Test support: a wall clock that follows tokio's paused clock, a scripted fake [`Source`]
//! with its own error type, and credential builders.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::super::{RecordRefresh, RefreshError, Refresher};
use crate::credentials::state::{Issued, StateReceiver, Unavailable};
use crate::credentials::RefreshPolicy;
use crate::credentials::{Credentials, Fetched, Source, SourceError};
use crate::time::TimeSource;

pub(super) const SEC: Duration = Duration::from_secs(1);
pub(super) const MIN: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const ROLE: &str = "test-role";
/// When a 6 h generation is refreshed with jitter pinned at 0.5: 4 h, 5 % earlier.
pub(super) const REFRESH_AT_HALF_JITTER: Duration = Duration::from_secs(4 * 3600 * 95 / 100);

/// The wall clock: a fixed base plus the time elapsed on tokio's (paused) clock, plus a skew
/// the test can step. The metadata service's own clock is the same without the skew.
#[derive(Debug)]
pub(super) struct TestClock {
    pub(super) base_wall: SystemTime,
    base: Instant,
    skew_secs: AtomicI64,
}

impl TestClock {
    pub(super) fn new() -> Arc<TestClock> {
        Arc::new(TestClock {
            base_wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            base: Instant::now(),
            skew_secs: AtomicI64::new(0),
        })
    }

    /// The metadata service's (correct) clock.
    pub(super) fn service_now(&self) -> SystemTime {
        self.base_wall + (Instant::now() - self.base)
    }

    pub(super) fn set_skew(&self, secs: i64) {
        self.skew_secs.store(secs, Ordering::SeqCst);
    }
}

impl TimeSource for TestClock {
    fn now(&self) -> SystemTime {
        let skew = self.skew_secs.load(Ordering::SeqCst);
        let by = Duration::from_secs(skew.unsigned_abs());
        if skew >= 0 {
            self.service_now() + by
        } else {
            self.service_now() - by
        }
    }
}

/// Credentials issued at `last_updated` (truncated to whole seconds, as the service sends).
pub(super) fn creds(id: &str, last_updated: SystemTime, lifetime: Duration) -> Credentials {
    let last_updated = OffsetDateTime::from(last_updated)
        .replace_nanosecond(0)
        .expect("zero nanoseconds");
    Credentials {
        access_key_id: id.to_owned(),
        access_key_secret: SecretString::from(format!("secret-of-{id}")),
        security_token: SecretString::from(format!("token-of-{id}")),
        expiration: last_updated + lifetime,
        last_updated,
    }
}

/// The fake source's errors: the two behaviours the refresher distinguishes.
#[derive(Debug, thiserror::Error)]
pub(super) enum FakeError {
    /// A failure that may clear by itself.
    #[error("cannot connect to the metadata service at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The upstream says the role is gone: withdraws the held credentials.
    #[error("no RAM role attached to this instance (or wrong role name)")]
    RoleNotAttached { role_name: Option<String> },
}

impl SourceError for FakeError {
    fn kind(&self) -> &'static str {
        match self {
            FakeError::Unreachable { .. } => "unreachable",
            FakeError::RoleNotAttached { .. } => "role_not_attached",
        }
    }

    fn withdrawn(&self) -> Option<Unavailable> {
        match self {
            FakeError::RoleNotAttached { role_name } => Some(Unavailable::RoleNotAttached {
                role_name: role_name.clone(),
            }),
            FakeError::Unreachable { .. } => None,
        }
    }
}

pub(super) fn fetched(credentials: Credentials) -> Result<Fetched, FakeError> {
    Ok(Fetched {
        role_name: ROLE.to_owned(),
        credentials,
        service_time: None,
    })
}

pub(super) fn unreachable() -> FakeError {
    FakeError::Unreachable {
        endpoint: "http://127.0.0.1:9".to_owned(),
        reason: "connection refused".to_owned(),
    }
}

/// The service's answer to fetch number `n` (from 0) at service wall time `wall`.
pub(super) type Respond = Box<dyn FnMut(usize, SystemTime) -> Result<Fetched, FakeError> + Send>;

struct Inner {
    clock: Arc<TestClock>,
    respond: Mutex<Respond>,
    calls: Mutex<Vec<Instant>>,
    gate: Option<Arc<Notify>>,
}

/// A scripted [`Source`]: counts calls (with their monotonic times) and, with a
/// gate, waits for a `Notify` before answering (a slow fetch).
#[derive(Clone)]
pub(super) struct Scripted(Arc<Inner>);

impl Scripted {
    pub(super) fn new(clock: &Arc<TestClock>, respond: Respond) -> Scripted {
        Scripted::gated(clock, respond, None)
    }

    pub(super) fn gated(
        clock: &Arc<TestClock>,
        respond: Respond,
        gate: Option<Arc<Notify>>,
    ) -> Scripted {
        Scripted(Arc::new(Inner {
            clock: Arc::clone(clock),
            respond: Mutex::new(respond),
            calls: Mutex::new(Vec::new()),
            gate,
        }))
    }

    pub(super) fn calls(&self) -> usize {
        self.0.calls.lock().unwrap().len()
    }

    /// Call times relative to `t0`.
    pub(super) fn call_offsets(&self, t0: Instant) -> Vec<Duration> {
        self.0
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| *t - t0)
            .collect()
    }
}

impl Source for Scripted {
    type Error = FakeError;

    async fn fetch(&self) -> Result<Fetched, FakeError> {
        let n = {
            let mut calls = self.0.calls.lock().unwrap();
            calls.push(Instant::now());
            calls.len() - 1
        };
        if let Some(gate) = &self.0.gate {
            gate.notified().await;
        }
        let wall = self.0.clock.service_now();
        (self.0.respond.lock().unwrap())(n, wall)
    }

    fn label(&self) -> &str {
        "scripted"
    }
}

/// A [`RecordRefresh`] that keeps every outcome as its word (`success`, `unchanged` or the
/// error's kind), in order.
#[derive(Clone, Default)]
pub(super) struct Outcomes(Arc<Mutex<Vec<&'static str>>>);

impl Outcomes {
    pub(super) fn taken(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

impl RecordRefresh<FakeError> for Outcomes {
    fn record(&self, outcome: Result<bool, &RefreshError<FakeError>>) {
        let word = match outcome {
            Ok(true) => "success",
            Ok(false) => "unchanged",
            Err(e) => e.kind(),
        };
        self.0.lock().unwrap().push(word);
    }
}

/// A service that issues a new generation on every fetch.
pub(super) fn rotating(lifetime: Duration) -> Respond {
    Box::new(move |n, wall| fetched(creds(&format!("STS.gen{n}"), wall, lifetime)))
}

/// A service that issues generation `k` at `k × period` after `origin` (service wall time),
/// each valid for `lifetime`: the same generation until the next one is due.
pub(super) fn periodic(origin: SystemTime, period: Duration, lifetime: Duration) -> Respond {
    Box::new(move |_, wall| {
        let k = (wall.duration_since(origin).unwrap().as_secs() / period.as_secs()) as u32;
        fetched(creds(&format!("STS.gen{k}"), origin + period * k, lifetime))
    })
}

pub(super) fn start(clock: &Arc<TestClock>, script: &Scripted, jitter: fn() -> f64) -> Refresher {
    start_with(clock, script, RefreshPolicy::default(), jitter)
}

pub(super) fn start_with(
    clock: &Arc<TestClock>,
    script: &Scripted,
    cfg: RefreshPolicy,
    jitter: fn() -> f64,
) -> Refresher {
    Refresher::builder(script.clone(), cfg, Arc::clone(clock) as _)
        .jitter(jitter)
        .spawn()
}

/// The held credentials (servable or not), cloned out of the receiver.
pub(super) fn held(rx: &StateReceiver) -> Option<Arc<Issued>> {
    rx.borrow().credentials.clone()
}

pub(super) fn generation(rx: &StateReceiver) -> u64 {
    held(rx).map_or(0, |c| c.generation)
}

pub(super) async fn at(t0: Instant, offset: Duration) {
    tokio::time::sleep_until(t0 + offset).await;
}

pub(super) fn assert_near(got: Duration, want: Duration) {
    let diff = got.abs_diff(want);
    assert!(
        diff <= Duration::from_millis(2),
        "got {got:?}, want {want:?}"
    );
}
