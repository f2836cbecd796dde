use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::server::config::{parse_mode, validate_socket_path};
use crate::sources::metadata::config::{Endpoint, RoleName};

fn validate_role_name(r: &str) -> Result<RoleName, String> {
    r.parse()
}

fn validate_endpoint(e: &str) -> Result<Endpoint, String> {
    e.parse()
}

#[test]
fn empty_document_gives_defaults() {
    assert_eq!(Config::parse("t", "").unwrap(), Config::default());
}

#[test]
fn every_key_is_read() {
    let text = r#"
        [metadata]
        endpoint = "http://127.0.0.1:8080/"
        role_name = "EcsRole-1"
        token_ttl_secs = 600
        connect_timeout_ms = 250
        read_timeout_ms = 300
        allow_imdsv1_fallback = true
        [server]
        socket_path = "/run/x/agent.sock"
        socket_mode = "0660"
        socket_group = "root"
        allowed_uids = [0, 1000]
        allowed_gids = [2000]
        max_connections = 10
        header_timeout_ms = 100
        idle_timeout_ms = 200
        first_credentials_wait_ms = 0
        shutdown_grace_ms = 50
        [credentials]
        expiry_margin_secs = 5
        backoff_initial_ms = 10
        backoff_max_secs = 2
        [log]
        level = "debug"
        format = "json"
        [systemd]
        ready_timeout_secs = 7
        [metrics]
        listen = "127.0.0.1:9464"
    "#;
    let c = Config::parse("t", text).unwrap();
    assert_eq!(&*c.metadata.endpoint, "http://127.0.0.1:8080");
    assert_eq!(c.metadata.role_name.as_deref(), Some("EcsRole-1"));
    assert_eq!(c.metadata.token_ttl, Duration::from_secs(600));
    assert_eq!(c.metadata.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.metadata.read_timeout, Duration::from_millis(300));
    assert!(c.metadata.allow_imdsv1_fallback);
    assert_eq!(c.server.socket_path, PathBuf::from("/run/x/agent.sock"));
    assert_eq!(c.server.socket_mode, 0o660);
    assert_eq!(c.server.socket_group.as_deref(), Some("root"));
    assert_eq!(c.server.allowed_uids, vec![0, 1000]);
    assert_eq!(c.server.allowed_gids, vec![2000]);
    assert_eq!(c.server.max_connections, 10);
    assert_eq!(c.server.header_timeout, Duration::from_millis(100));
    assert_eq!(c.server.idle_timeout, Duration::from_millis(200));
    assert_eq!(c.server.first_credentials_wait, Duration::ZERO);
    assert_eq!(c.server.shutdown_grace, Duration::from_millis(50));
    assert_eq!(c.credentials.expiry_margin, Duration::from_secs(5));
    assert_eq!(c.credentials.backoff_initial, Duration::from_millis(10));
    assert_eq!(c.credentials.backoff_max, Duration::from_secs(2));
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.systemd.ready_timeout, Duration::from_secs(7));
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
}

#[test]
fn metrics_listen_must_be_loopback() {
    let e = Config::parse("t", "[metrics]\nlisten = \"0.0.0.0:9464\"\n").unwrap_err();
    assert!(e.to_string().contains("must be a loopback address"), "{e}");
    let e = Config::parse("t", "[metrics]\nlisten = \"localhost\"\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("[metrics] listen: expected an address"),
        "{e}"
    );
}

