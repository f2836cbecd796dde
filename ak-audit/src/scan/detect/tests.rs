use super::*;
use crate::scan::key::fake::{ltai, token};

fn find(text: &str) -> Vec<Finding> {
    Detector::new().find(text.as_bytes(), SecretWindow::Lines(3))
}

fn ids(findings: &[Finding]) -> Vec<Option<String>> {
    findings
        .iter()
        .map(|f| f.access_key_id.as_ref().map(|id| id.full().to_owned()))
        .collect()
}

#[test]
fn id_with_secret_within_three_lines() {
    let (id, secret) = (ltai(10, 20), token(11, 30));
    let text = format!("# config\n\nkey = {id}\na\nb\nsecret = {secret}\n");
    let found = find(&text);
    assert_eq!(ids(&found), [Some(id)]);
    assert_eq!((found[0].line, found[0].column), (3, 7));
    assert_eq!(found[0].secret_line, Some(6));
}

#[test]
fn secret_four_lines_away_is_not_reported() {
    let (id, secret) = (ltai(12, 12), token(13, 30));
    let found = find(&format!("{id}\n1\n2\n3\n{secret}\n"));
    assert_eq!(found[0].secret_line, None);
    let found = find(&format!("{secret}\n1\n2\n{id}\n"));
    assert_eq!(found[0].secret_line, Some(1), "three lines before");
}

#[test]
fn same_line_secret_wins() {
    let (id, s1, s2) = (ltai(14, 20), token(15, 30), token(16, 30));
    let found = find(&format!("{s1}\n{id}:{s2}\n"));
    assert_eq!(found[0].secret_line, Some(2));
}

#[test]
fn placeholders_and_neighbours_are_not_findings() {
    let lt = ["LT", "AI"].concat();
    let text = format!(
        "{lt}xxxxxxxxxxxxxxxxxxxx\n{lt}****************\n{lt}XXXXXXXXXXXX\nx{}\n{}9\n",
        ltai(17, 20),
        ltai(18, 20)
    );
    assert_eq!(find(&text), []);
}

#[test]
fn well_known_names_catch_legacy_ids() {
    let legacy = token(20, 16);
    let secret = token(21, 30);
    for form in [
        format!("ALIBABA_CLOUD_ACCESS_KEY_ID={legacy}"),
        format!("export ALIBABA_CLOUD_ACCESS_KEY_ID=\"{legacy}\""),
        format!("  \"access_key_id\": \"{legacy}\","),
        format!("accessKeyId: {legacy}"),
        format!("access-key-id = '{legacy}'"),
        format!("aliyun.accessKeyId={legacy}"),
        format!("<AccessKeyId>{legacy}</AccessKeyId>"),
        format!("client.setAccessKeyId(\"{legacy}\");"),
        format!("aliyun configure --access-key-id {legacy}"),
    ] {
        let found = find(&format!("{form}\nAccessKeySecret = {secret}\n"));
        assert_eq!(ids(&found), [Some(legacy.clone())], "{form}");
        assert_eq!(found[0].secret_line, Some(2), "{form}");
        let column = form.find(&legacy).unwrap() as u64 + 1;
        assert_eq!(found[0].column, column, "{form}");
    }
}

#[test]
fn names_with_non_key_values_are_not_findings() {
    let aws = format!("AKIA{}", token(22, 16).to_uppercase());
    let text = format!(
        "accessKeyId: yourAccessKeyId\naws_access_key_id = {aws}\naccess_key_id = {}\n\
         ACCESS_KEY_ID=${{ALIBABA_CLOUD_ACCESS_KEY_ID}}\n",
        token(23, 17)
    );
    assert_eq!(find(&text), []);
}

#[test]
fn named_secret_alone_is_a_finding_without_id() {
    let secret = token(24, 30);
    let found = find(&format!("[default]\naccess_key_secret = {secret}\n"));
    assert_eq!(
        found,
        [Finding {
            line: 2,
            column: 21,
            access_key_id: None,
            secret_line: Some(2)
        }]
    );
}

#[test]
fn unnamed_secret_alone_is_not_a_finding() {
    assert_eq!(find(&format!("hash {}\n", token(25, 30))), []);
}

#[test]
fn ltai_id_assigned_to_a_name_is_reported_once() {
    let id = ltai(26, 20);
    let found = find(&format!("ALIBABA_CLOUD_ACCESS_KEY_ID={id}\n"));
    assert_eq!(ids(&found), [Some(id)]);
    assert_eq!(found[0].column, 29);
}

#[test]
fn environment_window_is_the_whole_buffer() {
    let (id, secret) = (ltai(27, 20), token(28, 30));
    let env = format!("ALIBABA_CLOUD_ACCESS_KEY_SECRET={secret}\nA=1\nB=2\nC=3\nD=4\nKEY={id}\n");
    let found = Detector::new().find(env.as_bytes(), SecretWindow::Anywhere);
    assert_eq!(ids(&found), [Some(id)]);
    assert_eq!(found[0].secret_line, Some(1));
}

#[test]
fn minified_line_with_many_ids() {
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!("{{\"k\":\"{}\"}},", ltai(100 + i, 20)));
    }
    let found = find(&text);
    assert_eq!(found.len(), 50);
    assert!(found.iter().all(|f| f.line == 1));
    assert_eq!(
        found[1].column,
        text.find(&ltai(101, 20)).unwrap() as u64 + 1
    );
}

#[test]
fn a_long_token_cut_by_the_search_window_is_not_a_secret() {
    // A 40-character mixed-case token on the id's line whose 31st character is the last byte
    // the search window reaches: cut there, it would be 30 characters long.
    let id = ltai(40, 20);
    let long = format!("{}{}", token(41, 30), token(42, 10));
    let gap = SECRET_SEARCH_BYTES - 30 - id.len();
    let text = format!("{id}{}{long}\n", " ".repeat(gap));
    let found = find(&text);
    assert_eq!(ids(&found), [Some(id.clone())]);
    assert_eq!(found[0].secret_line, None, "a cut token is no secret");
    // The same token, 30 characters long and within reach, is one.
    let text = format!("{id}{}{}\n", " ".repeat(gap), token(41, 30));
    assert_eq!(find(&text)[0].secret_line, Some(1));
    // And before the id: the window's lower cap falls 30 characters before the token's end.
    let text = format!("{long}{}{id}\n", " ".repeat(SECRET_SEARCH_BYTES - 30));
    assert_eq!(
        find(&text)[0].secret_line,
        None,
        "a cut token before the id is no secret"
    );
}

#[test]
fn many_ids_on_one_long_line_stay_linear() {
    // 4,000 ids spread over one 8 MB line (a minified file): each id's line used to be found by
    // searching the whole line, 4,000 × 8 MB; only the 64 KiB either side are read now.
    let gap = " ".repeat(2048);
    let mut text = String::with_capacity(4000 * (2048 + 20));
    for seed in 0..4000 {
        text.push_str(&ltai(seed, 16));
        text.push_str(&gap);
    }
    let started = std::time::Instant::now();
    let found = Detector::new().find(text.as_bytes(), SecretWindow::Lines(3));
    assert_eq!(found.len(), 4000);
    assert!(found.iter().all(|f| f.secret_line.is_none()));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
