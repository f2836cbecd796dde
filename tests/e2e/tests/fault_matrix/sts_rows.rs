//! STS rows: the probers' uid is matched by a `[[profile]]`, so every answer they get is the
//! profile's assumed role (or a `503` naming why not), through the same checks as every other
//! row, plus: every `200` carries credentials the STS emulator issued for the profile's role
//! (never the instance role's: a profile never falls back), and no secret the metadata or STS
//! emulator issued appears in a log line or an answer's `Message`.
//!
//! - every STS refusal the agent explains in words (`NoPermission` for either cause,
//!   `EntityNotExist.Role`, `InvalidParameter.*`, `InvalidTimeStamp.Expired`,
//!   `SignatureDoesNotMatch`): a `503` naming it, from cold; those a row can undo (the clock,
//!   the key) recover within the backoff bound;
//! - `InvalidParameter.DurationSeconds`: retried once with 3600, a warning naming the profile
//!   and `MaxSessionDuration`, credentials served;
//! - 5xx, throttling, hangs, credentials expiring on arrival: cached credentials served at a
//!   refresh, a `503` naming the fault from cold, recovery within the backoff bound (plus one
//!   STS request deadline for a hang);
//! - the instance role detached while the profile is active: the profile serves what it holds
//!   until the margin, never refreshes, then answers `503` naming the instance role; recovery
//!   once the role is back.

use ecs_credential_agent_e2e::agent::BACKOFF_MAX;
use ecs_credential_agent_e2e::matrix::sts::{
    StsSetup, PROFILE, ROLE_ARN, STS_REQUEST_DEADLINE, WARM_SESSION,
};
use ecs_metadata_emulator::config::DEFAULT_ROLE_NAME;
use ecs_metadata_emulator::sts::{AccessKey, FaultScope, StsError, StsFault, TargetRole};

use super::*;

/// How a refusal row builds its STS side.
type MakeSetup = fn() -> StsSetup;

/// A row where STS refuses every `AssumeRole` from the start.
#[derive(Clone, Copy)]
struct Refusal {
    setup: MakeSetup,
    /// The `Code` the emulator must have answered.
    code: &'static str,
    /// Texts every `503` `Message` (and health's `LastError`, the first) must contain.
    reasons: &'static [&'static str],
    /// Undoes the cause, when a row can; the row then checks recovery.
    undo: Option<fn(&Run)>,
}

/// A row where STS misbehaves (a [`StsFault`] for the profile's role), cold or at a refresh.
#[derive(Clone)]
struct Misbehaviour {
    fault: StsFault,
    when: When,
    /// Text the 503 `Message` and health's `LastError` contain.
    reason: &'static str,
    /// Extra recovery time allowed (a request held open runs into its deadline); warm rows'
    /// sessions are longer by as much.
    extra: Duration,
}

