//! The end-to-end harness: the metadata emulator in this process, the agent as a real child
//! process (`e2e-agent serve`) on a socket in a temporary directory, and a raw HTTP/1.1 client.
//!
//! Everything talks over loopback or Unix sockets; the agent is always given the emulator's
//! endpoint, never the real metadata address.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecs_metadata_emulator::{Emulator, EmulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The agent binary built by this package.
pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_e2e-agent");

/// The agent binary a suite that tests the shipped build runs: `ECS_AGENT_BIN` when set (CI
/// points it at the one release build, `target/release/ecs-credential-agent`; a relative path
/// is taken from the workspace root), else this package's `e2e-agent` (same code, debug build).
pub fn agent_bin_under_test() -> PathBuf {
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
        _ => PathBuf::from(AGENT_BIN),
    }
}

/// Starts an emulator on 127.0.0.1 with a free port.
pub async fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), config).expect("start the metadata emulator")
}

/// An emulator config with credentials of `lifetime_secs` that rotate after `rotate_secs`.
pub fn short_lived(lifetime_secs: u64, rotate_secs: u64) -> EmulatorConfig {
    EmulatorConfig {
        credential_lifetime: Duration::from_secs(lifetime_secs),
        rotate_after: Some(Duration::from_secs(rotate_secs)),
        ..EmulatorConfig::default()
    }
}

/// Configuration keys for a test agent: test-scale defaults, then per-test overrides.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    keys: BTreeMap<&'static str, BTreeMap<&'static str, String>>,
    env: Vec<(String, String)>,
}

impl AgentConfig {
    /// Test-scale settings against `endpoint`: short backoff (100 ms, cap 1 s), margin 1 s.
    pub fn new(endpoint: &str) -> AgentConfig {
        let mut c = AgentConfig {
            keys: BTreeMap::new(),
            env: Vec::new(),
        };
        c.set("metadata", "endpoint", &format!("{endpoint:?}"));
        c.set("metadata", "connect_timeout_ms", "500");
        c.set("metadata", "read_timeout_ms", "1000");
        c.set("credentials", "expiry_margin_secs", "1");
        c.set("credentials", "backoff_initial_ms", "100");
        c.set("credentials", "backoff_max_secs", "1");
        c.set("server", "first_credentials_wait_ms", "5000");
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

    /// Adds an environment variable for the agent process.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

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
        out
    }
}

/// A running agent process and its captured stderr.
#[derive(Debug)]
pub struct TestAgent {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

impl TestAgent {
    /// Starts `e2e-agent serve` with `config` and waits until its socket accepts connections.
    pub async fn start(config: &AgentConfig) -> TestAgent {
        let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let agent = Self::spawn_in(dir, socket, config);
        agent.wait_ready().await;
        agent
    }

    /// [`TestAgent::start`] with another agent binary (see [`agent_bin_under_test`]).
    pub async fn start_bin(bin: &Path, config: &AgentConfig) -> TestAgent {
        let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let agent = Self::spawn_bin_in(bin, dir, socket, config);
        agent.wait_ready().await;
        agent
    }

    /// Starts the agent in `dir` without waiting (for tests of start-up failures).
    pub fn spawn_in(dir: tempfile::TempDir, socket: PathBuf, config: &AgentConfig) -> TestAgent {
        Self::spawn_bin_in(Path::new(AGENT_BIN), dir, socket, config)
    }

    fn spawn_bin_in(
        bin: &Path,
        dir: tempfile::TempDir,
        socket: PathBuf,
        config: &AgentConfig,
    ) -> TestAgent {
        let config_path = Self::write_config_in(dir.path(), &socket, config);
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg("--config").arg(&config_path);
        Self::launch(cmd, dir, socket, config)
    }

