use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// Both ways of holding the caller's process. `Hold::Pidfd` falls back to the `/proc`
/// directory by itself on a kernel without `SO_PEERPIDFD`; `Hold::ProcDir` forces that
/// fallback where the kernel has pidfds (CI's kernel always does).
const HOLDS: [Hold; 2] = [Hold::Pidfd, Hold::ProcDir];

/// Whether `hold` ends up with a pidfd on this kernel (once a capture has asked).
fn expects_pidfd(hold: Hold) -> bool {
    hold == Hold::Pidfd && PEER_PIDFD.load(Ordering::Relaxed) != NO_PIDFDS
}

fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let (_, after) = stat.rsplit_once(')').unwrap();
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn groups_line_parsed() {
    let status = "Name:\tx\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 \nNgid:\t0\n";
    assert_eq!(parse_groups_line(status), Some(vec![4, 24, 27]));
    assert_eq!(parse_groups_line("Groups:\n"), Some(vec![]));
    assert_eq!(parse_groups_line("Name: x\n"), None);
    assert_eq!(parse_groups_line("Groups: 1 x\n"), None);
}

#[test]
fn own_identity_read_from_socket() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let own: Vec<u32> = nix::unistd::getgroups()
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_cgroup = own_cgroup.lines().find_map(|l| l.strip_prefix("0::"));
    for hold in HOLDS {
        let (c, _lent) = capture(a.as_fd(), hold).unwrap();
        assert_eq!(c.uid, nix::unistd::getuid().as_raw(), "{hold:?}");
        assert_eq!(c.gid(), nix::unistd::getgid().as_raw(), "{hold:?}");
        assert_eq!(c.pid, Some(std::process::id() as i32), "{hold:?}");
        assert_eq!(
            c.groups.get().is_some(),
            c.process().and_then(Process::socket).is_none(),
            "groups are read at accept only without a socket to read them through later: {hold:?}"
        );
        let (mut got, mut want) = (c.groups().to_vec(), own.clone());
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{hold:?}");
        let p = c.process().expect("a handle on our own process");
        assert_eq!(p.has_pidfd(), expects_pidfd(hold), "{hold:?}");
        assert_eq!(p.pid(), std::process::id() as i32);
        assert_eq!(p.start_time(), Some(own_start_time()), "{hold:?}");
        assert_eq!(p.cgroup(), own_cgroup, "{hold:?}");
        assert_eq!(c.exe(), Some(std::env::current_exe().unwrap().as_path()));
        assert_eq!(
            c.exe_or_unknown(),
            std::env::current_exe().unwrap().display().to_string()
        );
    }
    // The default follows the kernel: a pidfd where it has them.
    let (c, _lent) = Caller::of_unix_peer(a.as_fd()).unwrap();
    assert_eq!(c.process().unwrap().has_pidfd(), expects_pidfd(Hold::Pidfd));
}

/// Name of the variable that tells [`connecting_child`] where to connect.
const CHILD_SOCKET: &str = "ECS_CREDENTIAL_AGENT_TEST_IDENTITY_CHILD_SOCKET";

/// Starts this test binary as a child that connects to `socket` and exits when it reads a
/// byte or the end of the connection ([`connecting_child`]).
fn spawn_connecting_child(socket: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "identity::unix::tests::connecting_child",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_SOCKET, socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Run by [`a_caller_that_exited_is_not_read_through_a_reused_pid`] in a child process:
/// connects, then waits for a byte (or the end of the connection). On its own (variable
/// unset) it does nothing.
#[test]
#[ignore = "run in a child process by a_caller_that_exited_is_not_read_through_a_reused_pid"]
fn connecting_child() {
    let Some(path) = std::env::var_os(CHILD_SOCKET) else {
        return;
    };
    let mut s = std::os::unix::net::UnixStream::connect(PathBuf::from(path)).unwrap();
    let _ = s.read(&mut [0u8; 1]);
}

/// Values read after the caller exited are "unknown", never another process's: on both paths
/// the read is checked against the process held at accept.
#[tokio::test]
async fn a_caller_that_exited_is_not_read_through_a_reused_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    for hold in HOLDS {
        let mut child = spawn_connecting_child(&path);
        let (stream, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
            .await
            .expect("the child connects")
            .unwrap();
        // Two captures of the same connection: one read while the child runs, one after.
        let ((alive, _lent1), (gone, _lent2)) = (
            capture(stream.as_fd(), hold).unwrap(),
            capture(stream.as_fd(), hold).unwrap(),
        );
        assert_eq!(alive.pid, Some(child.id() as i32), "{hold:?}");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(alive.exe(), Some(exe.as_path()), "{hold:?}");
        let started = alive.process().unwrap().start_time();
        assert!(started.is_some(), "{hold:?}");
        assert!(alive.process().unwrap().cgroup().is_some(), "{hold:?}");

        // A second pidfd of the child, to pose as one whose pid was reused (below).
        let stale =
            expects_pidfd(hold).then(|| getsockopt(&stream.as_fd(), sockopt::PeerPidfd).unwrap());
        // The connection stays open (lent to the captures, to ask for a pidfd later): tell the
        // child to exit.
        assert_eq!(stream.try_write(b"x").unwrap(), 1);
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{hold:?}: child failed");
        let p = gone.process().unwrap();
        assert_eq!(p.has_pidfd(), expects_pidfd(hold), "{hold:?}");
        assert_eq!(gone.exe(), None, "{hold:?}");
        assert_eq!(gone.exe_or_unknown(), "unknown");
        assert_eq!(p.cgroup(), None, "{hold:?}");
        // Without a pidfd the start time was read at accept; with one, it is read on demand,
        // and the process is gone now.
        let want = if expects_pidfd(hold) { None } else { started };
        assert_eq!(p.start_time(), want, "{hold:?}");
        if let Some(pidfd) = stale {
            // As if the child's pid now named another running process (this one): the read
            // through /proc succeeds, and the check against the held pidfd refuses it.
            let reused = Process::from_pidfd(std::process::id() as i32, pidfd);
            assert_eq!(reused.exe(), None);
            assert_eq!(reused.start_time(), None);
            assert_eq!(reused.cgroup(), None);
        }
    }
}

/// Once the lent socket is dropped (closed), what the caller had not read is unknown: it is
/// not asked of whatever the descriptor's number names next.
#[test]
fn reads_after_the_lent_socket_is_closed_find_nothing() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (read, lent) = Caller::of_unix_peer(a).unwrap();
    assert_eq!(read.exe(), Some(std::env::current_exe().unwrap().as_path()));
    let (c, lent2) = Caller::of_unix_peer(lent.into_inner()).unwrap();
    if !expects_pidfd(Hold::Pidfd) {
        return; // Held by /proc: nothing is read through the socket.
    }
    let fd = lent2.as_raw_fd();
    drop(lent2);
    // Another socket, whose peer is this process too, now likely has the same number.
    let (_c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(c.groups().is_empty(), "groups are not read after the close");
    assert_eq!(
        c.exe(),
        None,
        "the pidfd is not asked for after the close (fd {fd})"
    );
    assert_eq!(c.exe_or_unknown(), "unknown");
    // What was read before the close stays known.
    assert!(read.exe().is_some());
}
