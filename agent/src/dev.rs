//! `ecs-credential-agent dev`: the real agent against the built-in metadata emulator.
//!
//! Starts an [`ecs_metadata_emulator::Emulator`] on `127.0.0.1` (hardened-only, one fake RAM role
//! whose fake credentials last [`DEV_CREDENTIAL_LIFETIME`] and rotate every
//! [`DEV_ROTATE_AFTER`]), then runs the same daemon as `serve` against it, on a socket only the
//! invoking user may use, and prints the `curl` command to try.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ecs_metadata_emulator::{Emulator, EmulatorConfig};

use crate::config::{Config, ConfigError};
use crate::daemon::{self, AgentError};
use crate::logging;
use crate::time::SystemClock;

/// Lifetime of the emulator's fake credentials in `dev` mode.
pub const DEV_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(3_600);
/// The emulator rotates the fake credentials this long after issuing them.
pub const DEV_ROTATE_AFTER: Duration = Duration::from_secs(600);

/// Runs `dev` until SIGTERM/SIGINT.
///
/// # Errors
/// [`AgentError`] when the emulator, the socket or the daemon cannot start.
pub async fn run(socket: Option<PathBuf>) -> Result<(), AgentError> {
    daemon::init_logging(&logging::Config::default());
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
    let (socket, private_dir) = match socket {
        Some(s) => (s, None),
        None => default_socket().map_err(|source| AgentError::Io {
            context: "creating a private directory for the dev socket",
            source,
        })?,
    };
    let mut config = Config::default();
    config.metadata.endpoint = emulator.endpoint().parse().map_err(|problem| {
        AgentError::Config(ConfigError {
            source_name: "dev".to_owned(),
            problems: vec![format!("the emulator's endpoint: {problem}")],
        })
    })?;
    config.server.socket_path = socket.clone();
    config.server.allowed_uids = vec![nix::unistd::geteuid().as_raw()];
    crate::server::config::validate_socket_path(&socket).map_err(|problem| {
        AgentError::Config(ConfigError {
            source_name: "--socket".to_owned(),
            problems: vec![problem],
        })
    })?;

    let announce = format!(
        "ecs-credential-agent dev: metadata emulator on {}\nTry (as this user):\n\n  \
         curl -s --unix-socket {} http://localhost/v1/credentials\n\nStop with Ctrl-C.",
        emulator.endpoint(),
        socket.display()
    );

    let shutdown = daemon::signal_shutdown()?;
    let options = daemon::Options {
        announce: Some(announce),
        ..daemon::Options::default()
    };
    let result = daemon::serve_with(config, Arc::new(SystemClock), shutdown, options).await;
    emulator.shutdown().await;
    if let Some(dir) = private_dir {
        let _ = std::fs::remove_dir(dir);
    }
    result
}

/// `$XDG_RUNTIME_DIR/ecs-credential-agent-dev.sock` when that directory exists, else
/// `agent.sock` in a new private (0700) directory under `/tmp` (short, so it stays well within
/// the 107-byte socket path limit), which is returned too so it can be removed at exit.
fn default_socket() -> std::io::Result<(PathBuf, Option<PathBuf>)> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if dir.is_dir() {
            return Ok((dir.join("ecs-credential-agent-dev.sock"), None));
        }
    }
    let dir = nix::unistd::mkdtemp("/tmp/eca-dev-XXXXXX").map_err(std::io::Error::from)?;
    Ok((dir.join("agent.sock"), Some(dir)))
}
