//! `ak-audit-bench`: `ecs-ak-audit` measured against the usual tools on generated inputs, with
//! the targets checked, in one run (see `run.rs` and docs/ak-audit.md "benchmark").
//!
//! - `scan` against `rg -j2 -uu -n -e '\bLTAI[0-9A-Za-z]{12,20}\b'` on a generated tree of
//!   mixed text and binaries with planted fake AccessKeyIds (`tree.rs`, `text.rs`): throughput
//!   (>= 0.7x ripgrep's) and the findings against the planted list.
//! - `actiontrail --format json` against `jq-baseline.sh` (`zcat | jq | sort | uniq -c`) on
//!   generated OSS deliveries (`trail.rs`, `event.rs`): >= 5x faster, the same groups, and peak
//!   RSS <= 64 MiB at 1 GiB and 4 GiB of uncompressed events (`measure.rs`).
//!
//! `--smoke` runs small sizes and checks correctness only (for CI). Exit status 0 when every
//! row passed, 1 when one failed, 2 on a usage or I/O error.

#![forbid(unsafe_code)]

mod check;
mod event;
mod measure;
mod report;
mod run;
mod text;
mod trail;
mod tree;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ak-audit-bench",
    about = "Benchmarks ecs-ak-audit (scan vs ripgrep, actiontrail vs a jq pipeline) on generated inputs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: run::Options,
}

/// The benchmark's own child process (not for direct use).
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs PROGRAM with its output to the files; prints wall time, peak RSS and status.
    #[command(hide = true)]
    Measure {
        #[arg(long)]
        stdout: PathBuf,
        #[arg(long)]
        stderr: PathBuf,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Measure {
            stdout,
            stderr,
            argv,
        }) => measure::child(&stdout, &stderr, &argv).map(|()| true),
        None => run::run(&cli.run),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ak-audit-bench: {e}");
            ExitCode::from(2)
        }
    }
}
