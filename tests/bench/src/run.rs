//! The benchmark run: starts the metadata emulator (in this process), the agent (the release
//! `ecs-credential-agent` binary, default settings but for the endpoint, socket, allowed uid
//! and, for the agent under load, `[bridge] listen` on a free loopback port), the floor and
//! bare hyper servers (this binary, as child processes; bare hyper twice, on a Unix socket and
//! on loopback TCP), and runs every load generator as its own child process, one at a time.
//! The matrix (floor, bare hyper and the agent on the socket; bare hyper and the agent's
//! listener on loopback TCP) is loaded by the raw client ([`crate::raw`]); the server's CPU
//! time per request comes from its threads' `schedstat`, read before and after each load run
//! (the agent's socket and listener rows are the same process).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ecs_metadata_emulator::{Emulator, EmulatorConfig, Endpoint, Fault, Times};

use crate::load::{Addr, LoadResult, Mode, REQUEST};
use crate::procfs;
use crate::profile::{self, AgentToml};
use crate::report::{self, Point, Report};

/// Options of a benchmark run.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// A few seconds, checking only counts (herd: 1 token PUT and 1 credential GET; a
    /// profile's herd: 1 AssumeRole; no errors).
    #[arg(long)]
    pub(crate) smoke: bool,
    /// Only the profile comparison (a profile's caller beside an instance-role caller, and the
    /// profile's cold-start herd), about a minute; needs root.
    #[arg(long, conflicts_with = "smoke")]
    pub(crate) profiles_only: bool,
    /// Measured time per load point, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub(crate) duration_ms: u64,
    /// Unmeasured warm-up before each load point, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) warmup_ms: u64,
    /// Rounds of the matrix (floor, bare hyper and the agent on the socket, bare hyper on
    /// loopback TCP and the agent's loopback listener, interleaved); medians are reported, and
    /// the targets take the median of the per-round agent/bare-hyper ratios.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// How long the idle agent is watched for its CPU time, seconds.
    #[arg(long, default_value_t = 60)]
    pub(crate) idle_secs: u64,
    /// The agent binary [default: `ecs-credential-agent` beside this binary, built first with
    /// `cargo build --release -p ecs-credential-agent --no-default-features` when run by cargo].
    #[arg(long)]
    pub(crate) agent: Option<PathBuf>,
    /// Run bare hyper's accept loop in `block_on` on the main thread (as the agent did before
    /// it moved its own to a worker task) rather than in a worker task like the agent's.
    #[arg(long)]
    pub(crate) hyper_accept_in_block_on: bool,
    /// Where the JSON figures go [default: `bench.json` (`bench-smoke.json`) in the target
    /// directory].
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("bench: {} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Bench {
    pub(crate) opts: Options,
    pub(crate) me: PathBuf,
    agent_bin: PathBuf,
    pub(crate) dir: PathBuf,
    uid: u32,
    agents_started: u32,
}

pub fn main(opts: Options) -> ExitCode {
    procfs::raise_open_files_limit();
    let me = std::env::current_exe().expect("the bench binary's path");
    let agent_bin = match opts.agent.clone() {
        Some(p) => p,
        None => match default_agent(&me) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("bench: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let dir = std::env::temp_dir().join(format!("ecs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    // Open to the profile's callers (another uid), whatever the umask.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the bench directory");
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    let json = opts.json.clone().unwrap_or_else(|| {
        let target = me.parent().and_then(Path::parent).unwrap_or(Path::new("."));
        target.join(if opts.smoke {
            "bench-smoke.json"
        } else {
            "bench.json"
        })
    });
    let mut bench = Bench {
        opts,
        me,
        agent_bin,
        dir: dir.clone(),
        uid,
        agents_started: 0,
    };
    let started = Instant::now();
    let report = bench.run();
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = report;
    report.total_secs = started.elapsed().as_secs_f64();
    println!("{}", report.markdown());
    if let Some(parent) = json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).expect("serialise"),
    ) {
        Ok(()) => eprintln!("bench: figures written to {}", json.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", json.display()),
    }
    if report.all_pass() {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: some targets FAIL");
        ExitCode::FAILURE
    }
}

/// `ecs-credential-agent` beside this binary; when run by cargo, built (or found fresh) first.
fn default_agent(me: &Path) -> Result<PathBuf, String> {
    let bin = me.with_file_name("ecs-credential-agent");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
        eprintln!("bench: building the agent (cargo build --release -p ecs-credential-agent --no-default-features)");
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--manifest-path", manifest])
            .args(["-p", "ecs-credential-agent", "--no-default-features"])
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err("building the agent failed".into());
        }
    }
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "no agent binary at {}; build it with `cargo build --release -p ecs-credential-agent --no-default-features` or pass --agent",
            bin.display()
        ))
    }
}

