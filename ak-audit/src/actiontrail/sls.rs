//! Fleet scale: the Log Service queries that compute the grouping inside Log Service
//! (`--sls-queries`), and reading their exported results back (`--from-sls-results`).
//!
//! The first two queries are Alibaba Cloud's documented ones (AccessKey calls from ECS through
//! a VPC endpoint, and through a public endpoint); they match `LIKE 'LTA%'` only, so they miss
//! prefix-less legacy keys. The aggregating versions take every id not starting with `STS.`
//! and name their columns as the CSV report does ([`super::report::COLUMNS`], less the
//! instance columns, which come from `--instances`).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::event::{parse_time, KeyKind};
use super::group::Group;
use super::input::shown;

const DOCUMENTED_VPC: &str = r#"* | SELECT "event.eventid","event.sourceipaddress", "event.userIdentity.accessKeyId", "event.vpcId" WHERE "event.userIdentity.accessKeyId" LIKE 'LTA%' and "event.vpcId" LIKE 'vpc%'"#;
const DOCUMENTED_PUBLIC: &str = r#"* | SELECT "event.eventid","event.sourceipaddress", "event.userIdentity.accessKeyId" WHERE "event.userIdentity.accessKeyId" LIKE 'LTA%' and "event.vpcId" IS NULL"#;

/// The aggregating query; `{WHERE}` is the endpoint condition.
const AGGREGATING: &str = r#"* | SELECT "AccessKeyId", CASE WHEN "AccessKeyId" LIKE 'LTAI%' THEN 'ltai' ELSE 'legacy' END AS "KeyKind", CASE WHEN "VpcId" LIKE 'vpc%' THEN 'vpc' WHEN regexp_like("SourceIp", '^[0-9.]+$|:') THEN 'public' ELSE 'unknown' END AS "Endpoint", "VpcId", "SourceIp", "Calls", "Errors", "FirstSeen", "LastSeen", array_join(transform(map_keys(apis), k -> concat(k, '=', cast(apis[k] AS varchar))), ';') AS "Apis", array_join(transform(map_keys(uas), k -> concat(k, '=', cast(uas[k] AS varchar))), ';') AS "UserAgents" FROM (SELECT "event.userIdentity.accessKeyId" AS "AccessKeyId", "event.vpcId" AS "VpcId", "event.sourceIpAddress" AS "SourceIp", count(*) AS "Calls", count_if(coalesce("event.errorCode", '') <> '') AS "Errors", min("event.eventTime") AS "FirstSeen", max("event.eventTime") AS "LastSeen", histogram(concat(coalesce("event.serviceName", ''), ':', "event.eventName")) AS apis, histogram(coalesce("event.userAgent", '')) AS uas FROM log WHERE "event.userIdentity.accessKeyId" IS NOT NULL AND "event.userIdentity.accessKeyId" <> '' AND "event.userIdentity.accessKeyId" NOT LIKE 'STS.%' AND {WHERE} GROUP BY "event.userIdentity.accessKeyId", "event.vpcId", "event.sourceIpAddress") ORDER BY "Calls" DESC LIMIT 1000000"#;

