//! `ecs-ak-audit scan PATH…`: finds AccessKeys written into files and, with `--processes`,
//! into running processes' environments and command lines.
//!
//! # What is a finding
//!
//! - An AccessKeyId: `LTAI` followed by 12 to 20 letters and digits, not preceded or followed
//!   by another letter or digit, and not a placeholder (a run of 5 equal characters, fewer
//!   than 5 distinct characters, or `example`: `LTAIxxxxxxxxxxxxxxxx`, `LTAI****…`).
//! - A legacy AccessKeyId (16 letters and digits, no prefix, random-looking: an uppercase
//!   letter and a lowercase letter or digit, no placeholder word) assigned to a well-known name
//!   (`ALIBABA_CLOUD_ACCESS_KEY_ID`, `accessKeyId`, `access_key_id`, `access-key-id`, …).
//! - An AccessKeySecret (30 random-looking letters and digits) assigned to a well-known name
//!   (`AccessKeySecret`, `access_key_secret`, …) with no AccessKeyId near it: reported with
//!   `AccessKeyId` null.
//!
//! With each AccessKeyId goes the line of the nearest AccessKeySecret-shaped string on the same
//! line or within three lines (anywhere in a process environment), and never its characters.
//!
//! # Layout
//!
//! - [`key`]: key shapes, placeholders, masking.
//! - [`detect`]: the literal gate and the checks near its hits, on one buffer.
//! - `walk`: the parallel walk over files; `processes`: `/proc/*/environ` and `cmdline`.
//! - `report`: table, JSON and SARIF output; `trail`: reading `--actiontrail REPORT.json`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

pub mod detect;
pub mod key;
mod processes;
mod report;
mod trail;
mod walk;

pub use detect::{Detector, Finding, SecretWindow};
pub use key::AccessKeyId;

/// The largest file read by default (bytes): larger files are skipped, counted and reported.
pub const DEFAULT_MAX_FILESIZE: u64 = 256 * 1024 * 1024;

/// Output formats of `scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// One line per finding, for people.
    #[default]
    Table,
    /// A JSON array of `{path, line, column, AccessKeyId, SecretLine}` (process findings:
    /// `{pid, exe, unit, AccessKeyId, SecretLine}`).
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

/// The arguments of `ecs-ak-audit scan`.
///
/// Exit status: 0 when nothing was found, 1 when an AccessKey was found, 2 on a usage error
/// (including a PATH that does not exist and an unreadable `--actiontrail` report), 3 when
/// nothing could be read (every path unreadable or in /proc, /sys or /dev).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files and directories to scan (required unless --processes). Symlinks are not
    /// followed, .gitignore files are not obeyed, /proc, /sys and /dev are never entered.
    #[arg(value_name = "PATH", required_unless_present = "processes")]
    pub paths: Vec<PathBuf>,
    /// Also read running processes' environments and command lines (/proc/PID/environ,
    /// cmdline; needs root for other users' processes) and name the pid, executable and
    /// systemd unit holding a key.
    #[arg(long)]
    pub processes: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print AccessKeyIds whole instead of masked (`LTAI…WXYZ`). Secrets are never printed.
    #[arg(long)]
    pub show_ids: bool,
    /// An `ecs-ak-audit actiontrail --format json` report: marks which keys found here are
    /// being used from ECS (compared in full, printed masked).
    #[arg(long, value_name = "REPORT.json")]
    pub actiontrail: Option<PathBuf>,
    /// Threads walking and reading files (default: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Skip (and report) files larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FILESIZE)]
    pub max_filesize: u64,
}

/// Where a finding is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// In a file: 1-based line and byte column.
    File {
        /// The path, as reached from the PATH given.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column, in bytes.
        column: u64,
    },
    /// In a running process.
    Process {
        /// The process id.
        pid: u32,
        /// `/proc/PID/exe`, when readable.
        exe: Option<PathBuf>,
        /// The systemd unit (`foo.service`, `session-3.scope`) from `/proc/PID/cgroup`.
        unit: Option<String>,
        /// `environ` or `cmdline`.
        source: &'static str,
    },
}

/// One finding with its location.
#[derive(Debug, Clone)]
pub struct Record {
    /// Where it is.
    pub location: Location,
    /// What was found there.
    pub finding: Finding,
}

/// Runs `ecs-ak-audit scan`; returns its exit status.
pub fn run(args: Args) -> ExitCode {
    let used = match args.actiontrail.as_deref().map(trail::load).transpose() {
        Ok(used) => used,
        Err(message) => {
            eprintln!("ecs-ak-audit scan: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(missing) = args.paths.iter().find(|p| p.symlink_metadata().is_err()) {
        let shown = report::escaped(&missing.to_string_lossy());
        eprintln!("ecs-ak-audit scan: {shown}: no such file or directory");
        return ExitCode::from(2);
    }
    let detector = Detector::new();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let options = walk::Options {
        threads: threads.max(1),
        max_filesize: args.max_filesize,
    };
    let (mut records, stats) = walk::scan_paths(&detector, &args.paths, &options);
    if args.processes {
        let (found, process_stats) = processes::scan(&detector);
        records.extend(found);
        eprintln!("ecs-ak-audit scan: {process_stats}");
    }
    if !args.paths.is_empty() {
        eprintln!("ecs-ak-audit scan: {stats}");
    }
    let view = report::View {
        show_ids: args.show_ids,
        used: used.as_ref(),
    };
    if let Err(e) = report::print(args.format, &records, &view) {
        eprintln!("ecs-ak-audit scan: writing the report: {e}");
    }
    if !records.is_empty() {
        ExitCode::from(1)
    } else if !args.paths.is_empty() && stats.nothing_read() && !args.processes {
        eprintln!(
            "ecs-ak-audit scan: nothing could be read (every path unreadable, or in /proc, /sys or /dev): run as root, or name other paths"
        );
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether a key found on the host appears in the ActionTrail report (`None` without one).
pub(crate) fn used_from_ecs(
    id: Option<&AccessKeyId>,
    used: Option<&HashSet<String>>,
) -> Option<bool> {
    used.map(|set| id.is_some_and(|id| set.contains(id.full())))
}
