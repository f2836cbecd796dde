//! [`AssumedRole::fetch`] end to end in-process: the instance role's state, a loopback
//! metadata service, and a loopback HTTPS STS trusted through `[sts] ca_file`. Real sockets,
//! so real time; every wait is on an event with a generous deadline.

mod emulator;
mod servers;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use self::servers::{Metadata, RefusingProxy, Seen, SilentSts, Sts, HANG};
use super::*;
use crate::credentials::{RefreshPolicy, Refresher, State};
use crate::test_logs::{capture_logs, logs};
use crate::test_support::{issued, wall, SECRET, TOKEN};
use crate::time::TimeSource;

const ARN: &str = "acs:ram::123456789012:role/billing-app";
const INSTANCE_KEY: &str = "STS.instance-key";
const ASSUMED_SECRET: &str = "MARKER-ASSUMED-SECRET";
const ASSUMED_TOKEN: &str = "MARKER-ASSUMED-TOKEN";
/// A session policy with a space, `*` and `+`: the encoding rules must hold for it to verify.
const POLICY: &str = r#"{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "oss:Get*", "Resource": "acs:oss:*:*:a+b"}]}"#;

/// The wall clock at [`wall`] (2023-11-14T22:13:20Z).
#[derive(Debug)]
struct FixedClock;

impl TimeSource for FixedClock {
    fn now(&self) -> SystemTime {
        wall()
    }
}

fn spec(duration_secs: u32, policy: Option<&str>) -> RoleSpec {
    RoleSpec {
        profile: "billing".to_owned(),
        role_arn: ARN.to_owned(),
        policy: policy.map(str::to_owned),
        duration_secs,
    }
}

/// `AssumeRole`'s documented answer, valid for `secs` after [`wall`].
fn granted(secs: u64) -> (u16, String) {
    let expiration = crate::credentials::format_utc((wall() + Duration::from_secs(secs)).into());
    let body = serde_json::json!({
        "RequestId": "6894B13B-6D71-4EF5-88FA-F32781734A7F",
        "AssumedRoleUser": {"Arn": "acs:ram::123456789012:role/billing-app/i-bp67acfmxazb4ph3xxxx.billing",
                            "AssumedRoleId": "344:i-bp67acfmxazb4ph3xxxx.billing"},
        "Credentials": {"AccessKeyId": "STS.assumed-key", "AccessKeySecret": ASSUMED_SECRET,
                        "SecurityToken": ASSUMED_TOKEN, "Expiration": expiration},
    });
    (200, body.to_string())
}

fn refused(status: u16, code: &str) -> (u16, String) {
    let body = serde_json::json!({
        "RequestId": "6894B13B-6D71-4EF5-88FA-F32781734A7F", "HostId": "sts.aliyuncs.com",
        "Code": code, "Message": format!("echo {SECRET} {TOKEN}"),
    });
    (status, body.to_string())
}

/// The instance role's state: one servable generation (secret [`SECRET`], token [`TOKEN`]),
/// or none.
fn instance_state(servable: bool) -> (watch::Sender<State>, watch::Receiver<State>) {
    let mut state = State::default();
    if servable {
        let hours6 = Duration::from_secs(6 * 3600);
        state.credentials = Some(Arc::new(issued(
            1,
            INSTANCE_KEY,
            hours6,
            Duration::from_secs(60),
        )));
    }
    watch::channel(state)
}

