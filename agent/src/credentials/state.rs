//! The snapshot the refresher publishes and the socket server reads.
//!
//! One writer (the refresher) replaces the whole [`State`] through a `tokio::sync::watch`
//! channel; readers borrow it for a moment and never wait on the metadata service. Whether the
//! held credentials may still be served is decided at read time on the monotonic clock by
//! [`State::credentials_at`], so a stalled refresher can never make the server hand out expired
//! credentials.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::Credentials;

/// One credential generation ready to serve.
///
/// `Debug` shows the length of [`body`](Issued::body), never its content (it holds the secrets).
pub struct Issued {
    /// Counts generations from 1 in this process; changes whenever `AccessKeyId` or
    /// `LastUpdated` changes.
    pub generation: u64,
    /// The RAM role the credentials belong to.
    pub role_name: String,
    /// `AccessKeyId` (not secret).
    pub access_key_id: String,
    /// `Expiration` as the metadata service sent it (UTC, whole seconds).
    pub expiration: OffsetDateTime,
    /// `LastUpdated` as the metadata service sent it.
    pub last_updated: OffsetDateTime,
    /// `Expiration` as a monotonic deadline, computed once from the wall clock at arrival.
    pub expires_at: Instant,
    /// The last instant at which these credentials may be served: `expires_at` minus the
    /// expiry margin (`[credentials] expiry_margin_secs`).
    pub serve_until: Instant,
    /// Wall-clock time when the credentials arrived (read once, from the injected clock).
    pub received_at: SystemTime,
    /// The serialised `GET /v1/credentials` body (see [`Credentials::to_response_body`]).
    /// Cloning is a reference-count increment; the memory is zeroized when the last clone drops.
    pub body: Bytes,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("generation", &self.generation)
            .field("role_name", &self.role_name)
            .field("access_key_id", &self.access_key_id)
            .field(
                "expiration",
                &crate::credentials::format_utc(self.expiration),
            )
            .field(
                "last_updated",
                &crate::credentials::format_utc(self.last_updated),
            )
            .field("expires_at", &self.expires_at)
            .field("serve_until", &self.serve_until)
            .field("received_at", &self.received_at)
            .field(
                "body",
                &format_args!("** redacted ** ({} bytes)", self.body.len()),
            )
            .finish()
    }
}

impl Issued {
    /// Builds the served form of `credentials`, which arrived at wall time `received_at` and
    /// monotonic time `now`, with `margin` before `Expiration` after which they are not served.
    ///
    /// Returns `None` when the credentials are already inside the margin on arrival.
    pub fn new(
        generation: u64,
        role_name: String,
        credentials: &Credentials,
        received_at: SystemTime,
        now: Instant,
        margin: Duration,
    ) -> Option<Issued> {
        let expiration_wall = SystemTime::from(credentials.expiration);
        let left = expiration_wall.duration_since(received_at).ok()?;
        if left <= margin {
            return None;
        }
        let expires_at = now + left;
        Some(Issued {
            generation,
            role_name,
            access_key_id: credentials.access_key_id.clone(),
            expiration: credentials.expiration,
            last_updated: credentials.last_updated,
            expires_at,
            serve_until: expires_at - margin,
            received_at,
            body: Bytes::from_owner(ZeroizingBody(credentials.to_response_body())),
        })
    }

    /// Seconds until `Expiration` as seen from monotonic `now` (0 once passed).
    pub fn seconds_left(&self, now: Instant) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }
}

struct ZeroizingBody(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for ZeroizingBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Why no credentials can be served. Its [`message`](Unavailable::message) is what callers see
/// in a `503 CredentialsUnavailable` and what `/v1/health` reports; it never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// The first fetch has not completed yet.
    Starting,
    /// The metadata service answered 404: no RAM role is attached, or the configured role name
    /// is wrong. Any cached credentials were dropped.
    RoleNotAttached {
        /// The role name asked for, if one was known.
        role_name: Option<String>,
    },
    /// No credentials are held and fetching keeps failing.
    MetadataUnreachable {
        /// When the current run of failures began.
        since: SystemTime,
        /// The last error, in words (never a secret).
        error: String,
    },
    /// No credentials are held and `AssumeRole` keeps failing: a profile's RAM role, assumed
    /// through STS ([`crate::sources::sts`]).
    AssumeRoleFailing {
        /// When the current run of failures began.
        since: SystemTime,
        /// The last error, in words: STS's reason (never a secret).
        error: String,
    },
    /// The held credentials reached `Expiration` minus the margin and refreshing keeps failing.
    /// They may not have expired yet: the message says which ([`NearExpiry`]).
    ExpiredRefreshFailing {
        /// The last error, in words, if any.
        error: Option<String>,
        /// When the credentials that are no longer served expire, seen from when this was read.
        expiry: NearExpiry,
    },
}

