//! A [`Caller`] from a connected Unix socket: the only place that reads socket options.
//!
//! The kernel records the connecting process's credentials when it calls `connect(2)`:
//! `SO_PEERCRED` gives pid, uid and gid, `SO_PEERGROUPS` (Linux 4.13+) the supplementary
//! groups, `SO_PEERPIDFD` (Linux 6.5+) a pidfd of the process (`socket(7)`), asked for only
//! when the process is first read ([`Process`]). The first connection tells whether the kernel
//! has `SO_PEERPIDFD`; on one without it (`ENOPROTOOPT`; Alibaba Cloud Linux 3 and Ubuntu
//! 22.04 kernels), the process is held by its `/proc/<pid>` directory instead, opened at
//! accept. Where pidfds work, a new connection thus costs one `getsockopt(2)` call
//! (`SO_PEERCRED`); the groups, a pidfd and anything in `/proc` are read through the socket,
//! lent to the caller ([`LentSocket`]), only when needed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt};

use super::lent::Lease;
use super::{Caller, LentSocket, Process};

/// Whether the kernel gives pidfds of peers (`SO_PEERPIDFD`): [`UNKNOWN`] until the first
/// connection tells, then [`PIDFDS`] or [`NO_PIDFDS`].
static PEER_PIDFD: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const PIDFDS: u8 = 1;
const NO_PIDFDS: u8 = 2;

/// How [`capture`] takes hold of the caller's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// A pidfd where the kernel gives them (taken when first needed), else the `/proc/<pid>`
    /// directory.
    Pidfd,
    /// The `/proc/<pid>` directory, what a kernel without `SO_PEERPIDFD` gets: the test-only
    /// switch that tests the fallback on kernels with pidfds (CI's always has them).
    #[cfg(test)]
    ProcDir,
}

impl Caller {
    /// The caller on the other end of the connected Unix socket `socket`, as the kernel
    /// recorded it at `connect(2)`, and the socket, now lent to the caller for the reads it
    /// defers (use the socket through the [`LentSocket`]; once that is dropped, what the
    /// caller had not read is unknown). Call it before reading anything from the socket.
    ///
    /// # Errors
    ///
    /// The OS error of `SO_PEERCRED` (the socket is then closed). Failing to read the
    /// supplementary groups (empty groups) or to hold the process (no [`Process`]: it has
    /// already exited) is not an error.
    pub fn of_unix_peer<S: AsFd>(socket: S) -> io::Result<(Caller, LentSocket<S>)> {
        capture(socket, Hold::Pidfd)
    }
}

/// [`Caller::of_unix_peer`], holding the process as `hold` says.
pub(super) fn capture<S: AsFd>(socket: S, hold: Hold) -> io::Result<(Caller, LentSocket<S>)> {
    let (socket, lease) = LentSocket::new(socket);
    let caller = capture_lent(socket.as_fd(), lease, hold)?;
    Ok((caller, socket))
}

/// The caller on the other end of `socket`, lent through `lease`.
fn capture_lent(socket: BorrowedFd<'_>, lease: Arc<Lease>, hold: Hold) -> io::Result<Caller> {
    let cred = getsockopt(&socket, sockopt::PeerCredentials)?;
    let pid = Some(cred.pid()).filter(|&p| p > 0);
    let process = pid.and_then(|pid| hold_process(socket, lease, pid, hold));
    let mut caller = Caller {
        uid: cred.uid(),
        gid: OnceLock::from(cred.gid()),
        groups: OnceLock::new(),
        pid,
        process,
        transport: super::Transport::Unix,
        cgroup_id: None,
    };
    // Held through the lent socket, the groups can be read when first needed
    // ([`Caller::groups`]); otherwise now, while the socket is at hand.
    if caller.process.as_ref().and_then(Process::socket).is_none() {
        caller.groups = OnceLock::from(groups(socket, pid));
    }
    Ok(caller)
}

/// The peer's supplementary groups: `SO_PEERGROUPS`, else (kernels before 4.13) the
/// `Groups:` line of `/proc/<pid>/status`; empty when neither can be read.
pub(super) fn groups(socket: BorrowedFd<'_>, pid: Option<i32>) -> Vec<u32> {
    match peer_groups(socket) {
        Ok(groups) => groups,
        Err(e) => {
            tracing::debug!(error = %e, "SO_PEERGROUPS failed; reading /proc instead");
            pid.and_then(proc_groups).unwrap_or_default()
        }
    }
}

/// A handle on process `pid`, the peer of `socket` (lent through `lease`); `None` when it has
/// already exited (or no file descriptor is left for the handle).
fn hold_process(
    socket: BorrowedFd<'_>,
    lease: Arc<Lease>,
    pid: i32,
    hold: Hold,
) -> Option<Process> {
    if hold == Hold::Pidfd {
        match PEER_PIDFD.load(Ordering::Relaxed) {
            PIDFDS => return Some(Process::from_socket(pid, lease)),
            UNKNOWN => match getsockopt(&socket, sockopt::PeerPidfd) {
                Ok(pidfd) => {
                    PEER_PIDFD.store(PIDFDS, Ordering::Relaxed);
                    return Some(Process::from_pidfd(pid, pidfd));
                }
                Err(Errno::ENOPROTOOPT) => {
                    tracing::debug!("no SO_PEERPIDFD (Linux before 6.5): holding callers by /proc");
                    PEER_PIDFD.store(NO_PIDFDS, Ordering::Relaxed);
                }
                // The process has exited (`EINVAL`/`ESRCH`) or there is none (`ENODATA`): its
                // pid may be reused already, so `/proc/<pid>` is no fallback.
                Err(_) => return None,
            },
            _ => {}
        }
    }
    Process::open_proc_dir(pid).ok()
}

/// `SO_PEERGROUPS` from the kernel's `<asm-generic/socket.h>` (x86, arm, riscv, powerpc,
/// s390x, loongarch, mips); sparc has its own value. `libc` 0.2 does not export it.
#[cfg(not(target_arch = "sparc64"))]
const SO_PEERGROUPS: libc::c_int = 59;
#[cfg(target_arch = "sparc64")]
const SO_PEERGROUPS: libc::c_int = 0x3d;

/// The largest number of groups asked for (`NGROUPS_MAX` on Linux is 65536).
const MAX_GROUPS: usize = 65_536;

/// The peer's supplementary groups via `getsockopt(SOL_SOCKET, SO_PEERGROUPS)`.
///
/// The kernel answers `ERANGE` with the needed length when the buffer is too small.
#[allow(unsafe_code)]
fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    const GID_SIZE: usize = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..3 {
        let mut len = (groups.len() * GID_SIZE) as libc::socklen_t;
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes, `len` is a valid
        // `socklen_t` the kernel may update, and `fd` is an open socket borrowed for the call.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / GID_SIZE;
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= MAX_GROUPS
        {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
    Err(io::Error::other("SO_PEERGROUPS kept growing"))
}

/// The `Groups:` line of `/proc/<pid>/status` (fallback for kernels without `SO_PEERGROUPS`;
/// racy: the process may have changed groups since it connected).
fn proc_groups(pid: i32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_groups_line(&status)
}

fn parse_groups_line(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|g| g.parse().ok()).collect()
}

#[cfg(test)]
mod tests;
