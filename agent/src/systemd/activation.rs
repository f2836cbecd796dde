//! Socket activation: the listening sockets handed over by systemd (`sd_listen_fds(3)`,
//! `sd_listen_fds_with_names(3)`).
//!
//! With `.socket` units, systemd creates and owns the sockets: they exist before the agent runs
//! (early clients queue instead of failing), they survive agent restarts (none is lost), and
//! their mode, group and address are the units'. The manager passes them from fd 3 on with
//! `LISTEN_FDS=<count>`, `LISTEN_PID=<our pid>` and `LISTEN_FDNAMES=<name>:<name>…` (each unit's
//! `FileDescriptorName=`, by default the unit's name). [`take_sockets`] takes them and removes
//! the three variables from the environment. Each descriptor's role comes from its name
//! ([`roles`]):
//!
//! | name | role | checked |
//! |---|---|---|
//! | [`BRIDGE_FD_NAME`] (`bridge`) | the `[bridge]` loopback listener | listening stream `AF_INET` socket on `127.0.0.1` |
//! | any other, or none (`LISTEN_FDNAMES` unset, as from older managers) | the Unix socket (`ecs-credential-agent.socket` names it [`SOCKET_FD_NAME`]) | listening stream `AF_UNIX` socket |
//!
//! At most one of each; anything else is an [`ActivationError`] (exit 78). So a single unnamed
//! fd is the Unix socket, as before names existed. The agent never unlinks a passed Unix socket
//! ([`Listener::from_std`](crate::server::Listener::from_std)); [`mismatches`] compares its mode
//! and group with `socket_mode`/`socket_group` so a mismatch is logged. How a passed `bridge`
//! socket meets `[bridge] listen` is [`bridge_address`]'s rule.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike};

use crate::server::config::Config as ServerConfig;

/// The environment variables of the protocol, removed once read.
const LISTEN_VARS: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// `FileDescriptorName=` of the bridge socket unit (`ecs-credential-agent-bridge.socket`): the
/// passed descriptor with this name is the `[bridge]` loopback TCP listener.
pub const BRIDGE_FD_NAME: &str = "bridge";

/// `FileDescriptorName=` of the Unix socket unit (`ecs-credential-agent.socket`). Any name
/// other than [`BRIDGE_FD_NAME`] is taken for the Unix socket, so this one is for people
/// reading the units.
pub const SOCKET_FD_NAME: &str = "socket";

/// Why the sockets systemd passed cannot be used. Each message names the descriptor (fd number
/// and name) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS`/`LISTEN_PID` are malformed, or a passed fd is not open.
    #[error("socket activation: LISTEN_FDS/LISTEN_PID: {0}")]
    Env(#[source] io::Error),
    /// Two descriptors claim the same role.
    #[error("socket activation: systemd passed more than one {role} (fds {first} and {second}, LISTEN_FDNAMES={names:?}); the agent serves one Unix socket and at most one FileDescriptorName=bridge listener")]
    Duplicate {
        /// "Unix socket" or "bridge listener".
        role: &'static str,
        /// The first fd.
        first: RawFd,
        /// The second fd.
        second: RawFd,
        /// `LISTEN_FDNAMES` as passed.
        names: String,
    },
    /// A socket could not be inspected.
    #[error("socket activation: cannot inspect fd {fd} ({name}): {source}")]
    Inspect {
        /// The fd.
        fd: RawFd,
        /// Its name.
        name: String,
        /// The error.
        source: nix::Error,
    },
    /// A socket is of the wrong kind.
    #[error("socket activation: fd {fd} ({name}) is not {what} (the Unix socket unit needs ListenStream=/path, the bridge unit ListenStream=127.0.0.1:PORT)")]
    Unusable {
        /// The fd.
        fd: RawFd,
        /// Its name.
        name: String,
        /// What it should be.
        what: &'static str,
    },
    /// The bridge socket's address is not the one `[bridge] listen` names.
    #[error("socket activation: the bridge socket systemd passed listens on {passed}, but [bridge] listen is {configured}; make ListenStream= in ecs-credential-agent-bridge.socket and [bridge] listen agree (applications are given the configured address)")]
    BridgeAddress {
        /// The passed socket's address.
        passed: SocketAddrV4,
        /// `[bridge] listen`.
        configured: SocketAddrV4,
    },
}

/// A Unix listening socket handed over by systemd.
#[derive(Debug)]
pub struct Inherited {
    /// The socket (close-on-exec, blocking; [`Listener::from_std`](crate::server::Listener::from_std) makes it non-blocking).
    pub listener: std::os::unix::net::UnixListener,
    /// Its filesystem path (`getsockname(2)`), if it has one.
    pub path: Option<PathBuf>,
}

