//! Finding AccessKeys in one buffer of text.
//!
//! A literal gate (Aho-Corasick with its SIMD "Teddy" prefilter: one pass) runs over the buffer
//! for `LTAI` (case-sensitive) and for the stems of the well-known names (`accessKey`,
//! `access_key`, `ACCESS_KEY`, `access-key`, …). Nothing else runs unless the gate hits:
//! near a `LTAI` hit the id's shape is checked by hand; on a line with a name hit a regex
//! parses the assignment (`name = value`, `"name": "value"`, `name: value`, `<name>value`,
//! `name("value")`, `--name value`). Secrets are looked for only around the ids found.

use aho_corasick::{AhoCorasick, Input, Match, MatchKind};
use regex::bytes::Regex;

use super::key::{self, AccessKeyId, SECRET_LEN};

/// How far (in bytes) from an AccessKeyId a secret is looked for on very long lines
/// (minified files): the search stays linear however long the line is.
const SECRET_SEARCH_BYTES: usize = 64 * 1024;

/// The gate's patterns: `LTAI` (pattern 0), and the starts of the well-known names' stems,
/// three bytes each, written from the `s` of `access` (`s_k`, `sKe`, `S_K`, …). Patterns of
/// three bytes keep the SIMD prefilter (Teddy) at its fastest; starting at the `s` rather than
/// at `acc` keeps its false hits rare (`access` and `success` are common words). A stem hit
/// counts when `acces` (any case) comes before it and `key` (any case, after an optional `_`
/// or `-`) after its `s`. `LTAI` stays whole so that text full of `LTA` (`DELTA`) costs
/// nothing more.
const GATE: [&str; 10] = [
    "LTAI", "sKe", "ske", "s_k", "s-k", "s_K", "s-K", "S_K", "SKE", "S-K",
];
/// What must come before a stem hit (any case).
const STEM_HEAD: &[u8] = b"acces";

/// How many bytes consecutive blocks given to [`Detector::gate`] must overlap (longer than
/// `access_key`).
pub const GATE_OVERLAP: usize = 16;

/// A well-known name assigned a value. Group 1: the whole identifier; group 2: the value (a run
/// of letters and digits).
const NAME_ASSIGNMENT: &str = r#"(?i)([0-9a-z_.\-]*access[_\-]?key(?:[_\-]?(?:id|secret))?)["'`\]]*[ \t]*(?:=>|:=|=|:|\(|>)?[ \t]*["'`]?([0-9a-z]+)"#;

/// One AccessKey found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line of the AccessKeyId (of the secret, for a secret found alone).
    pub line: u64,
    /// 1-based column, in bytes.
    pub column: u64,
    /// The AccessKeyId; `None` for an AccessKeySecret assigned to a well-known name with no
    /// AccessKeyId near it.
    pub access_key_id: Option<AccessKeyId>,
    /// The 1-based line of an AccessKeySecret-shaped string near the id, if any.
    pub secret_line: Option<u64>,
}

/// How near an AccessKeySecret must be to an AccessKeyId to be reported with it.
#[derive(Debug, Clone, Copy)]
pub enum SecretWindow {
    /// On the same line or within this many lines (files: 3).
    Lines(u64),
    /// Anywhere in the buffer (a process environment: the variables are in no useful order).
    Anywhere,
}

/// The detector: the compiled gate and name regex. Build one and share it between threads.
#[derive(Debug)]
pub struct Detector {
    gate: AhoCorasick,
    name_assignment: Regex,
}

/// A candidate before line numbers are known: byte offset and what is there.
#[derive(Debug)]
enum Hit {
    Id(usize, AccessKeyId),
    NamedSecret(usize),
}

impl Default for Detector {
    fn default() -> Self {
        Self::new()
    }
}

impl Detector {
    /// Compiles the gate and the regex.
    pub fn new() -> Self {
        let name_assignment = Regex::new(NAME_ASSIGNMENT).expect("the name regex compiles");
        let gate = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(GATE)
            .expect("the gate patterns compile");
        Self {
            gate,
            name_assignment,
        }
    }

    /// The gate alone: whether `text` holds `LTAI` or a well-known name's stem, so that
    /// [`Detector::find`] could find something. Cheap (a few SIMD substring searches): run it
    /// on each block as it is read, while the block is in the CPU cache. Blocks must overlap by
    /// [`GATE_OVERLAP`] bytes.
    pub fn gate(&self, text: &[u8]) -> bool {
        self.gate
            .find_iter(text)
            .any(|m| m.pattern().as_usize() == 0 || is_name_stem(text, &m))
    }

    /// Finds the AccessKeys in `text`, ordered by position. Lines end with `\n`.
    pub fn find(&self, text: &[u8], window: SecretWindow) -> Vec<Finding> {
        self.find_from(text, 0, window)
    }

