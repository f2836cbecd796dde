//! The audit trail as a real agent writes it: one record per event whatever a caller names
//! its executable, in every log style; written whatever the log level; and naming the program
//! the caller ran when the agent accepted it, not one it exec'd afterwards.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ecs_credential_agent_e2e::*;

/// Generous: the machine may be loaded.
const WITHIN: Duration = Duration::from_secs(20);

/// A configuration that lets this test's uid in, in `format`, at `level`.
fn config(endpoint: &str, format: &str, level: &str) -> AgentConfig {
    let me = nix::unistd::geteuid().as_raw();
    let mut config = AgentConfig::new(endpoint);
    config.set("server", "allowed_uids", &format!("[{me}]"));
    config.set("log", "format", &format!("{format:?}"));
    config.set("log", "level", &format!("{level:?}"));
    config
}

/// Runs `bin get --socket SOCKET` (a new process, so a new caller for the audit); returns its
/// pid once it has succeeded.
async fn get_from(bin: PathBuf, socket: &Path) -> u32 {
    let socket = socket.to_owned();
    tokio::task::spawn_blocking(move || {
        let child = Command::new(&bin)
            .arg("get")
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {bin:?}: {e}"));
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        pid
    })
    .await
    .unwrap()
}

/// The agent's JSON records with `event` = `event`.
fn records(agent: &TestAgent, event: &str) -> Vec<serde_json::Value> {
    agent
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

/// Waits for the JSON `issued` record of `pid`.
async fn issued_to(agent: &TestAgent, pid: u32) -> serde_json::Value {
    let found = eventually(WITHIN, || async {
        records(agent, "issued")
            .into_iter()
            .find(|v| v["pid"] == pid)
    })
    .await;
    found.unwrap_or_else(|| panic!("no issued record for pid {pid}:\n{}", agent.logs()))
}

// ---- forged lines through the executable's path ----

/// A whole forged text line, a forged JSON record, and `ESC [2J` (clear the screen), with
/// the path separators they need as directories.
const FORGED: &str = "x\n2026-01-01T00:00:00.000000Z  INFO audit: credentials issued to caller \
     event=\"issued\" pid=1 uid=0 gid=0 exe=\"/usr/bin/true\" role=\"EcsRole\" \
     access_key_id=\"STS.FORGED\" generation=1\n{\"level\":\"INFO\",\"target\":\"audit\",\
     \"event\":\"issued\",\"uid\":0,\"access_key_id\":\"STS.FORGED\"}\x1b[2J";

/// `bin` linked (or copied) under a directory path holding [`FORGED`], as `…/get`.
fn forged_copy(bin: &Path, under: &Path) -> PathBuf {
    let dir = under.join(FORGED);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("get");
    if std::fs::hard_link(bin, &copy).is_err() {
        std::fs::copy(bin, &copy).unwrap();
    }
    copy
}

/// The records of an agent in `format` (`journal`: text on a stderr that `JOURNAL_STREAM`
/// names) after a caller run from a path holding [`FORGED`] got credentials.
async fn run_forged_caller(format: &str) -> (TestAgent, PathBuf) {
    let emu = emulator(Default::default()).await;
    let text = if format == "journal" { "text" } else { format };
    let cfg = config(&emu.endpoint(), text, "info");
    let mut builder = TestAgent::builder(agent_bin!(), &cfg);
    if format == "journal" {
        // As systemd does: JOURNAL_STREAM names stderr's device and inode.
        let mut sh = Command::new("sh");
        sh.args([
            "-c",
            r#"export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$0" "$@""#,
        ]);
        builder = builder.via(sh);
    }
    let agent = builder.start().await;
    let under = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let copy = forged_copy(agent_bin!(), under.path());
    get_from(copy.clone(), &agent.socket).await;
    let seen = agent
        .wait_for_log("credentials issued to caller", WITHIN)
        .await;
    assert!(seen, "{}", agent.logs());
    // `under` is removed here; the audit had read the path already.
    (agent, copy)
}

fn assert_one_escaped_line(agent: &TestAgent, format: &str) {
    let logs = agent.logs();
    assert!(!logs.contains('\x1b'), "{format}: raw ESC:\n{logs:?}");
    let issued: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("credentials issued to caller"))
        .collect();
    assert_eq!(issued.len(), 1, "{format}: one line for the event:\n{logs}");
    assert_eq!(
        logs.matches("STS.FORGED").count(),
        2,
        "{format}: only inside the exe field:\n{logs}"
    );
    assert!(issued[0].contains("STS.FORGED"), "{format}: {}", issued[0]);
    for line in logs.lines() {
        assert!(!line.starts_with("2026-01-01"), "{format}: forged: {line}");
        assert!(
            !line.starts_with("{\"level\":\"INFO\",\"target\":\"audit\""),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_executable_path_stays_inside_one_text_line() {
    let (agent, _) = run_forged_caller("text").await;
    assert_one_escaped_line(&agent, "text");
    let logs = agent.logs();
    assert!(
        logs.contains(r#"exe=""#) && logs.contains(r"\u{1b}[2J/get"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_executable_path_stays_inside_one_journal_record() {
    let (agent, _) = run_forged_caller("journal").await;
    assert_one_escaped_line(&agent, "journal");
    let logs = agent.logs();
    assert!(
        logs.lines().all(|l| l.starts_with(' ')),
        "journal lines (no timestamp): {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_executable_path_stays_inside_one_json_record() {
    let (agent, copy) = run_forged_caller("json").await;
    let logs = agent.logs();
    assert!(!logs.contains('\x1b'), "raw ESC:\n{logs:?}");
    for line in logs.lines() {
        let record = serde_json::from_str::<serde_json::Value>(line);
        assert!(record.is_ok(), "not one JSON record: {line:?}");
    }
    let issued = records(&agent, "issued");
    assert_eq!(issued.len(), 1, "{logs}");
    assert_eq!(issued[0]["exe"], copy.to_str().unwrap(), "{logs}");
}

// ---- the audit whatever the level ----

fn hup(agent: &TestAgent) {
    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_is_written_at_level_warn_and_after_a_reload_to_error() {
    let emu = emulator(Default::default()).await;
    let cfg = config(&emu.endpoint(), "json", "warn");
    let agent = TestAgent::builder(agent_bin!(), &cfg).start().await;
    let first = get_from(agent_bin!().to_owned(), &agent.socket).await;
    let record = issued_to(&agent, first).await;
    assert_eq!(record["level"], "INFO", "{record}");
    assert!(
        !agent.logs().contains("listening"),
        "level warn holds back other info events:\n{}",
        agent.logs()
    );

    // Down to `error` by SIGHUP (the daemon's info lines let the test see the reload).
    let quieter = config(
        &emu.endpoint(),
        "json",
        "error,ecs_credential_agent::daemon=info",
    );
    agent.rewrite_config(&quieter);
    hup(&agent);
    let reloaded = agent.wait_for_log("configuration reloaded", WITHIN).await;
    assert!(reloaded, "{}", agent.logs());
    let second = get_from(agent_bin!().to_owned(), &agent.socket).await;
    issued_to(&agent, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_cannot_silence_the_audit() {
    let emu = emulator(Default::default()).await;
    let mut cfg = config(&emu.endpoint(), "json", "info");
    cfg.env("RUST_LOG", "off");
    let agent = TestAgent::builder(agent_bin!(), &cfg).start().await;
    let pid = get_from(agent_bin!().to_owned(), &agent.socket).await;
    issued_to(&agent, pid).await;
}

// ---- exec after connect ----

/// What the connecting process does before it execs `/usr/bin/sleep`, all in `pre_exec`
/// (after `fork`, so only raw system calls on memory prepared beforehand):
///
/// 1. connects to the agent and sends the first line of a request head;
/// 2. waits until the agent has read it (`SIOCOUTQ` 0: nothing left unread on the agent's
///    side), so the agent has accepted the connection and started serving it;
/// 3. forks a child that keeps the socket, waits until its parent has exec'd (a close-on-exec
///    pipe reaches end of file), then sends the rest of the request and copies the answer
///    to `answer`;
/// 4. returns, and `Command` execs `/usr/bin/sleep` in the process that connected.
fn connect_then_exec_sleep(socket: &Path, answer: &OwnedFd) -> std::process::Child {
    // SAFETY: zeroed is a valid `sockaddr_un`; the path fits (checked).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_encoded_bytes();
    assert!(path.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let first: &'static [u8] = b"GET /v1/credentials HTTP/1.1\r\n";
    let rest: &'static [u8] = b"Host: agent\r\nConnection: close\r\n\r\n";
    let out = answer.as_raw_fd();
    let mut cmd = Command::new("/usr/bin/sleep");
    cmd.arg("30").stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: the closure runs in the forked child and only makes async-signal-safe system
    // calls on memory made before the fork; the grandchild ends with `_exit`.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            let sa = std::ptr::addr_of!(addr).cast::<libc::sockaddr>();
            if fd < 0 || libc::connect(fd, sa, len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            write_all(fd, first);
            for _ in 0..20_000 {
                let mut unread: libc::c_int = -1;
                if libc::ioctl(fd, libc::TIOCOUTQ, &mut unread) != 0 || unread == 0 {
                    break;
                }
                let ms = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                };
                libc::nanosleep(&ms, std::ptr::null_mut());
            }
            let mut exec_sync = [0; 2];
            if libc::pipe2(exec_sync.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            match libc::fork() {
                0 => {
                    libc::close(exec_sync[1]);
                    let mut b = [0u8; 1];
                    while libc::read(exec_sync[0], b.as_mut_ptr().cast(), 1) > 0 {}
                    write_all(fd, rest);
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                        if n <= 0 {
                            break;
                        }
                        write_all(out, &buf[..n as usize]);
                    }
                    libc::_exit(0);
                }
                -1 => Err(std::io::Error::last_os_error()),
                _ => {
                    libc::close(exec_sync[0]);
                    Ok(())
                }
            }
        });
    }
    cmd.spawn().expect("spawn the connecting process")
}

/// `write(2)` until all of `bytes` is written or it fails (async-signal-safe).
unsafe fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_execs_after_connecting_is_audited_as_the_program_that_connected() {
    let emu = emulator(Default::default()).await;
    let cfg = config(&emu.endpoint(), "json", "info");
    let agent = TestAgent::builder(agent_bin!(), &cfg).start().await;
    agent.credentials().await;
    let (answer_r, answer_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut sleeper = connect_then_exec_sleep(&agent.socket, &answer_w);
    drop(answer_w);
    let pid = sleeper.id();
    let answer = tokio::time::timeout(
        WITHIN,
        tokio::task::spawn_blocking(move || {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(answer_r), &mut text).unwrap();
            text
        }),
    )
    .await
    .expect("the child's answer")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_ne!(exe, std::env::current_exe().unwrap(), "the process exec'd");
    let record = issued_to(&agent, pid).await;
    let connected = std::env::current_exe().unwrap();
    assert_eq!(
        record["exe"],
        connected.to_str().unwrap(),
        "the program that connected (now running {exe:?}):\n{}",
        agent.logs()
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
