//! The agent's command line, built inside this package so the end-to-end tests can run it as a
//! real process (`CARGO_BIN_EXE_e2e-agent`): cargo offers binaries only of the package under test.

fn main() -> std::process::ExitCode {
    ecs_credential_agent::cli::main()
}
