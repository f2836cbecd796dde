//! The listening Unix socket: bound safely by the agent, or handed over by systemd.
//!
//! # How [`Listener::bind`] creates the socket
//!
//! The socket file's mode is the first gate of the security model, so there must be no moment
//! at which the file exists at its final path with wider permissions than `socket_mode`.
//! `bind(2)` creates the file with `0777 & !umask`, and the umask is process-wide (changing it
//! races with every other thread that creates files). Instead:
//!
//! 1. create a fresh private directory (`0700`, `mkdir(2)` fails if the name exists) next to the
//!    target, `.bind-` and 8 random hex digits, so that nobody else can reach anything inside it;
//! 2. bind the socket inside it (as `s`; through `/proc/self/fd/N/s` when the whole temporary
//!    path is longer than `bind(2)` takes, so that every socket path the configuration accepts
//!    binds), then `chown` it to `socket_group` and `chmod` it to
//!    `socket_mode` while it is still unreachable;
//! 3. `link(2)` it onto the final path. A hard link keeps the inode (and so the bound socket),
//!    appears atomically, and fails with `EEXIST` instead of replacing anything that appeared
//!    at the path since the checks;
//! 4. remove the private directory and the temporary name.
//!
//! Before any of this, the socket's directory and every directory and symbolic link on the way
//! to it are checked as clients check them before connecting
//! ([`ecs_credential_client::path_check`]): nobody but root and the agent's own user may be able
//! to make the path lead elsewhere.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ecs_credential_client::path_check::{check_socket_path, UnsafeSocketPath};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::fstatat;
use nix::unistd::{unlinkat, Gid, Group, Uid, UnlinkatFlags};

use crate::identity::Caller;
use crate::server::config::{Config as ServerConfig, MAX_SOCKET_PATH_BYTES};

pub use super::stream::Stream;

/// The mode of a parent directory the agent creates (`/run/ecs-credential-agent`): callers
/// must be able to traverse it to reach the socket, whose own mode decides access.
const CREATED_PARENT_MODE: u32 = 0o755;

