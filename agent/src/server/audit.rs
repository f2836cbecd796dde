//! The audit trail: who received which credential generation, and who was turned away.
//!
//! Events go to the `tracing` target `"audit"` with structured fields. Every issuance is
//! accounted for without a line per request:
//!
//! - a caller (pid, uid) gets one `info` event ([`AuditEvent::Issued`]) the first time it
//!   receives a credential generation;
//! - its further requests within that generation are counted and reported in one
//!   [`AuditEvent::Repeats`] at most once per [`SUMMARY_INTERVAL`] (on its next request, by the
//!   periodic flush, when the generation changes, and at shutdown);
//! - the first denial of a uid is a `warn` event at once ([`AuditEvent::Denied`]); its repeats
//!   within [`SUMMARY_INTERVAL`] are summarised as [`AuditEvent::DenialsSuppressed`];
//! - memory is bounded ([`MAX_CALLERS`], [`MAX_DENIED_UIDS`]): beyond it, requests are still
//!   counted, in aggregate ([`AuditEvent::Untracked`]).
//!
//! [`Audit`] is plain state driven by explicit `now` values, so the rules are unit-tested
//! without capturing logs. No event holds `AccessKeySecret`, `SecurityToken` or any token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::credentials::state::StateReceiver;
use crate::credentials::Issued;
use crate::identity::Caller;

/// The shortest time between two summary events for the same caller or uid.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// How many (pid, uid) callers are tracked individually.
pub const MAX_CALLERS: usize = 4_096;
/// How many denied uids are tracked individually.
pub const MAX_DENIED_UIDS: usize = 1_024;
/// A caller with nothing pending is forgotten after this long without a request.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// One audit event; [`AuditEvent::emit`] writes it to the `"audit"` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// A caller received a credential generation for the first time.
    Issued {
        /// Caller pid (0 when unknown).
        pid: i32,
        /// Caller uid.
        uid: u32,
        /// Caller primary gid.
        gid: u32,
        /// Caller executable, or `"unknown"`.
        exe: String,
        /// How the caller connected: `"unix"` or `"tcp"`.
        transport: &'static str,
        /// RAM role name.
        role: String,
        /// `AccessKeyId` of the generation.
        access_key_id: String,
        /// Generation number.
        generation: u64,
    },
    /// Further issuances of the same generation to the same caller.
    Repeats {
        /// Caller pid (0 when unknown).
        pid: i32,
        /// Caller uid.
        uid: u32,
        /// `AccessKeyId` of the generation.
        access_key_id: String,
        /// Generation number.
        generation: u64,
        /// How many further requests were served since the last event for this caller.
        count: u64,
    },
    /// The first denial of a uid (within a summary interval).
    Denied {
        /// Caller pid (0 when unknown).
        pid: i32,
        /// Caller uid.
        uid: u32,
        /// Caller primary gid.
        gid: u32,
        /// Caller executable, or `"unknown"`.
        exe: String,
        /// How the caller connected: `"unix"` or `"tcp"`.
        transport: &'static str,
    },
    /// Denials of a uid not logged individually.
    DenialsSuppressed {
        /// Caller uid.
        uid: u32,
        /// How many.
        count: u64,
    },
    /// Requests from callers beyond the tracking limits, counted in aggregate.
    Untracked {
        /// Credential responses served to untracked callers.
        issuances: u64,
        /// Denials of untracked uids.
        denials: u64,
    },
}

