//! The metadata fault matrix: one row per way the metadata service (or the network, or the
//! local clock) misbehaves, each injected with the emulator against a real agent process.
//!
//! Every row runs its own emulator and agent, concurrently with the others. Each agent also
//! listens on loopback TCP (`[bridge] listen`), and two probers ask it for credentials
//! throughout, one over the Unix socket and one over TCP (the blackholed row's from inside the
//! agent's network namespace). Every row asserts:
//!
//! - (a) what a client gets during the fault, over either transport alike: the cached
//!   credentials, or a `503 CredentialsUnavailable` whose `Message` names the fault (and
//!   `/v1/health` names it in `LastError` either way); and, in every row, no answer over TCP
//!   that the socket did not give too (no refusal of the transport);
//! - (b) through one shared [`Checker`](matrix::Checker): no `200` the suite ever sees, in any
//!   row, carries credentials whose `Expiration` has passed or is inside the expiry margin, and
//!   every served `Expiration` is `YYYY-MM-DDTHH:MM:SSZ`;
//! - (c) recovery: `/v1/health` is `Ok` again (and both transports serve the same credentials)
//!   within the backoff cap plus one second after the fault clears (plus one request deadline for faults that hold a request open: a request
//!   already hanging when the fault clears still runs into its deadline);
//! - (d) the process is still up at the end and its `VmRSS` stayed under
//!   [`RSS_CEILING_KIB`](matrix::RSS_CEILING_KIB);
//! - and no metadata token or secret the emulators handed out (served or not: every key in the
//!   key store the metadata and STS emulators share) appears in the row's logs (the agent logs
//!   at `debug`) or in an answer's `Message`.
//!
//! The suite prints one line: `fault matrix: N scenarios, N passed, expired served 0, secrets
//! in logs 0, answers over the socket N and over TCP N`.
//!
//! Clock rows skew the *agent's* wall clock (the `e2e-agent` test binary's
//! `E2E_AGENT_CLOCK_OFFSET_FILE` hook, unreachable from the production binary), not the
//! emulator's: that is the clock the agent turns `Expiration` into a deadline with, and only a
//! clock inside the agent can be stepped *after* the deadline was set. The emulator and the
//! checker keep true time.
//!
//! The harness (a row's `Run`, `Setup`, the `Checker`) is the package library's
//! [`matrix`] module; this file is the table of rows.
//!
//! STS rows (`fault_matrix/sts_rows.rs`) add an STS emulator beside the metadata emulator and a
//! `[[profile]]` matching the probers' uid: the same probers and checks then exercise a
//! profile's assumed role (every STS refusal the agent explains, the `DurationSeconds` retry,
//! 5xx, throttling, hangs, credentials expiring on arrival, the instance role detached), and
//! each also checks that every `200` carried credentials STS issued for the profile's role
//! (never a fallback to the instance role) and that no secret either emulator issued reached a
//! log line or an answer.
//!
//! The blackhole row needs root: it runs the agent in a network namespace of its own where
//! `100.100.100.200` routes into a veth pair whose far end drops every frame.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ecs_credential_agent_e2e::agent::{CONNECT_TIMEOUT, EXPIRY_MARGIN, READ_TIMEOUT};
use ecs_credential_agent_e2e::matrix::{
    base_config, combine, listen_on_bridge, parse_served_time, Bridge, Expect, Run, Sample, Setup,
    Suite, Transport, PROMPT_ANSWER, PROMPT_ROW_FIRST_WAIT_MS,
};
use ecs_credential_agent_e2e::*;
use ecs_metadata_emulator::{Emulator, EmulatorConfig, Endpoint, Fault, Times};

/// One metadata request's deadline at test scale: connect + 2 × read (`[metadata]
/// connect_timeout_ms`, `read_timeout_ms` of [`AgentConfig::new`]).
const REQUEST_DEADLINE: Duration = CONNECT_TIMEOUT.saturating_add(READ_TIMEOUT.saturating_mul(2));
/// Rows running at once (each is an emulator and an agent process).
const PARALLEL: usize = 12;
/// The longest a row may take.
const ROW_BUDGET: Duration = Duration::from_secs(120);

#[path = "fault_matrix/sts_rows.rs"]
mod sts_rows;

type RowFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One scenario: a name and what it does.
struct Row {
    name: &'static str,
    run: Box<dyn Fn(Arc<Suite>) -> RowFuture + Send + Sync>,
}

/// When the fault starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Before the agent starts: nothing was ever cached.
    Cold,
    /// After the first credentials, at the next refresh (credentials of 16 s).
    Warm,
}

/// A fault row described by data: inject, observe, clear, recover.
#[derive(Clone)]
struct FaultSpec {
    endpoint: Endpoint,
    fault: Fault,
    when: When,
    expect: Expect,
    /// Text the fault's error contains (health `LastError`, 503 `Message`).
    reason: &'static str,
    /// Extra recovery time allowed (a request held open runs into its deadline).
    extra: Duration,
    fallback: bool,
}

