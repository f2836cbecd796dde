//! Splits a stream of ActionTrail JSON into records, one event each, holding at most one record
//! (plus one read chunk) in memory however long the stream is.
//!
//! Shapes, detected as the bytes arrive:
//!
//! | stream | records |
//! |---|---|
//! | JSON lines (the first value is an object alone on its line) | each non-blank line |
//! | an array whose first element is alone on its line, then `,` | each line, without its `,` (a line that is not one whole element goes back to the structural scanner) |
//! | concatenated (pretty-printed) objects | each top-level object |
//! | a top-level array `[ {…}, {…} ]` | each element |
//! | `{"Events": […]}` / `{"Records": […]}` (other keys around it ignored) | each element |
//!
//! Array elements may be JSON strings (one `LookupEvents` model types events as strings): the
//! string is the record. Anything else at record level (a number, a stray word) becomes a record
//! too, so the parser reports it with its line.

use std::io::{self, Read};

use memchr::memchr;

mod structural;

/// Where a record came from (decides de-duplication: only `Events` wrappers are
/// `LookupEvents` pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A line, a top-level object or a top-level array's element.
    Stream,
    /// An element of an `Events` array (`LookupEvents` pages).
    Events,
    /// An element of a `Records` array.
    Records,
}

/// One record: the raw bytes of one JSON value, the 1-based line it starts on, its origin.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) line: u64,
    pub(crate) origin: Origin,
    /// Longer than [`MAX_RECORD`]: its bytes were dropped (`bytes` is a tail of it).
    pub(crate) too_long: bool,
}

/// Why a stream stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SplitError {
    /// The stream ended inside a value (a truncated file).
    #[error("input ends inside a JSON value (truncated)")]
    Truncated { line: u64 },
    /// Reading failed (a corrupt or truncated gzip member, an I/O error).
    #[error("read failed: {source}")]
    Read { line: u64, source: io::Error },
}

impl SplitError {
    /// The 1-based line where the problem was found.
    pub(crate) fn line(&self) -> u64 {
        match self {
            SplitError::Truncated { line } | SplitError::Read { line, .. } => *line,
        }
    }
}

/// The first read chunk; grows only to hold one record longer than it.
const CHUNK: usize = 256 * 1024;
/// A record longer than this (no real event comes near) is dropped as it streams, so a stray
/// binary file or an unclosed value cannot make memory grow with the input.
pub(crate) const MAX_RECORD: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Container,
    String,
    Scalar,
    /// Not JSON at the top level: runs to the end of the line.
    Junk,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    start: usize,
    line: u64,
    depth: u32,
    kind: Kind,
    origin: Origin,
    too_long: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    None,
    Object,
    Array,
}

/// The splitter's state between chunks; positions index `buf`.
#[derive(Debug)]
struct Splitter {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    line: u64,
    depth: u32,
    in_string: bool,
    escape_pending: bool,
    rec: Option<Open>,
    top: Top,
    record_depth: Option<u32>,
    origin: Origin,
    expect_key: bool,
    key_start: Option<usize>,
    pending_wrapper: Option<Origin>,
    records: u64,
    line_mode: bool,
    /// Line mode: the current line outgrew [`MAX_RECORD`] and is being skipped.
    line_too_long: bool,
    /// Line mode inside an array whose elements are one per line (`{…},` lines, then `]`).
    array_lines: bool,
    /// The next record closed is its array's first element.
    array_first: bool,
}

