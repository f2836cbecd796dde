//! Profiles over real sockets: each caller is answered from its own profile's credentials,
//! a reload remaps or refuses an open connection at its next request, `/v1/health` shows a
//! caller its own profile (root sees all), and a profile whose credentials are unavailable
//! answers 503 with the reason, never the instance role's credentials.
//!
//! Profiles get their credentials from fake sources ([`FixedSource`]) through the real
//! registry. The loopback listener is tested end to end (the e2e package), not here.

use std::sync::Arc;
use std::time::Duration;

use super::{get_on, valid_state, Harness, SECRET};
use crate::metrics::Metrics;
use crate::policy::{Selector, Spec, Unmatched};
use crate::profiles::{self, Registry, Set};
use crate::server::Supervision;
use crate::test_logs::{capture_logs, logs};
use crate::test_support::FixedSource;
use crate::time::{SharedTimeSource, SystemClock};

/// The instance role's `AccessKeyId` in [`valid_state`].
const INSTANCE_KEY: &str = "STS.test1";

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn uid(u: u32) -> Selector {
    Selector {
        uid: Some(u),
        ..Selector::default()
    }
}

/// A profile `name` for callers `selector` selects; its credentials' `AccessKeyId` is
/// `KEY-<name>`, or its source fails with `fail`.
struct Row<'a>(&'a str, Selector, Option<&'a str>);

/// A registry serving `rows` (each its own role), and the set a reload would publish.
fn profile_set(rows: &[Row<'_>], unmatched: Unmatched) -> (Registry, Set) {
    profile_set_counted(rows, unmatched, Metrics::new())
}

/// [`profile_set`], counting the profiles' answers in `metrics`.
fn profile_set_counted(
    rows: &[Row<'_>],
    unmatched: Unmatched,
    metrics: Metrics,
) -> (Registry, Set) {
    let fails: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| (r.0.to_owned(), r.2.map(str::to_owned)))
        .collect();
    let time: SharedTimeSource = Arc::new(SystemClock);
    let source_time = Arc::clone(&time);
    let make = move |spec: &crate::sources::sts::RoleSpec| {
        let fail = fails
            .iter()
            .find(|(name, _)| *name == spec.profile)
            .and_then(|(_, fail)| fail.clone());
        FixedSource {
            key: format!("KEY-{}", spec.profile),
            fail,
            time: Arc::clone(&source_time),
        }
    };
    let policy = crate::credentials::RefreshPolicy::default();
    let factory = profiles::factory(make, policy, time, metrics.clone());
    let mut registry = Registry::new(factory, metrics);
    let specs: Vec<Spec> = rows
        .iter()
        .map(|r| Spec {
            name: r.0.to_owned(),
            selector: r.1.clone(),
            role_arn: format!("acs:ram::123456789012:role/{}", r.0),
            policy: None,
            policy_file: None,
            duration_secs: 3600,
        })
        .collect();
    let set = registry.reconcile(&specs, unmatched);
    (registry, set)
}

fn start(set: Set, judge_every_uid: bool, allowed_uids: Vec<u32>) -> Harness {
    let (state, _) = valid_state();
    let supervision = Supervision {
        judge_every_uid,
        ..Supervision::default()
    };
    Harness::start_with_profiles(
        state,
        |c| {
            c.allowed_uids = allowed_uids;
            c.first_credentials_wait = Duration::from_secs(30);
            c.socket_mode = 0o666;
        },
        supervision,
        set,
    )
}

#[tokio::test]
async fn a_caller_gets_its_profile_credentials_and_the_audit_names_the_profile() {
    let (buf, _guard) = capture_logs();
    let metrics = Metrics::new();
    let (_registry, set) = profile_set_counted(
        &[
            Row("other", uid(me().wrapping_add(1)), None),
            Row("mine", uid(me()), None),
        ],
        Unmatched::InstanceRole,
        metrics.clone(),
    );
    let h = start(set, false, Vec::new());
    let r = h.get("/v1/credentials").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["AccessKeyId"], "KEY-mine");
    let metrics = metrics.encode();
    assert!(
        metrics.contains("profile_credentials_served_total{profile=\"mine\"} 1"),
        "{metrics}"
    );
    let text = logs(&buf);
    let issued = text
        .lines()
        .find(|l| l.contains("credentials issued to caller"))
        .unwrap_or_else(|| panic!("no issued event in {text}"));
    assert!(
        issued.contains("profile") && issued.contains("mine"),
        "{issued}"
    );
    assert!(!text.contains(SECRET));
}

/// Two callers under two uids, each mapped to its own profile, over the socket: the test
/// process (root) and a child process running as `nobody` (uid 65534).
#[tokio::test]
async fn two_callers_under_two_uids_get_two_profiles_credentials() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let (_registry, set) = profile_set(
        &[
            Row("root-app", uid(0), None),
            Row("nobody-app", uid(65534), None),
        ],
        Unmatched::Deny,
    );
    let h = start(set, false, Vec::new());
    let dir = h.path.parent().unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mine = h.get("/v1/credentials").await;
    assert_eq!(
        mine.json()["AccessKeyId"],
        "KEY-root-app",
        "{}",
        mine.text()
    );
    let theirs = run_child_client(&h.path, 65534).await;
    assert!(
        theirs.contains("\"AccessKeyId\":\"KEY-nobody-app\""),
        "{theirs}"
    );
    assert!(!theirs.contains(INSTANCE_KEY), "{theirs}");
}

