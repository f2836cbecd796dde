//! End-to-end: the agent under systemd's protocols, without booting systemd. `NOTIFY_SOCKET`
//! is a datagram socket in a temporary directory; socket activation is either the test holding
//! the listening socket as systemd does (fd 3, `LISTEN_FDS`, `LISTEN_PID`) or systemd's own
//! `systemd-socket-activate`.

use std::net::SocketAddr;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecs_credential_agent_e2e::http::{fresh_get, keep_alive_get};
use ecs_credential_agent_e2e::*;
use ecs_metadata_emulator::{Endpoint, Fault, Times};
use nix::sys::signal::Signal;
use tokio::net::{TcpStream, UnixStream};

/// A `NOTIFY_SOCKET` stand-in: every datagram with the time it arrived since `start`.
struct NotifySocket {
    path: PathBuf,
    _dir: tempfile::TempDir,
    messages: Arc<Mutex<Vec<(Duration, String)>>>,
    start: Instant,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new().prefix("eca-n-").tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        let start = Instant::now();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => sink.lock().unwrap().push((
                        start.elapsed(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Arc::strong_count(&sink) == 1 {
                            return;
                        }
                    }
                    Err(e) => panic!("notify socket: {e}"),
                }
            }
        });
        NotifySocket {
            path,
            _dir: dir,
            messages,
            start,
        }
    }

    fn all(&self) -> Vec<(Duration, String)> {
        self.messages.lock().unwrap().clone()
    }

    async fn wait_for(&self, needle: &str, within: Duration) -> Option<Duration> {
        eventually(within, || async {
            self.all()
                .into_iter()
                .find(|(_, m)| m.lines().any(|l| l.starts_with(needle)))
                .map(|(t, _)| t)
        })
        .await
    }
}

