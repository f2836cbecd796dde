//! Per-application profiles (issue 13) against the real agent, the metadata emulator and the
//! STS emulator: each caller gets its own profile's RAM role from one agent, on the socket and
//! the loopback listener; `unit` and `exe` selectors match the caller's process; a reload
//! re-maps or refuses callers on their open connections; a thousand cold callers cause one
//! `AssumeRole`; a role that cannot be assumed answers `503` with STS's reason and never the
//! instance role. Every AccessKeyId served is checked against the emulators' key store, which
//! knows whose each one is.
//!
//! Callers under other uids connect from threads that take those credentials for themselves
//! alone, or run the agent's own `get` as child processes: these tests need root (CI runs as
//! root) and skip visibly otherwise.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ecs_credential_agent_e2e::http::{free_loopback_port, keep_alive_get, parse_response};
use ecs_credential_agent_e2e::sts::{
    add_profiles, role_arn, toml_path, toml_string, Profile, StsRig, INSTANCE_ROLE,
};
use ecs_credential_agent_e2e::*;
use ecs_metadata_emulator::sts::TargetRole;
use ecs_metadata_emulator::{EmulatorConfig, Endpoint};
use nix::sys::signal::Signal;

/// Callers' uids: no passwd entries needed, `uid` selectors name them directly.
const UID_A: u32 = 5001;
const UID_B: u32 = 5002;
const UID_C: u32 = 5003;
const UID_D: u32 = 5004;

/// How long a test waits for anything the agent does (generous: CI runs under CPU load).
const PATIENCE: Duration = Duration::from_secs(60);

fn agent_bin() -> PathBuf {
    agent_bin_under_test(agent_bin!())
}

/// Runs `f` on a thread of its own whose credentials (raw system calls: this thread only, not
/// the process) are uid and gid `uid`, no supplementary groups: a socket it makes or connects
/// is `uid`'s. Needs root.
fn as_uid<T: Send + 'static>(uid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: plain system calls on this thread's own credentials.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
                0,
                "setgroups: {}",
                io::Error::last_os_error()
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        f()
    })
    .join()
    .expect("the thread running as another uid")
}

/// `n` connections to `socket` made as `uid`.
async fn connect_as(socket: &Path, uid: u32, n: usize) -> Vec<StdStream> {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        as_uid(uid, move || {
            (0..n)
                .map(|i| {
                    StdStream::connect(&socket).unwrap_or_else(|e| panic!("connection {i}: {e}"))
                })
                .collect()
        })
    })
    .await
    .unwrap()
}

/// One connection to `socket` made as `uid`, for tokio.
async fn keep_alive_as(socket: &Path, uid: u32) -> tokio::net::UnixStream {
    let s = connect_as(socket, uid, 1).await.remove(0);
    s.set_nonblocking(true).unwrap();
    tokio::net::UnixStream::from_std(s).unwrap()
}

