//! A running row of the fault matrix ([`Run`]): its emulator, its agent, and the prober that
//! asks for credentials every [`PROBE_EVERY`] meanwhile, with what a row checks on them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ecs_metadata_emulator::{Emulator, EmulatorConfig};

use super::{Expect, Suite};
use crate::agent::{AgentConfig, TestAgent, BACKOFF_MAX};
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
/// How often a row's prober asks for credentials.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// One answer to `GET /v1/credentials` seen by a row's prober.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was sent.
    pub sent: Instant,
    /// When the answer arrived: a request sent just before the fault cleared may be answered
    /// after it (it waited for the first credentials), so it does not belong to the fault.
    pub received: Instant,
    /// The answer's status.
    pub status: u16,
    /// `Code` of the JSON body (empty when absent).
    pub code: String,
    /// `Message` of the JSON body (empty when absent).
    pub message: String,
    /// `AccessKeyId` of the JSON body (empty when absent).
    pub access_key_id: String,
}

/// A running row: its emulator, its agent, and the prober asking for credentials meanwhile.
#[derive(Debug)]
pub struct Run {
    name: &'static str,
    suite: Arc<Suite>,
    /// The row's emulator (a row may replace it, e.g. to listen again where none did).
    pub emu: Arc<Emulator>,
    /// The row's agent.
    pub agent: Arc<TestAgent>,
    samples: Arc<Mutex<Vec<Sample>>>,
    secrets: Arc<Mutex<BTreeSet<String>>>,
    max_rss_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    prober: tokio::task::JoinHandle<()>,
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
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("emulator", &self.emulator)
            .field("clock_offset_secs", &self.clock_offset_secs)
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
        }
    }
}

/// The agent configuration every row starts from: [`AgentConfig::new`] with
/// `first_credentials_wait_ms = 1000` and log level `debug` (so the secret scan sees the most).
pub fn base_config(endpoint: &str) -> AgentConfig {
    let mut c = AgentConfig::new(endpoint);
    c.set("server", "first_credentials_wait_ms", "1000");
    c.set("log", "level", "\"debug\"");
    c
}

impl Run {
    /// Starts `setup`'s emulator and agent (the agent from `suite`'s binary, in a directory of
    /// its own with the clock offset file `clock-offset` when asked for) and the prober.
    ///
    /// # Errors
    /// Never today; a row's failure to start is reported like its other failures.
    pub async fn start(name: &'static str, suite: Arc<Suite>, setup: Setup) -> Result<Run, String> {
        let emu = Arc::new(emulator(setup.emulator).await);
        (setup.before_start)(&emu);
        let mut config = base_config(&emu.endpoint());
        (setup.agent)(&mut config);
        let dir = tempfile::Builder::new()
            .prefix("eca-fm-")
            .tempdir()
            .unwrap();
        if let Some(offset) = setup.clock_offset_secs {
            let path = dir.path().join("clock-offset");
            std::fs::write(&path, offset.to_string()).unwrap();
            config.env("E2E_AGENT_CLOCK_OFFSET_FILE", path.to_str().unwrap());
        }
        let agent = TestAgent::builder(&suite.bin, &config)
            .dir(dir)
            .start()
            .await;
        Ok(Run::probe(name, suite, emu, agent))
    }

