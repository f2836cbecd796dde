//! The run: generate (or reuse) the inputs, run each tool against its baseline, check the
//! outputs, print the table.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::check::{self, Verdict};
use crate::measure::{Measured, Run};
use crate::report::{self, Row};
use crate::trail::{self, Set};
use crate::tree::{self, Manifest};

/// ripgrep's pattern, as the issue gives it.
pub const RG_PATTERN: &str = r"\bLTAI[0-9A-Za-z]{12,20}\b";
/// scan's throughput target, as a share of ripgrep's.
const SCAN_TARGET: f64 = 0.7;
/// actiontrail's speed target, as a multiple of the jq pipeline's.
const TRAIL_TARGET: f64 = 5.0;
/// actiontrail's peak RSS target, KiB (64 MiB).
const RSS_TARGET_KIB: i64 = 64 * 1024;
/// Bump when a generator changes what it writes (cached inputs are regenerated).
const TREE_VERSION: u32 = 3;
/// See [`TREE_VERSION`].
const TRAIL_VERSION: u32 = 1;

/// The benchmark's options.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Small sizes, correctness checks only (no speed targets): seconds, for CI.
    #[arg(long)]
    pub smoke: bool,
    /// Where the generated inputs and the tools' outputs go. Inputs already there from the same
    /// seed and sizes are reused.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("ak-audit-bench"))]
    pub data: PathBuf,
    /// The `ecs-ak-audit` binary (default: the one beside this executable).
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// The jq pipeline script (default: this package's jq-baseline.sh).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/jq-baseline.sh"))]
    pub jq_baseline: PathBuf,
    /// Seed of the generators.
    #[arg(long, default_value_t = 15)]
    pub seed: u64,
    /// Size of the generated tree (K, M, G: binary units); default 1G, smoke 8M.
    #[arg(long, value_parser = parse_size)]
    pub tree_size: Option<u64>,
    /// Uncompressed sizes of the ActionTrail sets, ascending; default 1G,4G, smoke 2M,5M.
    #[arg(long, value_parser = parse_size, value_delimiter = ',')]
    pub trail_sizes: Vec<u64>,
    /// Threads for `scan`, `actiontrail` and ripgrep (`-j` of each).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Measured rounds of scan and ripgrep, and of actiontrail on the first set (after one
    /// warm-up run each); the median counts. The jq pipeline runs once.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// An extra argument for `ecs-ak-audit scan` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub scan_arg: Vec<String>,
    /// Delete the generated data when done.
    #[arg(long)]
    pub clean: bool,
    /// Only generate (or check the reuse of) the inputs, then stop.
    #[arg(long, conflicts_with = "clean")]
    pub generate_only: bool,
}

/// Parses `123`, `64K`, `8M`, `1G` (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(s.trim().len()),
    );
    let n: f64 = n.parse().map_err(|_| format!("not a size: {s}"))?;
    let mul = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("unknown unit in {s}")),
    };
    Ok((n * mul as f64) as u64)
}

/// Runs the benchmark; returns whether every check (and, unless smoke, every target) passed.
///
/// # Errors
///
/// Generating the inputs or running a tool failed (not a failed check: that is a FAIL row).
pub fn run(o: &Options) -> io::Result<bool> {
    require_tools()?;
    let audit = match &o.audit {
        Some(a) => a.clone(),
        None => std::env::current_exe()?.with_file_name("ecs-ak-audit"),
    };
    let tree_size = o
        .tree_size
        .unwrap_or(if o.smoke { 8 << 20 } else { 1 << 30 });
    let trail_sizes = match (o.trail_sizes.is_empty(), o.smoke) {
        (false, _) => o.trail_sizes.clone(),
        (true, true) => vec![2 << 20, 5 << 20],
        (true, false) => vec![1 << 30, 4 << 30],
    };
    fs::create_dir_all(o.data.join("out"))?;
    let rate = if o.smoke { 0.6 } else { 0.2 };
    let key = format!(
        "v{TREE_VERSION} seed={} size={tree_size} rate={rate}",
        o.seed
    );
    let manifest: Manifest = cached(&o.data, "tree", &key, |dir| {
        tree::generate(dir, tree_size, o.seed, rate)
    })?;
    let per_file = if o.smoke { 200 } else { 2000 };
    let key = format!(
        "v{TRAIL_VERSION} seed={} sizes={trail_sizes:?} per_file={per_file}",
        o.seed
    );
    let sets: Vec<Set> = cached(&o.data, "trail", &key, |dir| {
        trail::generate(dir, &trail_sizes, o.seed, per_file)
    })?;
    let mut rows = scan_rows(o, &audit, &manifest)?;
    rows.extend(trail_rows(o, &audit, &sets)?);
    println!("{}", report::table(&rows));
    if o.clean {
        fs::remove_dir_all(&o.data)?;
    }
    Ok(rows.iter().all(|r| r.pass != Some(false)))
}

