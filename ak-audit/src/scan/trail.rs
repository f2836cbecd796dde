//! `scan --actiontrail REPORT.json`: the AccessKeyIds an `ecs-ak-audit actiontrail --format
//! json` report names (a JSON array of objects; only `AccessKeyId` is read).

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::report::escaped;

#[derive(Debug, Deserialize)]
struct Group {
    #[serde(rename = "AccessKeyId")]
    access_key_id: Option<String>,
}

/// Reads the report; returns the AccessKeyIds in it.
///
/// # Errors
///
/// A message naming the file (and line and column for bad JSON) when it cannot be read or is
/// not a JSON array of objects. The message never quotes the file's content.
pub(crate) fn load(path: &Path) -> Result<HashSet<String>, String> {
    let shown = escaped(&path.to_string_lossy());
    let text = fs::read(path).map_err(|e| format!("--actiontrail {shown}: {e}"))?;
    let groups: Vec<Group> = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "--actiontrail {shown}: line {} column {}: not a JSON array of objects with \
             AccessKeyId (as `ecs-ak-audit actiontrail --format json` prints)",
            e.line(),
            e.column()
        )
    })?;
    Ok(groups.into_iter().filter_map(|g| g.access_key_id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_and_reports_bad_json_without_content() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        fs::write(
            &good,
            r#"[{"AccessKeyId":"K1","Calls":3},{"AccessKeyId":null},{}]"#,
        )
        .unwrap();
        assert_eq!(load(&good).unwrap(), HashSet::from(["K1".to_owned()]));
        let bad = dir.path().join("bad.json");
        fs::write(&bad, r#"{"AccessKeyId":"hidden-value"}"#).unwrap();
        let message = load(&bad).unwrap_err();
        assert!(message.contains("line 1"), "{message}");
        assert!(!message.contains("hidden-value"), "{message}");
    }
}