/// Reads one line from a child's stdout.
fn read_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    line.trim().to_owned()
}

/// Runs a load child to completion and parses its result.
pub(crate) fn run_load(mut cmd: Command) -> LoadResult {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("run a load generator");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| LoadResult {
        errors: 1,
        first_error: Some(format!("load generator failed ({}): {e}", out.status)),
        ..LoadResult::default()
    })
}

/// One blocking `GET /v1/credentials` on a new connection: the raw response, or `None`.
pub fn get_once(socket: &Path) -> Option<Vec<u8>> {
    get_once_at(&Addr::Unix(socket.to_owned()))
}

/// [`get_once`] to a Unix socket or a TCP address.
pub fn get_once_at(addr: &Addr) -> Option<Vec<u8>> {
    let mut s = addr.connect().ok()?;
    match &s {
        crate::load::Conn::Unix(u) => u.set_read_timeout(Some(Duration::from_secs(10))).ok()?,
        crate::load::Conn::Tcp(t) => t.set_read_timeout(Some(Duration::from_secs(10))).ok()?,
    }
    s.write_all(addr.request()).ok()?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&chunk[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let len: usize = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length:"))?
            .trim()
            .parse()
            .ok()?;
        if raw.len() >= end + 4 + len {
            raw.truncate(end + 4 + len);
            return head.starts_with("http/1.1 200").then_some(raw);
        }
    }
}

impl Bench {
    /// The agent's configuration: `endpoint`, the socket, this uid allowed, the loopback
    /// listener on `bridge` if given, and `profile`'s keys and sections if given.
    fn agent_config(
        &self,
        socket: &Path,
        endpoint: &str,
        bridge: Option<SocketAddr>,
        profile: Option<&AgentToml>,
    ) -> PathBuf {
        let path = socket.with_extension("toml");
        let mut uids = vec![self.uid];
        uids.extend(profile.iter().flat_map(|p| p.allowed_uids.iter().copied()));
        let mut text = format!(
            "[metadata]\nendpoint = {endpoint:?}\n\n[server]\nsocket_path = {:?}\nallowed_uids = {uids:?}\n",
            socket.display().to_string(),
        );
        if let Some(profile) = profile {
            text.push_str(&profile.server);
            text.push_str(&profile.sections);
        }
        if let Some(addr) = bridge {
            text.push_str(&format!("\n[bridge]\nlisten = \"{addr}\"\n"));
        }
        std::fs::write(&path, text).expect("write the agent config");
        path
    }

    /// The socket of the next agent [`Bench::spawn_agent`] starts.
    pub(crate) fn next_agent_socket(&self) -> PathBuf {
        self.dir
            .join(format!("agent{}.sock", self.agents_started + 1))
    }

