//! The `serve` command: wires configuration, the metadata client, the refresher and the socket
//! server together, and maps failures to exit statuses.

use std::future::Future;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::credentials::refresher::{self, Refresher};
use crate::credentials::state::StateReceiver;
use crate::heartbeat::{Heartbeat, Watched};
use crate::logging;
use crate::metrics::Metrics;
use crate::profiles::{self, Registry};
use crate::reload::{self, Reloader, Source};
use crate::server::bridge::BridgeListener;
use crate::server::metrics_listener::{self, MetricsBindError, MetricsListener};
use crate::server::{self, ConfigReceiver, Listener, Server, SocketBindError};
use crate::sources::metadata;
use crate::systemd::activation::{self, ActivationError, Inherited, Passed};
use crate::systemd::Notifier;
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
    Bind(#[from] SocketBindError),
    /// The socket handed over by systemd is unusable (a `.socket` unit problem: exit 78).
    #[error(transparent)]
    Activation(#[from] ActivationError),
    /// The metadata client could not be built from the configuration.
    #[error("metadata client: {0}")]
    Metadata(#[from] metadata::MetadataError),
    /// The `[metrics] listen` address could not be bound.
    #[error(transparent)]
    MetricsBind(#[from] MetricsBindError),
    /// The `[bridge] listen` address could not be bound (or callers there could not be
    /// identified).
    #[error(transparent)]
    BridgeBind(#[from] crate::server::bridge::BridgeBindError),
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
            AgentError::Config(_) | AgentError::Metadata(_) | AgentError::Activation(_) => {
                EXIT_CONFIG
            }
            AgentError::Bind(SocketBindError::AlreadyServing { .. }) => EXIT_UNAVAILABLE,
            AgentError::Bind(_)
            | AgentError::MetricsBind(_)
            | AgentError::BridgeBind(_)
            | AgentError::Harden(_)
            | AgentError::Io { .. } => EXIT_FAILURE,
        }
    }
}

/// Installs the global `tracing` subscriber on stderr: `RUST_LOG` if set, else `[log] level`;
/// text, journal or JSON lines (see [`crate::logging`]).
pub fn init_logging(log: &logging::Config) {
    let _ = crate::logging::init(log);
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

/// A refresher heartbeat older than this means the refresher is stuck: it beats at least every
/// [`refresher::HEARTBEAT_INTERVAL`] while it sleeps and before each fetch, and one fetch makes
/// at most this many metadata requests (token, role list and credentials, with one token
/// renewal), each bounded by [`metadata::client::request_deadline`].
const REQUESTS_PER_FETCH: u32 = 6;

/// A server heartbeat older than this many [`server::HEARTBEAT_INTERVAL`]s means the accept
/// loop is stuck.
const SERVER_MISSED_BEATS: u32 = 5;

/// What the profile source is built from, once the instance role's refresher runs
/// ([`ProfileSource`]).
#[derive(Debug)]
pub struct ProfileInputs<'a> {
    /// The configuration at start (`[sts]`, `[metadata]`, `[credentials]`…).
    pub config: &'a Config,
    /// The instance role's credentials (what `AssumeRole` is signed with).
    pub instance: StateReceiver,
    /// The wall clock.
    pub time: SharedTimeSource,
    /// The agent's metrics (for [`profiles::factory`]: `profile_refreshes_total`).
    pub metrics: Metrics,
    /// The metadata client the instance role's refresher uses (for the STS source: the
    /// instance's region id and instance id, with the same cached metadata token).
    pub metadata: Arc<metadata::Client>,
}

/// The production profile source: each profile's refresher fetches through
/// [`sources::sts::AssumedRole`](crate::sources::sts::AssumedRole), `AssumeRole` signed with the
/// instance role's credentials, one shared [`Assumer`](crate::sources::sts::Assumer) (`[sts]`).
///
/// # Errors
/// The `[sts]` problem in words (an unreadable `ca_file`, no trusted roots at all).
pub fn sts_profiles(inputs: ProfileInputs<'_>) -> Result<profiles::Factory, String> {
    use crate::sources::sts::{AssumedRole, Assumer};
    let assumer = Assumer::new(
        &inputs.config.sts,
        inputs.metadata,
        inputs.instance,
        inputs.time.clone(),
    )
    .map_err(|e| format!("[sts]: {e}"))?;
    Ok(profiles::factory(
        move |spec| AssumedRole::new(Arc::clone(&assumer), spec.clone()),
        inputs.config.credentials.clone(),
        inputs.time,
        inputs.metrics,
    ))
}

/// Builds the [`profiles::Factory`] that starts each profile's refresher (in production: the
/// STS source through [`profiles::factory`]); an `Err` is a configuration problem (exit 78).
pub type MakeFactory =
    Box<dyn FnOnce(ProfileInputs<'_>) -> Result<profiles::Factory, String> + Send>;

/// The profile source given to [`serve_with`] ([`Options::profiles`]).
pub struct ProfileSource(pub MakeFactory);

impl std::fmt::Debug for ProfileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProfileSource")
    }
}

/// What [`serve_with`] takes besides the configuration.
#[derive(Debug, Default)]
pub struct Options {
    /// Where the profiles' credentials come from (`[[profile]]`). `None`: STS
    /// ([`sts_profiles`]).
    pub profiles: Option<ProfileSource>,
    /// The sockets handed over by systemd ([`activation::take_sockets`]): without a Unix
    /// socket the agent binds `socket_path`; without a bridge socket it binds `[bridge] listen`
    /// when set.
    pub passed: Passed,
    /// Where the configuration came from, to reload it on `SIGHUP`; `None` leaves `SIGHUP`
    /// alone.
    pub reload: Option<Source>,
    /// Printed to stdout once the socket listens (the `dev` command's "try this" banner), so
    /// nothing is promised before the agent can keep it.
    pub announce: Option<String>,
    /// Test-only hooks; see [`TestHooks`].
    #[doc(hidden)]
    pub test_hooks: TestHooks,
}

/// Test-only hooks. Only the end-to-end test binary (`e2e-agent`) sets them, from environment
/// variables it reads itself; the `ecs-credential-agent` binary always passes the default, so
/// nothing in production can trigger them.
#[doc(hidden)]
#[derive(Debug, Default, Clone)]
pub struct TestHooks {
    /// Wedge the server's accept loop this long after start (see
    /// [`server::Supervision::wedge_after`]).
    pub wedge_server_after: Option<Duration>,
    /// Read the wall clock from this source instead of the system clock (the fault matrix's
    /// clock-skew rows). Only the `serve` command uses it.
    pub time: Option<SharedTimeSource>,
    /// Make requests for this path panic in their handler (see
    /// [`server::Supervision::panic_on_path`]).
    pub panic_on_path: Option<String>,
    /// Judge root and the agent's own uid by the rules like any other caller (see
    /// [`server::Supervision::judge_every_uid`]).
    pub judge_every_uid: bool,
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
    serve_with(config, time, shutdown, Options::default()).await
}

/// [`serve`] under systemd: serves on `options.passed` when systemd passed sockets, tells
/// systemd about readiness, status and liveness ([`crate::systemd`]), and reloads on `SIGHUP`
/// when `options.reload` is set ([`crate::reload`]).
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    config: Config,
    time: SharedTimeSource,
    shutdown: impl Future<Output = ()> + Send,
    options: Options,
) -> Result<(), AgentError> {
    crate::process::harden().map_err(AgentError::Harden)?;
    reload::check_profiles(&config, true).map_err(|problem| {
        AgentError::Config(ConfigError {
            source_name: options.reload.as_ref().map_or_else(
                || "the configuration".to_owned(),
                |s| {
                    s.path.as_deref().map_or_else(
                        || crate::config::DEFAULT_CONFIG_PATH.to_owned(),
                        |p| p.display().to_string(),
                    )
                },
            ),
            problems: vec![problem],
        })
    })?;
    check_open_files_limit(&config.server);
    let metrics = Metrics::new();
    let client = Arc::new(
        metadata::Client::new(&config.metadata, time.clone())?.with_metrics(metrics.clone()),
    );
    let listener = listen(&config, options.passed.socket)?;
    if let Some(text) = &options.announce {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    }
    let metrics_server = match start_metrics_listener(&config, &metrics).await {
        Ok(server) => server,
        Err(e) => {
            let _ = listener.remove_socket();
            return Err(e);
        }
    };
    let bridge = match listen_bridge(&config, options.passed.bridge) {
        Ok(bridge) => bridge,
        Err(e) => {
            let _ = listener.remove_socket();
            return Err(e);
        }
    };
    let refresher = Refresher::builder(
        Arc::clone(&client),
        config.credentials.clone(),
        time.clone(),
    )
    .metrics(metrics.clone())
    .spawn();
    let state = refresher.subscribe();
    metrics.observe_credentials(move |now| state.borrow().gauges(now));
    let make = options.profiles.map_or_else(
        || Box::new(sts_profiles) as MakeFactory,
        |ProfileSource(make)| make,
    );
    let inputs = ProfileInputs {
        config: &config,
        instance: refresher.subscribe(),
        time,
        metrics: metrics.clone(),
        metadata: client,
    };
    let registry = match make(inputs) {
        Ok(factory) => Some(Registry::new(factory, metrics.clone())),
        Err(problem) if !config.profile_list.is_empty() => {
            let _ = listener.remove_socket();
            return Err(AgentError::Config(ConfigError {
                source_name: "the profile source".to_owned(),
                problems: vec![problem],
            }));
        }
        Err(problem) => {
            tracing::warn!(
                problem = %problem,
                "profiles cannot be served (none configured now; a reload that adds some will be \
                 rejected until this is fixed and the agent restarted)"
            );
            None
        }
    };
    // Without reloads, the registry (its refreshers) lives here until the server returns.
    let (server_config, _registry) = match options.reload {
        Some(source) => (start_reloading(source, config.clone(), registry)?, None),
        None => {
            let mut registry = registry;
            let published = reload::publish(&config, registry.as_mut());
            (tokio::sync::watch::channel(published).1, registry)
        }
    };
    let profile_states = server_config.clone();
    metrics.observe_profiles(move |now| profile_states.borrow().profiles.gauges(now));
    let heartbeat = Heartbeat::new();
    let watched = watched_loops(&config, &refresher, &heartbeat);
    let mut notifier =
        Notifier::from_env(refresher.subscribe(), config.systemd.ready_timeout, watched);
    let supervision = server::Supervision {
        heartbeat,
        wedge_after: options.test_hooks.wedge_server_after,
        panic_on_path: options.test_hooks.panic_on_path.clone(),
        judge_every_uid: options.test_hooks.judge_every_uid,
    };
    let shutdown = async {
        shutdown.await;
        notifier.stopping();
    };
    let mut server = Server::new(&listener, server_config, refresher.subscribe(), metrics)
        .supervision(supervision);
    if let Some(b) = &bridge {
        server = server.bridge(b);
    }
    let result = server.run(shutdown).await;
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
) -> Result<Option<MetricsListener>, AgentError> {
    let Some(addr) = config.metrics.listen else {
        return Ok(None);
    };
    let tcp = metrics_listener::bind(addr).await?;
    tracing::info!(%addr, "serving GET /metrics on TCP");
    Ok(Some(metrics_listener::spawn(tcp, metrics.clone())))
}

