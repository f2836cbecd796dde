//! `[metrics]`: where metrics are served besides the agent socket, declared once
//! ([`crate::settings`]).

use std::net::SocketAddr;

use crate::settings::{section, Optional, Text};

section! {
    /// `[metrics]`: Prometheus metrics.
    pub struct Config["metrics"] {
        /// a loopback TCP address such as `"127.0.0.1:9464"` serving `GET /metrics` only (every
        /// other path `404`), with no peer check: metrics carry no secret. Non-loopback
        /// addresses are refused; an address that cannot be bound stops the agent at startup
        /// (exit 1). Unset: off
        listen: Option<SocketAddr> = None, "listen",
            Optional(Text { parse: parse_listen, print: SocketAddr::to_string }), Restart;
    }
}

/// Checks a listen address: an IP address and port, on loopback.
///
/// # Errors
/// Not an address, or not a loopback one.
pub fn parse_listen(a: &str) -> Result<SocketAddr, String> {
    match a.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() => Ok(addr),
        Ok(_) => Err(format!(
            "must be a loopback address (metrics are for this host), got {a:?}"
        )),
        Err(_) => Err(format!(
            "expected an address such as \"127.0.0.1:9464\", got {a:?}"
        )),
    }
}
