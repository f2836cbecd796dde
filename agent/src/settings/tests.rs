use std::time::Duration;

use super::*;

section! {
    /// A section with one key of every codec.
    pub(crate) struct Demo["demo"] {
        /// a duration in seconds
        wait: Duration = Duration::from_secs(5), "wait_secs", Secs(1, 60), Restart;
        /// a duration in milliseconds
        pause: Duration = Duration::from_millis(250), "pause_ms", Millis(0, 1_000), Live;
        /// a count
        limit: usize = 8, "limit", Count(1, 100), Live;
        /// a flag
        on: bool = false, "on", Flag, Restart;
        /// some ids
        ids: Vec<u32> = vec![0], "ids", Ids, Live;
        /// a checked text
        name: Option<String> = None, "name",
            Optional(Text { parse: lower, print: String::clone }), Restart;
    }
    check = pause_below_wait;
}

fn lower(s: &str) -> Result<String, String> {
    if s.chars().all(|c| c.is_ascii_lowercase()) && !s.is_empty() {
        Ok(s.to_owned())
    } else {
        Err(format!("expected lowercase letters, got {s:?}"))
    }
}

fn pause_below_wait(d: &Demo) -> Vec<(&'static str, String)> {
    if d.pause >= d.wait {
        vec![("pause_ms", "must be less than wait_secs".to_owned())]
    } else {
        Vec::new()
    }
}

fn table(text: &str) -> toml::Table {
    text.parse().unwrap()
}

#[test]
fn every_codec_reads_its_key() {
    let mut d = Demo::default();
    let problems = read(
        &mut d,
        &table("wait_secs = 9\npause_ms = 10\nlimit = 3\non = true\nids = [1, 2]\nname = \"x\"\n"),
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        d,
        Demo {
            wait: Duration::from_secs(9),
            pause: Duration::from_millis(10),
            limit: 3,
            on: true,
            ids: vec![1, 2],
            name: Some("x".to_owned()),
        }
    );
}

#[test]
fn every_bad_value_is_named_with_what_was_expected() {
    let mut d = Demo::default();
    let problems = read(
        &mut d,
        &table("wait_secs = 0\npause_ms = \"x\"\nlimit = -1\non = 1\nids = [4294967295]\nname = \"X\"\nwiat_secs = 1\n"),
    );
    let expected = [
        "[demo] ids: expected ids from 0 to 4294967294, got 4294967295",
        "[demo] limit: expected an integer from 1 to 100, got -1",
        "[demo] name: expected lowercase letters, got \"X\"",
        "[demo] on: expected true or false, got 1",
        "[demo] pause_ms: expected an integer from 0 to 1000, got \"x\"",
        "[demo] wait_secs: expected an integer from 1 to 60, got 0",
        "[demo] wiat_secs: unknown key (known: wait_secs, pause_ms, limit, on, ids, name); did you mean \"wait_secs\"?",
    ];
    assert_eq!(problems, expected);
}

#[test]
fn cross_key_checks_run_after_the_keys() {
    let mut d = Demo::default();
    let problems = read(&mut d, &table("wait_secs = 1\npause_ms = 1000\n"));
    assert_eq!(
        problems,
        ["[demo] pause_ms: must be less than wait_secs".to_owned()]
    );
}

#[test]
fn a_rendered_section_reads_back_to_the_same_value() {
    let mut d = Demo::default();
    assert!(read(&mut d, &table("ids = []\nname = \"abc\"\npause_ms = 0\n")).is_empty());
    let text = render(&d);
    let rendered = table(&text);
    let mut again = Demo::default();
    let problems = read(&mut again, rendered["demo"].as_table().unwrap());
    assert!(problems.is_empty(), "{problems:?}\n{text}");
    assert_eq!(again, d, "{text}");
    assert!(
        !render(&Demo::default()).contains("name ="),
        "unset keys are left out"
    );
}

#[test]
fn only_restart_keys_are_kept_on_reload() {
    let old = Demo::default();
    let mut new = Demo {
        wait: Duration::from_secs(30),
        limit: 50,
        name: Some("new".to_owned()),
        ..Demo::default()
    };
    let changed = keep_restart_keys(&old, &mut new);
    assert_eq!(changed, ["[demo] wait_secs", "[demo] name"]);
    assert_eq!(new.wait, old.wait);
    assert_eq!(new.name, None);
    assert_eq!(new.limit, 50, "a live key keeps its new value");
}

#[test]
fn flags_are_read_by_the_same_declaration() {
    let mut d = Demo::default();
    set_from_flag(&mut d, "limit", "--limit", toml::Value::Integer(7)).unwrap();
    assert_eq!(d.limit, 7);
    let e = set_from_flag(&mut d, "limit", "--limit", toml::Value::Integer(0)).unwrap_err();
    assert_eq!(
        e,
        "[demo] limit (--limit): expected an integer from 1 to 100, got 0"
    );
}

#[test]
fn reference_rows_give_defaults_reload_and_docs() {
    let rows = reference::<Demo>();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0].key, "[demo] wait_secs");
    assert_eq!(rows[0].default.as_deref(), Some("5"));
    assert_eq!(rows[0].reload, Reload::Restart);
    assert_eq!(rows[0].doc, "a duration in seconds");
    assert_eq!(rows[4].default.as_deref(), Some("[0]"));
    assert_eq!(rows[5].default, None);
}

#[test]
fn integer_keys_report_their_bounds() {
    let values = bounded_values(&Demo::default());
    assert_eq!(
        values,
        [
            ("[demo] wait_secs".to_owned(), 5, 1, 60),
            ("[demo] pause_ms".to_owned(), 250, 0, 1_000),
            ("[demo] limit".to_owned(), 8, 1, 100),
        ]
    );
}

#[test]
fn suggestions_only_for_close_names() {
    assert_eq!(
        did_you_mean("socket_pth", &["socket_path", "socket_mode"]),
        "; did you mean \"socket_path\"?"
    );
    assert_eq!(did_you_mean("colour", &["endpoint", "role_name"]), "");
}