fn metadata_client(metadata: &Metadata) -> Arc<metadata::Client> {
    let config = metadata::config::Config {
        endpoint: metadata.endpoint().parse().unwrap(),
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    Arc::new(metadata::Client::new(&config, Arc::new(FixedClock)).unwrap())
}

fn sts_config(sts: &Sts) -> config::Config {
    config::Config {
        endpoint: Some(sts.endpoint().parse().unwrap()),
        ca_file: Some(sts.ca_file.clone()),
        ..Default::default()
    }
}

struct Setup {
    role: AssumedRole,
    sts: Sts,
    metadata: Metadata,
    _instance: watch::Sender<State>,
}

async fn setup(
    script: Vec<(u16, String)>,
    servable: bool,
    fail_region: usize,
    spec: RoleSpec,
) -> Setup {
    let sts = Sts::start(script).await;
    let metadata = Metadata::start(fail_region).await;
    let (tx, rx) = instance_state(servable);
    let assumer = Assumer::new(
        &sts_config(&sts),
        metadata_client(&metadata),
        rx,
        Arc::new(FixedClock),
    )
    .unwrap();
    Setup {
        role: AssumedRole::new(assumer, spec),
        sts,
        metadata,
        _instance: tx,
    }
}

/// Recomputes the request's signature from what the server received (its raw query, the
/// headers `Authorization` lists, the empty body) with the instance role's secret.
fn check_signature(seen: &Seen) {
    let authorization = seen.header("authorization").expect("Authorization sent");
    let rest = authorization
        .strip_prefix("ACS3-HMAC-SHA256 ")
        .unwrap_or_else(|| panic!("{authorization}"));
    let part = |name: &str| {
        rest.split(',')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {authorization}"))
            .to_owned()
    };
    assert_eq!(part("Credential"), INSTANCE_KEY);
    let signed = part("SignedHeaders");
    for needed in [
        "host",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-date",
        "x-acs-security-token",
        "x-acs-signature-nonce",
        "x-acs-version",
    ] {
        assert!(
            signed.split(';').any(|h| h == needed),
            "{needed} not signed: {signed}"
        );
    }
    let headers: String = signed
        .split(';')
        .map(|h| {
            format!(
                "{h}:{}\n",
                seen.header(h)
                    .unwrap_or_else(|| panic!("{h} not sent"))
                    .trim()
            )
        })
        .collect();
    let empty = hex::encode(Sha256::digest(b""));
    assert_eq!(seen.header("x-acs-content-sha256"), Some(empty.as_str()));
    let canonical = format!(
        "{}\n/\n{}\n{headers}\n{signed}\n{empty}",
        seen.method, seen.query
    );
    let to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    assert_eq!(
        part("Signature"),
        hex::encode(mac.finalize().into_bytes()),
        "{canonical}"
    );
}

#[tokio::test]
async fn a_fetch_is_a_signed_assume_role_with_the_instance_role_credentials() {
    let s = setup(
        vec![granted(3600), granted(3600)],
        true,
        0,
        spec(3600, Some(POLICY)),
    )
    .await;
    let fetched = s.role.fetch().await.unwrap();
    assert_eq!(fetched.role_name, "billing-app");
    assert_eq!(fetched.credentials.access_key_id, "STS.assumed-key");
    assert_eq!(
        fetched.credentials.access_key_secret.expose_secret(),
        ASSUMED_SECRET
    );
    assert_eq!(
        fetched.credentials.last_updated,
        time::OffsetDateTime::from(wall()),
        "LastUpdated: local time"
    );
    assert_eq!(fetched.service_time, Some(wall()), "STS's Date header");
    assert_eq!(s.role.label(), "billing");
    s.role.fetch().await.unwrap();

    let seen = s.sts.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/")
        );
        assert_eq!(request.header("x-acs-security-token"), Some(TOKEN));
        assert_eq!(request.header("x-acs-action"), Some("AssumeRole"));
        assert_eq!(request.header("x-acs-version"), Some("2015-04-01"));
        assert_eq!(request.header("x-acs-date"), Some("2023-11-14T22:13:20Z"));
        assert_eq!(
            request.header("host"),
            Some(s.sts.addr.to_string().as_str())
        );
        assert_eq!(request.param("RoleArn").as_deref(), Some(ARN));
        assert_eq!(
            request.param("RoleSessionName").as_deref(),
            Some("i-bp67acfmxazb4ph3xxxx.billing")
        );
        assert_eq!(request.param("DurationSeconds").as_deref(), Some("3600"));
        assert_eq!(request.param("Policy").as_deref(), Some(POLICY));
        assert!(
            request.query.contains("%20")
                && request.query.contains("%2A")
                && request.query.contains("%2B")
        );
        check_signature(request);
    }
    assert_ne!(
        seen[0].header("x-acs-signature-nonce"),
        seen[1].header("x-acs-signature-nonce")
    );
    assert_eq!(
        s.metadata
            .region_gets
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "facts read once"
    );
}