/// The expiry of credentials no longer served, for [`Unavailable::ExpiredRefreshFailing`]'s
/// message: still inside the margin (`Expiration` ahead), or past `Expiration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearExpiry {
    /// `Expiration` as the metadata service sent it.
    pub expiration: OffsetDateTime,
    /// `Expiration` on the monotonic clock ([`Issued::expires_at`]).
    pub expires_at: Instant,
    /// `[credentials] expiry_margin_secs`: `expires_at` minus [`Issued::serve_until`].
    pub margin: Duration,
    /// The monotonic time the message speaks of ([`State::credentials_at`] sets it).
    pub seen_at: Instant,
}

impl NearExpiry {
    /// The expiry of `issued`, seen at `now`.
    pub fn of(issued: &Issued, now: Instant) -> NearExpiry {
        NearExpiry {
            expiration: issued.expiration,
            expires_at: issued.expires_at,
            margin: issued
                .expires_at
                .saturating_duration_since(issued.serve_until),
            seen_at: now,
        }
    }

    /// "within the expiry margin (…)" or "expired at … (N s ago)".
    fn describe(&self) -> String {
        let expiration = crate::credentials::format_utc(self.expiration);
        if self.seen_at < self.expires_at {
            let left = self.expires_at.duration_since(self.seen_at).as_secs();
            format!(
                "credentials are within the expiry margin (Expiration {expiration}, in {left} s; \
                 not served in the last {} s before it)",
                self.margin.as_secs()
            )
        } else {
            let ago = self.seen_at.duration_since(self.expires_at).as_secs();
            format!("credentials expired at {expiration} ({ago} s ago)")
        }
    }
}

impl Unavailable {
    /// This reason as seen at monotonic `now` (how far `Expiration` is moves on).
    fn seen_at(&self, now: Instant) -> Unavailable {
        let mut reason = self.clone();
        if let Unavailable::ExpiredRefreshFailing { expiry, .. } = &mut reason {
            expiry.seen_at = now;
        }
        reason
    }

    /// A one-line explanation for callers and operators.
    pub fn message(&self) -> String {
        match self {
            Unavailable::Starting => "agent is starting: no credentials fetched yet".to_owned(),
            Unavailable::RoleNotAttached { role_name: Some(r) } => format!(
                "no RAM role attached to this instance (or wrong role name): role {r:?} not found"
            ),
            Unavailable::RoleNotAttached { role_name: None } => {
                "no RAM role attached to this instance (or wrong role name)".to_owned()
            }
            Unavailable::MetadataUnreachable { since, error } => format!(
                "metadata service unreachable since {}: {error}",
                crate::credentials::format_utc(OffsetDateTime::from(*since))
            ),
            Unavailable::AssumeRoleFailing { since, error } => format!(
                "STS AssumeRole failing since {}: {error}",
                crate::credentials::format_utc(OffsetDateTime::from(*since))
            ),
            Unavailable::ExpiredRefreshFailing {
                error: Some(e),
                expiry,
            } => format!("{} and refresh is failing: {e}", expiry.describe()),
            Unavailable::ExpiredRefreshFailing {
                error: None,
                expiry,
            } => format!("{} and refresh is failing", expiry.describe()),
        }
    }
}

