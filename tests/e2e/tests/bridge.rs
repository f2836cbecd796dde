//! The loopback TCP listener (`[bridge] listen`, issue 12): the same JSON as the socket to an
//! allowed caller, identified from the kernel's socket table; `403` naming the uid to a caller
//! that is not allowed; never served to a client that closed right after sending (its
//! TIME-WAIT socket reads as uid 0); `Host` other than the listener's refused. Loopback only.
//! The tests that connect as another user need root.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use ecs_credential_agent_e2e::http::{parse_response, Response};
use ecs_credential_agent_e2e::*;

fn agent_bin() -> PathBuf {
    agent_bin_under_test(agent_bin!())
}

/// This thread's credentials (raw system calls: this thread only, not the process) become uid
/// and gid `uid`, with no supplementary groups. Needs root.
fn become_uid_on_this_thread(uid: u32) {
    // SAFETY: plain system calls on this thread's own credentials.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
    }
}

/// An agent with `[bridge] listen` on a free port, holding credentials; and its address.
async fn bridged_agent(
    emu_endpoint: &str,
    tweak: impl FnOnce(&mut AgentConfig),
) -> (TestAgent, SocketAddr) {
    let port = ecs_credential_agent_e2e::http::free_loopback_port();
    let mut config = AgentConfig::new(emu_endpoint);
    config.set("bridge", "listen", &format!("\"127.0.0.1:{port}\""));
    tweak(&mut config);
    let agent = TestAgent::builder(agent_bin(), &config).start().await;
    agent.credentials().await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = eventually(Duration::from_secs(30), || async {
        TcpStream::connect(addr).ok().map(drop)
    })
    .await;
    assert!(
        up.is_some(),
        "bridge never listened; logs:\n{}",
        agent.logs()
    );
    (agent, addr)
}

/// `raw` sent on `stream`, the answer read to the end (the requests say `Connection: close`).
fn exchange_on(mut stream: TcpStream, raw: &str) -> Response {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    parse_response(&out)
}

/// `GET path` with `Host: host` on a new connection to `addr`.
fn get_with_host(addr: SocketAddr, path: &str, host: &str) -> Response {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    exchange_on(TcpStream::connect(addr).unwrap(), &raw)
}

