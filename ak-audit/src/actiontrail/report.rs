//! The report: one row per group, in a table for people, `--format json` (a JSON array, the
//! contract with `scan --actiontrail` and the benchmark) or `--format csv` (the same names).
//!
//! Order (the table's "instances to fix first" at the top): calls attributed to an instance,
//! then other VPC-endpoint calls, then calls from the account's own public addresses, then
//! the rest; within each, more calls first, then AccessKeyId.

use std::io::{self, Write};

use serde::Serialize;

use super::attribution::{endpoint, Inventory, Source};
use super::event::{format_time, KeyKind};
use super::group::Group;

/// One API with its call count.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Api {
    /// `serviceName` (`null` when absent).
    pub service: Option<String>,
    /// `eventName`.
    pub event: String,
    /// Calls.
    pub calls: u64,
}

/// One user agent with its call count.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct UserAgent {
    /// `userAgent` (`null` when absent).
    pub user_agent: Option<String>,
    /// Calls.
    pub calls: u64,
}

/// One report row (`--format json` object; the CSV columns in this order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Row {
    /// The AccessKeyId, in full.
    pub access_key_id: String,
    /// `ltai` or `legacy`.
    pub key_kind: &'static str,
    /// `vpc`, `public` or `unknown`.
    pub endpoint: &'static str,
    /// `vpcId`, or `null`.
    pub vpc_id: Option<String>,
    /// `sourceIpAddress` as written, or `null`.
    pub source_ip: Option<String>,
    /// The attributed instance, or `null`.
    pub instance_id: Option<String>,
    /// Its name, or `null`.
    pub instance_name: Option<String>,
    /// Calls.
    pub calls: u64,
    /// Calls with an `errorCode`.
    pub errors: u64,
    /// `YYYY-MM-DDTHH:MM:SSZ`, or `null`.
    pub first_seen: Option<String>,
    /// `YYYY-MM-DDTHH:MM:SSZ`, or `null`.
    pub last_seen: Option<String>,
    /// APIs, most called first.
    pub apis: Vec<Api>,
    /// User agents, most calls first.
    pub user_agents: Vec<UserAgent>,
    #[serde(skip)]
    source: Source,
}

fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

impl Row {
    fn new(g: Group, inventory: &Inventory) -> Row {
        let source = inventory.attribute(&g.vpc_id, &g.source_ip);
        let (instance_id, instance_name) = match &source {
            Source::Instance(i) => (Some(i.id.clone()), i.name.clone()),
            _ => (None, None),
        };
        let mut apis: Vec<Api> = g
            .apis
            .into_iter()
            .map(|((service, event), calls)| Api {
                service: non_empty(service),
                event,
                calls,
            })
            .collect();
        apis.sort_by(|a, b| (b.calls, &a.service, &a.event).cmp(&(a.calls, &b.service, &b.event)));
        let mut user_agents: Vec<UserAgent> = g
            .user_agents
            .into_iter()
            .map(|(ua, calls)| UserAgent {
                user_agent: non_empty(ua),
                calls,
            })
            .collect();
        user_agents.sort_by(|a, b| (b.calls, &a.user_agent).cmp(&(a.calls, &b.user_agent)));
        Row {
            key_kind: KeyKind::of(&g.access_key_id).map_or("legacy", KeyKind::as_str),
            endpoint: endpoint(&g.vpc_id, &g.source_ip),
            access_key_id: g.access_key_id,
            vpc_id: non_empty(g.vpc_id),
            source_ip: non_empty(g.source_ip),
            instance_id,
            instance_name,
            calls: g.calls,
            errors: g.errors,
            first_seen: g.first_seen.map(format_time),
            last_seen: g.last_seen.map(format_time),
            apis,
            user_agents,
            source,
        }
    }

    fn rank(&self) -> u8 {
        match (&self.source, self.endpoint) {
            (Source::Instance(_), _) => 0,
            (_, "vpc") => 1,
            (Source::OwnAddress, _) => 2,
            _ => 3,
        }
    }

    /// Where the calls came from, for the table.
    fn from(&self) -> String {
        match &self.source {
            Source::Instance(i) => match &i.name {
                Some(n) => format!("{} ({})", i.id, n.escape_debug()),
                None => i.id.clone(),
            },
            Source::OwnAddress => "own public address".into(),
            Source::NotIp => "not an IP".into(),
            Source::Unknown if self.endpoint == "vpc" => "VPC, not in inventory".into(),
            Source::Unknown => "-".into(),
        }
    }
}

/// Attributes and orders the groups.
pub fn rows(groups: Vec<Group>, inventory: &Inventory) -> Vec<Row> {
    let mut rows: Vec<Row> = groups.into_iter().map(|g| Row::new(g, inventory)).collect();
    rows.sort_by(|a, b| {
        (a.rank(), b.calls, &a.access_key_id, &a.vpc_id, &a.source_ip).cmp(&(
            b.rank(),
            a.calls,
            &b.access_key_id,
            &b.vpc_id,
            &b.source_ip,
        ))
    });
    rows
}

