//! The official SDKs, unmodified, through the loopback listener (`[bridge] listen`, issue 12):
//! Python `alibabacloud-credentials` (sync and async clients) and Node `@alicloud/credentials`,
//! each with its default credential chain and configured only by the lines
//! `ecs-credential-agent env` prints (plus `PATH` and an empty `HOME`), get exactly the
//! AccessKeyId, AccessKeySecret and SecurityToken the agent's socket serves, and the new ones
//! after a rotation.
//!
//! The programs are `tests/sdk/python/check.py` and `tests/sdk/node/check.js`; the SDKs are
//! installed by `tests/sdk/setup.sh` (pinned: `tests/sdk/python/requirements.txt`,
//! `tests/sdk/node/package-lock.json`). Without them, or without root, each test prints
//! `SKIPPED: …` and passes, so `cargo test --workspace` works on a developer's machine;
//! with `ECA_SDK_TESTS=required` (as `.ci/run` sets) a missing SDK or root is a failure.
//!
//! **Network.** Everything runs in a network namespace of its own holding only `lo`: the
//! emulator, the agent (its listener and its `NETLINK_SOCK_DIAG` lookup see that namespace's
//! sockets) and the SDK processes. A namespace, rather than trusting
//! `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true` and blocking the address with a firewall rule,
//! because it needs no change to the machine, cannot leak to other tests, and stops *any*
//! non-loopback traffic an SDK might try (another provider in its chain, a proxy). Inside it
//! `100.100.100.200` is an address of `lo` where a *decoy* metadata emulator with credentials
//! of its own listens: were the variable ignored, the SDKs (whose chains try the metadata
//! service before the URI) would fetch the decoy's credentials and the comparison would fail;
//! the decoy must see no request at all.

use std::collections::VecDeque;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecs_credential_agent_e2e::*;
use ecs_metadata_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The listener's address in the namespace: the README's port, free in a fresh namespace.
const LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 17301);
/// The metadata service's address, put on the namespace's `lo` for the decoy.
const METADATA: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(100, 100, 100, 200), 80));
/// How long one SDK answer may take (its own timeouts are 5 s connect, 10 s read).
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// How long a rotation may take to reach an SDK (credentials of 30 s rotate about every 15 s).
const ROTATION_WITHIN: Duration = Duration::from_secs(90);
/// Lines of an SDK program's stderr kept for failure messages.
const STDERR_KEPT: usize = 20;

/// The SDK clients under test.
#[derive(Debug, Clone, Copy)]
enum Sdk {
    PythonSync,
    PythonAsync,
    Node,
}

/// The repository's `tests/sdk` directory.
fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// Whether a missing SDK (or root) fails the test rather than skipping it.
fn required() -> bool {
    std::env::var("ECA_SDK_TESTS").as_deref() == Ok("required")
}

/// Skips the test visibly, or fails it under `ECA_SDK_TESTS=required`.
fn skip(test: &str, why: &str) {
    assert!(
        !required(),
        "{test}: {why} (ECA_SDK_TESTS=required; run tests/sdk/setup.sh as root)"
    );
    eprintln!("SKIPPED: {test}: {why} (tests/sdk/setup.sh installs the SDKs; CI runs as root)");
}

impl Sdk {
    /// The interpreter, the program and its arguments, or why the SDK is not installed.
    fn argv(self) -> Result<Vec<PathBuf>, String> {
        let dir = sdk_dir();
        match self {
            Sdk::PythonSync | Sdk::PythonAsync => {
                let python = std::env::var_os("ECA_SDK_PYTHON")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| dir.join("python/.venv/bin/python"));
                if !python.exists() {
                    return Err(format!(
                        "no Python with alibabacloud-credentials at {} (or ECA_SDK_PYTHON)",
                        python.display()
                    ));
                }
                let imports = std::process::Command::new(&python)
                    .args(["-c", "import alibabacloud_credentials"])
                    .output()
                    .map_err(|e| format!("{}: {e}", python.display()))?;
                if !imports.status.success() {
                    return Err(format!(
                        "{} cannot import alibabacloud_credentials",
                        python.display()
                    ));
                }
                let mode = if matches!(self, Sdk::PythonSync) {
                    "sync"
                } else {
                    "async"
                };
                Ok(vec![python, dir.join("python/check.py"), mode.into()])
            }
            Sdk::Node => {
                let module = dir.join("node/node_modules/@alicloud/credentials/package.json");
                if !module.exists() {
                    return Err(format!(
                        "@alicloud/credentials not installed ({})",
                        module.display()
                    ));
                }
                let node = which("node").ok_or("no `node` on PATH")?;
                Ok(vec![node, dir.join("node/check.js")])
            }
        }
    }
}

/// `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A network namespace with only `lo` up, held by a `sleep` process (killed when dropped),
/// with `100.100.100.200/32` on `lo`.
struct Netns {
    holder: std::process::Child,
}