fn check_open_files_limit(cfg: &server::config::Config) {
    match crate::process::raise_open_files_limit() {
        Ok(n)
            if (n as usize)
                < cfg.max_connections * server::FDS_PER_CONNECTION
                    + metrics_listener::MAX_CONNECTIONS
                    + 64 =>
        {
            tracing::warn!(
                open_files_limit = n,
                max_connections = cfg.max_connections,
                "the open-files limit is lower than max_connections needs"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

/// The socket systemd passed (with a warning per mismatch with the configuration), else a
/// newly bound `socket_path`.
fn listen(config: &Config, inherited: Option<Inherited>) -> Result<Listener, AgentError> {
    let role = config
        .metadata
        .role_name
        .as_deref()
        .unwrap_or("(discovered)");
    let Some(Inherited { listener, path }) = inherited else {
        let listener = Listener::bind(&config.server)?;
        tracing::info!(
            socket = %config.server.socket_path.display(),
            endpoint = %config.metadata.endpoint,
            role,
            "ecs-credential-agent listening"
        );
        return Ok(listener);
    };
    match &path {
        Some(p) => activation::mismatches(p, &config.server)
            .iter()
            .for_each(|m| tracing::warn!("{m}")),
        None => tracing::warn!("the socket systemd passed has no path; cannot check its mode"),
    }
    let shown = path.as_ref().map(|p| p.display().to_string());
    let listener = Listener::from_std(listener, path).map_err(|source| AgentError::Io {
        context: "using the socket systemd passed",
        source,
    })?;
    tracing::info!(
        socket = shown.as_deref().unwrap_or("(unnamed)"),
        endpoint = %config.metadata.endpoint,
        role,
        "ecs-credential-agent listening on the socket passed by systemd"
    );
    Ok(listener)
}

/// The loopback listener: the `bridge` socket systemd passed (which must agree with
/// `[bridge] listen` when that is set, [`activation::bridge_address`]), else a newly bound
/// `[bridge] listen`, else none.
fn listen_bridge(
    config: &Config,
    passed: Option<std::net::TcpListener>,
) -> Result<Option<BridgeListener>, AgentError> {
    let configured = config.bridge.listen;
    let Some(passed) = passed else {
        let bridge = configured.map(BridgeListener::bind).transpose()?;
        if let Some(b) = &bridge {
            tracing::info!(addr = %b.local_addr(), "serving credentials URIs on loopback TCP ([bridge] listen)");
        }
        return Ok(bridge);
    };
    let addr = match passed.local_addr() {
        Ok(std::net::SocketAddr::V4(a)) => activation::bridge_address(a, configured)?,
        // take_sockets checked it is 127.0.0.1; from_std says what is wrong otherwise.
        _ => SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
    };
    let bridge = BridgeListener::from_std(passed)?;
    if configured.is_none() {
        tracing::warn!(
            %addr,
            "systemd passed a bridge socket but [bridge] listen is unset: serving it; set \
             [bridge] listen to this address so `ecs-credential-agent env` prints the URI"
        );
    }
    tracing::info!(%addr, "serving credentials URIs on the loopback socket passed by systemd");
    Ok(Some(bridge))
}

/// Installs the `SIGHUP` handler and starts the task that reloads on it.
fn start_reloading(
    source: Source,
    config: Config,
    registry: Option<Registry>,
) -> Result<ConfigReceiver, AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(|source| AgentError::Io {
        context: "installing the SIGHUP handler",
        source,
    })?;
    let (mut reloader, rx) = Reloader::new(source, config, registry);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload_once(&mut reloader);
        }
    });
    Ok(rx)
}

fn reload_once(reloader: &mut Reloader) {
    match reloader.reload() {
        Ok(done) => {
            for key in &done.needs_restart {
                tracing::warn!(
                    key,
                    "changed in the configuration file; takes effect only after a restart"
                );
            }
            tracing::info!(
                server_changed = done.server_changed,
                profiles_changed = done.profiles_changed,
                log_level_changed = done.log_level_changed,
                "configuration reloaded (SIGHUP)"
            );
        }
        Err(e) => tracing::error!(
            error = %e,
            "configuration reload (SIGHUP) rejected; the previous configuration stays in force"
        ),
    }
}

/// The refresher and the accept loop, each with the longest gap a healthy loop shows.
fn watched_loops(config: &Config, refresher: &Refresher, server: &Heartbeat) -> Vec<Watched> {
    let fetch = metadata::client::request_deadline(&config.metadata) * REQUESTS_PER_FETCH;
    vec![
        Watched {
            name: "refresher",
            beats: refresher.heartbeat(),
            max_gap: refresher::HEARTBEAT_INTERVAL + fetch,
        },
        Watched {
            name: "server",
            beats: server.subscribe(),
            max_gap: server::HEARTBEAT_INTERVAL * SERVER_MISSED_BEATS,
        },
    ]
}
