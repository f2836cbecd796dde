//! The command line: `serve`, `dev`, `get`, `exec`, `env` and `lockdown` (clap). The binary's `main` calls [`main`].
//!
//! A fatal error of `serve` or `dev` prints one line on stderr, `ecs-credential-agent: <what
//! failed>: <cause>; <what to do>` (module `fatal`), then the process exits with the status
//! [`daemon`] documents.

mod fatal;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{Config, Overrides};
use crate::daemon::{self, TestHooks, EXIT_CONFIG, EXIT_FAILURE};
use crate::logging::LogFormat;
use crate::time::{SharedTimeSource, SystemClock};
use clap::{Parser, Subcommand, ValueEnum};

/// Serves this ECS instance's RAM role STS credentials to local callers over a root-only Unix
/// socket, fetched from the metadata service in hardened (token) mode.
#[derive(Parser, Debug)]
#[command(name = "ecs-credential-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (what the systemd unit starts).
    Serve {
        /// Configuration file. Without it, /etc/ecs-credential-agent/config.toml is read if it
        /// exists, else the defaults apply.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Metadata service endpoint, overriding [metadata] endpoint.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// RAM role name, overriding [metadata] role_name (default: discovered).
        #[arg(long, value_name = "NAME")]
        role_name: Option<String>,
        /// Socket path, overriding [server] socket_path.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Log filter, overriding [log] level: trace, debug, info, warn, error or off, or
        /// target=level directives such as hyper=warn,info; any other word is refused (exit
        /// 78). A valid RUST_LOG overrides both; an invalid one is ignored with a warning.
        #[arg(long, value_name = "FILTER")]
        log_level: Option<String>,
        /// Log line format, overriding [log] format.
        #[arg(long, value_enum)]
        log_format: Option<FormatArg>,
    },
    /// Run the agent for real against the built-in metadata emulator on 127.0.0.1 (fake role,
    /// fake rotating credentials), allowing the invoking user, and print a curl command to try.
    #[cfg(feature = "dev")]
    Dev {
        /// Socket path (default: $XDG_RUNTIME_DIR/ecs-credential-agent-dev.sock, or a private
        /// temporary directory). Missing directories are created (0700) and removed at exit.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Fetch the credentials from a running agent and print them (for scripts).
    Get {
        /// Agent socket (default: $ECS_CREDENTIAL_AGENT_SOCKET, else
        /// /run/ecs-credential-agent/agent.sock). Refused (exit 78) if a user other than root
        /// and you owns a directory or link on it, or others may write to a directory on it.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Output: `json`, the credential JSON the socket serves; `env`, shell `export` lines
        /// using the variable names the Alibaba Cloud SDKs read; `aliyun-cli`, the aliyun CLI's
        /// External-mode JSON (`aliyun configure set --mode External --process-command
        /// "ecs-credential-agent get --format aliyun-cli"`).
        #[arg(long, value_enum, default_value = "json")]
        format: GetFormat,
    },
    /// Run CMD with the credentials in its environment (for short jobs).
    ///
    /// Fetches the credentials from a running agent as `get` does, then replaces this process
    /// with CMD (same pid; its exit status and signals
    /// are CMD's) with ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET,
    /// ALIBABA_CLOUD_SECURITY_TOKEN and ALIBABA_CLOUD_ECS_METADATA_DISABLED=true set. The
    /// credentials are not refreshed while CMD runs: for jobs shorter than their lifetime.
    /// Exit statuses before CMD starts: get's (69, 76, 77, 78), 75 too little lifetime left,
    /// 126 CMD cannot be run, 127 CMD not found.
    #[command(after_help = "Example: ecs-credential-agent exec -- aliyun oss ls")]
    Exec {
        /// Agent socket, as for `get`.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Refuse to start CMD (exit 75) when the credentials expire in less than this many
        /// seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = crate::exec::DEFAULT_MIN_LIFETIME.as_secs())]
        min_lifetime: u64,
        /// The command and its arguments: everything from CMD on is CMD's (`--` before CMD is
        /// accepted, and needed only when CMD's name starts with `-`).
        #[arg(
            value_name = "CMD",
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<OsString>,
    },
    /// Print the environment that points an application's SDK at the loopback listener.
    ///
    /// What an application needs to fetch the credentials through the loopback listener with
    /// its SDK's default credential chain: ALIBABA_CLOUD_CREDENTIALS_URI=http://127.0.0.1:<port>/v1/credentials (the port of
    /// [bridge] listen) and ALIBABA_CLOUD_ECS_METADATA_DISABLED=true (the Python, Node, Java and
    /// Go chains try the metadata service first and would bypass the agent). Neither value is
    /// secret. Exit 78 when the configuration is invalid or [bridge] listen is unset.
    #[command(after_help = "Example: eval \"$(ecs-credential-agent env)\"")]
    Env {
        /// The agent's configuration file, read as `serve` reads it (default:
        /// /etc/ecs-credential-agent/config.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Output: `shell` export lines, `systemd` Environment= lines for a unit or drop-in,
        /// `dockerfile` ENV lines (the container must use the host's network).
        #[arg(long, value_enum, default_value = "shell")]
        format: EnvFormat,
    },
    /// Lock the metadata service (100.100.100.200) to root and the agent's user (nftables).
    ///
    /// Manages one nftables table of its own, `inet ecs_credential_agent`, through the `nft`
    /// command; other tables (firewalld's, Docker's) are not touched. Runtime rules: they do
    /// not survive a reboot, unless the packaged ecs-credential-agent-lockdown.service is
    /// enabled (it applies them at boot). Exit statuses: 0 done (status: loaded and
    /// effective), 1 nft failed, 3 status: not loaded, 4 status: loaded but incomplete or the
    /// probe was not reset, 67 no such user, 69 nft not installed, 77 not root.
    #[command(subcommand)]
    Lockdown(LockdownCommand),
}