#[tokio::test]
async fn no_policy_no_policy_parameter() {
    let s = setup(vec![granted(3600)], true, 0, spec(900, None)).await;
    s.role.fetch().await.unwrap();
    let seen = &s.sts.seen()[0];
    assert_eq!(seen.param("Policy"), None);
    assert_eq!(seen.param("DurationSeconds").as_deref(), Some("900"));
    check_signature(seen);
}

#[tokio::test]
async fn without_instance_credentials_nothing_is_called_and_nothing_falls_back() {
    let s = setup(vec![granted(3600)], false, 0, spec(3600, None)).await;
    let e = s.role.fetch().await.unwrap_err();
    assert_eq!(e.kind(), "instance_role_unavailable", "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(ARN) && text.contains("instance role has no usable credentials"),
        "{text}"
    );
    assert!(s.sts.seen().is_empty());
}

#[tokio::test]
async fn a_refused_duration_is_retried_once_with_3600_and_a_warning() {
    let (buf, _guard) = capture_logs();
    let script = vec![
        refused(400, "InvalidParameter.DurationSeconds"),
        granted(3600),
    ];
    let s = setup(script, true, 0, spec(43_200, None)).await;
    s.role.fetch().await.unwrap();
    let durations: Vec<_> = s
        .sts
        .seen()
        .iter()
        .map(|r| r.param("DurationSeconds").unwrap())
        .collect();
    assert_eq!(durations, ["43200", "3600"]);
    let logs = logs(&buf);
    let warning: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("MaxSessionDuration"))
        .collect();
    assert_eq!(warning.len(), 1, "{logs}");
    assert!(
        warning[0].contains("WARN") && warning[0].contains("billing"),
        "{logs}"
    );
    for marker in [SECRET, TOKEN, ASSUMED_SECRET, ASSUMED_TOKEN] {
        assert!(!logs.contains(marker), "{marker} in logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_refused_duration_of_3600_is_not_retried() {
    let script = vec![
        refused(400, "InvalidParameter.DurationSeconds"),
        granted(3600),
    ];
    let s = setup(script, true, 0, spec(3600, None)).await;
    let e = s.role.fetch().await.unwrap_err();
    assert_eq!(e.kind(), "invalid_parameter");
    assert_eq!(s.sts.seen().len(), 1);
}

#[tokio::test]
async fn no_permission_names_both_causes_and_no_secret() {
    let s = setup(
        vec![refused(403, "NoPermission")],
        true,
        0,
        spec(3600, None),
    )
    .await;
    let e = s.role.fetch().await.unwrap_err();
    assert_eq!(e.kind(), "no_permission");
    let text = e.to_string();
    assert!(
        text.contains("sts:AssumeRole") && text.contains("trust policy"),
        "{text}"
    );
    for marker in [SECRET, TOKEN] {
        assert!(!text.contains(marker), "{text}");
    }
}

#[tokio::test]
async fn instance_facts_are_retried_at_the_next_fetch_until_read_once() {
    let s = setup(
        vec![granted(3600), granted(3600)],
        true,
        1,
        spec(3600, None),
    )
    .await;
    let e = s.role.fetch().await.unwrap_err();
    assert_eq!(e.kind(), "instance_facts_unavailable", "{e:?}");
    assert!(e.to_string().contains("region"), "{e}");
    assert!(s.sts.seen().is_empty());
    s.role.fetch().await.unwrap();
    s.role.fetch().await.unwrap();
    assert_eq!(
        s.metadata
            .region_gets
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[tokio::test]
async fn a_certificate_outside_the_trust_roots_is_refused() {
    let sts = Sts::start(vec![granted(3600)]).await;
    let metadata = Metadata::start(0).await;
    let (_tx, rx) = instance_state(true);
    let config = config::Config {
        ca_file: None,
        ..sts_config(&sts)
    };
    let assumer = Assumer::new(
        &config,
        metadata_client(&metadata),
        rx,
        Arc::new(FixedClock),
    )
    .unwrap();
    let e = AssumedRole::new(assumer, spec(3600, None))
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e:?}");
    assert!(e.to_string().contains("TLS"), "{e}");
    assert!(
        sts.seen().is_empty(),
        "no request without a trusted certificate"
    );
}

#[tokio::test]
async fn the_default_endpoint_is_the_regions_vpc_endpoint_reached_through_the_proxy() {
    let proxy = RefusingProxy::start().await;
    let metadata = Metadata::start(0).await;
    let (_tx, rx) = instance_state(true);
    let config = config::Config {
        proxy: Some(format!("http://{}", proxy.addr).parse().unwrap()),
        ..Default::default()
    };
    let assumer = Assumer::new(
        &config,
        metadata_client(&metadata),
        rx,
        Arc::new(FixedClock),
    )
    .unwrap();
    let e = AssumedRole::new(assumer, spec(3600, None))
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "unreachable", "{e:?}");
    assert!(e.to_string().contains("CONNECT refused"), "{e}");
    assert_eq!(
        *proxy.asked.lock().unwrap(),
        ["CONNECT sts-vpc.cn-hangzhou.aliyuncs.com:443 HTTP/1.1"]
    );
}

#[tokio::test]
async fn an_unreadable_ca_file_is_a_configuration_error() {
    let metadata = Metadata::start(0).await;
    let (_tx, rx) = instance_state(true);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for path in [dir.path().join("missing.pem"), empty] {
        let config = config::Config {
            ca_file: Some(path.clone()),
            ..Default::default()
        };
        let e = Assumer::new(
            &config,
            metadata_client(&metadata),
            rx.clone(),
            Arc::new(FixedClock),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[sts] ca_file"), "{path:?}: {e}");
    }
}

#[tokio::test]
async fn credentials_expiring_on_arrival_are_refused_by_the_refresher() {
    // Expiration 30 s after the answer: inside the default 60 s expiry margin.
    let s = setup(vec![granted(30); 8], true, 0, spec(3600, None)).await;
    let refresher =
        Refresher::builder(s.role, RefreshPolicy::default(), Arc::new(FixedClock)).spawn();
    let mut rx = refresher.subscribe();
    let state = tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|state| state.last_error.is_some()),
    )
    .await
    .expect("a failed first fetch within 60 s")
    .unwrap()
    .clone();
    assert!(state.credentials.is_none(), "{state:?}");
    let error = state.last_error.unwrap();
    assert!(error.contains("expired on arrival"), "{error}");
}