impl Netns {
    fn new() -> Netns {
        const SETUP: &str = "set -e
ip link set lo up
ip addr add 100.100.100.200/32 dev lo
echo up
exec sleep infinity";
        let mut holder = std::process::Command::new("unshare")
            .args(["--net", "--", "sh", "-c", SETUP])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare --net (util-linux) and ip (iproute2)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "up\n", "the namespace's set-up failed");
        Netns { holder }
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    /// A command that runs `program` in this namespace (`nsenter`, for the agent's wrapper).
    fn nsenter(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path())).arg("--");
        cmd
    }

    /// Makes `cmd`'s process join this namespace before it execs.
    fn enter(&self, cmd: &mut Command) {
        use std::os::fd::AsRawFd;
        let ns = File::open(self.path()).unwrap();
        // SAFETY: setns(2), async-signal-safe, on a descriptor the closure owns and that is
        // open in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }

    /// A TCP listener on `addr` inside this namespace (bound from a thread that joins it; the
    /// socket stays in the namespace).
    fn bind(&self, addr: SocketAddr) -> std::net::TcpListener {
        use std::os::fd::AsRawFd;
        let ns = File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns(2) on a valid namespace descriptor affects only this thread, which
            // ends right after binding.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            std::net::TcpListener::bind(addr).unwrap()
        })
        .join()
        .expect("bind in the namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The namespace, the emulator with short-lived rotating credentials, the decoy on the
/// metadata address, the agent with `[bridge] listen`, and the lines `env` printed.
struct World {
    agent: TestAgent,
    _emulator: Emulator,
    decoy: Emulator,
    env: Vec<(String, String)>,
    home: tempfile::TempDir,
    netns: Netns,
}

impl World {
    async fn start() -> World {
        let netns = Netns::new();
        // 30 s credentials that rotate after 4 s: the agent refreshes them about every 15 s,
        // and what it serves always has far less than the SDKs' 15 minutes left, so every SDK
        // call is a request to the listener.
        let emulator = Emulator::from_listener(
            netns.bind("127.0.0.1:0".parse().unwrap()),
            short_lived(30, 4),
        )
        .unwrap();
        let decoy =
            Emulator::from_listener(netns.bind(METADATA), EmulatorConfig::default()).unwrap();
        let mut config = AgentConfig::new(&emulator.endpoint());
        config.set("bridge", "listen", &format!("\"{LISTEN}\""));
        let agent = TestAgent::builder(agent_bin!(), &config)
            .via(netns.nsenter())
            .start()
            .await;
        agent.credentials().await;
        let env = env_lines(&agent.dir.path().join("config.toml"));
        World {
            agent,
            _emulator: emulator,
            decoy,
            env,
            home: tempfile::Builder::new()
                .prefix("eca-sdk-home-")
                .tempdir()
                .unwrap(),
            netns,
        }
    }

    /// Starts `argv` in the namespace with `PATH`, the empty `HOME` and `env`'s lines only;
    /// waits for its `ready` line.
    async fn spawn(&self, sdk: Sdk, argv: &[PathBuf]) -> SdkProcess {
        self.spawn_with(sdk, argv, &self.env).await
    }

    /// [`World::spawn`] with `env` instead of `env`'s lines.
    async fn spawn_with(&self, sdk: Sdk, argv: &[PathBuf], env: &[(String, String)]) -> SdkProcess {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(argv[1].parent().unwrap())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        self.netns.enter(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{sdk:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let mut sdk_stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            while let Ok(Some(line)) = sdk_stderr.next_line().await {
                let mut kept = sink.lock().unwrap();
                if kept.len() == STDERR_KEPT {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        let mut sdk = SdkProcess {
            sdk,
            _child: child,
            stdin,
            lines,
            stderr,
        };
        let ready = sdk.line().await;
        let version = ready
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("{sdk:?}: {ready}"));
        eprintln!("{sdk:?}: SDK version {version}");
        sdk
    }

    /// One SDK fetch between two reads of the socket; `Some(served)` when both reads agree,
    /// after asserting the SDK got exactly those credentials.
    async fn fetch_agreeing(&self, sdk: &mut SdkProcess) -> Option<Value> {
        let before = self.agent.credentials().await;
        let got = sdk.fetch().await;
        let after = self.agent.credentials().await;
        if before != after {
            return None;
        }
        for key in ["AccessKeyId", "AccessKeySecret", "SecurityToken"] {
            assert_eq!(
                got[key],
                after[key],
                "{:?} got another {key} than the socket serves; logs:\n{}",
                sdk.sdk,
                self.agent.logs()
            );
        }
        // The credentials URI provider answered, not another one in the chain.
        assert_eq!(
            got["ProviderName"], "default/credential_uri",
            "{:?}",
            sdk.sdk
        );
        Some(after)
    }
}

/// The `NAME=value` pairs of `ecs-credential-agent env --config FILE` (shell format).
fn env_lines(config: &Path) -> Vec<(String, String)> {
    let out = std::process::Command::new(agent_bin!())
        .args(["env", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "env: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pairs: Vec<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l
                .strip_prefix("export ")
                .and_then(|kv| kv.split_once('='))
                .unwrap_or_else(|| panic!("not an export line: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let uri = format!("http://{LISTEN}/v1/credentials");
    assert!(
        pairs.contains(&("ALIBABA_CLOUD_CREDENTIALS_URI".into(), uri)),
        "{pairs:?}"
    );
    pairs
}

/// A running SDK program (killed when dropped).
#[derive(Debug)]
struct SdkProcess {
    sdk: Sdk,
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// The last [`STDERR_KEPT`] lines of its stderr (Python logs a warning on every fetch of
    /// credentials with less than 15 minutes left), for failure messages.
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl SdkProcess {
    /// Its last lines of stderr, for a failure message.
    fn stderr(&self) -> String {
        let kept = self.stderr.lock().unwrap();
        let lines: Vec<&str> = kept.iter().map(String::as_str).collect();
        format!("its stderr ends:\n{}", lines.join("\n"))
    }

    async fn line(&mut self) -> String {
        match tokio::time::timeout(ANSWER_WITHIN, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => panic!("{:?}: no answer ({other:?}); {}", self.sdk, self.stderr()),
        }
    }

    /// The credential the SDK's client returns now, as JSON; panics on an SDK error.
    async fn fetch(&mut self) -> Value {
        self.stdin.write_all(b"fetch\n").await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = self.line().await;
        let got: Value = serde_json::from_str(&line).unwrap();
        assert!(
            got.get("Error").is_none(),
            "{:?}: {}",
            self.sdk,
            got["Error"]
        );
        got
    }
}

/// SDK fetches until one falls between two reads of the socket that agree (and, with
/// `other_than`, serve other credentials than those); returns what the socket served.
async fn until_agreeing(world: &World, sdk: &mut SdkProcess, other_than: Option<&Value>) -> Value {
    let deadline = tokio::time::Instant::now() + ROTATION_WITHIN;
    while tokio::time::Instant::now() < deadline {
        match world.fetch_agreeing(sdk).await {
            Some(served) if Some(&served) != other_than => return served,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!(
        "{:?}: no new credentials within {ROTATION_WITHIN:?}; logs:\n{}",
        sdk.sdk,
        world.agent.logs()
    );
}

/// The test for one SDK client: the credentials the socket serves, then the rotated ones.
async fn gets_the_served_credentials_across_a_rotation(sdk: Sdk, test: &str) {
    let argv = match sdk.argv() {
        Ok(argv) => argv,
        Err(why) => return skip(test, &why),
    };
    if !is_root() {
        return skip(test, "needs root for its network namespace");
    }
    let world = World::start().await;
    let mut process = world.spawn(sdk, &argv).await;
    let first = until_agreeing(&world, &mut process, None).await;
    let rotated = until_agreeing(&world, &mut process, Some(&first)).await;
    assert_ne!(rotated["AccessKeyId"], first["AccessKeyId"]);
    assert_eq!(
        world.decoy.counts().total,
        0,
        "{sdk:?} asked the metadata service: ALIBABA_CLOUD_ECS_METADATA_DISABLED ignored?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sync_client_gets_the_served_credentials_across_a_rotation() {
    gets_the_served_credentials_across_a_rotation(Sdk::PythonSync, "sdk python sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_async_client_gets_the_served_credentials_across_a_rotation() {
    gets_the_served_credentials_across_a_rotation(Sdk::PythonAsync, "sdk python async").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_gets_the_served_credentials_across_a_rotation() {
    gets_the_served_credentials_across_a_rotation(Sdk::Node, "sdk node").await;
}

/// The caveat the README states, and the check that the decoy catches it: without
/// `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true` the Python and Node chains ask the metadata
/// service first and never reach the agent (here they get the decoy's credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metadata_disabled_the_sdks_bypass_the_agent() {
    let test = "sdk chain order";
    let sdks = [Sdk::PythonSync, Sdk::Node];
    let mut programs = Vec::new();
    for sdk in sdks {
        match sdk.argv() {
            Ok(argv) => programs.push((sdk, argv)),
            Err(why) => return skip(test, &why),
        }
    }
    if !is_root() {
        return skip(test, "needs root for its network namespace");
    }
    let world = World::start().await;
    let uri_only: Vec<(String, String)> = world
        .env
        .iter()
        .filter(|(k, _)| k != "ALIBABA_CLOUD_ECS_METADATA_DISABLED")
        .cloned()
        .collect();
    assert_eq!(uri_only.len() + 1, world.env.len(), "{:?}", world.env);
    for (sdk, argv) in programs {
        let mut process = world.spawn_with(sdk, &argv, &uri_only).await;
        let got = process.fetch().await;
        let decoy = world.decoy.current_credentials().unwrap();
        assert_eq!(got["AccessKeyId"], decoy.access_key_id.as_str(), "{sdk:?}");
        assert_eq!(got["ProviderName"], "default/ecs_ram_role", "{sdk:?}");
    }
    assert!(world.decoy.counts().credential_gets >= 2);
}
