//! The `STATUS=` line: the agent's state in words, for `systemctl status`.
//!
//! The text changes only when something an operator cares about changes: the role, whether
//! credentials are served, the last error, and the time to `Expiration` in whole minutes (whole
//! hours and minutes above an hour), so re-sending it when it differs never spams the manager.

use tokio::time::Instant;

use crate::credentials::State;

/// Describes `state` at monotonic time `now`, in one line without secrets, for example
/// `serving role EcsRole, credentials expire in 5h 42m` or
/// `no credentials: metadata service unreachable since …: …`.
pub fn describe(state: &State, now: Instant) -> String {
    match state.credentials_at(now) {
        Ok(issued) => {
            let left = in_words(issued.seconds_left(now));
            let mut s = format!(
                "serving role {}, credentials expire in {left}",
                issued.role_name
            );
            if let Some(e) = &state.last_error {
                s.push_str(&format!(
                    " (refresh failing, serving cached credentials: {e})"
                ));
            }
            s
        }
        Err(reason) => format!("no credentials: {}", reason.message()),
    }
}

/// `secs` as `2h 05m`, `42m`, or `under 1m`.
fn in_words(secs: u64) -> String {
    let (h, m) = (secs / 3600, secs % 3600 / 60);
    match (h, m) {
        (0, 0) => "under 1m".to_owned(),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::credentials::Unavailable;
    use crate::test_support::{issued, SECRET, TOKEN};

    #[test]
    fn durations_in_words() {
        assert_eq!(in_words(59), "under 1m");
        assert_eq!(in_words(60), "1m");
        assert_eq!(in_words(3599), "59m");
        assert_eq!(in_words(3600 * 5 + 42 * 60 + 7), "5h 42m");
        assert_eq!(in_words(3600 + 5 * 60), "1h 05m");
    }

    #[tokio::test(start_paused = true)]
    async fn describes_serving_failing_and_unavailable_states() {
        let now = Instant::now();
        let mut state = State::default();
        assert_eq!(
            describe(&state, now),
            "no credentials: agent is starting: no credentials fetched yet"
        );
        state.credentials = Some(Arc::new(issued(
            1,
            "STS.test",
            Duration::from_secs(3 * 3600),
            Duration::from_secs(60),
        )));
        let s = describe(&state, now);
        assert_eq!(s, "serving role EcsRole, credentials expire in 3h 00m");
        state.last_error = Some("metadata service unreachable: refused".into());
        let s = describe(&state, now + Duration::from_secs(61));
        assert!(
            s.starts_with("serving role EcsRole, credentials expire in 2h 58m (refresh failing"),
            "{s}"
        );
        assert!(s.ends_with("refused)"), "{s}");
        assert!(!s.contains(SECRET) && !s.contains(TOKEN), "{s}");
        state.credentials = None;
        state.reason = Unavailable::RoleNotAttached { role_name: None };
        assert!(describe(&state, now).starts_with("no credentials: no RAM role attached"));
    }
}