impl AuditEvent {
    /// Writes the event to the `tracing` target `"audit"` (`info`, or `warn` for denials),
    /// which is written whatever the log level ([`crate::logging`]). The executable path is
    /// chosen by the caller (it can name its binary anything, newlines and terminal escapes
    /// included), the RAM role name by the metadata service, the `AccessKeyId` by STS: each is
    /// a string field, which every log style writes escaped (and the text styles quoted), so
    /// none can end the line, forge a field or reach a terminal raw.
    pub fn emit(&self) {
        match self {
            AuditEvent::Issued {
                pid,
                uid,
                gid,
                exe,
                transport,
                role,
                access_key_id,
                generation,
            } => {
                tracing::info!(target: "audit", event = "issued", pid, uid, gid, exe = exe.as_str(),
                    transport = *transport,
                    role = role.as_str(), access_key_id = access_key_id.as_str(), generation,
                    "credentials issued to caller");
            }
            AuditEvent::Repeats {
                pid,
                uid,
                access_key_id,
                generation,
                count,
            } => {
                tracing::info!(target: "audit", event = "repeats", pid, uid,
                    access_key_id = access_key_id.as_str(), generation, count,
                    "credentials issued again to caller");
            }
            AuditEvent::Denied {
                pid,
                uid,
                gid,
                exe,
                transport,
            } => {
                tracing::warn!(target: "audit", event = "denied", pid, uid, gid, exe = exe.as_str(),
                    transport = *transport,
                    "caller denied: uid and groups not allowed");
            }
            AuditEvent::DenialsSuppressed { uid, count } => {
                tracing::warn!(target: "audit", event = "denials_suppressed", uid, count,
                    "further denials of caller");
            }
            AuditEvent::Untracked { issuances, denials } => {
                tracing::info!(target: "audit", event = "untracked", issuances, denials,
                    "requests from callers beyond the audit tracking limit");
            }
        }
    }
}

/// What the audit remembers of one (pid, uid) caller.
#[derive(Debug)]
struct Tracked {
    generation: u64,
    access_key_id: String,
    pending: u64,
    window_start: Instant,
    last_seen: Instant,
}

#[derive(Debug)]
struct Denials {
    window_start: Instant,
    suppressed: u64,
}

/// The audit state: which caller has seen which generation, pending counts, denials.
#[derive(Debug)]
pub struct Audit {
    callers: HashMap<(i32, u32), Tracked>,
    denials: HashMap<u32, Denials>,
    untracked_issuances: u64,
    untracked_denials: u64,
    max_callers: usize,
    max_denied_uids: usize,
}

impl Default for Audit {
    fn default() -> Self {
        Audit::with_limits(MAX_CALLERS, MAX_DENIED_UIDS)
    }
}

impl Audit {
    /// An empty audit tracking at most `max_callers` callers and `max_denied_uids` uids.
    pub fn with_limits(max_callers: usize, max_denied_uids: usize) -> Audit {
        Audit {
            callers: HashMap::new(),
            denials: HashMap::new(),
            untracked_issuances: 0,
            untracked_denials: 0,
            max_callers,
            max_denied_uids,
        }
    }

    /// Records that `issued` was served to `caller` at `now`; returns the events to emit now.
    pub fn record_issuance(
        &mut self,
        caller: &Caller,
        issued: &Issued,
        now: Instant,
    ) -> Vec<AuditEvent> {
        let key = (caller.pid.unwrap_or(0), caller.uid);
        let mut events = Vec::new();
        if let Some(c) = self.callers.get_mut(&key) {
            c.last_seen = now;
            if c.generation == issued.generation {
                c.pending += 1;
                if now.duration_since(c.window_start) >= SUMMARY_INTERVAL {
                    events.extend(take_repeats(key, c, now));
                }
                return events;
            }
            events.extend(take_repeats(key, c, now));
            self.callers.remove(&key);
        } else if self.callers.len() >= self.max_callers {
            events.extend(self.evict(issued.generation, now));
            if self.callers.len() >= self.max_callers {
                self.untracked_issuances += 1;
                return events;
            }
        }
        let tracked = Tracked {
            generation: issued.generation,
            access_key_id: issued.access_key_id.clone(),
            pending: 0,
            window_start: now,
            last_seen: now,
        };
        self.callers.insert(key, tracked);
        events.push(AuditEvent::Issued {
            pid: key.0,
            uid: caller.uid,
            gid: caller.gid,
            exe: caller.exe_or_unknown(),
            transport: caller.transport.as_str(),
            role: issued.role_name.clone(),
            access_key_id: issued.access_key_id.clone(),
            generation: issued.generation,
        });
        events
    }

