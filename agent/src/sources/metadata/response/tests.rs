//! Tests of [`super`]: response parsing and validation.

use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use time::macros::datetime;

use super::*;
use crate::credentials::format_utc;

const PATH: &str = "/latest/meta-data/ram/security-credentials/EcsRole";
const SECRET: &str = "MARKER-SECRET-abc123";
const TOKEN: &str = "MARKER-STS-TOKEN-xyz789";

/// 2024-11-08T04:00:00Z: between the sample's LastUpdated and Expiration.
fn now() -> SystemTime {
    SystemTime::from(datetime!(2024-11-08 04:00:00 UTC))
}

fn body_with(field: &str, value: Option<serde_json::Value>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "AccessKeyId": "STS.NTexample",
        "AccessKeySecret": SECRET,
        "Expiration": "2024-11-08T09:44:50Z",
        "SecurityToken": TOKEN,
        "LastUpdated": "2024-11-08T03:44:50Z",
        "Code": "Success"
    });
    match value {
        Some(x) => v[field] = x,
        None => {
            v.as_object_mut().unwrap().remove(field);
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn valid_body() -> Vec<u8> {
    body_with("Code", Some("Success".into()))
}

fn parse_err(body: &[u8]) -> String {
    let err = parse_credentials(body, now(), PATH).expect_err("should be rejected");
    let text = err.to_string();
    assert!(!text.contains(SECRET) && !text.contains(TOKEN), "{text}");
    text
}

#[test]
fn valid_documented_body_parses() {
    let c = parse_credentials(&valid_body(), now(), PATH).unwrap();
    assert_eq!(c.access_key_id, "STS.NTexample");
    assert_eq!(c.access_key_secret.expose_secret(), SECRET);
    assert_eq!(c.security_token.expose_secret(), TOKEN);
    assert_eq!(c.expiration, datetime!(2024-11-08 09:44:50 UTC));
    assert_eq!(c.last_updated, datetime!(2024-11-08 03:44:50 UTC));
    let debug = format!("{c:?}");
    assert!(!debug.contains(SECRET) && !debug.contains(TOKEN), "{debug}");
}

#[test]
fn escaped_secret_is_unescaped() {
    let body = body_with("AccessKeySecret", Some("a\\/b\"c".into()));
    let c = parse_credentials(&body, now(), PATH).unwrap();
    assert_eq!(c.access_key_secret.expose_secret(), "a\\/b\"c");
}

#[test]
fn unknown_fields_are_ignored() {
    let body = body_with("Extra", Some(serde_json::json!({"nested": [1, 2]})));
    assert!(parse_credentials(&body, now(), PATH).is_ok());
}

#[test]
fn malformed_json_is_invalid_without_quoting_input() {
    let body = format!("{{\"AccessKeySecret\": \"{SECRET}\", oops");
    let text = parse_err(body.as_bytes());
    assert!(text.contains("malformed JSON"), "{text}");
    assert!(parse_err(b"").contains("malformed JSON"));
    assert!(parse_err(b"[1,2]").contains("malformed JSON"));
    let top_level_secret = format!("\"{SECRET}\"");
    assert!(parse_err(top_level_secret.as_bytes()).contains("malformed JSON"));
}

#[test]
fn each_missing_field_is_named() {
    for field in [
        "Code",
        "AccessKeyId",
        "AccessKeySecret",
        "SecurityToken",
        "Expiration",
        "LastUpdated",
    ] {
        let text = parse_err(&body_with(field, None));
        assert!(
            text.contains(&format!("missing or null field {field}")),
            "{text}"
        );
        let text = parse_err(&body_with(field, Some(serde_json::Value::Null)));
        assert!(
            text.contains(&format!("missing or null field {field}")),
            "{text}"
        );
    }
}

#[test]
fn each_empty_field_is_named() {
    for field in [
        "Code",
        "AccessKeyId",
        "AccessKeySecret",
        "SecurityToken",
        "Expiration",
        "LastUpdated",
    ] {
        let text = parse_err(&body_with(field, Some("".into())));
        assert!(text.contains(&format!("empty field {field}")), "{text}");
    }
}

#[test]
fn each_non_string_field_is_named() {
    let wrong = [
        serde_json::json!(42),
        serde_json::json!(true),
        serde_json::json!([SECRET]),
        serde_json::json!({"v": SECRET}),
    ];
    for field in [
        "AccessKeyId",
        "AccessKeySecret",
        "SecurityToken",
        "Expiration",
    ] {
        for value in &wrong {
            let text = parse_err(&body_with(field, Some(value.clone())));
            assert!(text.contains(&format!("field {field} is ")), "{text}");
            assert!(text.contains("not a string"), "{text}");
        }
    }
}

#[test]
fn code_other_than_success_is_named() {
    let text = parse_err(&body_with("Code", Some("Failed".into())));
    assert!(text.contains("Code is \"Failed\""), "{text}");
    let text = parse_err(&body_with("Code", Some("success".into())));
    assert!(text.contains("Code is \"success\""), "{text}");
}

#[test]
fn access_key_id_with_control_character_is_invalid() {
    let text = parse_err(&body_with("AccessKeyId", Some("STS.a\nb".into())));
    assert!(text.contains("AccessKeyId has a non-printable"), "{text}");
}

#[test]
fn fractional_seconds_are_truncated_toward_the_past() {
    let body = body_with("Expiration", Some("2024-11-08T09:44:50.999999Z".into()));
    let c = parse_credentials(&body, now(), PATH).unwrap();
    assert_eq!(c.expiration, datetime!(2024-11-08 09:44:50 UTC));
    assert_eq!(format_utc(c.expiration), "2024-11-08T09:44:50Z");
}

#[test]
fn numeric_offset_is_converted_to_utc() {
    let body = body_with("Expiration", Some("2024-11-08T17:44:50.5+08:00".into()));
    let c = parse_credentials(&body, now(), PATH).unwrap();
    assert_eq!(format_utc(c.expiration), "2024-11-08T09:44:50Z");
    let body = body_with("LastUpdated", Some("2024-11-07T22:44:50-05:00".into()));
    let c = parse_credentials(&body, now(), PATH).unwrap();
    assert_eq!(c.last_updated, datetime!(2024-11-08 03:44:50 UTC));
}

#[test]
fn expiration_years_ahead_is_accepted() {
    let body = body_with("Expiration", Some("2099-12-31T23:59:59Z".into()));
    let c = parse_credentials(&body, now(), PATH).unwrap();
    assert_eq!(c.expiration.year(), 2099);
}

#[test]
fn past_expiration_is_expired_on_arrival() {
    let late = now() + Duration::from_secs(6 * 3600);
    let err = parse_credentials(&valid_body(), late, PATH).unwrap_err();
    assert!(
        matches!(&err, MetadataError::ExpiredOnArrival { expiration } if expiration == "2024-11-08T09:44:50Z"),
        "{err:?}"
    );
}

#[test]
fn expiration_equal_to_now_is_expired_on_arrival() {
    let at = SystemTime::from(datetime!(2024-11-08 09:44:50 UTC));
    let err = parse_credentials(&valid_body(), at, PATH).unwrap_err();
    assert!(
        matches!(err, MetadataError::ExpiredOnArrival { .. }),
        "{err:?}"
    );
    let just_before = at - Duration::from_secs(1);
    assert!(parse_credentials(&valid_body(), just_before, PATH).is_ok());
}

#[test]
fn expiration_not_after_last_updated_is_invalid() {
    for last in ["2024-11-08T09:44:50Z", "2024-11-08T10:00:00Z"] {
        let text = parse_err(&body_with("LastUpdated", Some(last.into())));
        assert!(text.contains("is not after LastUpdated"), "{text}");
    }
}

#[test]
fn bad_time_formats_are_rejected_naming_the_field() {
    for bad in [
        "2024-11-08 09:44:50",
        "2024-11-08T09:44:50",
        "2024-11-08",
        "1731059090",
        "Fri, 08 Nov 2024 09:44:50 GMT",
        "2024-13-08T09:44:50Z",
        "2024-11-08T09:44:50+0800",
        "garbage",
    ] {
        let text = parse_err(&body_with("Expiration", Some(bad.into())));
        assert!(text.contains("Expiration"), "{bad}: {text}");
        assert!(text.contains("not an RFC 3339 time"), "{bad}: {text}");
        let text = parse_err(&body_with("LastUpdated", Some(bad.into())));
        assert!(text.contains("LastUpdated"), "{bad}: {text}");
    }
}

/// Found by the `expiration` fuzz target: converting these to UTC leaves the years `time`
/// represents (a panic in the refresher) or the years `YYYY` can print.
#[test]
fn times_outside_years_0000_to_9999_in_utc_are_rejected_not_a_panic() {
    for (text, field) in [
        ("9999-12-31T23:59:59-01:00", "Expiration"),
        ("9999-12-31T23:30:00-00:31", "Expiration"),
        ("0000-01-01T00:00:00+01:00", "LastUpdated"),
        ("0000-01-01T00:59:59.999+01:00", "LastUpdated"),
    ] {
        let err = parse_time(text, field, PATH).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains("outside the years"),
            "{text}: {err}"
        );
        let msg = parse_err(&body_with(field, Some(text.into())));
        assert!(msg.contains("outside the years"), "{text}: {msg}");
    }
    // The edges themselves are fine and print as the documented shape.
    let last = parse_time("9999-12-31T23:59:59Z", "Expiration", PATH).unwrap();
    assert_eq!(format_utc(last), "9999-12-31T23:59:59Z");
    let first = parse_time("0000-01-01T01:00:00+01:00", "LastUpdated", PATH).unwrap();
    assert_eq!(format_utc(first), "0000-01-01T00:00:00Z");
}

#[test]
fn html_is_rejected_by_content_type_or_body() {
    let page = b"<html><head><title>404 - Not Found</title></head></html>";
    let err = reject_html(Some("text/html; charset=utf-8"), b"{}", "JSON").unwrap_err();
    assert!(
        err.to_string().contains("HTML page instead of JSON"),
        "{err}"
    );
    let err = reject_html(Some("application/json"), page, "JSON").unwrap_err();
    assert!(
        err.to_string().contains("HTML page instead of JSON"),
        "{err}"
    );
    let err = reject_html(None, b"\r\n  <!DOCTYPE html>", "JSON").unwrap_err();
    assert!(err.to_string().contains("HTML page"), "{err}");
    assert!(reject_html(Some("TEXT/HTML"), b"", "JSON").is_err());
    assert!(reject_html(Some("text/plain"), b"{}", "JSON").is_ok());
    assert!(reject_html(None, &valid_body(), "JSON").is_ok());
}

#[test]
fn body_cap_allows_exactly_the_cap_and_refuses_one_more() {
    let mut body = Vec::with_capacity(MAX_BODY_BYTES);
    append_capped(&mut body, &[b'a'; 60_000], PATH).unwrap();
    append_capped(&mut body, &[b'a'; MAX_BODY_BYTES - 60_000], PATH).unwrap();
    assert_eq!(body.len(), MAX_BODY_BYTES);
    let err = append_capped(&mut body, b"x", PATH).unwrap_err();
    assert!(
        err.to_string().contains("body larger than 65536 bytes"),
        "{err}"
    );
    assert_eq!(
        body.len(),
        MAX_BODY_BYTES,
        "a refused chunk is not appended"
    );
    assert_eq!(body.capacity(), MAX_BODY_BYTES, "never reallocated");
}

#[test]
fn role_name_is_first_non_empty_line_trimmed() {
    assert_eq!(parse_role_name(b"EcsRole").unwrap(), "EcsRole");
    assert_eq!(
        parse_role_name(b"\n  EcsRole \r\nOther\n").unwrap(),
        "EcsRole"
    );
    assert_eq!(parse_role_name(b"a.b-c_D9").unwrap(), "a.b-c_D9");
}

#[test]
fn empty_role_list_is_invalid() {
    for body in [&b""[..], b"\n", b"  \r\n \n"] {
        let err = parse_role_name(body).unwrap_err();
        assert!(err.to_string().contains("empty role list"), "{err}");
    }
}

#[test]
fn implausible_role_names_are_invalid() {
    let long = "r".repeat(65);
    for (name, expect) in [
        ("a/b", "contains '/'"),
        ("a b", "contains ' '"),
        ("a\u{7}b", "contains '\\u{7}'"),
        ("a?b", "contains '?'"),
        ("a%2fb", "contains '%'"),
        ("..", "path segment"),
        ("rôle", "contains 'ô'"),
        (long.as_str(), "longer than 64"),
    ] {
        // The configured name is quoted back to the operator who typed it ...
        let why = check_role_name(name).unwrap_err();
        assert!(why.contains(expect), "{name:?}: {why}");
        // ... but a discovered one came from the network: described, never quoted.
        // (The client reports it as MetadataError::NotMetadataService, see client tests.)
        let err = parse_role_name(name.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a role list that is not a single role name"),
            "{err}"
        );
        assert!(err.to_string().contains("is not a RAM role name"), "{err}");
    }
    assert!(check_role_name(&"r".repeat(64)).is_ok());
    assert!(parse_role_name(&[0xff, 0xfe]).is_err());
}

#[test]
fn a_credential_body_on_the_role_list_path_is_never_quoted() {
    let body = br#"{"AccessKeyId":"STS.x","AccessKeySecret":"MARKER-SECRET-1234567890"}"#;
    let err = parse_role_name(body).unwrap_err().to_string();
    assert!(!err.contains("MARKER"), "{err}");
    assert!(err.contains("characters"), "{err}");
}

#[test]
fn metadata_token_is_trimmed_and_checked() {
    let token = parse_token(b"AAEAAxyz-_=.\n").unwrap();
    assert_eq!(token.expose_secret(), "AAEAAxyz-_=.");
    let err = parse_token(b" \r\n").unwrap_err();
    assert!(err.to_string().contains("empty metadata token"), "{err}");
    let err = parse_token(b"MARKER tok\x01en").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("token_len 13") && !text.contains("MARKER"),
        "{text}"
    );
    assert!(parse_token("tök".as_bytes()).is_err());
}

