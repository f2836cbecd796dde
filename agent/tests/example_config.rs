//! The example configuration shipped in `systemd/config.toml` (installed as
//! `/etc/ecs-credential-agent/config.toml`) must never drift from the parser: as shipped it
//! means all defaults; uncommenting every `# key = value` line still gives exactly the defaults;
//! every `# Example: key = value` line is valid; and every key the parser knows is documented,
//! with the default its declaration gives. The README's configuration table is the declarations'
//! reference, row for row.

use std::collections::{BTreeMap, BTreeSet};

use ecs_credential_agent::config::Config;
use ecs_credential_agent::settings::Reload;

const EXAMPLE: &str = include_str!("../../systemd/config.toml");
const README: &str = include_str!("../../README.md");

/// `(section, key, line uncommented)` for each line `# key = value` (defaults) or
/// `# Example: key = value` (examples), with the section it sits in.
fn documented(prefix: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in EXAMPLE.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some(rest) = line.strip_prefix(prefix) {
            let Some((key, _)) = rest.split_once(" = ") else {
                continue;
            };
            if !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                out.push((section.clone(), key.to_owned(), rest.to_owned()));
            }
        }
    }
    out
}

/// A TOML document holding the given lines uncommented, grouped under their sections.
fn uncommented(lines: &[(String, String, String)]) -> String {
    let mut sections: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (s, _, l) in lines {
        sections.entry(s).or_default().push(l);
    }
    sections
        .iter()
        .map(|(s, ls)| format!("[{s}]\n{}\n", ls.join("\n")))
        .collect()
}

/// The names listed after "known: " in the parser's own error for an unknown name.
fn known_from_error(text: &str) -> BTreeSet<String> {
    let e = Config::parse("probe", text).expect_err("the probe must be rejected");
    let msg = e.to_string();
    let list = msg
        .split("known: ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no list of known names in {msg:?}"));
    list.split(", ").map(str::to_owned).collect()
}

#[test]
fn the_example_as_shipped_means_all_defaults() {
    let c = Config::parse("systemd/config.toml", EXAMPLE).unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn every_commented_default_is_the_real_default() {
    let defaults = documented("# ");
    assert!(defaults.len() > 15, "too few default lines: {defaults:?}");
    let doc = uncommented(&defaults);
    let c = Config::parse("uncommented defaults", &doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    assert_eq!(c, Config::default(), "uncommented:\n{doc}");
}

#[test]
fn every_example_value_is_valid_and_not_the_default() {
    let examples = documented("# Example: ");
    assert!(!examples.is_empty());
    for one in &examples {
        let doc = uncommented(std::slice::from_ref(one));
        let c = Config::parse("example", &doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        assert_ne!(c, Config::default(), "{doc}");
    }
}

#[test]
fn every_key_the_parser_knows_is_documented() {
    let sections = known_from_error("[no_such_section]\nx = 1\n");
    assert!(sections.contains("metadata"), "{sections:?}");
    let mut documented_keys: BTreeSet<(String, String)> = BTreeSet::new();
    for (s, k, _) in documented("# ")
        .into_iter()
        .chain(documented("# Example: "))
    {
        documented_keys.insert((s, k));
    }
    let mut known_keys = BTreeSet::new();
    for s in &sections {
        for k in known_from_error(&format!("[{s}]\nno_such_key = 1\n")) {
            known_keys.insert((s.clone(), k));
        }
    }
    let missing: Vec<_> = known_keys.difference(&documented_keys).collect();
    let extra: Vec<_> = documented_keys.difference(&known_keys).collect();
    assert!(
        missing.is_empty(),
        "keys missing from systemd/config.toml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "unknown keys in systemd/config.toml: {extra:?}"
    );
}

#[test]
fn every_default_in_the_example_is_the_declared_one() {
    let shown: BTreeMap<String, String> = documented("# ")
        .into_iter()
        .map(|(s, k, line)| {
            let value = line.split_once(" = ").map(|(_, v)| v.to_owned());
            (format!("[{s}] {k}"), value.unwrap_or_default())
        })
        .collect();
    let examples: BTreeSet<String> = documented("# Example: ")
        .into_iter()
        .map(|(s, k, _)| format!("[{s}] {k}"))
        .collect();
    for row in Config::reference() {
        match &row.default {
            Some(default) => assert_eq!(
                shown.get(&row.key),
                Some(default),
                "systemd/config.toml must show `# {} = {default}`",
                row.key
            ),
            None => assert!(
                examples.contains(&row.key),
                "systemd/config.toml must show an `# Example:` line for {} (unset by default)",
                row.key
            ),
        }
    }
}

/// The README's configuration table as the declarations give it.
fn reference_table() -> String {
    let mut out = String::from("| key | default | on `SIGHUP` | meaning |\n|---|---|---|---|\n");
    for row in Config::reference() {
        let default = row
            .default
            .map_or_else(|| "unset".to_owned(), |d| format!("`{d}`"));
        let reload = match row.reload {
            Reload::Live => "applied",
            Reload::Restart => "restart",
        };
        out.push_str(&format!(
            "| `{}` | {default} | {reload} | {} |\n",
            row.key, row.doc
        ));
    }
    out
}

#[test]
fn the_readme_table_is_the_declarations_reference() {
    const BEGIN: &str = "<!-- configuration-reference: begin -->\n";
    const END: &str = "<!-- configuration-reference: end -->";
    let start = README.find(BEGIN).expect("README marker") + BEGIN.len();
    let end = README[start..].find(END).expect("README end marker") + start;
    let expected = reference_table();
    assert!(
        README[start..end] == expected,
        "README.md's configuration table differs from the key declarations; replace it with:\n{expected}"
    );
}