#[derive(Subcommand, Debug)]
enum LockdownCommand {
    /// Load the table (replacing it atomically if loaded): only uid 0 and --user reach
    /// 100.100.100.200; other local users get a TCP reset; forwarded traffic to it is dropped.
    Apply {
        /// The agent's user, a name or a uid; it must exist.
        #[arg(long, value_name = "NAME|UID", default_value = crate::lockdown::DEFAULT_USER)]
        user: String,
    },
    /// Say whether the table is loaded and which uids it allows; warn about container networks.
    Status {
        /// Also connect to 100.100.100.200:80 as uid 65534 (nobody), which must be reset.
        #[arg(long)]
        probe: bool,
    },
    /// Delete the table (done when it is not loaded).
    Remove,
    /// The probe's child (internal): connect to 100.100.100.200:80 once, exit with the outcome.
    #[command(hide = true)]
    ProbeConnect,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum EnvFormat {
    Shell,
    Systemd,
    Dockerfile,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum FormatArg {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GetFormat {
    Json,
    Env,
    AliyunCli,
}

/// Parses the command line and runs the chosen command; returns the process exit status
/// (see [`daemon`] for the statuses).
pub fn main() -> ExitCode {
    main_with_test_hooks(TestHooks::default())
}

/// [`main`] with test-only hooks (the end-to-end test binary `e2e-agent` only).
#[doc(hidden)]
pub fn main_with_test_hooks(hooks: TestHooks) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            endpoint,
            role_name,
            socket,
            log_level,
            log_format,
        } => {
            let overrides = Overrides {
                endpoint,
                role_name,
                socket_path: socket,
                log_level,
                log_format: log_format.map(|f| match f {
                    FormatArg::Text => LogFormat::Text,
                    FormatArg::Json => LogFormat::Json,
                }),
            };
            serve(config, overrides, hooks)
        }
        #[cfg(feature = "dev")]
        Command::Dev { socket } => exit(run_on_worker(crate::dev::run(socket)), false),
        Command::Get { socket, format } => {
            let format = match format {
                GetFormat::Json => crate::get::Format::Json,
                GetFormat::Env => crate::get::Format::Env,
                GetFormat::AliyunCli => crate::get::Format::AliyunCli,
            };
            ExitCode::from(crate::get::run(socket, format))
        }
        Command::Exec {
            socket,
            min_lifetime,
            command,
        } => ExitCode::from(crate::exec::run(crate::exec::Options {
            socket,
            min_lifetime: std::time::Duration::from_secs(min_lifetime),
            command,
        })),
        Command::Env { config, format } => {
            let format = match format {
                EnvFormat::Shell => crate::env_cmd::Format::Shell,
                EnvFormat::Systemd => crate::env_cmd::Format::Systemd,
                EnvFormat::Dockerfile => crate::env_cmd::Format::Dockerfile,
            };
            ExitCode::from(crate::env_cmd::run(config.as_deref(), format))
        }
        Command::Lockdown(command) => ExitCode::from(lockdown(command)),
    }
}

