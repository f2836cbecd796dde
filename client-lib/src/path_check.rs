//! Whether a socket path can be trusted: no user other than root and this process's own can
//! change what it leads to. Shared by the client (before every connect) and the agent (before
//! binding), so that both refuse the same paths.
//!
//! # The rule
//!
//! The path is resolved the way the kernel resolves it, one component at a time from `/`,
//! each looked at with `lstat(2)` (links are not followed to inspect them), and a symbolic
//! link's target spliced in and checked the same way. So both the path as written and every
//! directory it really passes through are checked:
//!
//! | component | refused when |
//! | --- | --- |
//! | a directory (including `/`) | owned by a user other than root and this process's, or writable by group or others without the sticky bit (`chmod o+t`, as on `/tmp`) |
//! | a symbolic link | owned by a user other than root and this process's |
//! | the last component (the socket) | it sits in a directory writable by others (sticky, else already refused) and is owned by a user other than root and this process's |
//! | anything else on the way | it is not a directory |
//!
//! Why these: a user who owns a directory, or may write to one without the sticky bit, can
//! rename or replace any entry in it, and so put a fake agent's socket where the path leads.
//! In a sticky directory (`/tmp`), only an entry's owner (and the directory's, and root) may
//! rename or remove it, so an entry owned by root or by this process's user stays put, while one
//! owned by anybody else does not: `/tmp/link -> /run/dir` created by another user can be
//! repointed at will. A symbolic link cannot be changed in place, but one owned by another user
//! is refused wherever it is, as `sshd`'s `StrictModes` refuses foreign files: it was put there
//! by someone else. Group-writable counts as writable by others whatever the group is.
//!
//! When the check passes, every entry the path passes through is controlled by root or this
//! process's user, so nobody else can swap it between the check and the `connect(2)` or
//! `bind(2)` that follows.
//!
//! # Limits
//!
//! A client whose agent runs as another non-root user (say `op`, with its socket under
//! `/home/op`) refuses that path: `op` could serve it anything. Run the agent as root
//! (the shipped systemd units do), or put the socket under a root-owned directory.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Most symbolic links followed while resolving one path (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// Mode bits that let group or others create, rename and remove entries of a directory.
const OTHERS_WRITE: u32 = 0o022;
/// The sticky bit: in a directory, only an entry's owner may rename or remove it.
const STICKY: u32 = 0o1000;

