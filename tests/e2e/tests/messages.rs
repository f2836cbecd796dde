//! What the agent tells an operator, seen from outside the process (issue 11, items 3, 7, 8
//! and 10): a log level that is not a level is a configuration error (exit 78) from the file
//! and from `--log-level`, and an invalid `RUST_LOG` is ignored with a warning naming it; a
//! bare `socket_mode` and a key outside its section say what to write; every fatal error is one
//! line `ecs-credential-agent: <what failed>: <cause>; <what to do>` followed by the README's
//! exit status; a refused caller's `get` names its uid and gid and the keys to change.
//!
//! Run against another agent binary with `ECS_AGENT_BIN` (how the regression tests were
//! checked against the code before the fix).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ecs_credential_agent_e2e::*;

/// Exit status of a configuration error (README, "Exit statuses of `serve`").
const EXIT_CONFIG: i32 = 78;
/// Exit status of anything else, e.g. a socket that cannot be bound.
const EXIT_FAILURE: i32 = 1;

fn agent_bin() -> PathBuf {
    agent_bin_under_test(agent_bin!())
}

/// Runs `serve --config FILE ARGS…` with `config` as the file, in a temporary directory whose
/// `agent.sock` is the socket unless `args` name one, and waits for it to exit (the cases here stop at start-up; a
/// 60 s bound catches one that does not).
fn serve_once(config: &str, args: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(agent_bin());
    cmd.args(["serve", "--config"]).arg(&path);
    if !args.contains(&"--socket") {
        cmd.arg("--socket").arg(dir.path().join("agent.sock"));
    }
    let mut child = cmd
        .args(["--endpoint", "http://127.0.0.1:9"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the agent did not stop at start-up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), dir)
}

/// The one fatal line: stderr's last line, in the documented style, with no log-style
/// `ERROR` line beside it.
fn fatal_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.lines().any(|l| l.contains(" ERROR ")),
        "a timestamped ERROR log line instead of the fatal line:\n{stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("ecs-credential-agent: "),
        "not the fatal-line style:\n{stderr}"
    );
    let (_, what_to_do) = last
        .rsplit_once("; ")
        .unwrap_or_else(|| panic!("no '; <what to do>' in {last:?}"));
    assert!(!what_to_do.is_empty(), "{last}");
    last
}

/// Regression (item 3): `[log] level = "warning"` was accepted and silenced every line.
#[test]
fn a_log_level_that_is_not_a_level_stops_the_agent_with_exit_78() {
    let (out, _dir) = serve_once("[log]\nlevel = \"warning\"\n", &[]);
    let line = fatal_line(&out);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{line}");
    assert!(
        line.contains("[log] level: \"warning\" is not a log level; expected one of trace, debug, info, warn, error, off"),
        "{line}"
    );

    let (out, _dir) = serve_once("", &["--log-level", "verbose"]);
    let line = fatal_line(&out);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{line}");
    assert!(
        line.contains("[log] level (--log-level): \"verbose\" is not a log level"),
        "{line}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// Regression (item 3): `RUST_LOG=warning` silenced every line without a word. It is ignored
/// with a warning naming it, and `[log] level` applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_rust_log_is_named_and_ignored() {
    let emu = emulator(Default::default()).await;
    let mut config = AgentConfig::new(&emu.endpoint());
    config.env("RUST_LOG", "warning");
    let agent = TestAgent::builder(agent_bin(), &config).start().await;
    assert!(
        agent
            .wait_for_log("ecs-credential-agent listening", Duration::from_secs(30))
            .await,
        "[log] level = \"info\" did not apply:\n{}",
        agent.logs()
    );
    let logs = agent.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("RUST_LOG ignored"))
        .unwrap_or_else(|| panic!("no warning naming RUST_LOG:\n{logs}"));
    assert!(warning.contains(r#"rust_log="warning""#), "{warning}");
    assert!(warning.contains("WARN"), "{warning}");
}

/// Regression (item 10): `socket_mode = 600` said only "expected a string, got 600"; a key
/// above every section line said "expected a section".
#[test]
fn configuration_errors_say_what_to_write() {
    let (out, _dir) = serve_once("[server]\nsocket_mode = 600\n", &[]);
    let line = fatal_line(&out);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{line}");
    assert!(
        line.contains(
            "[server] socket_mode: expected a quoted octal string, got 600; write \"0600\""
        ),
        "{line}"
    );

    let (out, _dir) = serve_once("endpoint = \"http://127.0.0.1:9\"\n", &[]);
    let line = fatal_line(&out);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{line}");
    assert!(
        line.contains("endpoint: a key outside its section; it belongs in [metadata]"),
        "{line}"
    );
}

/// Regression (item 8): a start-up failure was a timestamped `ERROR ecs_credential_agent::cli`
/// log line with the cause at the end; it is the same one line as a configuration error, and
/// the exit status is the README's (1: the socket cannot be bound).
#[test]
fn a_start_up_failure_is_the_same_one_line_then_its_exit_status() {
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    let occupied = dir.path().join("occupied");
    std::fs::write(&occupied, "not a socket").unwrap();
    let socket = occupied.display().to_string();
    let (out, _dir) = serve_once("", &["--socket", &socket]);
    let line = fatal_line(&out);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE), "{line}");
    assert!(
        line.starts_with("ecs-credential-agent: cannot listen on the socket: socket path "),
        "{line}"
    );
    assert!(line.contains("exists and is not a socket; "), "{line}");
    assert!(line.ends_with("[server] socket_path (--socket)"), "{line}");
}

/// Regression (item 7): a refused caller's `get` said "caller's uid and groups are not
/// allowed", naming neither the uid nor what to change. Needs root (to run `get` as nobody).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_get_names_its_uid_and_gid_and_the_keys() {
    require_root!();
    let emu = emulator(Default::default()).await;
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("server", "socket_mode", "\"0666\"");
    let agent = TestAgent::builder(agent_bin(), &config).start().await;
    agent.open_dir();
    let out = get_as_nobody(&agent_bin(), &agent.socket);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    for needle in [
        "caller uid 65534 (gid 65534) is not allowed",
        "[server] allowed_uids",
        "[server] allowed_gids",
        "socket_group",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