/// The text `--sls-queries` prints: four queries, each after a `--` comment line.
pub fn queries() -> String {
    let vpc = AGGREGATING.replace("{WHERE}", r#""event.vpcId" LIKE 'vpc%'"#);
    let public = AGGREGATING.replace("{WHERE}", r#""event.vpcId" IS NULL"#);
    format!(
        "-- 1. AccessKey calls through a VPC endpoint (Alibaba Cloud's documented query; LTA% keys only)\n{DOCUMENTED_VPC}\n\n\
         -- 2. AccessKey calls through a public endpoint (documented; compare sourceipaddress with your EIPs and public IPs)\n{DOCUMENTED_PUBLIC}\n\n\
         -- 3. Query 1 aggregated like `ecs-ak-audit actiontrail --format csv` (all long-term keys, legacy ones too);\n\
         --    export the result (CSV or JSON) and run: ecs-ak-audit actiontrail --from-sls-results FILE\n{vpc}\n\n\
         -- 4. Query 2 aggregated the same way\n{public}\n"
    )
}

/// Why a results file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file, escaped.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Neither CSV with an `AccessKeyId` column nor JSON objects.
    #[error("{file}: not Log Service results: {reason}")]
    Shape {
        /// The file, escaped.
        file: String,
        /// What is wrong (positions and column names only).
        reason: String,
    },
}

/// Reads a results file (CSV with a header row, or JSON: an array of objects, or objects one
/// after another), one group per row. Rows with an STS or empty AccessKeyId, or without a
/// number in `Calls`, are reported on standard error and skipped.
///
/// # Errors
/// [`ResultsError`] when the file cannot be read or has neither shape.
pub fn read_results(path: &Path) -> Result<Vec<Group>, ResultsError> {
    let file = shown(path);
    let text = std::fs::read(path).map_err(|source| ResultsError::Read {
        file: file.clone(),
        source,
    })?;
    let first = text.iter().find(|c| !c.is_ascii_whitespace());
    let rows = match first {
        Some(b'[') | Some(b'{') => json_rows(&text),
        _ => csv_rows(&text),
    }
    .map_err(|reason| ResultsError::Shape {
        file: file.clone(),
        reason,
    })?;
    let total = rows.len();
    let mut groups = Vec::new();
    for (n, row) in rows.into_iter().enumerate() {
        match group(&row) {
            Ok(g) => groups.push(g),
            Err(why) => eprintln!("ecs-ak-audit: {file}: row {}: {why}", n + 1),
        }
    }
    // Rows, none usable: not query results (raw events, an inventory); "no keys" would be a
    // false all-clear. An empty result (no row) is a real answer and stays one.
    if total > 0 && groups.is_empty() {
        return Err(ResultsError::Shape {
            file,
            reason: format!(
                "none of its {total} rows is a result of the printed queries (AccessKeyId, \
                 Calls, …); raw ActionTrail events are read without --from-sls-results"
            ),
        });
    }
    Ok(groups)
}

type Cells = HashMap<String, Value>;

fn json_rows(text: &[u8]) -> Result<Vec<Cells>, String> {
    let mut rows = Vec::new();
    for value in serde_json::Deserializer::from_slice(text).into_iter::<Value>() {
        match value.map_err(|e| e.to_string())? {
            Value::Array(items) => rows.extend(items.into_iter().filter_map(object)),
            v => rows.extend(object(v)),
        }
    }
    Ok(rows)
}

fn object(v: Value) -> Option<Cells> {
    match v {
        Value::Object(m) => Some(m.into_iter().collect()),
        _ => None,
    }
}

fn csv_rows(text: &[u8]) -> Result<Vec<Cells>, String> {
    let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(text);
    let headers: Vec<String> = r
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_owned())
        .collect();
    if !headers.iter().any(|h| h == "AccessKeyId") {
        return Err("no AccessKeyId column".into());
    }
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| e.to_string())?;
        let cells = headers
            .iter()
            .zip(rec.iter())
            .map(|(h, v)| (h.clone(), Value::String(unquote_formula(v).to_owned())))
            .collect();
        rows.push(cells);
    }
    Ok(rows)
}

/// A cell as `--format csv` wrote it: the `'` put before a formula-like start removed.
fn unquote_formula(v: &str) -> &str {
    match v.strip_prefix('\'') {
        Some(rest) if rest.starts_with(crate::actiontrail::report::FORMULA_STARTS) => rest,
        _ => v,
    }
}