/// Why a socket path is not trusted. Each message names the component (the path of the
/// directory, link or file as reached while resolving) and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeSocketPath {
    /// The path is not absolute.
    #[error("{} is not an absolute path; name the socket by its absolute path", path.display())]
    Relative {
        /// The path given.
        path: PathBuf,
    },
    /// A component could not be inspected (`lstat(2)`/`readlink(2)` failed): it does not
    /// exist, or this process may not search a directory above it.
    #[error("cannot inspect {}: {source}", path.display())]
    Inspect {
        /// The component.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A directory, symbolic link or (in a sticky directory) the socket belongs to another
    /// non-root user, who could make the path lead elsewhere.
    #[error("{} is a {kind} owned by uid {uid}, neither root nor uid {me}: that user could swap what the socket path leads to; use a path whose directories and links belong to root (such as /run/ecs-credential-agent/agent.sock)", path.display())]
    ForeignOwner {
        /// The component.
        path: PathBuf,
        /// `"directory"`, `"symbolic link"` or `"socket"`.
        kind: &'static str,
        /// Its owner.
        uid: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// A directory others may write to without the sticky bit: they could rename or replace
    /// what is in it.
    #[error("{} is a directory writable by group or others without the sticky bit (mode {mode:04o}): they could swap what the socket path leads to; remove the write permission (chmod go-w) or use another directory", path.display())]
    OpenDirectory {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A component before the last is neither a directory nor a symbolic link.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The component.
        path: PathBuf,
    },
    /// Resolving the path took more than [`MAX_SYMLINKS`] symbolic links (likely a loop).
    #[error("{}: more than {MAX_SYMLINKS} symbolic links while resolving the socket path", path.display())]
    TooManyLinks {
        /// The link at which the count ran out.
        path: PathBuf,
    },
}

/// Checks that no user other than root and this process's effective user can change what
/// `path` leads to (the rule of the module docs). The last component need not be a socket,
/// but it must exist, as must everything above it.
///
/// Costs one `lstat(2)` per component plus one `readlink(2)` per symbolic link; no
/// component is opened.
///
/// # Errors
///
/// [`UnsafeSocketPath`] naming the first component that fails the rule, or
/// [`UnsafeSocketPath::Inspect`] with the OS error (`NotFound`, `PermissionDenied`, …).
pub fn check_socket_path(path: &Path) -> Result<(), UnsafeSocketPath> {
    check_as(path, nix::unistd::geteuid().as_raw())
}

/// A directory reached while resolving: its path and whether others may write to it.
struct Dir {
    path: PathBuf,
    shared: bool,
}

/// [`check_socket_path`] for a process whose effective uid is `me`.
fn check_as(path: &Path, me: u32) -> Result<(), UnsafeSocketPath> {
    if !path.is_absolute() {
        return Err(UnsafeSocketPath::Relative {
            path: path.to_owned(),
        });
    }
    let root = PathBuf::from("/");
    let mut dirs = vec![directory(root.clone(), &lstat(&root)?, me)?];
    // Components still to resolve, the next one last.
    let mut pending = components_reversed(path);
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let current = dirs.last().expect("the root is never popped");
        let here = current.path.join(&name);
        let meta = lstat(&here)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            trusted_owner(&here, &meta, "symbolic link", me)?;
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(UnsafeSocketPath::TooManyLinks { path: here });
            }
            let target = std::fs::read_link(&here).map_err(|source| inspect(&here, source))?;
            if target.is_absolute() {
                dirs.truncate(1);
            }
            pending.extend(components_reversed(&target));
        } else if kind.is_dir() {
            let dir = directory(here, &meta, me)?;
            dirs.push(dir);
        } else if !pending.is_empty() {
            return Err(UnsafeSocketPath::NotADirectory { path: here });
        } else if current.shared {
            let what = if kind.is_socket() { "socket" } else { "file" };
            trusted_owner(&here, &meta, what, me)?;
        }
    }
    Ok(())
}

/// The path's components other than `/` and `.`, last first (`..` kept: it is resolved
/// against the directory reached, as the kernel does after a symbolic link).
fn components_reversed(path: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    out.reverse();
    out
}

/// Checks a directory's owner and mode.
fn directory(path: PathBuf, meta: &Metadata, me: u32) -> Result<Dir, UnsafeSocketPath> {
    trusted_owner(&path, meta, "directory", me)?;
    let mode = meta.mode() & 0o7777;
    let shared = mode & OTHERS_WRITE != 0;
    if shared && mode & STICKY == 0 {
        return Err(UnsafeSocketPath::OpenDirectory { path, mode });
    }
    Ok(Dir { path, shared })
}

fn trusted_owner(
    path: &Path,
    meta: &Metadata,
    kind: &'static str,
    me: u32,
) -> Result<(), UnsafeSocketPath> {
    let uid = meta.uid();
    if uid == 0 || uid == me {
        Ok(())
    } else {
        Err(UnsafeSocketPath::ForeignOwner {
            path: path.to_owned(),
            kind,
            uid,
            me,
        })
    }
}

fn lstat(path: &Path) -> Result<Metadata, UnsafeSocketPath> {
    std::fs::symlink_metadata(path).map_err(|source| inspect(path, source))
}

fn inspect(path: &Path, source: io::Error) -> UnsafeSocketPath {
    UnsafeSocketPath::Inspect {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests;
