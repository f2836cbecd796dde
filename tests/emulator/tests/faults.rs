//! Every fault kind and the gate, against a started emulator on 127.0.0.1:0.

mod common;

use std::time::{Duration, Instant};

use common::{is_404_page, raw, raw_get, start, Fixture, PROMPT, ROLE_LIST, TOKEN_PATH};
use ecs_metadata_emulator::{EmulatorConfig, Endpoint, Fault, Times};

/// How long a "never answers" case is watched.
const WATCH: Duration = Duration::from_millis(300);

fn fixture() -> Fixture {
    start(EmulatorConfig::default())
}

#[tokio::test]
async fn status_faults_apply_next_n_then_stop() {
    let f = fixture();
    let token = f.token().await;
    f.emulator
        .set_fault(Endpoint::Credentials, Fault::Status(503), Times::Next(2));
    for _ in 0..2 {
        let a = f.get(&f.creds_path(), Some(&token)).await;
        assert_eq!(a.status, 503);
        assert!(a.body.contains("503 - Service Unavailable"), "{}", a.body);
    }
    assert_eq!(f.get(&f.creds_path(), Some(&token)).await.status, 200);
    // Other endpoints were never affected.
    assert_eq!(f.get(ROLE_LIST, Some(&token)).await.status, 200);
}

#[tokio::test]
async fn status_fault_kinds_and_always() {
    let f = fixture();
    let token = f.token().await;
    for code in [500, 429, 403, 401, 405] {
        f.emulator
            .set_fault(Endpoint::RoleList, Fault::Status(code), Times::Next(1));
        assert_eq!(f.get(ROLE_LIST, Some(&token)).await.status, code);
    }
    f.emulator
        .set_fault(Endpoint::Any, Fault::Status(404), Times::Always);
    for _ in 0..3 {
        assert!(is_404_page(&f.get(ROLE_LIST, Some(&token)).await));
    }
    assert_eq!(
        f.put_token(Some("60")).await.status,
        404,
        "Any covers the token PUT"
    );
    let counts = f.emulator.counts();
    assert_eq!((counts.forbidden, counts.unauthorized), (1, 1));
    f.emulator.clear_faults();
    assert_eq!(f.get(ROLE_LIST, Some(&token)).await.status, 200);
}

#[tokio::test]
async fn set_fault_replaces_and_add_fault_queues() {
    let f = fixture();
    let token = f.token().await;
    f.emulator
        .set_fault(Endpoint::RoleList, Fault::Status(500), Times::Always);
    f.emulator
        .set_fault(Endpoint::RoleList, Fault::Status(502), Times::Next(1));
    f.emulator
        .add_fault(Endpoint::RoleList, Fault::Status(504), Times::Next(1));
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(f.get(ROLE_LIST, Some(&token)).await.status);
    }
    assert_eq!(seen, [502, 504, 200]);
}

#[tokio::test]
async fn delay_answers_normally_after_the_delay() {
    let f = fixture();
    let token = f.token().await;
    f.emulator.set_fault(
        Endpoint::RoleList,
        Fault::Delay(Duration::from_millis(200)),
        Times::Next(1),
    );
    let started = Instant::now();
    let a = f.get(ROLE_LIST, Some(&token)).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!((a.status, a.body.as_str()), (200, "EcsRamRoleDemo"));
}

#[tokio::test]
async fn hang_never_answers() {
    let f = fixture();
    let token = f.token().await;
    f.emulator
        .set_fault(Endpoint::Credentials, Fault::Hang, Times::Next(1));
    let seen = raw(f.emulator.addr(), &raw_get(&f.creds_path(), &token), WATCH).await;
    assert!(
        seen.bytes.is_empty() && !seen.eof && seen.error.is_none(),
        "{seen:?}"
    );
    assert_eq!(f.emulator.counts().credential_gets, 1);
}

