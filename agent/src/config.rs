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
    /// `[systemd]`.
    pub systemd: SystemdConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
}

/// `[systemd] ready_timeout_secs`: become ready this long after start even without
/// credentials, so boot is never blocked by an unreachable metadata service.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// `[systemd]`: behaviour under systemd (`Type=notify`).
#[derive(Debug, Clone, PartialEq)]
pub struct SystemdConfig {
    /// `ready_timeout_secs`.
    pub ready_timeout: Duration,
}

impl Default for SystemdConfig {
    fn default() -> Self {
        SystemdConfig {
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

/// `[metrics]`: Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsConfig {
    /// `listen`: a loopback TCP address (`127.0.0.1:9464`, `[::1]:9464`) serving only
    /// `GET /metrics`; off by default. Metrics are always served on the agent socket to allowed
    /// callers.
    pub listen: Option<std::net::SocketAddr>,
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

/// A configuration that could not be used: every problem found, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration in {source_name}:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// Where the configuration came from (a file path, or "command line").
    pub source_name: String,
    /// One line per problem, e.g. `[server] max_connections: expected an integer from 1 to 1000000, got "many"`.
    pub problems: Vec<String>,
}

/// Values given on the command line; each one overrides the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--endpoint`.
    pub endpoint: Option<String>,
    /// `--role-name`.
    pub role_name: Option<String>,
    /// `--socket`.
    pub socket_path: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Loads `path` (or [`DEFAULT_CONFIG_PATH`] when `None`; a missing default file means all
    /// defaults, a missing explicit file is an error), then applies `overrides`.
    ///
    /// # Errors
    /// [`ConfigError`] listing every unreadable, unknown or invalid key at once.
    pub fn load(
        path: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let (name, text) = match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => (p.display().to_string(), t),
                Err(e) => {
                    return Err(ConfigError {
                        source_name: p.display().to_string(),
                        problems: vec![format!("cannot read the file: {e}")],
                    })
                }
            },
            None => match std::fs::read_to_string(DEFAULT_CONFIG_PATH) {
                Ok(t) => (DEFAULT_CONFIG_PATH.to_owned(), t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    (DEFAULT_CONFIG_PATH.to_owned(), String::new())
                }
                Err(e) => {
                    return Err(ConfigError {
                        source_name: DEFAULT_CONFIG_PATH.to_owned(),
                        problems: vec![format!("cannot read the file: {e}")],
                    })
                }
            },
        };
        let mut config = Config::parse(&name, &text)?;
        config.apply(overrides).map_err(|problems| ConfigError {
            source_name: "command line".to_owned(),
            problems,
        })?;
        Ok(config)
    }

    /// Parses and validates a TOML document; `source_name` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem: TOML syntax, unknown sections or keys, wrong
    /// types, values out of range.
    pub fn parse(source_name: &str, text: &str) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            source_name: source_name.to_owned(),
            problems,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| fail(vec![toml_problem(text, &e)]))?;
        let mut p = Parser::default();
        let mut config = Config::default();
        for (section, value) in &table {
            let Some(keys) = value.as_table() else {
                p.problem(section, "", "expected a section ([name]), got a plain key");
                continue;
            };
            match section.as_str() {
                "metadata" => p.metadata(keys, &mut config.metadata),
                "server" => p.server(keys, &mut config.server),
                "credentials" => p.credentials(keys, &mut config.credentials),
                "log" => p.log(keys, &mut config.log),
                "systemd" => p.systemd(keys, &mut config.systemd),
                "metrics" => p.metrics(keys, &mut config.metrics),
                other => p.problem(
                    other,
                    "",
                    "unknown section (known: metadata, server, credentials, log, systemd, metrics)",
                ),
            }
        }
        p.cross_checks(&config);
        if p.problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(p.problems))
        }
    }

    fn apply(&mut self, o: &Overrides) -> Result<(), Vec<String>> {
        let mut p = Parser::default();
        if let Some(e) = &o.endpoint {
            p.check(validate_endpoint(e), "metadata", "endpoint (--endpoint)");
            self.metadata.endpoint = e.trim_end_matches('/').to_owned();
        }
        if let Some(r) = &o.role_name {
            p.check(validate_role_name(r), "metadata", "role_name (--role-name)");
            self.metadata.role_name = Some(r.clone());
        }
        if let Some(s) = &o.socket_path {
            p.check(validate_socket_path(s), "server", "socket_path (--socket)");
            self.server.socket_path = s.clone();
        }
        if let Some(l) = &o.log_level {
            p.check(validate_log_level(l), "log", "level (--log-level)");
            self.log.level = l.clone();
        }
        if let Some(f) = o.log_format {
            self.log.format = f;
        }
        if p.problems.is_empty() {
            Ok(())
        } else {
            Err(p.problems)
        }
    }
}

