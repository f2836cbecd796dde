//! `ecs-ak-audit scan` end to end, on fixtures generated at test time (fake keys, random per
//! run, never committed): findings and their positions, placeholders, binaries, symlinks,
//! `.gitignore`, the output formats, `--actiontrail`, `--processes`, exit statuses, and a planted
//! AccessKeySecret searched for in all output and never found.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ecs-ak-audit");
const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A random run of key characters (no two equal side by side; a lowercase letter, a digit and
/// an uppercase letter first).
fn random_token(len: usize) -> String {
    let mut hasher = RandomState::new().build_hasher();
    let mut out = vec![
        b"abcdefghjk"[len % 10],
        b"0123456789"[len % 7],
        b"ABCDEFGHJK"[len % 9],
    ];
    let mut i = 0u64;
    while out.len() < len {
        hasher.write_u64(i);
        i += 1;
        let c = CHARS[(hasher.finish() % CHARS.len() as u64) as usize];
        if out.last() != Some(&c) {
            out.push(c);
        }
    }
    String::from_utf8(out).unwrap()
}

fn ltai() -> String {
    format!("{}{}", ["LT", "AI"].concat(), random_token(20))
}

fn masked(id: &str) -> String {
    format!("{}…{}", &id[..4], &id[id.len() - 4..])
}

fn scan(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("scan")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ecs-ak-audit runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The generated tree and what was planted in it.
struct Fixture {
    dir: tempfile::TempDir,
    env_id: String,
    json_id: String,
    legacy_id: String,
    min_id: String,
    secret: String,
    binary_id: String,
    outside_id: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    fs::create_dir_all(root.join("app/.config")).unwrap();
    let f = Fixture {
        env_id: ltai(),
        json_id: format!("{}{}", ["LT", "AI"].concat(), random_token(12)),
        legacy_id: random_token(16),
        min_id: ltai(),
        secret: random_token(30),
        binary_id: ltai(),
        outside_id: ltai(),
        dir,
    };
    let lt = ["LT", "AI"].concat();
    let write = |p: &str, s: String| fs::write(root.join(p), s).unwrap();
    write(".gitignore", ".env\napp/\n*.json\n".into());
    write(
        ".env",
        format!(
            "# app\nALIBABA_CLOUD_ACCESS_KEY_ID={}\nALIBABA_CLOUD_ACCESS_KEY_SECRET={}\n",
            f.env_id, f.secret
        ),
    );
    write(
        "app/.config/config.json",
        format!(
            "{{\n  \"profiles\": [{{\n    \"mode\": \"AK\",\n    \"access_key_id\": \"{}\",\n    \"access_key_secret\": \"{}\"\n  }}]\n}}\n",
            f.json_id, f.secret
        ),
    );
    write(
        "app/credentials",
        format!(
            "[default]\ntype = access_key\naccess_key_id = {}\n",
            f.legacy_id
        ),
    );
    write(
        "app/bundle.min.js",
        format!("var a=1;{}var k=\"{}\",z=2;", "x".repeat(5000), f.min_id),
    );
    write(
        "app/docs.yaml",
        format!(
            "accessKeyId: {lt}xxxxxxxxxxxxxxxx\naccessKeySecret: {lt}****************\n\
             example: {lt}XXXXXXXXXXXXXXXXXXXX\nsecret: {}\n",
            "y".repeat(30)
        ),
    );
    let mut binary = format!("\x7fELF\0\0\0{}\n", f.binary_id).into_bytes();
    binary.extend_from_slice(&[0, 1, 2, 3]);
    fs::write(root.join("app/tool"), binary).unwrap();
    let outside = f.dir.path().join("outside.env");
    fs::write(&outside, format!("AK={}\n", f.outside_id)).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link.env")).unwrap();
    std::os::unix::fs::symlink(f.dir.path(), root.join("loop")).unwrap();
    let fifo = Command::new("mkfifo").arg(root.join("pipe")).status();
    assert!(fifo.is_ok_and(|s| s.success()), "mkfifo");
    f
}

impl Fixture {
    fn root(&self) -> String {
        self.dir.path().join("tree").to_string_lossy().into_owned()
    }
}

fn json_of(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(out)))
        .as_array()
        .expect("an array")
        .clone()
}