/// The baselines' tools, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("rg", "ripgrep"),
    ("jq", "jq"),
    ("zcat", "gzip"),
    ("sort", "coreutils"),
];

/// Fails with what to install when a baseline's tool is not on `PATH`.
fn require_tools() -> io::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (tool, package) in TOOLS {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            return Err(io::Error::other(format!(
                "{tool} not found on PATH (Debian package {package})"
            )));
        }
    }
    Ok(())
}

/// Loads `<data>/<name>.json` when `<data>/<name>.key` is `key`; else generates into
/// `<data>/<name>/` (emptied first) and saves both.
fn cached<T: Serialize + DeserializeOwned>(
    data: &Path,
    name: &str,
    key: &str,
    generate: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    let (dir, meta, key_file) = (
        data.join(name),
        data.join(format!("{name}.json")),
        data.join(format!("{name}.key")),
    );
    if fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        if let Ok(v) = serde_json::from_slice(&fs::read(&meta)?) {
            eprintln!("reusing {}", dir.display());
            return Ok(v);
        }
    }
    let _ = fs::remove_file(&key_file);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    eprintln!("generating {} ({key})", dir.display());
    let start = std::time::Instant::now();
    let v = generate(&dir)?;
    eprintln!(
        "generated {} in {:.1} s",
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    fs::write(&meta, serde_json::to_vec(&v).map_err(io::Error::other)?)?;
    fs::write(&key_file, key)?;
    Ok(v)
}

fn cmd(o: &Options, name: &str, argv: Vec<String>) -> Measured {
    Measured {
        argv,
        out: o.data.join("out").join(name),
    }
}

fn status_row(measure: &str, run: &Run, want: i32) -> Option<Row> {
    (run.status != want).then(|| Row {
        measure: format!("{measure}: exit status"),
        ours: run.status.to_string(),
        baseline: String::new(),
        result: format!("expected {want}"),
        target: want.to_string(),
        pass: Some(false),
    })
}

/// A speed or memory target, marked as not judged in `--smoke`.
fn judged(o: &Options, target: String) -> String {
    if o.smoke {
        format!("{target} (not judged in --smoke)")
    } else {
        target
    }
}

fn check_row(measure: String, v: Verdict) -> Row {
    Row {
        measure,
        ours: String::new(),
        baseline: String::new(),
        result: v.summary,
        target: "exact".into(),
        pass: Some(v.ok),
    }
}

/// `scan` and ripgrep over the tree: a warm-up run each, then alternating rounds.
fn scan_rows(o: &Options, audit: &Path, m: &Manifest) -> io::Result<Vec<Row>> {
    let root = o.data.join("tree").display().to_string();
    let mut argv: Vec<String> = vec![
        audit.display().to_string(),
        "scan".into(),
        "--format".into(),
        "json".into(),
        "--show-ids".into(),
        format!("-j{}", o.threads),
    ];
    argv.extend(o.scan_arg.iter().cloned());
    argv.push(root.clone());
    let scan = cmd(o, "scan", argv);
    let rg = cmd(
        o,
        "rg",
        vec![
            "rg".into(),
            format!("-j{}", o.threads),
            "-uu".into(),
            "-n".into(),
            "-e".into(),
            RG_PATTERN.into(),
            root.clone(),
        ],
    );
    let (mut ts, mut tr) = (Vec::new(), Vec::new());
    let (mut last_s, mut last_r) = (scan.run()?, rg.run()?);
    for _ in 0..if o.smoke { 1 } else { o.rounds } {
        last_s = scan.run()?;
        ts.push(last_s.secs);
        last_r = rg.run()?;
        tr.push(last_r.secs);
    }
    let (s, r) = (report::median(ts), report::median(tr));
    let ratio = r / s;
    let mut rows = vec![Row {
        measure: format!(
            "scan, {} tree ({} files, {} binary), {} threads, warm cache, median of {}",
            report::size(m.bytes),
            m.files,
            m.binaries,
            o.threads,
            if o.smoke { 1 } else { o.rounds }
        ),
        ours: format!("{s:.2} s, {}", report::gbps(m.bytes, s)),
        baseline: format!("rg {r:.2} s, {}", report::gbps(m.bytes, r)),
        result: format!("{ratio:.2}x ripgrep's throughput"),
        target: judged(o, format!(">= {SCAN_TARGET}x")),
        pass: (!o.smoke).then_some(ratio >= SCAN_TARGET),
    }];
    rows.extend(status_row("scan", &last_s, 1));
    rows.extend(status_row("rg", &last_r, 0));
    let (out, err) = (fs::read(scan.stdout())?, fs::read(scan.stderr())?);
    rows.push(check_row(
        "scan: findings vs the planted list".into(),
        check::scan_findings(&out, &root, &m.planted),
    ));
    let secrets: HashSet<&str> = m
        .planted
        .iter()
        .filter_map(|p| p.secret.as_deref())
        .collect();
    rows.push(check_row(
        "scan: no AccessKeySecret in its output".into(),
        check::secrets_absent(&[&out, &err], &secrets),
    ));
    rows.push(check_row(
        "rg: matched lines vs the planted list".into(),
        check::rg_lines(&fs::read(rg.stdout())?, &root, &m.planted),
    ));
    Ok(rows)
}

