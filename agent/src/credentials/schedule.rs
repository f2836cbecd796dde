//! The refresh schedule: pure functions of [`Duration`]s that decide when to refresh the
//! credentials, when to look again while the metadata service still hands out the same
//! generation, and how long to back off after a failed fetch.
//!
//! No clocks here: the refresher measures `lifetime` and `remaining` on the monotonic clock and
//! passes a `jitter` drawn uniformly from `[0, 1)`, so every function is deterministic and
//! tested by tables and properties (in the manner of linkerd's `refresh_in`).
//!
//! | situation | delay | function |
//! |---|---|---|
//! | new generation arrived | until about a third of the lifetime is left, and at least [`SDK_STALE_WINDOW`] before `Expiration` (lifetimes under 30 min: half-life), up to [`MAX_JITTER`] earlier | [`next_refresh`] |
//! | same generation returned | `remaining / 6`, at most [`RECHECK_MAX`], up to [`MAX_JITTER`] earlier | [`recheck_unchanged`] |
//! | fetch failed | full jitter under `min(backoff_max, backoff_initial × 2^attempt)`, at least [`BACKOFF_FLOOR`] | [`backoff`] |
//!
//! Every delay that concerns held credentials is clamped to `remaining − expiry_margin` (the
//! instant they stop being served) and, while that is still ahead, to at least [`MIN_DELAY`].

use std::time::Duration;

use crate::credentials::RefreshPolicy;

/// How long before `Expiration` the official Java and Python SDKs start treating credentials as
/// stale (and, through the credentials-URI provider, refetch them on every call): 15 minutes.
///
/// Source: `aliyun/credentials-java`,
/// `src/main/java/com/aliyun/credentials/provider/RefreshCachedSupplier.java`
/// (`STALE_TIME = 15 * 60 * 1000`), and PyPI `alibabacloud-credentials` 1.0.12; summarised in
/// `docs/refresh-policy.md` §The 15-minute window. Refreshing before this window means
/// callers' SDKs never see our credentials as stale.
pub const SDK_STALE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The smallest delay before a refresh while the held credentials are still servable, so that
/// a service returning odd times cannot make the refresher spin.
pub const MIN_DELAY: Duration = Duration::from_secs(1);

/// The largest fraction by which [`next_refresh`] and [`recheck_unchanged`] move a refresh
/// earlier (jitter spreads the load of many instances started together).
pub const MAX_JITTER: f64 = 0.1;

/// The longest interval between two checks while the service keeps returning the same
/// generation: a rotation is picked up at most this long after it happens.
pub const RECHECK_MAX: Duration = SDK_STALE_WINDOW;

/// While the service keeps returning the same generation, check again after
/// `remaining / RECHECK_DIVISOR` (before the cap [`RECHECK_MAX`]).
pub const RECHECK_DIVISOR: u32 = 6;

/// The longest wait between two refreshes, whatever `Expiration` says: the refresh point of
/// the documented 6 h lifetime (every documented example has `Expiration − LastUpdated = 6 h`),
/// so it never delays a normal refresh, while credentials whose `Expiration` is implausibly far
/// away (years ahead) are still checked, and a rotation, detach or role change still noticed.
pub const MAX_REFRESH_DELAY: Duration = Duration::from_secs(4 * 3600);

/// The smallest backoff delay, so a zero jitter never becomes a busy loop.
pub const BACKOFF_FLOOR: Duration = Duration::from_millis(10);