#[test]
fn finds_planted_keys_with_positions_in_json() {
    let f = fixture();
    let root = f.root();
    let out = scan(&["--format", "json", &root]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let found = json_of(&out);
    let row = |p: &str, line: u64, column: u64, id: &str, secret: Value| {
        serde_json::json!({"path": format!("{root}/{p}"), "line": line, "column": column,
            "AccessKeyId": masked(id), "SecretLine": secret})
    };
    let want = vec![
        row(".env", 2, 29, &f.env_id, 3.into()),
        row("app/.config/config.json", 4, 23, &f.json_id, 5.into()),
        row("app/bundle.min.js", 1, 5016, &f.min_id, Value::Null),
        row("app/credentials", 3, 17, &f.legacy_id, Value::Null),
    ];
    assert_eq!(found, want, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 binary"), "{stderr}");
    assert!(stderr.contains("2 symlinks"), "{stderr}");
}

#[test]
fn planted_secret_and_full_ids_never_printed() {
    let f = fixture();
    let root = f.root();
    let report = f.dir.path().join("report.json");
    fs::write(&report, format!("[{{\"AccessKeyId\":\"{}\"}}]", f.env_id)).unwrap();
    let report = report.to_string_lossy().into_owned();
    for args in [
        vec!["--format", "table"],
        vec!["--format", "json"],
        vec!["--format", "sarif"],
        vec!["--format", "json", "--show-ids"],
        vec!["--format", "sarif", "--show-ids", "--actiontrail", &report],
        vec!["--actiontrail", &report, "--show-ids"],
    ] {
        let mut all = args.clone();
        all.push(&root);
        let out = scan(&all);
        let printed = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {printed}");
        assert!(
            !printed.contains(&f.secret),
            "{args:?}: the secret was printed"
        );
        assert!(
            !printed.contains(&f.secret[..12]),
            "{args:?}: part of the secret"
        );
        let show = args.contains(&"--show-ids");
        for id in [&f.env_id, &f.json_id, &f.min_id] {
            assert_eq!(
                printed.contains(id.as_str()),
                show,
                "{args:?}: {id} {printed}"
            );
            assert!(printed.contains(&masked(id)) || show, "{args:?}: {printed}");
        }
        assert!(
            !printed.contains(&f.binary_id[4..]),
            "binary file scanned: {args:?}"
        );
        assert!(
            !printed.contains(&f.outside_id[4..20]),
            "symlink followed: {args:?}"
        );
    }
}

#[test]
fn actiontrail_report_marks_keys_used_from_ecs() {
    let f = fixture();
    let report = f.dir.path().join("report.json");
    let other = ltai();
    let body = format!(
        "[{{\"AccessKeyId\":\"{}\",\"KeyKind\":\"ltai\",\"Calls\":4}},{{\"AccessKeyId\":\"{other}\"}}]",
        f.json_id
    );
    fs::write(&report, body).unwrap();
    let out = scan(&[
        "--format",
        "json",
        "--actiontrail",
        &report.to_string_lossy(),
        &f.root(),
    ]);
    let used: Vec<(String, bool)> = json_of(&out)
        .iter()
        .map(|r| {
            let id = r["AccessKeyId"].as_str().unwrap().to_owned();
            (id, r["UsedFromEcs"].as_bool().unwrap())
        })
        .collect();
    let mut want = vec![
        (masked(&f.env_id), false),
        (masked(&f.json_id), true),
        (masked(&f.min_id), false),
        (masked(&f.legacy_id), false),
    ];
    let mut got = used.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let table = text(&scan(&[
        "--actiontrail",
        &report.to_string_lossy(),
        &f.root(),
    ]));
    assert!(table.contains("USED FROM ECS"), "{table}");
}

#[test]
fn sarif_is_2_1_0_with_locations() {
    let f = fixture();
    let out = scan(&["--format", "sarif", &f.root()]);
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let region = &results[0]["locations"][0]["physicalLocation"]["region"];
    assert_eq!(
        (region["startLine"].as_u64(), region["startColumn"].as_u64()),
        (Some(2), Some(29))
    );
    let uri = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        .as_str()
        .unwrap();
    assert!(
        uri.starts_with("file:///") && uri.ends_with("/tree/.env"),
        "{uri}"
    );
}

#[test]
fn table_lists_location_masked_id_and_secret_line() {
    let f = fixture();
    let out = scan(&[&f.root()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("/.env:2:29"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(&masked(&f.env_id)) && line.contains("line 3"),
        "{line}"
    );
}

#[test]
fn exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("clean.txt"),
        "nothing here: LTA, ltai, access_key\n",
    )
    .unwrap();
    let clean = dir.path().to_string_lossy().into_owned();
    let out = scan(&["--format", "json", &clean]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json_of(&out), Vec::<Value>::new());
    assert_eq!(scan(&[]).status.code(), Some(2), "no PATH");
    let missing = dir.path().join("missing").to_string_lossy().into_owned();
    assert_eq!(scan(&[&missing]).status.code(), Some(2), "missing PATH");
    assert_eq!(scan(&["--format", "xml", &clean]).status.code(), Some(2));
    let bad = dir.path().join("bad.json");
    fs::write(&bad, "{").unwrap();
    let out = scan(&["--actiontrail", &bad.to_string_lossy(), &clean]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn pseudo_file_systems_are_not_entered() {
    // Nothing else to read: exit 3, never a false all-clear (0).
    let out = scan(&["--format", "json", "/proc/self"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not scanned"), "{}", text(&out));
    assert!(
        text(&out).contains("nothing could be read"),
        "{}",
        text(&out)
    );
    // Beside a readable path, the refused one is reported and the scan is clean.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.txt"), "nothing here\n").unwrap();
    let out = scan(&["/proc/self", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn unreadable_files_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let locked = dir.path().join("locked.env");
    fs::write(&locked, format!("AK={}\n", ltai())).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let path = dir.path().to_string_lossy().into_owned();
    let out = if fs::read(&locked).is_ok() {
        // Root reads any file: run the scan as nobody (setpriv, util-linux).
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "scan",
                &path,
            ])
            .output();
        match out {
            Ok(out) if !String::from_utf8_lossy(&out.stderr).contains("setpriv:") => out,
            _ => return eprintln!("skipped: root, and cannot run the scan as nobody"),
        }
    } else {
        scan(&[&path])
    };
    let printed = text(&out);
    // The only file was unreadable: nothing was read, exit 3 (not a clean 0).
    assert_eq!(out.status.code(), Some(3), "{printed}");
    assert!(
        printed.contains("locked.env: Permission denied"),
        "{printed}"
    );
    assert!(printed.contains("1 unreadable"), "{printed}");
}

#[test]
fn processes_name_the_pid_holding_a_key() {
    let (id, secret) = (ltai(), random_token(30));
    /// Kills the child however the test ends.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Reaped(
        Command::new("sleep")
            .arg("600")
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", &id)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", &secret)
            .spawn()
            .expect("sleep runs"),
    );
    let pid = child.0.id();
    let out = scan(&["--processes", "--format", "json"]);
    drop(child);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains(&secret), "the secret was printed");
    assert!(!text(&out).contains(&id), "the id was printed whole");
    let found = json_of(&out);
    let mine: Vec<&Value> = found.iter().filter(|r| r["pid"] == pid).collect();
    assert_eq!(mine.len(), 1, "{found:?}");
    assert_eq!(mine[0]["AccessKeyId"], masked(&id));
    assert!(mine[0]["SecretLine"].is_u64(), "{:?}", mine[0]);
    let exe = mine[0]["exe"].as_str().unwrap_or_default();
    assert!(Path::new(exe).ends_with("sleep"), "{exe}");
    assert!(mine[0].get("path").is_none() && mine[0].get("unit").is_some());
}