fn trail_cmd(o: &Options, name: &str, head: Vec<String>, set: &Set) -> Measured {
    let mut argv = head;
    argv.extend(set.files.iter().map(|f| f.display().to_string()));
    cmd(o, name, argv)
}

/// `actiontrail` against the jq pipeline on the first set; peak RSS on every set.
fn trail_rows(o: &Options, audit: &Path, sets: &[Set]) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let head = vec![
        audit.display().to_string(),
        "actiontrail".into(),
        "--format".into(),
        "json".into(),
        format!("-j{}", o.threads),
    ];
    for (i, set) in sets.iter().enumerate() {
        let label = format!(
            "{} uncompressed ({} events, {} files, {} gzip)",
            report::size(set.uncompressed),
            set.events,
            set.files.len(),
            report::size(set.compressed)
        );
        let at = trail_cmd(o, &format!("actiontrail-{i}"), head.clone(), set);
        let mut run = at.run()?; // warm-up on the first set, the only run on the others
        let mut secs = run.secs;
        let mut rss = run.max_rss_kib;
        if i == 0 {
            let mut times = Vec::new();
            for _ in 0..if o.smoke { 1 } else { o.rounds } {
                run = at.run()?;
                times.push(run.secs);
                rss = rss.max(run.max_rss_kib);
            }
            secs = report::median(times);
            let jq = trail_cmd(
                o,
                "jq",
                vec!["sh".into(), o.jq_baseline.display().to_string()],
                set,
            );
            let jr = jq.run()?;
            let ratio = jr.secs / secs;
            rows.push(Row {
                measure: format!(
                    "actiontrail --format json, {label}, median of {}",
                    if o.smoke { 1 } else { o.rounds }
                ),
                ours: format!("{secs:.2} s"),
                baseline: format!("jq pipeline {:.2} s", jr.secs),
                result: format!("{ratio:.1}x faster"),
                target: judged(o, format!(">= {TRAIL_TARGET}x")),
                pass: (!o.smoke).then_some(ratio >= TRAIL_TARGET),
            });
            rows.extend(status_row("jq pipeline", &jr, 0));
            rows.push(check_row(
                format!("jq pipeline: groups, {}", report::size(set.uncompressed)),
                check::jq_groups(&fs::read(jq.stdout())?, &set.expected),
            ));
        }
        rows.push(Row {
            measure: format!("actiontrail peak RSS, {label}"),
            ours: format!("{:.1} MiB", rss as f64 / 1024.0),
            baseline: String::new(),
            result: format!("{secs:.2} s"),
            target: judged(o, format!("<= {} MiB", RSS_TARGET_KIB / 1024)),
            pass: (!o.smoke).then_some(rss <= RSS_TARGET_KIB),
        });
        rows.extend(status_row("actiontrail", &run, 1));
        rows.push(check_row(
            format!("actiontrail: groups, {}", report::size(set.uncompressed)),
            check::trail_groups(&fs::read(at.stdout())?, &set.expected),
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert!(parse_size("3T").is_err());
    }
}