/// Everything systemd passed, by role.
#[derive(Debug, Default)]
pub struct Passed {
    /// The Unix socket, if one was passed.
    pub socket: Option<Inherited>,
    /// The bridge listener (named [`BRIDGE_FD_NAME`]), checked to listen on `127.0.0.1`.
    pub bridge: Option<std::net::TcpListener>,
}

/// Takes the sockets passed by systemd, if `LISTEN_PID` names this process and `LISTEN_FDS` is
/// set; removes the `LISTEN_*` variables either way.
///
/// Call it before starting threads (it changes the environment) and at most once.
///
/// # Errors
/// [`ActivationError`] when the variables are malformed, two descriptors claim one role, or a
/// descriptor is not the kind of socket its name says.
pub fn take_sockets() -> Result<Passed, ActivationError> {
    let listen_pid = std::env::var("LISTEN_PID").ok();
    let listen_fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in LISTEN_VARS {
        // The one place the agent changes its environment (clippy.toml bans it elsewhere):
        // sd_listen_fds(3) asks for the variables to be unset once read, so that nothing the
        // process starts takes them for its own; this runs before other threads exist.
        #[allow(clippy::disallowed_methods)]
        std::env::remove_var(var);
    }
    take_passed(
        listen_pid.as_deref(),
        listen_fds.as_deref(),
        names.as_deref(),
    )
}

/// [`take_sockets`] given the values of `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`
/// (`None` when unset).
fn take_passed(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
) -> Result<Passed, ActivationError> {
    let count =
        passed_count(listen_pid, listen_fds, std::process::id()).map_err(ActivationError::Env)?;
    // As sd_listen_fds(3) does: every passed descriptor becomes close-on-exec (and one that is
    // not open is an error), before anything else is judged.
    for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START.saturating_add(count) {
        set_cloexec(fd).map_err(ActivationError::Env)?;
    }
    let roles = roles(count, listen_fdnames)?;
    let take = |fd: RawFd| {
        // SAFETY: sd_listen_fds(3): the manager passed this fd to this process (LISTEN_PID is
        // ours), `set_cloexec` checked it is open, and nothing else in this process owns it:
        // `roles` hands each fd out at most once, here, before other threads exist.
        #[allow(unsafe_code)]
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        (fd, owned)
    };
    let mut passed = Passed::default();
    if let Some((fd, name)) = roles.socket {
        let (fd, owned) = take(fd);
        let path = check_unix(fd, &name, &owned)?;
        passed.socket = Some(Inherited {
            listener: std::os::unix::net::UnixListener::from(owned),
            path,
        });
    }
    if let Some(fd) = roles.bridge {
        let (fd, owned) = take(fd);
        passed.bridge = Some(check_bridge(fd, owned)?);
    }
    Ok(passed)
}

/// Which passed fd plays which role: the Unix socket (with its name, for messages) and the
/// bridge listener.
#[derive(Debug, Default, PartialEq, Eq)]
struct Roles {
    socket: Option<(RawFd, String)>,
    bridge: Option<RawFd>,
}

/// Assigns the `count` descriptors from fd 3 on to roles by their names in `LISTEN_FDNAMES`
/// (colon-separated, in fd order; a missing or short list leaves the rest unnamed): see the
/// module docs' table.
///
/// # Errors
/// [`ActivationError::Duplicate`] when two descriptors claim one role.
fn roles(count: RawFd, listen_fdnames: Option<&str>) -> Result<Roles, ActivationError> {
    let mut names = listen_fdnames.map(|n| n.split(':'));
    let mut out = Roles::default();
    for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START.saturating_add(count) {
        let name = names.as_mut().and_then(Iterator::next).unwrap_or("");
        let duplicate = |role, first| ActivationError::Duplicate {
            role,
            first,
            second: fd,
            names: listen_fdnames.unwrap_or("").to_owned(),
        };
        if name == BRIDGE_FD_NAME {
            if let Some(first) = out.bridge {
                return Err(duplicate("bridge listener", first));
            }
            out.bridge = Some(fd);
        } else {
            if let Some((first, _)) = out.socket {
                return Err(duplicate("Unix socket", first));
            }
            let shown = if name.is_empty() { "unnamed" } else { name };
            out.socket = Some((fd, shown.to_owned()));
        }
    }
    Ok(out)
}

/// The address to serve the passed bridge socket on, given `[bridge] listen`: the passed
/// address when it is the configured one, or when `[bridge] listen` is unset (enabling the
/// bridge socket unit is the operator's choice; the agent serves it and says that `env` needs
/// the key).
///
/// # Errors
/// [`ActivationError::BridgeAddress`] when both are set and differ: applications are given the
/// configured address (`env`), and serving another would leave it to whoever binds it next.
pub fn bridge_address(
    passed: SocketAddrV4,
    configured: Option<SocketAddrV4>,
) -> Result<SocketAddrV4, ActivationError> {
    match configured {
        Some(configured) if configured != passed => {
            Err(ActivationError::BridgeAddress { passed, configured })
        }
        _ => Ok(passed),
    }
}

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: RawFd = 3;