/// A cell as text; `null`, absent and the text `null` are empty.
fn text(row: &Cells, column: &str) -> String {
    match row.get(column) {
        Some(Value::String(s)) if s != "null" => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn number(row: &Cells, column: &str) -> Option<u64> {
    text(row, column).parse().ok()
}

fn group(row: &Cells) -> Result<Group, String> {
    let access_key_id = text(row, "AccessKeyId");
    if KeyKind::of(&access_key_id).is_none() {
        return Err("AccessKeyId empty or an STS id".into());
    }
    let calls = number(row, "Calls").ok_or("Calls is not a number")?;
    let time = |c| {
        Some(text(row, c))
            .filter(|s| !s.is_empty())
            .map(|s| parse_time(&s))
    };
    let (first_seen, last_seen) = (time("FirstSeen"), time("LastSeen"));
    if first_seen == Some(None) || last_seen == Some(None) {
        return Err("FirstSeen/LastSeen is not an RFC 3339 time".into());
    }
    Ok(Group {
        access_key_id,
        vpc_id: text(row, "VpcId"),
        source_ip: text(row, "SourceIp"),
        calls,
        errors: number(row, "Errors").unwrap_or(0),
        first_seen: first_seen.flatten(),
        last_seen: last_seen.flatten(),
        apis: apis(row.get("Apis")),
        user_agents: user_agents(row.get("UserAgents")),
    })
}

/// `Service:Event=N;…`, or a JSON list of `{"Service","Event","Calls"}` (a report of ours).
fn apis(cell: Option<&Value>) -> HashMap<(String, String), u64> {
    let mut out = HashMap::new();
    match cell {
        Some(Value::String(s)) => {
            for (name, n) in counted(s) {
                let (service, event) = name.split_once(':').unwrap_or(("", name));
                *out.entry((service.to_owned(), event.to_owned()))
                    .or_default() += n;
            }
        }
        Some(Value::Array(items)) => {
            for i in items {
                let s = i["Service"].as_str().unwrap_or("").to_owned();
                let e = i["Event"].as_str().unwrap_or("").to_owned();
                *out.entry((s, e)).or_default() += i["Calls"].as_u64().unwrap_or(0);
            }
        }
        _ => {}
    }
    out
}

/// `UserAgent=N;…`, or a JSON list of `{"UserAgent","Calls"}`.
fn user_agents(cell: Option<&Value>) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    match cell {
        Some(Value::String(s)) => {
            for (name, n) in counted(s) {
                *out.entry(name.to_owned()).or_default() += n;
            }
        }
        Some(Value::Array(items)) => {
            for i in items {
                let ua = i["UserAgent"].as_str().unwrap_or("").to_owned();
                *out.entry(ua).or_default() += i["Calls"].as_u64().unwrap_or(0);
            }
        }
        _ => {}
    }
    out
}

/// Splits `name=N;name=N`: an item ends at a `;` that follows `=` and digits, so a name may
/// hold `;` and `=` (user agents such as `AlibabaCloud (Linux; amd64) …` do). Items without a
/// count are dropped.
fn counted(s: &str) -> Vec<(&str, u64)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in s.match_indices(';').chain(std::iter::once((s.len(), ""))) {
        let item = &s[start..i];
        let Some((name, n)) = item.rsplit_once('=') else {
            continue;
        };
        if let Ok(n) = n.trim().parse() {
            out.push((name, n));
            start = (i + 1).min(s.len());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_the_csv_columns() {
        let q = queries();
        assert!(q.contains(DOCUMENTED_VPC) && q.contains(DOCUMENTED_PUBLIC));
        for c in super::super::report::COLUMNS {
            if !c.starts_with("Instance") {
                assert!(q.contains(&format!("AS \"{c}\"")), "{c}");
            }
        }
        assert_eq!(q.matches("NOT LIKE 'STS.%'").count(), 2);
    }

    #[test]
    fn csv_and_json_results_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("r.csv");
        std::fs::write(
            &csv,
            "\u{feff}\"AccessKeyId\",\"VpcId\",\"SourceIp\",\"Calls\",\"Errors\",\"FirstSeen\",\"LastSeen\",\"Apis\",\"UserAgents\"\n\
             LTAIabc,vpc-1,10.0.0.1,3,1,2024-01-01T00:00:00Z,2024-01-02T00:00:00Z,Ecs:A=2;Ecs:B=1,\"ua, x=3;A (Linux; amd64) k=v=2\"\n\
             STS.x,,1.1.1.1,3,0,,,,\n",
        )
        .unwrap();
        let g = read_results(&csv).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(
            (g[0].calls, g[0].errors, g[0].first_seen),
            (3, 1, Some(1_704_067_200))
        );
        assert_eq!(g[0].apis[&("Ecs".into(), "A".into())], 2);
        assert_eq!(g[0].user_agents["ua, x"], 3);
        assert_eq!(g[0].user_agents["A (Linux; amd64) k=v"], 2);
        assert_eq!(g[0].user_agents.len(), 2);
        let json = dir.path().join("r.json");
        std::fs::write(
            &json,
            r#"[{"AccessKeyId":"abcdEFGH12345678","VpcId":"null","SourceIp":"Internal","Calls":"5","Apis":[{"Service":"Ecs","Event":"A","Calls":5}]}]"#,
        )
        .unwrap();
        let g = read_results(&json).unwrap();
        assert_eq!(
            (g[0].calls, g[0].vpc_id.as_str(), g[0].first_seen),
            (5, "", None)
        );
        assert_eq!(g[0].apis[&("Ecs".into(), "A".into())], 5);
    }
}
