//! A handle on the caller's process, taken at accept, through which its executable, cgroup
//! and start time are read later, and only when needed.
//!
//! A pid alone names a process only while it lives: once it exits and is reaped, the kernel
//! may give its pid to another process, and `/proc/<pid>` then describes that one. So:
//!
//! - with a **pidfd** (`SO_PEERPIDFD`), a value is read from `/proc/<pid>/…` and kept only if
//!   the pidfd then shows the process still running (`poll(2)` reports no exit): a pid is not
//!   reused while its process runs, so what was read before belonged to it. The pidfd itself
//!   is asked for on first use, through the connection's socket, lent to the caller
//!   ([`LentSocket`](super::LentSocket)): the kernel keeps a reference to the connecting
//!   process (its `struct pid`) for the socket's life, so a pidfd asked for later still names
//!   that process, never one that reused its pid (and fails, or shows it exited, once it is
//!   gone). A new connection thus pays for no system call here; once the connection is
//!   closed, a pidfd not asked for before is not asked for at all (the values read through
//!   it are then unknown);
//! - without pidfds (kernels before 6.5), the `/proc/<pid>` directory is opened at accept and
//!   read through (`openat`/`readlinkat`): once that process is gone, those reads fail instead
//!   of reaching a new process with the same pid. Its start time (field 22 of `stat`, clock
//!   ticks since boot) is read at accept too, so that the pair (pid, start time) names the
//!   process. This path cannot tell whether the pid was reused in the moment between
//!   `connect(2)` and the directory's opening; the pidfd path has no such window.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use nix::fcntl::{open, openat, readlinkat, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::Mode;

use super::lent::Lease;

/// The caller's process, and what has been read about it so far.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    handle: Handle,
    /// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
    start_time: OnceLock<Option<u64>>,
    exe: OnceLock<Option<PathBuf>>,
    cgroup: OnceLock<Option<String>>,
    /// The pidfd asked for through [`Handle::Socket`], once asked for.
    pidfd: OnceLock<Option<OwnedFd>>,
}

/// How the process is held.
#[derive(Debug)]
enum Handle {
    /// The connection's socket, lent, to ask for a pidfd when first needed.
    Socket(Arc<Lease>),
    /// A pidfd: the process still runs while polling it reports no exit.
    Pidfd(OwnedFd),
    /// An open `/proc/<pid>` directory (`O_PATH`): reads through it fail once the process is
    /// gone.
    ProcDir(OwnedFd),
    /// Nothing to read through: only the values set when it was made.
    Known,
}

impl Process {
    /// The process `pid` held by `pidfd`.
    pub(super) fn from_pidfd(pid: i32, pidfd: OwnedFd) -> Process {
        Process::with_handle(pid, Handle::Pidfd(pidfd))
    }

    /// The process `pid` on the other end of the socket lent through `lease` (on a kernel
    /// with `SO_PEERPIDFD`), whose pidfd is asked for on first use.
    pub(super) fn from_socket(pid: i32, lease: Arc<Lease>) -> Process {
        Process::with_handle(pid, Handle::Socket(lease))
    }