#[test]
fn every_bad_key_is_reported_at_once() {
    let text = r#"
        [metadata]
        endpoint = "https://100.100.100.200"
        token_ttl_secs = 21601
        colour = "blue"
        [server]
        socket_mode = "0999"
        max_connections = "many"
        allowed_uids = [-1]
        [bogus]
        x = 1
        [log]
        format = "xml"
    "#;
    let e = Config::parse("cfg.toml", text).unwrap_err();
    let all = e.to_string();
    for needle in [
        "[metadata] endpoint: must start with http://",
        "[metadata] token_ttl_secs: expected an integer from 1 to 21600, got 21601",
        "[metadata] colour: unknown key",
        "[server] socket_mode: expected an octal permission string",
        "[server] max_connections: expected an integer from 1 to 1000000, got \"many\"",
        "[server] allowed_uids: expected ids from 0 to 4294967294, got -1",
        "[bogus]: unknown section",
        "[log] format: expected \"text\" or \"json\", got \"xml\"",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(e.problems.len(), 8, "{all}");
    assert!(all.starts_with("invalid configuration in cfg.toml"));
}

#[test]
fn socket_mode_takes_only_octal_digits() {
    assert_eq!(parse_mode("0660"), Ok(0o660));
    assert_eq!(parse_mode("600"), Ok(0o600));
    for bad in ["+777", "-1", "0x1ff", "", "0o", "1000", " 600"] {
        assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn toml_syntax_error_is_reported() {
    let e = Config::parse("t", "[log]\nlevel = \"info\"\n[server\nx=").unwrap_err();
    assert!(
        e.problems[0].starts_with("not valid TOML at line 3, column"),
        "{e}"
    );
}

#[test]
fn unknown_socket_group_is_a_configuration_error() {
    let e = Config::parse("t", "[server]\nsocket_group = \"no-such-group-x\"\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("[server] socket_group: no group named \"no-such-group-x\""),
        "{e}"
    );
    assert!(Config::parse("t", "[server]\nsocket_group = \"4242\"\n").is_ok());
}

#[test]
fn backoff_cap_below_initial_is_rejected() {
    let e = Config::parse(
        "t",
        "[credentials]\nbackoff_initial_ms = 5000\nbackoff_max_secs = 1\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("[credentials] backoff_max_secs"),
        "{e}"
    );
}

#[test]
fn role_name_endpoint_and_socket_path_rules() {
    assert!(validate_role_name("EcsRamRoleDemo").is_ok());
    assert!(validate_role_name("a/b").is_err());
    assert!(validate_role_name("").is_err());
    assert!(validate_role_name(&"r".repeat(65)).is_err());
    assert!(validate_endpoint("http://100.100.100.200").is_ok());
    assert!(validate_endpoint("http://127.0.0.1:1234/").is_ok());
    assert!(validate_endpoint("http://h/latest").is_err());
    assert!(validate_endpoint("100.100.100.200").is_err());
    assert!(validate_socket_path(std::path::Path::new("relative.sock")).is_err());
    let long = format!("/{}", "a".repeat(107));
    assert!(validate_socket_path(std::path::Path::new(&long)).is_err());
}

#[test]
fn overrides_win_and_are_validated() {
    let mut c = Config::default();
    let o = Overrides {
        endpoint: Some("http://127.0.0.1:9".into()),
        socket_path: Some(PathBuf::from("/tmp/a.sock")),
        ..Overrides::default()
    };
    c.apply(&o).unwrap();
    assert_eq!(&*c.metadata.endpoint, "http://127.0.0.1:9");
    assert_eq!(c.server.socket_path, PathBuf::from("/tmp/a.sock"));
    let bad = Overrides {
        role_name: Some("bad role".into()),
        ..Overrides::default()
    };
    assert!(c.apply(&bad).unwrap_err()[0].contains("role_name (--role-name)"));
}

#[test]
fn missing_explicit_file_is_an_error() {
    let e = Config::load(
        Some(std::path::Path::new("/nonexistent/cfg.toml")),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("cannot read the file"), "{e}");
}

/// Regression (issue 11, item 3): a word that is not a level was read as a target name and
/// silenced every line; from the file and from `--log-level` alike it is an error naming the
/// key and the levels.
#[test]
fn a_log_level_that_is_not_a_level_is_an_error() {
    let e = Config::parse("t", "[log]\nlevel = \"warning\"\n").unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert!(
        e.problems[0].starts_with("[log] level: \"warning\" is not a log level; expected one of trace, debug, info, warn, error, off"),
        "{e}"
    );
    let mut c = Config::default();
    let flag = Overrides {
        log_level: Some("verbose".into()),
        ..Overrides::default()
    };
    let problems = c.apply(&flag).unwrap_err();
    assert!(
        problems[0].starts_with("[log] level (--log-level): \"verbose\" is not a log level"),
        "{problems:?}"
    );
    let ok = Config::parse("t", "[log]\nlevel = \"hyper=warn,info\"\n").unwrap();
    assert_eq!(ok.log.level, "hyper=warn,info");
}

/// Regression (issue 11, item 10): `socket_mode = 600` said only "expected a string".
#[test]
fn a_bare_socket_mode_says_to_write_quoted_octal() {
    let e = Config::parse("t", "[server]\nsocket_mode = 600\n").unwrap_err();
    assert_eq!(
        e.problems,
        ["[server] socket_mode: expected a quoted octal string, got 600; write \"0600\" (with the quotes)"]
    );
    let e = Config::parse("t", "[server]\nsocket_mode = 660\n").unwrap_err();
    assert!(e.problems[0].contains("write \"0660\""), "{e}");
    let e = Config::parse("t", "[server]\nsocket_mode = 999\n").unwrap_err();
    assert!(
        e.problems[0].contains("expected an octal permission string"),
        "{e}"
    );
    let e = Config::parse("t", "[metadata]\nrole_name = 42\n").unwrap_err();
    assert!(
        e.problems[0].ends_with("expected a string, got 42; write it in quotes: \"42\""),
        "{e}"
    );
    let c = Config::parse("t", "[server]\nsocket_mode = \"0640\"\n").unwrap();
    assert_eq!(c.server.socket_mode, 0o640);
    assert_eq!(Config::parse("t", &c.to_toml()).unwrap(), c);
}

/// Regression (issue 11, item 10): a key above every section line said "expected a section";
/// it names the section the key is declared in.
#[test]
fn a_key_outside_its_section_names_the_section() {
    let e = Config::parse(
        "t",
        "endpoint = \"http://127.0.0.1:9\"\n[log]\nlevel = \"info\"\n",
    )
    .unwrap_err();
    assert_eq!(
        e.problems,
        // `[sts] endpoint` (issue 13) declares the name too: both are named, the first line kept.
        ["endpoint: a key outside its section; it belongs in [metadata] or [sts]: move it below the [metadata] line"]
    );
    let e = Config::parse("t", "max_connections = 5\nlevel = \"info\"\n").unwrap_err();
    assert!(
        e.problems
            .iter()
            .any(|p| p
                .contains("max_connections: a key outside its section; it belongs in [server]")),
        "{e}"
    );
    assert!(
        e.problems
            .iter()
            .any(|p| p.contains("level: a key outside its section; it belongs in [log]")),
        "{e}"
    );
    let e = Config::parse("t", "colour = 1\n").unwrap_err();
    assert!(
        e.problems[0].starts_with("colour: a key outside any section, and no section has it"),
        "{e}"
    );
}

#[test]
fn a_config_error_says_what_to_do_for_its_kind() {
    let err = |source: &str, problem: &str| ConfigError {
        source_name: source.to_owned(),
        problems: vec![problem.to_owned()],
    };
    let unreadable = err(
        "/nope.toml",
        "cannot read the file: No such file or directory",
    );
    assert!(unreadable.what_to_do().starts_with("check the file's path"));
    let flag = err(
        "--socket /tmp/a.sock",
        "/tmp is writable by group or others",
    );
    assert!(flag.what_to_do().starts_with("correct the flag named"));
    let key = err(
        "/etc/x.toml",
        "[server] max_connections: expected an integer",
    );
    assert!(key.what_to_do().starts_with("correct the keys named"));
}