/// The delay until the next refresh after a new credential generation arrived.
///
/// - `lifetime`: `Expiration − LastUpdated` (6 h in every documented example).
/// - `remaining`: time until `Expiration` on the monotonic clock, as measured at arrival.
/// - `jitter`: uniform in `[0, 1)`; values outside are clamped, NaN counts as 0.
///
/// Policy: refresh when `max(lifetime / 3, SDK_STALE_WINDOW)` is left, but never with more
/// than half the lifetime left (a 6 h lifetime refreshes after 4 h; 40 min after 25 min;
/// 20 min and 5 min at their half-life), up to [`MAX_JITTER`] of the delay earlier. The result
/// is then clamped to `remaining − cfg.expiry_margin` (the credentials must be refreshed
/// before they stop being served) and raised to at least [`MIN_DELAY`] unless that deadline
/// is closer. Inside the margin already, it is zero: refresh now. It never exceeds
/// [`MAX_REFRESH_DELAY`].
///
/// The service's rotation schedule is undocumented: a refresh may return the same generation,
/// then [`recheck_unchanged`] takes over.
pub fn next_refresh(
    lifetime: Duration,
    remaining: Duration,
    cfg: &RefreshPolicy,
    jitter: f64,
) -> Duration {
    let left_at_refresh = (lifetime / 3).max(SDK_STALE_WINDOW).min(lifetime / 2);
    let delay = remaining
        .saturating_sub(left_at_refresh)
        .min(MAX_REFRESH_DELAY);
    clamp_to_margin(earlier_by_jitter(delay, jitter), remaining, cfg)
}

/// The delay until the next check when a refresh returned the same generation (same
/// `AccessKeyId` and `LastUpdated`) as the one held, `remaining` before its `Expiration`.
///
/// `min(remaining / RECHECK_DIVISOR, RECHECK_MAX)`, up to [`MAX_JITTER`] earlier, then clamped
/// like [`next_refresh`]: at most `remaining − cfg.expiry_margin`, at least [`MIN_DELAY`]
/// unless that is closer, zero inside the margin. The checks come closer together as
/// `Expiration` nears, so a late rotation is still caught before the margin.
pub fn recheck_unchanged(remaining: Duration, cfg: &RefreshPolicy, jitter: f64) -> Duration {
    let delay = (remaining / RECHECK_DIVISOR).min(RECHECK_MAX);
    clamp_to_margin(earlier_by_jitter(delay, jitter), remaining, cfg)
}

/// The ceiling of the backoff before retry number `attempt` (0 after the first failure):
/// `min(cfg.backoff_max, cfg.backoff_initial × 2^attempt)`, saturating. Monotone in `attempt`.
pub fn backoff_ceiling(attempt: u32, cfg: &RefreshPolicy) -> Duration {
    let factor = 2u32.saturating_pow(attempt);
    cfg.backoff_initial
        .saturating_mul(factor)
        .min(cfg.backoff_max)
}

/// The delay before retry number `attempt` (0 after the first failure): "full jitter",
/// `jitter × backoff_ceiling(attempt)`, at least [`BACKOFF_FLOOR`].
///
/// `jitter` is uniform in `[0, 1)`; values outside are clamped, NaN counts as 0. The refresher
/// shortens the sleep further when the held credentials stop being served earlier.
pub fn backoff(attempt: u32, cfg: &RefreshPolicy, jitter: f64) -> Duration {
    backoff_ceiling(attempt, cfg)
        .mul_f64(unit(jitter))
        .max(BACKOFF_FLOOR)
}

/// `jitter` clamped into `[0, 1]`; NaN becomes 0.
fn unit(jitter: f64) -> f64 {
    if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    }
}

/// `delay` made up to `MAX_JITTER × delay` shorter.
fn earlier_by_jitter(delay: Duration, jitter: f64) -> Duration {
    delay.saturating_sub(delay.mul_f64(MAX_JITTER * unit(jitter)))
}

/// Clamps a refresh delay for credentials `remaining` before `Expiration`: never past
/// `remaining − margin`, at least [`MIN_DELAY`] while that is further away.
fn clamp_to_margin(delay: Duration, remaining: Duration, cfg: &RefreshPolicy) -> Duration {
    let deadline = remaining.saturating_sub(cfg.expiry_margin);
    delay.max(MIN_DELAY).min(deadline)
}

#[cfg(test)]
mod tests;
