//! `[server]`: the Unix socket and who may use it, declared once ([`crate::settings`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::settings::parse_mode;
use crate::settings::{section, Count, Ids, Millis, Mode, Optional, Text};

/// `[server] socket_path` by default.
pub const DEFAULT_SOCKET_PATH: &str = "/run/ecs-credential-agent/agent.sock";
/// The longest `[server] socket_path`, in bytes: `bind(2)` takes a path in `sun_path`, which
/// holds 108 bytes, the terminating NUL included.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;
/// `[server] socket_mode` by default: root only.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;
/// `[server] allowed_uids` by default: none besides root and the agent's own uid, which are
/// always allowed ([`Trusted`](crate::policy::Trusted)).
pub const DEFAULT_ALLOWED_UIDS: &[u32] = &[];
/// `[server] max_connections` by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// `[server] header_timeout_ms` by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_millis(5_000);
/// `[server] idle_timeout_ms` by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `[server] first_credentials_wait_ms` by default.
pub const DEFAULT_FIRST_CREDENTIALS_WAIT: Duration = Duration::from_millis(5_000);
/// `[server] shutdown_grace_ms` by default.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_millis(5_000);

section! {
    /// `[server]`: the Unix socket and who may use it. A reload applies the live keys to
    /// connections accepted from then on; the rules (`allowed_uids`, `allowed_gids`) also to
    /// open connections, at their next request.
    pub struct Config["server"] {
        /// the socket (an absolute path of at most 107 bytes)
        socket_path: PathBuf = PathBuf::from(DEFAULT_SOCKET_PATH), "socket_path",
            Text { parse: parse_socket_path, print: |p: &PathBuf| p.display().to_string() },
            Restart;
        /// permission bits of the socket file, a quoted octal string (`"0660"`, not `660`)
        socket_mode: u32 = DEFAULT_SOCKET_MODE, "socket_mode", Mode, Restart;
        /// group owner of the socket file (name or number), for `"0660"`; unset: the owner's
        /// group
        socket_group: Option<String> = None, "socket_group",
            Optional(Text { parse: parse_group, print: String::clone }), Restart;
        /// callers with these uids are served (root and the agent's own uid always are)
        allowed_uids: Vec<u32> = DEFAULT_ALLOWED_UIDS.to_vec(), "allowed_uids", Ids, Live;
        /// callers whose primary or supplementary group is one of these are served
        allowed_gids: Vec<u32> = Vec::new(), "allowed_gids", Ids, Live;
        /// beyond it, new connections get `503 TooManyConnections`
        max_connections: usize = DEFAULT_MAX_CONNECTIONS, "max_connections",
            Count(1, 1_000_000), Live;
        /// beyond it, a uid's new connections get `503 TooManyConnections` (root and the
        /// agent's own uid are exempt); unset: half of `max_connections`
        max_connections_per_uid: Option<usize> = None, "max_connections_per_uid",
            Optional(Count(1, 1_000_000)), Live;
        /// a client must send its request head within this many milliseconds
        header_timeout: Duration = DEFAULT_HEADER_TIMEOUT, "header_timeout_ms",
            Millis(1, 600_000), Live;
        /// idle keep-alive connections are closed after this many milliseconds
        idle_timeout: Duration = DEFAULT_IDLE_TIMEOUT, "idle_timeout_ms",
            Millis(1, 3_600_000), Live;
        /// how long an early request waits for the first credentials, in milliseconds
        first_credentials_wait: Duration = DEFAULT_FIRST_CREDENTIALS_WAIT,
            "first_credentials_wait_ms", Millis(0, 600_000), Live;
        /// how long in-flight requests may take after SIGTERM, in milliseconds
        shutdown_grace: Duration = DEFAULT_SHUTDOWN_GRACE, "shutdown_grace_ms",
            Millis(0, 600_000), Live;
    }
}

/// Checks a socket path: absolute, and at most [`MAX_SOCKET_PATH_BYTES`] long (what `sun_path`
/// holds). Every path this accepts binds ([`crate::server::Listener::bind`]).
///
/// # Errors
/// What is wrong, e.g. `expected an absolute path, got "relative.sock"`.
pub fn validate_socket_path(p: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let len = p.as_os_str().as_bytes().len();
    if !p.is_absolute() {
        Err(format!(
            "expected an absolute path, got {:?}",
            p.display().to_string()
        ))
    } else if len > MAX_SOCKET_PATH_BYTES {
        Err(format!(
            "path is {len} bytes; a Unix socket path is at most {MAX_SOCKET_PATH_BYTES} bytes (sun_path holds 108 with the terminating NUL)"
        ))
    } else {
        Ok(())
    }
}

impl Config {
    /// The most connections one uid may hold at once: `max_connections_per_uid`, or half of
    /// `max_connections` (at least 1) when unset. Root and the agent's own uid are exempt.
    pub fn per_uid_limit(&self) -> usize {
        self.max_connections_per_uid
            .unwrap_or((self.max_connections / 2).max(1))
    }
}

fn parse_socket_path(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    validate_socket_path(&p).map(|()| p)
}

/// Checks `socket_group`: a group number, or a group name known to this system (looked up in
/// the group database when the configuration is read, so a typo is a configuration error).
fn parse_group(g: &str) -> Result<String, String> {
    if g.is_empty() {
        return Err("expected a group name or number, got \"\"".to_owned());
    }
    if g.parse::<u32>().is_ok() {
        return Ok(g.to_owned());
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(_)) => Ok(g.to_owned()),
        Ok(None) => Err(format!("no group named {g:?} on this system")),
        Err(e) => Err(format!("cannot look up group {g:?}: {e}")),
    }
}
