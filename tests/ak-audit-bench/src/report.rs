//! The results table (Markdown) with the targets and PASS/FAIL.

use serde::Serialize;

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured or checked.
    pub measure: String,
    /// `ecs-ak-audit`'s figure.
    pub ours: String,
    /// The baseline's figure (ripgrep, the jq pipeline), or empty.
    pub baseline: String,
    /// The compared figure (a ratio, a size), or the check's summary.
    pub result: String,
    /// The target.
    pub target: String,
    /// Whether the target was met; `None` for a figure without a target.
    pub pass: Option<bool>,
}

/// The Markdown table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| measure | ecs-ak-audit | baseline | result | target | |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let pass = match r.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {pass} |\n",
            r.measure, r.ours, r.baseline, r.result, r.target
        ));
    }
    s
}

/// Decimal gigabytes a second.
pub fn gbps(bytes: u64, secs: f64) -> String {
    format!("{:.2} GB/s", bytes as f64 / 1e9 / secs.max(1e-9))
}

/// Bytes in binary units.
pub fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / 1024f64.powi(3))
    } else {
        format!("{:.1} MiB", b / 1024f64.powi(2))
    }
}

/// The median of the figures (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