#[test]
fn session_names_follow_the_sts_rule() {
    let id = "i-bp67acfmxazb4ph3xxxx";
    assert_eq!(id.len(), INSTANCE_ID_LEN);
    assert_eq!(MAX_PROFILE_NAME_LEN, 41);
    // The profile parser refuses longer names with its own constant: they must agree.
    assert_eq!(crate::policy::profile::MAX_NAME_LEN, MAX_PROFILE_NAME_LEN);
    let longest = "p".repeat(MAX_PROFILE_NAME_LEN);
    assert_eq!(role_session_name(id, &longest).unwrap().len(), 64);
    let e = role_session_name(id, &format!("{longest}p")).unwrap_err();
    assert!(e.contains("65 characters") && e.contains("2 to 64"), "{e}");
    assert_eq!(
        role_session_name(id, "web_app-2").unwrap(),
        "i-bp67acfmxazb4ph3xxxx.web_app-2"
    );
    let e = role_session_name(id, "a b\n").unwrap_err();
    assert!(
        e.contains("' '") && e.contains("A-Z a-z 0-9 . @ - _") && !e.contains('\n'),
        "{e}"
    );
    assert!(role_session_name("", "").is_err(), "\".\" is 1 character");
}

#[test]
fn role_names_come_from_the_arn() {
    assert_eq!(role_name_from_arn(ARN), Some("billing-app"));
    assert_eq!(role_name_from_arn("acs:ram::1:role/path/x"), Some("x"));
    assert_eq!(role_name_from_arn("acs:ram::1:user/x"), None);
    assert_eq!(role_name_from_arn("acs:ram::1:role/"), None);
}