/// How many descriptors `LISTEN_PID`/`LISTEN_FDS` say were passed to process `own_pid`: none
/// when either is unset or `LISTEN_PID` names another process.
///
/// # Errors
/// `InvalidInput` when a value is not a number.
fn passed_count(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    own_pid: u32,
) -> io::Result<RawFd> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid {what}"));
    let Some(pid) = listen_pid else {
        return Ok(0);
    };
    let pid: u32 = pid.parse().map_err(|_| invalid("LISTEN_PID"))?;
    if pid != own_pid {
        return Ok(0);
    }
    let Some(fds) = listen_fds else {
        return Ok(0);
    };
    fds.parse::<u32>()
        .ok()
        .and_then(|n| RawFd::try_from(n).ok())
        .ok_or_else(|| invalid("LISTEN_FDS"))
}

/// Sets `FD_CLOEXEC` on `fd` (its only descriptor flag).
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) F_SETFD reads and writes no memory; on a descriptor that is not open it
    // fails with EBADF.
    #[allow(unsafe_code)]
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks `SO_TYPE` (stream) and `SO_ACCEPTCONN` (listening); returns the bound address.
fn check_listening(
    fd: RawFd,
    name: &str,
    owned: &OwnedFd,
) -> Result<nix::sys::socket::SockaddrStorage, ActivationError> {
    let inspect = |source| ActivationError::Inspect {
        fd,
        name: name.to_owned(),
        source,
    };
    let unusable = |what| ActivationError::Unusable {
        fd,
        name: name.to_owned(),
        what,
    };
    let kind = getsockopt(&owned.as_fd(), sockopt::SockType).map_err(inspect)?;
    if kind != SockType::Stream {
        return Err(unusable("a stream socket"));
    }
    if !getsockopt(&owned.as_fd(), sockopt::AcceptConn).map_err(inspect)? {
        return Err(unusable("listening"));
    }
    getsockname(owned.as_raw_fd()).map_err(inspect)
}

/// [`check_listening`], and the address family `AF_UNIX`; returns the socket's path.
fn check_unix(fd: RawFd, name: &str, owned: &OwnedFd) -> Result<Option<PathBuf>, ActivationError> {
    let addr = check_listening(fd, name, owned)?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err(ActivationError::Unusable {
            fd,
            name: name.to_owned(),
            what: "a Unix socket",
        });
    }
    Ok(addr
        .as_unix_addr()
        .and_then(|a| a.path())
        .map(Path::to_path_buf))
}

/// [`check_listening`], and an `AF_INET` address on `127.0.0.1` (the caller lookup covers IPv4
/// loopback only, and any other address would serve credentials beyond this host); returns the
/// listener.
fn check_bridge(fd: RawFd, owned: OwnedFd) -> Result<std::net::TcpListener, ActivationError> {
    let addr = check_listening(fd, BRIDGE_FD_NAME, &owned)?;
    let unusable = || ActivationError::Unusable {
        fd,
        name: BRIDGE_FD_NAME.to_owned(),
        what: "a TCP socket on 127.0.0.1",
    };
    if addr.family() != Some(AddressFamily::Inet) {
        return Err(unusable());
    }
    let listener = std::net::TcpListener::from(owned);
    match listener.local_addr() {
        Ok(SocketAddr::V4(a)) if *a.ip() == Ipv4Addr::LOCALHOST => Ok(listener),
        _ => Err(unusable()),
    }
}

/// Differences between the socket file at `path` and what `cfg` asks for (`socket_path`,
/// `socket_mode`, and `socket_group` when set), one sentence each; empty when they agree.
pub fn mismatches(path: &Path, cfg: &ServerConfig) -> Vec<String> {
    let mut out = Vec::new();
    if path != cfg.socket_path {
        out.push(format!(
            "systemd passed the socket {}, not socket_path {}; serving on the passed one",
            path.display(),
            cfg.socket_path.display()
        ));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.push(format!("cannot stat {}: {e}", path.display()));
            return out;
        }
    };
    let mode = meta.mode() & 0o777;
    if mode != cfg.socket_mode & 0o777 {
        out.push(format!(
            "socket mode is {mode:04o} but socket_mode is {:04o}; the .socket unit's SocketMode= decides",
            cfg.socket_mode & 0o777
        ));
    }
    if let Some(group) = &cfg.socket_group {
        let want = group.parse::<u32>().ok().or_else(|| {
            nix::unistd::Group::from_name(group)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        });
        if want != Some(meta.gid()) {
            out.push(format!(
                "socket group is gid {} but socket_group is {group:?}; the .socket unit's SocketGroup= decides",
                meta.gid()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
