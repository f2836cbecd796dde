//! `[systemd]`: behaviour under systemd (`Type=notify`), declared once ([`crate::settings`]).

use std::time::Duration;

use crate::settings::{section, Secs};

/// `[systemd] ready_timeout_secs` by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

section! {
    /// `[systemd]`: behaviour under systemd (`Type=notify`).
    pub struct Config["systemd"] {
        /// under `Type=notify`, tell systemd the agent is ready this many seconds after start
        /// even without credentials, so boot is never blocked (health answers `503` meanwhile)
        ready_timeout: Duration = DEFAULT_READY_TIMEOUT, "ready_timeout_secs",
            Secs(0, 3_600), Restart;
    }
}
