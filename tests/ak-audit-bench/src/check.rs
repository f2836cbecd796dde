//! Correctness: each tool's output against what was generated.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use crate::trail::Group;
use crate::tree::Planted;

/// A check's outcome and a one-line summary for the table.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Whether the output matched.
    pub ok: bool,
    /// What was compared, and the first differences.
    pub summary: String,
}

/// The path relative to the tree's root (`root` as given to the tool).
fn relative<'a>(path: &'a str, root: &str) -> &'a str {
    let p = path.strip_prefix(root).unwrap_or(path);
    p.trim_start_matches('/').trim_start_matches("./")
}

fn differences<T: std::fmt::Debug>(
    what: &str,
    items: impl IntoIterator<Item = T>,
) -> Option<String> {
    let items: Vec<T> = items.into_iter().collect();
    (!items.is_empty()).then(|| {
        format!(
            "{} {what} (first: {:?})",
            items.len(),
            &items[..items.len().min(2)]
        )
    })
}

fn verdict(matched: String, diffs: Vec<Option<String>>) -> Verdict {
    let diffs: Vec<String> = diffs.into_iter().flatten().collect();
    Verdict {
        ok: diffs.is_empty(),
        summary: if diffs.is_empty() {
            matched
        } else {
            format!("{matched}; {}", diffs.join("; "))
        },
    }
}

/// `scan --format json --show-ids` against the planted list: every planted non-placeholder
/// key in a text file found at its path, line and column, with its `SecretLine`; nothing else.
pub fn scan_findings(json: &[u8], root: &str, planted: &[Planted]) -> Verdict {
    let found: Vec<Value> = match serde_json::from_slice(json) {
        Ok(Value::Array(v)) => v,
        _ => {
            return Verdict {
                ok: false,
                summary: "scan printed no JSON array".into(),
            }
        }
    };
    let key = |p: &str, l: u64, c: u64, id: &str| (p.to_string(), l, c, id.to_string());
    let mut got = BTreeMap::new();
    for f in &found {
        let (Some(path), Some(line), Some(col), Some(id)) = (
            f["path"].as_str(),
            f["line"].as_u64(),
            f["column"].as_u64(),
            f["AccessKeyId"].as_str(),
        ) else {
            continue; // a process finding, or a shape this check does not know
        };
        got.insert(
            key(relative(path, root), line, col, id),
            f["SecretLine"].as_u64(),
        );
    }
    let want: BTreeMap<_, _> = planted
        .iter()
        .filter(|p| p.is_finding())
        .map(|p| (key(&p.path, p.line, p.column, &p.id), p.secret_line))
        .collect();
    let missed = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .map(|k| (&k.0, k.1));
    let extra = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(|k| (&k.0, k.1));
    let secret = want
        .iter()
        .filter(|(k, s)| got.get(*k).is_some_and(|g| g != *s))
        .map(|(k, _)| (&k.0, k.1));
    let placeholders = planted.iter().filter(|p| !p.is_finding()).count();
    verdict(
        format!("{} of {} planted keys found ({placeholders} placeholders and keys in binaries not reported)", want.len() - want.keys().filter(|k| !got.contains_key(*k)).count(), want.len()),
        vec![differences("missed", missed), differences("extra", extra), differences("wrong SecretLine", secret)],
    )
}

/// ripgrep's `path:line:text` lines against the planted list: the lines with a planted
/// string its pattern matches (placeholders included), in text files.
pub fn rg_lines(out: &[u8], root: &str, planted: &[Planted]) -> Verdict {
    let text = String::from_utf8_lossy(out);
    let got: BTreeSet<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (path, line) = (it.next()?, it.next()?.parse().ok()?);
            Some((relative(path, root).to_string(), line))
        })
        .collect();
    let want: BTreeSet<(String, u64)> = planted
        .iter()
        .filter(|p| !p.binary && crate::text::rg_matches(&p.id))
        .map(|p| (p.path.clone(), p.line))
        .collect();
    verdict(
        format!(
            "{} lines matched, {} expected (placeholders included)",
            got.len(),
            want.len()
        ),
        vec![
            differences("missed", want.difference(&got)),
            differences("extra", got.difference(&want)),
        ],
    )
}