/// Collects problems while reading sections.
#[derive(Default)]
struct Parser {
    problems: Vec<String>,
}

type Keys = toml::map::Map<String, toml::Value>;

impl Parser {
    fn problem(&mut self, section: &str, key: &str, what: &str) {
        if key.is_empty() {
            self.problems.push(format!("[{section}]: {what}"));
        } else {
            self.problems.push(format!("[{section}] {key}: {what}"));
        }
    }

    fn check(&mut self, r: Result<(), String>, section: &str, key: &str) {
        if let Err(e) = r {
            self.problem(section, key, &e);
        }
    }

    fn unknown(&mut self, section: &str, key: &str, known: &[&str]) {
        self.problem(
            section,
            key,
            &format!("unknown key (known: {})", known.join(", ")),
        );
    }

    fn string(&mut self, s: &str, k: &str, v: &toml::Value) -> Option<String> {
        match v.as_str() {
            Some(x) => Some(x.to_owned()),
            None => {
                self.problem(s, k, &format!("expected a string, got {}", show(v)));
                None
            }
        }
    }

    fn bool(&mut self, s: &str, k: &str, v: &toml::Value) -> Option<bool> {
        match v.as_bool() {
            Some(x) => Some(x),
            None => {
                self.problem(s, k, &format!("expected true or false, got {}", show(v)));
                None
            }
        }
    }

    fn int(&mut self, s: &str, k: &str, v: &toml::Value, min: u64, max: u64) -> Option<u64> {
        match v.as_integer().and_then(|i| u64::try_from(i).ok()) {
            Some(x) if (min..=max).contains(&x) => Some(x),
            _ => {
                self.problem(
                    s,
                    k,
                    &format!("expected an integer from {min} to {max}, got {}", show(v)),
                );
                None
            }
        }
    }

    fn millis(
        &mut self,
        s: &str,
        k: &str,
        v: &toml::Value,
        min: u64,
        max: u64,
    ) -> Option<Duration> {
        self.int(s, k, v, min, max).map(Duration::from_millis)
    }

    fn secs(&mut self, s: &str, k: &str, v: &toml::Value, min: u64, max: u64) -> Option<Duration> {
        self.int(s, k, v, min, max).map(Duration::from_secs)
    }

