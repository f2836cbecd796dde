//! Tests of [`super`]: the metadata token cache, its renewal margin and single-flight renewal.

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