/// `raw` sent on `s`, the answer read to the end (the requests say `Connection: close`).
fn exchange<S: Read + Write>(mut s: S, raw: &str) -> io::Result<Vec<u8>> {
    s.write_all(raw.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// One `GET /v1/credentials` over the socket as `uid` (`Connection: close`).
async fn get_as(socket: &Path, uid: u32) -> Response {
    get_path_as(socket, uid, "/v1/credentials").await
}

/// One `GET path` over the socket as `uid` (`Connection: close`).
async fn get_path_as(socket: &Path, uid: u32, path: &str) -> Response {
    let s = connect_as(socket, uid, 1).await.remove(0);
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let raw = tokio::task::spawn_blocking(move || {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        exchange(s, &raw)
    })
    .await
    .unwrap()
    .expect("an exchange over the socket");
    parse_response(&raw)
}

/// One `GET /v1/credentials` over the loopback listener `addr` from a socket `uid` owns.
async fn tcp_get_as(addr: SocketAddr, uid: u32) -> Response {
    let raw = tokio::task::spawn_blocking(move || {
        as_uid(uid, move || {
            let s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(PATIENCE))?;
            exchange(
                s,
                "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
        })
    })
    .await
    .unwrap()
    .expect("an exchange over TCP");
    parse_response(&raw)
}

/// The `AccessKeyId` of a `200` answer.
///
/// # Panics
/// Unless `r` is a `200` with an `AccessKeyId` (with `logs`).
fn key_of(r: &Response, logs: &str) -> String {
    assert_eq!(r.status, 200, "{r:?}\nlogs:\n{logs}");
    r.json()["AccessKeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("no AccessKeyId in {r:?}"))
        .to_owned()
}

/// An agent whose socket (and directory) everyone can open, so the agent's rules decide.
async fn open_agent(config: &mut AgentConfig) -> TestAgent {
    config.set("server", "socket_mode", "\"0666\"");
    let agent = TestAgent::builder(agent_bin(), config).start().await;
    agent.open_dir();
    agent
}

/// Waits until the loopback listener at `addr` accepts connections.
async fn wait_tcp(agent: &TestAgent, addr: SocketAddr) {
    let up = eventually(PATIENCE, || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(drop)
    })
    .await;
    assert!(up.is_some(), "bridge never listened:\n{}", agent.logs());
}

/// Runs `argv` as uid and gid `uid`, first moved into the cgroup directory `cgroup` when
/// given (then checked to be at the path `/proc/<pid>/cgroup` names, also given).
///
/// The child (`sh`, which then execs `argv` in place, keeping its pid) waits on its stdin until
/// the test has moved it: it cannot move itself once it is no longer root.
fn run_as(uid: u32, cgroup: Option<(&Path, &str)>, argv: &[&OsStr]) -> Output {
    let mut child = Command::new("sh")
        .args(["-c", r#"read line && exec "$@""#, "sh"])
        .args(argv)
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sh");
    if let Some((dir, path)) = cgroup {
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string())
            .unwrap_or_else(|e| panic!("move the caller into {}: {e}", dir.display()));
        assert_eq!(
            cgroup_v2_path(child.id()),
            path,
            "the caller's cgroup as /proc/<pid>/cgroup names it"
        );
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    child.wait_with_output().expect("wait for the caller")
}

/// `BIN get --socket SOCKET` as `uid` ([`run_as`]).
fn run_get(bin: &Path, socket: &Path, uid: u32, cgroup: Option<(&Path, &str)>) -> Output {
    let argv = [
        bin.as_os_str(),
        "get".as_ref(),
        "--socket".as_ref(),
        socket.as_os_str(),
    ];
    run_as(uid, cgroup, &argv)
}

/// `GET /v1/credentials` over TCP to `addr` by `bash` (its `/dev/tcp`) as `uid` ([`run_as`]):
/// a process that owns its socket, unlike a thread of the test.
fn run_tcp_get(addr: SocketAddr, uid: u32, cgroup: Option<(&Path, &str)>) -> Response {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && printf 'GET /v1/credentials HTTP/1.1\\r\\nHost: \
         127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3",
        addr.ip(),
        addr.port()
    );
    let out = run_as(
        uid,
        cgroup,
        &["bash".as_ref(), "-c".as_ref(), script.as_ref()],
    );
    assert!(out.status.success(), "{out:?}");
    parse_response(&out.stdout)
}

/// The `AccessKeyId` `get` printed.
///
/// # Panics
/// Unless `get` succeeded (with its stderr and `logs`).
fn printed_key(out: &Output, logs: &str) -> String {
    assert_eq!(out.status.code(), Some(0), "{out:?}\nlogs:\n{logs}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    printed["AccessKeyId"].as_str().unwrap().to_owned()
}

/// The `0::` line of `/proc/<pid>/cgroup`: the process's cgroup v2 path.
fn cgroup_v2_path(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line for pid {pid}"))
        .to_owned()
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` on a pure-v2 machine, `/sys/fs/cgroup/unified`
/// on a hybrid one) and the cgroup path its root stands for, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        Some((PathBuf::from(fields.get(4)?), (*fields.get(3)?).to_owned()))
    })
}

/// Cgroup directories made for a test, removed (deepest first) when dropped.
struct Cgroups {
    mount: PathBuf,
    root: String,
    made: Vec<PathBuf>,
}

impl Cgroups {
    /// Makes `path` (`/a/b/c`, relative to the mount's root) and its missing parents; its
    /// directory and its path as `/proc/<pid>/cgroup` will name it.
    fn make(&mut self, path: &str) -> (PathBuf, String) {
        let mut dir = self.mount.clone();
        for part in path.trim_start_matches('/').split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.made.push(dir.clone());
            }
        }
        let full = format!("{}{path}", self.root.trim_end_matches('/'));
        (dir, full)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Every AccessKeySecret and SecurityToken of `key_ids`, and the metadata tokens issued.
fn secrets(rig: &StsRig, key_ids: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = key_ids.iter().flat_map(|k| rig.secrets_of(k)).collect();
    out.extend(
        rig.metadata
            .issued_tokens()
            .into_iter()
            .filter(|t| t.len() >= 16),
    );
    out
}

/// Three uids, three profiles, three RAM roles, one agent: each caller's AccessKeyId is one STS
/// issued for its own profile's role, over the socket and over the loopback listener (where
/// the caller is identified by its socket's uid), with one `AssumeRole` per role; root, whom
/// no profile names, keeps the instance role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_uids_get_three_roles_from_one_agent() {
    require_root!();
    let rig = StsRig::start(&["app-a", "app-b", "app-c"]).await;
    let port = free_loopback_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut config = rig.config();
    config
        .set("bridge", "listen", &toml_string(&addr.to_string()))
        .set("profiles", "unmatched", "\"deny\"");
    add_profiles(
        &mut config,
        &[
            Profile::new("a", &format!("uid = {UID_A}"), &role_arn("app-a")),
            Profile::new("b", &format!("uid = {UID_B}"), &role_arn("app-b")),
            Profile::new("c", &format!("uid = {UID_C}"), &role_arn("app-c")),
        ],
    );
    let agent = open_agent(&mut config).await;
    wait_tcp(&agent, addr).await;

    let mut served = Vec::new();
    for (uid, role) in [(UID_A, "app-a"), (UID_B, "app-b"), (UID_C, "app-c")] {
        let key = key_of(&get_as(&agent.socket, uid).await, &agent.logs());
        assert_eq!(rig.role_of(&key).as_deref(), Some(role), "uid {uid}");
        served.push(key);
    }
    // Over TCP, the same profile's credentials (the same generation) for the socket's owner.
    let tcp = key_of(&tcp_get_as(addr, UID_B).await, &agent.logs());
    assert_eq!(tcp, served[1], "uid {UID_B} over TCP");
    let tcp = key_of(&tcp_get_as(addr, UID_C).await, &agent.logs());
    assert_eq!(tcp, served[2], "uid {UID_C} over TCP");
    // Root: no profile, trusted, the instance role.
    let root = agent.credentials().await["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rig.role_of(&root).as_deref(), Some(INSTANCE_ROLE));

    // Health: a caller sees its own profile; root sees every profile. Metrics name them.
    let health = get_path_as(&agent.socket, UID_A, "/v1/health").await;
    assert_eq!(health.status, 200, "{health:?}");
    let health = health.json();
    assert_eq!(health["Profile"], "a", "{health}");
    assert_eq!(health["RoleName"], "app-a", "{health}");
    assert!(health["Profiles"].is_null(), "{health}");
    let health = agent.get("/v1/health").await.json();
    let all = health["Profiles"]
        .as_object()
        .unwrap_or_else(|| panic!("{health}"));
    assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b", "c"], "{health}");
    let metrics = agent.get("/metrics").await.body;
    for name in ["a", "b", "c"] {
        let label = format!("profile=\"{name}\"");
        assert!(metrics.contains(&label), "no {label} in\n{metrics}");
    }

    let counts = rig.sts.counts();
    for role in ["app-a", "app-b", "app-c"] {
        let c = counts.role(&role_arn(role));
        assert_eq!((c.calls, c.accepted), (1, 1), "{role}: {counts:?}");
    }
    let mut keys: Vec<&str> = served.iter().map(String::as_str).collect();
    keys.push(&root);
    assert_no_secret(&agent.logs(), &secrets(&rig, &keys), "the agent's logs");
}

/// A cgroup's directory and its path as `/proc/<pid>/cgroup` names it.
type Cgroup = (PathBuf, String);

/// A unit's cgroup and a look-alike whose path ends with the whole unit path (as one a user
/// could make in its delegated tree), named after this process and `test`: each directory and
/// the path `/proc/<pid>/cgroup` names it by. `None` (the test skips) without cgroup v2.
fn unit_and_look_alike(test: &str) -> Option<(Cgroups, Cgroup, Cgroup)> {
    let Some((mount, root)) = cgroup2_mount() else {
        eprintln!("SKIPPED: cgroup v2 is not mounted");
        return None;
    };
    let mut cgroups = Cgroups {
        mount,
        root,
        made: Vec::new(),
    };
    let base = format!("/eca-e2e-{}-{test}", std::process::id());
    let unit = cgroups.make(&format!("{base}/system.slice/billing.service"));
    let fake = cgroups.make(&format!("{base}-user/delegated{}", unit.1));
    assert!(fake.1.ends_with(&unit.1), "{} ends with {}", fake.1, unit.1);
    Some((cgroups, unit, fake))
}

/// An agent with a `billing` profile selecting `unit`, uid [`UID_A`] allowed (so it gets the
/// instance role when no profile matches), and `tweak`.
async fn unit_agent(rig: &StsRig, unit: &str, tweak: impl FnOnce(&mut AgentConfig)) -> TestAgent {
    let mut config = rig.config();
    config.set("server", "allowed_uids", &format!("[{UID_A}]"));
    tweak(&mut config);
    add_profiles(
        &mut config,
        &[Profile::new(
            "billing",
            &format!("unit = {}", toml_string(unit)),
            &role_arn("billing-app"),
        )],
    );
    open_agent(&mut config).await
}

/// A `unit` selector matches the caller's full cgroup path: the same uid gets the profile's
/// role inside that cgroup, and the instance role outside it and in the look-alike cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_selector_matches_the_full_cgroup_path_only() {
    require_root!();
    let Some((cgroups, (unit_dir, unit), (fake_dir, fake))) = unit_and_look_alike("socket") else {
        return;
    };
    let rig = StsRig::start(&["billing-app"]).await;
    let agent = unit_agent(&rig, &unit, |_| {}).await;
    let bin = agent_bin();
    let socket = agent.socket.clone();
    let (inside, outside, look_alike) = tokio::task::spawn_blocking(move || {
        (
            run_get(&bin, &socket, UID_A, Some((&unit_dir, &unit))),
            run_get(&bin, &socket, UID_A, None),
            run_get(&bin, &socket, UID_A, Some((&fake_dir, &fake))),
        )
    })
    .await
    .unwrap();
    let logs = agent.logs();
    let inside = printed_key(&inside, &logs);
    assert_eq!(rig.role_of(&inside).as_deref(), Some("billing-app"));
    let outside = printed_key(&outside, &logs);
    assert_eq!(rig.role_of(&outside).as_deref(), Some(INSTANCE_ROLE));
    let look_alike = printed_key(&look_alike, &logs);
    assert_eq!(rig.role_of(&look_alike).as_deref(), Some(INSTANCE_ROLE));
    drop(cgroups);
}

/// Over the loopback listener, a `unit` selector matches through the cgroup id of the caller's
/// socket: a process in the unit's cgroup gets the profile's role; the same uid outside it, or
/// in the look-alike cgroup, the instance role. (Where cgroup v2 is mounted differs: a hybrid
/// machine mounts it at `/sys/fs/cgroup/unified`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_selector_matches_a_tcp_caller_by_its_socket_cgroup() {
    require_root!();
    let Some((cgroups, (unit_dir, unit), (fake_dir, fake))) = unit_and_look_alike("tcp") else {
        return;
    };
    let rig = StsRig::start(&["billing-app"]).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_loopback_port())
        .parse()
        .unwrap();
    let agent = unit_agent(&rig, &unit, |c| {
        c.set("bridge", "listen", &toml_string(&addr.to_string()));
    })
    .await;
    wait_tcp(&agent, addr).await;
    let (inside, outside, look_alike) = tokio::task::spawn_blocking(move || {
        (
            run_tcp_get(addr, UID_A, Some((&unit_dir, &unit))),
            run_tcp_get(addr, UID_A, None),
            run_tcp_get(addr, UID_A, Some((&fake_dir, &fake))),
        )
    })
    .await
    .unwrap();
    let logs = agent.logs();
    let outside = key_of(&outside, &logs);
    assert_eq!(rig.role_of(&outside).as_deref(), Some(INSTANCE_ROLE));
    let look_alike = key_of(&look_alike, &logs);
    assert_eq!(rig.role_of(&look_alike).as_deref(), Some(INSTANCE_ROLE));
    let inside = key_of(&inside, &logs);
    assert_eq!(
        rig.role_of(&inside).as_deref(),
        Some("billing-app"),
        "a TCP caller in {}",
        cgroups.mount.display()
    );
    drop(cgroups);
}

/// An `exe` selector matches the caller's executable by path: of two links to the same file,
/// the one named gets the profile's role and the other the instance role, for the same uid.
/// Over the loopback listener `exe` never matches (there is no process): `bash`, named by a
/// profile, gets the instance role over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exe_selector_matches_the_executable_path() {
    require_root!();
    let bin = agent_bin();
    // Beside the binary (same file system, so a hard link; else a copy), readable by the caller.
    let dir = tempfile::Builder::new()
        .prefix("eca-exe-")
        .tempdir_in(bin.parent().unwrap())
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let named = dir.path().join("billing-client");
    let other = dir.path().join("other-client");
    for link in [&named, &other] {
        if std::fs::hard_link(&bin, link).is_err() {
            std::fs::copy(&bin, link).unwrap();
        }
    }
    let bash = std::fs::canonicalize("/bin/bash").expect("bash");

    let rig = StsRig::start(&["billing-app", "shell-app"]).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_loopback_port())
        .parse()
        .unwrap();
    let mut config = rig.config();
    config
        .set("server", "allowed_uids", &format!("[{UID_B}]"))
        .set("bridge", "listen", &toml_string(&addr.to_string()));
    add_profiles(
        &mut config,
        &[
            Profile::new(
                "billing",
                &format!("exe = {}", toml_path(&named)),
                &role_arn("billing-app"),
            ),
            Profile::new(
                "shell",
                &format!("exe = {}", toml_path(&bash)),
                &role_arn("shell-app"),
            ),
        ],
    );
    let agent = open_agent(&mut config).await;
    wait_tcp(&agent, addr).await;
    let socket = agent.socket.clone();
    let (by_named, by_other, by_bash) = tokio::task::spawn_blocking(move || {
        (
            run_get(&named, &socket, UID_B, None),
            run_get(&other, &socket, UID_B, None),
            run_tcp_get(addr, UID_B, None),
        )
    })
    .await
    .unwrap();
    let logs = agent.logs();
    let by_named = printed_key(&by_named, &logs);
    assert_eq!(rig.role_of(&by_named).as_deref(), Some("billing-app"));
    let by_other = printed_key(&by_other, &logs);
    assert_eq!(rig.role_of(&by_other).as_deref(), Some(INSTANCE_ROLE));
    let by_bash = key_of(&by_bash, &logs);
    assert_eq!(rig.role_of(&by_bash).as_deref(), Some(INSTANCE_ROLE));
}

/// After a reload (`SIGHUP`), a caller whose profile changed gets the new profile's role at its
/// next request on its open keep-alive connection, and a caller no profile matches any more,
/// admitted by `allowed_uids` under `unmatched = "deny"`, gets `403` there and is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_remaps_and_refuses_callers_on_their_open_connections() {
    require_root!();
    let rig = StsRig::start(&["app-a", "app-b", "app-c"]).await;
    let mut base = rig.config();
    base.set("server", "allowed_uids", &format!("[{UID_B}]"))
        .set("server", "socket_mode", "\"0666\"")
        .set("server", "first_credentials_wait_ms", "60000")
        .set("profiles", "unmatched", "\"deny\"");
    let mut before = base.clone();
    add_profiles(
        &mut before,
        &[
            Profile::new("a", &format!("uid = {UID_A}"), &role_arn("app-a")),
            Profile::new("b", &format!("uid = {UID_B}"), &role_arn("app-b")),
        ],
    );
    let mut agent = open_agent(&mut before).await;
    let mut a = keep_alive_as(&agent.socket, UID_A).await;
    let mut b = keep_alive_as(&agent.socket, UID_B).await;
    let r = keep_alive_get(&mut a).await.unwrap();
    assert_eq!(
        rig.role_of(&key_of(&r, &agent.logs())).as_deref(),
        Some("app-a")
    );
    let r = keep_alive_get(&mut b).await.unwrap();
    assert_eq!(
        rig.role_of(&key_of(&r, &agent.logs())).as_deref(),
        Some("app-b")
    );

    let mut after = base.clone();
    add_profiles(
        &mut after,
        &[Profile::new(
            "c",
            &format!("uid = {UID_A}"),
            &role_arn("app-c"),
        )],
    );
    agent.rewrite_config(&after);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid() as i32),
        Signal::SIGHUP,
    )
    .unwrap();
    assert!(
        agent.wait_for_log("configuration reloaded", PATIENCE).await,
        "{}",
        agent.logs()
    );

    let r = keep_alive_get(&mut a)
        .await
        .unwrap_or_else(|e| panic!("uid {UID_A} after the reload: {e}\n{}", agent.logs()));
    assert_eq!(
        rig.role_of(&key_of(&r, &agent.logs())).as_deref(),
        Some("app-c"),
        "uid {UID_A} re-mapped on its open connection"
    );
    let r = keep_alive_get(&mut b)
        .await
        .unwrap_or_else(|e| panic!("uid {UID_B} after the reload: {e}\n{}", agent.logs()));
    assert_eq!((r.status, r.code()), (403, "Forbidden".to_owned()), "{r:?}");
    assert!(r.message().contains("profile"), "{r:?}");
    assert!(
        keep_alive_get(&mut b).await.is_err(),
        "the refused caller's connection is closed"
    );
    // New connections get the same answers.
    let r = get_as(&agent.socket, UID_A).await;
    assert_eq!(
        rig.role_of(&key_of(&r, &agent.logs())).as_deref(),
        Some("app-c")
    );
    assert_eq!(get_as(&agent.socket, UID_B).await.status, 403);
    assert!(agent.stop(Signal::SIGTERM).success(), "{}", agent.logs());
}

/// A thousand callers of one profile, all connected and waiting before any credentials exist
/// (the instance role's credential GET is held at the metadata emulator), cause exactly one
/// `AssumeRole`, and all get `200` with the same AccessKeyId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_callers_of_one_profile_cause_one_assume_role() {
    require_root!();
    const CALLERS: usize = 1000;
    raise_open_files_limit();
    let rig = StsRig::start(&["app-a"]).await;
    let arn = role_arn("app-a");
    let gate = rig.metadata.gate(Endpoint::Credentials);
    let mut config = rig.config();
    config.set("server", "max_connections", "4000").set(
        "server",
        "first_credentials_wait_ms",
        "300000",
    );
    add_profiles(
        &mut config,
        &[Profile::new("a", &format!("uid = {UID_A}"), &arn)],
    );
    let agent = open_agent(&mut config).await;
    let pid = agent.pid();

    let streams = connect_as(&agent.socket, UID_A, CALLERS).await;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| {
            s.set_nonblocking(true).unwrap();
            let mut s = tokio::net::UnixStream::from_std(s).unwrap();
            tokio::spawn(async move { keep_alive_get(&mut s).await })
        })
        .collect();
    // The agent holds every connection while nothing has reached STS yet.
    let held = eventually(PATIENCE, || async {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        (fds >= CALLERS).then_some(fds)
    })
    .await;
    assert!(held.is_some(), "the callers never all connected");
    assert_eq!(rig.sts.counts().total.calls, 0, "credentials were not cold");
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "answered while cold"
    );

    gate.release();
    let mut keys = std::collections::BTreeSet::new();
    for t in tasks {
        let r = tokio::time::timeout(PATIENCE, t)
            .await
            .expect("an answer")
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.logs()));
        keys.insert(key_of(&r, ""));
    }
    assert_eq!(keys.len(), 1, "one AccessKeyId for all: {keys:?}");
    let key = keys.pop_first().unwrap();
    assert_eq!(rig.role_of(&key).as_deref(), Some("app-a"));
    let c = rig.sts.counts().role(&arn);
    assert_eq!((c.calls, c.accepted), (1, 1), "{c:?}");
}

/// A profile whose role cannot be assumed (`NoPermission`: neither permitted nor trusted;
/// `EntityNotExist.Role`: no such role) answers its callers `503` saying STS's reason in words,
/// again after STS refused again, and never with the instance role's credentials, while other
/// callers keep theirs; no secret reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_cannot_be_assumed_answers_503_with_sts_reason_and_no_fallback() {
    require_root!();
    let locked = TargetRole {
        permitted: Vec::new(),
        trusted: Vec::new(),
        ..TargetRole::new(&role_arn("locked-app"), INSTANCE_ROLE)
    };
    let rig = StsRig::with_roles(
        EmulatorConfig::default(),
        vec![locked, TargetRole::new(&role_arn("ok-app"), INSTANCE_ROLE)],
    )
    .await;
    let mut config = rig.config();
    // A caller of a failing profile that never had credentials waits this long for its first.
    config
        .set("server", "allowed_uids", &format!("[{UID_C}]"))
        .set("server", "first_credentials_wait_ms", "1000");
    add_profiles(
        &mut config,
        &[
            Profile::new("locked", &format!("uid = {UID_A}"), &role_arn("locked-app")),
            Profile::new(
                "missing",
                &format!("uid = {UID_B}"),
                &role_arn("missing-app"),
            ),
            Profile::new("ok", &format!("uid = {UID_D}"), &role_arn("ok-app")),
        ],
    );
    let agent = open_agent(&mut config).await;
    let instance = agent.credentials().await["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rig.role_of(&instance).as_deref(), Some(INSTANCE_ROLE));

    let refused = |uid: u32, code: &'static str| {
        let (agent, rig, instance) = (&agent, &rig, &instance);
        async move {
            // Wait until STS has refused at least twice (a retry), then ask.
            let counted = eventually(PATIENCE, || async {
                (rig.sts.counts().code(code) >= 2).then_some(())
            })
            .await;
            assert!(counted.is_some(), "STS never refused twice with {code}");
            let r = get_as(&agent.socket, uid).await;
            assert_eq!(
                (r.status, r.code()),
                (503, "CredentialsUnavailable".to_owned()),
                "uid {uid}: {r:?}\n{}",
                agent.logs()
            );
            assert!(r.json().get("AccessKeyId").is_none(), "{r:?}");
            assert!(!r.body.contains(instance.as_str()), "{r:?}");
            r.message()
        }
    };
    let message = refused(UID_A, "NoPermission").await;
    for words in [
        "NoPermission",
        "sts:AssumeRole",
        "trust policy",
        "locked-app",
    ] {
        assert!(message.contains(words), "{words:?} not in {message:?}");
    }
    let message = refused(UID_B, "EntityNotExist.Role").await;
    for words in ["EntityNotExist.Role", "does not exist", "missing-app"] {
        assert!(message.contains(words), "{words:?} not in {message:?}");
    }
    // The others are served: the instance role to an allowed uid, its role to a profile.
    let r = get_as(&agent.socket, UID_C).await;
    assert_eq!(key_of(&r, &agent.logs()), instance, "uid {UID_C}");
    let ok = key_of(&get_as(&agent.socket, UID_D).await, &agent.logs());
    assert_eq!(rig.role_of(&ok).as_deref(), Some("ok-app"));
    assert_eq!(rig.sts.counts().role(&role_arn("locked-app")).accepted, 0);

    assert_no_secret(
        &agent.logs(),
        &secrets(&rig, &[&instance, &ok]),
        "the agent's logs",
    );
}
