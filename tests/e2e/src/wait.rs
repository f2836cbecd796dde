//! Waiting for an event with a deadline, never for a fixed time.

use std::time::{Duration, Instant};

/// Polls `f` every 50 ms until it returns `Some`, up to `within` (at least once); its value,
/// or `None` when the deadline passed first.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
