//! End-to-end: the commands that hand the agent's credentials to other programs —
//! `get --format aliyun-cli` (the aliyun CLI's External mode), `exec` and `env` — run as real
//! processes against a real agent.

use std::process::{Command, Output};

use ecs_credential_agent_e2e::*;

/// Runs the agent binary with `args` and returns its output.
fn run(args: &[&str]) -> Output {
    Command::new(agent_bin!())
        .args(args)
        .env_remove("ECS_CREDENTIAL_AGENT_SOCKET")
        .output()
        .expect("run the agent binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_aliyun_cli_prints_the_socket_s_credentials_in_external_mode_shape() {
    let emu = emulator(Default::default()).await;
    let agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .start()
        .await;
    let served = agent.credentials().await;
    let socket = agent.socket.to_str().unwrap();
    let out = run(&["get", "--format", "aliyun-cli", "--socket", socket]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = serde_json::json!({
        "mode": "StsToken",
        "access_key_id": served["AccessKeyId"],
        "access_key_secret": served["AccessKeySecret"],
        "sts_token": served["SecurityToken"],
        "expiration": served["Expiration"],
    });
    assert_eq!(v, expected);
    assert!(out.stdout.ends_with(b"}\n"));
    assert!(out.stderr.is_empty(), "{out:?}");
}