/// No planted AccessKeySecret appears in any of `outputs`.
pub fn secrets_absent(outputs: &[&[u8]], secrets: &HashSet<&str>) -> Verdict {
    let leaked = outputs
        .iter()
        .flat_map(|o| o.split(|c| !c.is_ascii_alphanumeric()))
        .filter(|w| w.len() == 30 && secrets.contains(std::str::from_utf8(w).unwrap_or("")))
        .count();
    Verdict {
        ok: leaked == 0,
        summary: format!(
            "{} planted secrets searched for in the output and errors: {leaked} found",
            secrets.len()
        ),
    }
}

fn group_key(g: &Group) -> (String, Option<String>, String) {
    (
        g.access_key_id.clone(),
        g.vpc_id.clone(),
        g.source_ip.clone(),
    )
}

/// `actiontrail --format json` against the expected grouping: every group, with its
/// `KeyKind`, `Calls`, `Errors`, `FirstSeen`, `LastSeen` and `Apis`; no other group.
pub fn trail_groups(json: &[u8], expected: &[Group]) -> Verdict {
    let found: Vec<Value> = match serde_json::from_slice(json) {
        Ok(Value::Array(v)) => v,
        _ => {
            return Verdict {
                ok: false,
                summary: "actiontrail printed no JSON array".into(),
            }
        }
    };
    let got: BTreeMap<_, Group> = found
        .iter()
        .map(|g| {
            let s = |k: &str| g[k].as_str().unwrap_or_default().to_string();
            let apis = g["Apis"].as_array().into_iter().flatten().map(|a| {
                (
                    format!(
                        "{}:{}",
                        a["Service"].as_str().unwrap_or_default(),
                        a["Event"].as_str().unwrap_or_default()
                    ),
                    a["Calls"].as_u64().unwrap_or(0),
                )
            });
            let group = Group {
                access_key_id: s("AccessKeyId"),
                key_kind: s("KeyKind"),
                vpc_id: g["VpcId"].as_str().map(str::to_string),
                source_ip: s("SourceIp"),
                calls: g["Calls"].as_u64().unwrap_or(0),
                errors: g["Errors"].as_u64().unwrap_or(0),
                first_seen: s("FirstSeen"),
                last_seen: s("LastSeen"),
                apis: apis.collect(),
            };
            (group_key(&group), group)
        })
        .collect();
    let want: BTreeMap<_, &Group> = expected.iter().map(|g| (group_key(g), g)).collect();
    let missed = want.keys().filter(|k| !got.contains_key(*k));
    let extra = got.keys().filter(|k| !want.contains_key(*k));
    let differ = want
        .iter()
        .filter(|(k, g)| got.get(*k).is_some_and(|f| f != **g))
        .map(|(k, _)| k);
    verdict(
        format!("{} groups expected, {} printed", want.len(), got.len()),
        vec![
            differences("missing", missed),
            differences("extra", extra),
            differences("with other figures", differ),
        ],
    )
}

/// The jq pipeline's `uniq -c` lines against the expected grouping's calls.
pub fn jq_groups(out: &[u8], expected: &[Group]) -> Verdict {
    let text = String::from_utf8_lossy(out);
    let got: BTreeMap<(String, Option<String>, String), u64> = text
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.trim_start().split_once(' ')?;
            let mut f = rest.split('\t');
            let (key, vpc, ip) = (f.next()?, f.next()?, f.next()?);
            let vpc = (vpc != "-").then(|| vpc.to_string());
            Some(((key.to_string(), vpc, ip.to_string()), n.parse().ok()?))
        })
        .collect();
    let want: BTreeMap<_, u64> = expected.iter().map(|g| (group_key(g), g.calls)).collect();
    let differ = want
        .iter()
        .filter(|(k, n)| got.get(*k) != Some(n))
        .map(|(k, _)| k);
    let extra = got.keys().filter(|k| !want.contains_key(*k));
    verdict(
        format!("{} groups expected, {} printed", want.len(), got.len()),
        vec![
            differences("missing or with other calls", differ),
            differences("extra", extra),
        ],
    )
}
