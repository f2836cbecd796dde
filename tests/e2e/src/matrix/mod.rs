//! The fault matrix's harness: what a row is made of, not the table of rows (that is
//! `tests/fault_matrix.rs`).
//!
//! A row starts a [`Run`] from a [`Setup`] (an emulator, an agent started from
//! [`base_config`] that also listens on loopback TCP ([`listen_on_bridge`]), optionally a fault
//! present from the start or a skewed agent clock). The run's two probers ask the agent for
//! credentials every [`PROBE_EVERY`], one over its Unix socket and one over its loopback TCP
//! listener ([`Transport`]), while the row injects, observes and clears its fault; every `200`
//! goes through the [`Suite`]'s one [`Checker`] (never an expired credential or one inside the
//! margin, in any row, over either transport). The row asserts on the [`Sample`]s of a window
//! ([`Run::check_during`] with an [`Expect`]: the same outcome over both transports), on
//! recovery ([`Run::wait_recovered`]: both serve again), and [`Run::finish`] adds the process
//! checks (alive, `VmRSS` under [`RSS_CEILING_KIB`]), [`tcp_outcomes`] (no refusal over TCP
//! the socket did not give too), the scan of its logs (and its answers' messages) for every
//! secret and metadata token seen or issued, and, in rows with an STS emulator ([`sts`]), that
//! every `200` carried the profile's assumed role.

mod checker;
mod probe;
mod run;
pub mod sts;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

pub use checker::{parse_served_time, Checker, CLOCK_SLACK};
pub use probe::{Bridge, Transport};
pub use run::{
    base_config, combine, listen_on_bridge, tcp_outcomes, Run, Sample, Setup, LOAD_SLACK,
    PROBE_EVERY, PROMPT_ANSWER, PROMPT_ROW_FIRST_WAIT_MS, RSS_CEILING_KIB,
};

/// What every row shares: the agent binary, the checker of served credentials and the count of
/// secrets found in logs.
#[derive(Debug)]
pub struct Suite {
    bin: PathBuf,
    checker: Checker,
    leaks: AtomicU64,
    /// Answers the finished rows' probers got, over the socket and over TCP.
    answers: [AtomicU64; 2],
}

impl Suite {
    /// A suite whose rows run the agent binary `bin` (usually [`agent_bin!()`](crate::agent_bin)).
    pub fn new(bin: impl Into<PathBuf>) -> Suite {
        Suite {
            bin: bin.into(),
            checker: Checker::default(),
            leaks: AtomicU64::default(),
            answers: Default::default(),
        }
    }

    /// The agent binary the rows run.
    pub fn bin(&self) -> &std::path::Path {
        &self.bin
    }

    /// The checker every served credential answer went through.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// How many secrets or metadata tokens the finished rows found in their agents' logs.
    pub fn leaks(&self) -> u64 {
        self.leaks.load(Ordering::Relaxed)
    }

    /// How many answers the finished rows' probers got over `transport`.
    pub fn answers(&self, transport: Transport) -> u64 {
        self.answers[transport as usize].load(Ordering::Relaxed)
    }
}

/// What a client gets while the fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The cached credentials (`200`).
    Cached,
    /// `503 CredentialsUnavailable` whose `Message` names the fault.
    Unavailable,
}
