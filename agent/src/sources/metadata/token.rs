//! The hardened-mode metadata token: cached, shared, renewed before its TTL ends.
//!
//! The service issues a token on `PUT /latest/api/token` with
//! `X-aliyun-ecs-metadata-token-ttl-seconds: <1..21600>`; it stays valid for that TTL and may be
//! reused (ECS documentation "加固模式", `docs/metadata-service.md` §Token). Unlike the
//! official SDKs, which ask for a new token before every GET, the agent keeps one and renews it
//! shortly before the TTL ends ([`needs_renewal`]), or at once when a GET answers 401.
//!
//! The token is a [`SecretString`]: zeroized on drop, redacted in `Debug`, never logged (only
//! its length is).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::MetadataError;

/// The longest renewal margin: a token is renewed at most this long before its TTL ends.
pub const MAX_RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long before the end of a token's TTL it is renewed: a tenth of the TTL, at most
/// [`MAX_RENEW_MARGIN`]. For the default 21600 s TTL that is 5 min; for a 1 s TTL, 100 ms.
pub fn renew_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(MAX_RENEW_MARGIN)
}

/// Whether a token with time-to-live `ttl`, obtained `elapsed` ago, must be renewed before use:
/// `elapsed >= ttl - renew_margin(ttl)`. A zero TTL always needs renewal.
pub fn needs_renewal(elapsed: Duration, ttl: Duration) -> bool {
    elapsed >= ttl.saturating_sub(renew_margin(ttl))
}

/// One metadata token and the monotonic instant it was asked for (the `PUT` was sent then, so
/// the service's TTL started no earlier).
struct MetadataToken {
    value: SecretString,
    obtained_at: Instant,
}

/// The cached metadata token. Concurrent callers share one `PUT`: the lock is held while the
/// token is fetched (a `tokio` mutex, since it is held across the request).
pub struct TokenCache {
    ttl: Duration,
    slot: Mutex<Option<MetadataToken>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("ttl", &self.ttl)
            .field("token", &"** redacted **")
            .finish()
    }
}

impl TokenCache {
    /// An empty cache for tokens asked for with time-to-live `ttl`.
    pub fn new(ttl: Duration) -> TokenCache {
        TokenCache {
            ttl,
            slot: Mutex::new(None),
        }
    }

    /// The TTL tokens are asked for with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The cached token if it is still fresh, else a new one from `put` (which performs
    /// `PUT /latest/api/token`). Callers arriving while `put` runs wait for its result.
    ///
    /// # Errors
    /// Whatever `put` returns; nothing is cached then.
    pub async fn get_or_put<F, Fut>(&self, put: F) -> Result<SecretString, MetadataError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretString, MetadataError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some(token) = slot.as_ref() {
            if !needs_renewal(token.obtained_at.elapsed(), self.ttl) {
                return Ok(token.value.clone());
            }
            tracing::debug!(ttl_secs = self.ttl.as_secs(), "renewing metadata token");
        }
        *slot = None;
        let obtained_at = Instant::now();
        let value = put().await?;
        *slot = Some(MetadataToken {
            value: value.clone(),
            obtained_at,
        });
        Ok(value)
    }

    /// Drops the cached token if it is `rejected` (a GET answered 401 with it). A different
    /// token, renewed meanwhile by a concurrent caller, is kept.
    pub async fn invalidate(&self, rejected: &SecretString) {
        let mut slot = self.slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == rejected.expose_secret())
        {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests;