#[test]
fn http_dates_parse_in_imf_fixdate_form_only() {
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
    );
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    assert_eq!(parse_http_date("1994-11-06T08:49:37Z"), None);
    assert_eq!(parse_http_date(""), None);
}

#[test]
fn a_leap_second_is_held_as_the_second_before_never_later() {
    // Found by fuzzing: RFC 3339 allows `:60`; the agent serves it one second early.
    for (text, served) in [
        ("9999-12-31T23:59:60Z", "9999-12-31T23:59:59Z"),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59Z"),
    ] {
        let t = parse_time(text, "Expiration", PATH).unwrap();
        assert_eq!(crate::credentials::format_utc(t), served);
    }
}

#[test]
fn metadata_token_over_the_cap_is_described_by_length() {
    let body = vec![b'A'; MAX_TOKEN_BYTES + 1];
    let err = parse_token(&body).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("a metadata token (token_len 1025) longer than {MAX_TOKEN_BYTES} bytes")
    );
    assert!(parse_token(&vec![b'A'; MAX_TOKEN_BYTES]).is_ok());
}

#[test]
fn answers_are_described_by_shape_never_content() {
    assert_eq!(
        describe_answer(200, Some("text/html; charset=utf-8"), 35),
        "HTTP 200 with Content-Type text/html, 35 bytes"
    );
    assert_eq!(
        describe_answer(200, None, 0),
        "HTTP 200 with no Content-Type, 0 bytes"
    );
    // A Content-Type is the peer's choice: anything but a plain media type is not repeated.
    for odd in [
        "MARKER \u{1b}[31m",
        "text/html\r\nX: y",
        "",
        &"a".repeat(65),
    ] {
        let text = describe_answer(200, Some(odd), 1);
        assert_eq!(
            text, "HTTP 200 with an unusual Content-Type, 1 byte",
            "{odd:?}"
        );
    }
}

#[test]
fn html_shape_names_what_was_expected() {
    let shape = reject_html(Some("text/html"), b"<p>MARKER</p>", "a metadata token").unwrap_err();
    assert_eq!(
        shape.to_string(),
        "an HTML page instead of a metadata token"
    );
}
