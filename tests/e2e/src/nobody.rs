//! Callers as uid 65534 (`nobody`), which test agents do not allow: the agent's own `get` as
//! nobody, many raw requests from a forked child, or any program through `setpriv`. All need
//! root.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::http::get_request;

/// Callers run as this uid (and gid), `nobody`.
pub const NOBODY: u32 = 65534;

/// `setpriv` running what follows as nobody (uid and gid [`NOBODY`], no supplementary
/// groups); it execs in place, so the child's pid is the program's. Append the program and its
/// arguments (or pass it to [`AgentBuilder::via`](crate::AgentBuilder::via)).
pub fn setpriv() -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ]);
    cmd
}

/// Whether `setpriv` (util-linux, which `.ci/run` installs) can be run; prints a `SKIPPED`
/// line for the calling test when not.
pub fn have_setpriv() -> bool {
    let found = Command::new("setpriv").arg("--version").output().is_ok();
    if !found {
        eprintln!("SKIPPED: no setpriv (util-linux); .ci/run installs it");
    }
    found
}

/// A socket path for an agent running as nobody: `run/agent.sock` in a new root-owned `0755`
/// temporary directory (returned: it is removed when dropped), `run/` owned by nobody. The
/// agent refuses a socket directory others can write or that another non-root user owns.
///
/// # Panics
/// When the directory cannot be made (not root).
pub fn socket_dir_for_nobody() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = run.join("agent.sock");
    (dir, socket)
}

/// Runs `BIN get --socket SOCKET` as uid and gid [`NOBODY`] and returns what it did.
///
/// # Panics
/// When it cannot be run (not root).
pub fn get_as_nobody(bin: &Path, socket: &Path) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new(bin)
        .args(["get", "--socket"])
        .arg(socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run the agent's get as uid 65534")
}

/// Forks a child that drops to uid/gid [`NOBODY`] and makes `requests` credential requests, each
/// on a new connection; returns how many were answered `403`.
///
/// The test process is multi-threaded, so the child does only what is safe after `fork(2)`:
/// raw system calls on memory prepared before the fork (as `std::process::Command` does between
/// fork and exec), then `_exit(2)`.
///
/// # Errors
/// When the pipe or the fork fails, or the child could not drop to nobody or make a socket.
pub fn requests_as_nobody(socket: &Path, requests: u64) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: `sockaddr_un` is plain old data; all-zero is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = socket.as_os_str().as_bytes();
    assert!(path.len() < addr.sun_path.len(), "socket path too long");
    for (dst, src) in addr.sun_path.iter_mut().zip(path) {
        *dst = *src as libc::c_char;
    }
    let addr_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let request = get_request("/v1/credentials", true);
    let (read_end, write_end) = nix::unistd::pipe()?;
    // SAFETY: between fork and `_exit` the child calls only async-signal-safe functions
    // (setgroups, setgid, setuid, socket, connect, write, read, close, _exit) on `addr`,
    // `request` and the pipe, all created before the fork; it allocates nothing.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => unsafe {
            use std::os::fd::AsRawFd;
            let out = write_end.as_raw_fd();
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                libc::_exit(2);
            }
            let mut forbidden: u64 = 0;
            for _ in 0..requests {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    libc::_exit(3);
                }
                let sa = (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>();
                if libc::connect(fd, sa, addr_len) == 0 {
                    let mut sent = 0;
                    while sent < request.len() {
                        let rest = &request.as_bytes()[sent..];
                        let n = libc::write(fd, rest.as_ptr().cast(), rest.len());
                        if n <= 0 {
                            break;
                        }
                        sent += n as usize;
                    }
                    let mut head = [0u8; 12];
                    let mut got = 0;
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                        if n <= 0 {
                            break;
                        }
                        let n = n as usize;
                        let take = (head.len() - got).min(n);
                        head[got..got + take].copy_from_slice(&buf[..take]);
                        got += take;
                    }
                    if &head == b"HTTP/1.1 403" {
                        forbidden += 1;
                    }
                }
                libc::close(fd);
            }
            let bytes = forbidden.to_ne_bytes();
            libc::write(out, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let mut answer = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(read_end), &mut answer)?;
            let status = nix::sys::wait::waitpid(child, None)?;
            let exited_ok = matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0));
            match <[u8; 8]>::try_from(answer.as_slice()) {
                Ok(bytes) if exited_ok => Ok(u64::from_ne_bytes(bytes)),
                _ => Err(io::Error::other(format!("flood child ended {status:?}"))),
            }
        }
    }
}
