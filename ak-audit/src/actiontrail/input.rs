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
use std::sync::mpsc::{self, Receiver, SyncSender};
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
    let workers = threads.clamp(1, paths.len().max(1));
    // Spare threads (fewer files than threads): each gzip file decompresses on a thread of
    // its own while its worker parses.
    let pipeline = threads >= 2 * workers;
    let worker = || {
        let mut out = Outcome::default();
        while let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) {
            if read_one(path, &seen, &mut out.groups, pipeline) {
                out.files_read += 1;
            } else {
                out.files_failed += 1;
            }
        }
        out
    };
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..workers).map(|_| s.spawn(worker)).collect();
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
fn read_one(path: &Path, seen: &Seen, groups: &mut Groups, pipeline: bool) -> bool {
    let name = shown(path);
    let reader: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
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
    let mut file = FileReport::new(name);
    let result = if !gzip {
        split_into(buffered, seen, groups, &mut file)
    } else if pipeline {
        let (tx, rx) = mpsc::sync_channel(PIPE_DEPTH);
        std::thread::scope(|s| {
            s.spawn(move || decompress(MultiGzDecoder::new(buffered), &tx));
            split_into(Pipe::new(rx), seen, groups, &mut file)
        })
    } else {
        split_into(MultiGzDecoder::new(buffered), seen, groups, &mut file)
    };
    if let Err(e) = result {
        file.fatal(&e);
    }
    file.finish()
}

/// Splits `stream` into records and counts their long-term calls into `groups`.
fn split_into(
    stream: impl Read,
    seen: &Seen,
    groups: &mut Groups,
    file: &mut FileReport,
) -> Result<(), split::SplitError> {
    split::split(stream, &mut |record| {
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
    })
}

/// Chunks handed from a decompressing thread to its parser.
const PIPE_CHUNK: usize = 256 * 1024;
/// Chunks in flight (bounds the memory a fast decompressor can fill).
const PIPE_DEPTH: usize = 4;

type Chunk = io::Result<Vec<u8>>;

/// Reads `src` to its end in chunks sent to `tx`; a read error is sent last.
fn decompress(mut src: impl Read, tx: &SyncSender<Chunk>) {
    loop {
        let mut buf = vec![0; PIPE_CHUNK];
        let mut filled = 0;
        let mut error = None;
        while filled < buf.len() {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        buf.truncate(filled);
        let done = filled < PIPE_CHUNK;
        if filled > 0 && tx.send(Ok(buf)).is_err() {
            return;
        }
        if let Some(e) = error {
            let _ = tx.send(Err(e));
            return;
        }
        if done {
            return;
        }
    }
}

/// The parser's end of [`decompress`]: a [`Read`] over the chunks received.
#[derive(Debug)]
struct Pipe {
    rx: Receiver<Chunk>,
    chunk: Vec<u8>,
    at: usize,
}

impl Pipe {
    fn new(rx: Receiver<Chunk>) -> Self {
        Pipe {
            rx,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk?;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `data` in small reads, then fails (a corrupt gzip).
    struct Failing(Vec<u8>, usize);

    impl Read for Failing {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.1 == self.0.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt"));
            }
            let n = out.len().min(self.0.len() - self.1).min(1000);
            out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn the_pipe_passes_every_byte_then_the_error() {
        let data: Vec<u8> = (0..3 * PIPE_CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let (tx, rx) = mpsc::sync_channel(PIPE_DEPTH);
        let mut got = Vec::new();
        let err = std::thread::scope(|s| {
            let failing = Failing(data.clone(), 0);
            s.spawn(move || decompress(failing, &tx));
            Pipe::new(rx).read_to_end(&mut got).unwrap_err()
        });
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(got, data);
        let (tx, rx) = mpsc::sync_channel(PIPE_DEPTH);
        let mut got = Vec::new();
        std::thread::scope(|s| {
            let data = &data[..];
            s.spawn(move || decompress(data, &tx));
            Pipe::new(rx).read_to_end(&mut got).unwrap();
        });
        assert_eq!(got, data);
    }
}