    /// [`Detector::find`] when the gate is known to have no hit before `text[from..]` (the walk
    /// gates each block as it reads it): the gate's second pass starts at `from`.
    pub fn find_from(&self, text: &[u8], from: usize, window: SecretWindow) -> Vec<Finding> {
        let hits = self.hits(text, from);
        if hits.is_empty() {
            return Vec::new();
        }
        let lines = LineIndex::new(text, hits.iter().map(Hit::offset));
        let mut findings = Vec::new();
        let mut id_lines = Vec::new();
        for hit in &hits {
            if let Hit::Id(at, id) = hit {
                let line = lines.line_of(*at);
                id_lines.push(line);
                findings.push(Finding {
                    line,
                    column: lines.column_of(*at),
                    access_key_id: Some(id.clone()),
                    secret_line: nearest_secret(text, *at, line, window),
                });
            }
        }
        for hit in &hits {
            if let Hit::NamedSecret(at) = hit {
                let line = lines.line_of(*at);
                if !id_lines.iter().any(|l| within(window, *l, line)) {
                    findings.push(Finding {
                        line,
                        column: lines.column_of(*at),
                        access_key_id: None,
                        secret_line: Some(line),
                    });
                }
            }
        }
        findings.sort_by_key(|f| (f.line, f.column));
        findings
    }

    /// Runs the gate, checks each hit; returns candidates sorted by offset, without duplicates.
    fn hits(&self, text: &[u8], from: usize) -> Vec<Hit> {
        let mut hits = Vec::new();
        let mut names_done_until = 0;
        for m in self.gate.find_iter(Input::new(text).span(from..text.len())) {
            let at = m.start();
            if m.pattern().as_usize() == 0 {
                if let Some(len) = key::ltai_id_at(text, at) {
                    hits.push(Hit::Id(at, AccessKeyId::new(&text[at..at + len])));
                }
            } else if at >= names_done_until && is_name_stem(text, &m) {
                let (start, end) = line_bounds(text, at);
                self.named_values(text, start, end, &mut hits);
                names_done_until = end;
            }
        }
        hits.sort_by_key(Hit::offset);
        hits.dedup_by_key(|h| h.offset());
        hits
    }

    /// Parses the well-known names assigned on the line `text[start..end]`.
    fn named_values(&self, text: &[u8], start: usize, end: usize, hits: &mut Vec<Hit>) {
        for caps in self.name_assignment.captures_iter(&text[start..end]) {
            let (Some(name), Some(value)) = (caps.get(1), caps.get(2)) else {
                continue;
            };
            let name = name.as_bytes().to_ascii_lowercase();
            let at = start + value.start();
            let value = value.as_bytes();
            let boundary_after = text.get(start + caps.get(2).map_or(0, |v| v.end()));
            if boundary_after.is_some_and(|c| key::is_key_char(*c))
                || name.windows(3).any(|w| w == b"aws")
                || value.starts_with(key::LTAI)
            {
                continue;
            }
            if name.windows(6).any(|w| w == b"secret") {
                if key::is_random_token(value, SECRET_LEN) {
                    hits.push(Hit::NamedSecret(at));
                }
            } else if key::is_legacy_id(value) {
                hits.push(Hit::Id(at, AccessKeyId::new(value)));
            }
        }
    }
}

impl Hit {
    fn offset(&self) -> usize {
        match self {
            Hit::Id(at, _) | Hit::NamedSecret(at) => *at,
        }
    }
}

/// Whether a stem hit `m` (`s_k`, `sKe`, …) is `acces` + `s` + an optional `_`/`-` + `key`,
/// in any case.
fn is_name_stem(text: &[u8], m: &Match) -> bool {
    let head = m
        .start()
        .checked_sub(STEM_HEAD.len())
        .is_some_and(|from| text[from..m.start()].eq_ignore_ascii_case(STEM_HEAD));
    let rest = &text[m.start() + 1..];
    let rest = match rest.first() {
        Some(b'_' | b'-') => &rest[1..],
        _ => rest,
    };
    head && rest
        .get(..3)
        .is_some_and(|k| k.eq_ignore_ascii_case(b"key"))
}

/// Whether line `b` is within the window of line `a`.
fn within(window: SecretWindow, a: u64, b: u64) -> bool {
    match window {
        SecretWindow::Lines(n) => a.abs_diff(b) <= n,
        SecretWindow::Anywhere => true,
    }
}

/// The bounds of the line holding `text[at]` (without its `\n`).
fn line_bounds(text: &[u8], at: usize) -> (usize, usize) {
    let start = memchr::memrchr(b'\n', &text[..at]).map_or(0, |i| i + 1);
    let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i);
    (start, end)
}

