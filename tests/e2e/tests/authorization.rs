//! Who the agent serves, seen from other users (issue 10, items 1, 2 and 8): a denied user
//! holding idle connections starves no allowed caller, a denied caller is answered at once
//! (also one that sends late), a reload revokes a caller on its open connection, and a
//! non-root operator is served by its own agent. All need root (to connect as other users).
//!
//! Run against another agent binary with `ECS_AGENT_BIN` (how the regression tests were
//! checked against the code before the fix).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ecs_credential_agent_e2e::http::keep_alive_get;
use ecs_credential_agent_e2e::*;
use nix::sys::signal::Signal;

/// A user allowed only through its supplementary group [`ALLOWED_GID`].
const ALLOWED_UID: u32 = 4242;
const ALLOWED_GID: u32 = 4243;

fn agent_bin() -> PathBuf {
    agent_bin_under_test(agent_bin!())
}

/// Connects `n` times to `socket` as `uid`, primary gid `gid` and supplementary `groups`.
///
/// The connections are made from a thread of their own that takes those credentials for itself
/// alone: Linux keeps credentials per thread, and the raw system calls (unlike glibc's
/// wrappers, which change every thread of the process) change only the caller's. The thread
/// ends right after; the connections stay with the test. Needs root.
fn connect_as(socket: &Path, uid: u32, gid: u32, groups: &[u32], n: usize) -> Vec<StdStream> {
    let (socket, groups) = (socket.to_owned(), groups.to_vec());
    std::thread::spawn(move || {
        // SAFETY: plain system calls on this thread's own credentials, with a valid array.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                0,
                "setgroups: {}",
                io::Error::last_os_error()
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        (0..n)
            .map(|i| StdStream::connect(&socket).unwrap_or_else(|e| panic!("connection {i}: {e}")))
            .collect()
    })
    .join()
    .expect("the connecting thread")
}

/// Whether `s` has something to read (or was closed) within `limit`.
fn readable_within(s: &StdStream, limit: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as libc::c_int) };
    n == 1
}

