//! The audit trail: who received which credential generation, and who was turned away.
//!
//! Events go to the `tracing` target `"audit"` with structured fields. Every issuance is
//! accounted for without a line per request:
//!
//! - a caller gets one `info` event ([`AuditEvent::Issued`]) the first time it
//!   receives a credential generation;
//! - its further requests within that generation are counted and reported in one
//!   [`AuditEvent::Repeats`] at most once per [`SUMMARY_INTERVAL`] (on its next request, by the
//!   periodic flush, when the generation changes, and at shutdown);
//! - the first denial of a uid is a `warn` event at once ([`AuditEvent::Denied`]); its repeats
//!   within [`SUMMARY_INTERVAL`] are summarised as [`AuditEvent::DenialsSuppressed`];
//! - memory is bounded ([`MAX_CALLERS`], [`MAX_DENIED_UIDS`]): beyond it, requests are still
//!   counted, in aggregate ([`AuditEvent::Untracked`]).
//!
//! A caller is told apart by its uid and, on the socket, its pid; over the loopback listener,
//! which has no pid, by the cgroup v2 id of its socket ([`Origin`]), written as `cgroup_id`
//! in its events (so two services of one user are two callers).
//!
//! [`Audit`] is plain state driven by explicit `now` values, so the rules are unit-tested
//! without capturing logs. No event holds `AccessKeySecret`, `SecurityToken` or any token.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::credentials::Issued;
use crate::identity::{Caller, Transport};

/// The shortest time between two summary events for the same caller or uid.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// How many callers ([`Origin`] and uid) are tracked individually.
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
        /// Caller pid (0 when unknown: always over the loopback listener).
        pid: i32,
        /// The cgroup v2 id of a loopback TCP caller's socket (0 when the kernel sent none);
        /// `None` for socket callers.
        cgroup_id: Option<u64>,
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
        /// The profile whose credentials were issued (`None`: the instance role's).
        profile: Option<String>,
        /// `AccessKeyId` of the generation.
        access_key_id: String,
        /// Generation number.
        generation: u64,
    },
    /// Further issuances of the same generation to the same caller.
    Repeats {
        /// Caller pid (0 when unknown: always over the loopback listener).
        pid: i32,
        /// The cgroup v2 id of a loopback TCP caller's socket (0 when the kernel sent none);
        /// `None` for socket callers.
        cgroup_id: Option<u64>,
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
        /// Caller pid (0 when unknown: always over the loopback listener).
        pid: i32,
        /// The cgroup v2 id of a loopback TCP caller's socket (0 when the kernel sent none);
        /// `None` for socket callers.
        cgroup_id: Option<u64>,
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
                cgroup_id,
                uid,
                gid,
                exe,
                transport,
                role,
                profile,
                access_key_id,
                generation,
            } => {
                tracing::info!(target: "audit", event = "issued", pid, cgroup_id = *cgroup_id, uid, gid, exe = exe.as_str(),
                    transport = *transport,
                    role = role.as_str(), profile = profile.as_deref(), access_key_id = access_key_id.as_str(), generation,
                    "credentials issued to caller");
            }
            AuditEvent::Repeats {
                pid,
                cgroup_id,
                uid,
                access_key_id,
                generation,
                count,
            } => {
                tracing::info!(target: "audit", event = "repeats", pid, cgroup_id = *cgroup_id, uid,
                    access_key_id = access_key_id.as_str(), generation, count,
                    "credentials issued again to caller");
            }
            AuditEvent::Denied {
                pid,
                cgroup_id,
                uid,
                gid,
                exe,
                transport,
            } => {
                tracing::warn!(target: "audit", event = "denied", pid, cgroup_id = *cgroup_id, uid, gid, exe = exe.as_str(),
                    transport = *transport,
                    "caller denied: not allowed by [server] allowed_uids / allowed_gids, or matched by no \
                     profile while [profiles] unmatched = \"deny\"");
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

/// What tells a caller apart besides its uid: its pid on the socket; over the loopback
/// listener, which reports no pid, its socket's cgroup v2 id (0 when the kernel sent none,
/// so such callers of one uid are one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A socket caller's pid (0 when unknown).
    Pid(i32),
    /// A loopback TCP caller's cgroup v2 id.
    Cgroup(u64),
}

impl Origin {
    /// `caller`'s origin.
    pub fn of(caller: &Caller) -> Origin {
        match caller.transport {
            Transport::Unix => Origin::Pid(caller.pid.unwrap_or(0)),
            Transport::Tcp => Origin::Cgroup(caller.cgroup_id.unwrap_or(0)),
        }
    }

    /// The `pid` and `cgroup_id` fields of its events.
    fn fields(self) -> (i32, Option<u64>) {
        match self {
            Origin::Pid(pid) => (pid, None),
            Origin::Cgroup(id) => (0, Some(id)),
        }
    }
}

/// A tracked caller: where from, and its uid.
type Key = (Origin, u32);

/// What the audit remembers of one caller.
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
    callers: HashMap<Key, Tracked>,
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

    /// Records that `issued` (the instance role's) was served to `caller` at `now`; returns
    /// the events to emit now.
    pub fn record_issuance(
        &mut self,
        caller: &Caller,
        issued: &Issued,
        now: Instant,
    ) -> Vec<AuditEvent> {
        self.record_issuance_for(caller, issued, None, now)
    }

    /// [`Audit::record_issuance`] of `profile`'s credentials (`None`: the instance role's),
    /// named in the [`AuditEvent::Issued`] event.
    pub fn record_issuance_for(
        &mut self,
        caller: &Caller,
        issued: &Issued,
        profile: Option<&str>,
        now: Instant,
    ) -> Vec<AuditEvent> {
        let key = (Origin::of(caller), caller.uid);
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
        let (pid, cgroup_id) = key.0.fields();
        events.push(AuditEvent::Issued {
            pid,
            cgroup_id,
            uid: caller.uid,
            gid: caller.gid(),
            exe: caller.exe_or_unknown(),
            transport: caller.transport.as_str(),
            role: issued.role_name.clone(),
            profile: profile.map(str::to_owned),
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
        let key = (Origin::of(caller), caller.uid);
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
                pid: key.0.fields().0,
                cgroup_id: key.0.fields().1,
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
            pid: Origin::of(caller).fields().0,
            cgroup_id: Origin::of(caller).fields().1,
            uid: caller.uid,
            gid: caller.gid(),
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
        let key = (Origin::of(caller), caller.uid);
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
fn take_repeats(key: Key, c: &mut Tracked, now: Instant) -> Option<AuditEvent> {
    c.window_start = now;
    let count = std::mem::take(&mut c.pending);
    (count > 0).then(|| AuditEvent::Repeats {
        pid: key.0.fields().0,
        cgroup_id: key.0.fields().1,
        uid: key.1,
        access_key_id: c.access_key_id.clone(),
        generation: c.generation,
        count,
    })
}

mod known;
#[cfg(test)]
mod tests;

pub(crate) use known::{read_exe_if_audited, KnownCaller};
