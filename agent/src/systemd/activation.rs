//! Socket activation: the listening socket handed over by systemd (`sd_listen_fds(3)`).
//!
//! With a `.socket` unit, systemd creates and owns the socket: it exists before the agent runs
//! (early clients queue instead of failing), it survives agent restarts (none is lost), and its
//! mode and group are the unit's `SocketMode=`/`SocketGroup=`. The manager passes it as fd 3
//! with `LISTEN_FDS=1` and `LISTEN_PID=<our pid>`. [`take_listener`] takes it, checks that it is
//! a listening stream `AF_UNIX` socket, and removes `LISTEN_FDS`, `LISTEN_PID` and
//! `LISTEN_FDNAMES` from the environment. The agent never unlinks such a socket
//! ([`Listener::from_std`](crate::server::Listener::from_std)); [`mismatches`] compares its
//! mode and group with `socket_mode`/`socket_group` so a mismatch is logged.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike};

use crate::server::config::Config as ServerConfig;

/// The environment variables of the protocol, removed once read.
const LISTEN_VARS: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// Why the socket systemd passed cannot be used. Each message names fd 3 and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS`/`LISTEN_PID` are malformed, or fd 3 is not open.
    #[error("socket activation: LISTEN_FDS/LISTEN_PID: {0}")]
    Env(#[source] io::Error),
    /// More than one socket was passed.
    #[error("socket activation: systemd passed {0} sockets; the agent serves exactly one (one ListenStream= in the .socket unit)")]
    Count(usize),
    /// The socket could not be inspected.
    #[error("socket activation: cannot inspect fd 3: {0}")]
    Inspect(#[source] nix::Error),
    /// The socket is of the wrong kind.
    #[error("socket activation: fd 3 is not {0} (the .socket unit needs ListenStream=/path)")]
    Unusable(&'static str),
}

/// A listening socket handed over by systemd.
#[derive(Debug)]
pub struct Inherited {
    /// The socket (close-on-exec, blocking; [`Listener::from_std`](crate::server::Listener::from_std) makes it non-blocking).
    pub listener: std::os::unix::net::UnixListener,
    /// Its filesystem path (`getsockname(2)`), if it has one.
    pub path: Option<PathBuf>,
}

/// Takes the socket passed by systemd, if `LISTEN_PID` names this process and `LISTEN_FDS` is
/// set; removes the `LISTEN_*` variables either way.
///
/// Call it before starting threads (it changes the environment) and at most once.
///
/// # Errors
/// [`ActivationError`] when the variables are malformed, more than one socket was passed, or
/// fd 3 is not a listening stream Unix socket.
pub fn take_listener() -> Result<Option<Inherited>, ActivationError> {
    let fds = sd_notify::listen_fds();
    for var in LISTEN_VARS {
        std::env::remove_var(var);
    }
    let fds: Vec<_> = fds.map_err(ActivationError::Env)?.collect();
    let fd = match fds.as_slice() {
        [] => return Ok(None),
        [fd] => *fd,
        more => return Err(ActivationError::Count(more.len())),
    };
    // SAFETY: sd_listen_fds(3): the manager passed fd 3 to this process (LISTEN_PID is ours),
    // `listen_fds` checked it is open (it set FD_CLOEXEC on it), and nothing else in this
    // process owns it: it is taken here once, before other threads exist.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = check(&owned)?;
    Ok(Some(Inherited {
        listener: std::os::unix::net::UnixListener::from(owned),
        path,
    }))
}

/// Checks `SO_TYPE` (stream), `SO_ACCEPTCONN` (listening) and the address family (`AF_UNIX`);
/// returns the socket's path.
fn check(fd: &OwnedFd) -> Result<Option<PathBuf>, ActivationError> {
    let kind = getsockopt(&fd.as_fd(), sockopt::SockType).map_err(ActivationError::Inspect)?;
    if kind != SockType::Stream {
        return Err(ActivationError::Unusable("a stream socket"));
    }
    let listening =
        getsockopt(&fd.as_fd(), sockopt::AcceptConn).map_err(ActivationError::Inspect)?;
    if !listening {
        return Err(ActivationError::Unusable("listening"));
    }
    let addr: nix::sys::socket::SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(ActivationError::Inspect)?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err(ActivationError::Unusable("a Unix socket"));
    }
    Ok(addr
        .as_unix_addr()
        .and_then(|a| a.path())
        .map(Path::to_path_buf))
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
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn checks_accept_a_listening_unix_stream_socket_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let fd = OwnedFd::from(l);
        assert_eq!(check(&fd).unwrap(), Some(path.clone()));

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = check(&OwnedFd::from(tcp)).unwrap_err();
        assert!(e.to_string().contains("is not a Unix socket"), "{e}");

        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = check(&OwnedFd::from(a)).unwrap_err();
        assert!(e.to_string().contains("is not listening"), "{e}");

        let d = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let e = check(&OwnedFd::from(d)).unwrap_err();
        assert!(e.to_string().contains("is not a stream socket"), "{e}");
    }

    #[test]
    fn mode_group_and_path_mismatches_are_described() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let gid = std::fs::metadata(&path).unwrap().gid();
        let mut cfg = ServerConfig {
            socket_path: path.clone(),
            socket_mode: 0o660,
            socket_group: Some(gid.to_string()),
            ..ServerConfig::default()
        };
        assert!(
            mismatches(&path, &cfg).is_empty(),
            "{:?}",
            mismatches(&path, &cfg)
        );
        cfg.socket_mode = 0o600;
        cfg.socket_group = Some((gid + 1).to_string());
        cfg.socket_path = dir.path().join("other.sock");
        let m = mismatches(&path, &cfg);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("not socket_path"), "{m:?}");
        assert!(
            m[1].contains("socket mode is 0660 but socket_mode is 0600"),
            "{m:?}"
        );
        assert!(
            m[2].contains(&format!("socket group is gid {gid}")),
            "{m:?}"
        );
    }

    #[test]
    fn no_listen_fds_means_no_socket_and_the_variables_are_removed() {
        // LISTEN_PID names another process: not for us.
        std::env::set_var("LISTEN_PID", "1");
        std::env::set_var("LISTEN_FDS", "1");
        assert!(take_listener().unwrap().is_none());
        assert!(std::env::var_os("LISTEN_PID").is_none());
        assert!(std::env::var_os("LISTEN_FDS").is_none());
    }
}
