//! Tests of [`super`]: the refresh schedule, table- and property-tested.

use super::*;
use proptest::prelude::*;

const MIN: u64 = 60;
const HOUR: u64 = 3600;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cfg() -> RefreshPolicy {
    RefreshPolicy::default()
}

#[test]
fn next_refresh_table() {
    // (lifetime, remaining, jitter, expected delay); default margin 60 s.
    let rows = [
        // 6 h fresh: refresh with 2 h left, after 4 h; jitter up to 10 % earlier.
        (6 * HOUR, 6 * HOUR, 0.0, 4 * HOUR),
        (6 * HOUR, 6 * HOUR, 0.5, 4 * HOUR - 4 * HOUR / 20),
        // Arrived late in its life: 3 h left → refresh after 1 h.
        (6 * HOUR, 3 * HOUR, 0.0, HOUR),
        // Already past the refresh point but outside the margin: the 1 s floor.
        (6 * HOUR, HOUR, 0.0, 1),
        // 40 min lifetime: the 15 min SDK stale window wins over a third.
        (40 * MIN, 40 * MIN, 0.0, 25 * MIN),
        // 20 min lifetime: half-life (the stale window would leave no room).
        (20 * MIN, 20 * MIN, 0.0, 10 * MIN),
        // 5 min lifetime: half-life, well before the margin.
        (5 * MIN, 5 * MIN, 0.0, 150),
        // 90 s lifetime: half-life 45 s is after remaining − margin = 30 s → 30 s.
        (90, 90, 0.0, 30),
        // Inside the margin: refresh now.
        (6 * HOUR, 60, 0.0, 0),
        (6 * HOUR, 10, 0.0, 0),
        (6 * HOUR, 0, 0.0, 0),
        // Zero lifetime (LastUpdated == Expiration, a broken response) still bounded.
        (0, 2 * HOUR, 0.0, 2 * HOUR - 60),
        // Expiration years ahead: checked again after MAX_REFRESH_DELAY, not in years.
        (10 * 365 * 24 * HOUR, 10 * 365 * 24 * HOUR, 0.0, 4 * HOUR),
        (12 * HOUR, 12 * HOUR, 0.0, 4 * HOUR),
    ];
    for (lifetime, remaining, jitter, want) in rows {
        assert_eq!(
            next_refresh(secs(lifetime), secs(remaining), &cfg(), jitter),
            secs(want),
            "lifetime {lifetime} s, remaining {remaining} s, jitter {jitter}"
        );
    }
}

#[test]
fn next_refresh_floor_yields_to_margin_deadline() {
    // 0.5 s before the margin: the 1 s floor would be too late.
    let remaining = Duration::from_millis(60_500);
    assert_eq!(
        next_refresh(secs(6 * HOUR), remaining, &cfg(), 0.0),
        Duration::from_millis(500)
    );
}

#[test]
fn recheck_table() {
    let rows = [
        (2 * HOUR, 0.0, 15 * MIN), // capped at RECHECK_MAX
        (HOUR, 0.0, 10 * MIN),     // remaining / 6
        (HOUR, 0.5, 10 * MIN - 30),
        (6 * MIN, 0.0, MIN),
        (61, 0.0, 1),  // remaining − margin = 1 s
        (60, 0.0, 0),  // inside the margin
        (90, 0.0, 15), // 90 / 6
        (3 * MIN, 0.0, 30),
    ];
    for (remaining, jitter, want) in rows {
        assert_eq!(
            recheck_unchanged(secs(remaining), &cfg(), jitter),
            secs(want),
            "remaining {remaining} s, jitter {jitter}"
        );
    }
}

