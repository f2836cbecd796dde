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
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    let listen_pid = std::env::var("LISTEN_PID").ok();
    let listen_fds = std::env::var("LISTEN_FDS").ok();
    for var in LISTEN_VARS {
        // The one place the agent changes its environment (clippy.toml bans it elsewhere):
        // sd_listen_fds(3) asks for the variables to be unset once read, so that nothing the
        // process starts takes them for its own; this runs before other threads exist.
        #[allow(clippy::disallowed_methods)]
        std::env::remove_var(var);
    }
    take_passed(listen_pid.as_deref(), listen_fds.as_deref())
}

/// [`take_listener`] given the values of `LISTEN_PID` and `LISTEN_FDS` (`None` when unset).
fn take_passed(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
) -> Result<Option<Inherited>, ActivationError> {
    let count =
        passed_count(listen_pid, listen_fds, std::process::id()).map_err(ActivationError::Env)?;
    // As sd_listen_fds(3) does: every passed descriptor becomes close-on-exec (and one that is
    // not open is an error), before the count is judged.
    for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START.saturating_add(count) {
        set_cloexec(fd).map_err(ActivationError::Env)?;
    }
    let fd = match count {
        0 => return Ok(None),
        1 => SD_LISTEN_FDS_START,
        more => return Err(ActivationError::Count(more as usize)),
    };
    // SAFETY: sd_listen_fds(3): the manager passed fd 3 to this process (LISTEN_PID is ours),
    // `set_cloexec` checked it is open, and nothing else in this process owns it: it is taken
    // here once, before other threads exist.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = check(&owned)?;
    Ok(Some(Inherited {
        listener: std::os::unix::net::UnixListener::from(owned),
        path,
    }))
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
    fn no_listen_fds_means_no_socket() {
        // LISTEN_PID names another process: not for us.
        assert!(take_passed(Some("1"), Some("1")).unwrap().is_none());
        assert!(take_passed(None, None).unwrap().is_none());
    }

    #[test]
    fn listen_pid_and_listen_fds_are_read_as_sd_listen_fds_does() {
        let me = 4242;
        assert_eq!(passed_count(Some("4242"), Some("1"), me).unwrap(), 1);
        assert_eq!(passed_count(Some("4242"), Some("2"), me).unwrap(), 2);
        assert_eq!(passed_count(Some("1"), Some("1"), me).unwrap(), 0);
        assert_eq!(passed_count(None, Some("1"), me).unwrap(), 0);
        assert_eq!(passed_count(Some("4242"), None, me).unwrap(), 0);
        for (pid, fds, what) in [
            (Some("me"), Some("1"), "invalid LISTEN_PID"),
            (Some("4242"), Some("-1"), "invalid LISTEN_FDS"),
            (Some("4242"), Some("4294967295"), "invalid LISTEN_FDS"),
        ] {
            let e = passed_count(pid, fds, me).unwrap_err();
            assert_eq!(e.to_string(), what, "{pid:?} {fds:?}");
        }
    }

    /// The removal of the variables, seen in a child process (this test binary running only
    /// [`take_listener_in_a_child`] with `LISTEN_PID=1 LISTEN_FDS=1`), so that no test changes
    /// this process's environment (`std::env::set_var` is banned, see clippy.toml).
    #[test]
    fn no_listen_fds_means_no_socket_and_the_variables_are_removed() {
        let name = concat!(module_path!(), "::take_listener_in_a_child");
        let name = name.split_once("::").unwrap().1; // test names start below the crate
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--ignored", "--test-threads=1"])
            .env("LISTEN_PID", "1")
            .env("LISTEN_FDS", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run in a child process by the test above"]
    fn take_listener_in_a_child() {
        assert_eq!(
            std::env::var("LISTEN_PID").as_deref(),
            Ok("1"),
            "run by no_listen_fds_means_no_socket_and_the_variables_are_removed, not alone"
        );
        // LISTEN_PID names another process: not for us.
        assert!(take_listener().unwrap().is_none());
        assert!(std::env::var_os("LISTEN_PID").is_none());
        assert!(std::env::var_os("LISTEN_FDS").is_none());
    }
}