/// Runs `f` on a thread of its own whose credentials (raw system calls: this thread only) are
/// uid and gid `uid`, no supplementary groups: a socket it makes is owned by `uid`. Needs root.
fn as_uid<T: Send + 'static>(uid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        become_uid_on_this_thread(uid);
        f()
    })
    .join()
    .expect("the thread running as another uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_caller_gets_exactly_what_the_socket_serves() {
    let emu = emulator(Default::default()).await;
    let (agent, addr) = bridged_agent(&emu.endpoint(), |_| {}).await;
    let socket = agent.get("/v1/credentials").await;
    assert_eq!(socket.status, 200);
    // Python sends the Host without the port; Node and Go with it.
    for host in ["127.0.0.1".to_owned(), format!("127.0.0.1:{}", addr.port())] {
        let tcp =
            tokio::task::spawn_blocking(move || get_with_host(addr, "/v1/credentials", &host))
                .await
                .unwrap();
        assert_eq!(tcp.status, 200, "{tcp:?}\nlogs:\n{}", agent.logs());
        assert_eq!(tcp.body, socket.body);
        assert_eq!(tcp.header("content-type"), socket.header("content-type"));
        assert_eq!(tcp.header("cache-control"), Some("no-store"));
    }
    let health =
        tokio::task::spawn_blocking(move || get_with_host(addr, "/v1/health", "localhost"))
            .await
            .unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.body, agent.get("/v1/health").await.body);
    assert!(
        agent
            .wait_for_log("transport=\"tcp\"", Duration::from_secs(30))
            .await
            || agent
                .wait_for_log("transport=tcp", Duration::from_secs(1))
                .await,
        "the issuance over TCP is audited naming the transport; logs:\n{}",
        agent.logs()
    );
    // With no pid, the caller is named by its socket's cgroup (where the kernel reports it).
    let logs = agent.logs();
    let issued = logs
        .lines()
        .find(|l| l.contains("event=\"issued\"") && l.contains("transport=\"tcp\""))
        .unwrap_or_else(|| panic!("no issuance over TCP audited:\n{logs}"));
    assert!(issued.contains("cgroup_id"), "{issued}");
    let metrics = agent.get("/metrics").await.body;
    assert!(
        metrics.contains(
            "ecs_credential_agent_bridge_requests_total{endpoint=\"credentials\",status=\"200\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_is_refused() {
    let emu = emulator(Default::default()).await;
    let (_agent, addr) = bridged_agent(&emu.endpoint(), |_| {}).await;
    for host in [
        "attacker.example".to_owned(),
        format!("attacker.example:{}", addr.port()),
        "127.0.0.2".to_owned(),
        // A port other than the listener's: a name for another loopback service.
        "127.0.0.1:1".to_owned(),
        format!("localhost:{}", addr.port() ^ 1),
    ] {
        let r = tokio::task::spawn_blocking({
            let host = host.clone();
            move || get_with_host(addr, "/v1/credentials", &host)
        })
        .await
        .unwrap();
        assert_eq!(
            (r.status, r.code()),
            (400, "BadRequest".to_owned()),
            "{host}: {r:?}"
        );
        assert!(r.message().contains("Host"), "{r:?}");
    }
    // Proxy requests (absolute-form) and proxy headers, as on the socket.
    let r = tokio::task::spawn_blocking(move || {
        let raw = format!(
            "GET http://127.0.0.1:{}/v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Connection: close\r\n\r\n",
            addr.port()
        );
        exchange_on(TcpStream::connect(addr).unwrap(), &raw)
    })
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    let r = tokio::task::spawn_blocking(move || {
        let raw =
            "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 10.0.0.1\r\n\
                   Connection: close\r\n\r\n";
        exchange_on(TcpStream::connect(addr).unwrap(), raw)
    })
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_uid_is_not_allowed_gets_403_naming_it() {
    require_root!();
    let emu = emulator(Default::default()).await;
    let (agent, addr) = bridged_agent(&emu.endpoint(), |_| {}).await;
    let r = tokio::task::spawn_blocking(move || {
        as_uid(NOBODY, move || {
            get_with_host(addr, "/v1/credentials", "127.0.0.1")
        })
    })
    .await
    .unwrap();
    assert_eq!((r.status, r.code()), (403, "Forbidden".to_owned()), "{r:?}");
    assert!(r.message().contains("uid 65534"), "{r:?}");
    // The keys that apply to a TCP caller, not the socket's mode and group.
    for needle in ["allowed_uids", "allowed_gids", "user database"] {
        assert!(r.message().contains(needle), "{needle:?} not in {r:?}");
    }
    for wrong in ["socket_group", "socket_mode"] {
        assert!(!r.message().contains(wrong), "{wrong:?} in {r:?}");
    }
    assert!(
        agent
            .wait_for_log("event=\"denied\"", Duration::from_secs(30))
            .await
            || agent.logs().contains("event=denied"),
        "{}",
        agent.logs()
    );
}

/// A relay (as `socat`, an HTTP proxy or `docker-proxy` would be) run as a uid that is not
/// allowed, forwarding the request of root (allowed): the agent sees the relay's own socket,
/// owned by 65534, and refuses it; the caller behind the relay does not lend it its identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_run_as_a_user_not_allowed_is_refused_for_an_allowed_caller() {
    require_root!();
    let emu = emulator(Default::default()).await;
    let (agent, addr) = bridged_agent(&emu.endpoint(), |_| {}).await;
    // Root itself, straight to the listener: served (so what the relay forwards is allowed).
    let direct =
        tokio::task::spawn_blocking(move || get_with_host(addr, "/v1/credentials", "127.0.0.1"))
            .await
            .unwrap();
    assert_eq!(direct.status, 200, "{direct:?}");
    let relay = relay_as_uid(NOBODY, addr);
    let r =
        tokio::task::spawn_blocking(move || get_with_host(relay, "/v1/credentials", "127.0.0.1"))
            .await
            .unwrap();
    assert_eq!((r.status, r.code()), (403, "Forbidden".to_owned()), "{r:?}");
    assert!(r.message().contains("uid 65534"), "{r:?}");
    assert!(
        agent
            .wait_for_log("uid=65534", Duration::from_secs(30))
            .await,
        "the denial names the relay's uid; logs:\n{}",
        agent.logs()
    );
}

/// Starts a one-connection TCP relay to `upstream` on a thread whose credentials are `uid`
/// (as [`as_uid`]): it accepts one client on a new loopback port (returned), opens its own
/// connection to `upstream` (so that socket is owned by `uid`), passes the client's request
/// on, and the answer back until `upstream` closes. Needs root.
fn relay_as_uid(uid: u32, upstream: SocketAddr) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        become_uid_on_this_thread(uid);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(listener.local_addr().unwrap()).unwrap();
        let (mut client, _) = listener.accept().unwrap();
        let mut server = TcpStream::connect(upstream).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // The request head, passed on as it arrives.
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before its request was whole");
            head.extend_from_slice(&buf[..n]);
            server.write_all(&buf[..n]).unwrap();
        }
        // The answer, back to the client until the agent closes.
        let _ = io::copy(&mut server, &mut client);
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the relay's port")
}