pub(super) fn rows() -> Vec<Row> {
    use When::*;
    let refusal = |name: &'static str, r: Refusal| custom(name, move |n, s| run_refusal(n, s, r));
    let misbehaving = |name: &'static str, fault: StsFault, when, reason, extra| {
        let m = Misbehaviour {
            fault,
            when,
            reason,
            extra,
        };
        custom(name, move |n, s| run_misbehaviour(n, s, m.clone()))
    };
    let no_permission = &[
        "NoPermission",
        "do not grant sts:AssumeRole",
        "trust policy does not name the instance role",
    ];
    let hang = STS_REQUEST_DEADLINE;
    vec![
        refusal(
            "STS NoPermission: the instance role lacks sts:AssumeRole",
            Refusal {
                setup: || StsSetup {
                    roles: vec![TargetRole {
                        permitted: Vec::new(),
                        ..TargetRole::new(ROLE_ARN, DEFAULT_ROLE_NAME)
                    }],
                    ..StsSetup::default()
                },
                code: "NoPermission",
                reasons: no_permission,
                undo: None,
            },
        ),
        refusal(
            "STS NoPermission: the trust policy does not name the instance role",
            Refusal {
                setup: || StsSetup {
                    roles: vec![TargetRole {
                        trusted: vec!["SomeOtherRole".to_owned()],
                        ..TargetRole::new(ROLE_ARN, DEFAULT_ROLE_NAME)
                    }],
                    ..StsSetup::default()
                },
                code: "NoPermission",
                reasons: no_permission,
                undo: None,
            },
        ),
        refusal(
            "STS EntityNotExist.Role",
            Refusal {
                setup: || StsSetup {
                    role_arn: "acs:ram::123456789012:role/no-such-role",
                    ..StsSetup::default()
                },
                code: "EntityNotExist.Role",
                reasons: &["EntityNotExist.Role", "role/no-such-role"],
                undo: None,
            },
        ),
        refusal(
            "STS InvalidParameter.PolicyGrammar (session policy not an object)",
            Refusal {
                setup: || StsSetup {
                    policy: Some("[]".to_owned()),
                    ..StsSetup::default()
                },
                code: "InvalidParameter.PolicyGrammar",
                reasons: &["InvalidParameter.PolicyGrammar", "session policy"],
                undo: None,
            },
        ),
        refusal(
            "STS InvalidParameter.RoleSessionName",
            Refusal {
                setup: || StsSetup {
                    before_start: Box::new(|sts, _| {
                        sts.add_fault(
                            FaultScope::All,
                            StsFault::Error(StsError::of("InvalidParameter.RoleSessionName")),
                            Times::Always,
                        )
                    }),
                    ..StsSetup::default()
                },
                code: "InvalidParameter.RoleSessionName",
                reasons: &["InvalidParameter.RoleSessionName"],
                undo: Some(|run| run.sts().unwrap().emu.clear_faults()),
            },
        ),
        refusal(
            "STS InvalidTimeStamp.Expired (clocks an hour apart)",
            Refusal {
                setup: || StsSetup {
                    clock_behind: Duration::from_secs(3600),
                    ..StsSetup::default()
                },
                code: "InvalidTimeStamp.Expired",
                reasons: &["InvalidTimeStamp.Expired", "clock"],
                undo: Some(|run| run.sts().unwrap().clock.set_behind(Duration::ZERO)),
            },
        ),
        refusal(
            "STS SignatureDoesNotMatch",
            Refusal {
                setup: || StsSetup {
                    before_start: Box::new(|_, metadata| set_instance_secret(metadata, true)),
                    ..StsSetup::default()
                },
                code: "SignatureDoesNotMatch",
                reasons: &["SignatureDoesNotMatch"],
                undo: Some(|run| set_instance_secret(&run.emu, false)),
            },
        ),
        custom(
            "STS InvalidParameter.DurationSeconds: retried with 3600",
            row_duration_retried,
        ),
        misbehaving(
            "STS 500 InternalError",
            StsFault::InternalError,
            Cold,
            "InternalError",
            Duration::ZERO,
        ),
        misbehaving(
            "STS 500 InternalError at refresh (cached served)",
            StsFault::InternalError,
            Warm,
            "InternalError",
            Duration::ZERO,
        ),
        misbehaving(
            "STS Throttling.User",
            StsFault::Throttling,
            Cold,
            "Throttling.User",
            Duration::ZERO,
        ),
        misbehaving(
            "STS Throttling.User at refresh (cached served)",
            StsFault::Throttling,
            Warm,
            "Throttling.User",
            Duration::ZERO,
        ),
        misbehaving(
            "STS hang",
            StsFault::Hang,
            Cold,
            "did not answer within",
            hang,
        ),
        misbehaving(
            "STS hang at refresh (cached served)",
            StsFault::Hang,
            Warm,
            "did not answer within",
            hang,
        ),
        misbehaving(
            "STS credentials expiring on arrival",
            StsFault::ExpiredOnArrival,
            Cold,
            "expired on arrival",
            Duration::ZERO,
        ),
        misbehaving(
            "STS credentials expiring on arrival at refresh (cached served)",
            StsFault::ExpiredOnArrival,
            Warm,
            "expired on arrival",
            Duration::ZERO,
        ),
        custom(
            "STS profile active, instance role detached",
            row_instance_role_detached,
        ),
    ]
}

/// Replaces (`wrong`) or restores the AccessKeySecret STS holds for the instance role's current
/// AccessKeyId: the agent's signature, made with the real secret, then does not match.
fn set_instance_secret(metadata: &Emulator, wrong: bool) {
    let current = metadata
        .current_credentials()
        .expect("the instance role is attached");
    let keys = metadata.key_store();
    let key = keys
        .get(&current.access_key_id)
        .expect("the metadata emulator registered its credentials");
    let access_key_secret = match wrong {
        true => format!("not-{}", current.access_key_secret),
        false => current.access_key_secret.clone(),
    };
    keys.insert(
        &current.access_key_id,
        AccessKey {
            access_key_secret,
            ..key
        },
    );
}