/// Runs [`child_client`] in a copy of this test binary as `uid`; returns what it printed.
async fn run_child_client(socket: &std::path::Path, uid: u32) -> String {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--exact",
        "server::tests::profiles::child_client",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_SOCKET, socket)
    .uid(uid)
    .gid(uid);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("running the child client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The child's environment variable naming the socket.
const CHILD_SOCKET: &str = "PROFILE_TEST_CHILD_SOCKET";

/// Not a test: the client [`two_callers_under_two_uids_get_two_profiles_credentials`] runs as
/// another uid. Prints the answer to `GET /v1/credentials` on the socket it is given.
#[test]
#[ignore = "run by two_callers_under_two_uids_get_two_profiles_credentials as another uid"]
fn child_client() {
    use std::io::{Read, Write};
    let path = std::env::var_os(CHILD_SOCKET).expect("run by the parent test");
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connecting");
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    println!("ANSWER: {answer}");
}

#[tokio::test]
async fn a_reload_remaps_then_refuses_an_open_connection_at_its_next_request() {
    let other = uid(me().wrapping_add(1));
    let (_r1, first) = profile_set(&[Row("a", uid(me()), None)], Unmatched::InstanceRole);
    let (_r2, second) = profile_set(&[Row("b", uid(me()), None)], Unmatched::InstanceRole);
    let (_r3, unmatched) = profile_set(&[Row("c", other.clone(), None)], Unmatched::InstanceRole);
    let (_r4, none) = profile_set(&[Row("c", other, None)], Unmatched::Deny);
    // Root is judged like anyone, and no list admits it: only a profile does.
    let h = start(first, true, Vec::new());
    let mut s = h.connect().await;
    let r = get_on(&mut s, "/v1/credentials").await;
    assert_eq!(r.json()["AccessKeyId"], "KEY-a", "{}", r.text());
    // Its profile changed: the new one's credentials at the next request.
    h.reload_profiles(second);
    let r = wait_for_key(&mut s, "KEY-b").await;
    assert_eq!(r.status, 200);
    // Now listed, matched by no profile, under `instance-role`: re-mapped to the instance role.
    h.reload(|c| c.allowed_uids = vec![me()]);
    h.reload_profiles(unmatched);
    wait_for_key(&mut s, INSTANCE_KEY).await;
    // Under `deny`: refused, naming the keys, and the connection closes.
    h.reload_profiles(none);
    let r = wait_for_status(&mut s, 403).await;
    r.assert_error(403, "Forbidden");
    let message = r.json()["Message"].as_str().unwrap().to_owned();
    assert!(message.contains("matches no profile"), "{message}");
    assert!(message.contains("[[profile]] whose match"), "{message}");
    assert!(message.contains("[profiles] unmatched"), "{message}");
    assert_eq!(r.header("connection"), Some("close"));
}

/// The next requests on `s` until one answers with `key` (a reload is seen at the next
/// request once the server's follower has run: bounded by a generous deadline).
async fn wait_for_key(s: &mut tokio::net::UnixStream, key: &str) -> super::Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = get_on(s, "/v1/credentials").await;
        if r.status == 200 && r.json()["AccessKeyId"] == key {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for_status(s: &mut tokio::net::UnixStream, status: u16) -> super::Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = get_on(s, "/v1/credentials").await;
        if r.status == status {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_failing_profile_answers_503_with_its_reason_and_never_the_instance_role() {
    let why = "STS refused AssumeRole: the instance role lacks sts:AssumeRole on the target";
    let (_registry, set) = profile_set(
        &[Row("broken", uid(me()), Some(why))],
        Unmatched::InstanceRole,
    );
    let h = start(set, false, Vec::new());
    let r = h.get("/v1/credentials").await;
    r.assert_error(503, "CredentialsUnavailable");
    assert!(r.text().contains("sts:AssumeRole"), "{}", r.text());
    assert!(!r.text().contains(INSTANCE_KEY) && !r.text().contains(SECRET));
    let health = h.get("/v1/health").await;
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["Profile"], "broken");
}

#[tokio::test]
async fn health_shows_a_caller_its_profile_and_root_every_profile() {
    let (_registry, set) = profile_set(
        &[
            Row("mine", uid(me()), None),
            Row("theirs", uid(me().wrapping_add(1)), Some("down")),
        ],
        Unmatched::InstanceRole,
    );
    let h = start(set, false, Vec::new());
    // Wait until the profile's credentials are held.
    let r = h.get("/v1/credentials").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let health = h.get("/v1/health").await.json();
    assert_eq!(health["Profile"], "mine");
    assert_eq!(health["RoleName"], "role-KEY-mine");
    // The test's uid is the agent's own (trusted): it sees every profile.
    assert_eq!(health["Profiles"]["mine"]["Status"], "Ok", "{health}");
    assert_eq!(
        health["Profiles"]["theirs"]["Status"], "Unavailable",
        "{health}"
    );
    // A caller that is not trusted sees its own profile only.
    let (_registry, set) = profile_set(&[Row("mine", uid(me()), None)], Unmatched::InstanceRole);
    let h = start(set, true, Vec::new());
    let r = h.get("/v1/credentials").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let health = h.get("/v1/health").await.json();
    assert_eq!(health["Profile"], "mine");
    assert!(health.get("Profiles").is_none(), "{health}");
}