    /// Starts the agent on `listener` as systemd's socket activation does: the socket as fd 3
    /// (not close-on-exec), `LISTEN_FDS=1` and `LISTEN_PID` set to the agent's own pid (through
    /// `sh`, which execs the agent in place). `listener` is bound at `socket`; the test keeps
    /// owning it, so it outlives the agent.
    pub fn spawn_activated(
        socket: PathBuf,
        config: &AgentConfig,
        listener: &std::os::unix::net::UnixListener,
    ) -> TestAgent {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
        let config_path = Self::write_config_in(dir.path(), &socket, config);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
            .arg(AGENT_BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("LISTEN_FDS", "1");
        let fd = listener.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls the
        // async-signal-safe dup2(2)/fcntl(2) on descriptors that exist in the child.
        unsafe {
            cmd.pre_exec(move || {
                let ok = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, 3) == 3
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Self::launch(cmd, dir, socket, config)
    }

    /// Runs `cmd` with the test environment and captures its stderr.
    pub fn launch(
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
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        TestAgent {
            child,
            socket,
            dir,
            logs,
        }
    }

    /// Writes `config` (with `socket_path = socket` unless set) as `dir/config.toml`.
    pub fn write_config_in(dir: &Path, socket: &Path, config: &AgentConfig) -> PathBuf {
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config.render(socket)).unwrap();
        config_path
    }

    /// Rewrites this agent's configuration file (for reload tests).
    pub fn rewrite_config(&self, config: &AgentConfig) {
        Self::write_config_in(self.dir.path(), &self.socket, config);
    }

    /// Waits until the socket accepts connections (up to 10 s).
    pub async fn wait_listening(&self) {
        self.wait_ready().await
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("agent socket never came up; logs:\n{}", self.logs());
    }

    /// Everything the agent wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until the agent's logs contain `needle` (up to `within`).
    pub async fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// One request on a fresh connection.
    pub async fn get(&self, path: &str) -> Response {
        request(&self.socket, "GET", path, &[]).await
    }

    /// The served credential JSON (panics unless 200).
    pub async fn credentials(&self) -> serde_json::Value {
        let r = self.get("/v1/credentials").await;
        assert_eq!(r.status, 200, "{r:?}\nlogs:\n{}", self.logs());
        r.json()
    }

    /// Sends `signal` and waits for the exit (up to 10 s).
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        self.wait_exit(Duration::from_secs(10))
            .expect("agent did not exit after the signal")
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the stderr reader drain.
                std::thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's resident memory (`VmRSS` in `/proc/<pid>/status`), in KiB; `None` once the
    /// process is gone.
    pub fn vm_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Whether the process is still running.
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

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `Code` of an error body.
    pub fn code(&self) -> String {
        self.json()["Code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn message(&self) -> String {
        self.json()["Message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close` on a new connection to `socket`.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut stream = UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .unwrap();
    parse_response(&raw)
}

/// Parses a complete HTTP/1.1 response (Content-Length or read-to-close body).
pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Polls `f` every 50 ms until it returns `Some`, up to `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Raises this process's open-files soft limit to the hard limit (for the 1000-client test).
pub fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// Whether this process runs as root (some tests need it and skip visibly otherwise).
/// Runs `e2e-agent get --socket SOCKET` as uid and gid 65534 (nobody); needs root.
pub fn get_as_nobody(socket: &Path) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new(AGENT_BIN)
        .args(["get", "--socket"])
        .arg(socket)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run e2e-agent get as uid 65534")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips the calling test with a visible message unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!("SKIPPED: {} needs root (CI runs as root)", module_path!());
            return;
        }
    };
}

/// Fails when `text` holds any of `secrets` or its first 16 characters (a truncated print is
/// still a leak). `what` names the text in the failure, which never quotes the secret.
pub fn assert_no_secret(text: &str, secrets: &[String], what: &str) {
    assert!(!secrets.is_empty(), "no secrets to look for in {what}");
    for s in secrets {
        assert!(s.len() >= 16, "secret too short to scan for");
        assert!(!text.contains(s.as_str()), "a secret is in {what}");
        assert!(!text.contains(&s[..16]), "a secret prefix is in {what}");
    }
}
