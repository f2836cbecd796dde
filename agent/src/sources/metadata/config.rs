//! `[metadata]`: how the agent reaches the instance metadata service, declared once
//! ([`crate::settings`]).

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use crate::settings::{section, Flag, Millis, Optional, Secs, Text};

/// `[metadata] endpoint` by default: the metadata service's address (ECS documentation,
/// "instance metadata").
pub const DEFAULT_ENDPOINT: &str = "http://100.100.100.200";
/// The largest metadata token TTL the service accepts, in seconds (ECS documentation, hardened
/// mode: 1 to 21600).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// `[metadata] token_ttl_secs` by default: the longest the service grants.
pub const DEFAULT_TOKEN_TTL: Duration = MAX_TOKEN_TTL;
/// `[metadata] connect_timeout_ms` by default (the official SDKs use 1 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// `[metadata] read_timeout_ms` by default (the official SDKs use 1 s).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(1_000);

section! {
    /// `[metadata]`: how to reach the metadata service.
    pub struct Config["metadata"] {
        /// metadata service; plain `http://host[:port]`, never reached through a proxy
        /// (`HTTP_PROXY` and friends are ignored)
        endpoint: Endpoint = Endpoint::default(), "endpoint", Text::of(), Restart;
        /// RAM role; unset: discovered from `/latest/meta-data/ram/security-credentials/` on
        /// every refresh
        role_name: Option<RoleName> = None, "role_name", Optional(Text::of()), Restart;
        /// metadata token TTL asked for, in seconds (the service grants 1 to 21600); the token
        /// is cached for its TTL
        token_ttl: Duration = DEFAULT_TOKEN_TTL, "token_ttl_secs",
            Secs(1, MAX_TOKEN_TTL.as_secs()), Restart;
        /// connect timeout per metadata request, in milliseconds
        connect_timeout: Duration = DEFAULT_CONNECT_TIMEOUT, "connect_timeout_ms",
            Millis(1, 60_000), Restart;
        /// read timeout per metadata request, in milliseconds
        read_timeout: Duration = DEFAULT_READ_TIMEOUT, "read_timeout_ms",
            Millis(1, 60_000), Restart;
        /// when the token request fails, fall back to tokenless requests (normal-mode
        /// instances only), with a warning each time
        allow_imdsv1_fallback: bool = false, "allow_imdsv1_fallback", Flag, Restart;
    }
}

/// A checked metadata endpoint: `http://host[:port]`, no path, query, fragment or user, no
/// trailing slash (the service speaks plain HTTP only). Reads as the `&str` it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(String);

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint(DEFAULT_ENDPOINT.to_owned())
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    /// # Errors
    /// What is wrong, e.g. `must start with http:// (…), got "https://…"`.
    fn from_str(s: &str) -> Result<Endpoint, String> {
        match super::client::parse_endpoint(s) {
            Ok(origin) => Ok(Endpoint(origin)),
            Err(super::MetadataError::InvalidConfig { reason, .. }) => {
                Err(format!("{reason}, got {s:?}"))
            }
            Err(other) => Err(other.to_string()),
        }
    }
}

impl Endpoint {
    /// An endpoint that skipped the check, to test the checks behind it.
    #[cfg(test)]
    pub(crate) fn unchecked(endpoint: &str) -> Endpoint {
        Endpoint(endpoint.to_owned())
    }
}

impl Deref for Endpoint {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A checked RAM role name ([`check_role_name`](super::response::check_role_name): letters,
/// digits, `.`, `-`, `_`, at most 64 characters). Reads as the `&str` it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleName(String);

impl std::str::FromStr for RoleName {
    type Err = String;

    /// # Errors
    /// What is wrong with the name (quoted escaped, at most 64 characters).
    fn from_str(s: &str) -> Result<RoleName, String> {
        super::response::check_role_name(s).map(|()| RoleName(s.to_owned()))
    }
}

impl RoleName {
    /// A name that skipped the check, to test the checks behind it.
    #[cfg(test)]
    pub(crate) fn unchecked(name: &str) -> RoleName {
        RoleName(name.to_owned())
    }
}

impl Deref for RoleName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
