//! `ecs-ak-audit actiontrail` end to end: every input shape with known answers, malformed
//! input of each kind, attribution, the formats, the Log Service round trip, exit statuses.
//!
//! Fixtures are generated here; the AccessKeyIds are random fakes made at test time.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

/// A random alphanumeric string of `n` characters (fresh at every run).
fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let state = RandomState::new();
    (0..n)
        .map(|i| {
            let mut h = state.build_hasher();
            h.write_usize(i);
            ALPHABET[(h.finish() % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// A fake current-style id (`LTAI` + 20).
fn ltai() -> String {
    format!("LTAI{}", random_alnum(20))
}

/// A fake prefix-less legacy id (16, starting with a digit so never `LTAI`/`STS.`).
fn legacy() -> String {
    format!("7{}", random_alnum(15))
}

#[derive(Clone)]
struct Ev {
    id: String,
    key: Option<String>,
    vpc: Option<&'static str>,
    ip: &'static str,
    time: &'static str,
    service: &'static str,
    name: &'static str,
    ua: &'static str,
    error: bool,
}

fn ev(id: &str, key: &str, vpc: Option<&'static str>, ip: &'static str) -> Ev {
    Ev {
        id: id.into(),
        key: Some(key.into()),
        vpc,
        ip,
        time: "2024-05-01T10:00:00Z",
        service: "Ecs",
        name: "DescribeInstances",
        ua: "aliyun-cli/3.0.200",
        error: false,
    }
}

impl Ev {
    fn at(mut self, time: &'static str) -> Self {
        self.time = time;
        self
    }
    fn api(mut self, service: &'static str, name: &'static str) -> Self {
        self.service = service;
        self.name = name;
        self
    }
    fn ua(mut self, ua: &'static str) -> Self {
        self.ua = ua;
        self
    }
    fn failed(mut self) -> Self {
        self.error = true;
        self
    }
    fn json(&self) -> Value {
        let mut identity = json!({"type": "ram-user", "principalId": "203", "accountId": "1234"});
        if let Some(k) = &self.key {
            identity["accessKeyId"] = json!(k);
        }
        let mut e = json!({
            "eventId": self.id, "eventVersion": 1, "eventSource": "ecs.aliyuncs.com",
            "sourceIpAddress": self.ip, "userAgent": self.ua, "eventRW": "Read",
            "eventType": "ApiCall", "userIdentity": identity, "serviceName": self.service,
            "eventTime": self.time, "acsRegion": "cn-hangzhou", "eventName": self.name,
            "requestParameters": {"RegionId": "cn-hangzhou", "Tags": [{"Key": "a", "Value": "]}\"["}]},
        });
        if let Some(v) = self.vpc {
            e["vpcId"] = json!(v);
        }
        if self.error {
            e["errorCode"] = json!("Forbidden.RAM");
        }
        e
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ecs-ak-audit"))
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = bin();
    cmd.arg("actiontrail").args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ecs-ak-audit");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn json_report(args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let out = run(&all, None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rows: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}); stderr: {stderr}"));
    (
        out.status.code().unwrap(),
        rows.as_array().unwrap().clone(),
        stderr,
    )
}

fn gz(parts: &[&[u8]]) -> Vec<u8> {
    // One gzip member per part, concatenated (as a multi-member .gz).
    let mut out = Vec::new();
    for p in parts {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(p).unwrap();
        out.extend(e.finish().unwrap());
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

fn lines(events: &[Ev]) -> Vec<u8> {
    events
        .iter()
        .map(|e| format!("{}\n", e.json()))
        .collect::<String>()
        .into_bytes()
}

fn find<'a>(rows: &'a [Value], key: &str, ip: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["AccessKeyId"] == key && r["SourceIp"] == ip)
        .unwrap_or_else(|| panic!("no row for {ip} in {rows:#?}"))
}

/// The same eight calls, written in every OSS shape, give the same known groups.
#[test]
fn oss_shapes_give_the_known_groups() {
    let (a, b) = (ltai(), legacy());
    let sts = format!("STS.{}", random_alnum(25));
    let mut console = ev("c1", "x", None, "1.2.3.4");
    console.key = None;
    let events = [
        ev("1", &a, Some("vpc-1"), "172.16.0.5").at("2024-05-01T10:00:00Z"),
        ev("2", &a, Some("vpc-1"), "172.16.0.5")
            .at("2024-05-03T10:00:00Z")
            .failed(),
        ev("3", &a, Some("vpc-1"), "172.16.0.5")
            .at("2024-05-02T10:00:00Z")
            .api("Oss", "GetObject")
            .ua("python"),
        ev("4", &a, None, "47.1.1.1"),
        ev("5", &b, None, "Internal"),
        ev("6", &sts, Some("vpc-1"), "172.16.0.5"),
        console,
    ];
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<Value> = events.iter().map(Ev::json).collect();
    let array = serde_json::to_vec_pretty(&values).unwrap();
    let records = serde_json::to_vec(&json!({"Records": values})).unwrap();
    let (first, rest) = events.split_at(3);
    let concatenated: String = values.iter().map(|v| format!("{v:#}")).collect();
    let one_per_line: Vec<String> = values.iter().map(Value::to_string).collect();
    let array_lines = format!("[{}]\n", one_per_line.join(",\n"));
    let files = [
        write(dir.path(), "array.gz", &gz(&[&array])),
        write(dir.path(), "array-lines.gz", &gz(&[array_lines.as_bytes()])),
        write(
            dir.path(),
            "lines-2-members.gz",
            &gz(&[&lines(first), &lines(rest)]),
        ),
        write(dir.path(), "concatenated.json", concatenated.as_bytes()),
        write(dir.path(), "records.json.gz", &gz(&[&records])),
    ];
    for f in &files {
        let (code, rows, stderr) = json_report(&[f]);
        assert_eq!(code, 1, "{f}: {stderr}");
        assert_eq!(stderr, "", "{f}");
        assert_eq!(rows.len(), 3, "{f}: {rows:#?}");
        let vpc = find(&rows, &a, "172.16.0.5");
        assert_eq!(vpc["KeyKind"], "ltai");
        assert_eq!(vpc["Endpoint"], "vpc");
        assert_eq!(vpc["VpcId"], "vpc-1");
        assert_eq!(
            (vpc["Calls"].as_u64(), vpc["Errors"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(vpc["FirstSeen"], "2024-05-01T10:00:00Z");
        assert_eq!(vpc["LastSeen"], "2024-05-03T10:00:00Z");
        assert_eq!(
            vpc["Apis"],
            json!([{"Service": "Ecs", "Event": "DescribeInstances", "Calls": 2},
                   {"Service": "Oss", "Event": "GetObject", "Calls": 1}])
        );
        assert_eq!(
            vpc["UserAgents"],
            json!([{"UserAgent": "aliyun-cli/3.0.200", "Calls": 2}, {"UserAgent": "python", "Calls": 1}])
        );
        assert_eq!(vpc["InstanceId"], Value::Null);
        let public = find(&rows, &a, "47.1.1.1");
        assert_eq!(
            (public["Endpoint"].as_str(), public["VpcId"].is_null()),
            (Some("public"), true)
        );
        let old = find(&rows, &b, "Internal");
        assert_eq!(
            (old["KeyKind"].as_str(), old["Endpoint"].as_str()),
            (Some("legacy"), Some("unknown"))
        );
    }
    // All five files at once, in parallel: five times the calls (no de-duplication for OSS).
    let args: Vec<&str> = files
        .iter()
        .map(String::as_str)
        .chain(["-j", "3"])
        .collect();
    let (_, rows, _) = json_report(&args);
    assert_eq!(find(&rows, &a, "172.16.0.5")["Calls"], 15);
}

/// Log Service dumps: JSON lines whose `event` is the event as a JSON string.
#[test]
fn log_service_dump_lines_are_parsed_twice() {
    let a = ltai();
    let dir = tempfile::tempdir().unwrap();
    let dump: String = [
        ev("1", &a, Some("vpc-9"), "10.0.0.7"),
        ev("2", &a, Some("vpc-9"), "10.0.0.7").failed(),
    ]
    .iter()
    .map(|e| {
        let line = json!({"__topic__": "actiontrail_audit_event", "__time__": "1714557600",
                          "__source__": "actiontrail", "event": e.json().to_string()});
        format!("{line}\n")
    })
    .collect();
    let f = write(dir.path(), "dump_0.json", dump.as_bytes());
    let (code, rows, stderr) = json_report(&[&f]);
    assert_eq!((code, stderr.as_str()), (1, ""));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0]["Calls"].as_u64(), rows[0]["Errors"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(rows[0]["VpcId"], "vpc-9");
}

/// `LookupEvents` pages overlap (the CLI pager ignores NextToken): events counted once by
/// `eventId`, across files, whether events are objects or JSON strings.
#[test]
fn lookup_events_pages_are_deduplicated_by_event_id() {
    let a = ltai();
    let dir = tempfile::tempdir().unwrap();
    let evs: Vec<Ev> = (0..5)
        .map(|i| ev(&format!("id-{i}"), &a, None, "47.0.0.1"))
        .collect();
    let page1 = json!({"EndTime": "x", "Events": evs[0..3].iter().map(Ev::json).collect::<Vec<_>>(),
                       "NextToken": "t", "RequestId": "r1", "StartTime": "y"});
    let as_strings: Vec<Value> = evs[2..5]
        .iter()
        .map(|e| json!(e.json().to_string()))
        .collect();
    let page2 = json!({"RequestId": "r2", "Events": as_strings});
    let f1 = write(
        dir.path(),
        "p1.json",
        serde_json::to_string_pretty(&page1).unwrap().as_bytes(),
    );
    let f2 = write(dir.path(), "p2.json", page2.to_string().as_bytes());
    let (code, rows, stderr) = json_report(&[&f1, &f2, &f1]);
    assert_eq!((code, stderr.as_str()), (1, ""));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["Calls"], 5);
}

/// Bad input is reported with file and line; the good records around it still count.
#[test]
fn malformed_input_is_reported_with_file_and_line_and_the_run_goes_on() {
    let a = ltai();
    let dir = tempfile::tempdir().unwrap();
    let good = ev("1", &a, None, "47.0.0.2");
    let mut missing_time = good.json();
    missing_time.as_object_mut().unwrap().remove("eventTime");
    let bad_lines = format!(
        "{}\nthis is not JSON\n{}\n{{\"eventTime\":\"2024-05-01T10:00:00Z\",\"eventName\":\n{}\n",
        good.json(),
        missing_time,
        good.json()
    );
    let lines_file = write(dir.path(), "bad-lines.json", bad_lines.as_bytes());
    let full = gz(&[&lines(&[good.clone(), good.clone(), good.clone()])]);
    let truncated = write(dir.path(), "truncated.gz", &full[..full.len() - 30]);
    let array = format!("[\n{},\n{}", good.json(), good.json());
    let cut_array = write(dir.path(), "cut-array.json", array.as_bytes());
    let huge = format!(
        "{}\n{{\"x\":\"{}\"}}\n{}\n",
        good.json(),
        "y".repeat(5 << 20),
        good.json()
    );
    let huge_file = write(dir.path(), "huge-line.json", huge.as_bytes());
    let (code, rows, stderr) = json_report(&[&lines_file, &truncated, &cut_array, &huge_file]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("bad-lines.json:2: not an ActionTrail event"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad-lines.json:3: event missing eventTime"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad-lines.json:4: not an ActionTrail event"),
        "{stderr}"
    );
    assert!(stderr.contains("truncated.gz:"), "{stderr}");
    assert!(
        stderr.contains("cut-array.json:3: input ends inside a JSON value"),
        "{stderr}"
    );
    assert!(
        stderr.contains("huge-line.json:2: value longer than 4 MiB: skipped"),
        "{stderr}"
    );
    assert!(!stderr.contains(&a), "no event content in errors: {stderr}");
    // 2 good lines + the gzip's complete lines before the cut (0 to 2: the three lines
    // compress to back-references) + the array's 2 complete elements + 2 around the huge line.
    let calls = rows[0]["Calls"].as_u64().unwrap();
    assert!((6..=8).contains(&calls), "{calls}: {stderr}");
    // One file, two threads: it decompresses on a thread of its own; the records before the
    // damage count as with one thread, and the damage shows.
    let many: Vec<Ev> = (0..300)
        .map(|i| ev(&format!("m{i}"), &a, None, "47.0.0.2"))
        .collect();
    let full = gz(&[&lines(&many)]);
    let cut = write(dir.path(), "cut.gz", &full[..full.len() - 30]);
    let (code1, rows1, stderr1) = json_report(&[&cut, "-j", "1"]);
    let (code2, rows2, stderr2) = json_report(&[&cut, "-j", "2"]);
    assert_eq!((code1, code2), (1, 1), "{stderr2}");
    assert_eq!(rows1, rows2);
    assert!(rows2[0]["Calls"].as_u64().unwrap() >= 250, "{rows2:?}");
    assert_eq!(stderr1, stderr2);
    assert!(stderr2.contains("cut.gz:"), "{stderr2}");
}

#[test]
fn exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let sts = format!("STS.{}", random_alnum(25));
    let only_sts = write(
        dir.path(),
        "sts.json",
        &lines(&[ev("1", &sts, None, "1.1.1.1")]),
    );
    let empty = write(dir.path(), "empty.json", b"");
    let garbage = write(dir.path(), "garbage.json", b"no events here\n");
    let missing = dir.path().join("missing.gz").to_str().unwrap().to_owned();
    let status = |args: &[&str]| run(args, None).status.code().unwrap();
    assert_eq!(status(&[&only_sts, &empty]), 0);
    assert_eq!(status(&[&missing]), 3);
    assert_eq!(status(&[&garbage, &missing]), 3);
    assert_eq!(status(&[&missing, &only_sts]), 0);
    assert_eq!(status(&[]), 2, "no FILE");
    assert_eq!(status(&[&only_sts, "--format", "xml"]), 2);
    assert_eq!(status(&[&only_sts, "--instances", &missing]), 2);
    assert_eq!(status(&["--sls-queries", &only_sts]), 2);
    let a = ltai();
    let one = lines(&[ev("1", &a, None, "1.1.1.1")]);
    let out = run(&["-"], Some(&gz(&[&one])));
    assert_eq!(out.status.code(), Some(1), "gzip on standard input");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&a));
}

/// `--instances` (two pages) and `--public-ips` attribute calls; instances come first in
/// the table and in JSON.
#[test]
fn attribution_and_ordering() {
    let a = ltai();
    let dir = tempfile::tempdir().unwrap();
    let mut events = vec![ev("1", &a, Some("vpc-1"), "172.16.0.5")];
    events.extend((0..5).map(|i| ev(&format!("u{i}"), &a, None, "203.0.113.9")));
    events.extend((0..3).map(|i| ev(&format!("n{i}"), &a, None, "39.0.0.9")));
    events.extend((0..2).map(|i| ev(&format!("e{i}"), &a, None, "8.8.4.4")));
    let f = write(dir.path(), "ev.json", &lines(&events));
    let page = |id: &str, name: &str, vpc: &str, ip: &str, eip: &str| {
        json!({"TotalCount": 2, "PageNumber": 1, "PageSize": 1, "Instances": {"Instance": [
            {"InstanceId": id, "InstanceName": name, "RegionId": "cn-hangzhou",
             "VpcAttributes": {"VpcId": vpc, "PrivateIpAddress": {"IpAddress": [ip]}},
             "PublicIpAddress": {"IpAddress": []}, "EipAddress": {"IpAddress": eip}}]}})
        .to_string()
    };
    let p1 = write(
        dir.path(),
        "p1.json",
        page("i-web", "web-1", "vpc-1", "172.16.0.5", "").as_bytes(),
    );
    let p2 = write(
        dir.path(),
        "p2.json",
        page("i-db", "", "vpc-2", "172.16.0.9", "8.8.4.4").as_bytes(),
    );
    let ips = write(dir.path(), "ips.txt", b"# our NAT gateway\n39.0.0.9\n");
    let (code, rows, _) = json_report(&[&f, "--public-ips", &ips, "--instances", &p1, &p2]);
    assert_eq!(code, 1);
    let order: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["SourceIp"].as_str().unwrap(),
                r["InstanceId"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("8.8.4.4", "i-db"),
            ("172.16.0.5", "i-web"),
            ("39.0.0.9", "-"),
            ("203.0.113.9", "-")
        ]
    );
    assert_eq!(rows[1]["InstanceName"], "web-1");
    assert_eq!(rows[0]["InstanceName"], Value::Null);
    let table = run(&[&f, "--public-ips", &ips, "--instances", &p1, &p2], None);
    let text = String::from_utf8(table.stdout).unwrap();
    let body: Vec<&str> = text.lines().collect();
    assert!(body[0].starts_with("FROM"), "{text}");
    assert!(body[1].starts_with("i-db"), "{text}");
    assert!(body[2].starts_with("i-web (web-1)"), "{text}");
    assert!(body[3].starts_with("own public address"), "{text}");
}

/// CSV has the JSON names as columns; reading it back with `--from-sls-results` gives the
/// same report (attribution redone from `--instances`).
#[test]
fn csv_and_the_log_service_round_trip() {
    let (a, b) = (ltai(), legacy());
    let dir = tempfile::tempdir().unwrap();
    let events = [
        ev("1", &a, Some("vpc-1"), "172.16.0.5").ua("ua, with \"quotes\""),
        ev("2", &a, Some("vpc-1"), "172.16.0.5")
            .api("Oss", "GetObject")
            .failed(),
        ev("3", &b, None, "47.0.0.3").at("2024-06-01T00:00:00Z"),
        ev("4", &b, None, "47.0.0.3").ua("AlibabaCloud (Linux; amd64) Python/3.9 Core/2.13"),
    ];
    let f = write(dir.path(), "ev.json", &lines(&events));
    let csv_out = run(&[&f, "--format", "csv"], None);
    assert_eq!(csv_out.status.code(), Some(1));
    let csv_text = String::from_utf8(csv_out.stdout).unwrap();
    let header = csv_text.lines().next().unwrap();
    assert_eq!(
        header,
        "AccessKeyId,KeyKind,Endpoint,VpcId,SourceIp,InstanceId,InstanceName,Calls,Errors,FirstSeen,LastSeen,Apis,UserAgents"
    );
    assert!(
        csv_text.contains("Ecs:DescribeInstances=1;Oss:GetObject=1"),
        "{csv_text}"
    );
    let results = write(dir.path(), "results.csv", csv_text.as_bytes());
    let (_, direct, _) = json_report(&[&f]);
    let (code, back, stderr) = json_report(&["--from-sls-results", &results]);
    assert_eq!((code, stderr.as_str()), (1, ""));
    assert_eq!(direct, back);
    let json_results = serde_json::to_vec(&direct).unwrap();
    let results_json = write(dir.path(), "results.json", &json_results);
    let (_, back_json, _) = json_report(&["--from-sls-results", &results_json]);
    assert_eq!(direct, back_json);
    // Raw events given as results by mistake: no usable row is an input error (exit 3), never
    // a false "no keys" (exit 0); an empty result is a real answer.
    let wrong = run(&["--from-sls-results", &f], None);
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(3), "{err}");
    assert!(err.contains("without --from-sls-results"), "{err}");
    let empty = write(dir.path(), "empty.json", b"[]");
    assert_eq!(
        run(&["--from-sls-results", &empty], None).status.code(),
        Some(0)
    );
}

#[test]
fn sls_queries_print_the_documented_and_aggregating_queries() {
    let out = run(&["--sls-queries"], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let queries: Vec<&str> = text.lines().filter(|l| l.starts_with("* |")).collect();
    assert_eq!(queries.len(), 4, "{text}");
    assert!(queries[0].ends_with(r#"LIKE 'LTA%' and "event.vpcId" LIKE 'vpc%'"#));
    assert!(queries[1].ends_with(r#"LIKE 'LTA%' and "event.vpcId" IS NULL"#));
    for q in &queries[2..] {
        for col in [
            "AccessKeyId",
            "KeyKind",
            "Endpoint",
            "VpcId",
            "SourceIp",
            "Calls",
            "Errors",
            "FirstSeen",
            "LastSeen",
            "Apis",
            "UserAgents",
        ] {
            assert!(q.contains(&format!("AS \"{col}\"")), "{col} in {q}");
        }
    }
}