fn with_notify(config: &mut AgentConfig, n: &NotifySocket, watchdog_usec: u64) {
    config.env("NOTIFY_SOCKET", n.path.to_str().unwrap());
    config.env("WATCHDOG_USEC", &watchdog_usec.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_status_watchdog_stopping_in_order() {
    let emu = emulator(Default::default()).await;
    let n = NotifySocket::bind();
    let mut config = AgentConfig::new(&emu.endpoint());
    with_notify(&mut config, &n, 400_000);
    let mut agent = TestAgent::builder(agent_bin!(), &config).start().await;
    n.wait_for("READY=1", Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no READY=1; logs:\n{}", agent.logs()));
    assert_eq!(agent.get("/v1/health").await.status, 200);
    let pinged = eventually(Duration::from_secs(30), || async {
        let pings = n.all().iter().filter(|(_, m)| m == "WATCHDOG=1\n").count();
        (pings >= 5).then_some(())
    })
    .await;
    assert!(pinged.is_some(), "fewer than 5 pings: {:#?}", n.all());
    let status = agent.stop(Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", agent.logs());
    n.wait_for("STOPPING=1", Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no STOPPING=1: {:#?}", n.all()));

    let msgs = n.all();
    let lines: Vec<&str> = msgs.iter().map(|(_, m)| m.as_str()).collect();
    println!("notify messages: {lines:#?}");
    let first = &msgs[0].1;
    assert!(
        first.starts_with("READY=1\nSTATUS=serving role "),
        "{lines:#?}"
    );
    assert!(first.contains("credentials expire in"), "{lines:#?}");
    let pings = lines.iter().filter(|m| **m == "WATCHDOG=1\n").count();
    assert!(
        pings >= 5,
        "every 200 ms until stopped: {pings} pings: {lines:#?}"
    );
    let last = msgs.last().unwrap();
    assert_eq!(
        last.1, "STOPPING=1\nSTATUS=stopping: finishing in-flight requests\n",
        "{lines:#?}"
    );
    assert_eq!(lines.iter().filter(|m| m.contains("READY=1")).count(), 1);
    assert_eq!(lines.iter().filter(|m| m.contains("STOPPING=1")).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_ready_timeout_when_the_metadata_service_fails() {
    let emu = emulator(Default::default()).await;
    emu.set_fault(Endpoint::Any, Fault::Status(500), Times::Always);
    let n = NotifySocket::bind();
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("systemd", "ready_timeout_secs", "2");
    config.set("server", "first_credentials_wait_ms", "0");
    with_notify(&mut config, &n, 10_000_000);
    let agent = TestAgent::builder(agent_bin!(), &config).start().await;
    // The agent was started (its 2 s count under way) by now: the process's start-up, slow
    // on a loaded machine, is not counted against the upper bound below.
    let listening = n.start.elapsed();
    let h = agent.get("/v1/health").await;
    assert_eq!(h.status, 503, "{h:?}");
    let at = n
        .wait_for("READY=1", Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no READY=1; logs:\n{}", agent.logs()));
    assert!(at >= Duration::from_millis(1900), "READY at {at:?}");
    assert!(
        at < listening + Duration::from_secs(10),
        "READY at {at:?}, listening at {listening:?}"
    );
    let ready = n
        .all()
        .into_iter()
        .find(|(_, m)| m.contains("READY=1"))
        .unwrap();
    assert!(
        ready
            .1
            .contains("STATUS=no credentials: metadata service unreachable since"),
        "{ready:?}"
    );
    assert!(
        agent
            .wait_for_log(
                "telling systemd the agent is ready anyway",
                Duration::from_secs(30)
            )
            .await,
        "{}",
        agent.logs()
    );
    assert_eq!(agent.get("/v1/health").await.status, 503);
    // Credentials arrive: STATUS follows within the status period.
    emu.clear_faults();
    let served = n
        .wait_for("STATUS=serving role", Duration::from_secs(30))
        .await;
    assert!(served.is_some(), "{:#?}", n.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_when_the_server_loop_is_wedged() {
    let emu = emulator(Default::default()).await;
    let n = NotifySocket::bind();
    let mut config = AgentConfig::new(&emu.endpoint());
    with_notify(&mut config, &n, 400_000);
    config.env("E2E_AGENT_WEDGE_SERVER_AFTER_MS", "1500");
    let agent = TestAgent::builder(agent_bin!(), &config).start().await;
    n.wait_for("READY=1", Duration::from_secs(30))
        .await
        .unwrap();
    // Wedged at 1.5 s; the server's heartbeat counts as stale 5 s after its last beat, when the
    // agent says it withholds the pings.
    assert!(
        agent
            .wait_for_log(
                "test hook: wedging the accept loop",
                Duration::from_secs(60)
            )
            .await,
        "{}",
        agent.logs()
    );
    let wedged_at = n.start.elapsed();
    assert!(
        agent
            .wait_for_log("withholding watchdog pings", Duration::from_secs(60))
            .await,
        "{}",
        agent.logs()
    );
    let withheld_at = n.start.elapsed();
    // No event follows a withheld ping: look at a quiet window of 1.5 s (7 ping periods) after
    // the last ping and after the agent said it withholds them; a slow machine only
    // lengthens it.
    let last_ping = || {
        n.all()
            .iter()
            .rev()
            .find(|(_, m)| m == "WATCHDOG=1\n")
            .map(|(t, _)| *t)
            .unwrap_or_default()
    };
    tokio::time::sleep(
        (last_ping().max(withheld_at) + Duration::from_millis(1500))
            .saturating_sub(n.start.elapsed()),
    )
    .await;
    let msgs = n.all();
    let pings: Vec<Duration> = msgs
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1\n")
        .map(|(t, _)| *t)
        .collect();
    println!("pings at {pings:?}, wedge seen at {wedged_at:?}, withholding at {withheld_at:?}");
    // Times count from the events they follow (the log lines as seen), not from the test's
    // start: starting the process takes seconds on a loaded machine.
    assert!(
        pings.first().is_some_and(|t| *t < wedged_at),
        "pings before the wedge: {pings:?}"
    );
    let last = *pings.last().unwrap();
    // A ping sent before the log line may be received a little after it was seen.
    assert!(
        last < withheld_at + Duration::from_secs(1),
        "pings went on after the agent withheld them: {pings:?}"
    );
    assert!(
        n.start.elapsed() > last + Duration::from_secs(1),
        "checked a long enough quiet window"
    );
    let logs = agent.logs();
    assert!(
        logs.contains("test hook: wedging the accept loop"),
        "{logs}"
    );
    assert!(logs.contains("stuck=server"), "{logs}");
    assert!(logs.contains("withholding watchdog pings"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activate_starts_the_agent_on_its_socket() {
    let tool = Path::new("/usr/bin/systemd-socket-activate");
    if !tool.exists() {
        eprintln!("SKIPPED: {} is not installed", tool.display());
        return;
    }
    let emu = emulator(Default::default()).await;
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("log", "level", "\"debug\"");
    let mut tool_cmd = std::process::Command::new(tool);
    tool_cmd
        .arg("-l")
        .arg(&socket)
        .arg("-E")
        .arg("RUST_LOG=info");
    let mut agent = TestAgent::builder(agent_bin!(), &config)
        .dir(dir)
        .socket(socket.clone())
        .via(tool_cmd)
        .spawn();
    let exists = eventually(Duration::from_secs(30), || async {
        socket.exists().then_some(())
    });
    assert!(exists.await.is_some(), "no socket; logs:\n{}", agent.logs());
    // The first connection starts the agent, which answers it.
    let served = agent.credentials().await;
    assert_eq!(served["Code"], "Success");
    let logs = agent.logs();
    assert!(
        logs.contains("listening on the socket passed by systemd"),
        "{logs}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions())
            & 0o777;
    if mode != 0o600 {
        let want = format!("socket mode is {mode:04o} but socket_mode is 0600");
        assert!(logs.contains(&want), "{want}\n{logs}");
    }
    let status = agent.stop(Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", agent.logs());
    assert!(
        socket.exists(),
        "the agent removed a socket it did not create"
    );
}

/// systemd-socket-activate holding the Unix socket and the loopback listener, named as the
/// units name them (`socket`, `bridge`), for the agent started at the first connection.
fn activate_both(socket: &Path, port: u16) -> std::process::Command {
    let mut cmd = std::process::Command::new("/usr/bin/systemd-socket-activate");
    cmd.arg("-l")
        .arg(socket)
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--fdname=socket:bridge")
        .arg("-E")
        .arg("RUST_LOG=info");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activate_passes_the_socket_and_the_bridge_by_name() {
    if !Path::new("/usr/bin/systemd-socket-activate").exists() {
        eprintln!("SKIPPED: systemd-socket-activate is not installed");
        return;
    }
    let emu = emulator(Default::default()).await;
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let port = http::free_loopback_port();
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("bridge", "listen", &format!("\"127.0.0.1:{port}\""));
    let mut agent = TestAgent::builder(agent_bin!(), &config)
        .dir(dir)
        .socket(socket.clone())
        .via(activate_both(&socket, port))
        .spawn();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let held = eventually(Duration::from_secs(30), || async {
        (socket.exists() && std::net::TcpStream::connect(addr).is_ok()).then_some(())
    });
    assert!(
        held.await.is_some(),
        "sockets not held; logs:\n{}",
        agent.logs()
    );
    // That probe started the agent; it serves both sockets systemd passed.
    let tcp = http::tcp_get(addr, "/v1/credentials").await;
    assert_eq!(tcp.status, 200, "{tcp:?}\n{}", agent.logs());
    let served = agent.credentials().await;
    assert_eq!(tcp.json()["AccessKeyId"], served["AccessKeyId"]);
    let logs = agent.logs();
    assert!(
        logs.contains("listening on the socket passed by systemd"),
        "{logs}"
    );
    assert!(
        logs.contains("serving credentials URIs on the loopback socket passed by systemd"),
        "{logs}"
    );
    assert!(logs.contains(r#"transport="tcp""#), "{logs}");
    let status = agent.stop(Signal::SIGTERM);
    assert!(status.success(), "{status:?}\n{}", agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_bridge_socket_on_another_port_than_bridge_listen_stops_the_agent_with_78() {
    if !Path::new("/usr/bin/systemd-socket-activate").exists() {
        eprintln!("SKIPPED: systemd-socket-activate is not installed");
        return;
    }
    let emu = emulator(Default::default()).await;
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let (port, configured) = (http::free_loopback_port(), http::free_loopback_port());
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("bridge", "listen", &format!("\"127.0.0.1:{configured}\""));
    let mut agent = TestAgent::builder(agent_bin!(), &config)
        .dir(dir)
        .socket(socket.clone())
        .via(activate_both(&socket, port))
        .spawn();
    let started = eventually(Duration::from_secs(30), || async {
        socket
            .exists()
            .then(|| std::os::unix::net::UnixStream::connect(&socket).ok())
            .flatten()
    });
    let _client = started.await.expect("no socket");
    let status = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(status.and_then(|s| s.code()), Some(78), "{}", agent.logs());
    let want =
        format!("listens on 127.0.0.1:{port}, but [bridge] listen is 127.0.0.1:{configured}");
    assert!(agent.logs().contains(&want), "{want}\n{}", agent.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_allowed_uids_and_keeps_connections_and_credentials() {
    let emu = emulator(Default::default()).await;
    let me = nix::unistd::geteuid().as_raw();
    let mut config = AgentConfig::new(&emu.endpoint());
    // Our uid (root, or the agent's own) is judged by `allowed_uids` too (a test hook).
    config
        .set("server", "allowed_uids", &format!("[{me}]"))
        .env("E2E_AGENT_JUDGE_EVERY_UID", "1");
    let mut agent = TestAgent::builder(agent_bin!(), &config).start().await;
    let before = agent.credentials().await;
    let mut kept = UnixStream::connect(&agent.socket).await.unwrap();
    assert_eq!(keep_alive_get(&mut kept).await.unwrap().status, 200);

    let mut changed = config.clone();
    changed.set("server", "allowed_uids", &format!("[{}]", me + 1));
    changed.set("metadata", "read_timeout_ms", "900");
    agent.rewrite_config(&changed);
    hup(&agent);
    assert!(
        agent
            .wait_for_log("configuration reloaded", Duration::from_secs(30))
            .await,
        "{}",
        agent.logs()
    );
    let logs = agent.logs();
    assert!(
        logs.contains("[metadata] read_timeout_ms") && logs.contains("only after a restart"),
        "{logs}"
    );
    let r = agent.get("/v1/credentials").await;
    assert_eq!(r.status, 403, "a new connection is refused now: {r:?}");
    // The connection accepted before the reload is judged by the new rules at its next request
    // (issue 10, item 2: it used to keep being served), then closed.
    let again = keep_alive_get(&mut kept).await.unwrap();
    assert_eq!(again.status, 403, "{again:?}");
    assert!(
        keep_alive_get(&mut kept).await.is_err(),
        "the revoked caller's connection is closed"
    );

    // An invalid file: rejected, the configuration in force stays.
    agent.rewrite_config(changed.set("server", "max_connections", "\"many\""));
    hup(&agent);
    assert!(
        agent
            .wait_for_log("reload (SIGHUP) rejected", Duration::from_secs(30))
            .await,
        "{}",
        agent.logs()
    );
    assert_eq!(agent.get("/v1/credentials").await.status, 403);

    // Back to the original: allowed again, same cached credentials, no new metadata fetch.
    agent.rewrite_config(&config);
    hup(&agent);
    let ok = eventually(Duration::from_secs(30), || async {
        let r = agent.get("/v1/credentials").await;
        (r.status == 200).then_some(r)
    })
    .await
    .expect("allowed again after the reload");
    assert_eq!(ok.json()["AccessKeyId"], before["AccessKeyId"]);
    assert_eq!(emu.counts().credential_gets, 1, "{:?}", emu.counts());
    assert!(agent.stop(Signal::SIGTERM).success());
}

fn hup(agent: &TestAgent) {
    let pid = nix::unistd::Pid::from_raw(agent.child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
}

/// Counts of one client loop.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    closed_by_server: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, r: Result<Response, String>) -> Option<Response> {
        match r {
            Ok(r) if r.status == 200 => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                Some(r)
            }
            Ok(r) => {
                self.fail(format!("status {}: {}", r.status, r.body));
                None
            }
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn fail(&self, e: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.errors.lock().unwrap().push(e);
    }
}

/// Prints both loops' counts (prefixed by `label`) and asserts that no request failed, showing
/// the errors and `logs` when one did.
fn assert_no_failed_request(label: &str, fresh: &Tally, kept: &Tally, logs: &str) {
    let failures = fresh.failed.load(Ordering::Relaxed) + kept.failed.load(Ordering::Relaxed);
    println!(
        "{label}new-connection loop: {} ok, {} failed; keep-alive loop: {} ok, {} failed, {} \
         retried, {} answers with Connection: close; failures: {failures}",
        fresh.ok.load(Ordering::Relaxed),
        fresh.failed.load(Ordering::Relaxed),
        kept.ok.load(Ordering::Relaxed),
        kept.failed.load(Ordering::Relaxed),
        kept.retried.load(Ordering::Relaxed),
        kept.closed_by_server.load(Ordering::Relaxed),
    );
    assert_eq!(
        failures,
        0,
        "errors: {:?} {:?}\n{logs}",
        fresh.errors.lock().unwrap(),
        kept.errors.lock().unwrap(),
    );
}

async fn new_connection_loop(socket: PathBuf, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        tally.record(fresh_get(&socket).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`new_connection_loop`] over loopback TCP to `addr`.
async fn tcp_new_connection_loop(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let r = match TcpStream::connect(addr).await {
            Ok(mut s) => keep_alive_get(&mut s).await,
            Err(e) => Err(format!("connect: {e}")),
        };
        tally.record(r);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Keep-alive requests on the Unix socket; see [`keep_alive_loop_on`].
async fn keep_alive_loop(socket: PathBuf, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    keep_alive_loop_on(move || UnixStream::connect(socket.clone()), stop, tally).await;
}

/// Keep-alive requests on connections made by `connect`; when the server has closed the idle
/// connection (no byte of an answer), one retry on a new connection.
async fn keep_alive_loop_on<S, C, F>(connect: C, stop: Arc<AtomicBool>, tally: Arc<Tally>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    C: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<S>>,
{
    let mut conn: Option<S> = None;
    while !stop.load(Ordering::Relaxed) {
        let first = match conn.as_mut() {
            Some(s) => keep_alive_get(s).await,
            None => Err("no connection yet".into()),
        };
        let result = match first {
            Ok(r) => Ok(r),
            Err(_) => {
                if conn.is_some() {
                    tally.retried.fetch_add(1, Ordering::Relaxed);
                }
                match connect().await {
                    Ok(mut s) => {
                        let r = keep_alive_get(&mut s).await;
                        conn = Some(s);
                        r
                    }
                    Err(e) => Err(format!("connect: {e}")),
                }
            }
        };
        if let Some(r) = tally.record(result) {
            if r.header("connection") == Some("close") {
                tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_held_socket_loses_no_request() {
    let emu = emulator(Default::default()).await;
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let config = AgentConfig::new(&emu.endpoint());
    let a = TestAgent::builder(agent_bin!(), &config)
        .socket(socket.clone())
        .activated(&listener)
        .start()
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (fresh, kept) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let loops = [
        tokio::spawn(new_connection_loop(
            socket.clone(),
            stop.clone(),
            fresh.clone(),
        )),
        tokio::spawn(keep_alive_loop(socket.clone(), stop.clone(), kept.clone())),
    ];
    // A serves both loops for a while before it stops.
    let served_by = |at_least: u64| {
        let (fresh, kept) = (fresh.clone(), kept.clone());
        eventually(Duration::from_secs(60), move || {
            let ok = fresh.ok.load(Ordering::Relaxed) >= at_least
                && kept.ok.load(Ordering::Relaxed) >= at_least;
            async move { ok.then_some(()) }
        })
    };
    assert!(served_by(15).await.is_some(), "A served too little");
    let mut a = a;
    let status = tokio::task::block_in_place(|| a.stop(Signal::SIGTERM));
    assert!(status.success(), "A: {status:?}\n{}", a.logs());
    let b = TestAgent::builder(agent_bin!(), &config)
        .socket(socket.clone())
        .activated(&listener)
        .spawn();
    // B takes over the socket and serves both loops for a while.
    let ok_at_handover = fresh
        .ok
        .load(Ordering::Relaxed)
        .max(kept.ok.load(Ordering::Relaxed));
    let b_up = eventually(Duration::from_secs(60), || async {
        (b.logs()
            .contains("listening on the socket passed by systemd")
            && emu.counts().credential_gets >= 2)
            .then_some(())
    })
    .await;
    assert!(b_up.is_some(), "B never took over: {}", b.logs());
    assert!(
        served_by(ok_at_handover + 15).await.is_some(),
        "B served too little"
    );
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }

    assert_no_failed_request(
        "",
        &fresh,
        &kept,
        &format!("A:\n{}\nB:\n{}", a.logs(), b.logs()),
    );
    assert!(fresh.ok.load(Ordering::Relaxed) > 20);
    assert!(kept.ok.load(Ordering::Relaxed) > 20);
    assert!(a
        .logs()
        .contains("listening on the socket passed by systemd"));
    assert!(
        b.logs()
            .contains("listening on the socket passed by systemd"),
        "B served: {}",
        b.logs()
    );
    assert!(
        emu.counts().credential_gets >= 2,
        "A and B each fetched: {:?}",
        emu.counts()
    );
    assert!(socket.exists(), "neither agent may remove the held socket");
    drop(listener);
}

/// How many times [`restart_over_the_held_listener_loses_no_request`] replaces the agent.
const RESTARTS: usize = 5;

/// As [`restart_with_a_held_socket_loses_no_request`], over the loopback listener: the test
/// holds both sockets as systemd's two socket units do (the Unix socket and the
/// `[bridge] listen` address, passed as fds 3 and 4 named `socket:bridge`), a new-connection
/// and a keep-alive client loop ask over TCP, and the agent is stopped (`SIGTERM`) and started
/// again [`RESTARTS`] times. No request fails; a keep-alive request on a connection the
/// stopping agent closed while idle is retried once on a new connection and counted apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_over_the_held_listener_loses_no_request() {
    let emu = emulator(Default::default()).await;
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let unix = UnixListener::bind(&socket).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("bridge", "listen", &format!("\"{addr}\""));
    let start = || {
        TestAgent::builder(agent_bin!(), &config)
            .socket(socket.clone())
            .activated(&unix)
            .bridge_activated(&tcp)
            .spawn()
    };
    let on_bridge = "serving credentials URIs on the loopback socket passed by systemd";

    let stop = Arc::new(AtomicBool::new(false));
    let (fresh, kept) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let mut agent = start();
    let loops = [
        tokio::spawn(tcp_new_connection_loop(addr, stop.clone(), fresh.clone())),
        tokio::spawn(keep_alive_loop_on(
            move || TcpStream::connect(addr),
            stop.clone(),
            kept.clone(),
        )),
    ];
    // Each loop got at least `at_least` answers.
    let served_by = |at_least: u64| {
        let (fresh, kept) = (fresh.clone(), kept.clone());
        eventually(Duration::from_secs(60), move || {
            let ok = fresh.ok.load(Ordering::Relaxed) >= at_least
                && kept.ok.load(Ordering::Relaxed) >= at_least;
            async move { ok.then_some(()) }
        })
    };
    let mut logs = Vec::new();
    for restart in 0..=RESTARTS {
        let ok_before = fresh
            .ok
            .load(Ordering::Relaxed)
            .max(kept.ok.load(Ordering::Relaxed));
        let up = eventually(Duration::from_secs(60), || async {
            agent.logs().contains(on_bridge).then_some(())
        })
        .await;
        assert!(
            up.is_some(),
            "agent {restart} never took over: {}",
            agent.logs()
        );
        // This agent serves both loops for a while before it stops.
        assert!(
            served_by(ok_before + 15).await.is_some(),
            "agent {restart} served too little: {}",
            agent.logs()
        );
        let status = tokio::task::block_in_place(|| agent.stop(Signal::SIGTERM));
        assert!(
            status.success(),
            "agent {restart}: {status:?}\n{}",
            agent.logs()
        );
        logs.push(agent.logs());
        if restart < RESTARTS {
            agent = start();
        }
    }
    // The last agent stopped: no loop may be left waiting for an answer.
    stop.store(true, Ordering::Relaxed);
    let last = start();
    for l in loops {
        l.await.unwrap();
    }
    drop(last);

    assert_no_failed_request(
        &format!("over TCP, {RESTARTS} restarts: "),
        &fresh,
        &kept,
        &logs.join("\n---\n"),
    );
    let agents = RESTARTS as u64 + 1;
    assert!(fresh.ok.load(Ordering::Relaxed) >= 15 * agents);
    assert!(kept.ok.load(Ordering::Relaxed) >= 15 * agents);
    for (i, l) in logs.iter().enumerate() {
        assert!(
            l.contains(r#"transport="tcp""#),
            "agent {i} served TCP: {l}"
        );
    }
    assert!(socket.exists(), "no agent may remove the held socket");
    drop((unix, tcp));
}