/// Why the socket could not be bound. Each message names the path and the problem.
#[derive(Debug, thiserror::Error)]
pub enum SocketBindError {
    /// `socket_path` has no parent directory (empty or `/`).
    #[error("socket path {0:?} has no parent directory")]
    NoParent(PathBuf),
    /// The parent directory is missing and could not be created.
    #[error("cannot create socket directory {path:?}: {source}")]
    CreateParent {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The parent exists but is not a directory, or cannot be inspected.
    #[error("socket directory {path:?} is unusable: {source}")]
    InspectParent {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The parent directory is writable by group or others, who could replace the socket.
    #[error("socket directory {path:?} is writable by group or others (mode {mode:04o}); refusing to use it")]
    ParentWritable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The parent directory belongs to a user other than root and the agent's own.
    #[error("socket directory {path:?} is owned by uid {uid}, neither root nor the agent; refusing to use it")]
    ParentOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A directory or symbolic link on the way to the socket's directory could let another user
    /// make the path lead elsewhere ([`ecs_credential_client::path_check`], the check clients
    /// make before connecting): it names the component and what to do.
    #[error("socket path {path:?} is unsafe: {source}")]
    UnsafePath {
        /// The socket path.
        path: PathBuf,
        /// Which component, and why.
        source: UnsafeSocketPath,
    },
    /// A symbolic link sits at the socket path.
    #[error("socket path {0:?} is a symbolic link; refusing to follow or replace it")]
    Symlink(PathBuf),
    /// Something other than a socket sits at the socket path.
    #[error("socket path {0:?} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Another process answers on the socket (exit code 69 in the binary).
    #[error("another process is already serving on {0:?}")]
    AlreadyServing(PathBuf),
    /// An existing socket could not be probed or removed.
    #[error("cannot replace the stale socket {path:?}: {source}")]
    StaleSocket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `socket_group` names no group known to the system.
    #[error("socket_group {group:?} for {path:?} is not a known group")]
    UnknownGroup {
        /// The socket path.
        path: PathBuf,
        /// The configured group.
        group: String,
    },
    /// Binding, chmod, chown or linking the socket failed.
    #[error("cannot create socket {path:?}: {step}: {source}")]
    Create {
        /// The socket path.
        path: PathBuf,
        /// Which step failed.
        step: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// The server's listening socket.
#[derive(Debug)]
pub struct Listener {
    /// The socket itself.
    inner: tokio::net::UnixListener,
    /// Where it lives in the filesystem, if known.
    path: Option<PathBuf>,
    /// The socket file when this process created it; `None` for a handed-over socket, which
    /// is never unlinked.
    created: Option<Created>,
}

/// A socket file this process created, found again for removal through the directory it was
/// created in (held open), not through the path: if the path leads elsewhere by then, nothing
/// there is touched, and the agent's own file is still removed.
#[derive(Debug)]
struct Created {
    /// The socket's directory (`O_PATH`).
    dir: OwnedFd,
    /// The socket's name in it.
    name: OsString,
    /// `(st_dev, st_ino)` of the file: another agent may have replaced it.
    id: (u64, u64),
}

impl Listener {
    /// Binds `cfg.socket_path` safely (see the module docs) with mode `cfg.socket_mode` and
    /// group `cfg.socket_group`, replacing a stale socket left by a dead agent.
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`SocketBindError`] naming what failed; [`SocketBindError::AlreadyServing`] when a live process
    /// answers on the path.
    pub fn bind(cfg: &ServerConfig) -> Result<Listener, SocketBindError> {
        let path = cfg.socket_path.clone();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() && path.file_name().is_some() => p.to_owned(),
            _ => return Err(SocketBindError::NoParent(path)),
        };
        ensure_parent(&path, &parent)?;
        clear_path(&path)?;
        let gid = resolve_group(cfg.socket_group.as_deref(), &path)?;
        let fail = |step| {
            let path = path.clone();
            move |source| SocketBindError::Create { path, step, source }
        };
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(&parent, flags, nix::sys::stat::Mode::empty())
            .map_err(|e| fail("open the socket's directory")(io::Error::from(e)))?;
        let std_listener = create_socket(&path, &parent, cfg.socket_mode & 0o777, gid)?;
        let meta = std::fs::symlink_metadata(&path).map_err(fail("stat"))?;
        let inner = to_tokio(std_listener).map_err(fail("register with the runtime"))?;
        let name = path.file_name().unwrap_or_default().to_owned();
        Ok(Listener {
            inner,
            path: Some(path),
            created: Some(Created {
                dir,
                name,
                id: (meta.dev(), meta.ino()),
            }),
        })
    }

    /// Wraps a socket handed over by systemd (`LISTEN_FDS`). `path`, if known, is only for
    /// messages: such a socket is never unlinked by [`Listener::remove_socket`].
    ///
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// The OS error if the socket cannot be made non-blocking or registered.
    pub fn from_std(
        listener: std::os::unix::net::UnixListener,
        path: Option<PathBuf>,
    ) -> io::Result<Listener> {
        Ok(Listener {
            inner: to_tokio(listener)?,
            path,
            created: None,
        })
    }

    /// The socket path, if known.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether this process created the socket file (and so may remove it).
    pub fn created_socket(&self) -> bool {
        self.created.is_some()
    }

    /// Accepts the next connection and captures its [`Caller`] before anything is read from
    /// it ([`Caller::of_unix_peer`]). A connection whose caller cannot be read is closed and
    /// skipped (logged). Cancel-safe, like `accept(2)` itself.
    ///
    /// # Errors
    ///
    /// The OS error from `accept(2)`.
    pub async fn accept(&self) -> io::Result<(Stream, Caller)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// [`Listener::accept`] as a poll: `Pending` (with a wake-up through `cx` later) while no
    /// connection waits.
    ///
    /// # Errors
    ///
    /// The OS error from `accept(2)`.
    pub fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<(Stream, Caller)>> {
        loop {
            let (stream, _) = std::task::ready!(self.inner.poll_accept(cx))?;
            match Caller::of_unix_peer(stream) {
                Ok((caller, stream)) => {
                    return std::task::Poll::Ready(Ok((Stream::Unix(stream), caller)))
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot read the caller's credentials (SO_PEERCRED); closing"
                ),
            }
        }
    }

    /// Unlinks the socket file if this process created it and the file of that name in the
    /// directory it was created in is still the same inode (another agent may have replaced
    /// it). The directory is the one opened at bind time, so a path that leads elsewhere by now
    /// (a link repointed by root) changes nothing. Returns whether it removed the file.
    ///
    /// # Errors
    ///
    /// The OS error of `fstatat`/`unlinkat`, except that an already missing file is `Ok(false)`.
    pub fn remove_socket(&self) -> io::Result<bool> {
        let Some(created) = &self.created else {
            return Ok(false);
        };
        let name = created.name.as_os_str();
        match fstatat(&created.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if (st.st_dev, st.st_ino) == created.id => {}
            Ok(_) | Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match unlinkat(&created.dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

fn to_tokio(listener: std::os::unix::net::UnixListener) -> io::Result<tokio::net::UnixListener> {
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// Creates `parent` (mode 0755) if missing; refuses one that others could write to (even
/// with the sticky bit) or that belongs to another non-root user, and any path to it that
/// another user could redirect ([`check_socket_path`], from `/` without following links; the
/// directories above first, so nothing is created in an unsafe place).
fn ensure_parent(path: &Path, parent: &Path) -> Result<(), SocketBindError> {
    let inspect = |source| SocketBindError::InspectParent {
        path: parent.to_owned(),
        source,
    };
    if let Some(above) = parent.parent() {
        trust(path, above)?;
    }
    let meta = match std::fs::metadata(parent) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let create = |source| SocketBindError::CreateParent {
                path: parent.to_owned(),
                source,
            };
            std::fs::DirBuilder::new()
                .mode(CREATED_PARENT_MODE)
                .create(parent)
                .map_err(create)?;
            // The umask may have narrowed the mode; callers need to traverse the directory.
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(CREATED_PARENT_MODE))
                .map_err(create)?;
            std::fs::metadata(parent).map_err(inspect)?
        }
        Err(e) => return Err(inspect(e)),
    };
    if !meta.is_dir() {
        return Err(inspect(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(SocketBindError::ParentWritable {
            path: parent.to_owned(),
            mode,
        });
    }
    if meta.uid() != 0 && meta.uid() != Uid::effective().as_raw() {
        return Err(SocketBindError::ParentOwner {
            path: parent.to_owned(),
            uid: meta.uid(),
        });
    }
    trust(path, parent)
}

/// [`check_socket_path`] on `dir`, a directory on the way to the socket `path`. It is the
/// `sshd` StrictModes rule: a user who may rename or replace any directory or link on the way
/// could put their own socket, with credentials of their choosing, where clients look.
fn trust(path: &Path, dir: &Path) -> Result<(), SocketBindError> {
    check_socket_path(dir).map_err(|e| match e {
        UnsafeSocketPath::Inspect { path, source } => {
            SocketBindError::InspectParent { path, source }
        }
        source => SocketBindError::UnsafePath {
            path: path.to_owned(),
            source,
        },
    })
}

/// Makes the socket path free: nothing there, or a stale socket that is removed.
fn clear_path(path: &Path) -> Result<(), SocketBindError> {
    let stale = |source| SocketBindError::StaleSocket {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(stale(e)),
    };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(SocketBindError::Symlink(path.to_owned()));
    }
    if !kind.is_socket() {
        return Err(SocketBindError::NotASocket(path.to_owned()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketBindError::AlreadyServing(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let shown = path.display();
            tracing::info!(path = %shown, "removing stale socket left by a previous agent");
            std::fs::remove_file(path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(stale(e)),
            })
        }
        Err(e) => Err(stale(e)),
    }
}

/// Resolves `socket_group` (a name, or a number) to a gid.
fn resolve_group(group: Option<&str>, path: &Path) -> Result<Option<Gid>, SocketBindError> {
    let Some(group) = group else { return Ok(None) };
    if let Ok(n) = group.parse::<u32>() {
        return Ok(Some(Gid::from_raw(n)));
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(Some(g.gid)),
        Ok(None) => Err(SocketBindError::UnknownGroup {
            path: path.to_owned(),
            group: group.to_owned(),
        }),
        Err(errno) => Err(SocketBindError::Create {
            path: path.to_owned(),
            step: "look up socket_group",
            source: io::Error::from(errno),
        }),
    }
}

/// The temporary socket's name inside the private directory.
const TEMP_NAME: &str = "s";

/// Removes the private directory (and the temporary name in it) on every exit path.
struct PrivateDir(PathBuf);

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join(TEMP_NAME));
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Binds [`TEMP_NAME`] in `dir`. When that path is longer than `bind(2)` takes (the socket
/// path itself fits, by the configuration's rule, but the private directory adds a few bytes),
/// binds through `/proc/self/fd/N`, a short name for the same directory held open, as systemd
/// does for long socket paths (so such paths need `/proc` mounted).
fn bind_in(dir: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let temp = dir.join(TEMP_NAME);
    if temp.as_os_str().as_bytes().len() <= MAX_SOCKET_PATH_BYTES {
        return std::os::unix::net::UnixListener::bind(&temp);
    }
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty())?;
    let short = format!("/proc/self/fd/{}/{TEMP_NAME}", fd.as_raw_fd());
    std::os::unix::net::UnixListener::bind(short)
}

/// Steps 1–4 of the module docs.
fn create_socket(
    path: &Path,
    parent: &Path,
    mode: u32,
    gid: Option<Gid>,
) -> Result<std::os::unix::net::UnixListener, SocketBindError> {
    let fail = |step: &'static str| {
        move |source: io::Error| SocketBindError::Create {
            path: path.to_owned(),
            step,
            source,
        }
    };
    // Short, so that the temporary path is at most a few bytes longer than the socket path.
    let dir = parent.join(format!(".bind-{:08x}", rand::random::<u32>()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(fail("create private directory"))?;
    let dir = PrivateDir(dir);
    let temp = dir.0.join(TEMP_NAME);
    let listener = bind_in(&dir.0).map_err(fail("bind(2)"))?;
    if let Some(gid) = gid {
        nix::unistd::chown(&temp, None, Some(gid))
            .map_err(|e| fail("chown to socket_group")(io::Error::from(e)))?;
    }
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))
        .map_err(fail("chmod to socket_mode"))?;
    std::fs::hard_link(&temp, path).map_err(fail("link(2) onto the socket path"))?;
    drop(dir);
    Ok(listener)
}