    /// Spawns an agent against `endpoint` (with its loopback listener on `bridge` and the
    /// profile, if given); its log goes to a file beside the socket.
    pub(crate) fn spawn_agent(
        &mut self,
        endpoint: &str,
        bridge: Option<SocketAddr>,
        profile: Option<&AgentToml>,
    ) -> (Proc, PathBuf) {
        let socket = self.next_agent_socket();
        self.agents_started += 1;
        let config = self.agent_config(&socket, endpoint, bridge, profile);
        let log = std::fs::File::create(socket.with_extension("log")).expect("agent log");
        let child = Command::new(&self.agent_bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env_remove("RUST_LOG")
            .spawn()
            .expect("start the agent");
        (
            Proc {
                child,
                name: "agent",
            },
            socket,
        )
    }

    /// Spawns an agent and measures exec → first `200` on `GET /v1/credentials`.
    fn start_agent(
        &mut self,
        endpoint: &str,
        bridge: Option<SocketAddr>,
    ) -> (Proc, PathBuf, Duration, Vec<u8>) {
        let t0 = Instant::now();
        let (proc, socket) = self.spawn_agent(endpoint, bridge, None);
        loop {
            if let Some(raw) = get_once(&socket) {
                return (proc, socket, t0.elapsed(), raw);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the agent never served credentials"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    pub(crate) fn child(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.me);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        cmd
    }

    fn server(&self, kind: &'static str, addr: &Addr, file: &Path) -> Proc {
        let mut args = vec![kind];
        if kind == "hyper" && !self.opts.hyper_accept_in_block_on {
            args.push("--accept-on-worker");
        }
        let (socket_arg, file_arg) = (addr.to_string(), file.display().to_string());
        args.extend([socket_arg.as_str(), file_arg.as_str()]);
        let mut child = self.child(&args).spawn().expect("start a reference server");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        assert_eq!(
            read_line(&mut out),
            "listening",
            "{kind} server did not start"
        );
        Proc { child, name: kind }
    }

    pub(crate) fn window_args(&self) -> [String; 2] {
        if self.opts.smoke {
            ["100".into(), "500".into()]
        } else {
            [
                self.opts.warmup_ms.to_string(),
                self.opts.duration_ms.to_string(),
            ]
        }
    }

    fn socket_load(&self, addr: &Addr, mode: Mode, c: usize) -> LoadResult {
        let [w, d] = self.window_args();
        let mode = match mode {
            Mode::KeepAlive => "keep-alive",
            Mode::NewConn => "new-conn",
        };
        let addr = addr.to_string();
        run_load(self.child(&["load", &addr, mode, &c.to_string(), &w, &d]))
    }

    fn run(&mut self) -> Report {
        let smoke = self.opts.smoke;
        let mut r = Report::new(smoke);
        r.agent_binary_bytes = std::fs::metadata(&self.agent_bin)
            .map(|m| m.len())
            .unwrap_or(0);
        let emu_rt = emulator_runtime();
        if self.opts.profiles_only {
            self.profiles_only(&emu_rt, &mut r);
            r.machine = report::Machine::describe();
            r.evaluate();
            return r;
        }
        let emu = emu_rt
            .block_on(async { Emulator::start_local(EmulatorConfig::default()) })
            .expect("start the emulator");
        let endpoint = emu.endpoint();

        // Start-up, three times; the first agent then stays idle for the CPU measurement.
        eprintln!("bench: start-up");
        let (idle_agent, _, first_startup, _) = self.start_agent(&endpoint, None);
        let mut startups = vec![first_startup];
        for _ in 0..if smoke { 0 } else { 2 } {
            let (_p, _, t, _) = self.start_agent(&endpoint, None);
            startups.push(t);
        }
        std::thread::sleep(Duration::from_millis(500));
        // Sampled exactly `idle_secs` later by a thread, while the rest of the run goes on.
        let idle_pid = idle_agent.pid();
        let idle_secs = if smoke { 0 } else { self.opts.idle_secs };
        let idle_sample = std::thread::spawn(move || {
            let (from, cpu) = (Instant::now(), procfs::cpu_time(idle_pid));
            std::thread::sleep(Duration::from_secs(idle_secs));
            (
                from.elapsed(),
                procfs::cpu_time(idle_pid).saturating_sub(cpu),
            )
        });
        r.startup_ms = startups.iter().map(|d| d.as_secs_f64() * 1000.0).collect();

        // The agent under load; memory first, while it is fresh.
        let bridge = free_loopback_port();
        let (agent, agent_socket, _, raw) = self.start_agent(&endpoint, Some(bridge));
        let listener = Addr::Tcp(bridge);
        let t0 = Instant::now();
        while get_once_at(&listener).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the agent's loopback listener on {bridge} never answered 200"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(200));
        r.response_bytes = raw.len();
        r.request_bytes = REQUEST.len();
        if !smoke {
            eprintln!("bench: memory");
            r.rss_start_kib = procfs::rss_kib(agent.pid()).0;
            let mut hold = self
                .child(&["hold", &agent_socket.display().to_string(), "1000"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("start the connection holder");
            let mut out = BufReader::new(hold.stdout.take().expect("stdout"));
            let ready = read_line(&mut out);
            std::thread::sleep(Duration::from_millis(200));
            let (rss, hwm) = procfs::rss_kib(agent.pid());
            r.rss_1000_conns_kib = rss.max(hwm);
            r.held_connections = ready
                .strip_prefix("ready ")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            drop(hold.stdin.take());
            let _ = hold.wait();
            // The agent gives memory back once the last of them has closed; allow it 3 s.
            let settle = Instant::now() + Duration::from_secs(3);
            loop {
                std::thread::sleep(Duration::from_millis(250));
                r.rss_after_close_kib = procfs::rss_kib(agent.pid()).0;
                if r.rss_after_close_kib < 2 * r.rss_start_kib || Instant::now() > settle {
                    break;
                }
            }
        }

        // The socket matrix: floor, bare hyper and the agent, interleaved, in rounds.
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        let (resp_file, body_file) = (self.dir.join("response.raw"), self.dir.join("body.json"));
        std::fs::write(&resp_file, &raw).expect("write the canned response");
        std::fs::write(&body_file, &raw[head_end..]).expect("write the body");
        let (floor_socket, hyper_socket, hyper_tcp) = (
            Addr::Unix(self.dir.join("floor.sock")),
            Addr::Unix(self.dir.join("hyper.sock")),
            Addr::Tcp(free_loopback_port()),
        );
        let floor = self.server("floor", &floor_socket, &resp_file);
        let hyper = self.server("hyper", &hyper_socket, &body_file);
        let hyper_on_tcp = self.server("hyper", &hyper_tcp, &body_file);
        let agent_unix = Addr::Unix(agent_socket.clone());
        // Each round runs every target once, starting one further along.
        let targets: [(&'static str, &Addr, u32); 5] = [
            ("floor", &floor_socket, floor.pid()),
            ("bare hyper", &hyper_socket, hyper.pid()),
            ("agent", &agent_unix, agent.pid()),
            (report::HYPER_TCP, &hyper_tcp, hyper_on_tcp.pid()),
            (report::AGENT_TCP, &listener, agent.pid()),
        ];
        let (modes, concs, rounds): (&[Mode], &[usize], usize) = if smoke {
            (&[Mode::KeepAlive, Mode::NewConn], &[8], 1)
        } else {
            (
                &[Mode::KeepAlive, Mode::NewConn],
                &[1, 8, 64],
                self.opts.rounds.max(1),
            )
        };
        for &mode in modes {
            for &c in concs {
                eprintln!("bench: {mode:?} c={c}");
                let mut runs: Vec<Vec<LoadResult>> = vec![Vec::new(); targets.len()];
                for round in 0..rounds {
                    for k in 0..targets.len() {
                        let i = (k + round) % targets.len();
                        let (_, socket, pid) = targets[i];
                        let cpu = procfs::cpu_time(pid);
                        let mut res = self.socket_load(socket, mode, c);
                        let used = procfs::cpu_time(pid).saturating_sub(cpu);
                        if res.all_requests > 0 {
                            res.server_cpu_us =
                                Some(used.as_secs_f64() * 1e6 / res.all_requests as f64);
                        }
                        runs[i].push(res);
                    }
                }
                for (i, runs) in runs.into_iter().enumerate() {
                    r.points
                        .push(Point::median(targets[i].0, Some(mode), c, runs));
                }
            }
        }
        drop((floor, hyper, hyper_on_tcp));

        // A profile's caller beside an instance-role caller, one agent (`profile.rs`).
        let sts = profile::can_switch_uid()
            .then(|| profile::start_sts(&emu_rt, &emu, self.dir.join("sts-ca.pem")));
        match &sts {
            Some(sts) => self.profile_comparison(&endpoint, sts, &mut r),
            None => r.profile_note = Some(profile::NOT_ROOT.into()),
        }
        r.lookup = crate::lookup::cost(if smoke { 1_000 } else { 50_000 });

        // The client library and direct metadata calls.
        eprintln!("bench: client library and direct");
        let [w, d] = self.window_args();
        let socket = agent_socket.display().to_string();
        let lib_concs: &[usize] = if smoke { &[8] } else { &[1, 8] };
        for &cached in &[true, false] {
            for &c in lib_concs {
                let res = run_load(self.child(&[
                    "client-lib",
                    &socket,
                    &cached.to_string(),
                    &c.to_string(),
                    &w,
                    &d,
                ]));
                let name = if cached {
                    "client library, cached"
                } else {
                    "client library, uncached"
                };
                r.points.push(Point::single(name, None, c, res));
            }
        }
        let role = ecs_metadata_emulator::config::DEFAULT_ROLE_NAME;
        for &c in lib_concs {
            let res = run_load(self.child(&[
                "direct",
                &emu.addr().to_string(),
                role,
                &c.to_string(),
                &w,
                &d,
            ]));
            r.points
                .push(Point::single("direct (token PUT + GET)", None, c, res));
        }
        drop(agent);

        // The cold-start herd against a fresh emulator whose first token PUT takes 500 ms, so
        // all 1000 requests arrive before the first credentials.
        eprintln!("bench: cold-start herd");
        let herd_emu = emu_rt
            .block_on(async { Emulator::start_local(EmulatorConfig::default()) })
            .expect("start the herd emulator");
        herd_emu.set_fault(
            Endpoint::Token,
            Fault::Delay(Duration::from_millis(500)),
            Times::Next(1),
        );
        let herd_socket = self.next_agent_socket();
        let herd = self
            .child(&["herd", &herd_socket.display().to_string(), "1000", "15000"])
            .spawn()
            .expect("start the herd");
        let (herd_agent, socket) = self.spawn_agent(&herd_emu.endpoint(), None, None);
        assert_eq!(socket, herd_socket);
        let out = herd.wait_with_output().expect("the herd");
        let res: LoadResult =
            serde_json::from_slice(out.stdout.trim_ascii()).unwrap_or_else(|e| LoadResult {
                errors: 1000,
                first_error: Some(format!("herd failed: {e}")),
                ..LoadResult::default()
            });
        drop(herd_agent);
        let counts = herd_emu.counts();
        r.herd = Some(report::Herd {
            clients: 1000,
            ok: res.requests,
            errors: res.errors,
            first_error: res.first_error.clone(),
            token_puts: counts.token_puts,
            role_list_gets: counts.role_list_gets,
            credential_gets: counts.credential_gets,
            p50_ms: res.p50_us / 1000.0,
            max_ms: res.seconds * 1000.0,
        });

        if sts.is_some() {
            self.profile_herd(&emu_rt, &mut r);
        }

        r.lifetimes = crate::sim::lifetimes();

        // Idle CPU: the first agent has had no client since its start-up request.
        if !smoke {
            eprintln!("bench: waiting for the idle agent's {idle_secs} s");
            let (took, used) = idle_sample.join().expect("the idle sampler");
            let secs = took.as_secs_f64();
            r.idle = Some(report::Idle {
                seconds: secs,
                cpu_ms: used.as_secs_f64() * 1000.0,
                cpu_ms_per_minute: used.as_secs_f64() * 1000.0 * 60.0 / secs,
            });
        }
        drop(idle_agent);
        emu_rt.block_on(async {
            if let Some(sts) = sts {
                sts.shutdown().await;
            }
            emu.shutdown().await;
            herd_emu.shutdown().await;
        });
        r.machine = report::Machine::describe();
        r.evaluate();
        r
    }
}

/// The runtime the emulators run on, in this process.
pub(crate) fn emulator_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("emulator runtime")
}

/// A loopback port free right now (bound to port 0 and released): the child that binds it
/// next is started at once, so another process taking it in between is unlikely.
fn free_loopback_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}
