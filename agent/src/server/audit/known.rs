//! The executable read at accept when the audit will name it, and the last caller found
//! known, which lets a new connection of the same caller skip the audit lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use super::{Audit, Origin};
use crate::credentials::state::StateReceiver;
use crate::identity::Caller;

/// The last caller ([`Origin`] and uid) [`read_exe_if_audited`] found already tracked with the
/// generation then held, and that generation: a new connection of the same caller with the
/// same generation skips the audit lock (two atomic loads). The two words are written
/// separately; a connection that reads a pair mixed from two callers, or whose caller the
/// audit has forgotten since (idle), at worst has its executable read at its first request,
/// as before this check existed.
#[derive(Debug, Default)]
pub(crate) struct KnownCaller {
    caller: AtomicU64,
    cgroup: AtomicU64,
    generation: AtomicU64,
}

impl KnownCaller {
    /// The caller's [`Origin`] and uid in two words: the pid (an `i32`, or `u32::MAX << 32`
    /// marking a TCP caller, which no pid reaches) and the uid (a `u32`) in the first, the
    /// cgroup id (TCP only) in the second.
    fn key(caller: &Caller) -> (u64, u64) {
        let (first, cgroup) = match Origin::of(caller) {
            Origin::Pid(pid) => (u64::from(pid as u32), 0),
            Origin::Cgroup(id) => (u64::from(u32::MAX), id),
        };
        ((first << 32) | u64::from(caller.uid), cgroup)
    }

    pub(super) fn is(&self, caller: &Caller, generation: u64) -> bool {
        let (who, cgroup) = KnownCaller::key(caller);
        self.caller.load(Ordering::Relaxed) == who
            && self.cgroup.load(Ordering::Relaxed) == cgroup
            && self.generation.load(Ordering::Relaxed) == generation
    }

    pub(super) fn set(&self, caller: &Caller, generation: u64) {
        let (who, cgroup) = KnownCaller::key(caller);
        self.generation.store(generation, Ordering::Relaxed);
        self.cgroup.store(cgroup, Ordering::Relaxed);
        self.caller.store(who, Ordering::Relaxed);
    }
}

/// At accept, before anything is read from the connection: reads `caller`'s executable now
/// when the audit is to name it (an `allowed` caller's first issuance of the generation `state`
/// holds now; a denied caller's logged denial), so that the event names the program the process ran when it was
/// accepted. Read later, at the event, it would name whatever the process has exec'd since:
/// a process could connect, fork a child that keeps the socket, exec `/usr/bin/sleep`, and
/// have the child send the request. Reading only when the audit will name the executable keeps
/// a new connection from a known caller (the same pid, uid and generation) at one lock and
/// one lookup, or none when it is the caller last found known ([`KnownCaller`]); the read itself (a `SO_PEERPIDFD`, a `readlink` and a `poll`, about 2 µs)
/// only moves from the first request to the accept.
pub(crate) fn read_exe_if_audited(
    audit: &Mutex<Audit>,
    known: &KnownCaller,
    caller: &Caller,
    allowed: bool,
    state: &StateReceiver,
) {
    // Read before the audit lock, so that the two locks are never held together.
    let generation = allowed
        .then(|| state.borrow().credentials.as_ref().map(|c| c.generation))
        .flatten();
    if generation.is_some_and(|g| known.is(caller, g)) {
        return;
    }
    let needed = audit.lock().map_or(true, |a| match allowed {
        true => a.would_be_first_issuance(caller, generation),
        false => a.would_log_denial(caller.uid, Instant::now()),
    });
    match (needed, generation) {
        (true, _) => {
            let _ = caller.exe();
        }
        (false, Some(g)) => known.set(caller, g),
        (false, None) => {}
    }
}
