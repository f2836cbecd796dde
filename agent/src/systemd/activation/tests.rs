//! Tests of socket activation: roles by name, socket checks, the environment.

use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn checks_accept_a_listening_unix_stream_socket_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = OwnedFd::from(l);
    assert_eq!(check_unix(3, "socket", &fd).unwrap(), Some(path.clone()));

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = check_unix(3, "socket", &OwnedFd::from(tcp)).unwrap_err();
    assert!(
        e.to_string().contains("(socket) is not a Unix socket"),
        "{e}"
    );

    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = check_unix(3, "socket", &OwnedFd::from(a)).unwrap_err();
    assert!(e.to_string().contains("is not listening"), "{e}");

    let d = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let e = check_unix(3, "socket", &OwnedFd::from(d)).unwrap_err();
    assert!(e.to_string().contains("is not a stream socket"), "{e}");
}

#[test]
fn mode_group_and_path_mismatches_are_described() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    let gid = std::fs::metadata(&path).unwrap().gid();
    let mut cfg = ServerConfig {
        socket_path: path.clone(),
        socket_mode: 0o660,
        socket_group: Some(gid.to_string()),
        ..ServerConfig::default()
    };
    assert!(
        mismatches(&path, &cfg).is_empty(),
        "{:?}",
        mismatches(&path, &cfg)
    );
    cfg.socket_mode = 0o600;
    cfg.socket_group = Some((gid + 1).to_string());
    cfg.socket_path = dir.path().join("other.sock");
    let m = mismatches(&path, &cfg);
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m[0].contains("not socket_path"), "{m:?}");
    assert!(
        m[1].contains("socket mode is 0660 but socket_mode is 0600"),
        "{m:?}"
    );
    assert!(
        m[2].contains(&format!("socket group is gid {gid}")),
        "{m:?}"
    );
}

#[test]
fn no_listen_fds_means_no_socket() {
    // LISTEN_PID names another process: not for us.
    assert!(take_passed(Some("1"), Some("1"), None)
        .unwrap()
        .socket
        .is_none());
    assert!(take_passed(None, None, Some("bridge"))
        .unwrap()
        .bridge
        .is_none());
}

#[test]
fn listen_pid_and_listen_fds_are_read_as_sd_listen_fds_does() {
    let me = 4242;
    assert_eq!(passed_count(Some("4242"), Some("1"), me).unwrap(), 1);
    assert_eq!(passed_count(Some("4242"), Some("2"), me).unwrap(), 2);
    assert_eq!(passed_count(Some("1"), Some("1"), me).unwrap(), 0);
    assert_eq!(passed_count(None, Some("1"), me).unwrap(), 0);
    assert_eq!(passed_count(Some("4242"), None, me).unwrap(), 0);
    for (pid, fds, what) in [
        (Some("me"), Some("1"), "invalid LISTEN_PID"),
        (Some("4242"), Some("-1"), "invalid LISTEN_FDS"),
        (Some("4242"), Some("4294967295"), "invalid LISTEN_FDS"),
    ] {
        let e = passed_count(pid, fds, me).unwrap_err();
        assert_eq!(e.to_string(), what, "{pid:?} {fds:?}");
    }
}

