//! `ecs-ak-audit actiontrail`: groups long-term AccessKey calls found in ActionTrail events.
//!
//! # Layout
//!
//! - [`split`] (the structural scanner in `split/structural.rs`): splits a byte stream into
//!   records (JSON lines, concatenated objects, a top-level array, `{"Events"|"Records": […]}`
//!   wrappers) holding one record at a time.
//! - [`event`]: parses a record (an event, an event as a JSON string, a Log Service line with
//!   the event in `event`) into a [`event::Call`] when a long-term key made it.
//! - [`input`]: opens files (gzip by magic bytes, every member), reads them in parallel,
//!   reports bad input with file and line, de-duplicates `LookupEvents` pages by `eventId`.
//! - [`group`]: the grouping (AccessKeyId, VPC, source IP).
//! - [`attribution`]: `--instances` and `--public-ips`.
//! - [`report`]: table, `--format json`, `--format csv`.
//! - [`sls`]: `--sls-queries` and `--from-sls-results`.
//!
//! Exit status: 0 no long-term key was used, 1 one was, 2 usage error, 3 no input could be
//! read.

pub mod attribution;
pub mod event;
pub mod group;
pub mod input;
pub mod report;
pub mod sls;
mod split;

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use attribution::Inventory;
use group::Groups;

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people, instances to fix first at the top.
    Table,
    /// A JSON array, one object per group.
    Json,
    /// CSV with the JSON field names as columns (lists as `Service:Event=N;…`).
    Csv,
}

/// The arguments of `ecs-ak-audit actiontrail`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 no long-term AccessKey was used, 1 one was, \
    2 usage error, 3 no input could be read."
)]
pub struct Args {
    /// Event files: OSS delivery (.gz or plain; JSON array, JSON lines or concatenated
    /// objects; {"Events"|"Records": […]}), Log Service dumps (JSON lines, the event in
    /// `event`), LookupEvents pages. `-` reads standard input.
    #[arg(value_name = "FILE", required_unless_present_any = ["sls_queries", "from_sls_results"])]
    pub files: Vec<PathBuf>,

    /// DescribeInstances output (JSON; several pages allowed): attributes calls to instances
    /// by VPC + private IP, or by public IP/EIP. Give event files first, or end the list
    /// with `--`.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub instances: Vec<PathBuf>,

    /// The account's own public addresses (one per line, `#` comments): marks public-endpoint
    /// calls from them.
    #[arg(long, value_name = "FILE")]
    pub public_ips: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Print the Log Service queries (the two documented ones and aggregating versions whose
    /// columns are the CSV columns) and exit.
    #[arg(long, conflicts_with_all = ["files", "from_sls_results", "instances", "public_ips"])]
    pub sls_queries: bool,

    /// Read exported results of the aggregating queries (CSV or JSON) instead of events.
    #[arg(long, value_name = "FILE", conflicts_with = "files")]
    pub from_sls_results: Vec<PathBuf>,

    /// Files read at once (default: the number of CPUs).
    #[arg(long, short = 'j', value_name = "N")]
    pub threads: Option<NonZeroUsize>,
}

/// Runs `ecs-ak-audit actiontrail`; returns its exit status.
pub fn run(args: Args) -> ExitCode {
    if args.sls_queries {
        print!("{}", sls::queries());
        return ExitCode::SUCCESS;
    }
    let mut inventory = Inventory::default();
    let loaded = args
        .instances
        .iter()
        .try_for_each(|p| inventory.add_instances_file(p))
        .and_then(|()| match &args.public_ips {
            Some(p) => inventory.add_public_ips_file(p),
            None => Ok(()),
        });
    if let Err(e) = loaded {
        eprintln!("ecs-ak-audit: {e}");
        return ExitCode::from(2);
    }
    let groups = if args.from_sls_results.is_empty() {
        let threads = args
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let outcome = input::read_all(&args.files, threads);
        if outcome.files_read == 0 {
            eprintln!("ecs-ak-audit: no input could be read");
            return ExitCode::from(3);
        }
        outcome.groups
    } else {
        match read_sls_results(&args.from_sls_results) {
            Some(g) => g,
            None => return ExitCode::from(3),
        }
    };
    let rows = report::rows(groups.into_groups(), &inventory);
    let mut out = std::io::stdout().lock();
    let written = match args.format {
        Format::Table => report::write_table(&mut out, &rows),
        Format::Json => report::write_json(&mut out, &rows),
        Format::Csv => report::write_csv(&mut out, &rows),
    }
    .and_then(|()| out.flush());
    if let Err(e) = ignore_broken_pipe(written) {
        eprintln!("ecs-ak-audit: cannot write the report: {e}");
        return ExitCode::from(3);
    }
    if rows.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A closed pipe (`| head`) is not a failure to report.
fn ignore_broken_pipe(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Reads every results file; `None` when none could be read.
fn read_sls_results(paths: &[PathBuf]) -> Option<Groups> {
    let mut groups = Groups::default();
    let mut read = 0;
    for p in paths {
        match sls::read_results(p) {
            Ok(gs) => {
                read += 1;
                gs.into_iter().for_each(|g| groups.add_group(g));
            }
            Err(e) => eprintln!("ecs-ak-audit: {e}"),
        }
    }
    if read == 0 {
        eprintln!("ecs-ak-audit: no input could be read");
        return None;
    }
    Some(groups)
}