/// Reads `reader` to its end and calls `sink` with each record.
///
/// # Errors
/// [`SplitError`] when reading fails or the stream ends inside a value; records before that
/// point have been passed to `sink`.
pub(crate) fn split<R: Read>(
    mut reader: R,
    sink: &mut dyn FnMut(Record<'_>),
) -> Result<(), SplitError> {
    let mut s = Splitter::new();
    loop {
        s.scan_all(sink);
        if !s.refill(&mut reader)? {
            return s.finish(sink);
        }
    }
}

impl Splitter {
    fn new() -> Self {
        Splitter {
            buf: vec![0; CHUNK],
            pos: 0,
            end: 0,
            line: 1,
            depth: 0,
            in_string: false,
            escape_pending: false,
            rec: None,
            top: Top::None,
            record_depth: Some(0),
            origin: Origin::Stream,
            expect_key: false,
            key_start: None,
            pending_wrapper: None,
            records: 0,
            line_mode: false,
            line_too_long: false,
            array_lines: false,
            array_first: false,
        }
    }

    /// Keeps the open record's bytes, reads more; `false` at the end of the stream.
    fn refill<R: Read>(&mut self, reader: &mut R) -> Result<bool, SplitError> {
        self.drop_overlong();
        let keep = [self.rec.map(|r| r.start), self.key_start, Some(self.pos)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.pos);
        if keep > 0 {
            self.buf.copy_within(keep..self.end, 0);
            self.end -= keep;
            self.pos -= keep;
            if let Some(r) = self.rec.as_mut() {
                r.start -= keep;
            }
            if let Some(k) = self.key_start.as_mut() {
                *k -= keep;
            }
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match reader.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    let line = self.rec.map_or(self.line, |r| r.line);
                    return Err(SplitError::Read { line, source });
                }
            }
        }
    }

    /// Forgets the bytes of a record or line longer than [`MAX_RECORD`] (it is still followed
    /// to its end, then reported).
    fn drop_overlong(&mut self) {
        if let Some(r) = self.rec.as_mut() {
            if self.pos - r.start >= MAX_RECORD {
                r.too_long = true;
                r.start = self.pos;
                self.key_start = None;
            }
        }
        if self.line_mode && self.end - self.pos >= MAX_RECORD {
            self.line_too_long = true;
            self.pos = self.end;
        }
    }

    /// At the end of the stream: the last line gets a newline, so both scanners finish it
    /// as any other; then anything still open was cut off.
    fn finish(&mut self, sink: &mut dyn FnMut(Record<'_>)) -> Result<(), SplitError> {
        let last_line = self.line;
        if self.end == self.buf.len() {
            self.buf.push(b'\n');
        } else {
            self.buf[self.end] = b'\n';
        }
        self.end += 1;
        self.scan_all(sink);
        if self.line_mode && !self.array_lines {
            return Ok(());
        }
        match self.rec {
            Some(r) => Err(SplitError::Truncated { line: r.line }),
            None if self.depth > 0 || self.in_string => {
                Err(SplitError::Truncated { line: last_line })
            }
            None => Ok(()),
        }
    }

    /// Scans what the buffer holds; either scanner may hand over to the other mid-chunk.
    fn scan_all(&mut self, sink: &mut dyn FnMut(Record<'_>)) {
        loop {
            let line_mode = self.line_mode;
            if line_mode {
                self.scan_lines(sink);
            } else {
                self.scan(sink);
            }
            if self.line_mode == line_mode {
                return;
            }
        }
    }

    fn emit_bytes(
        &mut self,
        sink: &mut dyn FnMut(Record<'_>),
        start: usize,
        end: usize,
        line: u64,
        origin: Origin,
        too_long: bool,
    ) {
        self.records += 1;
        sink(Record {
            bytes: trim(&self.buf[start..end]),
            line,
            origin,
            too_long,
        });
    }

    /// Line mode: every non-blank line is a record (a broken line does not disturb the next).
    fn scan_lines(&mut self, sink: &mut dyn FnMut(Record<'_>)) {
        while let Some(i) = memchr(b'\n', &self.buf[self.pos..self.end]) {
            let (start, nl) = (self.pos, self.pos + i);
            if self.array_lines {
                if self.array_line(sink, start, nl) {
                    return;
                }
            } else if self.line_too_long || !trim(&self.buf[start..nl]).is_empty() {
                let line = self.line;
                let too_long = std::mem::take(&mut self.line_too_long);
                self.emit_bytes(sink, start, nl, line, self.origin, too_long);
            }
            self.line += 1;
            self.pos = nl + 1;
        }
    }

    /// One line of an array with an element per line: a line that is one object or string
    /// (then a `,`) is emitted without its `,`. Any other line (the `]`, an element spread over
    /// lines, two on a line) goes back to the structural scanner from its start (returns
    /// `true`), which is in the same state as before the line.
    fn array_line(&mut self, sink: &mut dyn FnMut(Record<'_>), start: usize, end: usize) -> bool {
        let too_long = std::mem::take(&mut self.line_too_long);
        let last = self.buf[start..end]
            .iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .map(|i| start + i);
        let stop = match last {
            Some(i) if self.buf[i] == b',' => i,
            Some(i) => i + 1,
            None if too_long => end,
            None => return false,
        };
        let body = trim(&self.buf[start..stop]);
        let simple = matches!(
            (body.first(), body.last()),
            (Some(b'{'), Some(b'}')) | (Some(b'"'), Some(b'"'))
        );
        if !simple && !too_long {
            self.pos = start;
            self.line_mode = false;
            self.array_lines = false;
            return true;
        }
        let line = self.line;
        self.emit_bytes(sink, start, stop, line, self.origin, too_long);
        false
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8], chunk: usize) -> (Vec<(String, u64, Origin)>, Option<String>) {
        struct Slow<'a>(&'a [u8], usize);
        impl Read for Slow<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut got = Vec::new();
        let r = split(Slow(input, chunk), &mut |r| {
            got.push((
                String::from_utf8_lossy(r.bytes).into_owned(),
                r.line,
                r.origin,
            ))
        });
        (got, r.err().map(|e| e.to_string()))
    }

    fn texts(input: &str) -> Vec<(String, u64, Origin)> {
        let (one, e1) = records(input.as_bytes(), 1);
        let (big, e2) = records(input.as_bytes(), 1 << 20);
        assert_eq!(one, big, "chunking changes nothing");
        assert_eq!(e1, None);
        assert_eq!(e2, None);
        big
    }

    #[test]
    fn json_lines_are_records_and_a_broken_line_does_not_spill() {
        let got = texts("{\"a\":1}\n{\"b\":\"x\n{\"c\":3}\n\n");
        let lines: Vec<_> = got.iter().map(|(t, l, _)| (t.as_str(), *l)).collect();
        assert_eq!(
            lines,
            [("{\"a\":1}", 1), ("{\"b\":\"x", 2), ("{\"c\":3}", 3)]
        );
    }

    #[test]
    fn array_elements_and_strings() {
        let got = texts("[\n {\"a\":\"]}\\\"\"},\n \"{\\\"s\\\":1}\", 7\n]\n");
        let t: Vec<_> = got.iter().map(|(t, l, o)| (t.as_str(), *l, *o)).collect();
        assert_eq!(
            t,
            [
                ("{\"a\":\"]}\\\"\"}", 2, Origin::Stream),
                ("\"{\\\"s\\\":1}\"", 3, Origin::Stream),
                ("7", 3, Origin::Stream)
            ]
        );
    }

    /// An array with an element per line is read line by line (a broken element does not
    /// disturb the next), and the scanner takes over again after its `]`.
    #[test]
    fn arrays_with_an_element_per_line() {
        let got = texts(
            "[{\"a\":1},\n {\"c\":\"]\"} ,\n{\"d\":[4]}]\n{\"Events\":[\n{\"e\":5},\n{\"f\":6}\n],\"RequestId\":\"r\"}\n[{\"g\":7},\n{\"h\":8}]",
        );
        let t: Vec<_> = got.iter().map(|(t, l, o)| (t.as_str(), *l, *o)).collect();
        assert_eq!(
            t,
            [
                ("{\"a\":1}", 1, Origin::Stream),
                ("{\"c\":\"]\"}", 2, Origin::Stream),
                ("{\"d\":[4]}", 3, Origin::Stream),
                ("{\"e\":5}", 5, Origin::Events),
                ("{\"f\":6}", 6, Origin::Events),
                ("{\"g\":7}", 8, Origin::Stream),
                ("{\"h\":8}", 9, Origin::Stream),
            ]
        );
        // A line that is not one whole element goes back to the structural scanner: a broken
        // one is then reported as the value it opens, cut off at the end.
        let (got, err) = records(b"[{\"a\":1},\n{\"b\":\"x,\n{\"c\":3}\n]", 1 << 20);
        assert_eq!(got.len(), 1);
        assert_eq!(
            err.as_deref(),
            Some("input ends inside a JSON value (truncated)")
        );
        let (_, err) = records(b"[{\"a\":1},\n{\"b\":2},\n", 1 << 20);
        assert_eq!(
            err.as_deref(),
            Some("input ends inside a JSON value (truncated)")
        );
    }

    #[test]
    fn wrappers_yield_their_elements_whatever_the_key_order() {
        let got = texts(
            "{\n \"EndTime\": \"x\",\n \"Events\": [\n  {\"e\": 1},\n  {\"e\": [2]}\n ],\n \"NextToken\": \"{\"\n}\n{\"Records\":[{\"r\":1}]}",
        );
        let t: Vec<_> = got.iter().map(|(t, l, o)| (t.as_str(), *l, *o)).collect();
        assert_eq!(
            t,
            [
                ("{\"e\": 1}", 4, Origin::Events),
                ("{\"e\": [2]}", 5, Origin::Events),
                ("{\"r\":1}", 9, Origin::Records)
            ]
        );
    }

    #[test]
    fn concatenated_pretty_objects_and_junk() {
        let got = texts("{\n \"a\": {\"b\": 1}\n}{\"c\":\n2}\nnot json {\n{\"d\":4}");
        let t: Vec<_> = got.iter().map(|(t, l, _)| (t.as_str(), *l)).collect();
        assert_eq!(
            t,
            [
                ("{\n \"a\": {\"b\": 1}\n}", 1),
                ("{\"c\":\n2}", 3),
                ("not json {", 5),
                ("{\"d\":4}", 6)
            ]
        );
    }

    /// Memory stays bounded on a stray binary file: an overlong value or line is dropped as it
    /// streams and reported, and the records after it still come.
    #[test]
    fn overlong_records_are_dropped_and_flagged() {
        let long = "x".repeat(2 * MAX_RECORD);
        for input in [
            format!("{{\"a\":1}}\n{{\"b\":\"{long}\"}}\n{{\"c\":3}}\n"),
            format!("{{\"b\":\n\"{long}\"}}\n{{\"c\":3}}\n"),
            format!("{long}\n{{\"c\":3}}\n"),
        ] {
            let mut got = Vec::new();
            split(input.as_bytes(), &mut |r| {
                let text = String::from_utf8_lossy(r.bytes);
                let short = if r.too_long {
                    String::new()
                } else {
                    text.into_owned()
                };
                got.push((r.too_long, r.bytes.len() <= 2 * CHUNK, short))
            })
            .unwrap();
            let long: Vec<_> = got.iter().filter(|g| g.0).collect();
            assert_eq!(long.len(), 1, "one overlong record");
            assert!(long[0].1, "its bytes were dropped as it streamed");
            assert_eq!(got.last().unwrap().2, "{\"c\":3}");
        }
    }

    #[test]
    fn truncated_value_is_reported_with_its_line() {
        let (got, err) = records(b"[{\"a\":1},\n{\"b\":", 3);
        assert_eq!(got.len(), 1);
        assert_eq!(
            err.as_deref(),
            Some("input ends inside a JSON value (truncated)")
        );
        let e = split(&b"{\"a\":\n[1,"[..], &mut |_| {}).unwrap_err();
        assert_eq!(e.line(), 1);
    }
}
