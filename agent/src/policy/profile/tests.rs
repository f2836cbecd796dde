//! `[[profile]]` parsing: valid tables, and every problem naming the profile and the key.

use super::*;

fn parse(text: &str) -> Result<Vec<Spec>, Vec<String>> {
    let table: toml::Table = text.parse().expect("valid TOML");
    parse_profiles(&table["profile"])
}

const ARN: &str = "acs:ram::123456789012:role/billing-app";

#[test]
fn a_full_profile_is_read_with_its_defaults() {
    let text = format!(
        r#"
[[profile]]
name = "billing"
match = {{ uid = 1001, user = "root", gid = 5, group = "root", unit = "/system.slice/billing.service", exe = "/usr/bin/billing", exe_sha256 = "{}" }}
role_arn = "{ARN}"
policy = '{{"Version":"1","Statement":[]}}'
duration_secs = 900

[[profile]]
name = "Ops_2"
match = {{ uid = 0 }}
role_arn = "acs:ram::1:role/ops.role@x"
"#,
        "aB".repeat(32)
    );
    let specs = parse(&text).unwrap();
    assert_eq!(specs.len(), 2);
    let s = &specs[0].selector;
    assert_eq!(s.uid, Some(1001));
    assert_eq!(s.user, Some(("root".to_owned(), 0)));
    assert_eq!(s.gid, Some(5));
    assert_eq!(s.group, Some(("root".to_owned(), 0)));
    assert_eq!(s.unit.as_deref(), Some("/system.slice/billing.service"));
    assert_eq!(
        s.exe.as_deref(),
        Some(std::path::Path::new("/usr/bin/billing"))
    );
    assert_eq!(s.exe_sha256, Some([0xab; 32]));
    assert!(s.reads_process());
    assert_eq!(specs[0].duration_secs, 900);
    assert_eq!(
        specs[0].policy.as_deref(),
        Some(r#"{"Version":"1","Statement":[]}"#)
    );
    assert_eq!(specs[1].duration_secs, DEFAULT_DURATION_SECS);
    assert_eq!(specs[1].policy, None);
    assert!(!specs[1].selector.reads_process());
    // Rendered and read back: the same profiles.
    let again: String = specs.iter().map(render).collect::<Vec<_>>().join("\n");
    assert_eq!(parse(&again).unwrap(), specs, "{again}");
}

#[test]
fn a_policy_file_is_read_when_the_profiles_are() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, "{\"Version\": \"1\"}\n").unwrap();
    let text = format!(
        "[[profile]]\nname = \"a\"\nmatch = {{ uid = 1 }}\nrole_arn = \"{ARN}\"\npolicy_file = \"{}\"\n",
        path.display()
    );
    let specs = parse(&text).unwrap();
    assert_eq!(specs[0].policy.as_deref(), Some("{\"Version\": \"1\"}"));
    assert_eq!(specs[0].policy_file.as_deref(), Some(path.as_path()));
    std::fs::write(&path, "not json").unwrap();
    let problems = parse(&text).unwrap_err();
    assert!(
        problems[0].starts_with("[[profile]] \"a\" policy_file: "),
        "{problems:?}"
    );
    assert!(problems[0].contains("not valid JSON"), "{problems:?}");
    std::fs::remove_file(&path).unwrap();
    let problems = parse(&text).unwrap_err();
    assert!(problems[0].contains("cannot read"), "{problems:?}");
}

