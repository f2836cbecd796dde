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
    let placeholders = planted
        .iter()
        .filter(|p| !p.binary && !p.is_finding() && crate::text::rg_matches(&p.id))
        .count();
    verdict(
        format!(
            "{} lines matched, {} expected ({placeholders} of them placeholders)",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::PlantKind;

    fn planted(
        path: &str,
        line: u64,
        id: &str,
        kind: PlantKind,
        secret_line: Option<u64>,
    ) -> Planted {
        Planted {
            path: path.into(),
            line,
            column: 5,
            id: id.into(),
            kind,
            secret_line,
            binary: false,
            secret: None,
        }
    }

    #[test]
    fn scan_check_fails_on_a_missed_an_extra_or_a_wrong_secret_line() {
        let list = vec![
            planted(
                "a/x.env",
                3,
                "LTAITESTfakeKEY0NOTreal1",
                PlantKind::Ltai24,
                Some(4),
            ),
            planted(
                "a/y.env",
                9,
                "LTAIxxxxxxxxxxxxxxxx",
                PlantKind::Placeholder,
                None,
            ),
        ];
        let found = |line: u64, secret: &str| {
            format!(
                r#"[{{"path":"/t/a/x.env","line":{line},"column":5,"AccessKeyId":"LTAITESTfakeKEY0NOTreal1","SecretLine":{secret}}}]"#
            )
        };
        assert!(scan_findings(found(3, "4").as_bytes(), "/t", &list).ok);
        assert!(!scan_findings(found(3, "null").as_bytes(), "/t", &list).ok);
        assert!(!scan_findings(found(4, "4").as_bytes(), "/t", &list).ok);
        assert!(!scan_findings(b"[]", "/t", &list).ok);
        assert!(!scan_findings(b"not json", "/t", &list).ok);
    }

    #[test]
    fn rg_check_expects_the_placeholders_too() {
        let list = vec![
            planted(
                "x.env",
                3,
                "LTAITESTfakeKEY0NOTreal1",
                PlantKind::Ltai24,
                None,
            ),
            planted(
                "y.env",
                9,
                "LTAIxxxxxxxxxxxxxxxx",
                PlantKind::Placeholder,
                None,
            ),
            planted(
                "z.env",
                2,
                "LTAI********************",
                PlantKind::Placeholder,
                None,
            ),
        ];
        assert!(
            rg_lines(
                b"/t/x.env:3:ak=LTAI5t\n/t/y.env:9:ak=LTAIxxxx\n",
                "/t",
                &list
            )
            .ok
        );
        assert!(!rg_lines(b"/t/x.env:3:ak=LTAI5t\n", "/t", &list).ok);
    }

    #[test]
    fn secrets_are_found_as_whole_words() {
        let secret = "Ab3Ab3Ab3Ab3Ab3Ab3Ab3Ab3Ab3Ab3";
        let set: HashSet<&str> = [secret].into();
        assert!(secrets_absent(&[b"x.env:3: LTAI\xe2\x80\xa6dd12 secret on line 4"], &set).ok);
        assert!(!secrets_absent(&[format!("error: \"{secret}\"").as_bytes()], &set).ok);
    }

    #[test]
    fn group_checks_fail_on_other_figures() {
        let g = Group {
            access_key_id: "LTAITESTfakeKEY0NOTreal1".into(),
            key_kind: "ltai".into(),
            vpc_id: Some("vpc-bp1a".into()),
            source_ip: "172.16.0.9".into(),
            calls: 3,
            errors: 1,
            first_seen: "2026-11-01T00:00:01Z".into(),
            last_seen: "2026-11-01T00:04:00Z".into(),
            apis: [("Ecs:DescribeInstances".to_string(), 3)].into(),
        };
        let json = |calls: u32| {
            format!(
                r#"[{{"AccessKeyId":"LTAITESTfakeKEY0NOTreal1","KeyKind":"ltai","Endpoint":"vpc","VpcId":"vpc-bp1a","SourceIp":"172.16.0.9","InstanceId":null,"InstanceName":null,"Calls":{calls},"Errors":1,"FirstSeen":"2026-11-01T00:00:01Z","LastSeen":"2026-11-01T00:04:00Z","Apis":[{{"Service":"Ecs","Event":"DescribeInstances","Calls":{calls}}}],"UserAgents":[]}}]"#
            )
        };
        assert!(trail_groups(json(3).as_bytes(), std::slice::from_ref(&g)).ok);
        assert!(!trail_groups(json(4).as_bytes(), std::slice::from_ref(&g)).ok);
        assert!(!trail_groups(b"[]", std::slice::from_ref(&g)).ok);
        assert!(
            jq_groups(
                b"      3 LTAITESTfakeKEY0NOTreal1\tvpc-bp1a\t172.16.0.9\n",
                std::slice::from_ref(&g)
            )
            .ok
        );
        assert!(
            !jq_groups(
                b"      2 LTAITESTfakeKEY0NOTreal1\tvpc-bp1a\t172.16.0.9\n",
                std::slice::from_ref(&g)
            )
            .ok
        );
        assert!(
            !jq_groups(
                b"      3 LTAITESTfakeKEY0NOTreal1\t-\t172.16.0.9\n",
                std::slice::from_ref(&g)
            )
            .ok
        );
    }
}