    fn ids(&mut self, s: &str, k: &str, v: &toml::Value) -> Option<Vec<u32>> {
        let Some(items) = v.as_array() else {
            self.problem(
                s,
                k,
                &format!(
                    "expected an array of ids such as [0, 1000], got {}",
                    show(v)
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item.as_integer().and_then(|i| u32::try_from(i).ok()) {
                Some(id) if id != u32::MAX => out.push(id),
                _ => {
                    self.problem(
                        s,
                        k,
                        &format!("expected ids from 0 to 4294967294, got {}", show(item)),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    fn metadata(&mut self, keys: &Keys, c: &mut MetadataConfig) {
        const S: &str = "metadata";
        for (k, v) in keys {
            match k.as_str() {
                "endpoint" => {
                    if let Some(e) = self.string(S, k, v) {
                        self.check(validate_endpoint(&e), S, k);
                        c.endpoint = e.trim_end_matches('/').to_owned();
                    }
                }
                "role_name" => {
                    if let Some(r) = self.string(S, k, v) {
                        self.check(validate_role_name(&r), S, k);
                        c.role_name = Some(r);
                    }
                }
                "token_ttl_secs" => {
                    let max = MAX_TOKEN_TTL.as_secs();
                    if let Some(d) = self.secs(S, k, v, 1, max) {
                        c.token_ttl = d;
                    }
                }
                "connect_timeout_ms" => {
                    if let Some(d) = self.millis(S, k, v, 1, 60_000) {
                        c.connect_timeout = d;
                    }
                }
                "read_timeout_ms" => {
                    if let Some(d) = self.millis(S, k, v, 1, 60_000) {
                        c.read_timeout = d;
                    }
                }
                "allow_imdsv1_fallback" => {
                    if let Some(b) = self.bool(S, k, v) {
                        c.allow_imdsv1_fallback = b;
                    }
                }
                _ => self.unknown(
                    S,
                    k,
                    &[
                        "endpoint",
                        "role_name",
                        "token_ttl_secs",
                        "connect_timeout_ms",
                        "read_timeout_ms",
                        "allow_imdsv1_fallback",
                    ],
                ),
            }
        }
    }

    fn server(&mut self, keys: &Keys, c: &mut ServerConfig) {
        const S: &str = "server";
        for (k, v) in keys {
            match k.as_str() {
                "socket_path" => {
                    if let Some(p) = self.string(S, k, v) {
                        let p = PathBuf::from(p);
                        self.check(validate_socket_path(&p), S, k);
                        c.socket_path = p;
                    }
                }
                "socket_mode" => {
                    if let Some(m) = self.string(S, k, v) {
                        match parse_mode(&m) {
                            Ok(m) => c.socket_mode = m,
                            Err(e) => self.problem(S, k, &e),
                        }
                    }
                }
                "socket_group" => {
                    if let Some(g) = self.string(S, k, v) {
                        self.check(validate_group(&g), S, k);
                        c.socket_group = Some(g);
                    }
                }
                "allowed_uids" => {
                    if let Some(ids) = self.ids(S, k, v) {
                        c.allowed_uids = ids;
                    }
                }
                "allowed_gids" => {
                    if let Some(ids) = self.ids(S, k, v) {
                        c.allowed_gids = ids;
                    }
                }
                "max_connections" => {
                    if let Some(n) = self.int(S, k, v, 1, 1_000_000) {
                        c.max_connections = n as usize;
                    }
                }
                "header_timeout_ms" => {
                    if let Some(d) = self.millis(S, k, v, 1, 600_000) {
                        c.header_timeout = d;
                    }
                }
                "idle_timeout_ms" => {
                    if let Some(d) = self.millis(S, k, v, 1, 3_600_000) {
                        c.idle_timeout = d;
                    }
                }
                "first_credentials_wait_ms" => {
                    if let Some(d) = self.millis(S, k, v, 0, 600_000) {
                        c.first_credentials_wait = d;
                    }
                }
                "shutdown_grace_ms" => {
                    if let Some(d) = self.millis(S, k, v, 0, 600_000) {
                        c.shutdown_grace = d;
                    }
                }
                _ => self.unknown(
                    S,
                    k,
                    &[
                        "socket_path",
                        "socket_mode",
                        "socket_group",
                        "allowed_uids",
                        "allowed_gids",
                        "max_connections",
                        "header_timeout_ms",
                        "idle_timeout_ms",
                        "first_credentials_wait_ms",
                        "shutdown_grace_ms",
                    ],
                ),
            }
        }
    }

    fn credentials(&mut self, keys: &Keys, c: &mut RefreshConfig) {
        const S: &str = "credentials";
        for (k, v) in keys {
            match k.as_str() {
                "expiry_margin_secs" => {
                    if let Some(d) = self.secs(S, k, v, 0, 3_600) {
                        c.expiry_margin = d;
                    }
                }
                "backoff_initial_ms" => {
                    if let Some(d) = self.millis(S, k, v, 1, 600_000) {
                        c.backoff_initial = d;
                    }
                }
                "backoff_max_secs" => {
                    if let Some(d) = self.secs(S, k, v, 1, 3_600) {
                        c.backoff_max = d;
                    }
                }
                _ => self.unknown(
                    S,
                    k,
                    &[
                        "expiry_margin_secs",
                        "backoff_initial_ms",
                        "backoff_max_secs",
                    ],
                ),
            }
        }
    }

    fn systemd(&mut self, keys: &Keys, c: &mut SystemdConfig) {
        const S: &str = "systemd";
        for (k, v) in keys {
            match k.as_str() {
                "ready_timeout_secs" => {
                    if let Some(d) = self.secs(S, k, v, 0, 3_600) {
                        c.ready_timeout = d;
                    }
                }
                _ => self.unknown(S, k, &["ready_timeout_secs"]),
            }
        }
    }

    fn metrics(&mut self, keys: &Keys, c: &mut MetricsConfig) {
        const S: &str = "metrics";
        for (k, v) in keys {
            match k.as_str() {
                "listen" => {
                    if let Some(a) = self.string(S, k, v) {
                        match a.parse::<std::net::SocketAddr>() {
                            Ok(addr) if addr.ip().is_loopback() => c.listen = Some(addr),
                            Ok(_) => self.problem(
                                S,
                                k,
                                &format!("must be a loopback address (metrics are for this host), got {a:?}"),
                            ),
                            Err(_) => self.problem(
                                S,
                                k,
                                &format!("expected an address such as \"127.0.0.1:9464\", got {a:?}"),
                            ),
                        }
                    }
                }
                _ => self.unknown(S, k, &["listen"]),
            }
        }
    }

    fn log(&mut self, keys: &Keys, c: &mut LogConfig) {
        const S: &str = "log";
        for (k, v) in keys {
            match k.as_str() {
                "level" => {
                    if let Some(l) = self.string(S, k, v) {
                        self.check(validate_log_level(&l), S, k);
                        c.level = l;
                    }
                }
                "format" => {
                    if let Some(f) = self.string(S, k, v) {
                        match f.parse() {
                            Ok(f) => c.format = f,
                            Err(e) => self.problem(S, k, &e),
                        }
                    }
                }
                _ => self.unknown(S, k, &["level", "format"]),
            }
        }
    }

    fn cross_checks(&mut self, c: &Config) {
        if c.credentials.backoff_max < c.credentials.backoff_initial {
            self.problem(
                "credentials",
                "backoff_max_secs",
                "must not be less than backoff_initial_ms",
            );
        }
    }
}

/// A TOML syntax error with its line and column (1-based).
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(
                "not valid TOML at line {line}, column {column}: {}",
                e.message()
            )
        }
        None => format!("not valid TOML: {}", e.message()),
    }
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected \"text\" or \"json\", got {other:?}")),
        }
    }
}

