//! The async client against a fake agent.

use std::io;
use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use time::macros::datetime;
use time::OffsetDateTime;

use super::fake_agent::{credentials_body, error_body, error_chain, FakeAgent, TestClock, MARKER};
use crate::{Client, Error};

const T0: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);

fn minutes(n: i64) -> time::Duration {
    time::Duration::minutes(n)
}

/// A client of `agent` on a test clock at [`T0`], retrying fast.
fn client(path: &Path, clock: &TestClock) -> Client {
    Client::builder()
        .socket_path(path)
        .retry_backoff(Duration::from_millis(1))
        .clock(clock.as_clock())
        .build_with_env(None)
}

/// Asserts the planted secret appears nowhere in the error's messages or Debug.
fn assert_no_secret(err: &Error) {
    let text = format!("{} {err:?}", error_chain(err));
    assert!(!text.contains(MARKER), "secret leaked: {text}");
}

#[tokio::test]
async fn fetches_and_parses_credentials() {
    let agent = FakeAgent::start(|_, path| {
        assert_eq!(path, "/v1/credentials");
        (200, credentials_body("STS.first", T0 + minutes(60)))
    })
    .await;
    let clock = TestClock::at(T0);
    let creds = client(&agent.path, &clock).credentials().await.unwrap();
    assert_eq!(creds.access_key_id, "STS.first");
    assert_eq!(creds.access_key_secret.expose_secret(), MARKER);
    assert_eq!(
        creds.security_token.expose_secret(),
        format!("{MARKER}-token")
    );
    assert_eq!(creds.expiration, T0 + minutes(60));
    assert_eq!(creds.last_updated, Some(T0 + minutes(60) - minutes(360)));
    let debug = format!("{creds:?}");
    assert!(
        !debug.contains(MARKER) && debug.contains("** redacted **"),
        "{debug}"
    );
}

#[tokio::test]
async fn cache_hit_makes_no_second_request_until_refresh_before() {
    let agent = FakeAgent::start(|n, _| {
        let id = format!("STS.gen{n}");
        (
            200,
            credentials_body(&id, T0 + minutes(60) * (n as i32 + 1)),
        )
    })
    .await;
    let clock = TestClock::at(T0);
    let client = client(&agent.path, &clock);
    assert_eq!(
        client.credentials().await.unwrap().access_key_id,
        "STS.gen0"
    );
    clock.set(T0 + minutes(30));
    let again = client.clone().credentials().await.unwrap();
    assert_eq!(
        (again.access_key_id.as_str(), agent.hits()),
        ("STS.gen0", 1)
    );
    // 4 minutes left < 5 minutes refresh_before: fetched anew.
    clock.set(T0 + minutes(56));
    assert_eq!(
        client.credentials().await.unwrap().access_key_id,
        "STS.gen1"
    );
    assert_eq!(agent.hits(), 2);
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let agent = FakeAgent::start(|_, _| (200, credentials_body("STS.one", T0 + minutes(60)))).await;
    let clock = TestClock::at(T0);
    let client = client(&agent.path, &clock);
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = client.clone();
        callers.spawn(async move { client.credentials().await.map(|c| c.access_key_id) });
    }
    while let Some(result) = callers.join_next().await {
        assert_eq!(result.unwrap().unwrap(), "STS.one");
    }
    assert_eq!(agent.hits(), 1);
}

#[tokio::test]
async fn short_lived_credentials_are_returned_but_not_served_from_cache() {
    let agent =
        FakeAgent::start(|_, _| (200, credentials_body("STS.short", T0 + minutes(3)))).await;
    let clock = TestClock::at(T0);
    let client = client(&agent.path, &clock);
    assert_eq!(
        client.credentials().await.unwrap().access_key_id,
        "STS.short"
    );
    assert_eq!(
        client.credentials().await.unwrap().access_key_id,
        "STS.short"
    );
    assert_eq!(agent.hits(), 2);
}

#[tokio::test]
async fn expired_credentials_from_the_agent_are_refused() {
    let agent = FakeAgent::start(|_, _| (200, credentials_body("STS.old", T0 - minutes(1)))).await;
    let clock = TestClock::at(T0);
    let err = client(&agent.path, &clock).credentials().await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("expired"), "{err}");
    assert_no_secret(&err);
}

