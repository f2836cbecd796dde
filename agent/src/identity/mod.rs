//! Who is on the other end of a connection: the [`Caller`], captured by the transport when it
//! accepts, before anything is read from the connection.
//!
//! A leaf module: it imports no other module of the crate. The transports make a `Caller`
//! ([`Caller::of_unix_peer`] for the Unix socket, [`Caller::of_tcp_owner`] for the loopback
//! TCP listener, from a [`SockDiag`] lookup), [`policy`](crate::policy) judges it, the server
//! routes and audits with it, naming its [`Transport`].
//!
//! - uid, gid, supplementary groups and pid are what the kernel recorded when the process
//!   called `connect(2)` (`SO_PEERCRED`, `SO_PEERGROUPS`, see `socket(7)`); the peer cannot
//!   forge them. The groups are read when first needed (authorization needs them only when
//!   neither the uid nor the primary gid decides), through the connection's socket, which
//!   still reports the set recorded at `connect(2)`; the transport lends the socket to the
//!   caller for that ([`LentSocket`]) rather than duplicate it.
//! - The process itself is held as a handle ([`Process`]) so that it can be read later (its
//!   executable, cgroup, start time) without mistaking another process that reused its pid
//!   for it: a pidfd (`SO_PEERPIDFD`, Linux 6.5+, asked for through the connection when first
//!   needed), else an open `/proc/<pid>` directory whose process start time is read at
//!   accept. Those reads are lazy: a connection pays for them only when an audit event (or,
//!   later, a selector) needs them; the server reads the executable as soon as it accepts a
//!   connection the audit will name, so that a later `exec` does not change it.
//! - A TCP caller ([`Transport::Tcp`]) is known by less: the uid that owns its socket and
//!   the socket's cgroup, from the kernel's socket table ([`tcp`]); its gid and groups come
//!   from the user database for that uid (weaker than `SO_PEERGROUPS`: they are the groups the
//!   user would get at login, not those of the process that connected), read only when first
//!   needed (a caller allowed by its uid never costs a `getpwuid`); it has no pid and no
//!   process, so nothing that needs its executable matches it.

mod lent;
mod process;
pub mod tcp;
mod unix;

use std::path::Path;
use std::sync::OnceLock;

pub use lent::LentSocket;
pub use process::Process;
pub use tcp::{SockDiag, TcpLookupError, TcpOwner};

/// How a caller reached the agent: named in audit events and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The Unix socket: the kernel recorded the caller's uid, gid, groups and pid at
    /// `connect(2)`.
    Unix,
    /// The loopback TCP listener: uid (and cgroup) of the caller's socket from the kernel's
    /// socket table; gid and groups from the user database.
    Tcp,
}

impl Transport {
    /// `"unix"` or `"tcp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
        }
    }
}

/// The process on the other end of a connection, as the kernel saw it when it connected.
#[derive(Debug)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Effective (primary) gid, read on first use where the transport deferred it
    /// ([`Caller::gid`]).
    gid: OnceLock<u32>,
    /// Supplementary gids (may include the primary gid), read on first use ([`Caller::groups`]).
    groups: OnceLock<Vec<u32>>,
    /// Process id at `connect(2)` time (`None` if the kernel did not report one, for example
    /// for a process in a pid namespace the agent cannot see).
    pub pid: Option<i32>,
    /// A handle on that process, when one could be taken (`None`: the process had already
    /// exited, or there is no pid).
    process: Option<Process>,
    /// How the caller connected.
    pub transport: Transport,
    /// The cgroup v2 id of the caller's socket (the inode number of its cgroup directory under
    /// `/sys/fs/cgroup`), where the transport learns it (TCP, when the kernel reports
    /// `INET_DIAG_CGROUP_ID`).
    pub cgroup_id: Option<u64>,
}

impl Caller {
    /// A caller known only by its ids, with no process handle (its executable is unknown).
    pub fn new(uid: u32, gid: u32, groups: Vec<u32>, pid: Option<i32>) -> Caller {
        Caller {
            uid,
            gid: OnceLock::from(gid),
            groups: OnceLock::from(groups),
            pid,
            process: None,
            transport: Transport::Unix,
            cgroup_id: None,
        }
    }

    /// This caller with a process whose executable is known to be `exe` (tests, and
    /// transports that learn the executable some other way).
    pub fn with_exe(mut self, exe: &Path) -> Caller {
        self.process = Some(Process::with_exe(self.pid.unwrap_or(0), exe));
        self
    }

    /// Effective (primary) gid: as recorded at `connect(2)` for a Unix socket caller; for a
    /// TCP caller, its uid's primary group in the user database, read on first use (`getpwuid`
    /// costs microseconds, and a caller allowed by its uid never needs it), or the uid itself
    /// when the user database has no entry.
    pub fn gid(&self) -> u32 {
        *self.gid.get_or_init(|| tcp::user_gid(self.uid))
    }

    /// Supplementary gids (may include the primary gid), as recorded at `connect(2)`; read
    /// through the connection on first use where the transport deferred it; empty if they
    /// could not be read (or the connection was closed before they were first asked for:
    /// authorization asks at accept).
    pub fn groups(&self) -> &[u32] {
        self.groups.get_or_init(|| {
            if self.transport == Transport::Tcp {
                return tcp::user_groups(self.uid, self.gid());
            }
            self.process
                .as_ref()
                .and_then(Process::socket)
                .and_then(|lease| lease.with(|socket| unix::groups(socket, self.pid)))
                .unwrap_or_default()
        })
    }

    /// This caller with a process whose cgroup v2 path is known to be `cgroup` (tests, and
    /// transports that learn it some other way); its executable stays as it was.
    pub fn with_cgroup(mut self, cgroup: &str) -> Caller {
        let process = self
            .process
            .take()
            .unwrap_or_else(|| Process::known(self.pid.unwrap_or(0)));
        self.process = Some(process.with_known_cgroup(cgroup));
        self
    }

    /// The handle on the caller's process, if one was taken at accept.
    pub fn process(&self) -> Option<&Process> {
        self.process.as_ref()
    }

    /// The caller's executable (`/proc/<pid>/exe`), read on first use and checked to belong
    /// to the process that connected; `None` when unknown (the process has exited since, or
    /// the agent may not read it).
    pub fn exe(&self) -> Option<&Path> {
        self.process.as_ref()?.exe()
    }

    /// Whether the user database has been read for this caller (its gid or its groups).
    #[cfg(test)]
    pub(crate) fn user_database_read(&self) -> bool {
        self.transport == Transport::Tcp
            && (self.gid.get().is_some() || self.groups.get().is_some())
    }

    /// [`Caller::exe`] for a log field: the path, or `"unknown"`.
    pub fn exe_or_unknown(&self) -> String {
        self.exe()
            .map_or_else(|| "unknown".to_owned(), |p| p.display().to_string())
    }
}
