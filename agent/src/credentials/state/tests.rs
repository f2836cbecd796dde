//! Tests of [`super`]: what the published state serves, and how early requests wait.

use super::*;

const WAIT: Duration = Duration::from_secs(5);

/// A state channel whose fetches have been failing since now, before any success.
fn failing_since_now() -> (watch::Sender<State>, StateReceiver) {
    watch::channel(State {
        failing_since_instant: Some(Instant::now()),
        reason: Unavailable::MetadataUnreachable {
            since: SystemTime::UNIX_EPOCH,
            error: "refused".into(),
        },
        ..State::default()
    })
}

#[tokio::test(start_paused = true)]
async fn waits_while_starting_then_answers_starting() {
    let (_tx, mut rx) = watch::channel(State::default());
    let t0 = Instant::now();
    assert_eq!(
        wait_for_credentials(&mut rx, WAIT).await.unwrap_err(),
        Unavailable::Starting
    );
    assert_eq!(t0.elapsed(), WAIT);
}

#[tokio::test(start_paused = true)]
async fn a_young_failure_at_start_up_is_waited_out() {
    let (_tx, mut rx) = failing_since_now();
    let t0 = Instant::now();
    let err = wait_for_credentials(&mut rx, WAIT).await.unwrap_err();
    assert!(matches!(err, Unavailable::MetadataUnreachable { .. }));
    assert_eq!(t0.elapsed(), WAIT, "a start-up blip is waited out");
}

#[tokio::test(start_paused = true)]
async fn a_long_failure_answers_at_once_with_its_reason() {
    let (_tx, mut rx) = failing_since_now();
    tokio::time::advance(WAIT).await;
    let t0 = Instant::now();
    let err = wait_for_credentials(&mut rx, WAIT).await.unwrap_err();
    assert!(matches!(err, Unavailable::MetadataUnreachable { .. }));
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "no wait once failing longer than WAIT"
    );
}

#[tokio::test(start_paused = true)]
async fn role_not_attached_answers_at_once() {
    let (tx, mut rx) = watch::channel(State::default());
    tx.send_modify(|s| s.reason = Unavailable::RoleNotAttached { role_name: None });
    let t0 = Instant::now();
    let err = wait_for_credentials(&mut rx, WAIT).await.unwrap_err();
    assert_eq!(err, Unavailable::RoleNotAttached { role_name: None });
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

/// Credentials of `lifetime` from `received_at`, issued at monotonic `now` with `margin`.
fn issued(received_at: SystemTime, now: Instant, lifetime: Duration, margin: Duration) -> Issued {
    let credentials = Credentials {
        access_key_id: "STS.id".to_owned(),
        access_key_secret: "secret".to_owned().into(),
        security_token: "token".to_owned().into(),
        expiration: OffsetDateTime::from(received_at + lifetime),
        last_updated: OffsetDateTime::from(received_at),
    };
    Issued::new(1, "role".to_owned(), &credentials, received_at, now, margin).unwrap()
}

/// Regression (issue 11, item 14): inside the margin the `503` said "credentials expired"
/// while about `expiry_margin_secs` were left before `Expiration`.
#[tokio::test(start_paused = true)]
async fn refresh_failing_says_whether_the_credentials_have_expired() {
    const MARGIN: Duration = Duration::from_secs(60);
    let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let c = Arc::new(issued(received, Instant::now(), 3_600 * SEC, MARGIN));
    let state = State {
        credentials: Some(Arc::clone(&c)),
        last_success: Some(received),
        last_error: Some("metadata service unavailable: HTTP 500".to_owned()),
        ..State::default()
    };
    let expiration = crate::credentials::format_utc(c.expiration);
    let at_margin = state.credentials_at(c.serve_until).unwrap_err();
    assert_eq!(
        at_margin.message(),
        format!(
            "credentials are within the expiry margin (Expiration {expiration}, in 60 s; not \
             served in the last 60 s before it) and refresh is failing: metadata service \
             unavailable: HTTP 500"
        )
    );
    let later = state.credentials_at(c.expires_at - 15 * SEC).unwrap_err();
    assert!(
        later.message().contains(", in 15 s;"),
        "{}",
        later.message()
    );
    let past = state.credentials_at(c.expires_at + 12 * SEC).unwrap_err();
    assert_eq!(
        past.message(),
        format!(
            "credentials expired at {expiration} (12 s ago) and refresh is failing: metadata \
             service unavailable: HTTP 500"
        )
    );

    // Dropped by the refresher at the margin, the reason still follows the clock.
    let dropped = State {
        credentials: None,
        reason: Unavailable::ExpiredRefreshFailing {
            error: None,
            expiry: NearExpiry::of(&c, c.serve_until),
        },
        ..state.clone()
    };
    let then = dropped.credentials_at(c.expires_at + 90 * SEC).unwrap_err();
    assert_eq!(
        then.message(),
        format!("credentials expired at {expiration} (90 s ago) and refresh is failing")
    );
}

const SEC: Duration = Duration::from_secs(1);
