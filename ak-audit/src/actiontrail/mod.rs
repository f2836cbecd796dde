//! `ecs-ak-audit actiontrail` (being built: see the issue).

use std::process::ExitCode;

/// The arguments of `ecs-ak-audit actiontrail`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `ecs-ak-audit actiontrail`; returns its exit status.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("ecs-ak-audit actiontrail: not built yet");
    ExitCode::from(2)
}
