//! The check every served credential answer of the fault matrix goes through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;

use crate::agent::EXPIRY_MARGIN;

/// Tolerance of the margin check for clock reads on two sides of a socket.
pub const CLOCK_SLACK: Duration = Duration::from_millis(20);

/// Checks every `200` a suite sees: its `Expiration` is `YYYY-MM-DDTHH:MM:SSZ`, had not passed
/// when the answer arrived, and was more than [`EXPIRY_MARGIN`] (less [`CLOCK_SLACK`]) away
/// when the request was sent. Counts what it saw, so a suite can report it.
#[derive(Debug, Default)]
pub struct Checker {
    seen: AtomicU64,
    expired: AtomicU64,
}

impl Checker {
    /// Checks one served credential body, sent at `sent` and received at `received` (true
    /// wall-clock time).
    ///
    /// # Errors
    /// What is wrong with the served `Expiration`, in a sentence.
    pub fn check(
        &self,
        body: &serde_json::Value,
        sent: SystemTime,
        received: SystemTime,
    ) -> Result<(), String> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        let text = body["Expiration"].as_str().unwrap_or_default();
        let expiration = parse_served_time(text)
            .ok_or_else(|| format!("served Expiration {text:?} is not YYYY-MM-DDTHH:MM:SSZ"))?;
        let expiration = SystemTime::from(expiration);
        let inside_margin = expiration
            .duration_since(sent)
            .map_or(true, |left| left + CLOCK_SLACK < EXPIRY_MARGIN);
        if expiration <= received || inside_margin {
            self.expired.fetch_add(1, Ordering::Relaxed);
            let left = expiration
                .duration_since(sent)
                .map(|d| format!("{d:?} left"))
                .unwrap_or_else(|e| format!("expired {:?} before", e.duration()));
            return Err(format!(
                "served credentials with Expiration {text} ({left}, margin {EXPIRY_MARGIN:?})"
            ));
        }
        Ok(())
    }

    /// How many credential answers were checked.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// How many of them were expired or inside the margin.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` exactly, else `None`.
pub fn parse_served_time(text: &str) -> Option<OffsetDateTime> {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let t = time::PrimitiveDateTime::parse(text, format).ok()?;
    Some(t.assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(expiration: &str) -> serde_json::Value {
        serde_json::json!({ "Expiration": expiration })
    }

    fn served(t: SystemTime) -> String {
        ecs_credential_agent::credentials::format_utc(OffsetDateTime::from(t))
    }

    #[test]
    fn valid_credentials_pass_and_are_counted() {
        let c = Checker::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = served(now + Duration::from_secs(60));
        assert_eq!(c.check(&body(&later), now, now), Ok(()));
        assert_eq!((c.seen(), c.expired()), (1, 0));
    }

    #[test]
    fn expired_or_inside_the_margin_is_an_error_and_counted() {
        let c = Checker::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let past = served(now - Duration::from_secs(5));
        let e = c.check(&body(&past), now, now).unwrap_err();
        assert!(e.contains("expired 5s before"), "{e}");
        let inside = served(now + EXPIRY_MARGIN / 2);
        assert!(c.check(&body(&inside), now, now).is_err());
        assert_eq!((c.seen(), c.expired()), (2, 2));
    }

    #[test]
    fn other_time_formats_are_an_error() {
        let c = Checker::default();
        let now = SystemTime::now();
        for text in ["2099-01-01T00:00:00.5Z", "2099-01-01T00:00:00+00:00", ""] {
            let e = c.check(&body(text), now, now).unwrap_err();
            assert!(e.contains("is not YYYY-MM-DDTHH:MM:SSZ"), "{text}: {e}");
        }
        assert_eq!(c.expired(), 0);
    }
}
