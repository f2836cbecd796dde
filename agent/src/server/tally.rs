//! The per-connection audit tally: a connection counts repeated issuances of one credential
//! generation itself and reports them to the shared [`Audit`] in batches, so the usual request
//! takes no lock that other connections take.
//!
//! The connection's first issuance of a generation goes to the shared audit at once (its
//! `issued` event is immediate); the further ones are counted here and reported at least every
//! [`AUDIT_BATCH`], when the generation changes, when the connection's timer finds it idle
//! ([`Tally::report_old`]), and when it closes ([`Tally::report_all`]).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::audit::{emit_events, Audit};
use crate::credentials::Issued;
use crate::identity::Caller;

/// How long a connection may keep counting repeated issuances before it reports them to the
/// shared audit (and at the latest when the generation changes, the connection's timer finds
/// it idle, or it closes).
pub(super) const AUDIT_BATCH: Duration = Duration::from_secs(1);

/// One connection's issuances not yet reported to the shared audit (none before its first).
#[derive(Debug, Default)]
pub(super) struct Tally(Option<Batch>);

/// Repeated issuances of one generation on one connection.
#[derive(Debug)]
struct Batch {
    generation: u64,
    access_key_id: String,
    /// Issuances not yet reported.
    count: u64,
    since: Instant,
}

impl Tally {
    /// Accounts for one issuance of `issued` (of `profile`'s credentials, else the instance
    /// role's) to `caller` at `now`: the connection's first of a
    /// generation is recorded in `audit` at once, the others are counted and reported at least
    /// every [`AUDIT_BATCH`].
    pub(super) fn count(
        &mut self,
        audit: &Mutex<Audit>,
        caller: &Caller,
        issued: &Issued,
        profile: Option<&str>,
        now: Instant,
    ) {
        if let Some(b) = self.0.as_mut() {
            if b.generation == issued.generation && now.duration_since(b.since) < AUDIT_BATCH {
                b.count += 1;
                return;
            }
        }
        let (report, first) = match self.0.take() {
            Some(b) if b.generation == issued.generation => (Some(b), false),
            other => (other, true),
        };
        self.0 = Some(Batch {
            generation: issued.generation,
            access_key_id: issued.access_key_id.clone(),
            count: u64::from(!first),
            since: now,
        });
        if !first && report.as_ref().is_some_and(|b| b.count == 0) {
            return;
        }
        emit_events(audit.lock().map(|mut a| {
            let mut events = report.map_or_else(Vec::new, |b| {
                a.record_repeats(caller, b.generation, &b.access_key_id, b.count, now)
            });
            if first {
                events.extend(a.record_issuance_for(caller, issued, profile, now));
            }
            events
        }));
    }

    /// Reports the repeats counted so far if they are at least [`AUDIT_BATCH`] old (the
    /// connection's timer, finding it idle).
    pub(super) fn report_old(&mut self, audit: &Mutex<Audit>, caller: &Caller, now: Instant) {
        let Some(b) = self.0.as_mut() else { return };
        if b.count == 0 || now.duration_since(b.since) < AUDIT_BATCH {
            return;
        }
        let count = std::mem::take(&mut b.count);
        b.since = now;
        emit_events(
            audit
                .lock()
                .map(|mut a| a.record_repeats(caller, b.generation, &b.access_key_id, count, now)),
        );
    }

    /// Reports every repeat still counted (the connection is closing); reads the clock only
    /// when there is one.
    pub(super) fn report_all(&mut self, audit: &Mutex<Audit>, caller: &Caller) {
        if let Some(b) = self.0.take().filter(|b| b.count > 0) {
            let now = Instant::now();
            emit_events(audit.lock().map(|mut a| {
                a.record_repeats(caller, b.generation, &b.access_key_id, b.count, now)
            }));
        }
    }
}
