//! Generator (a): a tree of mixed text files and some binaries with planted fake AccessKeyIds,
//! and the list of what was planted where.
//!
//! Deterministic from the seed: the plan (each file's kind and size) comes from one generator,
//! each file's content from a generator seeded by the seed and the file's index, so the two
//! writer threads produce the same tree in any order.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::text::{self, Kind};

/// What a planted string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlantKind {
    /// `LTAI` + 20 letters and digits.
    Ltai24,
    /// `LTAI` + 12 letters and digits.
    Ltai16,
    /// `LTAIxxxx…` and the like: not a finding.
    Placeholder,
}

/// One planted string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planted {
    /// The file, relative to the tree's root, `/`-separated.
    pub path: String,
    /// 1-based line (0 in binaries).
    pub line: u64,
    /// 1-based byte column of the id's first character (0 in binaries).
    pub column: u64,
    /// The planted string, in full (a fake).
    pub id: String,
    /// What it is.
    pub kind: PlantKind,
    /// The line of the AccessKeySecret-shaped string planted with it, if any.
    pub secret_line: Option<u64>,
    /// Planted in a binary file (skipped by `scan` and by ripgrep: not a finding).
    pub binary: bool,
    /// The fake AccessKeySecret planted with it, to check that no output shows it.
    pub secret: Option<String>,
}

impl Planted {
    /// Whether `ecs-ak-audit scan` must report it.
    pub fn is_finding(&self) -> bool {
        !self.binary && self.kind != PlantKind::Placeholder
    }
}

/// The generated tree's summary, saved beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Bytes of all files.
    pub bytes: u64,
    /// Number of files.
    pub files: u64,
    /// Of which binary.
    pub binaries: u64,
    /// Everything planted, by path and line.
    pub planted: Vec<Planted>,
}

/// Writes a tree of at least `target_bytes` under `root` (created, must not exist) from `seed`;
/// `plant_rate` is the share of text files that get planted strings (1 to 3).
///
/// # Errors
///
/// Any I/O error creating directories or writing files.
pub fn generate(
    root: &Path,
    target_bytes: u64,
    seed: u64,
    plant_rate: f64,
) -> io::Result<Manifest> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut plan = Vec::new();
    let mut planned = 0u64;
    while planned < target_bytes {
        let kind = Kind::pick(&mut rng);
        let size = kind.size(&mut rng);
        planned += size as u64;
        plan.push((kind, size));
    }
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(plan.len()));
    let work = || -> io::Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(kind, size)) = plan.get(i) else {
                return Ok(());
            };
            let mut rng =
                SmallRng::seed_from_u64(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let rel = format!("{}/{}", dir_of(i), kind.file_name(i, &mut rng));
            let (bytes, planted) = file(kind, size, &rel, plant_rate, &mut rng);
            let path = root.join(&rel);
            fs::create_dir_all(path.parent().expect("a file under a directory"))?;
            fs::write(&path, &bytes)?;
            done.lock()
                .expect("no writer panicked")
                .push((i, bytes.len() as u64, kind, planted));
        }
    };
    std::thread::scope(|s| {
        let a = s.spawn(work);
        let b = work();
        a.join().expect("the writer thread does not panic").and(b)
    })?;
    let mut done = done.into_inner().expect("no writer panicked");
    done.sort_by_key(|d| d.0);
    Ok(Manifest {
        bytes: done.iter().map(|d| d.1).sum(),
        files: done.len() as u64,
        binaries: done.iter().filter(|d| d.2 == Kind::Binary).count() as u64,
        planted: done.into_iter().flat_map(|d| d.3).collect(),
    })
}

/// The directory of the `i`-th file: 40 files a directory, some of them hidden.
fn dir_of(i: usize) -> String {
    let group = i / 40;
    let hidden = if group % 5 == 0 { ".cache-" } else { "app" };
    format!("srv{:02}/{hidden}{:03}", group / 25, group % 25)
}

/// Lines between a planted line and the next, so no secret is within 3 lines of another id.
const GAP_LINES: u64 = 8;

/// One file's bytes and what was planted in it.
fn file(
    kind: Kind,
    size: usize,
    rel: &str,
    plant_rate: f64,
    rng: &mut SmallRng,
) -> (Vec<u8>, Vec<Planted>) {
    let mut out = Vec::with_capacity(size + 64 * 1024);
    let mut planted = Vec::new();
    let plants = if rng.random_bool(plant_rate) {
        rng.random_range(1..=3usize)
    } else {
        0
    };
    let mut line = 1u64;
    let mut quiet = 0u64; // filler lines since the last planted line
    if kind == Kind::Binary {
        text::filler_line(&mut out, kind, rng);
    }
    while out.len() < size || quiet < GAP_LINES {
        let due = planted.len() < plants && out.len() >= size * (planted.len() + 1) / (plants + 1);
        if due && quiet >= GAP_LINES {
            let (p, lines) = plant(&mut out, kind, rel, line, rng);
            planted.push(p);
            line += lines;
            quiet = 0;
            continue;
        }
        let start = out.len();
        text::filler_line(&mut out, kind, rng);
        line += out[start..].iter().filter(|&&c| c == b'\n').count() as u64;
        quiet += 1;
        if out.len() >= size && planted.len() >= plants && kind == Kind::Binary {
            break;
        }
    }
    (out, planted)
}

