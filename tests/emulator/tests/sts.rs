//! The STS emulator over HTTPS: what it accepts, every refusal it documents, its faults and
//! counts. Requests are signed by the emulator's public signer (`sts::sign`, itself checked
//! against the published vectors in its unit tests); `sdk_signers.rs` checks against
//! Alibaba Cloud's own SDKs.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::sts::{send, v2, v3, Answer, Call, Key, Wire, INSTANCE_ROLE, ROLE_ARN};
use common::PROMPT;
use ecs_metadata_emulator::sts::{
    FaultScope, Principal, StsConfig, StsEmulator, StsError, StsFault, TargetRole,
};
use ecs_metadata_emulator::{Emulator, EmulatorConfig, ManualClock, TimeSource, Times};

const USER: &str = "alice";
const USER_KEY_ID: &str = "FAKE-TEST-USER-ACCESS-KEY-ID";
const OTHER_ARN: &str = "acs:ram::123456789012:role/other-app";

struct Fixture {
    metadata: Emulator,
    sts: StsEmulator,
    clock: ManualClock,
    instance: Key,
    user: Key,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn call(&self, wire: &Wire) -> Answer {
        tokio::time::timeout(PROMPT, send(&self.sts, wire))
            .await
            .expect("STS answers promptly")
            .expect("an answer")
    }

    fn authority(&self) -> String {
        self.sts.addr().to_string()
    }
}

/// A metadata emulator, and an STS emulator sharing its keys on a manual clock at the real
/// time, with `billing-app` (the instance role and `alice` may assume it, max 7200 s) and
/// `other-app` (nobody is permitted or trusted).
fn start() -> Fixture {
    let metadata = Emulator::start_local(EmulatorConfig::default()).unwrap();
    let keys = metadata.key_store();
    keys.add_long_term(USER, USER_KEY_ID, "user-secret");
    // Whole seconds, as the time stamps signed.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs()));
    let mut billing = TargetRole::new(ROLE_ARN, INSTANCE_ROLE)
        .with_max_session_duration(Duration::from_secs(7200));
    billing.permitted.push(USER.into());
    billing.trusted.push(USER.into());
    let mut other = TargetRole::new(OTHER_ARN, "nobody");
    other.permitted.clear();
    other.trusted.clear();
    let dir = tempfile::tempdir().unwrap();
    let sts = StsEmulator::start(StsConfig {
        keys,
        roles: vec![billing, other],
        ca_file: Some(dir.path().join("ca.pem")),
        clock: Arc::new(clock.clone()),
        ..StsConfig::default()
    })
    .unwrap();
    let instance = Key::from(&metadata.current_credentials().unwrap());
    let user = Key {
        id: USER_KEY_ID.into(),
        secret: "user-secret".into(),
        token: None,
    };
    Fixture {
        metadata,
        sts,
        clock,
        instance,
        user,
        _dir: dir,
    }
}

fn assume() -> Call {
    Call::assume(ROLE_ARN, "i-bp67acfmxazb4ph0emu1.billing")
}

#[tokio::test]
async fn ca_file_and_endpoint() {
    let f = start();
    let path = f.sts.ca_file().unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), f.sts.ca_pem());
    assert!(f.sts.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(f.sts.endpoint(), format!("https://{}", f.sts.addr()));
    assert!(f.sts.addr().ip().is_loopback());
}

#[tokio::test]
async fn instance_role_credentials_assume_the_role_with_v3_and_v2_get_and_post() {
    let f = start();
    let call = assume().param("DurationSeconds", "7200");
    let mut post = call.clone();
    post.method = "POST";
    let mut form = post.clone();
    form.in_body = true;
    let wires = [
        v3(&call, &f.instance, &f.authority()),
        v3(&post, &f.instance, &f.authority()),
        v2(&call, &f.instance),
        v2(&post, &f.instance),
        v2(&form, &f.instance),
    ];
    for wire in &wires {
        let answer = f.call(wire).await;
        let issued = answer.credentials();
        assert!(issued.id.starts_with("STS."), "{}", issued.id);
        let body = &answer.body;
        assert!(body["RequestId"].as_str().is_some_and(|s| s.len() == 36));
        assert_eq!(
            body["AssumedRoleUser"]["Arn"],
            "acs:ram::123456789012:assumed-role/billing-app/i-bp67acfmxazb4ph0emu1.billing"
        );
        assert!(body["AssumedRoleUser"]["AssumedRoleId"]
            .as_str()
            .unwrap()
            .ends_with(":i-bp67acfmxazb4ph0emu1.billing"));
        // Expiration = now + DurationSeconds, `YYYY-MM-DDTHH:MM:SSZ`.
        let now = time::OffsetDateTime::from(f.clock.now());
        let expiration = body["Credentials"]["Expiration"].as_str().unwrap();
        let expires =
            time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339)
                .unwrap();
        assert_eq!(
            (expires - now.replace_nanosecond(0).unwrap()).whole_seconds(),
            7200,
            "{expiration}"
        );
        // The issued key is the target role's now.
        let stored = f.sts.keys().get(&issued.id).expect("issued key stored");
        assert_eq!(stored.principal, Principal::Role("billing-app".into()));
        assert_eq!(stored.security_token, issued.token);
    }
    let counts = f.sts.counts();
    assert_eq!((counts.accepted_v3, counts.accepted_v2), (2, 3));
    assert_eq!(counts.role(ROLE_ARN).accepted, 5);
}

