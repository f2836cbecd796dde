//! A profile's caller beside an instance-role caller: one agent, one socket, the same load.
//!
//! The agent is started with one `[[profile]]` whose selector is `uid = 65534` (`nobody`),
//! its RAM role assumed from the STS emulator (in this process, sharing the metadata
//! emulator's AccessKeys), uid 1 in `allowed_uids` (served the instance role: no profile
//! matches it, and `[profiles] unmatched` is `instance-role` by default), and its socket open
//! to every uid (`socket_mode = "0666"`). The raw client runs as uid 1 for the
//! **instance-role caller** and as uid 65534 for the **profile caller**, interleaved in
//! rounds like the main matrix, so both rows come from the same process, the same
//! configuration and the same transport; only the caller, and so the credentials it is
//! answered from, differ. (Two agents, one with a profile matching root and one without
//! profiles, would compare two processes and two configurations. Root as the instance-role
//! caller would skip what every other uid's new connection pays: root is exempt from
//! `max_connections_per_uid`.)
//!
//! The clients run a copy of this binary in the run's directory (a repository checked out
//! under a `0700` home would not let another uid execute the original). Switching uid needs
//! root; without it the rows are left out with a note.
//!
//! `--smoke` keeps a count-only check: a cold-start herd of 1000 profile callers makes
//! exactly one `AssumeRole` and is answered 1000 × `200`.

pub mod report;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ecs_metadata_emulator::sts::{StsConfig, StsEmulator, TargetRole};
use ecs_metadata_emulator::{config::DEFAULT_ROLE_NAME, Emulator, EmulatorConfig};
use ecs_metadata_emulator::{Endpoint, Fault, Times};

use crate::load::{Addr, LoadResult, Mode};
use crate::procfs;
use crate::report::{Point, Report};
use crate::run::{run_load, Bench, Proc};

/// The uid the profile's selector matches and its callers run as (`nobody`).
pub const PROFILE_UID: u32 = 65534;
/// The uid of the instance-role caller, in `allowed_uids` (`daemon` or `bin`; any uid will do).
pub const INSTANCE_UID: u32 = 1;
/// The profile's name.
pub const PROFILE_NAME: &str = "bench";
/// The RAM role the profile assumes (the STS emulator lets the instance role assume it).
pub const ROLE_ARN: &str = "acs:ram::123456789012:role/bench-profile";

/// The row of the [`INSTANCE_UID`] caller, served the instance role by the agent with a
/// profile.
pub const INSTANCE_CALLER: &str = "agent, instance-role caller";
/// The row of the uid-65534 caller, served the profile's role by the same agent.
pub const PROFILE_CALLER: &str = "agent, profile caller";

/// Why the profile rows are missing when the bench does not run as root.
pub const NOT_ROOT: &str = "left out: its clients run as uids 1 and 65534, which needs root";

/// Who a load client runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// [`INSTANCE_UID`]: the instance role.
    Instance,
    /// [`PROFILE_UID`]: the profile.
    Profile,
}

impl Caller {
    /// The uid (and gid) the client runs as.
    fn uid(self) -> u32 {
        match self {
            Caller::Instance => INSTANCE_UID,
            Caller::Profile => PROFILE_UID,
        }
    }
}

/// What the agent's configuration adds for the profile.
#[derive(Debug, Clone)]
pub struct AgentToml {
    /// Keys of `[server]`.
    pub server: String,
    /// Allowed beside the bench's own uid.
    pub allowed_uids: Vec<u32>,
    /// Sections after `[server]`: `[sts]` and `[[profile]]`.
    pub sections: String,
}

impl AgentToml {
    /// The profile matching [`PROFILE_UID`], its role assumed from `sts`.
    pub fn new(sts: &StsEmulator) -> AgentToml {
        let ca = sts.ca_file().expect("the STS emulator writes its CA");
        AgentToml {
            // The herd's 1000 connections come from one uid (half of `max_connections` else).
            // Its requests wait for the profile's first credentials, which come one refresher
            // backoff (full jitter, up to 1, 2, 4 s) after the instance role's: more than the
            // default 5 s now and then, and this herd counts `AssumeRole`s, not latency.
            server: "socket_mode = \"0666\"\nmax_connections_per_uid = 1024\n\
                     first_credentials_wait_ms = 15000\n"
                .to_owned(),
            allowed_uids: vec![INSTANCE_UID],
            sections: format!(
                "\n[sts]\nendpoint = {:?}\nca_file = {:?}\n\n[[profile]]\nname = {PROFILE_NAME:?}\n\
                 match = {{ uid = {PROFILE_UID} }}\nrole_arn = {ROLE_ARN:?}\n",
                sts.endpoint(),
                ca.display().to_string(),
            ),
        }
    }
}

