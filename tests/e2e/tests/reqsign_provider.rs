//! End-to-end: `reqsign-aliyun-oss` signing through the client library's provider (feature
//! `reqsign`) with the agent as a real process, fed by the metadata emulator.

use std::time::Duration;

use ecs_credential_agent_e2e::*;
use ecs_credential_client::reqsign::AgentCredentialProvider;
use reqsign_aliyun_oss::{Credential, RequestSigner};
use reqsign_core::{Context, ProvideCredential, Signer};

fn bucket_request() -> ::http::request::Parts {
    ::http::Request::get("https://examplebucket.oss-cn-hangzhou.aliyuncs.com/hello.txt")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// Asserts `credential` is the JSON document `served` by the agent's socket.
fn assert_same_as_served(credential: &Credential, served: &serde_json::Value) {
    assert_eq!(
        credential.access_key_id,
        served["AccessKeyId"].as_str().unwrap()
    );
    assert_eq!(
        credential.access_key_secret,
        served["AccessKeySecret"].as_str().unwrap()
    );
    assert_eq!(
        credential.security_token.as_deref(),
        served["SecurityToken"].as_str()
    );
    let expiration: reqsign_core::time::Timestamp =
        served["Expiration"].as_str().unwrap().parse().unwrap();
    assert_eq!(credential.expires_in, Some(expiration));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oss_requests_are_signed_with_the_served_credentials_across_a_rotation() {
    // 30 s credentials that rotate after 4 s: the agent refreshes at their half-life, so what
    // it serves always has more than reqsign-aliyun-oss's 10 s operation headroom left.
    let emu = emulator(short_lived(30, 4)).await;
    let agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .start()
        .await;
    let client = ecs_credential_client::Client::builder()
        .socket_path(agent.socket.clone())
        .build();
    let provider = AgentCredentialProvider::with_client(client);

    let served = agent.credentials().await;
    let credential = provider
        .provide_credential(&Context::new())
        .await
        .unwrap()
        .unwrap();
    assert_same_as_served(&credential, &served);

    // reqsign's signer keeps a credential until 2 minutes before its Expiration, and the client
    // until 5 minutes before, so with 30 s credentials every `sign` asks the agent: a rotation
    // shows in the next signature.
    let signer = Signer::new(
        Context::new(),
        provider,
        RequestSigner::new("examplebucket"),
    );
    let old_id = served["AccessKeyId"].as_str().unwrap().to_owned();
    // A signature made between two reads of the socket that agree, on a new generation.
    let (rotated, signed) = eventually(Duration::from_secs(60), || async {
        let before = agent.credentials().await;
        let mut request = bucket_request();
        signer.sign(&mut request, None).await.unwrap();
        let after = agent.credentials().await;
        (before != served && before == after).then_some((after, request))
    })
    .await
    .unwrap_or_else(|| panic!("no rotation seen; logs:\n{}", agent.logs()));

    let new_id = rotated["AccessKeyId"].as_str().unwrap();
    assert_ne!(new_id, old_id);
    let authorization = signed.headers["authorization"].to_str().unwrap();
    assert!(
        authorization.starts_with(&format!("OSS {new_id}:")),
        "{authorization}"
    );
    assert_eq!(
        signed.headers["x-oss-security-token"],
        rotated["SecurityToken"].as_str().unwrap()
    );
}
