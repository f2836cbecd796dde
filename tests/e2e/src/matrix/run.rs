//! A running row of the fault matrix ([`Run`]): its emulator, its agent, and the two probers
//! that ask for credentials every [`PROBE_EVERY`] meanwhile, one over the agent's Unix socket
//! and one over its loopback TCP listener, with what a row checks on their answers.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ecs_metadata_emulator::{Emulator, EmulatorConfig};

use super::probe::{Bridge, Transport};
use super::sts::{Sts, StsSetup};
use super::{Expect, Suite};
use crate::agent::{AgentConfig, TestAgent, BACKOFF_MAX};
use crate::http::Response;
use crate::metadata::emulator;
use crate::wait::eventually;

/// What a loaded 2-core machine may add to a recovery measured in real time (scheduling delays
/// of the agent, the prober and the test). The recovery bound stays far below what a backoff
/// without the test-scale cap would take (the default cap is tens of seconds).
pub const LOAD_SLACK: Duration = Duration::from_secs(3);

/// An answer "at once" (a `503` from an agent failing longer than `first_credentials_wait_ms`),
/// generous for a loaded machine; rows checking it wait [`PROMPT_ROW_FIRST_WAIT_MS`] for the
/// first credentials, so an answer that waited for them is always slower.
pub const PROMPT_ANSWER: Duration = Duration::from_secs(2);

/// `first_credentials_wait_ms` for rows that check [`PROMPT_ANSWER`].
pub const PROMPT_ROW_FIRST_WAIT_MS: &str = "5000";

/// A generous ceiling for the agent's resident memory.
pub const RSS_CEILING_KIB: u64 = 100 * 1024;
/// How often each of a row's probers asks for credentials.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// One answer to `GET /v1/credentials` seen by one of a row's probers.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The listener it was asked over.
    pub transport: Transport,
    /// When the request was sent.
    pub sent: Instant,
    /// When the answer arrived: a request sent just before the fault cleared may be answered
    /// after it (it waited for the first credentials), so it does not belong to the fault.
    pub received: Instant,
    /// The answer's status (`0`: no HTTP answer; `message` says why).
    pub status: u16,
    /// `Code` of the JSON body (empty when absent).
    pub code: String,
    /// `Message` of the JSON body (empty when absent).
    pub message: String,
    /// `AccessKeyId` of the JSON body (empty when absent).
    pub access_key_id: String,
}

/// A running row: its emulator, its agent, and the probers asking for credentials meanwhile.
#[derive(Debug)]
pub struct Run {
    name: &'static str,
    suite: Arc<Suite>,
    /// The row's emulator (a row may replace it, e.g. to listen again where none did).
    pub emu: Arc<Emulator>,
    /// The row's agent.
    pub agent: Arc<TestAgent>,
    /// The row's STS emulator, when its [`Setup`] had one (the probers then get the profile's
    /// assumed role).
    pub sts: Option<Arc<Sts>>,
    /// Its loopback TCP listener.
    pub bridge: Bridge,
    samples: Arc<Mutex<Vec<Sample>>>,
    secrets: Arc<Mutex<BTreeSet<String>>>,
    max_rss_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    probers: Vec<tokio::task::JoinHandle<()>>,
    problems: Arc<Mutex<Vec<String>>>,
}

/// How a row's agent and emulator are set up.
pub struct Setup {
    /// The emulator's configuration.
    pub emulator: EmulatorConfig,
    /// Changes to the agent's configuration (from [`base_config`]).
    pub agent: Box<dyn Fn(&mut AgentConfig) + Send + Sync>,
    /// Applied to the emulator before the agent starts (a fault present from the start).
    pub before_start: Box<dyn Fn(&Emulator) + Send + Sync>,
    /// A clock offset file for the agent, holding this many seconds.
    pub clock_offset_secs: Option<i64>,
    /// An STS emulator beside the metadata emulator and a profile the probers get.
    pub sts: Option<StsSetup>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("emulator", &self.emulator)
            .field("clock_offset_secs", &self.clock_offset_secs)
            .field("sts", &self.sts)
            .finish_non_exhaustive()
    }
}

impl Setup {
    /// An emulator configured by `emulator`, the agent by [`base_config`], no fault.
    pub fn new(emulator: EmulatorConfig) -> Setup {
        Setup {
            emulator,
            agent: Box::new(|_| {}),
            before_start: Box::new(|_| {}),
            clock_offset_secs: None,
            sts: None,
        }
    }

