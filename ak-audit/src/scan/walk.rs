//! The parallel walk over files: `ignore`'s work-stealing walker with its standard filters off
//! (a `.gitignore` must not hide a `.env`), symlinks not followed, `/proc`, `/sys` and `/dev`
//! never entered, only regular files read; binary files (a NUL byte) skipped and counted.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ignore::{DirEntry, WalkBuilder, WalkState};

use super::detect::{Detector, SecretWindow, GATE_OVERLAP};
use super::report::escaped;
use super::{Location, Record};

/// The lines around an AccessKeyId searched for an AccessKeySecret, in files.
const FILE_SECRET_WINDOW: SecretWindow = SecretWindow::Lines(3);
/// The block read at a time (bytes): it stays in the CPU cache while it is checked.
const BLOCK: usize = 64 * 1024;
/// A thread's whole-file buffer larger than this (bytes) is freed after the file.
const KEPT_BUFFER: usize = 16 * 1024 * 1024;
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

    /// Whether nothing was read at all because every path was unreadable or never entered
    /// (then "nothing found" would be a false all-clear).
    pub(crate) fn nothing_read(&self) -> bool {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        get(&self.files) == 0
            && get(&self.binary) == 0
            && get(&self.too_large) == 0
            && get(&self.unreadable) + get(&self.not_entered) > 0
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
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| pseudo_mounts(&m))
        .unwrap_or_default();
    for root in paths {
        walk_one(detector, root, options, &stats, &records, &mounts);
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
    mounts: &[PathBuf],
) {
    let canonical_root = match root.canonicalize() {
        Ok(c) => c,
        Err(e) => return unreadable(stats, root, &e),
    };
    if never_entered(&canonical_root, mounts) {
        Stats::add(&stats.not_entered, 1);
        let shown = escaped(&root.to_string_lossy());
        eprintln!("ecs-ak-audit scan: {shown}: in /proc, /sys or /dev: not scanned");
        return;
    }
    let filter_root = root.to_path_buf();
    let filter_mounts = mounts.to_vec();
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
            !never_entered(&canonical_root.join(relative), &filter_mounts)
        })
        .build_parallel();
    walker.run(|| {
        let mut buffers = Buffers::default();
        Box::new(move |entry| {
            match entry {
                Ok(entry) => visit(detector, &entry, options, stats, records, &mut buffers),
                Err(e) => {
                    Stats::add(&stats.unreadable, 1);
                    eprintln!("ecs-ak-audit scan: {}", escaped(&e.to_string()));
                }
            }
            WalkState::Continue
        })
    });
}

/// Whether `path` (absolute, canonical) is or is under `/proc`, `/sys` or `/dev`, or under
/// one of `mounts` ([`pseudo_mounts`]).
fn never_entered(path: &Path, mounts: &[PathBuf]) -> bool {
    NEVER_ENTERED.iter().any(|p| path.starts_with(p)) || mounts.iter().any(|m| path.starts_with(m))
}

/// Kernel file systems whose "files" are not files, wherever they are mounted (a chroot's or a
/// build root's `/proc`): reading them can block forever (`/proc/kmsg`), consume the kernel
/// log, or show other processes' environments.
const PSEUDO_FILESYSTEMS: [&str; 15] = [
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "debugfs",
    "tracefs",
    "securityfs",
    "configfs",
    "bpf",
    "cgroup",
    "cgroup2",
    "pstore",
    "efivarfs",
    "fusectl",
    "binfmt_misc",
];

/// The mount points of [`PSEUDO_FILESYSTEMS`] in `mountinfo` (`/proc/self/mountinfo`'s text:
/// the mount point is the fifth field, octal-escaped; the type follows the ` - ` separator).
fn pseudo_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let fs_type = fs.split(' ').next()?;
            let point = mount.split(' ').nth(4)?;
            PSEUDO_FILESYSTEMS
                .contains(&fs_type)
                .then(|| unescape_octal(point))
        })
        .collect()
}

