//! Who is on the other end of a connection, and whether they may have credentials.
//!
//! The kernel records the connecting process's credentials when it calls `connect(2)`:
//! `SO_PEERCRED` gives pid, uid and gid, `SO_PEERGROUPS` (Linux 4.13+) the supplementary
//! groups (`socket(7)`). They are read once per connection, before any request is parsed, and
//! cannot be forged by the peer. The executable path is best effort, for the audit trail only:
//! it is read from `/proc/<pid>/exe` when an audit event first needs it ([`Exe`]), at the
//! connection's first request that produces one (the first issuance of a generation to the
//! caller, or a logged denial), not for every connection; the pid may have exited or been
//! reused by then.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::OnceLock;

use crate::config::ServerConfig;

/// The identity of the process on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Process id at `connect(2)` time (`None` if the kernel did not report one).
    pub pid: Option<i32>,
    /// Effective uid.
    pub uid: u32,
    /// Effective (primary) gid.
    pub gid: u32,
    /// Supplementary gids (may include the primary gid); empty if they could not be read.
    pub groups: Vec<u32>,
    /// `/proc/<pid>/exe`, or `"unknown"` when unreadable (read when first asked for).
    pub exe: Exe,
}

/// The peer's executable path, read from `/proc/<pid>/exe` on first use (the audit trail needs
/// it once per caller and credential generation, not once per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exe {
    pid: Option<i32>,
    path: OnceLock<String>,
}

impl Exe {
    /// The executable of process `pid` (`None`: unknown), read when first asked for.
    pub fn of_pid(pid: Option<i32>) -> Exe {
        Exe {
            pid,
            path: OnceLock::new(),
        }
    }

    /// A known path (tests).
    pub fn known(path: &str) -> Exe {
        Exe {
            pid: None,
            path: OnceLock::from(path.to_owned()),
        }
    }

    /// The path, or `"unknown"`.
    pub fn get(&self) -> &str {
        self.path
            .get_or_init(|| self.pid.map_or_else(|| "unknown".to_owned(), exe_of))
    }
}

/// Whether a peer may be served, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The peer's uid is in `allowed_uids`.
    AllowedUid,
    /// The peer's primary gid is in `allowed_gids`.
    AllowedPrimaryGid(u32),
    /// One of the peer's supplementary gids is in `allowed_gids`.
    AllowedSupplementaryGid(u32),
    /// Nothing matched.
    Denied,
}

impl Decision {
    /// Whether the peer may be served.
    pub fn is_allowed(self) -> bool {
        !matches!(self, Decision::Denied)
    }
}

/// Decides whether `peer` may be served under `cfg.allowed_uids` / `cfg.allowed_gids`.
pub fn authorize(peer: &Peer, cfg: &ServerConfig) -> Decision {
    if cfg.allowed_uids.contains(&peer.uid) {
        return Decision::AllowedUid;
    }
    if cfg.allowed_gids.contains(&peer.gid) {
        return Decision::AllowedPrimaryGid(peer.gid);
    }
    match peer.groups.iter().find(|g| cfg.allowed_gids.contains(g)) {
        Some(&g) => Decision::AllowedSupplementaryGid(g),
        None => Decision::Denied,
    }
}

impl Peer {
    /// Reads the peer's identity from a connected socket.
    ///
    /// # Errors
    ///
    /// The OS error of `SO_PEERCRED`. Failing to read the supplementary groups or the
    /// executable is not an error (empty groups, `"unknown"` exe).
    pub fn of(stream: &tokio::net::UnixStream) -> io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid();
        let groups = match peer_groups(stream.as_fd()) {
            Ok(groups) => groups,
            Err(e) => {
                tracing::debug!(error = %e, "SO_PEERGROUPS failed; reading /proc instead");
                pid.and_then(proc_groups).unwrap_or_default()
            }
        };
        Ok(Peer {
            pid,
            uid: cred.uid(),
            gid: cred.gid(),
            groups,
            exe: Exe::of_pid(pid),
        })
    }
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

/// `readlink /proc/<pid>/exe`, or `"unknown"`.
fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            pid: Some(1234),
            uid,
            gid,
            groups: groups.to_vec(),
            exe: Exe::known("/usr/bin/test"),
        }
    }

    fn cfg(uids: &[u32], gids: &[u32]) -> ServerConfig {
        ServerConfig {
            allowed_uids: uids.to_vec(),
            allowed_gids: gids.to_vec(),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn authorize_table() {
        let rows: &[(&str, Peer, ServerConfig, Decision)] = &[
            (
                "root by default",
                peer(0, 0, &[]),
                ServerConfig::default(),
                Decision::AllowedUid,
            ),
            (
                "uid listed",
                peer(1000, 1000, &[]),
                cfg(&[0, 1000], &[]),
                Decision::AllowedUid,
            ),
            (
                "primary gid",
                peer(1000, 50, &[]),
                cfg(&[0], &[50]),
                Decision::AllowedPrimaryGid(50),
            ),
            (
                "supplementary gid",
                peer(1000, 1000, &[10, 60]),
                cfg(&[0], &[60]),
                Decision::AllowedSupplementaryGid(60),
            ),
            (
                "nobody denied",
                peer(65534, 65534, &[65534]),
                ServerConfig::default(),
                Decision::Denied,
            ),
            (
                "root denied when list empty",
                peer(0, 0, &[0]),
                cfg(&[], &[]),
                Decision::Denied,
            ),
            (
                "gid not uid",
                peer(50, 1000, &[]),
                cfg(&[], &[50]),
                Decision::Denied,
            ),
        ];
        for (name, p, c, want) in rows {
            assert_eq!(authorize(p, c), *want, "{name}");
            assert_eq!(want.is_allowed(), *want != Decision::Denied);
        }
    }

    #[test]
    fn groups_line_parsed() {
        let status = "Name:\tx\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 \nNgid:\t0\n";
        assert_eq!(parse_groups_line(status), Some(vec![4, 24, 27]));
        assert_eq!(parse_groups_line("Groups:\n"), Some(vec![]));
        assert_eq!(parse_groups_line("Name: x\n"), None);
        assert_eq!(parse_groups_line("Groups: 1 x\n"), None);
    }

    #[tokio::test]
    async fn own_identity_read_from_socket() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let p = Peer::of(&a).unwrap();
        assert_eq!(p.uid, nix::unistd::getuid().as_raw());
        assert_eq!(p.gid, nix::unistd::getgid().as_raw());
        assert_eq!(p.pid, Some(std::process::id() as i32));
        let own: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = peer_groups(a.as_fd()).unwrap();
        let mut want = own;
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(
            p.exe.get(),
            std::env::current_exe().unwrap().display().to_string()
        );
    }
}