fn lockdown(command: LockdownCommand) -> u8 {
    match command {
        LockdownCommand::Apply { user } => crate::lockdown::apply(&user),
        LockdownCommand::Status { probe } => crate::lockdown::show_status(probe),
        LockdownCommand::Remove => crate::lockdown::remove(),
        LockdownCommand::ProbeConnect => {
            crate::lockdown::probe::connect(crate::lockdown::probe::PROBE_ADDR)
        }
    }
}

fn serve(path: Option<PathBuf>, overrides: Overrides, hooks: TestHooks) -> ExitCode {
    let config = match Config::load(path.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            let e = daemon::AgentError::Config(e);
            eprintln!("{}", fatal::line(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log = crate::logging::init(&config.log);
    let json = config.log.format == LogFormat::Json;
    // Before the runtime starts threads: this removes LISTEN_* from the environment.
    let passed = match crate::systemd::activation::take_sockets() {
        Ok(p) => p,
        Err(e) => return exit(Err(e.into()), json),
    };
    let time: SharedTimeSource = hooks.time.clone().unwrap_or_else(|| Arc::new(SystemClock));
    let options = daemon::Options {
        passed,
        reload: Some(crate::reload::Source {
            path,
            overrides,
            log,
        }),
        announce: None,
        // STS (`daemon::sts_profiles`).
        profiles: None,
        test_hooks: hooks,
    };
    let result = run_on_worker(async {
        let shutdown = daemon::signal_shutdown()?;
        daemon::serve_with(config, time, shutdown, options).await
    });
    exit(result, json)
}

/// Runs `daemon` to completion as a task on a runtime of two worker threads, not in
/// `block_on` on the main thread: the server's accept loop then spawns each connection onto
/// its own worker's queue, where that worker picks it up without a cross-thread wake-up (in
/// `block_on`, every accepted connection went to the shared queue and woke a worker: about
/// four `futex` calls, an `eventfd` write and five context switches per connection, measured
/// with `perf stat` by the benchmark). A panic of the task is resumed here.
fn run_on_worker(
    daemon: impl std::future::Future<Output = Result<(), daemon::AgentError>> + Send + 'static,
) -> Result<(), daemon::AgentError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let task = runtime.spawn(daemon);
    runtime
        .block_on(task)
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The exit status for `result`; an error first prints its [`fatal::line`] on stderr, and is
/// also logged as an event when the log is JSON (`json`), for log shippers.
fn exit(result: Result<(), daemon::AgentError>, json: bool) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                tracing::error!(error = %e, "ecs-credential-agent stopped");
            }
            eprintln!("{}", fatal::line(&e));
            ExitCode::from(e.exit_status().max(EXIT_FAILURE))
        }
    }
}
