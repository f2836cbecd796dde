//! The agent as a real child process: its configuration ([`AgentConfig`]), how it is started
//! ([`TestAgent::builder`]), and what a test reads from it (answers, logs, exit status, memory).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use crate::http::{request, Response};
use crate::wait::eventually;

/// `[metadata] connect_timeout_ms` of [`AgentConfig::new`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// `[metadata] read_timeout_ms` of [`AgentConfig::new`].
pub const READ_TIMEOUT: Duration = Duration::from_millis(1000);
/// `[credentials] expiry_margin_secs` of [`AgentConfig::new`].
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// `[credentials] backoff_initial_ms` of [`AgentConfig::new`].
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// `[credentials] backoff_max_secs` of [`AgentConfig::new`].
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// `[server] first_credentials_wait_ms` of [`AgentConfig::new`].
pub const FIRST_CREDENTIALS_WAIT: Duration = Duration::from_millis(5000);
/// How long [`AgentBuilder::start`] waits for the socket to accept connections.
pub const LISTENING_WITHIN: Duration = Duration::from_secs(30);

/// The agent binary a suite that tests the shipped build runs: `ECS_AGENT_BIN` when set (CI
/// points it at the one release build, `target/release/ecs-credential-agent`; a relative path
/// is taken from the workspace root), else `default` (this package's `e2e-agent`, from
/// [`agent_bin!`](crate::agent_bin): same code, debug build).
///
/// # Panics
/// When `ECS_AGENT_BIN` names no file.
pub fn agent_bin_under_test(default: &Path) -> PathBuf {
    match std::env::var_os("ECS_AGENT_BIN") {
        Some(bin) if !bin.is_empty() => {
            let bin = PathBuf::from(bin);
            let bin = if bin.is_relative() {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(bin)
            } else {
                bin
            };
            assert!(
                bin.is_file(),
                "ECS_AGENT_BIN={}: no such file",
                bin.display()
            );
            bin.canonicalize().unwrap()
        }
        _ => default.to_path_buf(),
    }
}

/// Configuration keys for a test agent: test-scale defaults, then per-test overrides, and the
/// environment the agent process gets.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    keys: BTreeMap<&'static str, BTreeMap<&'static str, String>>,
    /// TOML written after the tables of `keys` (arrays of tables such as `[[profile]]`).
    raw: String,
    env: Vec<(String, String)>,
}

impl AgentConfig {
    /// Test-scale settings against `endpoint` (`http://127.0.0.1:<port>`): the timeouts, margin
    /// and backoff of this module's constants ([`CONNECT_TIMEOUT`] … [`FIRST_CREDENTIALS_WAIT`]),
    /// log level `info`.
    pub fn new(endpoint: &str) -> AgentConfig {
        let mut c = AgentConfig {
            keys: BTreeMap::new(),
            raw: String::new(),
            env: Vec::new(),
        };
        let ms = |d: Duration| d.as_millis().to_string();
        c.set("metadata", "endpoint", &format!("{endpoint:?}"));
        c.set("metadata", "connect_timeout_ms", &ms(CONNECT_TIMEOUT));
        c.set("metadata", "read_timeout_ms", &ms(READ_TIMEOUT));
        let secs = |d: Duration| d.as_secs().to_string();
        c.set("credentials", "expiry_margin_secs", &secs(EXPIRY_MARGIN));
        c.set("credentials", "backoff_initial_ms", &ms(BACKOFF_INITIAL));
        c.set("credentials", "backoff_max_secs", &secs(BACKOFF_MAX));
        c.set(
            "server",
            "first_credentials_wait_ms",
            &ms(FIRST_CREDENTIALS_WAIT),
        );
        c.set("log", "level", "\"info\"");
        c
    }

    /// Sets `[section] key = value` (`value` is a TOML literal, e.g. `"\"0666\""` or `[0]`).
    pub fn set(&mut self, section: &'static str, key: &'static str, value: &str) -> &mut Self {
        self.keys
            .entry(section)
            .or_default()
            .insert(key, value.to_owned());
        self
    }

    /// Appends `toml` as is after the `[section]` tables (which it must not reopen): for arrays
    /// of tables such as `[[profile]]`, which [`AgentConfig::set`] cannot write.
    pub fn raw(&mut self, toml: &str) -> &mut Self {
        self.raw.push_str(toml);
        if !self.raw.ends_with('\n') {
            self.raw.push('\n');
        }
        self
    }

    /// Adds an environment variable for the agent process.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The TOML file, with `socket_path = socket` unless set.
    fn render(&self, socket: &Path) -> String {
        let mut keys = self.keys.clone();
        keys.entry("server")
            .or_default()
            .entry("socket_path")
            .or_insert_with(|| format!("{:?}", socket.display().to_string()));
        let mut out = String::new();
        for (section, kv) in keys {
            out.push_str(&format!("[{section}]\n"));
            for (k, v) in kv {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out.push_str(&self.raw);
        out
    }

    /// Writes the file as `dir/config.toml`, mode `0644`: an agent started as another user
    /// ([`AgentBuilder::via`]) must read it, and it holds no secret.
    fn write_in(&self, dir: &Path, socket: &Path) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, self.render(socket)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }
}

/// How a [`TestAgent`] is started: `BIN serve --config DIR/config.toml`, in a temporary
/// directory, on `DIR/agent.sock`, unless told otherwise. Made by [`TestAgent::builder`].
#[derive(Debug)]
pub struct AgentBuilder<'a> {
    bin: PathBuf,
    config: &'a AgentConfig,
    dir: Option<tempfile::TempDir>,
    socket: Option<PathBuf>,
    via: Option<Command>,
    activated: Option<&'a std::os::unix::net::UnixListener>,
    bridge_activated: Option<&'a std::net::TcpListener>,
}