/// An `AccessKeyId` with a line break and terminal escapes (a fake agent's) is refused without
/// being quoted: errors are printed to terminals by `get` and logged by applications.
#[tokio::test]
async fn an_access_key_id_with_control_characters_is_refused_unquoted() {
    let forged = "STS.x\n2030-01-01 forged line\u{1b}[2J\u{9b}31m";
    for expiration in [T0 + minutes(60), T0 - minutes(1)] {
        let body = credentials_body("STS.placeholder", expiration).replace(
            "\"STS.placeholder\"",
            &serde_json::to_string(forged).unwrap(),
        );
        let agent = FakeAgent::start(move |_, _| (200, body.clone())).await;
        let clock = TestClock::at(T0);
        let got = client(&agent.path, &clock).credentials().await;
        let err = got.expect_err("an AccessKeyId with control characters");
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
        let text = format!("{} {err:?}", error_chain(&err));
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(!text.contains("forged line"), "{text:?}");
        assert!(text.contains("AccessKeyId"), "{text:?}");
        assert_no_secret(&err);
    }
}

#[tokio::test]
async fn cached_credentials_cover_an_outage_until_they_expire() {
    let agent = FakeAgent::start(|n, _| match n {
        0 => (200, credentials_body("STS.cached", T0 + minutes(10))),
        _ => (
            503,
            error_body("CredentialsUnavailable", "metadata service unreachable"),
        ),
    })
    .await;
    let clock = TestClock::at(T0);
    let client = client(&agent.path, &clock);
    client.credentials().await.unwrap();
    clock.set(T0 + minutes(8)); // within refresh_before: fetch, fail, fall back
    assert_eq!(
        client.credentials().await.unwrap().access_key_id,
        "STS.cached"
    );
    assert_eq!(agent.hits(), 1 + 4);
    clock.set(T0 + minutes(10)); // expired now: never returned
    let err = client.credentials().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn forbidden_is_permission_denied_with_the_agents_message() {
    let agent =
        FakeAgent::start(|_, _| (403, error_body("Forbidden", "uid 1000 is not allowed"))).await;
    let clock = TestClock::at(T0);
    let err = client(&agent.path, &clock).credentials().await.unwrap_err();
    match &err {
        Error::PermissionDenied { path, message, .. } => {
            assert_eq!(path, &agent.path);
            assert_eq!(message, "uid 1000 is not allowed");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("uid 1000 is not allowed"), "{err}");
    assert_eq!(agent.hits(), 1, "403 is not retried");
}

/// The agent answers a caller it does not allow at accept, before reading its request, then
/// drains what the client sends and closes: the client reports permission denied with the
/// agent's message, whether its request was sent before or after the answer arrived.
#[tokio::test]
async fn forbidden_at_accept_is_permission_denied() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let body = error_body("Forbidden", "this caller is not allowed");
    let answer = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let agent = tokio::spawn(async move {
        for _ in 0..20 {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(answer.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            let mut request = Vec::new();
            let _ = s.read_to_end(&mut request).await;
        }
    });
    let clock = TestClock::at(T0);
    let client = client(&path, &clock);
    for _ in 0..20 {
        match client.credentials().await.unwrap_err() {
            Error::PermissionDenied {
                path: p, message, ..
            } => {
                assert_eq!(p, path);
                assert_eq!(message, "this caller is not allowed");
            }
            other => panic!("{other:?}"),
        }
    }
    agent.await.unwrap();
}

#[tokio::test]
async fn unavailable_after_the_retries() {
    let agent = FakeAgent::start(|_, _| {
        (
            503,
            error_body(
                "CredentialsUnavailable",
                "agent is starting: no credentials fetched yet",
            ),
        )
    })
    .await;
    let clock = TestClock::at(T0);
    let client = Client::builder()
        .socket_path(&agent.path)
        .unavailable_retries(2)
        .retry_backoff(Duration::from_millis(1))
        .clock(clock.as_clock())
        .build_with_env(None);
    let err = client.credentials().await.unwrap_err();
    match &err {
        Error::Unavailable { code, message } => {
            assert_eq!(code, "CredentialsUnavailable");
            assert_eq!(message, "agent is starting: no credentials fetched yet");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(agent.hits(), 3, "one try and two retries");
}

#[tokio::test]
async fn a_503_then_success_succeeds() {
    let agent = FakeAgent::start(|n, _| match n {
        0 | 1 => (503, error_body("TooManyConnections", "busy")),
        _ => (200, credentials_body("STS.after", T0 + minutes(60))),
    })
    .await;
    let clock = TestClock::at(T0);
    let creds = client(&agent.path, &clock).credentials().await.unwrap();
    assert_eq!(
        (creds.access_key_id.as_str(), agent.hits()),
        ("STS.after", 3)
    );
}

#[tokio::test]
async fn missing_socket_is_agent_not_running_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let clock = TestClock::at(T0);
    let err = client(&path, &clock).credentials().await.unwrap_err();
    match &err {
        Error::AgentNotRunning { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&*path.to_string_lossy()) && text.contains("running"),
        "{text}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn refused_connection_is_agent_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // file stays, nobody listens
    let clock = TestClock::at(T0);
    let err = client(&path, &clock).credentials().await.unwrap_err();
    match &err {
        Error::AgentNotRunning { source, .. } => {
            assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn malformed_answers_are_protocol_errors_without_secrets() {
    let bodies = [
        format!("{{\"AccessKeySecret\":\"{MARKER}\""), // truncated JSON
        format!(
            r#"{{"Code":"Success","AccessKeySecret":"{MARKER}","SecurityToken":"{MARKER}","Expiration":"2030-01-01T01:00:00Z"}}"#
        ), // no AccessKeyId
        format!(r#"{{"AccessKeyId":["{MARKER}"]}}"#),  // wrong type
        format!("<html>{MARKER}</html>"),
    ];
    for body in bodies {
        let agent = FakeAgent::start(move |_, _| (200, body.clone())).await;
        let clock = TestClock::at(T0);
        let err = client(&agent.path, &clock).credentials().await.unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
        assert_no_secret(&err);
    }
}

#[tokio::test]
async fn missing_field_is_named() {
    let body = r#"{"Code":"Success","AccessKeyId":"STS.x","AccessKeySecret":"s","Expiration":"2030-01-01T01:00:00Z"}"#;
    let agent = FakeAgent::start(move |_, _| (200, body.to_owned())).await;
    let clock = TestClock::at(T0);
    let err = client(&agent.path, &clock).credentials().await.unwrap_err();
    assert!(err.to_string().contains("SecurityToken"), "{err}");
}

#[tokio::test]
async fn unexpected_status_is_a_protocol_error_with_the_code() {
    let agent = FakeAgent::start(|_, _| (404, error_body("NotFound", "no such path"))).await;
    let clock = TestClock::at(T0);
    let err = client(&agent.path, &clock).credentials().await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("404") && text.contains("NotFound"), "{text}");
    assert_eq!(agent.hits(), 1);
}

#[tokio::test]
async fn a_silent_agent_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream); // accept, never answer
        }
    });
    let client = Client::builder()
        .socket_path(&path)
        .request_timeout(Duration::from_millis(100))
        .build_with_env(None);
    let err = client.credentials().await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(error_chain(&err).contains("timed out"), "{err}");
    silent.abort();
}

#[tokio::test]
async fn health_reports_status_and_fields() {
    let agent = FakeAgent::start(|n, path| {
        assert_eq!(path, "/v1/health");
        match n {
            0 => (
                200,
                r#"{"RoleName":"web","Expiration":"2030-01-01T01:00:00Z","SecondsLeft":3600}"#
                    .to_owned(),
            ),
            _ => (
                503,
                error_body("CredentialsUnavailable", "no RAM role attached"),
            ),
        }
    })
    .await;
    let clock = TestClock::at(T0);
    let client = client(&agent.path, &clock);
    let healthy = client.health().await.unwrap();
    assert!(healthy.is_healthy());
    assert_eq!(healthy.role_name.as_deref(), Some("web"));
    assert_eq!(healthy.seconds_left, Some(3600));
    let sick = client.health().await.unwrap();
    assert_eq!(sick.status, 503);
    assert_eq!(sick.message.as_deref(), Some("no RAM role attached"));
    assert_eq!(agent.hits(), 2, "503 on health is an answer, not retried");
}

/// Set to the socket path for [`connect_eacces_child`], which runs as another user.
const EACCES_CHILD_ENV: &str = "ECS_CLIENT_TEST_EACCES_SOCKET";

#[test]
fn connect_eacces_is_permission_denied() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::metadata(dir.path()).unwrap().uid() != 0 {
        check_eacces(&path);
        return;
    }
    // Root bypasses file permissions: run the check as `nobody` in a child process.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::client::connect_eacces_child",
            "--ignored",
            "--nocapture",
        ])
        .env(EACCES_CHILD_ENV, &path)
        .uid(65534)
        .gid(65534)
        .output();
    let output = match output {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: test binary not executable as nobody ({e})");
            return;
        }
        other => other.unwrap(),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("EACCES-CHILD-OK"),
        "{output:?}"
    );
}

