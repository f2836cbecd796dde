//! The agent's command line, built inside this package so the end-to-end tests can run it as a
//! real process (`CARGO_BIN_EXE_e2e-agent`): cargo offers binaries only of the package under test.
//!
//! Unlike the `ecs-credential-agent` binary, it reads two test-only hooks from the environment:
//! `E2E_AGENT_WEDGE_SERVER_AFTER_MS=<ms>` wedges the server's accept loop that long after start
//! (for the watchdog test); `E2E_AGENT_PANIC_ON_PATH=<path>` makes requests for that path panic
//! in their handler (for the secrets test).

fn main() -> std::process::ExitCode {
    let hooks = ecs_credential_agent::daemon::TestHooks {
        wedge_server_after: std::env::var("E2E_AGENT_WEDGE_SERVER_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis),
        panic_on_path: std::env::var("E2E_AGENT_PANIC_ON_PATH").ok(),
    };
    ecs_credential_agent::cli::main_with_test_hooks(hooks)
}