/// Writes the JSON array (pretty, one field per line).
///
/// # Errors
/// Writing failed.
pub fn write_json(out: &mut dyn Write, rows: &[Row]) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, rows)?;
    writeln!(out)
}

/// `Service:Event=N;…` (an absent service is empty).
pub fn apis_cell(apis: &[Api]) -> String {
    let parts: Vec<String> = apis
        .iter()
        .map(|a| {
            let s = a.service.as_deref().unwrap_or("");
            format!("{s}:{}={}", a.event, a.calls)
        })
        .collect();
    parts.join(";")
}

/// `UserAgent=N;…` (an absent user agent is empty).
pub fn user_agents_cell(uas: &[UserAgent]) -> String {
    let parts: Vec<String> = uas
        .iter()
        .map(|u| format!("{}={}", u.user_agent.as_deref().unwrap_or(""), u.calls))
        .collect();
    parts.join(";")
}

/// The CSV column names, in order (also the Log Service queries' aliases).
pub const COLUMNS: [&str; 13] = [
    "AccessKeyId",
    "KeyKind",
    "Endpoint",
    "VpcId",
    "SourceIp",
    "InstanceId",
    "InstanceName",
    "Calls",
    "Errors",
    "FirstSeen",
    "LastSeen",
    "Apis",
    "UserAgents",
];

/// Writes the CSV (header, then one record per row; `null` is an empty field).
///
/// # Errors
/// Writing failed.
pub fn write_csv(out: &mut dyn Write, rows: &[Row]) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    for r in rows {
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let cells: [String; 13] = [
            r.access_key_id.clone(),
            r.key_kind.to_owned(),
            r.endpoint.to_owned(),
            opt(&r.vpc_id),
            opt(&r.source_ip),
            opt(&r.instance_id),
            opt(&r.instance_name),
            r.calls.to_string(),
            r.errors.to_string(),
            opt(&r.first_seen),
            opt(&r.last_seen),
            apis_cell(&r.apis),
            user_agents_cell(&r.user_agents),
        ];
        w.write_record(cells.iter().map(|c| csv_safe(c)))?;
    }
    w.flush()
}

/// Characters a spreadsheet takes as the start of a formula (OWASP "CSV Injection").
pub(crate) const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A CSV cell that is safe to open in a spreadsheet and to `cat`: values come from events, and
/// whoever holds a key chooses its user agent. Control characters are escaped (`\u{1b}`), and a
/// cell starting like a formula gets a leading `'` (which `--from-sls-results` removes again).
fn csv_safe(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len() + 1);
    if cell.starts_with(FORMULA_STARTS) {
        out.push('\'');
    }
    for c in cell.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes the table for people: one line per group, the most called API alongside.
///
/// # Errors
/// Writing failed.
pub fn write_table(out: &mut dyn Write, rows: &[Row]) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "No long-term AccessKey calls found.");
    }
    let header = [
        "FROM",
        "AccessKeyId",
        "KIND",
        "ENDPOINT",
        "VPC",
        "SOURCE",
        "CALLS",
        "ERRORS",
        "LAST SEEN",
        "TOP API",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            let top = r.apis.first().map_or(String::new(), |a| {
                format!(
                    "{}:{} ({})",
                    a.service.as_deref().unwrap_or(""),
                    a.event,
                    a.calls
                )
            });
            [
                r.from(),
                r.access_key_id.escape_debug().to_string(),
                r.key_kind.into(),
                r.endpoint.into(),
                r.vpc_id
                    .as_deref()
                    .unwrap_or("-")
                    .escape_debug()
                    .to_string(),
                r.source_ip
                    .as_deref()
                    .unwrap_or("-")
                    .escape_debug()
                    .to_string(),
                r.calls.to_string(),
                r.errors.to_string(),
                r.last_seen.clone().unwrap_or_else(|| "-".into()),
                top.escape_debug().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, row: &[&str]| -> io::Result<()> {
        let padded: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", padded.join("  ").trim_end())
    };
    line(out, &header)?;
    for row in &cells {
        line(out, &row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod csv_tests {
    use super::csv_safe;

    #[test]
    fn formulas_and_control_characters_are_neutralised() {
        assert_eq!(csv_safe("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_safe("@SUM(1):x=1"), "'@SUM(1):x=1");
        assert_eq!(csv_safe("-LTAI"), "'-LTAI");
        assert_eq!(csv_safe("ua\u{1b}[31m\u{7}"), "ua\\u{1b}[31m\\u{7}");
        assert_eq!(csv_safe("aliyun-cli/3.0=1"), "aliyun-cli/3.0=1");
    }
}