/// The inode-0 pitfall: a client that sends its request and closes at once leaves a TIME-WAIT
/// socket that reports uid 0. Thousands of such clients, as a uid that is not allowed, get
/// nothing issued: each is refused, as not allowed or as unidentified, never taken for root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_at_once_is_never_served() {
    require_root!();
    const CLIENTS: usize = 3000;
    let emu = emulator(Default::default()).await;
    let (agent, addr) = bridged_agent(&emu.endpoint(), |_| {}).await;
    let made = tokio::task::spawn_blocking(move || {
        as_uid(NOBODY, move || {
            let raw = b"GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
            let mut made = 0;
            for _ in 0..CLIENTS {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    continue;
                };
                if s.write_all(raw).is_ok() {
                    made += 1;
                }
                drop(s);
            }
            made
        })
    })
    .await
    .unwrap();
    assert!(made > CLIENTS / 2, "only {made} clients connected");
    // Every connection accepted, looked up and refused: the counters account for them all.
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("ecs_credential_agent_{name} "))?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let settled = eventually(Duration::from_secs(60), || async {
        let text = agent.get("/metrics").await.body;
        let refused = metric(&text, "callers_denied_total")
            + metric(&text, "bridge_callers_unidentified_total");
        (refused >= made as f64).then_some(text)
    })
    .await;
    let text = settled.unwrap_or_else(|| {
        panic!(
            "not every closed client was refused within 60 s; logs:\n{}",
            agent.logs()
        )
    });
    assert!(
        !text.contains("bridge_requests_total{endpoint=\"credentials\",status=\"200\"}"),
        "a closed client was served:\n{text}"
    );
    let logs = agent.logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("event=\"issued\"") && l.contains("transport=\"tcp\"")),
        "an issuance over TCP was audited:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_already_taken_stops_the_agent_with_exit_1() {
    let emu = emulator(Default::default()).await;
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("bridge", "listen", &format!("\"127.0.0.1:{port}\""));
    let mut agent = TestAgent::builder(agent_bin(), &config).spawn();
    let status = agent
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the agent kept running; logs:\n{}", agent.logs()));
    assert_eq!(status.code(), Some(1), "logs:\n{}", agent.logs());
    assert!(agent.logs().contains("[bridge] listen"), "{}", agent.logs());
    let _ = io::stderr().flush();
}

/// SIGHUP reloads the rules for TCP callers as for socket callers: a new connection is refused,
/// and a kept-alive connection accepted before the reload is judged by the new rules at its next
/// request, then closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_revokes_a_tcp_caller_on_new_and_open_connections() {
    let emu = emulator(Default::default()).await;
    let me = nix::unistd::geteuid().as_raw();
    // Our uid (root, or the agent's own) is judged by `allowed_uids` too (a test hook).
    let rules = |c: &mut AgentConfig, uid: u32| {
        c.set("server", "allowed_uids", &format!("[{uid}]"))
            .env("E2E_AGENT_JUDGE_EVERY_UID", "1");
    };
    let (agent, addr) = bridged_agent(&emu.endpoint(), |c| rules(c, me)).await;
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    let first = http::keep_alive_get(&mut kept).await.unwrap();
    assert_eq!(first.status, 200, "{first:?}");

    let mut changed = AgentConfig::new(&emu.endpoint());
    rules(&mut changed, me + 1);
    changed.set(
        "bridge",
        "listen",
        &format!("\"127.0.0.1:{}\"", addr.port()),
    );
    agent.rewrite_config(&changed);
    let pid = nix::unistd::Pid::from_raw(agent.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(
        agent
            .wait_for_log("configuration reloaded", Duration::from_secs(30))
            .await,
        "{}",
        agent.logs()
    );
    let fresh =
        tokio::task::spawn_blocking(move || get_with_host(addr, "/v1/credentials", "127.0.0.1"))
            .await
            .unwrap();
    assert_eq!(
        fresh.status, 403,
        "a new TCP connection is refused now: {fresh:?}"
    );
    let again = http::keep_alive_get(&mut kept).await.unwrap();
    assert_eq!(again.status, 403, "{again:?}");
    assert!(
        http::keep_alive_get(&mut kept).await.is_err(),
        "the revoked caller's TCP connection is closed"
    );
}