/// Everything the refresher publishes. Cheap to clone (the credentials are behind an `Arc`).
#[derive(Debug, Clone)]
pub struct State {
    /// The newest valid credential generation, if any. May be past `serve_until`: always go
    /// through [`State::credentials_at`].
    pub credentials: Option<Arc<Issued>>,
    /// Why nothing can be served when `credentials` is `None`.
    pub reason: Unavailable,
    /// Wall time of the last successful fetch.
    pub last_success: Option<SystemTime>,
    /// The last fetch error, in words (never a secret), cleared by a success.
    pub last_error: Option<String>,
    /// When the current run of failures began.
    pub failing_since: Option<SystemTime>,
    /// The same moment on the monotonic clock (decides how long early requests wait).
    pub failing_since_instant: Option<Instant>,
    /// Local wall clock minus the metadata service's clock at the last fetch, in seconds: its
    /// `Date` header (whole seconds), or `LastUpdated` when it sent none (then only a rough
    /// sign: `LastUpdated` may be hours old).
    pub clock_skew_secs: Option<i64>,
}

impl Default for State {
    fn default() -> Self {
        State {
            credentials: None,
            reason: Unavailable::Starting,
            last_success: None,
            last_error: None,
            failing_since: None,
            failing_since_instant: None,
            clock_skew_secs: None,
        }
    }
}

impl State {
    /// The credentials to serve at monotonic time `now`, or why there are none.
    ///
    /// Never returns credentials past `serve_until` (`Expiration` minus the margin).
    pub fn credentials_at(&self, now: Instant) -> Result<&Arc<Issued>, Unavailable> {
        match &self.credentials {
            Some(c) if now < c.serve_until => Ok(c),
            Some(c) => Err(Unavailable::ExpiredRefreshFailing {
                error: self.last_error.clone(),
                expiry: NearExpiry::of(c, now),
            }),
            None => Err(self.reason.seen_at(now)),
        }
    }

    /// The metrics' credential gauges at `now` (see [`crate::metrics`]).
    pub fn gauges(&self, now: Instant) -> crate::metrics::CredentialGauges {
        let held = self.credentials.as_deref();
        crate::metrics::CredentialGauges {
            expires_in: held.map_or(Duration::ZERO, |c| {
                c.expires_at.saturating_duration_since(now)
            }),
            generation: held.map_or(0, |c| c.generation),
            ready: self.credentials_at(now).is_ok(),
            stale: self.is_stale(now),
            last_success: self.last_success,
        }
    }

    /// Whether the held credentials are being served although the last refresh failed
    /// ("stale but valid").
    pub fn is_stale(&self, now: Instant) -> bool {
        self.last_error.is_some() && self.credentials_at(now).is_ok()
    }
}

/// The reading side of the refresher's state, as the socket server holds it.
pub type StateReceiver = watch::Receiver<State>;

/// Waits until `rx` holds servable credentials or `wait` has passed, and returns the
/// credentials or the reason there are none.
///
/// Requests that arrive before the first credentials call this with
/// `[server] first_credentials_wait_ms`; it never triggers a fetch itself (the refresher's
/// single first fetch serves every waiter). It waits only while the agent has never held
/// credentials, the metadata service has not said that no role is attached, and fetching has
/// not been failing for longer than `wait` already; otherwise it answers at once. So a blip at
/// start-up is absorbed, and clients of a long-failing agent get its reason fast.
pub async fn wait_for_credentials(
    rx: &mut StateReceiver,
    wait: Duration,
) -> Result<Arc<Issued>, Unavailable> {
    let deadline = Instant::now() + wait;
    loop {
        {
            let state = rx.borrow_and_update();
            match state.credentials_at(Instant::now()) {
                Ok(c) => return Ok(Arc::clone(c)),
                Err(Unavailable::RoleNotAttached { .. }) => return Err(state.reason.clone()),
                Err(_) if state.last_success.is_none() && !failing_longer_than(&state, wait) => {}
                Err(other) => return Err(other),
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => {
                return rx.borrow().credentials_at(Instant::now()).map(Arc::clone)
            }
        }
    }
}

/// Whether fetching has been failing for longer than `wait` (monotonic clock).
fn failing_longer_than(state: &State, wait: Duration) -> bool {
    state
        .failing_since_instant
        .is_some_and(|since| since.elapsed() >= wait)
}

#[cfg(test)]
mod tests;
