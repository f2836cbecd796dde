//! `scan` output: a table for people, JSON, SARIF 2.1.0. AccessKeyIds are masked unless
//! `--show-ids`; secrets are never printed (only the line an AccessKeySecret is on); paths and
//! executables (caller-controlled) have their control characters escaped in the table.

use std::collections::HashSet;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::json;

use super::{used_from_ecs, Format, Location, Record};

/// How to print.
#[derive(Debug)]
pub(crate) struct View<'a> {
    /// Print AccessKeyIds whole.
    pub(crate) show_ids: bool,
    /// The AccessKeyIds in an ActionTrail report, when `--actiontrail` was given.
    pub(crate) used: Option<&'a HashSet<String>>,
}

/// Writes `records` to standard output in `format`.
pub(crate) fn print(format: Format, records: &[Record], view: &View<'_>) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match format {
        Format::Table => table(&mut out, records, view)?,
        Format::Json => {
            let rows: Vec<JsonRecord> = records.iter().map(|r| json_record(r, view)).collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut out, &sarif(records, view))?;
            writeln!(out)?;
        }
    }
    out.flush()
}

/// `s` with control characters and the invisible direction and format marks (U+200B–U+200F,
/// U+202A–U+202E, U+2060–U+2069, U+FEFF: a file name could otherwise display reversed) escaped
/// (`\n`, `\u{1b}`, `\u{202e}`), safe to print on a terminal.
pub(crate) fn escaped(s: &str) -> String {
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    }
    if !s.chars().any(hidden) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if hidden(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn location_text(location: &Location) -> String {
    match location {
        Location::File { path, line, column } => {
            format!("{}:{line}:{column}", escaped(&path.to_string_lossy()))
        }
        Location::Process {
            pid,
            exe,
            unit,
            source,
        } => {
            let exe = exe.as_ref().map_or("?".into(), |e| e.to_string_lossy());
            let unit = unit.as_deref().unwrap_or("-");
            escaped(&format!("pid {pid} {exe} ({unit}) {source}"))
        }
    }
}

fn secret_text(record: &Record) -> String {
    match (&record.location, record.finding.secret_line) {
        (_, None) => "no".into(),
        (Location::Process { source, .. }, Some(line)) if *source == "environ" => {
            format!("variable {line}")
        }
        (Location::Process { .. }, Some(_)) => "yes".into(),
        (Location::File { .. }, Some(line)) => format!("line {line}"),
    }
}

fn table(out: &mut impl Write, records: &[Record], view: &View<'_>) -> io::Result<()> {
    if records.is_empty() {
        return writeln!(out, "No AccessKey found.");
    }
    let mut rows = vec![vec![
        "LOCATION".to_owned(),
        "ACCESSKEYID".to_owned(),
        "SECRET".to_owned(),
    ]];
    if view.used.is_some() {
        rows[0].push("USED FROM ECS".to_owned());
    }
    for record in records {
        let id = record.finding.access_key_id.as_ref();
        let mut row = vec![
            location_text(&record.location),
            id.map_or("(secret only)".into(), |id| id.shown(view.show_ids)),
            secret_text(record),
        ];
        if let Some(used) = used_from_ecs(id, view.used) {
            row.push(if used { "yes" } else { "no" }.to_owned());
        }
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

/// One element of the `--format json` array.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum JsonRecord {
    File {
        path: String,
        line: u64,
        column: u64,
        #[serde(rename = "AccessKeyId")]
        access_key_id: Option<String>,
        #[serde(rename = "SecretLine")]
        secret_line: Option<u64>,
        #[serde(rename = "UsedFromEcs", skip_serializing_if = "Option::is_none")]
        used_from_ecs: Option<bool>,
    },
    Process {
        pid: u32,
        exe: Option<String>,
        unit: Option<String>,
        #[serde(rename = "AccessKeyId")]
        access_key_id: Option<String>,
        #[serde(rename = "SecretLine")]
        secret_line: Option<u64>,
        #[serde(rename = "UsedFromEcs", skip_serializing_if = "Option::is_none")]
        used_from_ecs: Option<bool>,
    },
}

fn json_record(record: &Record, view: &View<'_>) -> JsonRecord {
    let id = record.finding.access_key_id.as_ref();
    let access_key_id = id.map(|id| id.shown(view.show_ids));
    let used_from_ecs = used_from_ecs(id, view.used);
    let secret_line = record.finding.secret_line;
    match &record.location {
        Location::File { path, line, column } => JsonRecord::File {
            path: path.to_string_lossy().into_owned(),
            line: *line,
            column: *column,
            access_key_id,
            secret_line,
            used_from_ecs,
        },
        Location::Process { pid, exe, unit, .. } => JsonRecord::Process {
            pid: *pid,
            exe: exe.as_ref().map(|e| e.to_string_lossy().into_owned()),
            unit: unit.clone(),
            access_key_id,
            secret_line,
            used_from_ecs,
        },
    }
}

/// The SARIF rule ids.
const RULE_ID: &str = "alibaba-cloud-access-key-id";
const RULE_SECRET: &str = "alibaba-cloud-access-key-secret";

fn sarif(records: &[Record], view: &View<'_>) -> serde_json::Value {
    let results: Vec<serde_json::Value> = records.iter().map(|r| sarif_result(r, view)).collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "ecs-ak-audit",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": [
                    {"id": RULE_ID, "shortDescription": {"text":
                        "An Alibaba Cloud AccessKeyId (a long-term AccessKey) written down"}},
                    {"id": RULE_SECRET, "shortDescription": {"text":
                        "An Alibaba Cloud AccessKeySecret assigned to a well-known name"}},
                ],
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    })
}

