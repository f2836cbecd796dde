use std::io::{Read, Write};
use std::net::{SocketAddr as StdAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

fn v4(a: StdAddr) -> SocketAddrV4 {
    match a {
        StdAddr::V4(a) => a,
        StdAddr::V6(a) => panic!("not IPv4: {a}"),
    }
}

fn listener() -> (TcpListener, SocketAddrV4) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = v4(l.local_addr().unwrap());
    (l, addr)
}

/// Accepts one connection within a generous deadline (a child may be slow to start).
fn accept_within(l: &TcpListener, limit: Duration) -> (TcpStream, SocketAddrV4) {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).unwrap();
                return (s, v4(peer));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no connection accepted: {e}"),
        }
    }
}

/// The inode number of `stream`'s socket (`fstat`), as the kernel's socket table names it.
fn socket_inode(stream: &TcpStream) -> u32 {
    let meta = nix::sys::stat::fstat(stream.as_fd()).unwrap();
    u32::try_from(meta.st_ino).unwrap()
}

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIPPED: needs root");
    }
    root
}

/// A shell, run as `uid` (gid `uid`) when given, that connects to `port` once it reads a line
/// on its standard input, then holds the connection until its input closes.
fn connecting_child(port: u16, uid: Option<u32>) -> Child {
    let script = format!("read go; exec 3<>/dev/tcp/127.0.0.1/{port}; read done");
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]).stdin(Stdio::piped());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    cmd.spawn().expect("run bash")
}

fn go(child: &mut Child) {
    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
}

#[test]
fn own_connection_is_owned_by_this_process_uid() {
    let (l, addr) = listener();
    let client = TcpStream::connect(addr).unwrap();
    let (_server, peer) = accept_within(&l, Duration::from_secs(30));
    let owner = SockDiag::open().unwrap().lookup(peer, addr).unwrap();
    assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
    assert_ne!(owner.inode, 0);
    // The caller's end, not the agent's: the inode is the client socket's.
    assert_eq!(owner.inode, socket_inode(&client));
    let caller = Caller::of_tcp_owner(&owner);
    assert_eq!(caller.transport, Transport::Tcp);
    assert_eq!((caller.pid, caller.exe()), (None, None));
    assert_eq!(caller.cgroup_id, owner.cgroup_id);
}

#[test]
fn a_connection_from_another_uid_is_owned_by_that_uid() {
    if !is_root() {
        return;
    }
    let (l, addr) = listener();
    let mut child = connecting_child(addr.port(), Some(65534));
    go(&mut child);
    let (_server, peer) = accept_within(&l, Duration::from_secs(30));
    let owner = SockDiag::open().unwrap().lookup(peer, addr).unwrap();
    drop(child.stdin.take());
    let _ = child.wait();
    assert_eq!(owner.uid, 65534);
    assert_ne!(owner.inode, 0);
    let caller = Caller::of_tcp_owner(&owner);
    assert_eq!(caller.uid, 65534);
    // nobody's primary group from the user database (65534 on Debian-like systems).
    let db_gid = nix::unistd::User::from_uid(65534.into())
        .unwrap()
        .map_or(65534, |u| u.gid.as_raw());
    assert_eq!(caller.gid(), db_gid);
    assert!(caller.groups().contains(&db_gid), "{:?}", caller.groups());
}

#[test]
fn a_client_that_closed_at_once_is_not_identified() {
    let diag = SockDiag::open().unwrap();
    let (l, addr) = listener();
    for _ in 0..20 {
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        drop(client);
        let (mut server, peer) = accept_within(&l, Duration::from_secs(30));
        // Wait for the client's FIN: its socket is closed (orphaned) by then.
        let mut buf = [0u8; 64];
        while server.read(&mut buf).unwrap() > 0 {}
        match diag.lookup(peer, addr) {
            Err(TcpLookupError::Closed { .. } | TcpLookupError::NotFound { .. }) => {}
            other => panic!("a closed client's socket was identified: {other:?}"),
        }
    }
}

#[test]
fn a_client_that_only_shut_down_writing_is_still_identified() {
    let (l, addr) = listener();
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let (mut server, peer) = accept_within(&l, Duration::from_secs(30));
    let mut buf = [0u8; 64];
    while server.read(&mut buf).unwrap() > 0 {}
    let owner = SockDiag::open().unwrap().lookup(peer, addr).unwrap();
    assert_eq!(owner.inode, socket_inode(&client));
    assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
}

#[test]
fn a_socket_that_does_not_exist_is_not_found() {
    let (_l, addr) = listener();
    // A port nothing is bound to on this side of the listener.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = v4(free.local_addr().unwrap());
    drop(free);
    match SockDiag::open().unwrap().lookup(peer, addr) {
        Err(TcpLookupError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid system), from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next() == Some("cgroup2")).then(|| PathBuf::from(mount))
    })
}

/// The cgroup id the kernel reports is the inode number of the socket creator's cgroup v2
/// directory (an inference from the kernel's `cgroup_id()`, checked here): in a new child
/// cgroup, so the id cannot match by chance.
#[test]
fn the_cgroup_id_is_the_inode_of_the_callers_cgroup_directory() {
    let Some(mount) = cgroup2_mount() else {
        eprintln!("SKIPPED: no cgroup v2 hierarchy mounted");
        return;
    };
    // This process's own cgroup first (no privilege needed).
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let own_dir = mount.join(rel.trim_start_matches('/'));
    let (l, addr) = listener();
    let _client = TcpStream::connect(addr).unwrap();
    let (_server, peer) = accept_within(&l, Duration::from_secs(30));
    let owner = SockDiag::open().unwrap().lookup(peer, addr).unwrap();
    let Some(id) = owner.cgroup_id else {
        eprintln!("SKIPPED: this kernel sends no INET_DIAG_CGROUP_ID (attribute 21)");
        return;
    };
    assert_eq!(
        id,
        std::fs::metadata(&own_dir).unwrap().ino(),
        "{own_dir:?}"
    );
    if !is_root() {
        return;
    }
    // Then a new cgroup, with a child moved into it before it makes its socket.
    let dir = mount.join(format!("eca-tcp-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        eprintln!("SKIPPED (new cgroup): cannot create {dir:?}: {e}");
        return;
    }
    let mut child = connecting_child(addr.port(), None);
    std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    go(&mut child);
    let (_server, peer) = accept_within(&l, Duration::from_secs(30));
    let owner = SockDiag::open().unwrap().lookup(peer, addr).unwrap();
    let inode = std::fs::metadata(&dir).unwrap().ino();
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(owner.cgroup_id, Some(inode));
}

/// The cost of one lookup: `cargo test -p ecs-credential-agent --release lookup_cost --
/// --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn lookup_cost() {
    const N: u32 = 100_000;
    let diag = SockDiag::open().unwrap();
    let (l, addr) = listener();
    let _client = TcpStream::connect(addr).unwrap();
    let (_server, peer) = accept_within(&l, Duration::from_secs(30));
    let start = Instant::now();
    for _ in 0..N {
        diag.lookup(peer, addr).unwrap();
    }
    let lookup = start.elapsed() / N;
    let owner = diag.lookup(peer, addr).unwrap();
    let start = Instant::now();
    for _ in 0..N / 10 {
        let _ = Caller::of_tcp_owner(&owner);
    }
    let caller = start.elapsed() / (N / 10);
    println!(
        "sock_diag exact lookup: {} ns/lookup; Caller::of_tcp_owner (user database): {} ns",
        lookup.as_nanos(),
        caller.as_nanos()
    );
}
