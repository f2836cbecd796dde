//! `parse_role_name` and `parse_token`: never panic; an accepted role name is a plausible RAM
//! role name taken from the body, an accepted token is header-safe; errors are one line and never
//! quote a token, even a rejected one.
#![no_main]

use ecs_credential_agent::sources::metadata::response::{check_role_name, parse_role_name, parse_token};
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

/// Planted in front of every token body: must never appear in an error.
const MARKER: &[u8] = b"TOKENMARKERq7Zx";

fuzz_target!(|body: &[u8]| {
    match parse_role_name(body) {
        Ok(name) => {
            assert!(check_role_name(&name).is_ok());
            assert!(!name.is_empty() && name.chars().count() <= 64);
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            assert!(name != "." && name != "..");
            let text = std::str::from_utf8(body).unwrap();
            assert!(text.lines().any(|l| l.trim() == name));
        }
        Err(e) => assert_one_line(&e.to_string()),
    }
    for planted in [false, true] {
        let mut input = Vec::with_capacity(body.len() + MARKER.len());
        if planted {
            input.extend_from_slice(MARKER);
        }
        input.extend_from_slice(body);
        match parse_token(&input) {
            Ok(token) => {
                let t = token.expose_secret();
                assert_eq!(t.as_bytes(), input.trim_ascii());
                assert!(http::HeaderValue::from_str(t).is_ok());
            }
            Err(e) => {
                let msg = e.to_string();
                assert_one_line(&msg);
                let dbg = format!("{e:?}");
                if planted {
                    let m = std::str::from_utf8(MARKER).unwrap();
                    assert!(
                        !msg.contains(m) && !dbg.contains(m),
                        "token in error: {msg}"
                    );
                }
            }
        }
    }
});

fn assert_one_line(msg: &str) {
    assert!(!msg.chars().any(char::is_control), "{msg:?}");
}
