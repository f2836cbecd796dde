//! Generator (b): ActionTrail events as OSS delivers them, and the grouping they must give.
//!
//! Files `AliyunLogs/Actiontrail/<region>/<YYYY>/<MM>/<DD>/Actiontrail_<region>_<YYYYMMDDHHMMSS>_1002_<count>_<size>_<md5>.gz`,
//! one per region and 5-minute window, each a gzip of a JSON array (even windows) or of JSON
//! lines (odd ones). `<size>` and `<md5>` are the gzip file's size and MD5 (which of the two
//! the real names carry is not documented: inferred). Events carry the fields the reference
//! lists; a fifth of them use one of a fixed set of long-term keys (`LTAI` ids of 24 and 16
//! characters, legacy 16-character ids), the rest STS ids or no `accessKeyId`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flate2::write::GzEncoder;
use flate2::Compression;
use md5::{Digest, Md5};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::event::{self, Caller, Origin};

/// The expected report line of one (AccessKeyId, VPC, source IP) group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The AccessKeyId, in full.
    pub access_key_id: String,
    /// `ltai` or `legacy`.
    pub key_kind: String,
    /// The `vpcId`, `None` for calls through a public endpoint.
    pub vpc_id: Option<String>,
    /// The `sourceIpAddress`.
    pub source_ip: String,
    /// Calls.
    pub calls: u64,
    /// Calls with an `errorCode`.
    pub errors: u64,
    /// First `eventTime`, `YYYY-MM-DDTHH:MM:SSZ`.
    pub first_seen: String,
    /// Last `eventTime`.
    pub last_seen: String,
    /// Calls by (`serviceName`, `eventName`).
    pub apis: BTreeMap<String, u64>,
}

/// Groups by (AccessKeyId, VPC, source IP).
pub type Grouping = BTreeMap<(String, Option<String>, String), Group>;

/// A set of delivered files: the first files of the generated run holding at least its size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Set {
    /// Uncompressed bytes of its events.
    pub uncompressed: u64,
    /// Bytes of its `.gz` files.
    pub compressed: u64,
    /// Events.
    pub events: u64,
    /// Its files, in delivery order.
    pub files: Vec<PathBuf>,
    /// The grouping `actiontrail` must print for these files.
    pub expected: Vec<Group>,
}

/// One generated file.
struct Delivered {
    path: PathBuf,
    uncompressed: u64,
    compressed: u64,
    events: u64,
    grouping: Grouping,
}

/// Files generated per round (each writer thread takes every other one).
const BATCH: usize = 16;

/// Writes deliveries under `root` until each size in `sizes` (ascending, uncompressed bytes)
/// is reached; returns one [`Set`] per size. `events_per_file` events a file.
///
/// # Errors
///
/// Any I/O error writing the files.
pub fn generate(
    root: &Path,
    sizes: &[u64],
    seed: u64,
    events_per_file: usize,
) -> io::Result<Vec<Set>> {
    let callers = event::callers(seed);
    let mut sets = Vec::new();
    let mut all = Grouping::new();
    let (mut files, mut unc, mut comp, mut events) = (Vec::new(), 0u64, 0u64, 0u64);
    let mut next = 0usize;
    while sets.len() < sizes.len() {
        let batch: Vec<usize> = (next..next + BATCH).collect();
        next += BATCH;
        let done = Mutex::new(Vec::new());
        let work = |part: usize| -> io::Result<()> {
            for &w in batch.iter().skip(part).step_by(2) {
                let d = deliver(root, w, seed, events_per_file, &callers)?;
                done.lock().expect("no writer panicked").push((w, d));
            }
            Ok(())
        };
        std::thread::scope(|s| -> io::Result<()> {
            let other = s.spawn(|| work(1));
            work(0)?;
            other.join().expect("the writer thread does not panic")
        })?;
        let mut done = done.into_inner().expect("no writer panicked");
        done.sort_by_key(|d| d.0);
        for (_, d) in done {
            merge(&mut all, d.grouping);
            files.push(d.path);
            unc += d.uncompressed;
            comp += d.compressed;
            events += d.events;
            if sizes.get(sets.len()).is_some_and(|&s| unc >= s) {
                sets.push(Set {
                    uncompressed: unc,
                    compressed: comp,
                    events,
                    files: files.clone(),
                    expected: all.values().cloned().collect(),
                });
            }
        }
    }
    Ok(sets)
}

fn merge(into: &mut Grouping, from: Grouping) {
    for (k, g) in from {
        match into.get_mut(&k) {
            None => {
                into.insert(k, g);
            }
            Some(e) => {
                e.calls += g.calls;
                e.errors += g.errors;
                e.first_seen = e.first_seen.clone().min(g.first_seen);
                e.last_seen = e.last_seen.clone().max(g.last_seen);
                for (api, n) in g.apis {
                    *e.apis.entry(api).or_default() += n;
                }
            }
        }
    }
}

/// The regions deliveries rotate through.
const REGIONS: &[&str] = &["cn-hangzhou", "cn-shanghai", "cn-beijing", "ap-southeast-1"];
/// 2026-11-01T00:00:00Z.
const START: i64 = 1_793_491_200;
/// One delivery window.
const WINDOW_SECS: i64 = 300;

