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

/// `exec --socket SOCKET -- ARGS…`.
fn exec_command(socket: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(agent_bin!());
    c.arg("exec")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("ECS_CREDENTIAL_AGENT_SOCKET");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_gives_the_command_the_socket_s_credentials_and_keeps_the_environment() {
    let emu = emulator(Default::default()).await;
    let agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .start()
        .await;
    let served = agent.credentials().await;
    let script = r#"printf '%s\n' "$ALIBABA_CLOUD_ACCESS_KEY_ID" "$ALIBABA_CLOUD_ACCESS_KEY_SECRET" "$ALIBABA_CLOUD_SECURITY_TOKEN" "$ALIBABA_CLOUD_ECS_METADATA_DISABLED" "$E2E_KEPT""#;
    let out = exec_command(&agent.socket, &["--", "sh", "-c", script])
        .env("E2E_KEPT", "kept")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            served["AccessKeyId"].as_str().unwrap(),
            served["AccessKeySecret"].as_str().unwrap(),
            served["SecurityToken"].as_str().unwrap(),
            "true",
            "kept",
        ]
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without `--`, the command's own options are its own.
    let out = exec_command(&agent.socket, &["printf", "%s", "-n"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"-n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_replaces_the_process_so_status_signals_and_pid_are_the_command_s() {
    use std::os::unix::process::ExitStatusExt;
    let emu = emulator(Default::default()).await;
    let agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .start()
        .await;
    let status = |script: &str| {
        exec_command(&agent.socket, &["--", "sh", "-c", script])
            .status()
            .unwrap()
    };
    assert_eq!(status("exit 7").code(), Some(7));
    assert_eq!(status("kill -TERM $$; exit 3").signal(), Some(15));
    // The Rust runtime ignores SIGPIPE, and an ignored signal stays ignored across execve
    // (a shell cannot even trap it then): `exec` must hand the command the default.
    assert_eq!(status("kill -PIPE $$; exit 3").signal(), Some(13));

    let child = exec_command(&agent.socket, &["--", "sh", "-c", "echo $$"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        pid.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_refuses_credentials_with_less_than_min_lifetime_left() {
    // 120 s credentials, rotated after 40 s: what the agent serves has 80 to 120 s left.
    let emu = emulator(short_lived(120, 40)).await;
    let agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .start()
        .await;
    let served = agent.credentials().await;
    for args in [
        &["--", "true"][..],
        &["--min-lifetime", "3600", "--", "true"],
    ] {
        let out = exec_command(&agent.socket, args).output().unwrap();
        assert_eq!(out.status.code(), Some(75), "{args:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        for needle in [
            "the credentials expire at",
            "--min-lifetime",
            "try again later",
        ] {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        }
        assert_no_secret(&stderr, &served);
        assert!(out.stdout.is_empty());
    }
    let out = exec_command(&agent.socket, &["--min-lifetime", "30", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Neither the AccessKeySecret nor the SecurityToken of `served` is in `text`.
fn assert_no_secret(text: &str, served: &serde_json::Value) {
    for key in ["AccessKeySecret", "SecurityToken"] {
        let secret = served[key].as_str().unwrap();
        assert!(!text.contains(secret), "{key} printed: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_fails_like_a_shell_for_missing_or_unrunnable_commands_and_like_get_without_agent() {
    use std::os::unix::fs::PermissionsExt;
    let emu = emulator(Default::default()).await;
    let agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .start()
        .await;
    let served = agent.credentials().await;

    let out = exec_command(&agent.socket, &["--", "no-such-command-e2e"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("no-such-command-e2e: command not found"),
        "{stderr}"
    );
    assert_no_secret(&stderr, &served);

    let script = agent.dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = exec_command(&agent.socket, &["--", script.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("not-executable.sh: Permission denied"),
        "{stderr}"
    );

    let nothing = agent.dir.path().join("nothing.sock");
    let out = exec_command(&nothing, &["--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing.sock"));
}

/// `env --config DIR/config.toml ARGS…` with `toml` as the file.
fn env_with_config(toml: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let mut all = vec!["env", "--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

#[test]
fn env_prints_the_uri_of_bridge_listen_in_each_format() {
    let toml = "[bridge]\nlisten = \"127.0.0.1:17301\"\n";
    let uri = "ALIBABA_CLOUD_CREDENTIALS_URI=http://127.0.0.1:17301/v1/credentials";
    let disabled = "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true";
    for (args, prefix) in [
        (&[][..], "export "),
        (&["--format", "shell"][..], "export "),
        (&["--format", "systemd"][..], "Environment="),
        (&["--format", "dockerfile"][..], "ENV "),
    ] {
        let out = env_with_config(toml, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(
            String::from_utf8(out.stdout.clone()).unwrap(),
            format!("{prefix}{uri}\n{prefix}{disabled}\n"),
            "{args:?}"
        );
        assert!(out.stderr.is_empty(), "{:?}", out.stderr);
    }
    // The shell lines work as they are.
    let out = env_with_config(toml, &[]);
    let script = format!(
        "{}\nprintf '%s %s' \"$ALIBABA_CLOUD_CREDENTIALS_URI\" \"$ALIBABA_CLOUD_ECS_METADATA_DISABLED\"",
        String::from_utf8(out.stdout).unwrap()
    );
    let sh = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert_eq!(sh.stdout, b"http://127.0.0.1:17301/v1/credentials true");
}

#[test]
fn env_without_bridge_listen_exits_78_saying_what_to_set() {
    let out = env_with_config("[server]\nallowed_uids = [1000]\n", &[]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    for needle in [
        "[bridge] listen is not set",
        "listen = \"127.0.0.1:17301\" under [bridge]",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    let out = env_with_config("[bridge]\nlisten = \"0.0.0.0:17301\"\n", &[]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[bridge] listen"));
}