#[test]
#[ignore = "run by connect_eacces_is_permission_denied as another user"]
fn connect_eacces_child() {
    if let Some(path) = std::env::var_os(EACCES_CHILD_ENV) {
        check_eacces(Path::new(&path));
        println!("EACCES-CHILD-OK");
    }
}

fn check_eacces(path: &Path) {
    let client = crate::blocking::Client::builder()
        .socket_path(path)
        .build()
        .unwrap();
    match client.credentials().unwrap_err() {
        Error::PermissionDenied {
            path: p, source, ..
        } => {
            assert_eq!(p, path);
            assert_eq!(source.unwrap().kind(), io::ErrorKind::PermissionDenied);
        }
        other => panic!("{other:?}"),
    }
}

/// Issue 10 item 4: a path another user could repoint (their link in a sticky directory like
/// `/tmp`, or a directory anyone may write to) is refused before connecting, so a fake agent
/// behind it serves nothing; a root-owned link in the same place is followed.
#[tokio::test]
async fn socket_path_others_could_redirect_is_refused_before_connecting() {
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};

    let agent =
        FakeAgent::start(|_, _| (200, credentials_body("STS.fake", T0 + minutes(60)))).await;
    let clock = TestClock::at(T0);
    let top = tempfile::tempdir().unwrap();
    let open = top.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    symlink(&agent.path, open.join("agent.sock")).unwrap();
    let err = client(&open.join("agent.sock"), &clock)
        .credentials()
        .await
        .unwrap_err();
    match &err {
        Error::UnsafeSocketPath { path, source } => {
            assert_eq!(path, &open.join("agent.sock"));
            assert!(
                matches!(source, crate::UnsafeSocketPath::OpenDirectory { path, .. } if path == &open),
                "{source}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        error_chain(&err).contains(&*open.to_string_lossy()),
        "{err}"
    );
    assert_eq!(agent.hits(), 0);

    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED (the rest): needs root to give a link to uid 65534");
        return;
    }
    let tmp = top.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let agent_dir = agent.path.parent().unwrap();
    let ecsdir = tmp.join("ecsdir");
    symlink(agent_dir, &ecsdir).unwrap();
    lchown(&ecsdir, Some(65534), None).unwrap();
    let err = client(&ecsdir.join("agent.sock"), &clock)
        .credentials()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnsafeSocketPath { source: crate::UnsafeSocketPath::ForeignOwner { path, uid: 65534, .. }, .. } if path == &ecsdir),
        "{err:?}"
    );
    assert_eq!(agent.hits(), 0);

    let rootdir = tmp.join("rootdir");
    symlink(agent_dir, &rootdir).unwrap();
    let creds = client(&rootdir.join("agent.sock"), &clock)
        .credentials()
        .await
        .unwrap();
    assert_eq!(creds.access_key_id, "STS.fake");
    assert_eq!(agent.hits(), 1);
}
