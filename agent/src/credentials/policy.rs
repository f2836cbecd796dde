//! `[credentials]`: the refresh policy, declared once ([`crate::settings`]).

use std::time::Duration;

use crate::settings::{section, Millis, Secs};

/// `[credentials] expiry_margin_secs` by default: credentials are not served when less than
/// this is left.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// `[credentials] backoff_initial_ms` by default.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(1_000);
/// `[credentials] backoff_max_secs` by default.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);

section! {
    /// `[credentials]`: when credentials stop being served and how failed refreshes back off.
    pub struct RefreshPolicy["credentials"] {
        /// credentials are not served when less than this many seconds are left before
        /// `Expiration`
        expiry_margin: Duration = DEFAULT_EXPIRY_MARGIN, "expiry_margin_secs",
            Secs(0, 3_600), Restart;
        /// first retry delay after a failed refresh, in milliseconds (exponential, full
        /// jitter)
        backoff_initial: Duration = DEFAULT_BACKOFF_INITIAL, "backoff_initial_ms",
            Millis(1, 600_000), Restart;
        /// retry delay cap, in seconds; the agent never gives up
        backoff_max: Duration = DEFAULT_BACKOFF_MAX, "backoff_max_secs",
            Secs(1, 3_600), Restart;
    }
    check = backoff_cap_not_below_initial;
}

fn backoff_cap_not_below_initial(p: &RefreshPolicy) -> Vec<(&'static str, String)> {
    if p.backoff_max < p.backoff_initial {
        vec![(
            "backoff_max_secs",
            "must not be less than backoff_initial_ms".to_owned(),
        )]
    } else {
        Vec::new()
    }
}
