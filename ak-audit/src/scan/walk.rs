//! The parallel walk over files: `ignore`'s work-stealing walker with its standard filters off
//! (a `.gitignore` must not hide a `.env`), symlinks not followed, `/proc`, `/sys` and `/dev`
//! never entered, only regular files read; binary files (a NUL byte) skipped and counted.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ignore::{DirEntry, WalkBuilder, WalkState};

use super::detect::{Detector, SecretWindow};
use super::report::escaped;
use super::{Location, Record};

/// The lines around an AccessKeyId searched for an AccessKeySecret, in files.
const FILE_SECRET_WINDOW: SecretWindow = SecretWindow::Lines(3);
/// Pseudo file systems the walk never enters.
const NEVER_ENTERED: [&str; 3] = ["/proc", "/sys", "/dev"];

/// How to walk.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Walker threads (each reads and searches files too).
    pub(crate) threads: usize,
    /// Files larger than this (bytes) are skipped and reported.
    pub(crate) max_filesize: u64,
}

/// What the walk saw, counted from all threads.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    files: AtomicU64,
    bytes: AtomicU64,
    binary: AtomicU64,
    symlinks: AtomicU64,
    too_large: AtomicU64,
    unreadable: AtomicU64,
    not_entered: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "{} files scanned ({} bytes); skipped: {} binary, {} symlinks (not followed), {} \
             larger than --max-filesize, {} in /proc, /sys or /dev; {} unreadable",
            get(&self.files),
            get(&self.bytes),
            get(&self.binary),
            get(&self.symlinks),
            get(&self.too_large),
            get(&self.not_entered),
            get(&self.unreadable),
        )
    }
}

/// Scans every PATH; returns the findings (sorted by path, line, column) and the counts.
/// Unreadable files and directories are reported on standard error, and the walk goes on.
pub(crate) fn scan_paths(
    detector: &Detector,
    paths: &[PathBuf],
    options: &Options,
) -> (Vec<Record>, Stats) {
    let stats = Stats::default();
    let records = Mutex::new(Vec::new());
    for root in paths {
        walk_one(detector, root, options, &stats, &records);
    }
    let mut records = records.into_inner().unwrap_or_else(|e| e.into_inner());
    records.sort_by(|a, b| a.location.cmp(&b.location));
    (records, stats)
}

fn walk_one(
    detector: &Detector,
    root: &Path,
    options: &Options,
    stats: &Stats,
    records: &Mutex<Vec<Record>>,
) {
    let canonical_root = match root.canonicalize() {
        Ok(c) => c,
        Err(e) => return unreadable(stats, root, &e),
    };
    if never_entered(&canonical_root) {
        Stats::add(&stats.not_entered, 1);
        let shown = escaped(&root.to_string_lossy());
        eprintln!("ecs-ak-audit scan: {shown}: in /proc, /sys or /dev: not scanned");
        return;
    }
    let filter_root = root.to_path_buf();
    let walker = WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .threads(options.threads)
        .filter_entry(move |entry| {
            if !entry.file_type().is_some_and(|t| t.is_dir()) {
                return true;
            }
            let relative = entry
                .path()
                .strip_prefix(&filter_root)
                .unwrap_or(entry.path());
            !never_entered(&canonical_root.join(relative))
        })
        .build_parallel();
    walker.run(|| {
        let mut buf = Vec::new();
        Box::new(move |entry| {
            match entry {
                Ok(entry) => visit(detector, &entry, options, stats, records, &mut buf),
                Err(e) => {
                    Stats::add(&stats.unreadable, 1);
                    eprintln!("ecs-ak-audit scan: {}", escaped(&e.to_string()));
                }
            }
            WalkState::Continue
        })
    });
}

/// Whether `path` (absolute, canonical) is or is under `/proc`, `/sys` or `/dev`.
fn never_entered(path: &Path) -> bool {
    NEVER_ENTERED.iter().any(|p| path.starts_with(p))
}

fn visit(
    detector: &Detector,
    entry: &DirEntry,
    options: &Options,
    stats: &Stats,
    records: &Mutex<Vec<Record>>,
    buf: &mut Vec<u8>,
) {
    let Some(file_type) = entry.file_type() else {
        return;
    };
    if file_type.is_symlink() {
        return Stats::add(&stats.symlinks, 1);
    }
    if !file_type.is_file() {
        return;
    }
    let path = entry.path();
    match read(path, options.max_filesize, buf) {
        Ok(false) => {
            Stats::add(&stats.too_large, 1);
            let shown = escaped(&path.to_string_lossy());
            eprintln!("ecs-ak-audit scan: {shown}: larger than --max-filesize, not scanned");
            return;
        }
        Ok(true) => {}
        Err(e) => return unreadable(stats, path, &e),
    }
    if memchr::memchr(0, buf).is_some() {
        return Stats::add(&stats.binary, 1);
    }
    Stats::add(&stats.files, 1);
    Stats::add(&stats.bytes, buf.len() as u64);
    let found = detector.find(buf, FILE_SECRET_WINDOW);
    if found.is_empty() {
        return;
    }
    let mut records = records.lock().unwrap_or_else(|e| e.into_inner());
    records.extend(found.into_iter().map(|finding| Record {
        location: Location::File {
            path: path.to_path_buf(),
            line: finding.line,
            column: finding.column,
        },
        finding,
    }));
}

/// Reads the whole file into `buf`; `Ok(false)` when it is larger than `max` bytes.
fn read(path: &Path, max: u64, buf: &mut Vec<u8>) -> io::Result<bool> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Ok(false);
    }
    buf.clear();
    buf.reserve(usize::try_from(len).unwrap_or(0).saturating_add(1));
    let read = file.take(max + 1).read_to_end(buf)?;
    Ok(read as u64 <= max)
}

fn unreadable(stats: &Stats, path: &Path, e: &io::Error) {
    Stats::add(&stats.unreadable, 1);
    let shown = escaped(&path.to_string_lossy());
    eprintln!("ecs-ak-audit scan: {shown}: {e}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_file_systems_are_never_entered() {
        for p in [
            "/proc",
            "/proc/1/environ",
            "/sys/kernel",
            "/dev",
            "/dev/shm",
        ] {
            assert!(never_entered(Path::new(p)), "{p}");
        }
        for p in ["/", "/home/processes", "/devices", "/srv/proc"] {
            assert!(!never_entered(Path::new(p)), "{p}");
        }
    }
}
