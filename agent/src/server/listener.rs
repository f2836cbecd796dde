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
//!    target, so that nobody else can reach anything inside it;
//! 2. bind the socket inside it, then `chown` it to `socket_group` and `chmod` it to
//!    `socket_mode` while it is still unreachable;
//! 3. `link(2)` it onto the final path. A hard link keeps the inode (and so the bound socket),
//!    appears atomically, and fails with `EEXIST` instead of replacing anything that appeared
//!    at the path since the checks;
//! 4. remove the private directory and the temporary name.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid};

use crate::identity::{Caller, LentSocket};
use crate::server::config::Config as ServerConfig;

/// An accepted connection's socket, lent to the [`Caller`] captured from it (which reads its
/// groups and pidfd through it when first needed): use it as a `tokio::net::UnixStream`.
pub type Stream = LentSocket<tokio::net::UnixStream>;

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
    /// A directory above the socket's directory could let another user move or replace it:
    /// owned by a user other than root and the agent, or writable by group or others without
    /// the sticky bit.
    #[error("directory {path:?} above the socket (owner uid {uid}, mode {mode:04o}) could let another user replace the socket's directory; refusing to use it")]
    AncestorUnsafe {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
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
    /// `(st_dev, st_ino)` of the socket file when this process created it; `None` for a
    /// handed-over socket, which is never unlinked.
    created: Option<(u64, u64)>,
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
        ensure_parent(&parent)?;
        clear_path(&path)?;
        let gid = resolve_group(cfg.socket_group.as_deref(), &path)?;
        let std_listener = create_socket(&path, &parent, cfg.socket_mode & 0o777, gid)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|source| SocketBindError::Create {
            path: path.clone(),
            step: "stat",
            source,
        })?;
        let inner = to_tokio(std_listener).map_err(|source| SocketBindError::Create {
            path: path.clone(),
            step: "register with the runtime",
            source,
        })?;
        Ok(Listener {
            inner,
            path: Some(path),
            created: Some((meta.dev(), meta.ino())),
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
                Ok((caller, stream)) => return std::task::Poll::Ready(Ok((stream, caller))),
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot read the caller's credentials (SO_PEERCRED); closing"
                ),
            }
        }
    }

    /// Unlinks the socket file if this process created it and the file at the path is still
    /// the same inode (another agent may have replaced it). Returns whether it removed it.
    ///
    /// # Errors
    ///
    /// The OS error of `lstat`/`unlink`, except that an already missing file is `Ok(false)`.
    pub fn remove_socket(&self) -> io::Result<bool> {
        let (Some(path), Some((dev, ino))) = (&self.path, self.created) else {
            return Ok(false);
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.dev() == dev && m.ino() == ino => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn to_tokio(listener: std::os::unix::net::UnixListener) -> io::Result<tokio::net::UnixListener> {
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// Creates `parent` (mode 0755) if missing; refuses one that others could write to or that
/// belongs to another non-root user.
fn ensure_parent(parent: &Path) -> Result<(), SocketBindError> {
    let inspect = |source| SocketBindError::InspectParent {
        path: parent.to_owned(),
        source,
    };
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
    check_ancestors(parent)
}

/// Checks every directory above `parent`, both as written (so a symbolic link on the way lives
/// in a safe directory) and after resolving links: each must be owned by root or the agent,
/// and not writable by group or others unless sticky (like `/tmp`, where only an entry's owner
/// may rename it). Otherwise its owner could rename the socket's directory and put their own
/// socket, with credentials of their choosing, in its place (`sshd`'s StrictModes rule).
fn check_ancestors(parent: &Path) -> Result<(), SocketBindError> {
    let inspect = |source| SocketBindError::InspectParent {
        path: parent.to_owned(),
        source,
    };
    let real = std::fs::canonicalize(parent).map_err(inspect)?;
    let me = Uid::effective().as_raw();
    for dir in parent.ancestors().skip(1).chain(real.ancestors().skip(1)) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let meta = std::fs::metadata(dir).map_err(|source| SocketBindError::InspectParent {
            path: dir.to_owned(),
            source,
        })?;
        let mode = meta.mode() & 0o7777;
        let open = mode & 0o022 != 0 && mode & 0o1000 == 0;
        if open || (meta.uid() != 0 && meta.uid() != me) {
            return Err(SocketBindError::AncestorUnsafe {
                path: dir.to_owned(),
                uid: meta.uid(),
                mode,
            });
        }
    }
    Ok(())
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

/// Removes the private directory (and the temporary name in it) on every exit path.
struct PrivateDir(PathBuf);

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.join("s"));
        let _ = std::fs::remove_dir(&self.0);
    }
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
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(
        ".{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let dir = parent.join(name);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(fail("create private directory"))?;
    let dir = PrivateDir(dir);
    let temp = dir.0.join("s");
    let listener = std::os::unix::net::UnixListener::bind(&temp).map_err(fail("bind(2)"))?;
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