/// Checks a metadata endpoint (the metadata client's rule:
/// [`parse_endpoint`](crate::sources::metadata::client::parse_endpoint)): `http://host[:port]`,
/// no path, query or user. The service speaks plain HTTP only (ECS docs), so `https` is refused too.
pub fn validate_endpoint(e: &str) -> Result<(), String> {
    match crate::sources::metadata::client::parse_endpoint(e) {
        Ok(_) => Ok(()),
        Err(crate::sources::metadata::MetadataError::InvalidConfig { reason, .. }) => {
            Err(format!("{reason}, got {e:?}"))
        }
        Err(other) => Err(other.to_string()),
    }
}

/// Checks a RAM role name (the metadata client's rule:
/// [`check_role_name`](crate::sources::metadata::response::check_role_name)).
pub fn validate_role_name(r: &str) -> Result<(), String> {
    crate::sources::metadata::response::check_role_name(r)
}

/// Checks `socket_group`: a group number, or a group name known to this system (looked up in
/// the group database when the configuration is read, so a typo is a configuration error).
pub fn validate_group(g: &str) -> Result<(), String> {
    if g.is_empty() {
        return Err("expected a group name or number, got \"\"".to_owned());
    }
    if g.parse::<u32>().is_ok() {
        return Ok(());
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("no group named {g:?} on this system")),
        Err(e) => Err(format!("cannot look up group {g:?}: {e}")),
    }
}