fn spec(
    endpoint: Endpoint,
    fault: Fault,
    when: When,
    expect: Expect,
    reason: &'static str,
) -> FaultSpec {
    FaultSpec {
        endpoint,
        fault,
        when,
        expect,
        reason,
        extra: Duration::ZERO,
        fallback: false,
    }
}

/// Credentials of 16 s for warm rows: the agent refreshes at about half-life (7–8 s) and serves
/// until 15 s, so a fault at the refresh shows while the cached credentials are still valid.
fn warm_emulator() -> EmulatorConfig {
    short_lived(16, 8)
}

async fn run_fault(name: &'static str, suite: Arc<Suite>, spec: FaultSpec) -> Result<(), String> {
    let emulator = match spec.when {
        When::Cold => EmulatorConfig::default(),
        When::Warm => warm_emulator(),
    };
    let mut setup = Setup::new(emulator);
    let fallback = spec.fallback;
    setup.agent = Box::new(move |c| {
        if fallback {
            c.set("metadata", "allow_imdsv1_fallback", "true");
        }
    });
    if spec.when == When::Cold {
        let spec = spec.clone();
        setup.before_start = Box::new(move |emu| inject(emu, &spec));
    }
    let run = Run::start(name, suite, setup).await?;
    if spec.when == When::Warm {
        run.wait_served().await?;
        if spec.endpoint == Endpoint::Token {
            // The cached metadata token must be refused for the next fetch to PUT a new one.
            run.emu.expire_tokens();
        }
        inject(&run.emu, &spec);
    }
    let result = observe(&run, &spec).await;
    let finished = run.finish().await;
    combine(result, finished)
}

fn inject(emu: &Emulator, spec: &FaultSpec) {
    if spec.endpoint == Endpoint::Any && spec.fault == Fault::Status(404) {
        emu.detach_role();
    } else {
        emu.set_fault(spec.endpoint, spec.fault.clone(), Times::Always);
    }
}

/// (a) during the fault, then clear and (c).
async fn observe(run: &Run, spec: &FaultSpec) -> Result<(), String> {
    let shown = run
        .wait_health_error(spec.reason, Duration::from_secs(30))
        .await?;
    // A fault window of 15 client requests (about 1.5 s on an idle machine).
    run.wait_answered_since(shown, 15).await;
    let cleared = Instant::now();
    run.emu.clear_faults();
    if run.emu.role_name().is_none() {
        run.emu
            .attach_role(ecs_metadata_emulator::config::DEFAULT_ROLE_NAME);
    }
    run.wait_recovered(cleared, spec.extra).await?;
    // Requests sent before the fault cleared may still be waiting out
    // first_credentials_wait_ms; let them finish before looking at them.
    run.settle(cleared).await;
    run.check_during(shown, cleared, spec.expect, spec.reason)
}

fn fault_row(name: &'static str, spec: FaultSpec) -> Row {
    Row {
        name,
        run: Box::new(move |suite| Box::pin(run_fault(name, suite, spec.clone()))),
    }
}

fn custom<F, Fut>(name: &'static str, f: F) -> Row
where
    F: Fn(&'static str, Arc<Suite>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Row {
        name,
        run: Box::new(move |suite| Box::pin(f(name, suite))),
    }
}