impl<'a> AgentBuilder<'a> {
    /// Runs in `dir` (the configuration file goes there; removed with the agent) instead of a
    /// new temporary directory.
    pub fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The socket path written as `[server] socket_path` (unless the config sets one) and
    /// waited on; by default `agent.sock` in the directory.
    pub fn socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.socket = Some(socket.into());
        self
    }

    /// Runs the agent through `wrapper`: the agent's command line (`BIN serve --config PATH`)
    /// is appended to `wrapper`'s arguments, so `wrapper` must exec it in place (`setpriv …
    /// --`, `unshare --net -- sh -c '…; exec "$0" "$@"'`, `systemd-socket-activate -l PATH`).
    pub fn via(mut self, wrapper: Command) -> Self {
        self.via = Some(wrapper);
        self
    }

    /// Starts the agent on `listener` as systemd's socket activation does: the socket as fd 3
    /// (not close-on-exec), `LISTEN_FDS=1` and `LISTEN_PID` set to the agent's own pid
    /// (through `sh`, which execs the agent in place). `listener` should be bound at the
    /// builder's socket path; the test keeps owning it, so it outlives the agent.
    pub fn activated(mut self, listener: &'a std::os::unix::net::UnixListener) -> Self {
        self.activated = Some(listener);
        self
    }

    /// Passes `listener` (the `[bridge] listen` address, bound by the test) as systemd passes
    /// the bridge socket unit's socket: with [`AgentBuilder::activated`] as fd 4 (`LISTEN_FDS=2`,
    /// `LISTEN_FDNAMES=socket:bridge`), alone as fd 3 (`LISTEN_FDS=1`, `LISTEN_FDNAMES=bridge`;
    /// the agent binds its Unix socket itself). The test keeps owning it too, so the port is
    /// never released between choosing it and the agent's use (no race with other sockets).
    pub fn bridge_activated(mut self, listener: &'a std::net::TcpListener) -> Self {
        self.bridge_activated = Some(listener);
        self
    }

    /// Starts the process without waiting for its socket (for start-up failures, or when the
    /// test waits itself).
    ///
    /// # Panics
    /// When the directory, the configuration file or the process cannot be made.
    pub fn spawn(self) -> TestAgent {
        let dir = self
            .dir
            .unwrap_or_else(|| tempfile::Builder::new().prefix("eca-").tempdir().unwrap());
        let socket = self.socket.unwrap_or_else(|| dir.path().join("agent.sock"));
        let config_path = self.config.write_in(dir.path(), &socket);
        let mut argv: Vec<OsString> = vec![
            self.bin.into(),
            "serve".into(),
            "--config".into(),
            config_path.into(),
        ];
        if self.activated.is_some() || self.bridge_activated.is_some() {
            let sh = ["sh", "-c", r#"export LISTEN_PID=$$; exec "$0" "$@""#];
            argv.splice(0..0, sh.map(OsString::from));
        }
        let mut cmd = match self.via {
            Some(mut wrapper) => {
                wrapper.args(&argv);
                wrapper
            }
            None => {
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..]);
                cmd
            }
        };
        {
            use std::os::fd::AsRawFd;
            match (self.activated, self.bridge_activated) {
                (None, None) => {}
                (Some(unix), None) => pass_from_fd_3(&mut cmd, vec![unix.as_raw_fd()], None),
                (Some(unix), Some(tcp)) => pass_from_fd_3(
                    &mut cmd,
                    vec![unix.as_raw_fd(), tcp.as_raw_fd()],
                    Some("socket:bridge"),
                ),
                (None, Some(tcp)) => {
                    pass_from_fd_3(&mut cmd, vec![tcp.as_raw_fd()], Some("bridge"))
                }
            }
        }
        TestAgent::launch(cmd, dir, socket, self.config)
    }

    /// [`AgentBuilder::spawn`], then waits until the socket accepts connections (up to
    /// [`LISTENING_WITHIN`]).
    ///
    /// # Panics
    /// As [`AgentBuilder::spawn`], and when the socket never accepts (with the agent's logs).
    pub async fn start(self) -> TestAgent {
        let agent = self.spawn();
        agent.wait_listening().await;
        agent
    }
}

