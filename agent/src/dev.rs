//! `ecs-credential-agent dev`: the real agent against the built-in metadata emulator.
//!
//! Starts an [`ecs_metadata_emulator::Emulator`] on `127.0.0.1` (hardened-only, one fake RAM role
//! whose fake credentials last [`DEV_CREDENTIAL_LIFETIME`] and rotate every
//! [`DEV_ROTATE_AFTER`]), then runs the same daemon as `serve` against it, on a socket only the
//! invoking user may use, and prints the `curl` command to try.
//!
//! The socket is `--socket PATH`, else `default_socket`. Missing directories on the way to a
//! `--socket` path are created (mode 0700) when the nearest existing one passes the socket
//! path check ([`ecs_credential_client::path_check`]); a directory others may write to is
//! refused with what to use instead (`prepare_socket_dir`).
//!
//! `dev` stops on SIGTERM, SIGINT or SIGHUP (the terminal or ssh session closed), logging
//! which, and removes what it made: the socket, and the directories it created.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ecs_credential_client::path_check::check_socket_path;
use ecs_metadata_emulator::{Emulator, EmulatorConfig};

use crate::config::{Config, ConfigError};
use crate::daemon::{self, AgentError};
use crate::logging;
use crate::time::SystemClock;

/// Lifetime of the emulator's fake credentials in `dev` mode.
pub const DEV_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(3_600);
/// The emulator rotates the fake credentials this long after issuing them.
pub const DEV_ROTATE_AFTER: Duration = Duration::from_secs(600);
/// File name of the default socket in `$XDG_RUNTIME_DIR`.
const XDG_SOCKET_NAME: &str = "ecs-credential-agent-dev.sock";
/// Mode of the directories `dev` creates: only the invoking user may use them.
const CREATED_DIR_MODE: u32 = 0o700;

/// Runs `dev` until SIGTERM, SIGINT or SIGHUP; then removes the socket and the directories it
/// created.
///
/// # Errors
/// [`AgentError`] when the emulator, the socket or the daemon cannot start; a `--socket` path
/// `dev` will not use is an [`AgentError::Config`] saying what to use instead.
pub async fn run(socket: Option<PathBuf>) -> Result<(), AgentError> {
    daemon::init_logging(&logging::Config::default());
    // First: from here on, a closed terminal stops `dev` cleanly instead of killing it.
    let stop = stop_signal()?;
    let (socket, made) = match socket {
        Some(s) => {
            let made = prepare_socket_dir(&s).map_err(|problem| socket_error(&s, problem))?;
            (s, made)
        }
        None => default_socket().map_err(|source| AgentError::Io {
            context: "creating a private directory for the dev socket",
            source,
        })?,
    };
    let emulator = Emulator::start(
        ([127, 0, 0, 1], 0).into(),
        EmulatorConfig {
            credential_lifetime: DEV_CREDENTIAL_LIFETIME,
            rotate_after: Some(DEV_ROTATE_AFTER),
            ..EmulatorConfig::default()
        },
    )
    .map_err(|source| AgentError::Io {
        context: "starting the metadata emulator",
        source,
    })?;
    let mut config = Config::default();
    config.metadata.endpoint = emulator.endpoint().parse().map_err(|problem| {
        AgentError::Config(ConfigError {
            source_name: "dev".to_owned(),
            problems: vec![format!("the emulator's endpoint: {problem}")],
        })
    })?;
    crate::server::config::validate_socket_path(&socket)
        .map_err(|problem| socket_error(&socket, problem))?;
    config.server.socket_path = socket.clone();
    config.server.allowed_uids = vec![nix::unistd::geteuid().as_raw()];

    let announce = format!(
        "ecs-credential-agent dev: metadata emulator on {}\nTry (as this user):\n\n  \
         curl -s --unix-socket {} http://localhost/v1/credentials\n\nStop with Ctrl-C.",
        emulator.endpoint(),
        socket.display()
    );
    let options = daemon::Options {
        announce: Some(announce),
        ..daemon::Options::default()
    };
    // The daemon removes the socket it bound; `made` removes the directories when dropped.
    let result = daemon::serve_with(config, Arc::new(SystemClock), stop, options).await;
    emulator.shutdown().await;
    drop(made);
    result
}

/// Completes on the first SIGTERM, SIGINT or SIGHUP, after logging which and why. A SIGTERM or
/// SIGINT after that exits at once with status 1 ([`crate::process::shutdown_signal`]); more
/// SIGHUPs (a shell passes its own on to its jobs) change nothing.
fn stop_signal() -> Result<impl Future<Output = ()> + Send, AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let installing = |source| AgentError::Io {
        context: "installing signal handlers",
        source,
    };
    let term_or_int = crate::process::shutdown_signal().map_err(installing)?;
    let mut hup = signal(SignalKind::hangup()).map_err(installing)?;
    Ok(async move {
        let mut term_or_int = Box::pin(term_or_int);
        let name = tokio::select! {
            name = &mut term_or_int => name,
            _ = hup.recv() => {
                tokio::spawn(async move {
                    let second = term_or_int.await;
                    tracing::warn!(
                        signal = second,
                        "second signal: exiting now without waiting for in-flight requests"
                    );
                    std::process::exit(1);
                });
                "SIGHUP"
            }
        };
        tracing::info!(signal = name, "dev shutting down: {}", why(name));
    })
}

