//! Metadata load per credential lifetime, simulated: a discrete-event run of the agent's own
//! refresh policy ([`schedule::next_refresh`], [`schedule::recheck_unchanged`]) and token
//! policy ([`token::needs_renewal`]) against an in-memory metadata service that issues 6-hour
//! credentials and rotates them 1 hour before they expire, over one 6-hour lifetime. Time is
//! simulated, so it takes microseconds. The refresher's own paused-time test
//! (`metadata_load_over_one_lifetime_is_small` in `agent/src/credentials/refresher/tests.rs`)
//! checks the same policy through the real refresher task.

use std::time::Duration;

use ecs_credential_agent::credentials::schedule;
use ecs_credential_agent::credentials::RefreshPolicy;
use ecs_credential_agent::sources::metadata::token;
use serde::Serialize;

const LIFETIME: Duration = Duration::from_secs(6 * 3600);
const ROTATE_AFTER: Duration = Duration::from_secs(5 * 3600);
/// The agent's default token TTL (`[metadata] token_ttl_secs`).
const TOKEN_TTL: Duration = Duration::from_secs(21_600);

/// The counts of one simulated lifetime.
#[derive(Debug, Clone, Serialize)]
pub struct Lifetime {
    /// The jitter used (`worst case` is the largest, `none` zero, else `random`).
    pub jitter: &'static str,
    /// Credential GETs over the lifetime.
    pub credential_gets: u32,
    /// Token PUTs over the lifetime.
    pub token_puts: u32,
    /// The shortest time between two token PUTs, seconds (`None` with one PUT).
    pub min_token_reuse_secs: Option<u64>,
    /// Whether credentials with at least 15 minutes left were held at every instant after
    /// the first fetch (checked at every event).
    pub always_fresh: bool,
}

/// Runs one lifetime with `jitter()` drawing each jitter.
fn run(name: &'static str, mut jitter: impl FnMut() -> f64) -> Lifetime {
    let cfg = RefreshPolicy {
        expiry_margin: Duration::from_secs(60),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
    };
    // The service's generation k is issued at k × ROTATE_AFTER and expires LIFETIME later;
    // the agent starts at 0, right after generation 0 was issued.
    let served_at = |t: Duration| -> (u32, Duration) {
        let k = (t.as_secs() / ROTATE_AFTER.as_secs()) as u32;
        (k, ROTATE_AFTER * k + LIFETIME)
    };
    let (mut t, mut gets, mut puts) = (Duration::ZERO, 0u32, 0u32);
    let mut token_at: Option<Duration> = None;
    let mut min_reuse: Option<Duration> = None;
    let mut held: Option<(u32, Duration)> = None;
    let mut always_fresh = true;
    while t <= LIFETIME {
        if token_at.is_none_or(|at| token::needs_renewal(t - at, TOKEN_TTL)) {
            if let Some(at) = token_at {
                min_reuse = Some(min_reuse.map_or(t - at, |m| m.min(t - at)));
            }
            puts += 1;
            token_at = Some(t);
        }
        gets += 1;
        let (generation, expires) = served_at(t);
        let delay = match held {
            Some((g, held_expires)) if g == generation => {
                schedule::recheck_unchanged(held_expires - t, &cfg, jitter())
            }
            _ => {
                held = Some((generation, expires));
                schedule::next_refresh(LIFETIME, expires - t, &cfg, jitter())
            }
        };
        let next = t + delay;
        // Until the next fetch the held credentials must keep 15 minutes (the SDKs' window).
        if let Some((_, e)) = held {
            always_fresh &= e.saturating_sub(next.min(LIFETIME)) >= schedule::SDK_STALE_WINDOW;
        }
        t = next;
    }
    Lifetime {
        jitter: name,
        credential_gets: gets,
        token_puts: puts,
        min_token_reuse_secs: min_reuse.map(|d| d.as_secs()),
        always_fresh,
    }
}

/// The worst case (largest jitter), no jitter, and the highest count of 200 random runs.
pub fn lifetimes() -> Vec<Lifetime> {
    let worst = run("worst case", || 0.999_999);
    let none = run("none", || 0.0);
    let random = (0..200)
        .map(|_| run("random (max of 200)", rand::random::<f64>))
        .max_by_key(|l| (l.credential_gets, l.token_puts))
        .expect("200 runs");
    vec![worst, none, random]
}