#[tokio::test]
async fn hang_after_headers_sends_head_and_no_body() {
    let f = fixture();
    let token = f.token().await;
    f.emulator.set_fault(
        Endpoint::Credentials,
        Fault::HangAfterHeaders,
        Times::Next(1),
    );
    let seen = raw(f.emulator.addr(), &raw_get(&f.creds_path(), &token), WATCH).await;
    let head = seen.head().expect("head arrives");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("content-length")
        .parse()
        .unwrap();
    assert!(len > 1000, "announces the credential JSON, {len} bytes");
    assert_eq!(seen.body_len(), 0);
    assert!(
        !seen.eof && seen.error.is_none(),
        "connection stays open: {seen:?}"
    );
}

#[tokio::test]
async fn slow_body_dribbles_the_real_body() {
    let f = fixture();
    let token = f.token().await;
    let fault = Fault::SlowBody {
        chunk_bytes: 600,
        interval: Duration::from_millis(100),
    };
    f.emulator
        .set_fault(Endpoint::Credentials, fault, Times::Next(1));
    let started = Instant::now();
    let a = f.get(&f.creds_path(), Some(&token)).await;
    let json_len = f.emulator.current_credentials().unwrap().to_json().len();
    let chunks = json_len.div_ceil(600) as u32;
    assert!(
        started.elapsed() >= Duration::from_millis(100) * chunks,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.status, 200);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["Code"], "Success");
}

#[tokio::test]
async fn reset_closes_without_answering() {
    let f = fixture();
    let token = f.token().await;
    f.emulator
        .set_fault(Endpoint::Credentials, Fault::Reset, Times::Next(1));
    let seen = raw(f.emulator.addr(), &raw_get(&f.creds_path(), &token), PROMPT).await;
    assert!(seen.bytes.is_empty(), "{seen:?}");
    assert_eq!(
        seen.error,
        Some(std::io::ErrorKind::ConnectionReset),
        "{seen:?}"
    );
    // The next connection is served.
    assert_eq!(f.get(&f.creds_path(), Some(&token)).await.status, 200);
}

#[tokio::test]
async fn malformed_json_and_html_with_200() {
    let f = fixture();
    let path = f.creds_path();
    f.emulator
        .set_fault(Endpoint::Credentials, Fault::MalformedJson, Times::Next(1));
    let a = f.get_with_token(&path).await;
    assert_eq!(a.status, 200);
    assert!(a.body.starts_with("{\"AccessKeyId\":\"STS."), "{}", a.body);
    assert!(serde_json::from_str::<serde_json::Value>(&a.body).is_err());

    f.emulator
        .set_fault(Endpoint::Credentials, Fault::HtmlWith200, Times::Next(1));
    let a = f.get_with_token(&path).await;
    assert_eq!((a.status, a.content_type.as_str()), (200, "text/html"));
    assert!(a.body.contains("<html>"));

    f.emulator
        .set_fault(Endpoint::Token, Fault::HtmlWith200, Times::Next(1));
    let a = f.put_token(Some("60")).await;
    assert!(a.status == 200 && a.body.contains("<html>"), "{a:?}");
}

#[tokio::test]
async fn oversized_body_is_exactly_that_long() {
    let f = fixture();
    let eight_mib = 8 << 20;
    f.emulator.set_fault(
        Endpoint::Credentials,
        Fault::OversizedBody(eight_mib),
        Times::Next(1),
    );
    let a = f.get_with_token(&f.creds_path()).await;
    assert_eq!(a.body.len(), eight_mib);
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("still valid JSON");
    assert_eq!(v["Code"], "Success");

    f.emulator.set_fault(
        Endpoint::RoleList,
        Fault::OversizedBody(100_000),
        Times::Next(1),
    );
    assert_eq!(f.get_with_token(ROLE_LIST).await.body.len(), 100_000);
}

async fn faulted_credentials(f: &Fixture, fault: Fault) -> serde_json::Value {
    f.emulator.set_fault(Endpoint::Any, fault, Times::Next(1));
    // The token PUT and role list are not affected by a credential-field fault.
    assert_eq!(f.get_with_token(ROLE_LIST).await.status, 200);
    f.credentials().await
}