    /// An emulator configured by `emulator`, and an STS emulator and profile by `sts`.
    pub fn with_sts(emulator: EmulatorConfig, sts: StsSetup) -> Setup {
        Setup {
            sts: Some(sts),
            ..Setup::new(emulator)
        }
    }
}

/// The agent configuration every row starts from: [`AgentConfig::new`] with
/// `first_credentials_wait_ms = 1000` and log level `debug` (so the secret scan sees the most).
/// Add the loopback listener with [`listen_on_bridge`].
pub fn base_config(endpoint: &str) -> AgentConfig {
    let mut c = AgentConfig::new(endpoint);
    c.set("server", "first_credentials_wait_ms", "1000");
    c.set("log", "level", "\"debug\"");
    c
}

/// Binds a listener on a free loopback port of the test's network namespace and sets
/// `[bridge] listen` to its address. Start the agent with it through
/// [`AgentBuilder::bridge_activated`](crate::agent::AgentBuilder::bridge_activated): the port is
/// then never released and bound again, so no other socket of a parallel row can take it in
/// between (which made agents exit with "Address already in use" under load).
///
/// # Panics
/// When no loopback port can be bound.
pub fn listen_on_bridge(config: &mut AgentConfig) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
    let addr = listener.local_addr().expect("the listener's address");
    config.set("bridge", "listen", &format!("\"{addr}\""));
    listener
}

impl Run {
    /// Starts `setup`'s emulators and agent (the agent from `suite`'s binary, in a directory of
    /// its own with the clock offset file `clock-offset` when asked for, and the STS emulator's
    /// CA file `sts-ca.pem`) and the probers.
    ///
    /// # Errors
    /// When the STS emulator cannot start; a row's failure to start is reported like its other
    /// failures.
    pub async fn start(name: &'static str, suite: Arc<Suite>, setup: Setup) -> Result<Run, String> {
        let emu = Arc::new(emulator(setup.emulator).await);
        (setup.before_start)(&emu);
        let mut config = base_config(&emu.endpoint());
        let listener = listen_on_bridge(&mut config);
        let bridge = Bridge::Loopback(listener.local_addr().unwrap());
        (setup.agent)(&mut config);
        let dir = tempfile::Builder::new()
            .prefix("eca-fm-")
            .tempdir()
            .unwrap();
        let sts = match &setup.sts {
            Some(sts) => Some(Arc::new(Sts::start(sts, &emu, dir.path(), &mut config)?)),
            None => None,
        };
        if let Some(offset) = setup.clock_offset_secs {
            let path = dir.path().join("clock-offset");
            std::fs::write(&path, offset.to_string()).unwrap();
            config.env("E2E_AGENT_CLOCK_OFFSET_FILE", path.to_str().unwrap());
        }
        let agent = TestAgent::builder(&suite.bin, &config)
            .dir(dir)
            .bridge_activated(&listener)
            .start()
            .await;
        let mut run = Run::probe(name, suite, emu, agent, bridge);
        run.sts = sts;
        Ok(run)
    }

    /// The row's STS emulator.
    ///
    /// # Errors
    /// When the row has none.
    pub fn sts(&self) -> Result<&Sts, String> {
        self.sts
            .as_deref()
            .ok_or_else(|| format!("row {:?} has no STS emulator", self.name))
    }

    /// Starts the probers: a `GET /v1/credentials` every [`PROBE_EVERY`] over the Unix socket,
    /// and another over `bridge` (once it accepts connections), each `200` checked; the
    /// agent's `VmRSS` and the emulator's current secrets noted on every round.
    pub fn probe(
        name: &'static str,
        suite: Arc<Suite>,
        emu: Arc<Emulator>,
        agent: TestAgent,
        bridge: Bridge,
    ) -> Run {
        let prober = Prober {
            transport: Transport::Socket,
            agent: Arc::new(agent),
            bridge,
            suite,
            emu,
            samples: Arc::default(),
            secrets: Arc::default(),
            max_rss_kib: Arc::default(),
            stop: Arc::default(),
            problems: Arc::default(),
        };
        let probers = Transport::ALL
            .map(|transport| {
                tokio::spawn(
                    Prober {
                        transport,
                        ..prober.clone()
                    }
                    .run(),
                )
            })
            .into();
        let Prober {
            agent,
            suite,
            emu,
            samples,
            secrets,
            max_rss_kib,
            stop,
            problems,
            ..
        } = prober;
        Run {
            name,
            suite,
            emu,
            agent,
            sts: None,
            bridge,
            samples,
            secrets,
            max_rss_kib,
            stop,
            probers,
            problems,
        }
    }