/// Makes `fds` fds 3, 4, … of the child, not close-on-exec, and sets `LISTEN_FDS` (and
/// `LISTEN_FDNAMES` to `names`, if given).
fn pass_from_fd_3(cmd: &mut Command, fds: Vec<std::os::fd::RawFd>, names: Option<&str>) {
    use std::os::unix::process::CommandExt;
    cmd.env("LISTEN_FDS", fds.len().to_string());
    if let Some(names) = names {
        cmd.env("LISTEN_FDNAMES", names);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe fcntl(2)/dup2(2) on descriptors that exist in the child. Each is first
    // copied above the target range, so moving one into place never clobbers another.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 8];
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in high[..fds.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
}

/// A running agent process and its captured stderr; killed when dropped.
#[derive(Debug)]
pub struct TestAgent {
    /// The process (or the wrapper that exec'd into it).
    pub child: Child,
    /// The socket path it was configured with.
    pub socket: PathBuf,
    /// Its directory, holding `config.toml`.
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
    /// Set once stderr reached its end (the process and every holder of the pipe are gone).
    logs_ended: Arc<AtomicBool>,
}

impl TestAgent {
    /// How to start `bin` (usually [`agent_bin!()`](crate::agent_bin)) with `config`; finish
    /// with [`AgentBuilder::start`] or [`AgentBuilder::spawn`].
    pub fn builder(bin: impl Into<PathBuf>, config: &AgentConfig) -> AgentBuilder<'_> {
        AgentBuilder {
            bin: bin.into(),
            config,
            dir: None,
            socket: None,
            via: None,
            activated: None,
            bridge_activated: None,
        }
    }

    /// Runs `cmd` with the test environment and captures its stderr.
    fn launch(
        mut cmd: Command,
        dir: tempfile::TempDir,
        socket: PathBuf,
        config: &AgentConfig,
    ) -> TestAgent {
        cmd.env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &config.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the agent");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let logs_ended = Arc::new(AtomicBool::new(false));
        let stderr = child.stderr.take().unwrap();
        let (sink, ended) = (Arc::clone(&logs), Arc::clone(&logs_ended));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
            ended.store(true, Ordering::SeqCst);
        });
        TestAgent {
            child,
            socket,
            dir,
            logs,
            logs_ended,
        }
    }

    /// Rewrites this agent's configuration file (for reload tests).
    pub fn rewrite_config(&self, config: &AgentConfig) {
        config.write_in(self.dir.path(), &self.socket);
    }

    /// Waits until the socket accepts connections (up to [`LISTENING_WITHIN`]).
    ///
    /// # Panics
    /// When it never does, with the agent's logs.
    pub async fn wait_listening(&self) {
        let up = eventually(LISTENING_WITHIN, || async {
            UnixStream::connect(&self.socket).await.ok().map(drop)
        })
        .await;
        if up.is_none() {
            panic!("agent socket never came up; logs:\n{}", self.logs());
        }
    }

    /// Everything the agent wrote to stderr so far, one line per line.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until the agent's logs contain `needle` (up to `within`); whether they did.
    pub async fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        eventually(within, || async {
            self.logs().contains(needle).then_some(())
        })
        .await
        .is_some()
    }

    /// How long after its first log line the agent logged the first line containing `needle`,
    /// by the agent's own timestamps (text format, RFC 3339 at the start of each line), so the
    /// time the process took to start on a loaded machine is not counted. `None` when no line
    /// contains `needle` or a timestamp does not parse.
    pub fn logged_after_start(&self, needle: &str) -> Option<Duration> {
        let logs = self.logs.lock().unwrap();
        let stamp = |line: &str| {
            let ts = line.split_whitespace().next()?;
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()
        };
        let first = logs.iter().find_map(|l| stamp(l))?;
        let hit = stamp(logs.iter().find(|l| l.contains(needle))?)?;
        Some((hit - first).try_into().unwrap_or(Duration::ZERO))
    }

    /// One `GET path` on a fresh connection.
    pub async fn get(&self, path: &str) -> Response {
        request(&self.socket, "GET", path, &[]).await
    }

    /// The served credential JSON.
    ///
    /// # Panics
    /// Unless the answer is `200` (with the agent's logs).
    pub async fn credentials(&self) -> serde_json::Value {
        let r = self.get("/v1/credentials").await;
        assert_eq!(r.status, 200, "{r:?}\nlogs:\n{}", self.logs());
        r.json()
    }

    /// Sends `signal` and waits for the exit (up to 30 s).
    ///
    /// # Panics
    /// When the process does not exit in time.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        nix::sys::signal::kill(self.nix_pid(), signal).unwrap();
        self.wait_exit(Duration::from_secs(30))
            .expect("agent did not exit after the signal")
    }

    /// Waits up to `within` for the process to exit on its own, then (up to 10 s more) for its
    /// last log lines; `None` while it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let drained = Instant::now() + Duration::from_secs(10);
                while !self.logs_ended.load(Ordering::SeqCst) && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn nix_pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.pid() as i32)
    }

    /// The agent's resident memory (`VmRSS`), in KiB; `None` once the process is gone.
    pub fn vm_rss_kib(&self) -> Option<u64> {
        crate::host::try_status_kib(self.pid(), "VmRSS:")
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Opens the directory so other users can reach the socket (it still needs `socket_mode`).
    pub fn open_dir(&self) {
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
