//! Matching a [`Selector`] against a [`Caller`]: every key given must match.
//!
//! | key | Unix socket caller | loopback TCP caller |
//! |---|---|---|
//! | `uid`, `user` | its uid (`SO_PEERCRED`) | its socket's owner uid |
//! | `gid`, `group` | its primary or a supplementary gid (`SO_PEERGROUPS`) | its uid's groups in the user database |
//! | `unit` | its cgroup path (the `0::` line of `/proc/<pid>/cgroup`), equal to the whole configured path | its socket's cgroup id equals the inode number of `/sys/fs/cgroup<unit>` (looked up at match time: units restart) |
//! | `exe` | its executable (`/proc/<pid>/exe` of the process that connected) | never (no process) |
//! | `exe_sha256` | SHA-256 of that executable file, opened through `/proc/<pid>/exe` | never |
//!
//! Keys are checked cheapest first (ids, then groups, then the process), and a key that
//! fails ends the check: a caller whose uid decides reads no groups, no user database and no
//! process. Hashes are cached by the file's (device, inode, size, modification time), so a
//! caller that connects often is hashed once per executable version.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::profile::Selector;
use crate::identity::{Caller, Transport};

/// Where the cgroup v2 hierarchy is mounted when `/proc/self/mountinfo` names no `cgroup2`
/// mount (the unified layout's place).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where the cgroup v2 hierarchy is mounted: the first `cgroup2` mount in
/// `/proc/self/mountinfo` (`/sys/fs/cgroup` on a unified system, `/sys/fs/cgroup/unified` on a
/// hybrid one, see cgroups(7)), else [`CGROUP_ROOT`]. Read once.
pub fn cgroup2_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|info| cgroup2_mount_in(&info))
            .unwrap_or_else(|| std::path::PathBuf::from(CGROUP_ROOT))
    })
}

/// The mount point of the first `cgroup2` filesystem in a `mountinfo` text (proc(5): the
/// fifth field is the mount point; the filesystem type follows the ` - ` separator).
pub(crate) fn cgroup2_mount_in(info: &str) -> Option<std::path::PathBuf> {
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next() == Some("cgroup2")).then(|| mount.into())
    })
}
/// The largest executable hashed for `exe_sha256`, in bytes; a larger one never matches.
pub const MAX_HASHED_EXE_BYTES: u64 = 1 << 30;
/// How many executables' hashes are remembered (the cache is emptied when it is full).
const MAX_CACHED_HASHES: usize = 256;

/// An executable file version: device, inode, size, modification time (s, ns).
type FileVersion = (u64, u64, u64, i64, i64);

/// SHA-256 hashes by file version.
type Hashes = HashMap<FileVersion, [u8; 32]>;

/// Hashes already computed.
static HASHES: Mutex<Option<Hashes>> = Mutex::new(None);

impl Selector {
    /// Whether `caller` matches every key given (see the module docs).
    pub fn matches(&self, caller: &Caller) -> bool {
        self.matches_under(caller, cgroup2_root())
    }

    /// [`Selector::matches`] with the cgroup hierarchy mounted at `cgroup_root`.
    pub(crate) fn matches_under(&self, caller: &Caller, cgroup_root: &Path) -> bool {
        let uid_ok = |want: Option<u32>| want.is_none_or(|u| caller.uid == u);
        if !uid_ok(self.uid) || !uid_ok(self.user.as_ref().map(|u| u.1)) {
            return false;
        }
        let in_groups = |gid: u32| caller.gid() == gid || caller.groups().contains(&gid);
        if !self.gid.is_none_or(in_groups) || !self.group.as_ref().is_none_or(|g| in_groups(g.1)) {
            return false;
        }
        if let Some(unit) = &self.unit {
            if !unit_matches(caller, unit, cgroup_root) {
                return false;
            }
        }
        let unix = caller.transport == Transport::Unix;
        if let Some(exe) = &self.exe {
            if !unix || caller.exe() != Some(exe.as_path()) {
                return false;
            }
        }
        if let Some(want) = &self.exe_sha256 {
            if !unix || exe_sha256(caller).as_ref() != Some(want) {
                return false;
            }
        }
        true
    }
}

/// `unit` against the caller's cgroup: the whole path over the socket, the cgroup id over TCP.
fn unit_matches(caller: &Caller, unit: &str, cgroup_root: &Path) -> bool {
    match caller.transport {
        Transport::Unix => caller.process().and_then(|p| p.cgroup()) == Some(unit),
        Transport::Tcp => caller.cgroup_id.is_some_and(|id| {
            let dir = cgroup_root.join(unit.trim_start_matches('/'));
            std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.ino() == id)
        }),
    }
}

/// The SHA-256 of the caller's executable, opened through `/proc/<pid>/exe` of the process
/// that connected; `None` when it cannot be read (or is larger than
/// [`MAX_HASHED_EXE_BYTES`]).
fn exe_sha256(caller: &Caller) -> Option<[u8; 32]> {
    let mut file = caller.process()?.open_exe().ok()?;
    let meta = file.metadata().ok()?;
    if meta.len() > MAX_HASHED_EXE_BYTES {
        tracing::warn!(
            size = meta.len(),
            "executable too large to hash for an exe_sha256 selector; not matched"
        );
        return None;
    }
    let version = (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    );
    let cached = |f: &mut dyn FnMut(&mut Hashes) -> Option<[u8; 32]>| {
        let mut guard = HASHES.lock().unwrap_or_else(PoisonError::into_inner);
        f(guard.get_or_insert_with(HashMap::new))
    };
    if let Some(hash) = cached(&mut |m| m.get(&version).copied()) {
        return Some(hash);
    }
    // Hashed without the lock: another caller's lookup does not wait for this file.
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let hash: [u8; 32] = hasher.finalize().into();
    cached(&mut |m| {
        if m.len() >= MAX_CACHED_HASHES {
            m.clear();
        }
        m.insert(version, hash)
    });
    Some(hash)
}

/// How many hashes are cached (tests).
#[cfg(test)]
pub(crate) fn cached_hashes() -> usize {
    HASHES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map_or(0, HashMap::len)
}
