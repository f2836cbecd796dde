//! `[bridge]`: the loopback TCP listener for credentials URIs, declared once
//! ([`crate::settings`]).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::settings::{section, Optional, Text};

/// The port the README and the packaged configuration use, so the credentials URI is the same
/// on every instance of a fleet.
pub const SUGGESTED_PORT: u16 = 17301;

section! {
    /// `[bridge]`: the loopback TCP listener for `ALIBABA_CLOUD_CREDENTIALS_URI`.
    pub struct Config["bridge"] {
        /// `"127.0.0.1:PORT"` (the packaged configuration suggests port 17301): also serve
        /// `GET /v1/credentials` and `GET /v1/health` on this loopback TCP address, to callers
        /// identified by the kernel's socket table and judged by the same rules as socket
        /// callers. Only `127.0.0.1` is accepted; an address that cannot be bound stops the
        /// agent at startup (exit 1). Unset: off
        listen: Option<SocketAddrV4> = None, "listen",
            Optional(Text { parse: parse_listen, print: SocketAddrV4::to_string }), Restart;
    }
}

/// Checks a bridge listen address: `127.0.0.1` and a port.
///
/// # Errors
/// Not an `IP:port` address, or an address other than `127.0.0.1` (the caller lookup covers
/// IPv4 loopback only, and any other address would serve credentials beyond this host).
pub fn parse_listen(a: &str) -> Result<SocketAddrV4, String> {
    match a.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(addr)) if *addr.ip() == Ipv4Addr::LOCALHOST => Ok(addr),
        Ok(_) => Err(format!(
            "must be 127.0.0.1 and a port, such as \"127.0.0.1:{SUGGESTED_PORT}\" (credentials \
             are for this host's processes only), got {a:?}"
        )),
        Err(_) => Err(format!(
            "expected an address such as \"127.0.0.1:{SUGGESTED_PORT}\", got {a:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_127_0_0_1_with_a_port_is_accepted() {
        assert_eq!(
            parse_listen("127.0.0.1:17301").unwrap(),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 17301)
        );
        for bad in [
            "0.0.0.0:17301",
            "127.0.0.2:17301",
            "[::1]:17301",
            "10.0.0.1:80",
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains("must be 127.0.0.1"), "{bad}: {e}");
        }
        for bad in ["127.0.0.1", "localhost:17301", ""] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains("expected an address"), "{bad}: {e}");
        }
    }
}