/// Writes the `w`-th delivery file.
fn deliver(
    root: &Path,
    w: usize,
    seed: u64,
    n: usize,
    callers: &[Caller],
) -> io::Result<Delivered> {
    let mut rng = SmallRng::seed_from_u64(
        seed ^ 0x5eed_7a11 ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let region = REGIONS[w % REGIONS.len()];
    let t0 = START + (w / REGIONS.len()) as i64 * WINDOW_SECS;
    let mut offsets: Vec<i64> = (0..n).map(|_| rng.random_range(0..WINDOW_SECS)).collect();
    offsets.sort_unstable();
    let array = w % 2 == 0;
    let mut json = Vec::with_capacity(n * 1100);
    let mut grouping = Grouping::new();
    json.extend_from_slice(if array { b"[" } else { b"" });
    for (i, off) in offsets.iter().enumerate() {
        if array && i > 0 {
            json.extend_from_slice(b",\n");
        }
        let time = event::format_time(t0 + off);
        let e = event::write(&mut json, &mut rng, region, &time, callers);
        if let Some((key, kind, origin)) = e.long_term {
            let (vpc, ip) = match origin {
                Origin::Vpc(v, ip) => (Some(v.clone()), ip.clone()),
                Origin::Public(ip) => (None, ip.clone()),
            };
            let g = grouping
                .entry((key.clone(), vpc.clone(), ip.clone()))
                .or_insert_with(|| Group {
                    access_key_id: key.clone(),
                    key_kind: kind.to_string(),
                    vpc_id: vpc,
                    source_ip: ip,
                    first_seen: time.clone(),
                    ..Group::default()
                });
            g.calls += 1;
            g.errors += u64::from(e.error);
            g.last_seen = time;
            *g.apis
                .entry(format!("{}:{}", e.service, e.event))
                .or_default() += 1;
        }
        if !array {
            json.push(b'\n');
        }
    }
    json.extend_from_slice(if array { b"]\n" } else { b"" });
    let mut gz = GzEncoder::new(Vec::with_capacity(json.len() / 8), Compression::fast());
    gz.write_all(&json)?;
    let gz = gz.finish()?;
    let md5 = Md5::digest(&gz);
    let md5: String = md5.iter().map(|b| format!("{b:02x}")).collect();
    let stamp = event::format_stamp(t0);
    let dir = root.join(format!(
        "AliyunLogs/Actiontrail/{region}/{}/{}/{}",
        &stamp[..4],
        &stamp[4..6],
        &stamp[6..8]
    ));
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!(
        "Actiontrail_{region}_{stamp}_1002_{n}_{}_{md5}.gz",
        gz.len()
    ));
    fs::write(&path, &gz)?;
    Ok(Delivered {
        path,
        uncompressed: json.len() as u64,
        compressed: gz.len() as u64,
        events: n as u64,
        grouping,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use serde_json::Value;

    use super::*;

    /// Reads the files back as a consumer would and groups them independently.
    fn regroup(files: &[PathBuf]) -> Grouping {
        let mut g = Grouping::new();
        for f in files {
            let mut json = Vec::new();
            flate2::read::MultiGzDecoder::new(fs::File::open(f).unwrap())
                .read_to_end(&mut json)
                .unwrap();
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            let fields: Vec<&str> = name.trim_end_matches(".gz").split('_').collect();
            assert_eq!(fields[0], "Actiontrail");
            assert_eq!(fields[3], "1002");
            assert_eq!(
                fields[5].parse::<u64>().unwrap(),
                fs::metadata(f).unwrap().len()
            );
            let mut events = 0;
            for v in serde_json::Deserializer::from_slice(&json).into_iter::<Value>() {
                let v = v.unwrap();
                let list = match v {
                    Value::Array(a) => a,
                    one => vec![one],
                };
                for e in list {
                    events += 1;
                    let Some(key) = e["userIdentity"]["accessKeyId"].as_str() else {
                        continue;
                    };
                    if key.starts_with("STS.") {
                        continue;
                    }
                    let vpc = e["vpcId"].as_str().map(str::to_string);
                    let ip = e["sourceIpAddress"].as_str().unwrap().to_string();
                    let time = e["eventTime"].as_str().unwrap().to_string();
                    let grp = g
                        .entry((key.to_string(), vpc.clone(), ip.clone()))
                        .or_insert_with(|| Group {
                            access_key_id: key.to_string(),
                            key_kind: if key.starts_with("LTAI") {
                                "ltai"
                            } else {
                                "legacy"
                            }
                            .into(),
                            vpc_id: vpc,
                            source_ip: ip,
                            first_seen: time.clone(),
                            last_seen: time.clone(),
                            ..Group::default()
                        });
                    grp.calls += 1;
                    grp.errors += u64::from(e.get("errorCode").is_some());
                    grp.first_seen = grp.first_seen.clone().min(time.clone());
                    grp.last_seen = grp.last_seen.clone().max(time);
                    let api = format!(
                        "{}:{}",
                        e["serviceName"].as_str().unwrap(),
                        e["eventName"].as_str().unwrap()
                    );
                    *grp.apis.entry(api).or_default() += 1;
                }
            }
            assert_eq!(events.to_string(), fields[4]);
        }
        g
    }

    #[test]
    fn the_expected_grouping_is_what_the_files_say() {
        let dir = tempfile::tempdir().unwrap();
        let sets = generate(dir.path(), &[300_000, 900_000], 5, 100).unwrap();
        assert_eq!(sets.len(), 2);
        assert!(sets[0].uncompressed >= 300_000 && sets[1].uncompressed >= 900_000);
        assert!(sets[1].files.starts_with(&sets[0].files));
        for set in &sets {
            let got: Vec<Group> = regroup(&set.files).into_values().collect();
            assert_eq!(got, set.expected);
            assert!(
                got.iter().any(|g| g.key_kind == "legacy")
                    && got.iter().any(|g| g.vpc_id.is_none())
            );
            assert!(got.iter().any(|g| g.errors > 0));
        }
        let again = generate(tempfile::tempdir().unwrap().path(), &[300_000], 5, 100).unwrap();
        assert_eq!(again[0].expected, sets[0].expected);
    }
}