/// The line of the AccessKeySecret-shaped token nearest to the id at `at` (on line `line`):
/// the same line first, then the line after, the line before, and so on outward, stopping at
/// the first line that has one. Only [`SECRET_SEARCH_BYTES`] either side of the id are read.
fn nearest_secret(text: &[u8], at: usize, line: u64, window: SecretWindow) -> Option<u64> {
    let reach = match window {
        SecretWindow::Lines(n) => n,
        SecretWindow::Anywhere => u64::MAX,
    };
    // The caps never cut a token: a longer run of key characters cut to exactly 30 would look
    // like a secret. Moved inward to the run's edge (the id is bounded by non-key characters,
    // so they never pass it).
    let mut lo_cap = at.saturating_sub(SECRET_SEARCH_BYTES);
    while lo_cap > 0 && lo_cap < at && key::is_key_char(text[lo_cap - 1]) {
        lo_cap += 1;
    }
    let mut hi_cap = at.saturating_add(SECRET_SEARCH_BYTES).min(text.len());
    while hi_cap < text.len() && hi_cap > at && key::is_key_char(text[hi_cap]) {
        hi_cap -= 1;
    }
    // The id's line, looked for between the caps only: on a long line holding many ids (a
    // minified file), searching the whole line for each id made the scan quadratic.
    let start = memchr::memrchr(b'\n', &text[lo_cap..at]).map_or(lo_cap, |i| lo_cap + i + 1);
    let end = memchr::memchr(b'\n', &text[at..hi_cap]).map_or(hi_cap, |i| at + i);
    if has_secret(&text[start..end]) {
        return Some(line);
    }
    let (mut before_start, mut after_end) = (start, end);
    for distance in 1..=reach {
        let more_after = after_end < hi_cap;
        if more_after {
            let s = after_end + 1;
            let e = memchr::memchr(b'\n', &text[s..hi_cap]).map_or(hi_cap, |i| s + i);
            if has_secret(&text[s..e]) {
                return Some(line + distance);
            }
            after_end = e;
        }
        let more_before = before_start > lo_cap;
        if more_before {
            let e = before_start - 1;
            let s = memchr::memrchr(b'\n', &text[lo_cap..e]).map_or(lo_cap, |i| lo_cap + i + 1);
            if has_secret(&text[s..e]) {
                return Some(line - distance);
            }
            before_start = s;
        }
        if !more_after && !more_before {
            break;
        }
    }
    None
}

/// Whether `region` holds an AccessKeySecret-shaped token.
fn has_secret(region: &[u8]) -> bool {
    secret_runs(region).any(|(s, e)| key::is_random_token(&region[s..e], SECRET_LEN))
}

/// The maximal runs of exactly [`SECRET_LEN`] key characters in `region`, as `(start, end)`.
/// Skips like Boyer-Moore: a run of 30 holds the byte 29 places after its start, so when that
/// byte is not a key character none of the 30 positions before it can start one. Linear, and
/// most bytes of ordinary text are never looked at.
fn secret_runs(region: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i + SECRET_LEN <= region.len() {
            let probe = i + SECRET_LEN - 1;
            if !key::is_key_char(region[probe]) {
                i = probe + 1;
                continue;
            }
            let mut start = probe;
            while start > i && key::is_key_char(region[start - 1]) {
                start -= 1;
            }
            if start > i {
                i = start;
                continue;
            }
            let mut end = probe + 1;
            while end < region.len() && key::is_key_char(region[end]) {
                end += 1;
            }
            i = end + 1;
            if end - start == SECRET_LEN && (start == 0 || !key::is_key_char(region[start - 1])) {
                return Some((start, end));
            }
        }
        None
    })
}

/// Line numbers for a sorted set of offsets, counted once from the start of the buffer.
struct LineIndex {
    /// (offset, line, line start) for each offset asked about, in order.
    points: Vec<(usize, u64, usize)>,
}

impl LineIndex {
    fn new(text: &[u8], offsets: impl Iterator<Item = usize>) -> Self {
        let mut points = Vec::new();
        let (mut pos, mut line, mut line_start) = (0usize, 1u64, 0usize);
        for at in offsets {
            let seg = &text[pos..at];
            if let Some(last) = memchr::memrchr(b'\n', seg) {
                line += memchr::memchr_iter(b'\n', seg).count() as u64;
                line_start = pos + last + 1;
            }
            pos = at;
            points.push((at, line, line_start));
        }
        Self { points }
    }

    fn point(&self, at: usize) -> (u64, usize) {
        let i = self.points.partition_point(|p| p.0 < at);
        let p = self.points[i];
        (p.1, p.2)
    }

    fn line_of(&self, at: usize) -> u64 {
        self.point(at).0
    }

    fn column_of(&self, at: usize) -> u64 {
        let (_, start) = self.point(at);
        (at - start + 1) as u64
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod runs_tests {
    use super::*;

    /// The runs found by a plain left-to-right scan.
    fn runs_slowly(region: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < region.len() {
            let n = region[i..]
                .iter()
                .take_while(|c| key::is_key_char(**c))
                .count();
            if n == SECRET_LEN {
                out.push((i, i + n));
            }
            i += n.max(1);
        }
        out
    }

    #[test]
    fn skipping_finds_what_a_plain_scan_finds() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for round in 0..300 {
            let mut region = Vec::new();
            while region.len() < 400 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let n = (state % 40) as usize;
                region.extend(std::iter::repeat_n(b'a' + (round % 26) as u8, n));
                region.push(if state & 64 == 0 { b' ' } else { b'\n' });
            }
            let fast: Vec<_> = secret_runs(&region).collect();
            assert_eq!(fast, runs_slowly(&region), "round {round}");
        }
    }
}
