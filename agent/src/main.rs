//! `ecs-credential-agent`: the thin binary. Everything it does lives in the library
//! ([`ecs_credential_agent::cli`]), so tests can drive the same code.

fn main() -> std::process::ExitCode {
    ecs_credential_agent::cli::main()
}
