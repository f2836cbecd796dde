//! `[sts]`: how the agent reaches STS to assume the profiles' RAM roles, declared once
//! ([`crate::settings`]). Every key needs a restart; profiles themselves reload live.

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use crate::settings::{section, Millis, Optional, Text};

/// `[sts] connect_timeout_ms` by default (the generated Alibaba Cloud SDKs use 5 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(5_000);
/// `[sts] read_timeout_ms` by default (the generated Alibaba Cloud SDKs use 10 s).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(10_000);

section! {
    /// `[sts]`: how to reach STS for the profiles' `AssumeRole` calls.
    pub struct Config["sts"] {
        /// STS endpoint, a full `https://host[:port]` URL with no path (`http://` is refused);
        /// unset: `https://sts-vpc.<region>.aliyuncs.com`, the region read from the metadata
        /// service
        endpoint: Option<Endpoint> = None, "endpoint", Optional(Text::of()), Restart;
        /// a PEM file whose certificates are trusted for STS in addition to the system's trust
        /// store (for tests against an emulator); an absolute path
        ca_file: Option<PathBuf> = None, "ca_file",
            Optional(Text { parse: parse_ca_file, print: |p: &PathBuf| p.display().to_string() }),
            Restart;
        /// an `http://host:port` proxy for STS requests (an HTTP `CONNECT` tunnel, no proxy
        /// authentication); unset: no proxy (`HTTPS_PROXY` and friends are ignored)
        proxy: Option<Proxy> = None, "proxy", Optional(Text::of()), Restart;
        /// connect timeout per STS request (TLS handshake included), in milliseconds
        connect_timeout: Duration = DEFAULT_CONNECT_TIMEOUT, "connect_timeout_ms",
            Millis(1, 60_000), Restart;
        /// how long STS may take to answer once connected, in milliseconds: a whole call is
        /// bounded by `connect_timeout_ms` + 2 × `read_timeout_ms`
        read_timeout: Duration = DEFAULT_READ_TIMEOUT, "read_timeout_ms",
            Millis(1, 60_000), Restart;
    }
}

/// Checks `[sts] ca_file`: an absolute path.
///
/// # Errors
/// `expected an absolute path, got "…"`.
pub fn parse_ca_file(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!("expected an absolute path, got {s:?}"))
    }
}

/// A checked STS endpoint: `https://host[:port]`, no path, query, fragment or user, no trailing
/// slash. Reads as the `&str` it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    origin: String,
    host: String,
    port: u16,
}

impl Endpoint {
    /// The default endpoint for `region` (a checked region id, `[a-z0-9-]`):
    /// `https://sts-vpc.<region>.aliyuncs.com`, the VPC endpoint, reachable from an instance
    /// without public egress.
    pub fn for_region(region: &str) -> Endpoint {
        let host = format!("sts-vpc.{region}.aliyuncs.com");
        Endpoint {
            origin: format!("https://{host}"),
            host,
            port: 443,
        }
    }

    /// `host[:port]` as sent in the `Host` header and signed (the port only when not 443).
    pub fn authority(&self) -> &str {
        self.origin.strip_prefix("https://").unwrap_or(&self.origin)
    }

