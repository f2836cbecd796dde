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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    const TTL_6H: Duration = Duration::from_secs(21_600);

    #[test]
    fn renewal_margin_table() {
        let cases = [
            (Duration::from_secs(21_600), Duration::from_secs(300)),
            (Duration::from_secs(3_000), Duration::from_secs(300)),
            (Duration::from_secs(600), Duration::from_secs(60)),
            (Duration::from_secs(10), Duration::from_secs(1)),
            (Duration::from_secs(1), Duration::from_millis(100)),
            (Duration::ZERO, Duration::ZERO),
        ];
        for (ttl, margin) in cases {
            assert_eq!(renew_margin(ttl), margin, "ttl {ttl:?}");
        }
    }

    #[test]
    fn renewal_timing_table() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases = [
            // (elapsed, ttl, renew?)
            (s(0), TTL_6H, false),
            (s(21_299), TTL_6H, false),
            (s(21_300), TTL_6H, true),
            (s(30_000), TTL_6H, true),
            (ms(899), s(1), false),
            (ms(900), s(1), true),
            (s(0), Duration::ZERO, true),
        ];
        for (elapsed, ttl, renew) in cases {
            assert_eq!(needs_renewal(elapsed, ttl), renew, "{elapsed:?} of {ttl:?}");
        }
    }

    fn counting_put(
        count: &Arc<AtomicUsize>,
    ) -> impl Future<Output = Result<SecretString, MetadataError>> {
        let count = Arc::clone(count);
        async move {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(SecretString::from(format!("token-{n}")))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_is_reused_until_the_renewal_point() {
        let cache = TokenCache::new(TTL_6H);
        let count = Arc::new(AtomicUsize::new(0));
        let first = cache.get_or_put(|| counting_put(&count)).await.unwrap();
        // The PUT took 50 ms; the TTL counts from when it was sent.
        tokio::time::advance(Duration::from_secs(21_300) - Duration::from_millis(51)).await;
        let again = cache.get_or_put(|| counting_put(&count)).await.unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        let renewed = cache.get_or_put(|| counting_put(&count)).await.unwrap();
        assert_eq!(renewed.expose_secret(), "token-2");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_put() {
        let cache = Arc::new(TokenCache::new(TTL_6H));
        let count = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, count) = (Arc::clone(&cache), Arc::clone(&count));
                tokio::spawn(async move { cache.get_or_put(|| counting_put(&count)).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().expose_secret(), "token-1");
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_put_caches_nothing() {
        let cache = TokenCache::new(TTL_6H);
        let err = cache
            .get_or_put(|| async { Err(MetadataError::TokenRejected) })
            .await;
        assert!(err.is_err());
        let count = Arc::new(AtomicUsize::new(0));
        cache.get_or_put(|| counting_put(&count)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_drops_only_the_rejected_token() {
        let cache = TokenCache::new(TTL_6H);
        let count = Arc::new(AtomicUsize::new(0));
        let first = cache.get_or_put(|| counting_put(&count)).await.unwrap();
        cache
            .invalidate(&SecretString::from("some-other-token"))
            .await;
        cache.get_or_put(|| counting_put(&count)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1, "kept");
        cache.invalidate(&first).await;
        let second = cache.get_or_put(|| counting_put(&count)).await.unwrap();
        assert_eq!(second.expose_secret(), "token-2");
    }

    #[tokio::test(start_paused = true)]
    async fn debug_is_redacted() {
        let cache = TokenCache::new(TTL_6H);
        let count = Arc::new(AtomicUsize::new(0));
        cache.get_or_put(|| counting_put(&count)).await.unwrap();
        let text = format!("{cache:?}");
        assert!(
            !text.contains("token-1") && text.contains("redacted"),
            "{text}"
        );
    }
}