    /// Records `count` further issuances of generation `generation` (`access_key_id`) to
    /// `caller`, served after a [`Audit::record_issuance`] of that generation to the same caller,
    /// as of `now` (a connection counts its repeats itself and reports them in batches);
    /// returns the events to emit now. When the caller now holds another generation, the
    /// count is reported at once as [`AuditEvent::Repeats`]; when it is not tracked (the
    /// table was full), it is counted in aggregate ([`AuditEvent::Untracked`]).
    pub fn record_repeats(
        &mut self,
        caller: &Caller,
        generation: u64,
        access_key_id: &str,
        count: u64,
        now: Instant,
    ) -> Vec<AuditEvent> {
        if count == 0 {
            return Vec::new();
        }
        let key = (caller.pid.unwrap_or(0), caller.uid);
        match self.callers.get_mut(&key) {
            Some(c) if c.generation == generation => {
                c.last_seen = now;
                c.pending += count;
                if now.duration_since(c.window_start) >= SUMMARY_INTERVAL {
                    return take_repeats(key, c, now).into_iter().collect();
                }
                Vec::new()
            }
            Some(_) => vec![AuditEvent::Repeats {
                pid: key.0,
                uid: key.1,
                access_key_id: access_key_id.to_owned(),
                generation,
                count,
            }],
            None => {
                self.untracked_issuances += count;
                Vec::new()
            }
        }
    }

    /// Records that `caller` was denied at `now`; returns the events to emit now.
    pub fn record_denial(&mut self, caller: &Caller, now: Instant) -> Vec<AuditEvent> {
        let denied = || AuditEvent::Denied {
            pid: caller.pid.unwrap_or(0),
            uid: caller.uid,
            gid: caller.gid,
            exe: caller.exe_or_unknown(),
            transport: caller.transport.as_str(),
        };
        let Some(d) = self.denials.get_mut(&caller.uid) else {
            if self.denials.len() >= self.max_denied_uids {
                self.untracked_denials += 1;
                return Vec::new();
            }
            let d = Denials {
                window_start: now,
                suppressed: 0,
            };
            self.denials.insert(caller.uid, d);
            return vec![denied()];
        };
        if now.duration_since(d.window_start) < SUMMARY_INTERVAL {
            d.suppressed += 1;
            return Vec::new();
        }
        let mut events = Vec::new();
        if d.suppressed > 0 {
            events.push(AuditEvent::DenialsSuppressed {
                uid: caller.uid,
                count: d.suppressed,
            });
        }
        *d = Denials {
            window_start: now,
            suppressed: 0,
        };
        events.push(denied());
        events
    }

    /// The periodic flush: summaries whose interval has passed, and forgetting idle callers
    /// and finished denial windows.
    pub fn flush(&mut self, now: Instant) -> Vec<AuditEvent> {
        self.flush_where(now, false)
    }

    /// At shutdown: every pending count, whatever its age.
    pub fn flush_all(&mut self, now: Instant) -> Vec<AuditEvent> {
        self.flush_where(now, true)
    }

    fn flush_where(&mut self, now: Instant, all: bool) -> Vec<AuditEvent> {
        let due = |start: Instant| all || now.duration_since(start) >= SUMMARY_INTERVAL;
        let mut events = Vec::new();
        for (key, c) in &mut self.callers {
            if c.pending > 0 && due(c.window_start) {
                events.extend(take_repeats(*key, c, now));
            }
        }
        self.callers
            .retain(|_, c| c.pending > 0 || now.duration_since(c.last_seen) < FORGET_AFTER);
        self.denials.retain(|uid, d| {
            if !due(d.window_start) {
                return true;
            }
            if d.suppressed > 0 {
                events.push(AuditEvent::DenialsSuppressed {
                    uid: *uid,
                    count: d.suppressed,
                });
            }
            false
        });
        if self.untracked_issuances + self.untracked_denials > 0 {
            events.push(AuditEvent::Untracked {
                issuances: std::mem::take(&mut self.untracked_issuances),
                denials: std::mem::take(&mut self.untracked_denials),
            });
        }
        events
    }