/// Why a signal usually arrives, in words.
fn why(signal: &str) -> &'static str {
    match signal {
        "SIGHUP" => "the terminal or session it ran in was closed",
        "SIGINT" => "interrupted, as by Ctrl-C",
        _ => "asked to stop",
    }
}

/// Directories `dev` created, removed (deepest first, only if empty) when dropped.
#[derive(Debug, Default)]
struct MadeDirs(Vec<PathBuf>);

impl Drop for MadeDirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a directory dev created");
            }
        }
    }
}

/// `$XDG_RUNTIME_DIR/ecs-credential-agent-dev.sock` when that directory exists, else
/// `agent.sock` in a new private (0700) directory under `/tmp` (short, so it stays well within
/// the 107-byte socket path limit), which is returned too so it is removed at exit.
fn default_socket() -> io::Result<(PathBuf, MadeDirs)> {
    if let Some(dir) = xdg_runtime_dir() {
        return Ok((dir.join(XDG_SOCKET_NAME), MadeDirs::default()));
    }
    let dir = nix::unistd::mkdtemp("/tmp/eca-dev-XXXXXX").map_err(io::Error::from)?;
    Ok((dir.join("agent.sock"), MadeDirs(vec![dir])))
}

fn xdg_runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
}

/// Makes the directory of the `--socket` path ready: creates the missing ones (mode 0700,
/// outermost first) when the nearest existing directory passes [`check_socket_path`], and
/// refuses a directory group or others may write to, since they could replace the socket.
/// The socket's own checks follow when the daemon binds it.
///
/// # Errors
/// One line saying what is wrong and what to use instead.
fn prepare_socket_dir(socket: &Path) -> Result<MadeDirs, String> {
    crate::server::config::validate_socket_path(socket)?;
    let Some(parent) = socket.parent() else {
        return Ok(MadeDirs::default());
    };
    let mut missing = Vec::new();
    let mut existing = parent;
    while let Err(e) = std::fs::symlink_metadata(existing) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(format!("cannot inspect {}: {e}", existing.display()));
        }
        missing.push(existing.to_owned());
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if missing.is_empty() {
        return check_not_shared(socket, parent);
    }
    check_socket_path(existing).map_err(|e| {
        format!(
            "will not create {} under {}: {e}; {}",
            missing[missing.len() - 1].display(),
            existing.display(),
            instead(socket, None)
        )
    })?;
    let mut made = MadeDirs::default();
    for dir in missing.into_iter().rev() {
        std::fs::DirBuilder::new()
            .mode(CREATED_DIR_MODE)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        made.0.push(dir);
    }
    Ok(made)
}

/// Refuses an existing socket directory that group or others may write to (as the daemon
/// would, but saying what to use instead).
fn check_not_shared(socket: &Path, dir: &Path) -> Result<MadeDirs, String> {
    let mode = std::fs::metadata(dir)
        .map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?
        .mode()
        & 0o7777;
    if mode & 0o022 == 0 {
        return Ok(MadeDirs::default());
    }
    Err(format!(
        "{} is writable by group or others (mode {mode:04o}), who could replace the socket; {}",
        dir.display(),
        instead(socket, Some(dir))
    ))
}

/// What to use instead of `socket`: a directory of its own under `shared` when `dev` may
/// create one there, a path under `$XDG_RUNTIME_DIR` when that exists, and the default.
fn instead(socket: &Path, shared: Option<&Path>) -> String {
    let name = socket
        .file_name()
        .map_or_else(|| "agent.sock".into(), |n| n.to_string_lossy().into_owned());
    let stem = socket
        .file_stem()
        .map_or_else(|| "agent".into(), |n| n.to_string_lossy().into_owned());
    let mut out = String::from("use a directory only you can write, such as ");
    match (shared, xdg_runtime_dir()) {
        (Some(dir), _) if check_socket_path(dir).is_ok() => {
            let own = dir.join(&stem);
            out += &format!(
                "--socket {} (dev creates {}, mode 0700)",
                own.join(&name).display(),
                own.display()
            );
        }
        (_, Some(xdg)) => {
            out += &format!(
                "--socket {} (dev creates missing directories, mode 0700)",
                xdg.join("eca").join(&name).display()
            );
        }
        _ => out += "one under your home directory",
    }
    out += ", or leave out --socket: dev then uses ";
    out += &match xdg_runtime_dir() {
        Some(xdg) => xdg.join(XDG_SOCKET_NAME).display().to_string(),
        None => "a new private directory under /tmp".to_owned(),
    };
    out
}

fn socket_error(socket: &Path, problem: String) -> AgentError {
    AgentError::Config(ConfigError {
        source_name: format!("--socket {}", socket.display()),
        problems: vec![problem],
    })
}