fn sarif_result(record: &Record, view: &View<'_>) -> serde_json::Value {
    let id = record.finding.access_key_id.as_ref();
    let mut text = match id {
        Some(id) => format!("AccessKeyId {}", id.shown(view.show_ids)),
        None => "AccessKeySecret assigned to a well-known name".to_owned(),
    };
    if let (Some(line), Some(_)) = (record.finding.secret_line, id) {
        text.push_str(&format!("; an AccessKeySecret on line {line}"));
    }
    if let Some(used) = used_from_ecs(id, view.used) {
        text.push_str(if used {
            "; used from ECS"
        } else {
            "; not seen used from ECS"
        });
    }
    let (uri, region, properties) = match &record.location {
        Location::File { path, line, column } => (
            uri_of(&path.to_string_lossy()),
            json!({"startLine": line, "startColumn": column}),
            json!({}),
        ),
        Location::Process {
            pid,
            exe,
            unit,
            source,
        } => (
            format!("file:///proc/{pid}/{source}"),
            json!({"startLine": record.finding.line}),
            json!({"pid": pid, "exe": exe.as_ref().map(|e| e.to_string_lossy()), "unit": unit}),
        ),
    };
    json!({
        "ruleId": if id.is_some() { RULE_ID } else { RULE_SECRET },
        "level": "error",
        "message": {"text": text},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": uri},
            "region": region,
        }}],
        "properties": properties,
    })
}

/// A relative or absolute path as a URI reference: unreserved characters and `/` kept, the
/// rest percent-encoded; absolute paths get `file://`.
fn uri_of(path: &str) -> String {
    let mut uri = String::with_capacity(path.len() + 8);
    if path.starts_with('/') {
        uri.push_str("file://");
    }
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(escaped("plain/path"), "plain/path");
        assert_eq!(escaped("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
    }

    #[test]
    fn uris() {
        assert_eq!(uri_of("/etc/my app.env"), "file:///etc/my%20app.env");
        assert_eq!(uri_of("src/a#b.rs"), "src/a%23b.rs");
    }
}
