//! The agent's command line, built inside this package so the end-to-end tests can run it as a
//! real process (`CARGO_BIN_EXE_e2e-agent`): cargo offers binaries only of the package under test.
//!
//! Unlike the `ecs-credential-agent` binary, it reads test-only hooks from the environment:
//! - `E2E_AGENT_WEDGE_SERVER_AFTER_MS=<ms>` wedges the server's accept loop that long after start
//!   (for the watchdog test);
//! - `E2E_AGENT_PANIC_ON_PATH=<path>` makes requests for that path panic in their handler (for
//!   the secrets test);
//! - `E2E_AGENT_CLOCK_OFFSET_FILE=<path>` makes the agent's wall clock the system clock plus the
//!   signed number of seconds in that file, read at every look at the clock, so a test can skew
//!   the agent's clock from the start or step it while it runs (the fault matrix's clock rows).
//!   A missing or unreadable file counts as 0.
//! - `E2E_AGENT_JUDGE_EVERY_UID=1` judges root and the agent's own uid by `allowed_uids` and
//!   `allowed_gids` like any other caller, so a test running as root can be denied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ecs_credential_agent::time::{SkewedClock, TimeSource};

/// The system clock plus the offset written in a file.
#[derive(Debug)]
struct FileSkewedClock {
    path: PathBuf,
}

impl TimeSource for FileSkewedClock {
    fn now(&self) -> SystemTime {
        let offset_secs = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        SkewedClock { offset_secs }.now()
    }
}

fn main() -> std::process::ExitCode {
    let hooks = ecs_credential_agent::daemon::TestHooks {
        wedge_server_after: std::env::var("E2E_AGENT_WEDGE_SERVER_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis),
        time: std::env::var_os("E2E_AGENT_CLOCK_OFFSET_FILE").map(|path| {
            Arc::new(FileSkewedClock {
                path: PathBuf::from(path),
            }) as ecs_credential_agent::time::SharedTimeSource
        }),
        panic_on_path: std::env::var("E2E_AGENT_PANIC_ON_PATH").ok(),
        judge_every_uid: std::env::var_os("E2E_AGENT_JUDGE_EVERY_UID").is_some_and(|v| v == "1"),
    };
    ecs_credential_agent::cli::main_with_test_hooks(hooks)
}