    /// Makes room when the caller table is full: forgets callers of older generations and
    /// callers idle for a summary interval, reporting their pending counts.
    fn evict(&mut self, generation: u64, now: Instant) -> Vec<AuditEvent> {
        let mut events = Vec::new();
        self.callers.retain(|key, c| {
            let old = c.generation < generation;
            let idle = now.duration_since(c.last_seen) >= SUMMARY_INTERVAL;
            if !(old || idle) {
                return true;
            }
            events.extend(take_repeats(*key, c, now));
            false
        });
        events
    }

    /// How many callers are tracked individually.
    pub fn tracked_callers(&self) -> usize {
        self.callers.len()
    }

    /// Whether serving `generation` (`None`: no credentials yet, so the first will be new) to
    /// `caller` would be its first issuance of it ([`AuditEvent::Issued`], which names the
    /// executable): the caller is not tracked with that generation.
    pub fn would_be_first_issuance(&self, caller: &Caller, generation: Option<u64>) -> bool {
        let key = (caller.pid.unwrap_or(0), caller.uid);
        generation.is_none() || self.callers.get(&key).map(|c| c.generation) != generation
    }

    /// Whether denying `uid` at `now` would write [`AuditEvent::Denied`] (which names the
    /// executable): the uid has no denial window open.
    pub fn would_log_denial(&self, uid: u32, now: Instant) -> bool {
        self.denials
            .get(&uid)
            .is_none_or(|d| now.duration_since(d.window_start) >= SUMMARY_INTERVAL)
    }
}

/// The last caller (pid and uid) [`read_exe_if_audited`] found already tracked with the
/// generation then held, and that generation: a new connection of the same caller with the
/// same generation skips the audit lock (two atomic loads). The two words are written
/// separately; a connection that reads a pair mixed from two callers, or whose caller the
/// audit has forgotten since (idle), at worst has its executable read at its first request,
/// as before this check existed.
#[derive(Debug, Default)]
pub(crate) struct KnownCaller {
    caller: AtomicU64,
    generation: AtomicU64,
}

impl KnownCaller {
    /// `pid` and `uid` in one word (a pid is an `i32`, a uid a `u32`: no two callers share it).
    fn key(caller: &Caller) -> u64 {
        (u64::from(caller.pid.unwrap_or(0) as u32) << 32) | u64::from(caller.uid)
    }

    fn is(&self, caller: &Caller, generation: u64) -> bool {
        self.caller.load(Ordering::Relaxed) == KnownCaller::key(caller)
            && self.generation.load(Ordering::Relaxed) == generation
    }

    fn set(&self, caller: &Caller, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
        self.caller
            .store(KnownCaller::key(caller), Ordering::Relaxed);
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

/// Emits audit events taken under the shared audit lock; a poisoned lock (a panic while
/// holding it) is reported, not fatal.
pub(crate) fn emit_events<E>(events: Result<Vec<AuditEvent>, E>) {
    match events {
        Ok(events) => events.iter().for_each(AuditEvent::emit),
        Err(_) => {
            tracing::error!(target: "audit", "audit state poisoned by an earlier panic; event lost")
        }
    }
}

/// The pending repeat count of a caller as an event (if any), starting a new window.
fn take_repeats(key: (i32, u32), c: &mut Tracked, now: Instant) -> Option<AuditEvent> {
    c.window_start = now;
    let count = std::mem::take(&mut c.pending);
    (count > 0).then(|| AuditEvent::Repeats {
        pid: key.0,
        uid: key.1,
        access_key_id: c.access_key_id.clone(),
        generation: c.generation,
        count,
    })
}

#[cfg(test)]
mod tests;
