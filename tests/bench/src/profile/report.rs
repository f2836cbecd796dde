//! The profile comparison's figures: the profile caller over the instance-role caller at each
//! load point, the `AssumeRole` counts, and their lines in the printed report.

use serde::Serialize;

use super::{INSTANCE_CALLER, PROFILE_CALLER};
use crate::load::Mode;
use crate::report::{Figure, Pair, Report};

/// The profile caller's row over the instance-role caller's.
const PROFILE: Pair = (PROFILE_CALLER, INSTANCE_CALLER);

/// The cold-start herd of profile callers.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileHerd {
    pub clients: u64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// `AssumeRole` requests naming the profile's role, whatever became of them.
    pub assume_role_calls: u64,
    /// Of those, answered with credentials.
    pub assume_role_accepted: u64,
    /// The instance role's metadata requests, for comparison with the instance-role herd.
    pub token_puts: u64,
    pub credential_gets: u64,
    pub p50_ms: f64,
    pub max_ms: f64,
}

/// One load point: the profile caller's figure over the instance-role caller's, each the
/// median of the per-round ratios (the two are loaded back to back in each round).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub mode: Mode,
    pub concurrency: usize,
    pub throughput: f64,
    pub throughput_rounds: Vec<f64>,
    pub p99: f64,
    pub p99_rounds: Vec<f64>,
    pub server_cpu: f64,
    pub server_cpu_rounds: Vec<f64>,
}

impl Report {
    /// The profile's targets (counts: also in smoke mode) and, in a full run, the
    /// comparison at each load point.
    pub(crate) fn profile_targets(&mut self) {
        if let Some(h) = self.profile_herd.clone() {
            self.target(
                "cold-start herd of a profile: AssumeRole calls for 1000 concurrent clients",
                "1 AssumeRole, 1000 × 200",
                format!(
                    "{} AssumeRole ({} accepted), {} × 200",
                    h.assume_role_calls, h.assume_role_accepted, h.ok
                ),
                h.assume_role_calls == 1
                    && h.assume_role_accepted == 1
                    && h.ok == h.clients
                    && h.errors == 0,
            );
        }
        if let Some(n) = self.profile_assume_roles_under_load {
            self.target(
                "profile: AssumeRole calls while its callers were loaded",
                "0",
                n.to_string(),
                n == 0,
            );
        }
        if self.smoke {
            return;
        }
        let throughput: Figure = |p| &p.rounds;
        let p99: Figure = |p| &p.p99_rounds;
        let cpu: Figure = |p| &p.cpu_rounds;
        for mode in [Mode::KeepAlive, Mode::NewConn] {
            for c in [1, 8] {
                let (t, tr) = self.agent_over_hyper(PROFILE, mode, c, throughput);
                if tr.is_empty() {
                    continue;
                }
                let (p, pr) = self.agent_over_hyper(PROFILE, mode, c, p99);
                let (s, sr) = self.agent_over_hyper(PROFILE, mode, c, cpu);
                self.profile_comparison.push(Comparison {
                    mode,
                    concurrency: c,
                    throughput: t,
                    throughput_rounds: tr,
                    p99: p,
                    p99_rounds: pr,
                    server_cpu: s,
                    server_cpu_rounds: sr,
                });
            }
        }
    }

    /// The profile's lines of the printed report.
    pub(crate) fn profile_markdown(&self) -> String {
        let mut s = String::new();
        if let Some(note) = &self.profile_note {
            s.push_str(&format!("Profile comparison: {note}\n\n"));
        }
        if let Some(h) = &self.profile_herd {
            s.push_str(&format!(
                "Cold-start herd of a profile: {} clients as uid {}, {} answered 200 (median {:.0} ms, \
                 all within {:.0} ms; first token PUT delayed 500 ms); AssumeRole: {} ({} accepted); \
                 metadata: {} token PUT, {} credential GET.\n\n",
                h.clients,
                super::PROFILE_UID,
                h.ok,
                h.p50_ms,
                h.max_ms,
                h.assume_role_calls,
                h.assume_role_accepted,
                h.token_puts,
                h.credential_gets
            ));
        }
        if self.profile_comparison.is_empty() {
            return s;
        }
        s.push_str(&format!(
            "Profile caller (uid {}, served the profile's assumed role) against instance-role \
             caller (uid {}), one agent with one profile: the median of the per-round ratios, \
             every round's ratio in brackets.\n\n",
            super::PROFILE_UID,
            super::INSTANCE_UID
        ));
        s.push_str(
            "| connection | clients | throughput | p99 latency | server CPU per request |\n",
        );
        s.push_str("|---|---:|---|---|---|\n");
        let show = |m: f64, rounds: &[f64]| {
            let r: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
            format!("{m:.2} × ({})", r.join(", "))
        };
        for c in &self.profile_comparison {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                match c.mode {
                    Mode::KeepAlive => "keep-alive",
                    Mode::NewConn => "new per request",
                },
                c.concurrency,
                show(c.throughput, &c.throughput_rounds),
                show(c.p99, &c.p99_rounds),
                show(c.server_cpu, &c.server_cpu_rounds),
            ));
        }
        s.push('\n');
        s
    }
}
