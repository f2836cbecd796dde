//! What tests script and read: faults and call counts.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::watch;

use super::error::StsError;
use super::verify::Scheme;
use crate::Times;

/// One way STS misbehaves, applied to a matching request before its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StsFault {
    /// HTTP 500 `InternalError`.
    InternalError,
    /// HTTP 400 `Throttling.User`, "Request was denied due to user flow control.".
    Throttling,
    /// Accept the request and never answer (the connection stays open).
    Hang,
    /// Answer normally, but with `Expiration` = the time of the answer (whole seconds): the
    /// credentials expire on arrival. Refusals still refuse (the fault is used up).
    ExpiredOnArrival,
    /// Answer with this error (any status and code; see [`StsError::of`]).
    Error(StsError),
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultScope {
    /// Requests whose `RoleArn` is exactly this.
    Role(String),
    /// Every request.
    All,
}

impl FaultScope {
    fn matches(&self, role_arn: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Role(arn) => role_arn == Some(arn.as_str()),
        }
    }
}

/// Calls for one `RoleArn`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoleCounts {
    /// Every request naming this `RoleArn`, whatever became of it.
    pub calls: u64,
    /// Answered with credentials.
    pub accepted: u64,
    /// Answered with an error (refusals and injected errors).
    pub refused: u64,
    /// Held open by [`StsFault::Hang`].
    pub hung: u64,
}

/// Calls since start or [`StsEmulator::reset_counts`](super::StsEmulator::reset_counts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StsCounts {
    /// Every request, including ones without a `RoleArn`.
    pub total: RoleCounts,
    /// By `RoleArn` as sent (requests without one appear only in `total`).
    pub roles: BTreeMap<String, RoleCounts>,
    /// Refusals by `Code`.
    pub codes: BTreeMap<String, u64>,
    /// Accepted requests signed with RPC V2 (`HMAC-SHA1`).
    pub accepted_v2: u64,
    /// Accepted requests signed with V3 (`ACS3-HMAC-SHA256`).
    pub accepted_v3: u64,
}

impl StsCounts {
    /// The counts for `role_arn` (zero if it was never named).
    pub fn role(&self, role_arn: &str) -> RoleCounts {
        self.roles.get(role_arn).copied().unwrap_or_default()
    }

    /// How many refusals carried `code`.
    pub fn code(&self, code: &str) -> u64 {
        self.codes.get(code).copied().unwrap_or_default()
    }
}

/// How a request ended, for counting.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome<'a> {
    Accepted(Scheme),
    Refused(&'a str),
    Hung,
}

#[derive(Debug)]
struct Rule {
    scope: FaultScope,
    fault: StsFault,
    remaining: Option<u32>,
}

/// Faults (a std mutex: never held across an `.await`) and counts (a watch channel, so tests
/// can wait for a count).
#[derive(Debug)]
pub(crate) struct Script {
    faults: Mutex<Vec<Rule>>,
    counts: watch::Sender<StsCounts>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            faults: Mutex::default(),
            counts: watch::Sender::new(StsCounts::default()),
        }
    }
}

impl Script {
    fn faults(&self) -> MutexGuard<'_, Vec<Rule>> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_fault(&self, scope: FaultScope, fault: StsFault, times: Times) {
        let remaining = match times {
            Times::Next(0) => return,
            Times::Next(n) => Some(n),
            Times::Always => None,
        };
        self.faults().push(Rule {
            scope,
            fault,
            remaining,
        });
    }

    pub(crate) fn clear_faults(&self) {
        self.faults().clear();
    }

    /// The first fault matching a request for `role_arn`, used up by one.
    pub(crate) fn take_fault(&self, role_arn: Option<&str>) -> Option<StsFault> {
        let mut rules = self.faults();
        let i = rules.iter().position(|r| r.scope.matches(role_arn))?;
        let fault = rules[i].fault.clone();
        if let Some(n) = &mut rules[i].remaining {
            *n -= 1;
            if *n == 0 {
                rules.remove(i);
            }
        }
        Some(fault)
    }

    pub(crate) fn count(&self, role_arn: Option<&str>, outcome: Outcome<'_>) {
        self.counts.send_modify(|counts| {
            let bump = |c: &mut RoleCounts| {
                c.calls += 1;
                match outcome {
                    Outcome::Accepted(_) => c.accepted += 1,
                    Outcome::Refused(_) => c.refused += 1,
                    Outcome::Hung => c.hung += 1,
                }
            };
            bump(&mut counts.total);
            if let Some(arn) = role_arn {
                bump(counts.roles.entry(arn.to_owned()).or_default());
            }
            match outcome {
                Outcome::Refused(code) => *counts.codes.entry(code.to_owned()).or_default() += 1,
                Outcome::Accepted(Scheme::V2) => counts.accepted_v2 += 1,
                Outcome::Accepted(Scheme::V3) => counts.accepted_v3 += 1,
                Outcome::Hung => {}
            }
        });
    }

    pub(crate) fn counts(&self) -> StsCounts {
        self.counts.borrow().clone()
    }

    pub(crate) fn reset_counts(&self) {
        self.counts.send_replace(StsCounts::default());
    }

    pub(crate) async fn wait_for(&self, mut done: impl FnMut(&StsCounts) -> bool) -> StsCounts {
        let mut rx = self.counts.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let counts = rx.wait_for(|c| done(c)).await.map(|c| c.clone());
        counts.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_by_scope_and_times() {
        let script = Script::default();
        let a = "acs:ram::1:role/a";
        script.add_fault(
            FaultScope::Role(a.into()),
            StsFault::Throttling,
            Times::Next(2),
        );
        script.add_fault(FaultScope::All, StsFault::InternalError, Times::Next(1));
        assert_eq!(
            script.take_fault(Some("acs:ram::1:role/b")),
            Some(StsFault::InternalError)
        );
        assert_eq!(script.take_fault(Some("acs:ram::1:role/b")), None);
        assert_eq!(script.take_fault(Some(a)), Some(StsFault::Throttling));
        assert_eq!(script.take_fault(Some(a)), Some(StsFault::Throttling));
        assert_eq!(script.take_fault(Some(a)), None);
        script.add_fault(FaultScope::All, StsFault::Hang, Times::Always);
        assert_eq!(script.take_fault(None), Some(StsFault::Hang));
        assert_eq!(script.take_fault(None), Some(StsFault::Hang));
        script.clear_faults();
        assert_eq!(script.take_fault(None), None);
    }

    #[test]
    fn counts_by_role_and_code() {
        let script = Script::default();
        script.count(Some("r"), Outcome::Accepted(Scheme::V3));
        script.count(Some("r"), Outcome::Refused("NoPermission"));
        script.count(None, Outcome::Refused("IncompleteSignature"));
        let c = script.counts();
        assert_eq!(
            (c.total.calls, c.total.accepted, c.total.refused),
            (3, 1, 2)
        );
        assert_eq!(c.role("r").calls, 2);
        assert_eq!(c.code("NoPermission"), 1);
        assert_eq!((c.accepted_v2, c.accepted_v3), (0, 1));
        assert_eq!(c.role("other"), RoleCounts::default());
    }
}