#[tokio::test]
async fn long_term_user_keys_and_chained_sessions_are_accepted() {
    let f = start();
    let answer = f.call(&v2(&assume(), &f.user)).await;
    let issued = answer.credentials();
    f.call(&v3(&assume(), &f.user, &f.authority()))
        .await
        .credentials();
    // Without DurationSeconds: 3600.
    let expiration = answer.body["Credentials"]["Expiration"].as_str().unwrap();
    let expires =
        time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let now = time::OffsetDateTime::from(f.clock.now())
        .replace_nanosecond(0)
        .unwrap();
    assert_eq!((expires - now).whole_seconds(), 3600);
    // The issued credentials sign as role billing-app, which is not trusted by billing-app.
    f.call(&v3(&assume(), &issued, &f.authority()))
        .await
        .assert_refused(403, "NoPermission");
}

#[tokio::test]
async fn altered_bytes_are_signature_does_not_match() {
    let f = start();
    let auth = f.authority();
    // V2: the Signature's first character changed.
    let mut wire = v2(&assume(), &f.instance);
    let sig = wire.query_value("Signature").to_owned();
    let flipped = format!(
        "{}{}",
        if sig.starts_with('A') { 'B' } else { 'A' },
        &sig[1..]
    );
    wire.set_query("Signature", &flipped);
    f.call(&wire)
        .await
        .assert_refused(400, "SignatureDoesNotMatch");
    // V2: a signed parameter changed after signing.
    let mut wire = v2(&assume(), &f.instance);
    wire.set_query("RoleSessionName", "i-bp67acfmxazb4ph0emu1.billinh");
    f.call(&wire)
        .await
        .assert_refused(400, "SignatureDoesNotMatch");
    // V2 in a form body: signed as GET, sent as POST.
    let mut call = assume();
    call.in_body = true;
    let mut wire = v2(&call, &f.instance);
    wire.method = "POST";
    f.call(&wire)
        .await
        .assert_refused(400, "SignatureDoesNotMatch");
    // V3: a query parameter changed after signing.
    let mut wire = v3(&assume(), &f.instance, &auth);
    wire.set_query("RoleSessionName", "i-bp67acfmxazb4ph0emu1.billinh");
    f.call(&wire)
        .await
        .assert_refused(400, "SignatureDoesNotMatch");
    // V3: the signature's last hex digit changed.
    let mut wire = v3(&assume(), &f.instance, &auth);
    let value = wire
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .unwrap()
        .1
        .clone();
    let last = if value.ends_with('0') { '1' } else { '0' };
    wire.set_header(
        "authorization",
        &format!("{}{last}", &value[..value.len() - 1]),
    );
    f.call(&wire)
        .await
        .assert_refused(400, "SignatureDoesNotMatch");
    // V3: an x-acs-* header that is not signed.
    let mut wire = v3(&assume(), &f.instance, &auth);
    wire.set_header("x-acs-extra", "1");
    f.call(&wire)
        .await
        .assert_refused(400, "SignatureDoesNotMatch");
    // V3: the wrong secret.
    let wrong = Key {
        secret: "not-the-secret".into(),
        ..f.instance.clone()
    };
    f.call(&v3(&assume(), &wrong, &auth))
        .await
        .assert_refused(400, "SignatureDoesNotMatch");
    assert_eq!(f.sts.counts().code("SignatureDoesNotMatch"), 7);
    assert_eq!(f.sts.counts().role(ROLE_ARN).accepted, 0);
}

