//! What a new user meets first: `dev` in a terminal that closes, `dev --socket` in a shared or
//! missing directory, `get` with no agent running.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ecs_credential_agent_e2e::agent_bin;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Generous for a loaded 2-core machine: start-up, a stop, an exit.
const DEADLINE: Duration = Duration::from_secs(60);

/// A `dev` process started with `args`, its stderr going to a file.
struct Dev {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: PathBuf,
    _logs: tempfile::TempDir,
}

impl Dev {
    fn start(args: &[&str]) -> Dev {
        let logs = tempfile::tempdir().unwrap();
        let stderr = logs.path().join("stderr");
        let mut child = Command::new(agent_bin!())
            .arg("dev")
            .args(args)
            // No $XDG_RUNTIME_DIR: the default socket is then in a private directory of its own.
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            stdout,
            stderr,
            _logs: logs,
        }
    }

    /// The socket named in the `curl` line `dev` prints once it listens.
    fn wait_listening(&mut self) -> PathBuf {
        let deadline = Instant::now() + DEADLINE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("curl -s --unix-socket ") {
                        let path = rest.split(' ').next().unwrap();
                        return PathBuf::from(path);
                    }
                }
                Err(_) => break,
            }
        }
        let status = self.child.try_wait().unwrap();
        panic!(
            "dev did not announce its socket (exit: {status:?}); stderr:\n{}",
            self.stderr()
        );
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits (up to [`DEADLINE`]) for the process to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("dev did not exit; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes a directory under `/tmp` at the end of a test, whatever `dev` left there.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gone(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// A closed terminal or ssh session sends SIGHUP: `dev` says so, stops cleanly (status 0) and
/// removes its socket and the private directory it made for it.
#[test]
fn dev_stops_on_sighup_and_removes_its_socket_and_directory() {
    let mut dev = Dev::start(&[]);
    let socket = dev.wait_listening();
    let dir = socket.parent().unwrap().to_owned();
    let _cleanup = Cleanup(dir.clone());
    assert!(dir.starts_with("/tmp"), "{dir:?}");
    assert!(socket.exists());
    dev.signal(Signal::SIGHUP);
    let status = dev.wait_exit();
    let stderr = dev.stderr();
    assert_eq!(status.code(), Some(0), "{status:?}; stderr:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("dev shutting down"))
        .unwrap_or_else(|| panic!("no shutdown line in:\n{stderr}"));
    assert!(
        line.contains("SIGHUP") && line.contains("terminal"),
        "{line}"
    );
    assert!(gone(&socket), "{socket:?} left behind");
    assert!(gone(&dir), "{dir:?} left behind");
}

/// `--socket` with several missing directories under a safe one: they are created (0700),
/// served from, and removed at exit (SIGTERM here), while the existing directory stays.
#[test]
fn dev_creates_missing_socket_directories_and_removes_them() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let top = base.path().join("nope");
    let socket = top.join("deeper").join("agent.sock");
    let mut dev = Dev::start(&["--socket", socket.to_str().unwrap()]);
    assert_eq!(dev.wait_listening(), socket);
    for dir in [&top, &top.join("deeper")] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{dir:?}");
    }
    dev.signal(Signal::SIGTERM);
    let status = dev.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr:\n{}",
        dev.stderr()
    );
    assert!(gone(&top), "{top:?} left behind");
    assert!(base.path().is_dir());
}

/// A socket directly in `/tmp` (writable by everyone, sticky) is refused with what to use
/// instead: a directory of its own there, which dev creates, or no `--socket` at all.
#[test]
fn dev_refuses_a_shared_directory_and_says_what_to_use() {
    let name = format!("eca-new-user-{}", std::process::id());
    let socket = Path::new("/tmp").join(format!("{name}.sock"));
    let _cleanup = Cleanup(Path::new("/tmp").join(&name));
    let mut dev = Dev::start(&["--socket", socket.to_str().unwrap()]);
    let status = dev.wait_exit();
    let stderr = dev.stderr();
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("writable by group or others"), "{stderr}");
    let suggested = format!("--socket /tmp/{name}/{name}.sock");
    assert!(stderr.contains(&suggested), "{suggested} not in:\n{stderr}");
    assert!(stderr.contains("leave out --socket"), "{stderr}");
    assert!(gone(&socket) && gone(&Path::new("/tmp").join(&name)));
}

/// The suggestion works: a directory of its own in `/tmp` is created and removed.
#[test]
fn dev_serves_from_a_directory_of_its_own_in_tmp() {
    let name = format!("eca-new-user-own-{}", std::process::id());
    let dir = Path::new("/tmp").join(&name);
    let _cleanup = Cleanup(dir.clone());
    let socket = dir.join(format!("{name}.sock"));
    let mut dev = Dev::start(&["--socket", socket.to_str().unwrap()]);
    assert_eq!(dev.wait_listening(), socket);
    dev.signal(Signal::SIGINT);
    let status = dev.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", dev.stderr());
    assert!(gone(&dir), "{dir:?} left behind");
}

/// `get` with no agent: exit 69 naming the socket, whether the socket's directory exists or
/// not (the client library does not retry a missing socket: its unit tests count the
/// attempts, `client::tests::no_retry_when_the_socket_does_not_exist`).
#[test]
fn get_with_no_agent_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    for socket in [
        dir.path().join("agent.sock"),
        dir.path().join("missing").join("agent.sock"),
    ] {
        let out = Command::new(agent_bin!())
            .args(["get", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{stderr}");
        assert!(
            stderr.contains(&*socket.to_string_lossy()) && stderr.contains("running"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}
