//! The nftables text `apply` loads and `remove` runs: pure functions of the allowed uids, so the
//! exact rules are unit-tested here and nowhere else decides them.
//!
//! One table of our own, [`TABLE`] in the `inet` family, with two base chains:
//!
//! - `output` (hook `output`): packets this host's processes send to [`METADATA_ADDR`] pass
//!   when their socket's owner (`meta skuid`) is allowed; other TCP gets a reset (SDKs fail
//!   fast instead of timing out), anything else is dropped. `meta skuid` is known only for
//!   locally generated packets, which is all this hook sees.
//! - `forward` (hook `forward`): packets forwarded to the address (bridge-network containers,
//!   which have no local socket and so no uid) are dropped.
//!
//! Nothing else in `100.64.0.0/10` is touched: other Alibaba Cloud services (the DNS resolvers
//! the metadata service lists) live in `100.100.0.0/16`. The chains are not named `fwd`, a
//! keyword of nft 1.0.6. Priority `0` (not the `filter` keyword) and no comments, for older
//! `nft` releases.

/// The table's name (family `inet`): the only table `apply` and `remove` touch.
pub const TABLE: &str = "ecs_credential_agent";

/// The metadata service's address, the only destination the table filters.
pub const METADATA_ADDR: &str = "100.100.100.200";

/// The `nft -f` script that replaces the table with one allowing `uids` (root, uid 0, is
/// always allowed and need not be listed; duplicates are dropped), as one transaction: the
/// first line creates the table if it is absent, so that deleting it cannot fail, then it is
/// deleted and added whole. Applying it twice leaves the same table; other tables are not
/// touched. If any line fails, `nft` applies none of them.
pub fn apply_script(uids: &[u32]) -> String {
    let mut allowed = vec![0];
    allowed.extend_from_slice(uids);
    allowed.sort_unstable();
    allowed.dedup();
    let set = allowed
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
\tchain output {{
\t\ttype filter hook output priority 0; policy accept;
\t\tip daddr {METADATA_ADDR} meta skuid {{ {set} }} accept
\t\tip daddr {METADATA_ADDR} meta l4proto tcp counter reject with tcp reset
\t\tip daddr {METADATA_ADDR} counter drop
\t}}
\tchain forward {{
\t\ttype filter hook forward priority 0; policy accept;
\t\tip daddr {METADATA_ADDR} counter drop
\t}}
}}
"
    )
}

/// The `nft -f` script that deletes the table, and succeeds when it is absent (it is created
/// empty first, in the same transaction).
pub fn remove_script() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_s_user_and_root() {
        assert_eq!(
            apply_script(&[998]),
            "table inet ecs_credential_agent
delete table inet ecs_credential_agent
table inet ecs_credential_agent {
\tchain output {
\t\ttype filter hook output priority 0; policy accept;
\t\tip daddr 100.100.100.200 meta skuid { 0, 998 } accept
\t\tip daddr 100.100.100.200 meta l4proto tcp counter reject with tcp reset
\t\tip daddr 100.100.100.200 counter drop
\t}
\tchain forward {
\t\ttype filter hook forward priority 0; policy accept;
\t\tip daddr 100.100.100.200 counter drop
\t}
}
"
        );
    }

    #[test]
    fn root_once_sorted_without_duplicates() {
        let script = apply_script(&[1001, 0, 998, 1001]);
        assert!(
            script.contains("\t\tip daddr 100.100.100.200 meta skuid { 0, 998, 1001 } accept\n"),
            "{script}"
        );
        assert!(apply_script(&[]).contains(" meta skuid { 0 } accept\n"));
    }

    #[test]
    fn no_chain_is_named_with_a_keyword_and_nothing_wider_is_filtered() {
        let script = apply_script(&[998]);
        assert!(!script.contains("chain fwd"));
        assert!(!script.contains("100.64."));
        assert!(!script.contains('/'), "no prefix, the /32 address only");
    }

    #[test]
    fn remove_deletes_only_our_table_and_tolerates_its_absence() {
        assert_eq!(
            remove_script(),
            "table inet ecs_credential_agent\ndelete table inet ecs_credential_agent\n"
        );
    }
}