/// Checks a socket path: absolute, and short enough for `sun_path` (107 bytes plus NUL).
pub fn validate_socket_path(p: &std::path::Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let len = p.as_os_str().as_bytes().len();
    if !p.is_absolute() {
        Err(format!(
            "expected an absolute path, got {:?}",
            p.display().to_string()
        ))
    } else if len > 107 {
        Err(format!(
            "path is {len} bytes; Unix socket paths are limited to 107 bytes"
        ))
    } else {
        Ok(())
    }
}

/// Parses an octal permission string such as `"0600"` or `"660"`.
pub fn parse_mode(m: &str) -> Result<u32, String> {
    let digits = m.strip_prefix("0o").unwrap_or(m);
    let octal = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(digits, 8) {
        Ok(v) if octal && v <= 0o777 => Ok(v),
        _ => Err(format!(
            "expected an octal permission string from \"0000\" to \"0777\" such as \"0600\", got {m:?}"
        )),
    }
}

fn validate_log_level(l: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(l)
        .map(|_| ())
        .map_err(|e| format!("not a valid log filter ({e}), got {l:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        assert_eq!(Config::parse("t", "").unwrap(), Config::default());
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
            [metadata]
            endpoint = "http://127.0.0.1:8080/"
            role_name = "EcsRole-1"
            token_ttl_secs = 600
            connect_timeout_ms = 250
            read_timeout_ms = 300
            allow_imdsv1_fallback = true
            [server]
            socket_path = "/run/x/agent.sock"
            socket_mode = "0660"
            socket_group = "root"
            allowed_uids = [0, 1000]
            allowed_gids = [2000]
            max_connections = 10
            header_timeout_ms = 100
            idle_timeout_ms = 200
            first_credentials_wait_ms = 0
            shutdown_grace_ms = 50
            [credentials]
            expiry_margin_secs = 5
            backoff_initial_ms = 10
            backoff_max_secs = 2
            [log]
            level = "debug"
            format = "json"
            [systemd]
            ready_timeout_secs = 7
            [metrics]
            listen = "127.0.0.1:9464"
        "#;
        let c = Config::parse("t", text).unwrap();
        assert_eq!(c.metadata.endpoint, "http://127.0.0.1:8080");
        assert_eq!(c.metadata.role_name.as_deref(), Some("EcsRole-1"));
        assert_eq!(c.metadata.token_ttl, Duration::from_secs(600));
        assert_eq!(c.metadata.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.metadata.read_timeout, Duration::from_millis(300));
        assert!(c.metadata.allow_imdsv1_fallback);
        assert_eq!(c.server.socket_path, PathBuf::from("/run/x/agent.sock"));
        assert_eq!(c.server.socket_mode, 0o660);
        assert_eq!(c.server.socket_group.as_deref(), Some("root"));
        assert_eq!(c.server.allowed_uids, vec![0, 1000]);
        assert_eq!(c.server.allowed_gids, vec![2000]);
        assert_eq!(c.server.max_connections, 10);
        assert_eq!(c.server.header_timeout, Duration::from_millis(100));
        assert_eq!(c.server.idle_timeout, Duration::from_millis(200));
        assert_eq!(c.server.first_credentials_wait, Duration::ZERO);
        assert_eq!(c.server.shutdown_grace, Duration::from_millis(50));
        assert_eq!(c.credentials.expiry_margin, Duration::from_secs(5));
        assert_eq!(c.credentials.backoff_initial, Duration::from_millis(10));
        assert_eq!(c.credentials.backoff_max, Duration::from_secs(2));
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.systemd.ready_timeout, Duration::from_secs(7));
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn metrics_listen_must_be_loopback() {
        let e = Config::parse("t", "[metrics]\nlisten = \"0.0.0.0:9464\"\n").unwrap_err();
        assert!(e.to_string().contains("must be a loopback address"), "{e}");
        let e = Config::parse("t", "[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("[metrics] listen: expected an address"),
            "{e}"
        );
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let text = r#"
            [metadata]
            endpoint = "https://100.100.100.200"
            token_ttl_secs = 21601
            colour = "blue"
            [server]
            socket_mode = "0999"
            max_connections = "many"
            allowed_uids = [-1]
            [bogus]
            x = 1
            [log]
            format = "xml"
        "#;
        let e = Config::parse("cfg.toml", text).unwrap_err();
        let all = e.to_string();
        for needle in [
            "[metadata] endpoint: must start with http://",
            "[metadata] token_ttl_secs: expected an integer from 1 to 21600, got 21601",
            "[metadata] colour: unknown key",
            "[server] socket_mode: expected an octal permission string",
            "[server] max_connections: expected an integer from 1 to 1000000, got \"many\"",
            "[server] allowed_uids: expected ids from 0 to 4294967294, got -1",
            "[bogus]: unknown section",
            "[log] format: expected \"text\" or \"json\", got \"xml\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(e.problems.len(), 8, "{all}");
        assert!(all.starts_with("invalid configuration in cfg.toml"));
    }

    #[test]
    fn socket_mode_takes_only_octal_digits() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        for bad in ["+777", "-1", "0x1ff", "", "0o", "1000", " 600"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn toml_syntax_error_is_reported() {
        let e = Config::parse("t", "[log]\nlevel = \"info\"\n[server\nx=").unwrap_err();
        assert!(
            e.problems[0].starts_with("not valid TOML at line 3, column"),
            "{e}"
        );
    }

    #[test]
    fn unknown_socket_group_is_a_configuration_error() {
        let e = Config::parse("t", "[server]\nsocket_group = \"no-such-group-x\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("[server] socket_group: no group named \"no-such-group-x\""),
            "{e}"
        );
        assert!(Config::parse("t", "[server]\nsocket_group = \"4242\"\n").is_ok());
    }

    #[test]
    fn backoff_cap_below_initial_is_rejected() {
        let e = Config::parse(
            "t",
            "[credentials]\nbackoff_initial_ms = 5000\nbackoff_max_secs = 1\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("[credentials] backoff_max_secs"),
            "{e}"
        );
    }

    #[test]
    fn role_name_endpoint_and_socket_path_rules() {
        assert!(validate_role_name("EcsRamRoleDemo").is_ok());
        assert!(validate_role_name("a/b").is_err());
        assert!(validate_role_name("").is_err());
        assert!(validate_role_name(&"r".repeat(65)).is_err());
        assert!(validate_endpoint("http://100.100.100.200").is_ok());
        assert!(validate_endpoint("http://127.0.0.1:1234/").is_ok());
        assert!(validate_endpoint("http://h/latest").is_err());
        assert!(validate_endpoint("100.100.100.200").is_err());
        assert!(validate_socket_path(std::path::Path::new("relative.sock")).is_err());
        let long = format!("/{}", "a".repeat(107));
        assert!(validate_socket_path(std::path::Path::new(&long)).is_err());
    }

    #[test]
    fn overrides_win_and_are_validated() {
        let mut c = Config::default();
        let o = Overrides {
            endpoint: Some("http://127.0.0.1:9".into()),
            socket_path: Some(PathBuf::from("/tmp/a.sock")),
            ..Overrides::default()
        };
        c.apply(&o).unwrap();
        assert_eq!(c.metadata.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.server.socket_path, PathBuf::from("/tmp/a.sock"));
        let bad = Overrides {
            role_name: Some("bad role".into()),
            ..Overrides::default()
        };
        assert!(c.apply(&bad).unwrap_err()[0].contains("role_name (--role-name)"));
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let e = Config::load(
            Some(std::path::Path::new("/nonexistent/cfg.toml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot read the file"), "{e}");
    }
}
