//! The `serve` command: wires configuration, the metadata client, the refresher and the socket
//! server together, and maps failures to exit statuses.

use std::future::Future;

use crate::config::{Config, ConfigError, LogConfig, LogFormat};
use crate::credentials::refresher;
use crate::metadata;
use crate::metrics::{self, Metrics};
use crate::server::{self, BindError, Listener};
use crate::time::SharedTimeSource;

/// Exit status for a clean stop.
pub const EXIT_OK: u8 = 0;
/// Exit status for anything not listed here.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for command-line usage errors (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when another agent already serves the socket (`EX_UNAVAILABLE`, sysexits.h).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit status for a configuration error (`EX_CONFIG`, sysexits.h); the systemd unit's
/// `RestartPreventExitStatus=` names it so a bad configuration does not restart in a loop.
pub const EXIT_CONFIG: u8 = 78;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The socket could not be bound (including: another agent already serves it).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The metadata client could not be built from the configuration.
    #[error("metadata client: {0}")]
    Metadata(#[from] metadata::MetadataError),
    /// The `[metrics] listen` address could not be bound.
    #[error(transparent)]
    MetricsBind(#[from] metrics::tcp::BindError),
    /// Process hardening failed.
    #[error("cannot harden the process (disable core dumps / ptrace): {0}")]
    Harden(#[source] nix::Error),
    /// Another I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> u8 {
        match self {
            AgentError::Config(_) | AgentError::Metadata(_) => EXIT_CONFIG,
            AgentError::Bind(BindError::AlreadyServing { .. }) => EXIT_UNAVAILABLE,
            AgentError::Bind(_)
            | AgentError::MetricsBind(_)
            | AgentError::Harden(_)
            | AgentError::Io { .. } => EXIT_FAILURE,
        }
    }
}

/// Installs the global `tracing` subscriber on stderr: `RUST_LOG` if set, else `[log] level`;
/// text or JSON lines per `[log] format`; colour only when stderr is a terminal.
pub fn init_logging(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The shutdown future for [`serve`]: completes on SIGTERM or SIGINT and logs which.
///
/// # Errors
/// [`AgentError::Io`] when the signal handlers cannot be installed.
pub fn signal_shutdown() -> Result<impl Future<Output = ()> + Send, AgentError> {
    let signal = crate::process::shutdown_signal().map_err(|source| AgentError::Io {
        context: "installing signal handlers",
        source,
    })?;
    Ok(async {
        let name = signal.await;
        tracing::info!(signal = name, "shutting down");
    })
}

/// Runs the daemon until `shutdown` completes: hardens the process, binds the socket, starts
/// the refresher and serves; on shutdown drains in-flight requests and removes the socket.
///
/// # Errors
/// [`AgentError`]; map it to an exit status with [`AgentError::exit_status`].
pub async fn serve(
    config: Config,
    time: SharedTimeSource,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    crate::process::harden().map_err(AgentError::Harden)?;
    match crate::process::raise_open_files_limit() {
        Ok(n) if (n as usize) < config.server.max_connections + 64 => tracing::warn!(
            open_files_limit = n,
            max_connections = config.server.max_connections,
            "the open-files limit is lower than max_connections needs"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let metrics = Metrics::new();
    let client =
        metadata::Client::new(&config.metadata, time.clone())?.with_metrics(metrics.clone());
    let listener = Listener::bind(&config.server)?;
    let metrics_server = match start_metrics_listener(&config, &metrics).await {
        Ok(server) => server,
        Err(e) => {
            let _ = listener.remove_socket();
            return Err(e);
        }
    };
    tracing::info!(
        socket = %config.server.socket_path.display(),
        endpoint = %config.metadata.endpoint,
        role = config.metadata.role_name.as_deref().unwrap_or("(discovered)"),
        "ecs-credential-agent listening"
    );
    let refresher =
        refresher::spawn_with_metrics(client, config.credentials.clone(), time, metrics.clone());
    metrics.observe_state(refresher.subscribe());
    let result = server::run(
        &listener,
        server::fixed_config(config.server.clone()),
        refresher.subscribe(),
        metrics,
        shutdown,
    )
    .await;
    drop(metrics_server);
    match listener.remove_socket() {
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove the socket"),
    }
    drop(refresher);
    result.map_err(|source| AgentError::Io {
        context: "serving the socket",
        source,
    })
}

/// Binds and starts the `[metrics] listen` TCP listener, if configured.
///
/// # Errors
/// [`AgentError::MetricsBind`] naming the address when it cannot be bound.
async fn start_metrics_listener(
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<metrics::tcp::Server>, AgentError> {
    let Some(addr) = config.metrics.listen else {
        return Ok(None);
    };
    let tcp = metrics::tcp::bind(addr).await?;
    tracing::info!(%addr, "serving GET /metrics on TCP");
    Ok(Some(metrics::tcp::spawn(tcp, metrics.clone())))
}