#[tokio::test]
async fn a_replayed_nonce_is_signature_nonce_used() {
    let f = start();
    for wire in [
        v2(&assume(), &f.instance),
        v3(&assume(), &f.instance, &f.authority()),
    ] {
        f.call(&wire).await.credentials();
        f.call(&wire)
            .await
            .assert_refused(400, "SignatureNonceUsed");
    }
}

#[tokio::test]
async fn a_time_stamp_over_15_minutes_off_is_expired() {
    let f = start();
    let now = time::OffsetDateTime::from(f.clock.now());
    for (offset, accepted) in [(-900, true), (900, true), (-901, false), (901, false)] {
        let mut call = assume();
        call.timestamp = Some(now + time::Duration::seconds(offset));
        for wire in [
            v2(&call, &f.instance),
            v3(&call, &f.instance, &f.authority()),
        ] {
            let answer = f.call(&wire).await;
            if accepted {
                answer.credentials();
            } else {
                answer.assert_refused(400, "InvalidTimeStamp.Expired");
            }
        }
    }
}

#[tokio::test]
async fn security_token_missing_mismatched_or_expired() {
    let f = start();
    let auth = f.authority();
    let bare = Key {
        token: None,
        ..f.instance.clone()
    };
    f.call(&v2(&assume(), &bare))
        .await
        .assert_refused(400, "MissingSecurityToken");
    f.call(&v3(&assume(), &bare, &auth))
        .await
        .assert_refused(400, "MissingSecurityToken");
    // The next generation's token with this generation's AccessKeyId.
    assert!(f.metadata.rotate_now());
    let next = f.metadata.current_credentials().unwrap();
    let crossed = Key {
        token: Some(next.security_token.clone()),
        ..f.instance.clone()
    };
    f.call(&v3(&assume(), &crossed, &auth))
        .await
        .assert_refused(400, "InvalidSecurityToken.MismatchWithAccessKey");
    // A long-term key does not need one.
    f.call(&v2(&assume(), &f.user)).await.credentials();
    // Past the instance credentials' Expiration (6 h), on the STS emulator's clock.
    f.clock.advance(Duration::from_secs(6 * 3600 + 1));
    let mut call = assume();
    call.timestamp = Some(time::OffsetDateTime::from(f.clock.now()));
    f.call(&v3(&call, &f.instance, &auth))
        .await
        .assert_refused(400, "InvalidSecurityToken.Expired");
}

#[tokio::test]
async fn an_unknown_access_key_is_not_found() {
    let f = start();
    let unknown = Key {
        id: "FAKE-UNKNOWN-ACCESS-KEY-ID".into(),
        secret: "x".into(),
        token: None,
    };
    f.call(&v2(&assume(), &unknown))
        .await
        .assert_refused(404, "InvalidAccessKeyId.NotFound");
    f.call(&v3(&assume(), &unknown, &f.authority()))
        .await
        .assert_refused(404, "InvalidAccessKeyId.NotFound");
}