    /// Waits until credentials are served (up to 30 s) and returns them.
    pub async fn wait_served(&self) -> Result<serde_json::Value, String> {
        eventually(Duration::from_secs(30), || async {
            let r = self.agent.get("/v1/credentials").await;
            (r.status == 200).then(|| r.json())
        })
        .await
        .ok_or_else(|| {
            format!(
                "no credentials served within 30 s; logs:\n{}",
                self.agent.logs()
            )
        })
    }

    /// The health JSON.
    pub async fn health(&self) -> serde_json::Value {
        self.agent.get("/v1/health").await.json()
    }

    /// Waits until `/v1/health` shows `LastError` containing `reason` (up to `within`); returns
    /// when it first did.
    pub async fn wait_health_error(
        &self,
        reason: &str,
        within: Duration,
    ) -> Result<Instant, String> {
        eventually(within, || async {
            let h = self.health().await;
            h["LastError"]
                .as_str()
                .is_some_and(|e| e.contains(reason))
                .then(Instant::now)
        })
        .await
        .ok_or_else(|| {
            format!(
                "health never named {reason:?} within {within:?}; logs:\n{}",
                self.agent.logs()
            )
        })
    }

    /// Waits until `/v1/health` is `Ok` again after a fault cleared at `cleared`, and checks it
    /// took at most the backoff cap plus one second plus `extra` (plus [`LOAD_SLACK`]), and that
    /// then both the socket and the loopback listener serve the same credentials.
    pub async fn wait_recovered(
        &self,
        cleared: Instant,
        extra: Duration,
    ) -> Result<Duration, String> {
        let bound = BACKOFF_MAX + Duration::from_secs(1) + extra + LOAD_SLACK;
        let took = eventually(bound + Duration::from_secs(30), || async {
            (self.health().await["Status"] == "Ok").then(|| cleared.elapsed())
        })
        .await
        .ok_or_else(|| format!("no recovery; logs:\n{}", self.agent.logs()))?;
        if took > bound {
            return Err(format!("recovered after {took:?}, more than {bound:?}"));
        }
        let r = self.agent.get("/v1/credentials").await;
        if r.status != 200 {
            return Err(format!("health Ok but credentials answered {r:?}"));
        }
        let tcp = self.bridge.get("/v1/credentials").await?;
        // A refresh between the two requests may rotate them: compare with a socket answer
        // taken after the TCP one too.
        let after = self.agent.get("/v1/credentials").await;
        let id = |r: &Response| r.json()["AccessKeyId"].clone();
        if tcp.status != 200 || (id(&tcp) != id(&r) && id(&tcp) != id(&after)) {
            return Err(format!(
                "health Ok, the socket served {}, but over TCP: {tcp:?}",
                id(&r)
            ));
        }
        Ok(took)
    }

    /// Waits (up to 60 s) until every request the probers sent before `until` was answered: each
    /// prober asks one request at a time, so once one sent at or after `until` was answered,
    /// every earlier one was.
    pub async fn settle(&self, until: Instant) {
        self.wait_answered_since(until, 1).await;
    }

    /// Waits (up to 60 s) until `at_least` client requests sent at or after `since` were
    /// answered over each transport, so the window checked by [`Run::check_during`] is never
    /// empty (or thin) only because of the first request's wait for credentials or a slow
    /// machine.
    pub async fn wait_answered_since(&self, since: Instant, at_least: usize) {
        let _ = eventually(Duration::from_secs(60), || async {
            let samples = self.samples.lock().unwrap();
            Transport::ALL
                .iter()
                .all(|&t| {
                    let n = samples
                        .iter()
                        .filter(|s| s.transport == t && s.sent >= since);
                    n.count() >= at_least
                })
                .then_some(())
        })
        .await;
    }

    /// Waits (up to 60 s) until a client request sent at or after `since` got a `503` naming
    /// `reason` within [`PROMPT_ANSWER`], over each transport: the agent has been failing
    /// longer than `first_credentials_wait_ms` and answers at once. Rows using it set
    /// `first_credentials_wait_ms` to [`PROMPT_ROW_FIRST_WAIT_MS`], well above the bound.
    pub async fn wait_prompt_refusal(&self, since: Instant, reason: &str) {
        let _ = eventually(Duration::from_secs(60), || async {
            let samples = self.samples.lock().unwrap();
            Transport::ALL
                .iter()
                .all(|&t| {
                    samples.iter().any(|s| {
                        s.transport == t
                            && s.sent >= since
                            && s.status == 503
                            && s.message.contains(reason)
                            && s.received - s.sent < PROMPT_ANSWER
                    })
                })
                .then_some(())
        })
        .await;
    }