    /// Opens `/proc/<pid>` and reads the process's start time through it.
    ///
    /// # Errors
    ///
    /// The OS error of opening the directory or reading its `stat` (the process has exited).
    pub(super) fn open_proc_dir(pid: i32) -> io::Result<Process> {
        let dir = open(
            Path::new(&format!("/proc/{pid}")),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let process = Process::with_handle(pid, Handle::ProcDir(dir));
        let stat = process.read("stat")?;
        let start_time = parse_start_time(&stat)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))?;
        let _ = process.start_time.set(Some(start_time));
        Ok(process)
    }

    /// A process known only by `pid` and its executable `exe`.
    pub(super) fn with_exe(pid: i32, exe: &Path) -> Process {
        let process = Process::with_handle(pid, Handle::Known);
        let _ = process.exe.set(Some(exe.to_owned()));
        process
    }

    /// A process known only by `pid`, nothing read yet (nothing can be).
    pub(super) fn known(pid: i32) -> Process {
        Process::with_handle(pid, Handle::Known)
    }

    /// This process, its cgroup known to be `cgroup` (the handle is kept).
    pub(super) fn with_known_cgroup(self, cgroup: &str) -> Process {
        let cell = OnceLock::new();
        let _ = cell.set(Some(cgroup.to_owned()));
        Process {
            cgroup: cell,
            ..self
        }
    }

    fn with_handle(pid: i32, handle: Handle) -> Process {
        Process {
            pid,
            handle,
            start_time: OnceLock::new(),
            exe: OnceLock::new(),
            cgroup: OnceLock::new(),
            pidfd: OnceLock::new(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The lease on the connection's socket the process is held through, if it is.
    pub(super) fn socket(&self) -> Option<&Lease> {
        match &self.handle {
            Handle::Socket(lease) => Some(lease),
            _ => None,
        }
    }

    /// Whether the process is held by a pidfd, taken or to be taken (else by its `/proc`
    /// directory, or not at all).
    pub fn has_pidfd(&self) -> bool {
        matches!(self.handle, Handle::Pidfd(_) | Handle::Socket(_))
    }

    /// The pidfd, asked for now if it is to be taken through the socket; `None` without
    /// pidfds, when the kernel gives none (the process has been reaped), or when the socket
    /// was closed before it was asked for.
    fn pidfd(&self) -> Option<&OwnedFd> {
        match &self.handle {
            Handle::Pidfd(pidfd) => Some(pidfd),
            Handle::Socket(lease) => self
                .pidfd
                .get_or_init(|| {
                    lease
                        .with(|socket| getsockopt(&socket, sockopt::PeerPidfd).ok())
                        .flatten()
                })
                .as_ref(),
            Handle::ProcDir(_) | Handle::Known => None,
        }
    }

    /// When the process started, in clock ticks since boot (`/proc/<pid>/stat` field 22; see
    /// `sysconf(_SC_CLK_TCK)`): with the pid, it names one process for the life of the
    /// system. Read at accept without a pidfd, else on first use; `None` once the process is
    /// gone before it was read.
    pub fn start_time(&self) -> Option<u64> {
        *self.start_time.get_or_init(|| {
            let stat = self.read("stat").ok()?;
            parse_start_time(&stat)
        })
    }

    /// The executable (`/proc/<pid>/exe`), read on first use; `None` when the process is gone
    /// or may not be read.
    pub fn exe(&self) -> Option<&Path> {
        self.exe
            .get_or_init(|| self.read_link("exe").ok())
            .as_deref()
    }

    /// The process's cgroup (v2, the `0::` line of `/proc/<pid>/cgroup`), read on first use;
    /// `None` when unknown (cgroup v1 only, or the process is gone).
    pub fn cgroup(&self) -> Option<&str> {
        self.cgroup
            .get_or_init(|| parse_cgroup(&self.read("cgroup").ok()?))
            .as_deref()
    }

    /// The executable file, opened through `/proc/<pid>/exe` (the file the process runs, even
    /// when its path was replaced or deleted since), if still that process's; a process known
    /// only by its executable's path (tests) opens that path.
    ///
    /// # Errors
    /// The OS error of opening it; `ESRCH` when the process has exited.
    pub fn open_exe(&self) -> io::Result<File> {
        match &self.handle {
            Handle::Pidfd(_) | Handle::Socket(_) => {
                let pidfd = self
                    .pidfd()
                    .ok_or(io::Error::from_raw_os_error(libc::ESRCH))?;
                let file = File::open(format!("/proc/{}/exe", self.pid))?;
                still_running(pidfd).map(|()| file)
            }
            Handle::ProcDir(dir) => {
                let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
                Ok(File::from(openat(dir, "exe", flags, Mode::empty())?))
            }
            Handle::Known => match self.exe.get() {
                Some(Some(path)) => File::open(path),
                _ => Err(io::ErrorKind::NotFound.into()),
            },
        }
    }

    /// The target of the link `name` in the process's `/proc` directory, if still that
    /// process's.
    fn read_link(&self, name: &str) -> io::Result<PathBuf> {
        match &self.handle {
            Handle::Pidfd(_) | Handle::Socket(_) => {
                let pidfd = self
                    .pidfd()
                    .ok_or(io::Error::from_raw_os_error(libc::ESRCH))?;
                let target = std::fs::read_link(format!("/proc/{}/{name}", self.pid))?;
                still_running(pidfd).map(|()| target)
            }
            Handle::ProcDir(dir) => Ok(PathBuf::from(readlinkat(dir, name)?)),
            Handle::Known => Err(io::ErrorKind::NotFound.into()),
        }
    }

    /// The text of the file `name` in the process's `/proc` directory, if still that
    /// process's.
    fn read(&self, name: &str) -> io::Result<String> {
        let mut text = String::new();
        match &self.handle {
            Handle::Pidfd(_) | Handle::Socket(_) => {
                let pidfd = self
                    .pidfd()
                    .ok_or(io::Error::from_raw_os_error(libc::ESRCH))?;
                File::open(format!("/proc/{}/{name}", self.pid))?.read_to_string(&mut text)?;
                still_running(pidfd)?;
            }
            Handle::ProcDir(dir) => {
                let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
                File::from(openat(dir, name, flags, Mode::empty())?).read_to_string(&mut text)?;
            }
            Handle::Known => return Err(io::ErrorKind::NotFound.into()),
        }
        Ok(text)
    }
}

/// `Ok` while the process `pidfd` refers to has not exited (its pid cannot have been reused);
/// `ESRCH` once it has.
fn still_running(pidfd: &OwnedFd) -> io::Result<()> {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO)? {
        0 => Ok(()),
        _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
    }
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted from the
/// last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // After the name: field 3 (state) is the first, so field 22 is the 20th.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The cgroup v2 path in `/proc/<pid>/cgroup` (the line `0::<path>`).
fn parse_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_counted_after_the_command_name() {
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 100 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("4242 (x) S 1 2"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_start_time(&own).is_some(), "{own}");
    }

    #[test]
    fn cgroup_is_the_unified_hierarchy_line() {
        let text = "12:cpu,cpuacct:/x\n0::/system.slice/app.service\n";
        assert_eq!(
            parse_cgroup(text).as_deref(),
            Some("/system.slice/app.service")
        );
        assert_eq!(parse_cgroup("12:cpu,cpuacct:/x\n"), None);
    }
}