/// From cold: STS answers `r.code`, clients get a `503` naming every reason, and, when the row
/// can undo the cause, recovery within the backoff bound.
async fn run_refusal(name: &'static str, suite: Arc<Suite>, r: Refusal) -> Result<(), String> {
    let run = Run::start(
        name,
        suite,
        Setup::with_sts(EmulatorConfig::default(), (r.setup)()),
    )
    .await?;
    let result = async {
        let sts = run.sts()?;
        sts.wait_for(&format!("a {} refusal", r.code), |c| c.code(r.code) >= 1)
            .await?;
        let shown = run
            .wait_health_error(r.reasons[0], Duration::from_secs(30))
            .await?;
        // A window of 10 client requests (about 1 s on an idle machine).
        run.wait_answered_since(shown, 10).await;
        let to = Instant::now();
        for reason in r.reasons {
            run.check_during(shown, to, Expect::Unavailable, reason)?;
        }
        if let Some(undo) = r.undo {
            let before = sts.role().accepted;
            let cleared = Instant::now();
            undo(&run);
            run.wait_recovered(cleared, Duration::ZERO).await?;
            sts.wait_for("an accepted AssumeRole after the fix", |c| {
                c.role(sts.role_arn).accepted > before
            })
            .await?;
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

/// Inject, wait for STS to see it, observe the clients, clear, recover.
async fn run_misbehaviour(
    name: &'static str,
    suite: Arc<Suite>,
    m: Misbehaviour,
) -> Result<(), String> {
    let mut setup = match m.when {
        When::Cold => StsSetup::default(),
        // A hang shows only after the request deadline: sessions longer by as much keep the
        // same room between the error and the margin.
        When::Warm => StsSetup::sessions_of(WARM_SESSION + m.extra),
    };
    let scope = FaultScope::Role(setup.role_arn.to_owned());
    if m.when == When::Cold {
        let (scope, fault) = (scope.clone(), m.fault.clone());
        setup.before_start =
            Box::new(move |sts, _| sts.add_fault(scope.clone(), fault.clone(), Times::Always));
    }
    let run = Run::start(
        name,
        suite,
        Setup::with_sts(EmulatorConfig::default(), setup),
    )
    .await?;
    let result = async {
        let sts = run.sts()?;
        let before = match m.when {
            When::Cold => Default::default(),
            When::Warm => {
                run.wait_served().await?;
                let before = sts.role();
                sts.emu.add_fault(scope, m.fault.clone(), Times::Always);
                before
            }
        };
        let arn = sts.role_arn;
        sts.wait_for(&format!("{:?} answered", m.fault), |c| {
            let now = c.role(arn);
            match m.fault {
                StsFault::Hang => now.hung > before.hung,
                StsFault::ExpiredOnArrival => now.accepted > before.accepted,
                _ => now.refused > before.refused,
            }
        })
        .await?;
        let shown = run
            .wait_health_error(m.reason, Duration::from_secs(30))
            .await?;
        // A fault window of 15 client requests (about 1.5 s on an idle machine).
        run.wait_answered_since(shown, 15).await;
        let cleared = Instant::now();
        sts.emu.clear_faults();
        run.wait_recovered(cleared, m.extra).await?;
        run.settle(cleared).await;
        let expect = match m.when {
            When::Cold => Expect::Unavailable,
            When::Warm => Expect::Cached,
        };
        run.check_during(shown, cleared, expect, m.reason)
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

/// A profile asking for more than the role's `MaxSessionDuration` (7200 s of 3600 s): STS
/// refuses, the agent asks again with 3600 within the same fetch, warns naming the profile and
/// `MaxSessionDuration`, and serves the 3600 s session.
async fn row_duration_retried(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    let setup = StsSetup {
        duration_secs: 7200,
        ..StsSetup::default()
    };
    let run = Run::start(
        name,
        suite,
        Setup::with_sts(EmulatorConfig::default(), setup),
    )
    .await?;
    let result = async {
        let sts = run.sts()?;
        let served = run.wait_served().await?;
        let arn = sts.role_arn;
        let counts = sts
            .wait_for("a refused and an accepted AssumeRole", |c| {
                c.code("InvalidParameter.DurationSeconds") >= 1 && c.role(arn).accepted >= 1
            })
            .await?;
        if counts.code("InvalidParameter.DurationSeconds") != 1 || counts.role(arn).accepted != 1 {
            return Err(format!(
                "expected one refusal and one retry for one fetch: {counts:?}"
            ));
        }
        let text = served["Expiration"].as_str().unwrap_or_default();
        let expiration = parse_served_time(text).ok_or_else(|| format!("served {served}"))?;
        let left = SystemTime::from(expiration)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if !(Duration::from_secs(3000)..=Duration::from_secs(3601)).contains(&left) {
            return Err(format!("served a session with {left:?} left, not 3600 s"));
        }
        if !run
            .agent
            .wait_for_log("MaxSessionDuration", Duration::from_secs(30))
            .await
        {
            return Err(format!(
                "no warning naming MaxSessionDuration; logs:\n{}",
                run.agent.logs()
            ));
        }
        let logs = run.agent.logs();
        let warning = logs.lines().find(|l| l.contains("MaxSessionDuration"));
        match warning {
            Some(l) if l.contains("WARN") && l.contains(PROFILE) => {}
            other => return Err(format!("the warning names no profile: {other:?}")),
        }
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}

/// The instance role detached while the profile holds valid credentials: once the instance
/// role's refresher has seen the detach (its credentials are dropped at once), the profile keeps
/// serving what it holds until its margin, never refreshes (no `AssumeRole` is accepted), then
/// answers `503` naming the instance role; it never serves anything else. Attached again, it
/// recovers.
async fn row_instance_role_detached(name: &'static str, suite: Arc<Suite>) -> Result<(), String> {
    // Instance role credentials of 6 s rotating at 3 s: the instance role's refresher sees the
    // detach within seconds (with 6 h credentials it would look at the next refresh, hours
    // later, and sign with what it holds meanwhile, which STS still accepts). Sessions of 12 s:
    // the profile's refresh (at about 6 s) comes after that, or the one after it does.
    let setup = Setup::with_sts(
        short_lived(6, 3),
        StsSetup::sessions_of(Duration::from_secs(12)),
    );
    let run = Run::start(name, suite, setup).await?;
    let result = async {
        let sts = run.sts()?;
        run.wait_served().await?;
        let detached = Instant::now();
        run.emu.detach_role();
        if !run
            .agent
            .wait_for_log("no RAM role attached", Duration::from_secs(30))
            .await
        {
            return Err("the instance role's refresher never saw the detach".to_owned());
        }
        let accepted = sts.role().accepted;
        // What the profile holds now, and serves until its margin.
        let held = run.wait_served().await?;
        let expiration = parse_served_time(held["Expiration"].as_str().unwrap_or_default())
            .map(SystemTime::from)
            .ok_or_else(|| format!("served {held}"))?;
        let reason = "instance role has no usable credentials";
        let shown = run
            .wait_health_error(reason, Duration::from_secs(30))
            .await?;
        // Still serving what it holds: no 503 before the margin.
        run.settle(shown).await;
        run.check_during(detached, shown, Expect::Cached, "")?;
        let (r, at) = eventually(Duration::from_secs(60), || async {
            let r = run.agent.get("/v1/credentials").await;
            (r.status != 200).then(|| (r, SystemTime::now()))
        })
        .await
        .ok_or("the profile never stopped serving")?;
        let left = expiration.duration_since(at).unwrap_or_default();
        if left > EXPIRY_MARGIN + Duration::from_millis(300) {
            return Err(format!(
                "503 with {left:?} left, earlier than the margin {EXPIRY_MARGIN:?}: {r:?}"
            ));
        }
        let from = Instant::now();
        // A window of 10 client requests (about 1 s on an idle machine).
        run.wait_answered_since(from, 10).await;
        let cleared = Instant::now();
        run.check_during(from, cleared, Expect::Unavailable, reason)?;
        let now = sts.role().accepted;
        if now != accepted {
            return Err(format!(
                "{} AssumeRole accepted after the instance role's credentials were dropped",
                now - accepted
            ));
        }
        run.emu.attach_role(DEFAULT_ROLE_NAME);
        // The instance role recovers first, then the profile at its next attempt.
        run.wait_recovered(cleared, BACKOFF_MAX + Duration::from_secs(1))
            .await?;
        Ok(())
    }
    .await;
    let finished = run.finish().await;
    combine(result, finished)
}