#[tokio::test]
async fn credential_field_faults() {
    let f = fixture();
    let normal = f.emulator.current_credentials().unwrap();

    let v = faulted_credentials(&f, Fault::MissingField("SecurityToken".into())).await;
    assert!(v.get("SecurityToken").is_none() && v["AccessKeyId"] == normal.access_key_id.as_str());
    let v = faulted_credentials(&f, Fault::EmptyField("AccessKeySecret".into())).await;
    assert_eq!(v["AccessKeySecret"], "");
    let v = faulted_credentials(&f, Fault::CodeNotSuccess).await;
    assert_eq!(v["Code"], "Failure");
    let v = faulted_credentials(&f, Fault::FractionalSecondsExpiration).await;
    let want = normal.expiration_str().replace('Z', ".123Z");
    assert_eq!(v["Expiration"], want.as_str());
    let v = faulted_credentials(&f, Fault::NumericOffsetExpiration).await;
    assert!(v["Expiration"].as_str().unwrap().ends_with("+08:00"), "{v}");
    let v = faulted_credentials(&f, Fault::ExpirationYearsAhead).await;
    let year = |s: &str| s[..4].parse::<i32>().unwrap();
    assert_eq!(
        year(v["Expiration"].as_str().unwrap()),
        year(&normal.last_updated_str()) + 10
    );
    // Each fault was used once: the next answer is normal again.
    assert_eq!(
        f.credentials().await["Expiration"],
        normal.expiration_str().as_str()
    );
}

#[tokio::test]
async fn expired_credentials_fault_is_in_the_past() {
    let f = fixture();
    let v = faulted_credentials(&f, Fault::ExpiredCredentials).await;
    let expiration = time::OffsetDateTime::parse(
        v["Expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expiration < time::OffsetDateTime::now_utc());
    assert!(v["Expiration"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn content_faults_leave_refusals_alone() {
    let f = fixture();
    f.emulator
        .set_fault(Endpoint::Credentials, Fault::MalformedJson, Times::Next(1));
    assert_eq!(f.get(&f.creds_path(), None).await.status, 403);
    // That request used the fault up.
    assert_eq!(f.credentials().await["Code"], "Success");
}

#[tokio::test]
async fn gate_holds_counted_requests_until_released() {
    let f = std::sync::Arc::new(fixture());
    let token = f.token().await;
    let gate = f.emulator.gate(Endpoint::Credentials);
    let mut held = Vec::new();
    for _ in 0..3 {
        let (f, token) = (f.clone(), token.clone());
        held.push(tokio::spawn(async move {
            f.get(&f.creds_path(), Some(&token)).await
        }));
    }
    tokio::time::timeout(PROMPT, gate.until_waiting(3))
        .await
        .expect("3 held");
    assert_eq!(gate.waiting(), 3);
    assert_eq!(
        f.emulator.counts().credential_gets,
        3,
        "counted before holding"
    );
    // Other endpoints pass.
    assert_eq!(f.get(ROLE_LIST, Some(&token)).await.status, 200);
    assert!(held.iter().all(|h| !h.is_finished()));

    f.emulator.rotate_now();
    gate.release();
    let served = f.emulator.current_credentials().unwrap();
    for h in held {
        let a = h.await.unwrap();
        assert_eq!(a.status, 200);
        assert!(
            a.body.contains(&served.access_key_id),
            "answered with state at release time"
        );
    }
    assert_eq!(gate.waiting(), 0);
    assert!(gate.is_released());
    // New requests pass once released.
    assert_eq!(f.get(&f.creds_path(), Some(&token)).await.status, 200);
}

#[tokio::test]
async fn dropping_a_gate_releases_it() {
    let f = std::sync::Arc::new(fixture());
    let gate = f.emulator.gate(Endpoint::Token);
    let f2 = f.clone();
    let held = tokio::spawn(async move { f2.put_token(Some("60")).await });
    tokio::time::timeout(PROMPT, gate.until_waiting(1))
        .await
        .expect("held");
    drop(gate);
    assert_eq!(held.await.unwrap().status, 200);
}

#[tokio::test]
async fn get_on_token_path_under_token_fault() {
    let f = fixture();
    f.emulator
        .set_fault(Endpoint::Token, Fault::Status(405), Times::Always);
    assert_eq!(f.put_token(Some("60")).await.status, 405);
    assert_eq!(f.get(TOKEN_PATH, None).await.status, 405);
    assert_eq!(f.emulator.counts().tokens_issued, 0);
}