/// The table.
fn rows() -> Vec<Row> {
    use Expect::*;
    use When::*;
    let tok = Endpoint::Token;
    let creds = Endpoint::Credentials;
    let hang = |mut s: FaultSpec| {
        s.extra = REQUEST_DEADLINE;
        s
    };
    let mut rows = vec![
        fault_row(
            "token PUT 400",
            spec(
                tok,
                Fault::Status(400),
                Cold,
                Unavailable,
                "HTTP 400 on PUT /latest/api/token",
            ),
        ),
        fault_row(
            "token PUT 403",
            spec(
                tok,
                Fault::Status(403),
                Cold,
                Unavailable,
                "metadata token refused",
            ),
        ),
        fault_row(
            "token PUT 405",
            spec(
                tok,
                Fault::Status(405),
                Cold,
                Unavailable,
                "HTTP 405 on PUT /latest/api/token",
            ),
        ),
        fault_row(
            "token PUT 500",
            spec(
                tok,
                Fault::Status(500),
                Cold,
                Unavailable,
                "HTTP 500 on /latest/api/token",
            ),
        ),
        fault_row(
            "token PUT hang",
            hang(spec(
                tok,
                Fault::Hang,
                Cold,
                Unavailable,
                "did not answer /latest/api/token",
            )),
        ),
        fault_row(
            "token PUT reset",
            spec(tok, Fault::Reset, Cold, Unavailable, "/latest/api/token"),
        ),
        fault_row(
            "token PUT 500 at refresh (cached served)",
            spec(
                tok,
                Fault::Status(500),
                Warm,
                Cached,
                "HTTP 500 on /latest/api/token",
            ),
        ),
        fault_row(
            "token PUT hang at refresh (cached served)",
            hang(spec(
                tok,
                Fault::Hang,
                Warm,
                Cached,
                "did not answer /latest/api/token",
            )),
        ),
        fault_row(
            "GET 401 always",
            spec(
                creds,
                Fault::Status(401),
                Cold,
                Unavailable,
                "metadata token rejected (HTTP 401) after renewal",
            ),
        ),
        fault_row(
            "GET 401 always at refresh (cached served)",
            spec(
                creds,
                Fault::Status(401),
                Warm,
                Cached,
                "metadata token rejected",
            ),
        ),
        fault_row(
            "GET 403 hardened-only, token PUT failing, fallback on",
            FaultSpec {
                fallback: true,
                ..spec(
                    tok,
                    Fault::Status(500),
                    Cold,
                    Unavailable,
                    "requires a metadata token (hardened-only instance)",
                )
            },
        ),
        fault_row(
            "404 role detached (cold)",
            spec(
                Endpoint::Any,
                Fault::Status(404),
                Cold,
                Unavailable,
                "no RAM role attached",
            ),
        ),
        fault_row(
            "404 role detached (cached dropped at once)",
            spec(
                Endpoint::Any,
                Fault::Status(404),
                Warm,
                Unavailable,
                "no RAM role attached",
            ),
        ),
        fault_row(
            "429 burst",
            spec(
                Endpoint::Any,
                Fault::Status(429),
                Cold,
                Unavailable,
                "HTTP 429",
            ),
        ),
        fault_row(
            "429 burst at refresh (cached served)",
            spec(creds, Fault::Status(429), Warm, Cached, "HTTP 429"),
        ),
        fault_row(
            "503 burst",
            spec(
                Endpoint::Any,
                Fault::Status(503),
                Cold,
                Unavailable,
                "HTTP 503",
            ),
        ),
        fault_row(
            "503 burst at refresh (cached served)",
            spec(Endpoint::Any, Fault::Status(503), Warm, Cached, "HTTP 503"),
        ),
        fault_row(
            "read hang after headers",
            hang(spec(
                creds,
                Fault::HangAfterHeaders,
                Cold,
                Unavailable,
                "did not answer",
            )),
        ),
        fault_row(
            "read hang after headers at refresh (cached served)",
            hang(spec(
                creds,
                Fault::HangAfterHeaders,
                Warm,
                Cached,
                "did not answer",
            )),
        ),
        fault_row(
            "slow body (1 byte / 100 ms)",
            hang(spec(
                creds,
                Fault::SlowBody {
                    chunk_bytes: 1,
                    interval: Duration::from_millis(100),
                },
                Cold,
                Unavailable,
                "did not answer",
            )),
        ),
        fault_row(
            "role list hang",
            hang(spec(
                Endpoint::RoleList,
                Fault::Hang,
                Cold,
                Unavailable,
                "did not answer /latest/meta-data/ram/security-credentials/ within",
            )),
        ),
        fault_row(
            "malformed JSON",
            spec(
                creds,
                Fault::MalformedJson,
                Cold,
                Unavailable,
                "malformed JSON",
            ),
        ),
        fault_row(
            "malformed JSON at refresh (cached served)",
            spec(creds, Fault::MalformedJson, Warm, Cached, "malformed JSON"),
        ),
        fault_row(
            "HTML body with 200",
            spec(
                creds,
                Fault::HtmlWith200,
                Cold,
                Unavailable,
                "HTML page instead of JSON",
            ),
        ),
        fault_row(
            "HTML page to the token PUT with 200",
            spec(
                tok,
                Fault::HtmlWith200,
                Cold,
                Unavailable,
                "does not answer like the ECS metadata service: HTTP 200 with Content-Type text/html",
            ),
        ),
        fault_row(
            "HTML role list with 200",
            spec(
                Endpoint::RoleList,
                Fault::HtmlWith200,
                Cold,
                Unavailable,
                "HTML page instead of a role name",
            ),
        ),
        fault_row(
            "missing field SecurityToken",
            spec(
                creds,
                Fault::MissingField("SecurityToken".into()),
                Cold,
                Unavailable,
                "missing or null field SecurityToken",
            ),
        ),
        fault_row(
            "missing field Expiration at refresh (cached served)",
            spec(
                creds,
                Fault::MissingField("Expiration".into()),
                Warm,
                Cached,
                "missing or null field Expiration",
            ),
        ),
        fault_row(
            "empty field AccessKeySecret",
            spec(
                creds,
                Fault::EmptyField("AccessKeySecret".into()),
                Cold,
                Unavailable,
                "empty field AccessKeySecret",
            ),
        ),
        fault_row(
            "Code other than Success",
            spec(
                creds,
                Fault::CodeNotSuccess,
                Cold,
                Unavailable,
                "Code is \"Failure\"",
            ),
        ),
        fault_row(
            "Expiration in the past on arrival",
            spec(
                creds,
                Fault::ExpiredCredentials,
                Cold,
                Unavailable,
                "already expired on arrival",
            ),
        ),
        fault_row(
            "Expiration in the past at refresh (cached served)",
            spec(
                creds,
                Fault::ExpiredCredentials,
                Warm,
                Cached,
                "already expired on arrival",
            ),
        ),
        fault_row(
            "8 MiB body",
            spec(
                creds,
                Fault::OversizedBody(8 << 20),
                Cold,
                Unavailable,
                "body larger than 65536 bytes",
            ),
        ),
        fault_row(
            "8 MiB token",
            spec(
                tok,
                Fault::OversizedBody(8 << 20),
                Cold,
                Unavailable,
                "body larger than 65536 bytes",
            ),
        ),
        custom("GET 401 once: token re-acquired, one retry", row_401_once),
        custom("role replaced by another", row_role_replaced),
        custom("Expiration with fractional seconds", |n, s| {
            row_normalised(n, s, Fault::FractionalSecondsExpiration)
        }),
        custom("Expiration with a numeric offset", |n, s| {
            row_normalised(n, s, Fault::NumericOffsetExpiration)
        }),
        custom("Expiration years ahead", row_years_ahead),
        custom(
            "lifetime shorter than the refresh windows",
            row_short_lifetime,
        ),
        custom(
            "lifetime inside the expiry margin",
            row_lifetime_inside_margin,
        ),
        custom("unchanged credentials at refresh time", row_unchanged),
        custom("rotation mid-outage", row_rotation_mid_outage),
        custom(
            "outage longer than the remaining lifetime",
            row_outage_past_expiry,
        ),
        custom(
            "normal-mode instance, token PUT failing, fallback on",
            row_fallback_served,
        ),
        custom("connection refused (endpoint disabled)", row_refused),
        custom("local clock an hour ahead", |n, s| {
            row_clock_skewed(n, s, 3600)
        }),
        custom("local clock an hour behind", |n, s| {
            row_clock_skewed(n, s, -3600)
        }),
        custom("local clock stepped an hour forward", |n, s| {
            row_clock_stepped(n, s, 3600)
        }),
        custom("local clock stepped an hour back", |n, s| {
            row_clock_stepped(n, s, -3600)
        }),
    ];
    // First: its rows that wait for a refresh are among the longest, and rows start in order.
    rows.splice(0..0, sts_rows::rows());
    if is_root() {
        rows.push(custom(
            "blackholed (not on ECS: packets dropped)",
            row_blackholed,
        ));
    }
    rows
}