/// Every problem is reported at once, each naming the profile (by name, else by position)
/// and the key.
#[test]
fn every_problem_names_the_profile_and_the_key() {
    let long = "x".repeat(42);
    let rows: &[(&str, &[&str])] = &[
        ("match = { uid = 1 }\nrole_arn = \"ARN\"", &["[[profile]] #1 name: required"]),
        (
            &format!("name = \"{long}\"\nmatch = {{ uid = 1 }}\nrole_arn = \"ARN\""),
            &["[[profile]] #1 name: expected 1 to 41 characters"],
        ),
        ("name = \"a b\"\nmatch = { uid = 1 }\nrole_arn = \"ARN\"", &["[[profile]] #1 name: "]),
        ("name = \"a\"\nrole_arn = \"ARN\"", &["[[profile]] \"a\" match: required"]),
        ("name = \"a\"\nmatch = {}\nrole_arn = \"ARN\"", &["[[profile]] \"a\" match: give at least one of"]),
        (
            "name = \"a\"\nmatch = { uid = -1, usr = \"x\" }\nrole_arn = \"ARN\"",
            &[
                "[[profile]] \"a\" match.uid: expected an integer",
                "[[profile]] \"a\" match.usr: unknown key",
                "did you mean \"user\"?",
            ],
        ),
        (
            "name = \"a\"\nmatch = { user = \"no-such-user-4242\", group = \"no-such-group-4242\" }\nrole_arn = \"ARN\"",
            &[
                "[[profile]] \"a\" match.user: no user named \"no-such-user-4242\"",
                "[[profile]] \"a\" match.group: no group named \"no-such-group-4242\"",
            ],
        ),
        (
            "name = \"a\"\nmatch = { unit = \"billing.service\" }\nrole_arn = \"ARN\"",
            &["[[profile]] \"a\" match.unit: expected the full cgroup path"],
        ),
        (
            "name = \"a\"\nmatch = { unit = \"/system.slice/../x\" }\nrole_arn = \"ARN\"",
            &["[[profile]] \"a\" match.unit: "],
        ),
        (
            "name = \"a\"\nmatch = { exe = \"billing\", exe_sha256 = \"abc\" }\nrole_arn = \"ARN\"",
            &[
                "[[profile]] \"a\" match.exe: expected an absolute path",
                "[[profile]] \"a\" match.exe_sha256: expected 64 hexadecimal digits",
            ],
        ),
        ("name = \"a\"\nmatch = { uid = 1 }", &["[[profile]] \"a\" role_arn: required"]),
        (
            "name = \"a\"\nmatch = { uid = 1 }\nrole_arn = \"acs:ram::12x:role/r\"",
            &["[[profile]] \"a\" role_arn: expected acs:ram::<account id>:role/<role name>"],
        ),
        (
            "name = \"a\"\nmatch = { uid = 1 }\nrole_arn = \"ARN\"\npolicy = \"{\"",
            &["[[profile]] \"a\" policy: not valid JSON"],
        ),
        (
            "name = \"a\"\nmatch = { uid = 1 }\nrole_arn = \"ARN\"\npolicy = \"\"",
            &["[[profile]] \"a\" policy: a session policy is 1 to 2048 characters, got 0"],
        ),
        (
            "name = \"a\"\nmatch = { uid = 1 }\nrole_arn = \"ARN\"\npolicy = \"{}\"\npolicy_file = \"/p\"",
            &["[[profile]] \"a\" policy: give policy or policy_file, not both"],
        ),
        (
            "name = \"a\"\nmatch = { uid = 1 }\nrole_arn = \"ARN\"\nduration_secs = 899",
            &["[[profile]] \"a\" duration_secs: expected an integer from 900 to 43200, got 899"],
        ),
        (
            "name = \"a\"\nmatch = { uid = 1 }\nrole_arn = \"ARN\"\nrole_ar = \"x\"",
            &["[[profile]] \"a\" role_ar: unknown key", "did you mean \"role_arn\"?"],
        ),
    ];
    for (body, wants) in rows {
        let text = format!(
            "[[profile]]\n{}\n",
            body.replace("\"ARN\"", &format!("\"{ARN}\""))
        );
        let problems = parse(&text).expect_err(&text).join("\n");
        for want in *wants {
            assert!(
                problems.contains(want),
                "{want:?} not in:\n{problems}\nfor:\n{text}"
            );
        }
    }
    // Several profiles: all problems at once, and a duplicate name.
    let text = format!(
        "[[profile]]\nname = \"a\"\nmatch = {{ uid = 1 }}\nrole_arn = \"{ARN}\"\n\
         [[profile]]\nname = \"a\"\nmatch = {{ uid = 2 }}\nrole_arn = \"{ARN}\"\n\
         [[profile]]\nname = \"c\"\nmatch = {{ uid = 3 }}\nrole_arn = \"x\"\nduration_secs = 1\n"
    );
    let problems = parse(&text).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("[[profile]] \"a\" name: another [[profile]] has this name"));
    assert!(problems[1].starts_with("[[profile]] \"c\" role_arn: "));
    assert!(problems[2].starts_with("[[profile]] \"c\" duration_secs: "));
}

#[test]
fn a_single_profile_table_is_refused_with_the_array_syntax() {
    let problems = crate::config::Config::parse("t", "[profile]\nname = \"a\"\n").unwrap_err();
    assert!(
        problems.problems[0].contains("write [[profile]]"),
        "{problems}"
    );
}

#[test]
fn the_longest_name_fits_the_role_session_name() {
    // `i-` and 20 characters, a dot, and the name: at most 64 characters.
    assert_eq!(22 + 1 + MAX_NAME_LEN, 64);
    assert!(check_name(&"n".repeat(MAX_NAME_LEN)).is_ok());
    assert!(check_name(&"n".repeat(MAX_NAME_LEN + 1)).is_err());
    assert!(check_name("").is_err());
}