/// The removal of the variables, seen in a child process (this test binary running only
/// [`take_sockets_in_a_child`] with `LISTEN_PID=1 LISTEN_FDS=1`), so that no test changes
/// this process's environment (`std::env::set_var` is banned, see clippy.toml).
#[test]
fn no_listen_fds_means_no_socket_and_the_variables_are_removed() {
    let name = concat!(module_path!(), "::take_sockets_in_a_child");
    let name = name.split_once("::").unwrap().1; // test names start below the crate
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--test-threads=1"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "socket")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "run in a child process by the test above"]
fn take_sockets_in_a_child() {
    assert_eq!(
        std::env::var("LISTEN_PID").as_deref(),
        Ok("1"),
        "run by no_listen_fds_means_no_socket_and_the_variables_are_removed, not alone"
    );
    // LISTEN_PID names another process: not for us.
    let passed = take_sockets().unwrap();
    assert!(passed.socket.is_none() && passed.bridge.is_none());
    assert!(std::env::var_os("LISTEN_PID").is_none());
    assert!(std::env::var_os("LISTEN_FDS").is_none());
    assert!(std::env::var_os("LISTEN_FDNAMES").is_none());
}

/// The rows of the module docs' table: names decide roles; one of each at most.
#[test]
fn fd_names_decide_roles() {
    let socket = |fd: RawFd, name: &str| Some((fd, name.to_owned()));
    let rows: &[(RawFd, Option<&str>, Roles)] = &[
        (0, None, Roles::default()),
        // No names (an older manager, or systemd-socket-activate without --fdname): the one fd
        // is the Unix socket, as before names existed.
        (
            1,
            None,
            Roles {
                socket: socket(3, "unnamed"),
                bridge: None,
            },
        ),
        (
            1,
            Some(""),
            Roles {
                socket: socket(3, "unnamed"),
                bridge: None,
            },
        ),
        // systemd's default name is the unit's; ours names it "socket".
        (
            1,
            Some("ecs-credential-agent.socket"),
            Roles {
                socket: socket(3, "ecs-credential-agent.socket"),
                bridge: None,
            },
        ),
        (
            1,
            Some("socket"),
            Roles {
                socket: socket(3, "socket"),
                bridge: None,
            },
        ),
        (
            2,
            Some("socket:bridge"),
            Roles {
                socket: socket(3, "socket"),
                bridge: Some(4),
            },
        ),
        (
            2,
            Some("bridge:socket"),
            Roles {
                socket: socket(4, "socket"),
                bridge: Some(3),
            },
        ),
        (
            2,
            Some("ecs-credential-agent.socket:bridge"),
            Roles {
                socket: socket(3, "ecs-credential-agent.socket"),
                bridge: Some(4),
            },
        ),
        // The bridge alone: the agent binds socket_path itself.
        (
            1,
            Some("bridge"),
            Roles {
                socket: None,
                bridge: Some(3),
            },
        ),
        // A short list leaves the rest unnamed.
        (
            2,
            Some("bridge"),
            Roles {
                socket: socket(4, "unnamed"),
                bridge: Some(3),
            },
        ),
    ];
    for (count, names, want) in rows {
        assert_eq!(&roles(*count, *names).unwrap(), want, "{count} {names:?}");
    }
    for (count, names, what) in [
        (2, None, "more than one Unix socket (fds 3 and 4"),
        (
            2,
            Some("socket:other"),
            "more than one Unix socket (fds 3 and 4",
        ),
        (
            3,
            Some("bridge:socket:bridge"),
            "more than one bridge listener (fds 3 and 5",
        ),
    ] {
        let e = roles(count, names).unwrap_err().to_string();
        assert!(e.contains(what), "{count} {names:?}: {e}");
    }
}

#[test]
fn the_bridge_socket_must_listen_on_127_0_0_1_over_tcp() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let checked = check_bridge(4, OwnedFd::from(tcp)).unwrap();
    assert_eq!(checked.local_addr().unwrap(), addr);

    let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let e = check_bridge(4, OwnedFd::from(any)).unwrap_err().to_string();
    assert!(
        e.contains("fd 4 (bridge) is not a TCP socket on 127.0.0.1"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
    let e = check_bridge(4, OwnedFd::from(unix))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a TCP socket on 127.0.0.1"), "{e}");

    let socket = nix::sys::socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .unwrap();
    let e = check_bridge(4, socket).unwrap_err().to_string();
    assert!(e.contains("fd 4 (bridge) is not listening"), "{e}");
}

#[test]
fn a_passed_bridge_socket_must_agree_with_bridge_listen() {
    let passed: SocketAddrV4 = "127.0.0.1:17301".parse().unwrap();
    assert_eq!(bridge_address(passed, Some(passed)).unwrap(), passed);
    // Unset: the operator enabled the bridge socket unit; it is served.
    assert_eq!(bridge_address(passed, None).unwrap(), passed);
    let e = bridge_address(passed, Some("127.0.0.1:17302".parse().unwrap()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listens on 127.0.0.1:17301, but [bridge] listen is 127.0.0.1:17302"),
        "{e}"
    );
}