#[test]
fn backoff_table() {
    // Defaults: initial 1 s, max 60 s.
    let ceilings = [1, 2, 4, 8, 16, 32, 60, 60];
    for (attempt, want) in ceilings.into_iter().enumerate() {
        assert_eq!(backoff_ceiling(attempt as u32, &cfg()), secs(want));
    }
    assert_eq!(backoff_ceiling(u32::MAX, &cfg()), secs(60));
    assert_eq!(backoff(3, &cfg(), 0.5), secs(4));
    assert_eq!(backoff(0, &cfg(), 0.0), BACKOFF_FLOOR);
    assert_eq!(backoff(10, &cfg(), 0.999), secs(60).mul_f64(0.999));
}

#[test]
fn out_of_range_jitter_is_clamped() {
    assert_eq!(backoff(2, &cfg(), f64::NAN), BACKOFF_FLOOR);
    assert_eq!(backoff(2, &cfg(), 7.0), secs(4));
    assert_eq!(
        next_refresh(secs(6 * HOUR), secs(6 * HOUR), &cfg(), -1.0),
        secs(4 * HOUR)
    );
    assert_eq!(
        next_refresh(secs(6 * HOUR), secs(6 * HOUR), &cfg(), f64::INFINITY),
        secs(4 * HOUR) - secs(4 * HOUR / 10)
    );
}

fn any_cfg() -> impl Strategy<Value = RefreshPolicy> {
    (0u64..600_000, 1u64..10_000, 0u64..3_600_000).prop_map(|(margin, initial, max)| {
        RefreshPolicy {
            expiry_margin: Duration::from_millis(margin),
            backoff_initial: Duration::from_millis(initial),
            backoff_max: Duration::from_millis(max),
        }
    })
}

