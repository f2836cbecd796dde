//! Configuration: the TOML file and the command-line flags, parsed and validated in one place
//! into plain typed values. Every bad key is reported at once. The other modules receive only
//! their own section.
//!
//! Defaults live here, one typed `const` per key; docs elsewhere link to these consts.

use std::path::PathBuf;
use std::time::Duration;

/// Default configuration file path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ecs-credential-agent/config.toml";

/// `[metadata] endpoint`: the metadata service (ECS docs: `http://100.100.100.200`).
pub const DEFAULT_ENDPOINT: &str = "http://100.100.100.200";
/// `[metadata] token_ttl_secs`: the metadata token TTL asked for; the service accepts 1..=21600.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// The largest metadata token TTL the service accepts (ECS docs, hardened mode).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// `[metadata] connect_timeout_ms` (the official SDKs use 1 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// `[metadata] read_timeout_ms` (the official SDKs use 1 s).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(1_000);

/// `[server] socket_path`.
pub const DEFAULT_SOCKET_PATH: &str = "/run/ecs-credential-agent/agent.sock";
/// `[server] socket_mode`.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;
/// `[server] allowed_uids`.
pub const DEFAULT_ALLOWED_UIDS: &[u32] = &[0];
/// `[server] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// `[server] header_timeout_ms`: a client must send its request head within this.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_millis(5_000);
/// `[server] idle_timeout_ms`: an idle keep-alive connection is closed after this.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `[server] first_credentials_wait_ms`.
pub const DEFAULT_FIRST_CREDENTIALS_WAIT: Duration = Duration::from_millis(5_000);
/// `[server] shutdown_grace_ms`: how long in-flight requests may take after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_millis(5_000);

/// `[credentials] expiry_margin_secs`: credentials are not served when less than this is left.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// `[credentials] backoff_initial_ms`.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(1_000);
/// `[credentials] backoff_max_secs`.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[metadata]`.
    pub metadata: MetadataConfig,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[credentials]`.
    pub credentials: RefreshConfig,
    /// `[log]`.
    pub log: LogConfig,
}

/// `[metadata]`: how to reach the metadata service.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataConfig {
    /// `endpoint`: base URL, `http://host[:port]`, no path. Never reached through a proxy.
    pub endpoint: String,
    /// `role_name`: the RAM role; `None` discovers it on every refresh.
    pub role_name: Option<String>,
    /// `token_ttl_secs`: 1..=21600 s.
    pub token_ttl: Duration,
    /// `connect_timeout_ms`.
    pub connect_timeout: Duration,
    /// `read_timeout_ms`.
    pub read_timeout: Duration,
    /// `allow_imdsv1_fallback`: when the token `PUT` fails, try tokenless `GET`s (normal-mode
    /// instances only), with a warning each time. Off by default.
    pub allow_imdsv1_fallback: bool,
}

/// `[server]`: the Unix socket and who may use it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `socket_path`.
    pub socket_path: PathBuf,
    /// `socket_mode`: permission bits of the socket file (octal string in the file).
    pub socket_mode: u32,
    /// `socket_group`: group owner of the socket file, by name or number.
    pub socket_group: Option<String>,
    /// `allowed_uids`: callers with these uids are served.
    pub allowed_uids: Vec<u32>,
    /// `allowed_gids`: callers whose primary or a supplementary group is one of these are served.
    pub allowed_gids: Vec<u32>,
    /// `max_connections`: beyond it a new connection gets `503 TooManyConnections` and is closed.
    pub max_connections: usize,
    /// `header_timeout_ms`.
    pub header_timeout: Duration,
    /// `idle_timeout_ms`.
    pub idle_timeout: Duration,
    /// `first_credentials_wait_ms`.
    pub first_credentials_wait: Duration,
    /// `shutdown_grace_ms`.
    pub shutdown_grace: Duration,
}

/// `[credentials]`: refresh policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshConfig {
    /// `expiry_margin_secs`.
    pub expiry_margin: Duration,
    /// `backoff_initial_ms`.
    pub backoff_initial: Duration,
    /// `backoff_max_secs`.
    pub backoff_max: Duration,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `level`: a `tracing` filter such as `info` or `info,audit=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// `format`.
    pub format: LogFormat,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            role_name: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            allow_imdsv1_fallback: false,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            socket_mode: DEFAULT_SOCKET_MODE,
            socket_group: None,
            allowed_uids: DEFAULT_ALLOWED_UIDS.to_vec(),
            allowed_gids: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            first_credentials_wait: DEFAULT_FIRST_CREDENTIALS_WAIT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}