async fn row_401_once(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    // 6 s credentials rotating at 3 s: the agent fetches again within about 3 s.
    let run = Run::start(name, suite, Setup::new(short_lived(6, 3))).await?;
    let first = run.wait_served().await?;
    let t0 = Instant::now();
    run.emu.reset_counts();
    run.emu
        .set_fault(Endpoint::Credentials, Fault::Status(401), Times::Next(1));
    let gets = eventually(Duration::from_secs(30), || async {
        let c = run.emu.counts();
        (c.credential_gets >= 2).then_some(c)
    })
    .await
    .ok_or("no refresh within 30 s")?;
    let rotated = eventually(Duration::from_secs(30), || async {
        let r = run.agent.get("/v1/credentials").await;
        (r.status == 200 && r.json()["AccessKeyId"] != first["AccessKeyId"]).then_some(())
    })
    .await;
    let result = (|| {
        if gets.unauthorized != 1 || gets.token_puts != 1 || gets.tokens_issued != 1 {
            return Err(format!(
                "expected one 401, one new metadata token: {gets:?}"
            ));
        }
        rotated.ok_or("the retried GET's credentials were not served")?;
        if let Some(s) = run
            .samples_between(t0, Instant::now())
            .iter()
            .find(|s| s.status != 200)
        {
            return Err(format!("a client saw {s:?} around a single 401"));
        }
        Ok(())
    })();
    let health = run.health().await;
    let result = result.and_then(|()| match health["LastError"].is_null() {
        true => Ok(()),
        false => Err(format!("a retried 401 left an error: {health}")),
    });
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_role_replaced(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    let run = Run::start(name, suite, Setup::new(short_lived(16, 16))).await?;
    let first = run.wait_served().await?;
    let replaced = Instant::now();
    run.emu.attach_role("OtherRole");
    let result = async {
        let h = eventually(Duration::from_secs(30), || async {
            let h = run.health().await;
            (h["RoleName"] == "OtherRole").then_some(h)
        })
        .await
        .ok_or("the replacing role was never picked up")?;
        let served = run.wait_served().await?;
        let cur = run.emu.current_credentials().unwrap();
        if served["AccessKeyId"] == first["AccessKeyId"]
            || served["AccessKeyId"] != cur.access_key_id.as_str()
        {
            return Err(format!(
                "served {} after the role was replaced, emulator has {}",
                served["AccessKeyId"], cur.access_key_id
            ));
        }
        if h["Status"] != "Ok" {
            return Err(format!("health after the replacement: {h}"));
        }
        run.check_during(replaced, Instant::now(), Expect::Cached, "")
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_normalised(name: &'static str, suite: Arc<Suite>, fault: Fault) -> Result<(), String> {
    let mut setup = Setup::new(EmulatorConfig::default());
    setup.before_start =
        Box::new(move |emu| emu.set_fault(Endpoint::Credentials, fault.clone(), Times::Always));
    let run = Run::start(name, suite, setup).await?;
    let result = async {
        let served = run.wait_served().await?;
        let want = run.emu.current_credentials().unwrap().expiration_str();
        if served["Expiration"] != want.as_str() {
            return Err(format!(
                "served Expiration {} instead of {want}",
                served["Expiration"]
            ));
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_years_ahead(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    let mut setup = Setup::new(EmulatorConfig::default());
    setup.before_start = Box::new(|emu| {
        emu.set_fault(
            Endpoint::Credentials,
            Fault::ExpirationYearsAhead,
            Times::Always,
        )
    });
    let run = Run::start(name, suite, setup).await?;
    let result = async {
        let served = run.wait_served().await?;
        let cur = run.emu.current_credentials().unwrap();
        if served["AccessKeyId"] != cur.access_key_id.as_str() {
            return Err("other credentials served".to_owned());
        }
        // The refresh must not be scheduled years away: the service rotates every few hours.
        // (The log line may reach the reader thread after the answer: wait for it.)
        run.agent
            .wait_for_log("next_refresh_in_secs=", Duration::from_secs(30))
            .await;
        let logs = run.agent.logs();
        let next: u64 = logs
            .lines()
            .find(|l| l.contains("new credential generation"))
            .and_then(|l| l.split("next_refresh_in_secs=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no next_refresh_in_secs logged:\n{logs}"))?;
        if next > 6 * 3600 {
            return Err(format!(
                "next refresh scheduled in {next} s for an Expiration years ahead"
            ));
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_short_lifetime(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    // 4 s credentials, rotating every 2 s: shorter than every window of the agent's schedule
    // but the margin (1 s).
    let run = Run::start(name, suite, Setup::new(short_lived(4, 2))).await?;
    let result = async {
        run.wait_served().await?;
        // Until the clients have seen three generations (about 8 s on an idle machine).
        let from = Instant::now();
        let served_generations = |samples: &[Sample]| -> BTreeSet<String> {
            samples
                .iter()
                .filter(|s| s.status == 200)
                .map(|s| s.access_key_id.clone())
                .collect()
        };
        let _ = eventually(Duration::from_secs(60), || async {
            let samples = run.samples_between(from, Instant::now());
            (served_generations(&samples).len() >= 3).then_some(())
        })
        .await;
        let samples = run.samples_between(from, Instant::now());
        let generations = served_generations(&samples);
        let served = samples.iter().filter(|s| s.status == 200).count();
        if generations.len() < 3 || served * 10 < samples.len() * 8 {
            return Err(format!(
                "{} generations, {served} of {} answers served",
                generations.len(),
                samples.len()
            ));
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_lifetime_inside_margin(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    // 1 s credentials: never more than the 1 s margin left, so never servable.
    let run = Run::start(name, suite, Setup::new(short_lived(1, 1))).await?;
    let result = async {
        run.wait_health_error("already expired on arrival", Duration::from_secs(30))
            .await?;
        let from = Instant::now();
        // A window of 20 client requests (about 2 s on an idle machine).
        run.wait_answered_since(from, 20).await;
        run.check_during(
            from,
            Instant::now(),
            Expect::Unavailable,
            "already expired on arrival",
        )
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_unchanged(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    // 8 s credentials the service never rotates before Expiration: every refresh returns the
    // same generation, which the agent keeps (its deadline unchanged) until the margin; then the
    // next generation appears at Expiration and is served.
    let run = Run::start(name, suite, Setup::new(short_lived(8, 8))).await?;
    let result = async {
        let first = run.wait_served().await?;
        let rotated = eventually(Duration::from_secs(30), || async {
            let r = run.agent.get("/v1/credentials").await;
            (r.status == 200 && r.json()["AccessKeyId"] != first["AccessKeyId"]).then_some(())
        })
        .await;
        rotated.ok_or("the next generation was never served")?;
        if !run.agent.logs().contains("same credential generation") {
            return Err("no refresh returned the same generation".to_owned());
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_rotation_mid_outage(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    let run = Run::start(name, suite, Setup::new(warm_emulator())).await?;
    let result = async {
        run.wait_served().await?;
        run.emu
            .set_fault(Endpoint::Any, Fault::Status(503), Times::Always);
        let shown = run
            .wait_health_error("HTTP 503", Duration::from_secs(30))
            .await?;
        run.emu.rotate_now();
        let rotated = run.emu.current_credentials().unwrap().access_key_id;
        // Clients keep getting the cached credentials for 5 requests after the rotation.
        run.wait_answered_since(Instant::now(), 5).await;
        let cleared = Instant::now();
        run.emu.clear_faults();
        run.check_during(shown, cleared, Expect::Cached, "")?;
        run.wait_recovered(cleared, Duration::ZERO).await?;
        let served = run.wait_served().await?;
        if served["AccessKeyId"] != rotated.as_str() {
            return Err(format!(
                "served {} after the outage, not the rotated {rotated}",
                served["AccessKeyId"]
            ));
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_outage_past_expiry(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    let run = Run::start(name, suite, Setup::new(short_lived(6, 6))).await?;
    let result = async {
        let first = run.wait_served().await?;
        run.emu
            .set_fault(Endpoint::Any, Fault::Status(500), Times::Always);
        let expiration =
            SystemTime::from(parse_served_time(first["Expiration"].as_str().unwrap()).unwrap());
        // Poll closely around the margin: the last 200 is checked by the shared checker; the
        // first 503 must come no later than the margin plus one poll.
        let r = eventually(Duration::from_secs(30), || async {
            let r = run.agent.get("/v1/credentials").await;
            (r.status != 200).then(|| (r, SystemTime::now()))
        })
        .await
        .ok_or("never 503")?;
        let (r, at) = r;
        let left = expiration.duration_since(at).unwrap_or_default();
        if left > EXPIRY_MARGIN + Duration::from_millis(300) {
            return Err(format!(
                "503 with {left:?} left, earlier than the margin {EXPIRY_MARGIN:?}"
            ));
        }
        if r.status != 503
            || !r.message().contains("and refresh is failing")
            || !(r
                .message()
                .starts_with("credentials are within the expiry margin")
                || r.message().starts_with("credentials expired at"))
            || !r.message().contains("HTTP 500")
        {
            return Err(format!("at the margin: {r:?}"));
        }
        let from = Instant::now();
        // A window of 10 client requests (about 1 s on an idle machine).
        run.wait_answered_since(from, 10).await;
        let cleared = Instant::now();
        run.emu.clear_faults();
        run.check_during(from, cleared, Expect::Unavailable, "and refresh is failing")?;
        run.wait_recovered(cleared, Duration::ZERO).await?;
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_fallback_served(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    let mut setup = Setup::new(EmulatorConfig {
        hardened_only: false,
        ..EmulatorConfig::default()
    });
    setup.agent = Box::new(|c| {
        c.set("metadata", "allow_imdsv1_fallback", "true");
    });
    setup.before_start =
        Box::new(|emu| emu.set_fault(Endpoint::Token, Fault::Status(500), Times::Always));
    let run = Run::start(name, suite, setup).await?;
    let result = async {
        run.wait_served().await?;
        if !run
            .agent
            .wait_for_log(
                "falling back to GETs without a metadata token",
                Duration::from_secs(30),
            )
            .await
        {
            return Err("no fallback warning".to_owned());
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

/// Nothing listens at the endpoint: each fetch fails at once, clients get the reason fast.
async fn row_refused(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    let emu = emulator(EmulatorConfig::default()).await;
    let addr = emu.addr();
    emu.shutdown().await;
    let mut config = base_config(&format!("http://{addr}"));
    let listener = listen_on_bridge(&mut config);
    let bridge = Bridge::Loopback(listener.local_addr().unwrap());
    config.set(
        "server",
        "first_credentials_wait_ms",
        PROMPT_ROW_FIRST_WAIT_MS,
    );
    let started = Instant::now();
    let agent = TestAgent::builder(suite.bin(), &config)
        .bridge_activated(&listener)
        .start()
        .await;
    drop(listener);
    // A placeholder emulator (never reached) for the prober; replaced below.
    let placeholder = Arc::new(emulator(EmulatorConfig::default()).await);
    let mut run = Run::probe(name, suite, placeholder, agent, bridge);
    let result = async {
        // Fast by the agent's own clock: the process start on a loaded machine is not counted.
        let failed = "credential refresh failed";
        run.agent
            .wait_for_log(failed, Duration::from_secs(30))
            .await;
        match run.agent.logged_after_start(failed) {
            Some(after) if after <= Duration::from_secs(2) => {}
            after => return Err(format!("the first fetch did not fail fast: {after:?}")),
        }
        // Once failing longer than first_credentials_wait_ms, clients get the reason at once.
        run.wait_prompt_refusal(started, "Connection refused").await;
        let t = Instant::now();
        let r = run.agent.get("/v1/credentials").await;
        if t.elapsed() > PROMPT_ANSWER
            || r.status != 503
            || !r.message().contains("Connection refused")
        {
            return Err(format!("after {:?}: {r:?}", t.elapsed()));
        }
        let from = Instant::now();
        // A window of 5 client requests (about 0.5 s on an idle machine).
        run.wait_answered_since(from, 5).await;
        run.check_during(
            from,
            Instant::now(),
            Expect::Unavailable,
            "Connection refused",
        )?;
        Ok(())
    }
    .await;
    let result = match result {
        Ok(()) => {
            let emu = Emulator::start(addr, EmulatorConfig::default()).map_err(|e| e.to_string());
            match emu {
                Ok(emu) => {
                    let cleared = Instant::now();
                    run.emu = Arc::new(emu);
                    run.wait_recovered(cleared, Duration::ZERO)
                        .await
                        .map(|_| ())
                }
                Err(e) => Err(format!("cannot listen again on {addr}: {e}")),
            }
        }
        e => e,
    };
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_clock_skewed(
    name: &'static str,
    suite: Arc<Suite>,
    offset: i64,
) -> Result<(), String> {
    // Ahead: 2 h credentials look 1 h long to the agent. Behind: 6 s credentials look 1 h 6 s
    // long to it; only the service's own clock can tell it otherwise.
    let lifetime = if offset > 0 { 7200 } else { 6 };
    let mut setup = Setup::new(short_lived(lifetime, lifetime));
    setup.clock_offset_secs = Some(offset);
    let run = Run::start(name, suite, setup).await?;
    let result = async {
        let first = run.wait_served().await?;
        // Through the Expiration of short credentials and beyond (2 s past it): the checker sees
        // every answer. Long credentials: a window of 20 client requests.
        if offset > 0 {
            run.wait_answered_since(Instant::now(), 20).await;
        } else {
            let expiration = parse_served_time(first["Expiration"].as_str().unwrap())
                .ok_or_else(|| format!("no Expiration in {first}"))?;
            let left = SystemTime::from(expiration)
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            run.wait_answered_since(Instant::now() + left + Duration::from_secs(2), 1)
                .await;
        }
        let h = run.health().await;
        let skew = h["ClockSkewSeconds"]
            .as_i64()
            .ok_or_else(|| format!("no skew in {h}"))?;
        if (skew - offset).abs() > 5 {
            return Err(format!("ClockSkewSeconds {skew}, clock off by {offset}"));
        }
        let left = h["SecondsLeft"].as_u64().unwrap_or_default();
        let want = (lifetime as i64 - offset.max(0)) as u64;
        if left > want {
            return Err(format!(
                "SecondsLeft {left}, more than the {want} s really left"
            ));
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

async fn row_clock_stepped(name: &'static str, suite: Arc<Suite>, step: i64) -> Result<(), String> {
    let mut setup = Setup::new(short_lived(7200, 7200));
    setup.clock_offset_secs = Some(0);
    let run = Run::start(name, suite, setup).await?;
    let result = async {
        run.wait_served().await?;
        let before = run.health().await["SecondsLeft"]
            .as_u64()
            .unwrap_or_default();
        let offset_file = run.agent.dir.path().join("clock-offset");
        std::fs::write(&offset_file, step.to_string()).unwrap();
        let from = Instant::now();
        // A window of 20 client requests (about 2 s on an idle machine) across the step.
        run.wait_answered_since(from, 20).await;
        let after = run.health().await["SecondsLeft"]
            .as_u64()
            .unwrap_or_default();
        let waited = from.elapsed().as_secs();
        if before.abs_diff(after + waited) > 2 {
            return Err(format!(
                "SecondsLeft went from {before} to {after} across the clock step"
            ));
        }
        run.check_during(from, Instant::now(), Expect::Cached, "")
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

/// Not on ECS: the agent in a network namespace of its own, where `100.100.100.200` routes into
/// a veth pair whose far end drops every frame (no address, foreign MAC). The emulator listens
/// inside that namespace on port 80 from the start; the fault clears when the address is put
/// on the namespace's loopback.
async fn row_blackholed(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    const SETUP: &str = "set -e
ip link set lo up
ip link add fm0 type veth peer name fm1
ip addr add 10.254.0.1/30 dev fm0
ip link set fm0 up
ip link set fm1 up
ip route add 100.100.100.200/32 dev fm0
ip neigh replace 100.100.100.200 lladdr 02:00:00:00:00:02 dev fm0 nud permanent
exec \"$0\" \"$@\"";
    let dir = tempfile::Builder::new()
        .prefix("eca-fm-")
        .tempdir()
        .unwrap();
    let mut config = base_config("http://100.100.100.200");
    // The namespace has a loopback of its own: any port is free there.
    let bridge_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 17301));
    config.set("bridge", "listen", &format!("\"{bridge_addr}\""));
    config.set(
        "server",
        "first_credentials_wait_ms",
        PROMPT_ROW_FIRST_WAIT_MS,
    );
    let mut unshare = Command::new("unshare");
    unshare.args(["--net", "--", "sh", "-c", SETUP]);
    let started = Instant::now();
    let agent = TestAgent::builder(suite.bin(), &config)
        .dir(dir)
        .via(unshare)
        .start()
        .await;
    let pid = agent.pid();
    let listener = bind_in_netns(pid, "0.0.0.0:80")?;
    let emu = Arc::new(
        Emulator::from_listener(listener, EmulatorConfig::default()).map_err(|e| e.to_string())?,
    );
    let bridge = Bridge::InNetns {
        pid,
        addr: bridge_addr,
    };
    let run = Run::probe(name, suite, emu, agent, bridge);
    let result = async {
        let reason = "no connection within 500ms";
        run.agent
            .wait_for_log(reason, Duration::from_secs(30))
            .await;
        match run.agent.logged_after_start(reason) {
            Some(after) if after <= Duration::from_secs(3) => {}
            after => {
                return Err(format!(
                    "the first fetch did not fail fast ({after:?}); logs:\n{}",
                    run.agent.logs()
                ))
            }
        }
        run.wait_prompt_refusal(started, reason).await;
        let t = Instant::now();
        let r = run.agent.get("/v1/credentials").await;
        if t.elapsed() > PROMPT_ANSWER || r.status != 503 || !r.message().contains(reason) {
            return Err(format!("after {:?}: {r:?}", t.elapsed()));
        }
        let from = Instant::now();
        // A window of 5 client requests (about 0.5 s on an idle machine).
        run.wait_answered_since(from, 5).await;
        run.check_during(from, Instant::now(), Expect::Unavailable, reason)?;
        let out = Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-n",
                "ip",
                "addr",
                "add",
                "100.100.100.200/32",
                "dev",
                "lo",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("nsenter: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let cleared = Instant::now();
        // A connect already in flight still runs into the connect timeout.
        run.wait_recovered(cleared, Duration::from_millis(500))
            .await?;
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

/// Binds a TCP listener at `addr` inside the network namespace of process `pid` (from a thread
/// that enters it; the socket stays in that namespace).
fn bind_in_netns(pid: u32, addr: &'static str) -> Result<std::net::TcpListener, String> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a valid namespace descriptor affects only this thread, which
        // ends right after binding.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr} in the namespace: {e}"))
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_matrix() {
    if !is_root() {
        eprintln!("SKIPPED: fault_matrix row \"blackholed\" needs root (CI runs as root)");
    }
    raise_open_files_limit();
    let suite = Arc::new(Suite::new(agent_bin!()));
    let rows = rows();
    let total = rows.len();
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for row in rows {
        let (suite, permits) = (Arc::clone(&suite), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let t = Instant::now();
            let result = match tokio::time::timeout(ROW_BUDGET, (row.run)(suite)).await {
                Ok(r) => r,
                Err(_) => Err(format!("took longer than {ROW_BUDGET:?}")),
            };
            (row.name, t.elapsed(), result)
        });
    }
    let mut failures = Vec::new();
    let mut passed = 0;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((_, _, Ok(()))) => passed += 1,
            Ok((name, took, Err(e))) => failures.push(format!("--- {name} (after {took:?}):\n{e}")),
            Err(e) => failures.push(format!("--- a row panicked: {e}")),
        }
    }
    let expired = suite.checker().expired();
    let leaks = suite.leaks();
    let (socket, tcp) = (
        suite.answers(Transport::Socket),
        suite.answers(Transport::Tcp),
    );
    let line = format!(
        "fault matrix: {total} scenarios, {passed} passed, expired served {expired}, secrets in logs {leaks}, \
         answers over the socket {socket} and over TCP {tcp}\n"
    );
    // Straight to stdout, past the test harness's capture: CI shows this line.
    let _ = std::io::stdout().write_all(line.as_bytes());
    assert!(
        failures.is_empty() && expired == 0 && leaks == 0,
        "{} of {total} rows failed ({} credential answers checked, {:?}):\n{}",
        failures.len(),
        suite.checker().seen(),
        started.elapsed(),
        failures.join("\n")
    );
}