/// Starts an STS emulator on `rt` that accepts `metadata`'s AccessKeys and lets its role
/// assume [`ROLE_ARN`], writing its CA to `ca_file`.
pub fn start_sts(
    rt: &tokio::runtime::Runtime,
    metadata: &Emulator,
    ca_file: PathBuf,
) -> StsEmulator {
    let keys = metadata.key_store();
    rt.block_on(async move {
        StsEmulator::start(StsConfig {
            keys,
            roles: vec![TargetRole::new(ROLE_ARN, DEFAULT_ROLE_NAME)],
            ca_file: Some(ca_file),
            ..StsConfig::default()
        })
    })
    .expect("start the STS emulator")
}

/// Whether this process can run clients as [`PROFILE_UID`].
pub fn can_switch_uid() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Bench {
    /// A command running this binary's `args` as `caller`.
    pub(crate) fn child_as(&mut self, caller: Caller, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.client_copy());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .uid(caller.uid())
            .gid(caller.uid());
        // As root, std drops the supplementary groups when it sets the uid.
        cmd
    }

    /// A copy of this binary that every uid may execute (made once).
    fn client_copy(&mut self) -> PathBuf {
        let copy = self.dir.join("bench-client");
        if !copy.exists() {
            std::fs::copy(&self.me, &copy).expect("copy the bench binary");
        }
        copy
    }

    /// Waits until `caller` is answered `200` on `socket` by `agent` (the profile's
    /// credentials are assumed at the agent's start, asynchronously).
    fn wait_served(&mut self, agent: &mut Proc, socket: &Path, caller: Caller) {
        let t0 = Instant::now();
        let sock = socket.display().to_string();
        loop {
            let ok = self
                .child_as(caller, &["fetch", &sock, "/dev/null"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                !agent.exited(),
                "the agent with a profile exited; its log: {}",
                socket.with_extension("log").display()
            );
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the agent never served the {caller:?} caller on {sock}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The comparison: an agent with the profile, the instance-role and the profile caller
    /// loaded in turn (the order alternating by round), keep-alive and a new connection per
    /// request, 1 and 8 clients (8 only, one round, in smoke mode).
    pub(crate) fn profile_comparison(&mut self, endpoint: &str, sts: &StsEmulator, r: &mut Report) {
        let toml = AgentToml::new(sts);
        let (mut agent, socket) = self.spawn_agent(endpoint, None, Some(&toml));
        self.wait_served(&mut agent, &socket, Caller::Instance);
        self.wait_served(&mut agent, &socket, Caller::Profile);
        if r.response_bytes == 0 {
            // `--profiles-only`: the sizes the main run takes from its own agent.
            r.request_bytes = crate::load::REQUEST.len();
            r.response_bytes = crate::run::get_once(&socket).map_or(0, |raw| raw.len());
        }
        let addr = Addr::Unix(socket);
        let smoke = self.opts.smoke;
        let (concs, rounds): (&[usize], usize) = if smoke {
            (&[8], 1)
        } else {
            (&[1, 8], self.opts.rounds.max(1))
        };
        let rows = [
            (INSTANCE_CALLER, Caller::Instance),
            (PROFILE_CALLER, Caller::Profile),
        ];
        let before = sts.counts().role(ROLE_ARN).accepted;
        for mode in [Mode::KeepAlive, Mode::NewConn] {
            for &c in concs {
                eprintln!("bench: profile against instance role, {mode:?} c={c}");
                let mut runs: Vec<Vec<LoadResult>> = vec![Vec::new(); rows.len()];
                for round in 0..rounds {
                    for k in 0..rows.len() {
                        let i = (k + round) % rows.len();
                        let cpu = procfs::cpu_time(agent.pid());
                        let cmd = self.load_command(rows[i].1, &addr, mode, c);
                        let mut res = run_load(cmd);
                        let used = procfs::cpu_time(agent.pid()).saturating_sub(cpu);
                        if res.all_requests > 0 {
                            res.server_cpu_us =
                                Some(used.as_secs_f64() * 1e6 / res.all_requests as f64);
                        }
                        runs[i].push(res);
                    }
                }
                for (i, runs) in runs.into_iter().enumerate() {
                    r.points.push(Point::median(rows[i].0, Some(mode), c, runs));
                }
            }
        }
        // The profile's credentials were assumed once, before the load: none during it.
        r.profile_assume_roles_under_load =
            Some(sts.counts().role(ROLE_ARN).accepted.saturating_sub(before));
    }

    /// `--profiles-only`: the comparison and the herd, against a metadata emulator of their
    /// own.
    pub(crate) fn profiles_only(&mut self, rt: &tokio::runtime::Runtime, r: &mut Report) {
        r.profiles_only = true;
        if !can_switch_uid() {
            r.profile_note = Some(NOT_ROOT.into());
            return;
        }
        let metadata = rt
            .block_on(async { Emulator::start_local(EmulatorConfig::default()) })
            .expect("start the metadata emulator");
        let sts = start_sts(rt, &metadata, self.dir.join("sts-ca.pem"));
        self.profile_comparison(&metadata.endpoint(), &sts, r);
        self.profile_herd(rt, r);
        rt.block_on(async {
            sts.shutdown().await;
            metadata.shutdown().await;
        });
    }

    /// `bench load` against `addr` as `caller`.
    fn load_command(&mut self, caller: Caller, addr: &Addr, mode: Mode, c: usize) -> Command {
        let [w, d] = self.window_args();
        let mode = match mode {
            Mode::KeepAlive => "keep-alive",
            Mode::NewConn => "new-conn",
        };
        let addr = addr.to_string();
        self.child_as(caller, &["load", &addr, mode, &c.to_string(), &w, &d])
    }

    /// The cold-start herd of profile callers: 1000 clients as [`PROFILE_UID`] ask a fresh
    /// agent at once while its first token `PUT` takes 500 ms, so every request arrives before
    /// the instance role's credentials and hence before the profile's can be assumed.
    pub(crate) fn profile_herd(&mut self, rt: &tokio::runtime::Runtime, r: &mut Report) {
        eprintln!("bench: cold-start herd of a profile");
        let metadata = rt
            .block_on(async { Emulator::start_local(EmulatorConfig::default()) })
            .expect("start the herd's metadata emulator");
        metadata.set_fault(
            Endpoint::Token,
            Fault::Delay(Duration::from_millis(500)),
            Times::Next(1),
        );
        let sts = start_sts(rt, &metadata, self.dir.join("herd-sts-ca.pem"));
        let toml = AgentToml::new(&sts);
        let socket = self.next_agent_socket();
        let herd = self
            .child_as(
                Caller::Profile,
                &["herd", &socket.display().to_string(), "1000", "20000"],
            )
            .spawn()
            .expect("start the herd");
        let (agent, spawned) = self.spawn_agent(&metadata.endpoint(), None, Some(&toml));
        assert_eq!(spawned, socket);
        let out = herd.wait_with_output().expect("the herd");
        drop(agent);
        let res: LoadResult =
            serde_json::from_slice(out.stdout.trim_ascii()).unwrap_or_else(|e| LoadResult {
                errors: 1000,
                first_error: Some(format!("herd failed: {e}")),
                ..LoadResult::default()
            });
        let role = sts.counts().role(ROLE_ARN);
        let meta = metadata.counts();
        r.profile_herd = Some(report::ProfileHerd {
            clients: 1000,
            ok: res.requests,
            errors: res.errors,
            first_error: res.first_error.clone(),
            assume_role_calls: role.calls,
            assume_role_accepted: role.accepted,
            token_puts: meta.token_puts,
            credential_gets: meta.credential_gets,
            p50_ms: res.p50_us / 1000.0,
            max_ms: res.seconds * 1000.0,
        });
        rt.block_on(async {
            sts.shutdown().await;
            metadata.shutdown().await;
        });
    }
}
