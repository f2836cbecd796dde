//! `ecs-ak-audit`: the thin binary. Everything it does lives in the library
//! ([`ecs_ak_audit::cli`]), so tests can drive the same code.

fn main() -> std::process::ExitCode {
    ecs_ak_audit::cli::main()
}
