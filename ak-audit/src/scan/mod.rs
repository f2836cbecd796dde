//! `ecs-ak-audit scan` (being built: see the issue).

use std::process::ExitCode;

/// The arguments of `ecs-ak-audit scan`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `ecs-ak-audit scan`; returns its exit status.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("ecs-ak-audit scan: not built yet");
    ExitCode::from(2)
}
