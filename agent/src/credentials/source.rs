//! What the refresher needs from an upstream: a [`Source`] of credentials, its errors
//! ([`SourceError`]) and the result of one fetch ([`Fetched`]).
//!
//! A source knows one upstream (HTTP, signing, parsing) and nothing of schedules or callers; the
//! [refresher](super::refresher) owns time for it. The instance role from the metadata service
//! is one source; a role assumed through STS with the instance role's credentials is another,
//! driven by the same refresher.

use std::future::Future;
use std::time::SystemTime;

use super::state::Unavailable;
use super::Credentials;

/// The result of one successful fetch: the RAM role and its current credentials.
#[derive(Debug)]
pub struct Fetched {
    /// The RAM role name the credentials belong to (configured or discovered).
    pub role_name: String,
    /// The validated credentials.
    pub credentials: Credentials,
    /// The upstream's clock when it answered (for the metadata service, its `Date` header,
    /// whole seconds), if it sent one: the clock `Expiration` was written by, so the refresher
    /// can tell when the local clock is behind.
    pub service_time: Option<SystemTime>,
}

/// Fetches one RAM role's credentials from one upstream. Implemented by the metadata client
/// (the instance role) and by in-memory fakes in tests of the refresher.
pub trait Source: Send + Sync + 'static {
    /// What a failed fetch reports.
    type Error: SourceError;

    /// One refresh attempt, including the retries the source itself allows within it (for the
    /// metadata client, its retry table).
    ///
    /// # Errors
    /// A [`Self::Error`] naming what failed; the refresher backs off and tries again.
    fn fetch(&self) -> impl Future<Output = Result<Fetched, Self::Error>> + Send;

    /// A short name for this source in log lines, such as `instance role` or the configured RAM
    /// role name. Not secret; fixed for the source's lifetime.
    fn label(&self) -> &str;

    /// What the refresher publishes while it holds no credentials and fetches have failed since
    /// `since`, the last with `error` (in words): by default
    /// [`Unavailable::MetadataUnreachable`]; a role assumed through STS says
    /// [`Unavailable::AssumeRoleFailing`].
    fn failing(&self, since: SystemTime, error: String) -> Unavailable {
        Unavailable::MetadataUnreachable { since, error }
    }
}

/// An error of a [`Source`]. `Display` is one short line for logs and for callers' 503
/// messages; it never contains a secret.
pub trait SourceError: std::error::Error + Send + Sync + 'static {
    /// A fixed word naming the failure, for the `result` label of the refresh metric and for
    /// health output (`token_refused`, `unreachable`, …). A bounded set per source: never built
    /// from a value the upstream sent.
    fn kind(&self) -> &'static str;

    /// `Some(reason)` when the upstream says the role's credentials are gone (for the metadata
    /// service: HTTP 404, no RAM role attached): the refresher then drops the credentials it
    /// holds at once and publishes `reason`, instead of serving them until the expiry margin.
    /// `None` (the default) for every error that may clear by itself.
    fn withdrawn(&self) -> Option<Unavailable> {
        None
    }
}

/// A shared source is a source: the daemon hands the instance role's refresher an
/// `Arc<metadata::Client>` and keeps a clone for the STS client's instance facts, so both use
/// one metadata token cache.
impl<S: Source> Source for std::sync::Arc<S> {
    type Error = S::Error;

    fn fetch(&self) -> impl Future<Output = Result<Fetched, Self::Error>> + Send {
        S::fetch(self)
    }

    fn label(&self) -> &str {
        S::label(self)
    }

    fn failing(&self, since: SystemTime, error: String) -> Unavailable {
        S::failing(self, since, error)
    }
}
