//! What `nft -j list table inet ecs_credential_agent` says about the loaded table: which uids
//! the output chain lets reach the metadata address, and whether the reset and the forward
//! drop are there. A pure parser of `nft`'s JSON (libnftables-json(5), schema version 1).

use serde_json::Value;

/// The loaded table as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    /// Uids of `meta skuid … accept` rules in the output chain, sorted, without duplicates.
    pub allowed_uids: Vec<u32>,
    /// Whether the output chain rejects the rest with a TCP reset.
    pub resets_others: bool,
    /// Whether the forward chain drops forwarded packets.
    pub drops_forwarded: bool,
}

/// Errors reading `nft`'s JSON.
#[derive(Debug, thiserror::Error)]
#[error("unexpected `nft -j` output: {0}")]
pub struct ParseError(String);

/// Parses the JSON `nft -j list table inet <TABLE>` printed.
///
/// # Errors
/// [`ParseError`] when it is not JSON with a top-level `nftables` array.
pub fn parse(json: &str) -> Result<Table, ParseError> {
    let root: Value = serde_json::from_str(json).map_err(|e| ParseError(e.to_string()))?;
    let items = root["nftables"]
        .as_array()
        .ok_or_else(|| ParseError("no `nftables` array".into()))?;
    let mut table = Table::default();
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let exprs = rule["expr"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        match rule["chain"].as_str() {
            Some("output") => read_output_rule(exprs, &mut table),
            Some("forward") if has_verdict(exprs, "drop") => table.drops_forwarded = true,
            _ => {}
        }
    }
    table.allowed_uids.sort_unstable();
    table.allowed_uids.dedup();
    Ok(table)
}

fn read_output_rule(exprs: &[Value], table: &mut Table) {
    if exprs
        .iter()
        .any(|e| e["reject"]["type"].as_str() == Some("tcp reset"))
    {
        table.resets_others = true;
    }
    if !has_verdict(exprs, "accept") {
        return;
    }
    for m in exprs.iter().filter_map(|e| e.get("match")) {
        if m["left"]["meta"]["key"].as_str() != Some("skuid") || m["op"].as_str() != Some("==") {
            continue;
        }
        let right = &m["right"];
        let values = right["set"].as_array().map(Vec::as_slice);
        let values = values.unwrap_or(std::slice::from_ref(right));
        let uids = values.iter().filter_map(Value::as_u64);
        table
            .allowed_uids
            .extend(uids.filter_map(|u| u32::try_from(u).ok()));
    }
}

fn has_verdict(exprs: &[Value], verdict: &str) -> bool {
    exprs.iter().any(|e| e.get(verdict).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft -j list table` (nft 1.0.6) after loading `apply_script(&[998])`.
    const APPLIED: &str = include_str!("testdata/applied.json");
    /// The same table with an output chain of one rule, `meta skuid 0 accept` (a one-value
    /// match: `right` is a number, not a set), and no forward chain.
    const OUTPUT_ONLY: &str = include_str!("testdata/output_only.json");

    #[test]
    fn the_applied_table() {
        assert_eq!(
            parse(APPLIED).unwrap(),
            Table {
                allowed_uids: vec![0, 998],
                resets_others: true,
                drops_forwarded: true,
            }
        );
    }

    #[test]
    fn a_single_uid_and_missing_rules_are_reported() {
        assert_eq!(
            parse(OUTPUT_ONLY).unwrap(),
            Table {
                allowed_uids: vec![0],
                resets_others: false,
                drops_forwarded: false,
            }
        );
    }

    #[test]
    fn not_nft_json_is_an_error() {
        assert!(parse("").is_err());
        assert!(parse("{\"other\": []}").is_err());
    }
}
