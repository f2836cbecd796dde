//! `parse_time` (the `Expiration` / `LastUpdated` parser): never panics; what it accepts prints
//! back as `YYYY-MM-DDTHH:MM:SSZ`, re-parses to the same instant, and is the input truncated
//! toward the past to whole seconds (a leap second `:60` becomes `:59`); errors name the field.
#![no_main]

use ecs_credential_agent::credentials::format_utc;
use ecs_credential_agent::sources::metadata::response::parse_time;
use libfuzzer_sys::fuzz_target;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fuzz_target!(|text: &str| {
    match parse_time(text, "Expiration", "/p") {
        Ok(t) => {
            assert_eq!(t.offset(), time::UtcOffset::UTC);
            assert_eq!(t.nanosecond(), 0);
            let shown = format_utc(t);
            assert!(is_documented_shape(&shown), "{text:?} printed as {shown:?}");
            assert_eq!(parse_time(&shown, "Expiration", "/p").unwrap(), t);
            // Truncated toward the past, by less than a second.
            let exact = OffsetDateTime::parse(text, &Rfc3339).unwrap();
            assert!(t <= exact && exact - t < time::Duration::SECOND, "{text:?}");
            if is_documented_shape(text) {
                // A leap second (`:60`) is held as the last instant of `:59` (the `time`
                // crate's reading), so it prints one second earlier: never later than sent.
                match text.get(17..19) {
                    Some("60") => assert_eq!(shown, format!("{}59Z", &text[..17])),
                    _ => assert_eq!(shown, text),
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("Expiration"), "{msg}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }
});

/// `YYYY-MM-DDTHH:MM:SSZ`, digits where digits belong.
fn is_documented_shape(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}