#[tokio::test]
async fn parameter_constraints() {
    let f = start();
    let policy_of = |len: usize| {
        let head = r#"{"Version":"1","Statement":[],"Pad":""#;
        let tail = r#""}"#;
        format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
    };
    let rows: Vec<(Call, Option<(u16, &str)>)> = vec![
        (assume().without("RoleArn"), Some((400, "MissingParameter"))),
        (
            assume().without("RoleSessionName"),
            Some((400, "MissingParameter")),
        ),
        (
            assume().param("RoleArn", "acs:ram::12345:user/x"),
            Some((400, "InvalidParameter.RoleArn")),
        ),
        (
            assume().param("RoleArn", "billing-app"),
            Some((400, "InvalidParameter.RoleArn")),
        ),
        (
            assume().param("RoleSessionName", "a"),
            Some((400, "InvalidParameter.RoleSessionName")),
        ),
        (
            assume().param("RoleSessionName", &"a".repeat(65)),
            Some((400, "InvalidParameter.RoleSessionName")),
        ),
        (
            assume().param("RoleSessionName", "a b"),
            Some((400, "InvalidParameter.RoleSessionName")),
        ),
        (
            assume().param("RoleSessionName", "a=b"),
            Some((400, "InvalidParameter.RoleSessionName")),
        ),
        (assume().param("RoleSessionName", &"a".repeat(64)), None),
        (assume().param("RoleSessionName", "ab"), None),
        (
            assume().param("DurationSeconds", "899"),
            Some((400, "InvalidParameter.DurationSeconds")),
        ),
        (
            assume().param("DurationSeconds", "7201"),
            Some((400, "InvalidParameter.DurationSeconds")),
        ),
        (
            assume().param("DurationSeconds", "soon"),
            Some((400, "InvalidParameter.DurationSeconds")),
        ),
        (assume().param("DurationSeconds", "900"), None),
        (assume().param("DurationSeconds", "7200"), None),
        (
            assume().param("Policy", &policy_of(2049)),
            Some((400, "InvalidParameter.PolicySize")),
        ),
        (
            assume().param("Policy", ""),
            Some((400, "InvalidParameter.PolicySize")),
        ),
        (
            assume().param("Policy", "not json"),
            Some((400, "InvalidParameter.PolicyGrammar")),
        ),
        (assume().param("Policy", &policy_of(2048)), None),
        (
            assume().param("ExternalId", "x"),
            Some((400, "InvalidParameter.ExternalId")),
        ),
        (assume().param("ExternalId", "abc-123"), None),
    ];
    for (call, want) in rows {
        for wire in [
            v2(&call, &f.instance),
            v3(&call, &f.instance, &f.authority()),
        ] {
            let answer = f.call(&wire).await;
            match want {
                Some((status, code)) => answer.assert_refused(status, code),
                None => drop(answer.credentials()),
            }
        }
    }
    let mut wrong_action = assume();
    wrong_action.action = "GetCallerIdentity";
    f.call(&v3(&wrong_action, &f.instance, &f.authority()))
        .await
        .assert_refused(404, "InvalidAction.NotFound");
    let mut wrong_version = assume();
    wrong_version.version = "2014-05-26";
    f.call(&v2(&wrong_version, &f.instance))
        .await
        .assert_refused(400, "InvalidVersion");
}

#[tokio::test]
async fn no_permission_and_missing_roles() {
    let f = start();
    let other = Call::assume(OTHER_ARN, "session");
    let answer = f.call(&v3(&other, &f.instance, &f.authority())).await;
    answer.assert_refused(403, "NoPermission");
    let message = answer.body["Message"].as_str().unwrap();
    assert!(
        message.contains("sts:AssumeRole permission on acs:ram::123456789012:role/other-app"),
        "{message}"
    );
    assert!(message.contains("role/EcsRamRoleDemo"), "{message}");

    // Permitted but not trusted: a role of its own.
    let metadata_keys = f.metadata.key_store();
    let mut half = TargetRole::new(OTHER_ARN, INSTANCE_ROLE);
    half.trusted.clear();
    let sts = StsEmulator::start(StsConfig {
        keys: metadata_keys,
        roles: vec![half],
        ..StsConfig::default()
    })
    .unwrap();
    let answer = send(&sts, &v2(&other, &f.instance)).await.unwrap();
    answer.assert_refused(403, "NoPermission");
    let message = answer.body["Message"].as_str().unwrap();
    assert!(message.contains("trust policy of acs:ram::123456789012:role/other-app does not name role/EcsRamRoleDemo"), "{message}");

    let missing = Call::assume("acs:ram::123456789012:role/gone", "session");
    f.call(&v2(&missing, &f.instance))
        .await
        .assert_refused(404, "EntityNotExist.Role");
}

#[tokio::test]
async fn an_unsigned_request_is_incomplete() {
    let f = start();
    let wire = Wire {
        method: "GET",
        query: vec![("Action".into(), "AssumeRole".into())],
        headers: Vec::new(),
        body: Vec::new(),
    };
    f.call(&wire)
        .await
        .assert_refused(400, "IncompleteSignature");
    let mut wire = v3(&assume(), &f.instance, &f.authority());
    wire.set_header("authorization", "ACS3-HMAC-SHA256 Signature=abc");
    f.call(&wire)
        .await
        .assert_refused(400, "IncompleteSignature");
}

