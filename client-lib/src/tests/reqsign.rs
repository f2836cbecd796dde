//! The `reqsign` provider against a fake agent, and reqsign-aliyun-oss signing with it.

use std::path::Path;
use std::time::Duration;

use reqsign_aliyun_oss::RequestSigner;
use reqsign_core::time::Timestamp;
use reqsign_core::{Context, ErrorKind, ProvideCredential, Signer};
use time::macros::datetime;
use time::OffsetDateTime;

use super::fake_agent::{credentials_body, error_body, FakeAgent, TestClock, MARKER};
use crate::reqsign::AgentCredentialProvider;
use crate::{Client, Error};

/// The client's clock; the credentials expire an hour later, well after reqsign's real "now".
const T0: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);
const ACCESS_KEY_ID: &str = "STS.reqsign-test";

/// A provider over a client of the agent at `path`, on a test clock at [`T0`], not retrying.
fn provider(path: &Path) -> AgentCredentialProvider {
    let client = Client::builder()
        .socket_path(path)
        .unavailable_retries(0)
        .retry_backoff(Duration::from_millis(1))
        .clock(TestClock::at(T0).as_clock())
        .build_with_env(None);
    AgentCredentialProvider::with_client(client)
}

async fn serving_credentials() -> FakeAgent {
    FakeAgent::start(|_, _| {
        (
            200,
            credentials_body(ACCESS_KEY_ID, T0 + time::Duration::HOUR),
        )
    })
    .await
}

fn bucket_request() -> http::request::Parts {
    http::Request::get("https://examplebucket.oss-cn-hangzhou.aliyuncs.com/hello.txt")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// The provider's error for an agent answering `status` with `body`.
async fn error_for(status: u16, body: String) -> reqsign_core::Error {
    let agent = FakeAgent::start(move |_, _| (status, body.clone())).await;
    provider(&agent.path)
        .provide_credential(&Context::new())
        .await
        .expect_err("the agent refused")
}

/// Asserts `err` carries the client's error, with its `Display` as the message.
fn assert_carries_client_error(err: &reqsign_core::Error, expected: impl Fn(&Error) -> bool) {
    let source = std::error::Error::source(err).expect("the client's error as source");
    let ours = source
        .downcast_ref::<Error>()
        .expect("an ecs_credential_client::Error");
    assert!(expected(ours), "{ours:?}");
    assert_eq!(err.to_string(), ours.to_string());
    assert!(!format!("{err:?}").contains(MARKER), "{err:?}");
}

#[tokio::test]
async fn provider_returns_exactly_what_the_agent_serves() {
    let agent = serving_credentials().await;
    let credential = provider(&agent.path)
        .provide_credential(&Context::new())
        .await
        .unwrap()
        .expect("Some(credential)");
    assert_eq!(credential.access_key_id, ACCESS_KEY_ID);
    assert_eq!(credential.access_key_secret, MARKER);
    assert_eq!(
        credential.security_token.as_deref(),
        Some(format!("{MARKER}-token").as_str())
    );
    let expiration = (T0 + time::Duration::HOUR).unix_timestamp();
    assert_eq!(
        credential.expires_in,
        Some(Timestamp::from_second(expiration).unwrap())
    );
    assert!(!format!("{credential:?}").contains(MARKER));
}

#[tokio::test]
async fn provider_answers_from_the_clients_cache() {
    let agent = serving_credentials().await;
    let provider = provider(&agent.path);
    for _ in 0..3 {
        let credential = provider.provide_credential(&Context::new()).await.unwrap();
        assert_eq!(credential.unwrap().access_key_id, ACCESS_KEY_ID);
    }
    assert_eq!(agent.hits(), 1);
}

#[tokio::test]
async fn oss_signing_names_the_access_key_id_and_sends_the_security_token() {
    let agent = serving_credentials().await;
    let signer = Signer::new(
        Context::new(),
        provider(&agent.path),
        RequestSigner::new("examplebucket"),
    );
    let mut request = bucket_request();
    signer.sign(&mut request, None).await.unwrap();

    let authorization = request.headers["authorization"].to_str().unwrap();
    // reqsign-aliyun-oss 3.2 signs with OSS V1 by default: `OSS <AccessKeyId>:<signature>`.
    let signature = authorization
        .strip_prefix(&format!("OSS {ACCESS_KEY_ID}:"))
        .unwrap_or_else(|| panic!("not an OSS V1 header naming the AccessKeyId: {authorization}"));
    assert!(!signature.is_empty() && !signature.contains(MARKER));
    assert_eq!(
        request.headers["x-oss-security-token"],
        format!("{MARKER}-token").as_str()
    );
}

#[tokio::test]
async fn a_refusal_fails_signing_with_the_clients_message() {
    let body = error_body("Forbidden", "uid 1234 is not allowed");
    let agent = FakeAgent::start(move |_, _| (403, body.clone())).await;
    let signer = Signer::new(
        Context::new(),
        provider(&agent.path),
        RequestSigner::new("examplebucket"),
    );
    let mut request = bucket_request();
    let err = signer.sign(&mut request, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(!err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("permission denied by ecs-credential-agent at ")
            && err.to_string().ends_with(": uid 1234 is not allowed"),
        "{err}"
    );
    assert_carries_client_error(&err, |e| matches!(e, Error::PermissionDenied { .. }));
    assert!(request.headers.get("authorization").is_none());
}

#[tokio::test]
async fn unavailable_is_a_retryable_credential_error() {
    let err = error_for(
        503,
        error_body("CredentialsUnavailable", "agent is starting"),
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::CredentialInvalid);
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "credentials unavailable from ecs-credential-agent (CredentialsUnavailable): agent is starting"
    );
    assert_carries_client_error(&err, |e| matches!(e, Error::Unavailable { .. }));
}

#[tokio::test]
async fn a_malformed_answer_is_unexpected() {
    let err = error_for(200, format!(r#"{{"AccessKeySecret":"{MARKER}"}}"#)).await;
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(!err.is_retryable());
    assert_carries_client_error(&err, |e| matches!(e, Error::Protocol { .. }));
}

#[tokio::test]
async fn no_agent_is_a_configuration_error_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let err = provider(&path)
        .provide_credential(&Context::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to socket {}: is ecs-credential-agent running?",
            path.display()
        )
    );
    assert_carries_client_error(&err, |e| matches!(e, Error::AgentNotRunning { .. }));
}