    /// The host (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (443 unless given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, the port always given (for a proxy's `CONNECT`).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    /// # Errors
    /// What is wrong, e.g. `must start with https:// (STS is called over TLS only), got "http://…"`.
    fn from_str(s: &str) -> Result<Endpoint, String> {
        let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL ({e}), got {s:?}"))?;
        if url.scheme() != "https" {
            return Err(format!(
                "must start with https:// (STS is called over TLS only; http:// would send the \
                 signed request and the new credentials in clear), got {s:?}"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("has no host, got {s:?}"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("must not carry a user or password, got {s:?}"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "must be https://host[:port] with no path, query or fragment, got {s:?}"
            ));
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(Endpoint {
            origin: url.origin().ascii_serialization(),
            host,
            port,
        })
    }
}

impl Deref for Endpoint {
    type Target = str;
    fn deref(&self) -> &str {
        &self.origin
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)
    }
}

/// A checked proxy: `http://host:port` (no proxy authentication). Reads as the `&str` it
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    url: String,
    host: String,
    port: u16,
}

impl Proxy {
    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::str::FromStr for Proxy {
    type Err = String;

    /// # Errors
    /// What is wrong: not a URL, not `http://`, no host, a user or password, or a path.
    fn from_str(s: &str) -> Result<Proxy, String> {
        // The value may hold a password: errors never repeat it.
        let url = reqwest::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        if url.scheme() != "http" {
            return Err(
                "must start with http:// (the agent asks the proxy for a CONNECT tunnel)"
                    .to_owned(),
            );
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "must not carry a user or password (proxy authentication is not \
                 supported)"
                    .to_owned(),
            );
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err("must be http://host:port with no path, query or fragment".to_owned());
        }
        Ok(Proxy {
            url: url.origin().ascii_serialization(),
            host: url.host_str().unwrap_or_default().to_owned(),
            port: url.port_or_known_default().unwrap_or(80),
        })
    }
}

impl Deref for Proxy {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_endpoints_are_accepted_as_their_origin() {
        let e: Endpoint = "https://sts-vpc.cn-hangzhou.aliyuncs.com/".parse().unwrap();
        assert_eq!(&*e, "https://sts-vpc.cn-hangzhou.aliyuncs.com");
        assert_eq!(e.authority(), "sts-vpc.cn-hangzhou.aliyuncs.com");
        let e: Endpoint = "https://127.0.0.1:8443".parse().unwrap();
        assert_eq!(e.authority(), "127.0.0.1:8443");
        assert_eq!((e.host(), e.port()), ("127.0.0.1", 8443));
        let e: Endpoint = "https://[::1]:8443".parse().unwrap();
        assert_eq!(
            (e.authority(), e.host_port()),
            ("[::1]:8443", "[::1]:8443".to_owned())
        );
        let e: Endpoint = "https://sts.aliyuncs.com:443".parse().unwrap();
        assert_eq!(
            e.authority(),
            "sts.aliyuncs.com",
            "the default port is left out"
        );
        assert_eq!(
            &*Endpoint::for_region("cn-shanghai"),
            "https://sts-vpc.cn-shanghai.aliyuncs.com"
        );
    }

    #[test]
    fn http_endpoints_are_refused_with_the_reason() {
        let e = "http://sts.aliyuncs.com".parse::<Endpoint>().unwrap_err();
        assert!(e.contains("must start with https://"), "{e}");
        assert!(e.contains("TLS only"), "{e}");
    }

    #[test]
    fn paths_queries_users_and_non_urls_are_refused() {
        for (bad, why) in [
            ("https://sts.aliyuncs.com/v1", "no path"),
            ("https://sts.aliyuncs.com/?a=1", "no path"),
            ("https://u:p@sts.aliyuncs.com", "user or password"),
            ("sts.aliyuncs.com", "not a URL"),
            ("", "not a URL"),
        ] {
            let e = bad.parse::<Endpoint>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn proxies_are_checked_without_repeating_a_password() {
        let p: Proxy = "http://10.0.0.1:3128".parse().unwrap();
        assert_eq!((p.host(), p.port()), ("10.0.0.1", 3128));
        let e = "socks5://u:hunter2@h:1".parse::<Proxy>().unwrap_err();
        assert!(e.contains("http://") && !e.contains("hunter2"), "{e}");
        let e = "https://h:1".parse::<Proxy>().unwrap_err();
        assert!(e.contains("http://"), "{e}");
        let e = "http://u:hunter2@h:1".parse::<Proxy>().unwrap_err();
        assert!(
            e.contains("user or password") && !e.contains("hunter2"),
            "{e}"
        );
        let e = "http://h:1/path".parse::<Proxy>().unwrap_err();
        assert!(e.contains("no path"), "{e}");
    }

    #[test]
    fn ca_file_must_be_absolute() {
        assert!(parse_ca_file("/etc/ssl/sts-test.pem").is_ok());
        assert!(parse_ca_file("ca.pem").unwrap_err().contains("absolute"));
    }
}
