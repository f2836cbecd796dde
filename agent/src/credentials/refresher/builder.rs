//! Configuring and starting a [`Refresher`].

use std::fmt;

use super::{spawn_task, RefreshError, Refresher};
use crate::credentials::RefreshPolicy;
use crate::credentials::{Source, SourceError};
use crate::metrics::Metrics;
use crate::time::SharedTimeSource;

/// Records each refresh attempt's outcome: `Ok(true)` a new generation, `Ok(false)` the same
/// generation again, `Err` why it failed (a metrics sink; see
/// [`SourceError::kind`](crate::credentials::SourceError::kind) for the fixed word to record).
///
/// Called on the refresher's task, once per attempt: keep it short and never block.
pub trait RecordRefresh<E>: Send + Sync + 'static {
    /// Records one attempt's outcome.
    fn record(&self, outcome: Result<bool, &RefreshError<E>>);
}

/// The metrics sink records each outcome by its fixed word: `success`, `unchanged`, or the
/// error's [`kind`](SourceError::kind).
impl<E: SourceError> RecordRefresh<E> for Metrics {
    fn record(&self, outcome: Result<bool, &RefreshError<E>>) {
        self.refresh(outcome.map_err(SourceError::kind));
    }
}

/// Configures the refresher of one [`Source`] ([`Refresher::builder`]); [`Builder::spawn`]
/// starts it.
pub struct Builder<S: Source> {
    source: S,
    policy: RefreshPolicy,
    time: SharedTimeSource,
    jitter: fn() -> f64,
    record: Option<Box<dyn RecordRefresh<S::Error>>>,
}

impl<S: Source> fmt::Debug for Builder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("source", &self.source.label())
            .field("policy", &self.policy)
            .field("records", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: Source> Builder<S> {
    pub(super) fn new(source: S, policy: RefreshPolicy, time: SharedTimeSource) -> Builder<S> {
        Builder {
            source,
            policy,
            time,
            jitter: rand::random::<f64>,
            record: None,
        }
    }

    /// Records every attempt's outcome in `metrics` (by default nothing is recorded).
    pub fn metrics(mut self, metrics: impl RecordRefresh<S::Error>) -> Builder<S> {
        self.record = Some(Box::new(metrics));
        self
    }

    /// Replaces the jitter source (by default `rand::random`): each call returns a number
    /// uniform in `[0, 1)` that [`schedule`](crate::credentials::schedule) spreads refreshes
    /// and backoffs with. Tests pin it.
    pub fn jitter(mut self, jitter: fn() -> f64) -> Builder<S> {
        self.jitter = jitter;
        self
    }

    /// Starts the refresher on the current tokio runtime: it fetches from the source at once
    /// and then keeps the credentials fresh under the policy.
    ///
    /// # Panics
    /// Outside a tokio runtime (like `tokio::spawn`).
    pub fn spawn(self) -> Refresher {
        spawn_task(
            self.source,
            self.policy,
            self.time,
            self.jitter,
            self.record,
        )
    }
}