/// What the agent sends on `s` until it closes its side (bounded by a generous deadline).
fn read_to_close(s: &mut StdStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

/// One `GET /v1/credentials` with `Connection: close` on `s`; the whole answer.
fn get_on(s: &mut StdStream) -> String {
    s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    read_to_close(s)
}

/// An agent whose socket everyone can open, so the peer check is what decides.
async fn open_agent(emu_endpoint: &str, tweak: impl FnOnce(&mut AgentConfig)) -> TestAgent {
    let mut config = AgentConfig::new(emu_endpoint);
    config.set("server", "socket_mode", "\"0666\"");
    tweak(&mut config);
    let agent = TestAgent::builder(agent_bin(), &config).start().await;
    agent.open_dir();
    agent.credentials().await;
    agent
}

async fn metric(agent: &TestAgent, name: &str) -> f64 {
    let text = agent.get("/metrics").await.body;
    let series = format!("ecs_credential_agent_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Regression (item 1): a user outside the allowed group holding more idle connections than
/// `max_connections` used to take every slot (answered only once a request arrived, until
/// `header_timeout`), so the allowed caller got `503 TooManyConnections`, and the denied user
/// was neither counted nor audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_user_holding_idle_connections_does_not_starve_an_allowed_one() {
    require_root!();
    const MAX_CONNECTIONS: usize = 16;
    const HELD: usize = 4 * MAX_CONNECTIONS;
    let emu = emulator(Default::default()).await;
    let agent = open_agent(&emu.endpoint(), |c| {
        c.set("server", "allowed_gids", &format!("[{ALLOWED_GID}]"))
            .set("server", "max_connections", &MAX_CONNECTIONS.to_string())
            .set("server", "header_timeout_ms", "30000");
    })
    .await;
    let socket = agent.socket.clone();
    let mut held =
        tokio::task::spawn_blocking(move || connect_as(&socket, NOBODY, NOBODY, &[], HELD))
            .await
            .unwrap();

    // The allowed caller (through its group) is served, again and again (one connection at a
    // time: it has a share of `max_connections` too).
    let socket = agent.socket.clone();
    let answers = tokio::task::spawn_blocking(move || {
        (0..10)
            .map(|_| {
                let mut s = connect_as(&socket, ALLOWED_UID, ALLOWED_UID, &[ALLOWED_GID], 1);
                get_on(&mut s[0])
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for a in &answers {
        assert!(a.starts_with("HTTP/1.1 200 "), "{a}\n{}", agent.logs());
    }
    // Each held connection was answered 403 although it sent nothing.
    let forbidden = tokio::task::spawn_blocking(move || {
        held.iter_mut()
            .map(read_to_close)
            .filter(|a| a.starts_with("HTTP/1.1 403 ") && a.contains("Forbidden"))
            .count()
    })
    .await
    .unwrap();
    assert_eq!(forbidden, HELD, "{}", agent.logs());
    assert_eq!(metric(&agent, "callers_denied_total").await, HELD as f64);
    assert!(
        agent
            .wait_for_log(&NOBODY.to_string(), Duration::from_secs(10))
            .await,
        "no denial audited for uid {NOBODY}:\n{}",
        agent.logs()
    );
}

/// A denied caller that sends its request only after the `403` arrived still sends it without
/// error and reads the answer; the agent's `get` exits 77 (`EX_NOPERM`) every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_slow_sender_reads_the_403_and_get_exits_77() {
    require_root!();
    let emu = emulator(Default::default()).await;
    let agent = open_agent(&emu.endpoint(), |_| {}).await;
    let socket = agent.socket.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = connect_as(&socket, NOBODY, NOBODY, &[], 1).remove(0);
        // Wait until the answer is there, then send.
        assert!(
            readable_within(&s, Duration::from_secs(20)),
            "no answer at accept"
        );
        let sent = s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: localhost\r\n\r\n");
        (sent.map_err(|e| e.to_string()), read_to_close(&mut s))
    })
    .await
    .unwrap();
    assert_eq!(answer.0, Ok(()), "the late request could not be sent");
    assert!(answer.1.starts_with("HTTP/1.1 403 "), "{}", answer.1);

    for _ in 0..10 {
        let out = get_as_nobody(agent_bin!(), &agent.socket);
        assert_eq!(out.status.code(), Some(77), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.to_lowercase().contains("denied"), "{stderr}");
    }
}

/// Regression (item 2): a caller whose group a reload removed kept being served on its open
/// keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_revokes_a_group_member_on_its_open_connection() {
    require_root!();
    let emu = emulator(Default::default()).await;
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("server", "socket_mode", "\"0666\"").set(
        "server",
        "allowed_gids",
        &format!("[{ALLOWED_GID}]"),
    );
    let mut agent = TestAgent::builder(agent_bin(), &config).start().await;
    agent.open_dir();
    agent.credentials().await;
    let socket = agent.socket.clone();
    let std_stream = tokio::task::spawn_blocking(move || {
        connect_as(&socket, ALLOWED_UID, ALLOWED_UID, &[ALLOWED_GID], 1).remove(0)
    })
    .await
    .unwrap();
    std_stream.set_nonblocking(true).unwrap();
    let mut kept = tokio::net::UnixStream::from_std(std_stream).unwrap();
    assert_eq!(keep_alive_get(&mut kept).await.unwrap().status, 200);

    agent.rewrite_config(config.set("server", "allowed_gids", "[]"));
    let pid = nix::unistd::Pid::from_raw(agent.child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    assert!(
        agent
            .wait_for_log("configuration reloaded", Duration::from_secs(10))
            .await,
        "{}",
        agent.logs()
    );
    let r = keep_alive_get(&mut kept).await.unwrap();
    assert_eq!(r.status, 403, "{r:?}\n{}", agent.logs());
    assert!(
        keep_alive_get(&mut kept).await.is_err(),
        "the revoked caller's connection is closed"
    );
    assert!(agent.stop(Signal::SIGTERM).success());
}

/// Regression (item 8): `allowed_uids` defaulted to `[0]`, so a non-root operator running the
/// agent was refused by it. The agent's own uid (here nobody) and root are always served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_operator_is_served_by_its_own_agent() {
    require_root!();
    if !nobody::have_setpriv() {
        return;
    }
    let emu = emulator(Default::default()).await;
    // The agent runs as nobody, so it needs a socket directory nobody can write.
    let (dir, socket) = nobody::socket_dir_for_nobody();
    // The default rules: no `allowed_uids`, no `allowed_gids`.
    let config = AgentConfig::new(&emu.endpoint());
    let agent = TestAgent::builder(agent_bin(), &config)
        .dir(dir)
        .socket(socket)
        .via(nobody::setpriv())
        .start()
        .await;
    agent.credentials().await;
    let out = get_as_nobody(agent_bin!(), &agent.socket);
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{}", agent.logs());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["Code"], "Success");
}