#[tokio::test]
async fn injected_errors_per_role_and_for_all() {
    let f = start();
    let role = FaultScope::Role(ROLE_ARN.into());
    f.sts
        .add_fault(role.clone(), StsFault::InternalError, Times::Next(1));
    f.sts
        .add_fault(role.clone(), StsFault::Throttling, Times::Next(1));
    f.sts.add_fault(
        role.clone(),
        StsFault::Error(StsError::of("EntityNotExist.Role")),
        Times::Next(1),
    );
    // Another role is untouched by role-scoped faults (refused for its own reason).
    f.call(&v2(&Call::assume(OTHER_ARN, "s1"), &f.instance))
        .await
        .assert_refused(403, "NoPermission");
    f.call(&v2(&assume(), &f.instance))
        .await
        .assert_refused(500, "InternalError");
    let throttled = f.call(&v2(&assume(), &f.instance)).await;
    throttled.assert_refused(400, "Throttling.User");
    assert_eq!(
        throttled.body["Message"],
        "Request was denied due to user flow control."
    );
    f.call(&v2(&assume(), &f.instance))
        .await
        .assert_refused(404, "EntityNotExist.Role");
    f.call(&v2(&assume(), &f.instance)).await.credentials();

    f.sts
        .add_fault(FaultScope::All, StsFault::InternalError, Times::Always);
    for call in [assume(), Call::assume(OTHER_ARN, "s2")] {
        f.call(&v3(&call, &f.instance, &f.authority()))
            .await
            .assert_refused(500, "InternalError");
    }
    f.sts.clear_faults();
    f.call(&v2(&assume(), &f.instance)).await.credentials();

    let counts = f.sts.counts();
    assert_eq!(counts.role(ROLE_ARN).calls, 6);
    assert_eq!(counts.role(ROLE_ARN).accepted, 2);
    assert_eq!(counts.role(ROLE_ARN).refused, 4);
    assert_eq!(counts.role(OTHER_ARN).refused, 2);
    assert_eq!(counts.code("InternalError"), 3);
    f.sts.reset_counts();
    assert_eq!(f.sts.counts(), Default::default());
}

#[tokio::test]
async fn credentials_expiring_on_arrival() {
    let f = start();
    f.sts.add_fault(
        FaultScope::Role(ROLE_ARN.into()),
        StsFault::ExpiredOnArrival,
        Times::Next(1),
    );
    let answer = f.call(&v3(&assume(), &f.instance, &f.authority())).await;
    let issued = answer.credentials();
    let now = time::OffsetDateTime::from(f.clock.now())
        .replace_nanosecond(0)
        .unwrap();
    assert_eq!(
        answer.body["Credentials"]["Expiration"],
        ecs_metadata_emulator::format_utc(now)
    );
    // Already expired for STS too.
    let mut call = Call::assume(ROLE_ARN, "chained");
    call.timestamp = Some(now);
    f.call(&v3(&call, &issued, &f.authority()))
        .await
        .assert_refused(400, "InvalidSecurityToken.Expired");
    // Used up: the next answer is normal.
    let next = f.call(&v3(&assume(), &f.instance, &f.authority())).await;
    assert_ne!(
        next.body["Credentials"]["Expiration"],
        ecs_metadata_emulator::format_utc(now)
    );
}

#[tokio::test]
async fn a_hang_accepts_and_never_answers() {
    let f = start();
    f.sts.add_fault(
        FaultScope::Role(ROLE_ARN.into()),
        StsFault::Hang,
        Times::Next(1),
    );
    let wire = v2(&assume(), &f.instance);
    let sts = &f.sts;
    let mut pending = tokio::spawn(send(sts, &wire));
    let counts = tokio::select! {
        answer = &mut pending => panic!("a hung request was answered: {answer:?}"),
        counts = tokio::time::timeout(PROMPT, sts.wait_for(|c| c.role(ROLE_ARN).hung == 1)) => {
            counts.expect("the request reaches the emulator")
        }
    };
    assert_eq!(counts.role(ROLE_ARN).calls, 1);
    // Other requests are served meanwhile.
    f.call(&v2(&assume(), &f.instance)).await.credentials();
    // The hung one ends only when the emulator goes away, without an answer.
    let Fixture { sts, .. } = f;
    sts.shutdown().await;
    let ended = tokio::time::timeout(PROMPT, pending)
        .await
        .expect("ends at shutdown")
        .expect("the request task does not panic");
    assert!(ended.is_err(), "{ended:?}");
}

#[tokio::test]
async fn wait_for_counts() {
    let f = start();
    let waiter = f.sts.wait_for(|c| c.role(ROLE_ARN).accepted >= 2);
    let calls = async {
        f.call(&v2(&assume(), &f.instance)).await.credentials();
        f.call(&v2(&assume(), &f.user)).await.credentials();
    };
    let (counts, ()) = tokio::time::timeout(PROMPT, async { tokio::join!(waiter, calls) })
        .await
        .expect("both calls counted");
    assert_eq!(counts.role(ROLE_ARN).accepted, 2);
    assert_eq!(counts.total.calls, 2);
}
