//! Reads event files in parallel: gzip detected by its magic bytes (every member decoded, as
//! OSS delivery files may hold several), records split as they stream
//! ([`super::split`]), bad input reported on standard error with file and line while the run
//! goes on.

use std::collections::HashSet;
use std::fs::File;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use flate2::read::MultiGzDecoder;

use super::event::{self, Call};
use super::group::Groups;
use super::split::{self, Origin};

/// At most this many problems are printed per file; the rest are counted.
const MAX_REPORTED_PER_FILE: u64 = 20;
/// Read buffer for the compressed (or plain) file.
const FILE_BUFFER: usize = 128 * 1024;

/// What reading all inputs gave.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Long-term AccessKey calls, grouped.
    pub groups: Groups,
    /// Inputs that yielded something usable (or were empty).
    pub files_read: usize,
    /// Inputs that could not be opened, or yielded only errors.
    pub files_failed: usize,
}

/// `LookupEvents` de-duplication: a hash of each `eventId` seen in an `Events` page (shared
/// by all threads; only long-term calls are recorded).
#[derive(Debug, Default)]
struct Seen {
    hasher: RandomState,
    ids: Mutex<HashSet<u64>>,
}

impl Seen {
    /// `true` the first time `event_id` is offered.
    fn first(&self, event_id: &str) -> bool {
        let mut h = self.hasher.build_hasher();
        h.write(event_id.as_bytes());
        let hash = h.finish();
        self.ids.lock().map(|mut s| s.insert(hash)).unwrap_or(true)
    }
}

/// Reads `paths` (`-` = standard input) on `threads` threads.
pub fn read_all(paths: &[PathBuf], threads: usize) -> Outcome {
    let next = AtomicUsize::new(0);
    let seen = Seen::default();
    let threads = threads.clamp(1, paths.len().max(1));
    let worker = || {
        let mut out = Outcome::default();
        while let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) {
            if read_one(path, &seen, &mut out.groups) {
                out.files_read += 1;
            } else {
                out.files_failed += 1;
            }
        }
        out
    };
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(worker)).collect();
        let mut all = vec![worker()];
        all.extend(handles.into_iter().filter_map(|h| h.join().ok()));
        all
    });
    let mut total = Outcome::default();
    for o in outcomes {
        total.groups.merge(o.groups);
        total.files_read += o.files_read;
        total.files_failed += o.files_failed;
    }
    total
}

/// The name printed for `path`, control characters escaped.
pub fn shown(path: &Path) -> String {
    if path == Path::new("-") {
        return String::from("(standard input)");
    }
    path.to_string_lossy().escape_debug().to_string()
}

/// Reads one input into `groups`; `false` when nothing usable came out of it.
fn read_one(path: &Path, seen: &Seen, groups: &mut Groups) -> bool {
    let name = shown(path);
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        match File::open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("ecs-ak-audit: {name}: cannot open: {e}");
                return false;
            }
        }
    };
    let mut buffered = BufReader::with_capacity(FILE_BUFFER, reader);
    let gzip = match buffered.fill_buf() {
        Ok(head) => head.starts_with(&[0x1f, 0x8b]),
        Err(e) => {
            eprintln!("ecs-ak-audit: {name}: cannot read: {e}");
            return false;
        }
    };
    let stream: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut file = FileReport::new(name);
    let result = split::split(stream, &mut |record| {
        let dedup = record.origin == Origin::Events;
        let mut on_call = |call: Call<'_>| {
            let fresh = match (&call.event_id, dedup) {
                (Some(id), true) => seen.first(id),
                _ => true,
            };
            if fresh {
                groups.add(&call);
            }
        };
        if record.too_long {
            let limit = split::MAX_RECORD >> 20;
            file.problem(
                record.line,
                &format_args!("value longer than {limit} MiB: skipped"),
            );
            return;
        }
        match event::parse(record.bytes, &mut on_call) {
            Ok(()) => file.good += 1,
            Err(e) => file.problem(record.line, &e),
        }
    });
    if let Err(e) = result {
        file.fatal(&e);
    }
    file.finish()
}

/// Counts and prints one file's problems.
#[derive(Debug)]
struct FileReport {
    name: String,
    good: u64,
    problems: u64,
}

impl FileReport {
    fn new(name: String) -> Self {
        FileReport {
            name,
            good: 0,
            problems: 0,
        }
    }

    fn problem(&mut self, line: u64, e: &dyn std::fmt::Display) {
        self.problems += 1;
        if self.problems <= MAX_REPORTED_PER_FILE {
            eprintln!("ecs-ak-audit: {}:{line}: {e}", self.name);
        }
    }

    fn fatal(&mut self, e: &split::SplitError) {
        self.problems += 1;
        eprintln!("ecs-ak-audit: {}:{}: {e}", self.name, e.line());
    }

    /// Prints the count of problems not printed; `true` when the file gave something usable.
    fn finish(self) -> bool {
        if self.problems > MAX_REPORTED_PER_FILE {
            eprintln!(
                "ecs-ak-audit: {}: {} more problems not shown",
                self.name,
                self.problems - MAX_REPORTED_PER_FILE
            );
        }
        self.good > 0 || self.problems == 0
    }
}