/// `s` with mountinfo's `\ooo` escapes (space, tab, newline, backslash) decoded.
fn unescape_octal(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn visit(
    detector: &Detector,
    entry: &DirEntry,
    options: &Options,
    stats: &Stats,
    records: &Mutex<Vec<Record>>,
    buffers: &mut Buffers,
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
    let content = read(detector, path, options.max_filesize, buffers);
    let (len, gate) = match content {
        Ok(Content::Text { len, gate }) => (len, gate),
        Ok(Content::Binary) => return Stats::add(&stats.binary, 1),
        Ok(Content::TooLarge) => {
            Stats::add(&stats.too_large, 1);
            let shown = escaped(&path.to_string_lossy());
            eprintln!("ecs-ak-audit scan: {shown}: larger than --max-filesize, not scanned");
            return;
        }
        Err(e) => return unreadable(stats, path, &e),
    };
    Stats::add(&stats.files, 1);
    Stats::add(&stats.bytes, len as u64);
    let Some(from) = gate else {
        return;
    };
    let found = detector.find_from(&buffers.whole, from, FILE_SECRET_WINDOW);
    if buffers.whole.capacity() > KEPT_BUFFER {
        buffers.whole = Vec::new();
    }
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

/// A walker thread's buffers.
#[derive(Debug)]
struct Buffers {
    /// `[carry | block]`: the last [`GATE_OVERLAP`] bytes of the previous block, then the
    /// block being read. Small enough to stay in the CPU cache.
    block: Vec<u8>,
    /// A whole file, read only when the gate hit it.
    whole: Vec<u8>,
}

impl Default for Buffers {
    fn default() -> Self {
        Self {
            block: vec![0; GATE_OVERLAP + BLOCK],
            whole: Vec::new(),
        }
    }
}

/// What [`read`] found.
#[derive(Debug)]
enum Content {
    /// Text of `len` bytes. `gate`: where the first block [`Detector::gate`] hit starts (less
    /// the overlap), if any; then the whole file is in [`Buffers::whole`].
    Text { len: usize, gate: Option<usize> },
    /// A NUL byte: reading stopped there.
    Binary,
    /// Larger than `--max-filesize`.
    TooLarge,
}

/// Reads the file block by block into the same small buffer, checking each block for a NUL
/// byte (binary: stop) and running the gate on it while it is in the CPU cache, so a file the
/// gate does not hit is copied once into cache-resident memory, as ripgrep does. When the gate
/// hits, the file is read again whole into [`Buffers::whole`] for [`Detector::find_from`].
fn read(detector: &Detector, path: &Path, max: u64, buffers: &mut Buffers) -> io::Result<Content> {
    let mut file = File::open(path)?;
    if file.metadata()?.len() > max {
        return Ok(Content::TooLarge);
    }
    let block = &mut buffers.block;
    let (mut total, mut carry) = (0usize, 0usize);
    loop {
        let n = match file.read(&mut block[GATE_OVERLAP..]) {
            Ok(0) => {
                return Ok(Content::Text {
                    len: total,
                    gate: None,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let end = GATE_OVERLAP + n;
        if memchr::memchr(0, &block[GATE_OVERLAP..end]).is_some() {
            return Ok(Content::Binary);
        }
        if detector.gate(&block[GATE_OVERLAP - carry..end]) {
            return read_whole(file, max, total, &mut buffers.whole);
        }
        total += n;
        if total as u64 > max {
            return Ok(Content::TooLarge);
        }
        let kept = (carry + n).min(GATE_OVERLAP);
        block.copy_within(end - kept..end, GATE_OVERLAP - kept);
        carry = kept;
    }
}

/// Reads the whole file (from its start) into `whole`, after the gate hit the block starting
/// at `checked`: the bytes before it were checked for NUL bytes already.
fn read_whole(
    mut file: File,
    max: u64,
    checked: usize,
    whole: &mut Vec<u8>,
) -> io::Result<Content> {
    file.seek(SeekFrom::Start(0))?;
    whole.clear();
    file.take(max + 1).read_to_end(whole)?;
    if whole.len() as u64 > max {
        return Ok(Content::TooLarge);
    }
    if memchr::memchr(0, whole.get(checked..).unwrap_or_default()).is_some() {
        return Ok(Content::Binary);
    }
    let len = whole.len();
    Ok(Content::Text {
        len,
        gate: Some(checked.saturating_sub(GATE_OVERLAP).min(len)),
    })
}

fn unreadable(stats: &Stats, path: &Path, e: &io::Error) {
    Stats::add(&stats.unreadable, 1);
    let shown = escaped(&path.to_string_lossy());
    eprintln!("ecs-ak-audit scan: {shown}: {e}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::key::fake::{ltai, token};
    use std::fs;

    fn scan_dir(dir: &Path) -> (Vec<Record>, Stats) {
        let options = Options {
            threads: 2,
            max_filesize: 1 << 20,
        };
        scan_paths(&Detector::new(), &[dir.to_path_buf()], &options)
    }

    #[test]
    fn keys_across_block_boundaries_and_late_nul_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let id = ltai(50, 20);
        let legacy = token(51, 16);
        // The id starts 1 byte before the first block's end (`L|TAI`); the name's `S_KEY`
        // 2 bytes before the second's (`ALIBABA_CLOUD_ACCES|S_KEY` split after `S_`).
        let mut text = "a".repeat(BLOCK - 2) + " " + &id + "\n";
        let pad = 2 * BLOCK - 2 - "ALIBABA_CLOUD_ACCES".len() - text.len() - 1;
        text += &("b".repeat(pad) + "\nALIBABA_CLOUD_ACCESS_KEY_ID=" + &legacy + "\n");
        fs::write(dir.path().join("text.env"), &text).unwrap();
        let mut late_binary = format!("{id}\n").into_bytes();
        late_binary.extend(std::iter::repeat_n(b'c', 3 * BLOCK));
        late_binary.push(0);
        fs::write(dir.path().join("late.bin"), late_binary).unwrap();
        fs::write(dir.path().join("big"), vec![b'd'; (1 << 20) + 1]).unwrap();
        let (records, stats) = scan_dir(dir.path());
        let ids: Vec<String> = records
            .iter()
            .map(|r| r.finding.access_key_id.as_ref().unwrap().full().to_owned())
            .collect();
        assert_eq!(ids, [id, legacy]);
        assert_eq!(stats.binary.load(Ordering::Relaxed), 1);
        assert_eq!(stats.too_large.load(Ordering::Relaxed), 1);
        assert_eq!(stats.files.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn pseudo_file_systems_are_never_entered() {
        for p in [
            "/proc",
            "/proc/1/environ",
            "/sys/kernel",
            "/dev",
            "/dev/shm",
        ] {
            assert!(never_entered(Path::new(p), &[]), "{p}");
        }
        for p in ["/", "/home/processes", "/devices", "/srv/proc"] {
            assert!(!never_entered(Path::new(p), &[]), "{p}");
        }
    }

    #[test]
    fn kernel_file_systems_mounted_elsewhere_are_never_entered() {
        // A chroot's /proc: reading its kmsg blocked the scan forever.
        let mountinfo = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:21 / /srv/chroot/proc rw,nosuid shared:13 - proc proc rw
41 22 0:22 / /srv/my\\040root/sys rw shared:14 - sysfs sysfs rw
42 22 0:23 / /srv/chroot/tmp rw shared:15 - tmpfs tmpfs rw
";
        let mounts = pseudo_mounts(mountinfo);
        assert_eq!(
            mounts,
            [
                PathBuf::from("/srv/chroot/proc"),
                PathBuf::from("/srv/my root/sys")
            ]
        );
        assert!(never_entered(Path::new("/srv/chroot/proc/1"), &mounts));
        assert!(never_entered(Path::new("/srv/my root/sys"), &mounts));
        assert!(!never_entered(Path::new("/srv/chroot/tmp"), &mounts));
        assert!(!never_entered(Path::new("/srv/chroot/procs"), &mounts));
    }
}