#[tokio::test]
async fn one_metadata_client_serves_the_instance_role_refresher_and_the_facts() {
    let metadata = Metadata::start(0).await;
    let client = metadata_client(&metadata);
    // Compiles only if a shared client is a `Source` the refresher accepts.
    let refresher = Refresher::builder(
        Arc::clone(&client),
        RefreshPolicy::default(),
        Arc::new(FixedClock),
    )
    .spawn();
    let facts = client.instance_facts().await.unwrap();
    assert_eq!(facts.region_id, "cn-hangzhou");
    drop(refresher);
}

#[tokio::test]
async fn a_hanging_sts_is_a_timeout_after_the_call_deadline() {
    let sts = Sts::start(vec![(HANG, String::new())]).await;
    let metadata = Metadata::start(0).await;
    let (_tx, rx) = instance_state(true);
    let config = config::Config {
        connect_timeout: Duration::from_millis(2_000),
        read_timeout: Duration::from_millis(100),
        ..sts_config(&sts)
    };
    let assumer = Assumer::new(
        &config,
        metadata_client(&metadata),
        rx,
        Arc::new(FixedClock),
    )
    .unwrap();
    let e = AssumedRole::new(assumer, spec(3600, None))
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e:?}");
    assert!(e.to_string().contains("did not answer within 2.2s"), "{e}");
    assert_eq!(sts.seen().len(), 1, "the request arrived");
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let huge = format!("{{\"Pad\":\"{}\"}}", "a".repeat(response::MAX_BODY_BYTES));
    let s = setup(vec![(200, huge)], true, 0, spec(3600, None)).await;
    let e = s.role.fetch().await.unwrap_err();
    assert_eq!(e.kind(), "invalid_response", "{e:?}");
    assert!(e.to_string().contains("body over 65536 bytes"), "{e}");
}

#[tokio::test]
async fn a_refused_role_is_published_as_sts_failing_with_the_reason() {
    let s = setup(
        vec![refused(403, "NoPermission"); 8],
        true,
        0,
        spec(3600, None),
    )
    .await;
    let refresher =
        Refresher::builder(s.role, RefreshPolicy::default(), Arc::new(FixedClock)).spawn();
    let mut rx = refresher.subscribe();
    let state = tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|state| state.last_error.is_some()),
    )
    .await
    .expect("a failed first fetch within 60 s")
    .unwrap()
    .clone();
    let message = state
        .credentials_at(tokio::time::Instant::now())
        .unwrap_err()
        .message();
    assert!(
        message.starts_with("STS AssumeRole failing since 2023-11-14T22:13:20Z: "),
        "{message}"
    );
    assert!(
        message.contains("NoPermission") && message.contains("trust policy"),
        "{message}"
    );
    assert!(!message.contains("metadata"), "{message}");
    for marker in [SECRET, TOKEN] {
        assert!(!message.contains(marker), "{message}");
    }
}

#[tokio::test]
async fn a_timed_out_call_leaves_no_connection_open() {
    let sts = SilentSts::start().await;
    let metadata = Metadata::start(0).await;
    let (_tx, rx) = instance_state(true);
    let config = config::Config {
        endpoint: Some(format!("https://{}", sts.addr).parse().unwrap()),
        ca_file: Some(sts.ca_file.clone()),
        connect_timeout: Duration::from_millis(2_000),
        read_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let assumer = Assumer::new(
        &config,
        metadata_client(&metadata),
        rx,
        Arc::new(FixedClock),
    )
    .unwrap();
    let role = AssumedRole::new(assumer, spec(3600, None));
    let closed = sts.closed.notified();
    let e = role.fetch().await.unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e:?}");
    tokio::time::timeout(Duration::from_secs(30), closed)
        .await
        .expect("the client closed its connection after the deadline");
}
