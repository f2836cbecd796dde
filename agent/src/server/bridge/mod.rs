//! The loopback TCP listener (the "bridge"): the credentials-URI transport for the official SDKs
//! and the aliyun CLI, which cannot speak HTTP over a Unix socket
//! (`ALIBABA_CLOUD_CREDENTIALS_URI=http://127.0.0.1:17301/v1/credentials`).
//!
//! - [`BridgeListener`]: binds `[bridge] listen` and accepts connections, each with its caller
//!   looked up in the kernel's socket table right after `accept(2)`, before anything is read
//!   ([`crate::identity::tcp`]); a caller that cannot be identified is answered `403` and never
//!   taken for anyone.
//! - [`host_allowed`]: the `Host` rule against DNS rebinding.
//!
//! Everything else is the socket server's: the same [`Server`](super::Server) accepts on both
//! listeners, with one `max_connections` and the same per-uid shares, the same routes, JSON,
//! error codes, timeouts, audit (naming `transport = "tcp"`) and graceful drain.

pub mod config;
mod listener;

pub use listener::{BridgeBindError, BridgeListener, Bridged};

use http::HeaderValue;

/// Whether a request's `Host` names the loopback listener: `127.0.0.1` or `localhost`, without
/// a port (the Python SDK sends `127.0.0.1` without one) or with the listener's own `port`
/// (written as the decimal number, as clients write it). Anything else, or no `Host` at all,
/// is refused (`400 BadRequest`): a web page whose name was rebound to 127.0.0.1 (DNS
/// rebinding) sends its own name, and a request meant for another loopback service (another
/// port) is not this listener's. `port` `None` (no listener known) accepts no port at all.
pub fn host_allowed(host: Option<&HeaderValue>, port: Option<u16>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, given)) if port.is_some_and(|p| given == p.to_string()) => name,
        Some(_) => return false,
        None => host,
    };
    name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost")
}

/// The `Message` of the `400` for a `Host` other than the listener's.
pub const WRONG_HOST: &str =
    "Host must be 127.0.0.1 or localhost (without a port, or with the listener's): the \
     credentials URI is http://127.0.0.1:PORT/v1/credentials";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rule() {
        let rows: &[(Option<&str>, bool)] = &[
            (Some("127.0.0.1"), true),
            (Some("127.0.0.1:17301"), true),
            (Some("localhost"), true),
            (Some("LocalHost:17301"), true),
            (None, false),
            (Some(""), false),
            (Some("127.0.0.1:"), false),
            (Some("127.0.0.1:x"), false),
            (Some("attacker.example"), false),
            (Some("attacker.example:17301"), false),
            (Some("127.0.0.1.nip.io:17301"), false),
            (Some("127.0.0.2:17301"), false),
            (Some("[::1]:17301"), false),
            // Another port: another loopback service's name, not this listener's.
            (Some("127.0.0.1:1"), false),
            (Some("localhost:8080"), false),
            (Some("127.0.0.1:017301"), false),
            (Some("127.0.0.1:+17301"), false),
            (Some("localhost.:17301"), false),
            (Some("0x7f000001"), false),
        ];
        for &(host, want) in rows {
            let value = host.map(|h| HeaderValue::from_str(h).unwrap());
            assert_eq!(host_allowed(value.as_ref(), Some(17301)), want, "{host:?}");
        }
        let bare = HeaderValue::from_static("127.0.0.1");
        assert!(host_allowed(Some(&bare), None));
        let with_port = HeaderValue::from_static("127.0.0.1:17301");
        assert!(!host_allowed(Some(&with_port), None));
    }
}
