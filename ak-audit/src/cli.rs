//! The command line: `ecs-ak-audit actiontrail …` and `ecs-ak-audit scan …`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Finds long-term AccessKeys still in use: in ActionTrail (calls from ECS) and on a host
/// (files, process environments).
#[derive(Debug, Parser)]
#[command(name = "ecs-ak-audit", version, about, long_about = None)]
pub struct Cli {
    /// What to audit.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Groups long-term AccessKey calls found in ActionTrail events.
    Actiontrail(crate::actiontrail::Args),
    /// Finds AccessKeys written into files (and, with --processes, process environments).
    Scan(crate::scan::Args),
}

/// Parses the command line and runs the subcommand; returns its exit status (usage errors
/// exit 2, from clap).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Actiontrail(args) => crate::actiontrail::run(args),
        Command::Scan(args) => crate::scan::run(args),
    }
}