proptest! {
    #[test]
    fn next_refresh_before_margin(
        lifetime in 0u64..86_400_000,
        remaining in 0u64..86_400_000,
        jitter in 0.0f64..1.0,
        cfg in any_cfg(),
    ) {
        let (lifetime, remaining) = (Duration::from_millis(lifetime), Duration::from_millis(remaining));
        let d = next_refresh(lifetime, remaining, &cfg, jitter);
        let deadline = remaining.saturating_sub(cfg.expiry_margin);
        prop_assert!(d <= deadline, "{d:?} past the margin deadline {deadline:?}");
        prop_assert!(d >= MIN_DELAY.min(deadline));
        prop_assert!(d <= MAX_REFRESH_DELAY);
        // Jitter only ever moves the refresh earlier, by at most MAX_JITTER.
        let unjittered = next_refresh(lifetime, remaining, &cfg, 0.0);
        prop_assert!(d <= unjittered);
        prop_assert!(d + Duration::from_micros(1) >= unjittered.mul_f64(1.0 - MAX_JITTER));
        // With enough lifetime left, at least the SDK stale window remains at refresh time.
        if remaining == lifetime && lifetime >= 2 * SDK_STALE_WINDOW {
            prop_assert!(remaining - d >= SDK_STALE_WINDOW);
        }
    }

    #[test]
    fn recheck_bounded(
        remaining in 0u64..86_400_000,
        jitter in 0.0f64..1.0,
        cfg in any_cfg(),
    ) {
        let remaining = Duration::from_millis(remaining);
        let d = recheck_unchanged(remaining, &cfg, jitter);
        let deadline = remaining.saturating_sub(cfg.expiry_margin);
        prop_assert!(d <= deadline);
        prop_assert!(d <= RECHECK_MAX.max(MIN_DELAY));
        prop_assert!(d <= (remaining / RECHECK_DIVISOR).max(MIN_DELAY));
        prop_assert!(d >= MIN_DELAY.min(deadline));
    }

    #[test]
    fn backoff_ceiling_monotone_and_capped(attempt in 0u32..200, cfg in any_cfg()) {
        let c = backoff_ceiling(attempt, &cfg);
        prop_assert!(c <= cfg.backoff_max);
        prop_assert!(c <= backoff_ceiling(attempt + 1, &cfg));
        prop_assert!(c >= cfg.backoff_initial.min(cfg.backoff_max));
    }

    /// The wording, for every delay that concerns held credentials: never later
    /// than the margin, never in the past (zero only once inside the margin: refresh now),
    /// and jitter, whatever value the caller passes, only ever moves it earlier and by at
    /// most `MAX_JITTER`.
    #[test]
    fn refresh_never_past_margin_never_in_the_past_jitter_bounded(
        lifetime in 0u64..86_400_000,
        remaining in 0u64..86_400_000,
        jitter in proptest::num::f64::ANY,
        cfg in any_cfg(),
    ) {
        let (lifetime, remaining) = (Duration::from_millis(lifetime), Duration::from_millis(remaining));
        let deadline = remaining.saturating_sub(cfg.expiry_margin);
        for (d, base) in [
            (next_refresh(lifetime, remaining, &cfg, jitter), next_refresh(lifetime, remaining, &cfg, 0.0)),
            (recheck_unchanged(remaining, &cfg, jitter), recheck_unchanged(remaining, &cfg, 0.0)),
        ] {
            prop_assert!(d <= deadline, "{d:?} past the margin deadline {deadline:?}");
            prop_assert_eq!(d.is_zero(), deadline.is_zero(), "zero delay while still servable");
            prop_assert!(d <= base);
            prop_assert!(d + Duration::from_micros(1) >= base.mul_f64(1.0 - MAX_JITTER));
        }
    }

    /// Each retry's ceiling doubles the previous one until it reaches the cap, then stays.
    #[test]
    fn backoff_ceiling_doubles_up_to_the_cap(attempt in 0u32..64, cfg in any_cfg()) {
        let c = backoff_ceiling(attempt, &cfg);
        let next = backoff_ceiling(attempt + 1, &cfg);
        prop_assert_eq!(next, c.saturating_mul(2).min(cfg.backoff_max));
        // Reached: 2^64 saturates far beyond any cap the configuration allows.
        prop_assert_eq!(backoff_ceiling(64, &cfg), cfg.backoff_max);
    }

    /// Full jitter: the delay grows with the jitter drawn, from the floor to the ceiling.
    #[test]
    fn backoff_monotone_in_jitter(
        attempt in 0u32..64,
        a in proptest::num::f64::ANY,
        b in proptest::num::f64::ANY,
        cfg in any_cfg(),
    ) {
        let (lo, hi) = if unit(a) <= unit(b) { (a, b) } else { (b, a) };
        prop_assert!(backoff(attempt, &cfg, lo) <= backoff(attempt, &cfg, hi));
        let ceiling = backoff_ceiling(attempt, &cfg).max(BACKOFF_FLOOR);
        prop_assert!(backoff(attempt, &cfg, hi) <= ceiling);
    }

    #[test]
    fn backoff_within_ceiling(attempt in 0u32..200, jitter in 0.0f64..1.0, cfg in any_cfg()) {
        let d = backoff(attempt, &cfg, jitter);
        let ceiling = backoff_ceiling(attempt, &cfg);
        prop_assert!(d >= BACKOFF_FLOOR);
        prop_assert!(d <= ceiling.max(BACKOFF_FLOOR));
    }
}

/// Regression (fault matrix row "Expiration years ahead"): the refresh was scheduled
/// 2.1e8 s away.
#[test]
fn an_expiration_years_ahead_still_refreshes_within_the_cap() {
    let cfg = RefreshPolicy::default();
    let ten_years = secs(10 * 365 * 86_400);
    for jitter in [0.0, 0.5, 0.99] {
        let d = next_refresh(ten_years, ten_years, &cfg, jitter);
        assert!(d <= MAX_REFRESH_DELAY, "{d:?}");
        assert!(d >= MAX_REFRESH_DELAY.mul_f64(1.0 - MAX_JITTER), "{d:?}");
    }
    // The documented 6 h lifetime is not affected.
    assert_eq!(
        next_refresh(secs(6 * HOUR), secs(6 * HOUR), &cfg, 0.0),
        secs(4 * HOUR)
    );
}