    /// Starts the prober: a `GET /v1/credentials` every [`PROBE_EVERY`], each `200` checked;
    /// the agent's `VmRSS` and the emulator's current secrets noted on every round.
    pub fn probe(
        name: &'static str,
        suite: Arc<Suite>,
        emu: Arc<Emulator>,
        agent: TestAgent,
    ) -> Run {
        let agent = Arc::new(agent);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let secrets = Arc::new(Mutex::new(BTreeSet::new()));
        let max_rss_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let prober = tokio::spawn({
            let (agent, samples, secrets, rss, stop, problems, suite, emu) = (
                Arc::clone(&agent),
                Arc::clone(&samples),
                Arc::clone(&secrets),
                Arc::clone(&max_rss_kib),
                Arc::clone(&stop),
                Arc::clone(&problems),
                Arc::clone(&suite),
                Arc::clone(&emu),
            );
            async move {
                while !stop.load(Ordering::Relaxed) {
                    note_emulator_secrets(&emu, &secrets);
                    if let Some(kib) = agent.vm_rss_kib() {
                        rss.fetch_max(kib, Ordering::Relaxed);
                    }
                    let sample = ask(&agent, &suite, &secrets, &problems).await;
                    samples.lock().unwrap().push(sample);
                    tokio::time::sleep(PROBE_EVERY).await;
                }
            }
        });
        Run {
            name,
            suite,
            emu,
            agent,
            samples,
            secrets,
            max_rss_kib,
            stop,
            prober,
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
    /// took at most the backoff cap plus one second plus `extra` (plus [`LOAD_SLACK`]).
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
        Ok(took)
    }

    /// Waits (up to 60 s) until every request the prober sent before `until` was answered: the
    /// prober asks one request at a time, so once one sent at or after `until` was answered,
    /// every earlier one was.
    pub async fn settle(&self, until: Instant) {
        self.wait_answered_since(until, 1).await;
    }

    /// Waits (up to 60 s) until `at_least` client requests sent at or after `since` were
    /// answered, so the window checked by [`Run::check_during`] is never empty (or thin) only
    /// because of the first request's wait for credentials or a slow machine.
    pub async fn wait_answered_since(&self, since: Instant, at_least: usize) {
        let _ = eventually(Duration::from_secs(60), || async {
            let samples = self.samples.lock().unwrap();
            (samples.iter().filter(|s| s.sent >= since).count() >= at_least).then_some(())
        })
        .await;
    }

    /// Waits (up to 60 s) until a client request sent at or after `since` got a `503` naming
    /// `reason` within [`PROMPT_ANSWER`]: the agent has been failing longer than
    /// `first_credentials_wait_ms` and answers at once. Rows using it set
    /// `first_credentials_wait_ms` to [`PROMPT_ROW_FIRST_WAIT_MS`], well above the bound.
    pub async fn wait_prompt_refusal(&self, since: Instant, reason: &str) {
        let _ = eventually(Duration::from_secs(60), || async {
            let samples = self.samples.lock().unwrap();
            samples
                .iter()
                .any(|s| {
                    s.sent >= since
                        && s.status == 503
                        && s.message.contains(reason)
                        && s.received - s.sent < PROMPT_ANSWER
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

    /// (a): every sample in `[from, to)` is the cached credentials, or every one is a 503
    /// naming `reason`; at least one sample.
    pub fn check_during(
        &self,
        from: Instant,
        to: Instant,
        expect: Expect,
        reason: &str,
    ) -> Result<(), String> {
        let samples = self.samples_between(from, to);
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

    /// (d) and the secret scan; stops the prober. Returns every problem found.
    pub async fn finish(self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.prober.await;
        note_emulator_secrets(&self.emu, &self.secrets);
        let mut problems = std::mem::take(&mut *self.problems.lock().unwrap());
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
        let mut secrets = self.secrets.lock().unwrap().clone();
        secrets.extend(self.emu.issued_tokens());
        let leaked = secrets.iter().filter(|s| logs.contains(s.as_str())).count();
        if leaked > 0 {
            self.suite.leaks.fetch_add(leaked as u64, Ordering::Relaxed);
            problems.push(format!("{leaked} secrets or metadata tokens in the logs"));
        }
        let _ = self.name;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
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

/// One `GET /v1/credentials`; a `200` is checked and its secrets noted.
async fn ask(
    agent: &TestAgent,
    suite: &Suite,
    secrets: &Mutex<BTreeSet<String>>,
    problems: &Mutex<Vec<String>>,
) -> Sample {
    let sent = Instant::now();
    let sent_wall = SystemTime::now();
    let r = agent.get("/v1/credentials").await;
    let received_wall = SystemTime::now();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    if r.status == 200 {
        if let Err(e) = suite.checker.check(&v, sent_wall, received_wall) {
            problems.lock().unwrap().push(e);
        }
        let mut s = secrets.lock().unwrap();
        s.insert(text("AccessKeySecret"));
        s.insert(text("SecurityToken"));
    }
    Sample {
        sent,
        received: Instant::now(),
        status: r.status,
        code: text("Code"),
        message: text("Message"),
        access_key_id: text("AccessKeyId"),
    }
}

fn note_emulator_secrets(emu: &Emulator, secrets: &Mutex<BTreeSet<String>>) {
    if let Some(c) = emu.current_credentials() {
        let mut s = secrets.lock().unwrap();
        s.insert(c.access_key_secret.clone());
        s.insert(c.security_token.clone());
    }
}