    /// The samples sent in `[from, to)` and answered before `to`.
    pub fn samples_between(&self, from: Instant, to: Instant) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.sent >= from && s.received < to)
            .cloned()
            .collect()
    }

    /// (a): every sample in `[from, to)`, over either transport, is the cached credentials, or
    /// every one is a 503 naming `reason`; at least one sample over each transport.
    pub fn check_during(
        &self,
        from: Instant,
        to: Instant,
        expect: Expect,
        reason: &str,
    ) -> Result<(), String> {
        let samples = self.samples_between(from, to);
        if let Some(t) = Transport::ALL
            .into_iter()
            .find(|&t| !samples.is_empty() && samples.iter().all(|s| s.transport != t))
        {
            return Err(format!(
                "no client request over {t:?} during the fault ({:?} long)",
                to - from
            ));
        }
        if samples.is_empty() {
            let all = self.samples.lock().unwrap();
            let around: Vec<String> = all
                .iter()
                .map(|s| format!("{:?}", s.sent.saturating_duration_since(from)))
                .collect();
            return Err(format!(
                "no client request during the fault ({:?} long); requests sent at {around:?} after its start",
                to - from
            ));
        }
        let bad: Vec<&Sample> = samples
            .iter()
            .filter(|s| match expect {
                Expect::Cached => s.status != 200,
                Expect::Unavailable => {
                    s.status != 503
                        || s.code != "CredentialsUnavailable"
                        || !s.message.contains(reason)
                }
            })
            .collect();
        match bad.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "during the fault expected {expect:?} naming {reason:?}; {} of {} answers differ, first: {first:?}",
                bad.len(),
                samples.len()
            )),
        }
    }

    /// (d), the secret scan and [`Run::tcp_outcomes`]; stops the probers. Returns every problem
    /// found.
    pub async fn finish(self) -> Result<(), String> {
        // A row may end within milliseconds; on a loaded machine a prober may not have had its
        // first answer yet. Wait for one over each transport (up to 60 s) before stopping them.
        let _ = eventually(Duration::from_secs(60), || async {
            let samples = self.samples.lock().unwrap();
            Transport::ALL
                .iter()
                .all(|&t| samples.iter().any(|s| s.transport == t))
                .then_some(())
        })
        .await;
        self.stop.store(true, Ordering::Relaxed);
        for prober in self.probers {
            let _ = prober.await;
        }
        note_emulator_secrets(&self.emu, &self.secrets);
        let mut problems = std::mem::take(&mut *self.problems.lock().unwrap());
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        for s in &samples {
            self.suite.answers[s.transport as usize].fetch_add(1, Ordering::Relaxed);
        }
        problems.extend(tcp_outcomes(&samples).err());
        let mut agent = Arc::try_unwrap(self.agent).map_err(|_| "agent still shared".to_owned())?;
        if !agent.is_running() {
            problems.push(format!("the agent exited; logs:\n{}", agent.logs()));
        }
        let rss = self.max_rss_kib.load(Ordering::Relaxed);
        if rss > RSS_CEILING_KIB {
            problems.push(format!(
                "VmRSS reached {rss} KiB, over {RSS_CEILING_KIB} KiB"
            ));
        }
        let logs = agent.logs();
        let keys = self.emu.key_store();
        let mut secrets = self.secrets.lock().unwrap().clone();
        secrets.extend(self.emu.issued_tokens());
        // Every generation the metadata emulator issued and every session STS granted, served
        // or not (the key store is shared).
        secrets.extend(keys.secrets());
        secrets.remove("");
        let leaked = secrets.iter().filter(|s| logs.contains(s.as_str())).count();
        if leaked > 0 {
            self.suite.leaks.fetch_add(leaked as u64, Ordering::Relaxed);
            problems.push(format!("{leaked} secrets or metadata tokens in the logs"));
        }
        if let Some(s) = samples
            .iter()
            .find(|s| secrets.iter().any(|k| s.message.contains(k.as_str())))
        {
            problems.push(format!(
                "a secret in an answer's Message over {:?} (status {})",
                s.transport, s.status
            ));
        }
        if let Some(sts) = &self.sts {
            problems.extend(sts.only_assumed_served(&keys, &samples).err());
        }
        let _ = self.name;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

/// Every row, whatever it checks itself: the TCP prober was answered, and each TCP answer other
/// than `200` or `503 CredentialsUnavailable` (a refusal of the transport: a caller not found,
/// a `Host` refused, no answer) is one the socket prober got too.
///
/// # Errors
/// The first TCP answer the socket never gave, and how many there were.
pub fn tcp_outcomes(samples: &[Sample]) -> Result<(), String> {
    let outcome = |s: &Sample| (s.status, s.code.clone());
    let over = |t| samples.iter().filter(move |s: &&Sample| s.transport == t);
    let socket: BTreeSet<_> = over(Transport::Socket).map(outcome).collect();
    if over(Transport::Tcp).next().is_none() {
        return Err("no answer over TCP".to_owned());
    }
    let odd: Vec<&Sample> = over(Transport::Tcp)
        .filter(|s| {
            s.status != 200 && (s.status, s.code.as_str()) != (503, "CredentialsUnavailable")
        })
        .filter(|s| !socket.contains(&outcome(s)))
        .collect();
    match odd.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} answers over TCP that the socket never gave (socket: {socket:?}), first: {first:?}",
            odd.len()
        )),
    }
}

