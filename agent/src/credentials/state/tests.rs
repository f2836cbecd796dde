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
