//! Running a measured command: wall time and peak RSS, through a child of our own.
//!
//! `ak-audit-bench measure --stdout FILE --stderr FILE -- PROGRAM ARGS…` runs PROGRAM, waits
//! for it and prints one JSON line: its wall time, its exit status and the peak resident set
//! of its process tree (`getrusage(RUSAGE_CHILDREN)` `ru_maxrss`, which `wait4` fills: with
//! one child, that child's peak, or its largest waited-for descendant's).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::sys::resource::{getrusage, UsageWho};
use serde::{Deserialize, Serialize};

/// What one measured run gave.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Run {
    /// Wall time, seconds.
    pub secs: f64,
    /// Peak resident set size, KiB.
    pub max_rss_kib: i64,
    /// Exit status (-1 when killed by a signal).
    pub status: i32,
}

/// The `measure` child: runs `argv` with its output to the files; prints a [`Run`] as JSON.
///
/// # Errors
///
/// The program could not be started, or the files not created.
pub fn child(stdout: &Path, stderr: &Path, argv: &[String]) -> io::Result<()> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::other("no program to run"))?;
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout)?)
        .stderr(File::create(stderr)?)
        .status()?;
    let secs = start.elapsed().as_secs_f64();
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).map_err(io::Error::from)?;
    let run = Run {
        secs,
        max_rss_kib: usage.max_rss(),
        status: status.code().unwrap_or(-1),
    };
    println!("{}", serde_json::to_string(&run).map_err(io::Error::other)?);
    Ok(())
}

/// A command to measure, its output going to `<out>.stdout` and `<out>.stderr`.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Path prefix of the output files.
    pub out: PathBuf,
}

impl Measured {
    /// The file the program's standard output went to.
    pub fn stdout(&self) -> PathBuf {
        self.out.with_extension("stdout")
    }

    /// The file the program's standard error went to.
    pub fn stderr(&self) -> PathBuf {
        self.out.with_extension("stderr")
    }

    /// Runs it once under the `measure` child (this executable).
    ///
    /// # Errors
    ///
    /// The child could not run or printed no [`Run`].
    pub fn run(&self) -> io::Result<Run> {
        let out = Command::new(std::env::current_exe()?)
            .arg("measure")
            .arg("--stdout")
            .arg(self.stdout())
            .arg("--stderr")
            .arg(self.stderr())
            .arg("--")
            .args(&self.argv)
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "measuring {:?} failed",
                self.argv
            )));
        }
        serde_json::from_slice(&out.stdout).map_err(io::Error::other)
    }
}