/// Plants one string at the start of line `line`; returns it and the lines written.
fn plant(
    out: &mut Vec<u8>,
    kind: Kind,
    rel: &str,
    line: u64,
    rng: &mut SmallRng,
) -> (Planted, u64) {
    let roll = rng.random_range(0..100u32);
    let (id, pkind) = match roll {
        0..=14 => (text::placeholder(rng), PlantKind::Placeholder),
        15..=34 => (text::access_key_id(rng, 12), PlantKind::Ltai16),
        _ => (text::access_key_id(rng, 20), PlantKind::Ltai24),
    };
    let name = text::ID_NAMES[rng.random_range(0..text::ID_NAMES.len())];
    let with_secret =
        kind != Kind::Binary && pkind != PlantKind::Placeholder && rng.random_bool(0.5);
    let same_line = with_secret && rng.random_bool(0.3);
    let secret = with_secret.then(|| text::access_key_secret(rng));
    let (before, after) = match (&secret, same_line) {
        (Some(s), true) => text::pair_on_one_line(kind, s),
        _ => text::assignment(kind, name, rng),
    };
    out.extend_from_slice(before.as_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(after.as_bytes());
    let mut lines = 1;
    let mut secret_line = same_line.then_some(line);
    if let (Some(s), false) = (secret.as_deref(), same_line) {
        // At most one filler line (two in YAML), then the secret: within 3 lines of the id.
        if rng.random_bool(0.5) {
            let start = out.len();
            text::filler_line(out, kind, rng);
            lines += out[start..].iter().filter(|&&c| c == b'\n').count() as u64;
        }
        let sname = text::SECRET_NAMES[rng.random_range(0..text::SECRET_NAMES.len())];
        let (b, a) = text::assignment(kind, sname, rng);
        out.extend_from_slice(format!("{b}{s}{a}").as_bytes());
        secret_line = Some(line + lines);
        lines += 1;
    }
    let binary = kind == Kind::Binary;
    let p = Planted {
        path: rel.to_string(),
        line: if binary { 0 } else { line },
        column: if binary { 0 } else { before.len() as u64 + 1 },
        id,
        kind: pkind,
        secret_line,
        binary,
        secret,
    };
    (p, if binary { 0 } else { lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let m = generate(dir.path(), 3 << 20, seed, 0.8).expect("the tree is written");
        (dir, m)
    }

    #[test]
    fn the_same_seed_writes_the_same_tree() {
        let ((a, ma), (b, mb)) = (small(7), small(7));
        assert_eq!(ma.planted, mb.planted);
        assert_eq!((ma.bytes, ma.files), (mb.bytes, mb.files));
        for p in ma.planted.iter().take(5) {
            assert_eq!(
                fs::read(a.path().join(&p.path)).unwrap(),
                fs::read(b.path().join(&p.path)).unwrap()
            );
        }
        assert_ne!(small(8).1.planted, ma.planted);
    }

    #[test]
    fn planted_strings_are_where_the_list_says_and_nowhere_else() {
        let (dir, m) = small(3);
        assert!(m.bytes >= 3 << 20);
        assert!(m.planted.iter().any(|p| p.kind == PlantKind::Placeholder));
        assert!(m.planted.iter().any(|p| p.kind == PlantKind::Ltai16));
        assert!(m.planted.iter().any(|p| p.secret_line.is_some()));
        assert!(m
            .planted
            .iter()
            .any(|p| p.is_finding() && p.secret_line.is_none()));
        for p in m.planted.iter().filter(|p| !p.binary) {
            let text = fs::read(dir.path().join(&p.path)).unwrap();
            let lines: Vec<&[u8]> = text.split(|&c| c == b'\n').collect();
            let line = lines[p.line as usize - 1];
            let col = p.column as usize - 1;
            assert_eq!(&line[col..col + p.id.len()], p.id.as_bytes(), "{p:?}");
            assert!(!line
                .get(col + p.id.len())
                .is_some_and(u8::is_ascii_alphanumeric));
            if let (Some(l), Some(s)) = (p.secret_line, &p.secret) {
                assert!(l >= p.line && l <= p.line + 3);
                let secret_line = lines[l as usize - 1];
                assert!(secret_line.windows(30).any(|w| w == s.as_bytes()), "{p:?}");
            }
        }
        // Filler never says LTAI: every occurrence in the tree is a planted one.
        let mut occurrences = 0;
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    occurrences += fs::read(path)
                        .unwrap()
                        .windows(4)
                        .filter(|w| w == b"LTAI")
                        .count();
                }
            }
        }
        assert_eq!(occurrences, m.planted.len());
    }
}