/// Both results' errors, if any.
///
/// # Errors
/// Each error of `a` and `b`, one after the other.
pub fn combine(a: Result<(), String>, b: Result<(), String>) -> Result<(), String> {
    match (a, b) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(format!("{a}\n{b}")),
    }
}

/// One prober of a row: what it asks over and where it records.
#[derive(Debug, Clone)]
struct Prober {
    transport: Transport,
    agent: Arc<TestAgent>,
    bridge: Bridge,
    suite: Arc<Suite>,
    emu: Arc<Emulator>,
    samples: Arc<Mutex<Vec<Sample>>>,
    secrets: Arc<Mutex<BTreeSet<String>>>,
    max_rss_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Prober {
    /// Asks every [`PROBE_EVERY`] until stopped. The TCP prober starts once the listener
    /// accepts connections (up to 30 s; the Unix socket, waited on by the agent's start, may
    /// come up first).
    async fn run(self) {
        if self.transport == Transport::Tcp {
            let up = eventually(Duration::from_secs(30), || async {
                self.bridge.connect().await.ok().map(drop)
            })
            .await;
            if up.is_none() {
                let addr = self.bridge.addr();
                self.problem(format!("the loopback listener {addr} never accepted"));
                return;
            }
        }
        while !self.stop.load(Ordering::Relaxed) {
            if self.transport == Transport::Socket {
                note_emulator_secrets(&self.emu, &self.secrets);
                if let Some(kib) = self.agent.vm_rss_kib() {
                    self.max_rss_kib.fetch_max(kib, Ordering::Relaxed);
                }
            }
            let sample = self.ask().await;
            self.samples.lock().unwrap().push(sample);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    fn problem(&self, problem: String) {
        self.problems.lock().unwrap().push(problem);
    }

    /// One `GET /v1/credentials`; a `200` is checked and its secrets noted. A TCP request that
    /// got no HTTP answer is a sample of status `0` with the error as its `message`.
    async fn ask(&self) -> Sample {
        let sent = Instant::now();
        let sent_wall = SystemTime::now();
        let r = match self.transport {
            Transport::Socket => Ok(self.agent.get("/v1/credentials").await),
            Transport::Tcp => self.bridge.get("/v1/credentials").await,
        };
        let received_wall = SystemTime::now();
        let r = r.unwrap_or_else(|e| Response {
            status: 0,
            headers: Vec::new(),
            body: serde_json::json!({ "Message": e }).to_string(),
        });
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        if r.status == 200 {
            if let Err(e) = self.suite.checker.check(&v, sent_wall, received_wall) {
                self.problem(format!("over {:?}: {e}", self.transport));
            }
            let mut s = self.secrets.lock().unwrap();
            s.insert(text("AccessKeySecret"));
            s.insert(text("SecurityToken"));
        }
        Sample {
            transport: self.transport,
            sent,
            received: Instant::now(),
            status: r.status,
            code: text("Code"),
            message: text("Message"),
            access_key_id: text("AccessKeyId"),
        }
    }
}

fn note_emulator_secrets(emu: &Emulator, secrets: &Mutex<BTreeSet<String>>) {
    if let Some(c) = emu.current_credentials() {
        let mut s = secrets.lock().unwrap();
        s.insert(c.access_key_secret.clone());
        s.insert(c.security_token.clone());
    }
}
