//! The agent's command line, built inside this package so the end-to-end tests can run it as a
//! real process (`CARGO_BIN_EXE_e2e-agent`): cargo offers binaries only of the package under test.
//!
//! Unlike the `ecs-credential-agent` binary, it reads one test-only hook from the environment:
//! `E2E_AGENT_WEDGE_SERVER_AFTER_MS=<ms>` wedges the server's accept loop that long after start
//! (for the watchdog test).

fn main() -> std::process::ExitCode {
    let hooks = ecs_credential_agent::daemon::TestHooks {
        wedge_server_after: std::env::var("E2E_AGENT_WEDGE_SERVER_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis),
    };
    ecs_credential_agent::cli::main_with_test_hooks(hooks)
}
