//! Refresher tests on paused tokio time, through a scripted in-memory fake source and a wall
//! clock that follows tokio's clock.

mod support;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Refresher, HEARTBEAT_INTERVAL};
use crate::credentials::state::{wait_for_credentials, Issued, Unavailable};
use crate::credentials::RefreshPolicy;
use crate::time::TimeSource;
use support::*;

#[tokio::test(start_paused = true)]
async fn first_fetch_publishes_credentials() {
    let clock = TestClock::new();
    let script = Scripted::new(&clock, rotating(6 * HOUR));
    let refresher = start(&clock, &script, || 0.0);
    let mut rx = refresher.subscribe();
    assert_eq!(rx.borrow().reason, Unavailable::Starting);
    assert!(rx.borrow().credentials.is_none());

    let issued = wait_for_credentials(&mut rx, 5 * SEC).await.unwrap();
    let now = Instant::now();
    assert_eq!(issued.generation, 1);
    assert_eq!(issued.role_name, ROLE);
    assert_eq!(issued.access_key_id, "STS.gen0");
    assert_eq!(issued.expires_at - now, 6 * HOUR);
    assert_eq!(issued.expires_at - issued.serve_until, MIN);
    let body: serde_json::Value = serde_json::from_slice(&issued.body).unwrap();
    assert_eq!(body["Code"], "Success");
    assert_eq!(body["AccessKeySecret"], "secret-of-STS.gen0");
    let state = rx.borrow().clone();
    assert_eq!(state.last_success, Some(clock.now()));
    assert_eq!((state.last_error, state.failing_since), (None, None));
    assert_eq!(state.clock_skew_secs, Some(0));
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn refreshes_after_two_thirds_of_lifetime_and_publishes_rotation() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let script = Scripted::new(&clock, rotating(6 * HOUR));
    let refresher = start(&clock, &script, || 0.0);
    let rx = refresher.subscribe();

    at(t0, 4 * HOUR - SEC).await;
    assert_eq!((script.calls(), generation(&rx)), (1, 1));
    at(t0, 4 * HOUR + SEC).await;
    assert_eq!((script.calls(), generation(&rx)), (2, 2));
    assert_eq!(held(&rx).unwrap().access_key_id, "STS.gen1");
    at(t0, 6 * HOUR).await;
    assert_eq!(script.call_offsets(t0), [Duration::ZERO, 4 * HOUR]);
}

#[tokio::test(start_paused = true)]
async fn random_jitter_refreshes_up_to_ten_percent_earlier() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let script = Scripted::new(&clock, rotating(6 * HOUR));
    let _refresher = start(&clock, &script, rand::random::<f64>);
    at(t0, 6 * HOUR).await;
    let calls = script.call_offsets(t0);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[1] >= 4 * HOUR - 24 * MIN && calls[1] <= 4 * HOUR,
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn role_change_is_a_new_generation() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let issued_at = clock.service_now();
    let respond: Respond = Box::new(move |n, _| {
        let mut f = fetched(creds("STS.same", issued_at, 6 * HOUR))?;
        f.role_name = if n == 0 { ROLE } else { "other-role" }.to_owned();
        Ok(f)
    });
    let script = Scripted::new(&clock, respond);
    let refresher = start(&clock, &script, || 0.0);
    let rx = refresher.subscribe();
    at(t0, 4 * HOUR + SEC).await;
    let issued = held(&rx).unwrap();
    assert_eq!(
        (issued.generation, issued.role_name.as_str()),
        (2, "other-role")
    );
}

/// A service that rotates 1 h before expiry (every 5 h, 6 h lifetime), jitter pinned to 0:
/// the exact schedule of rechecks while it still returns the first generation.
#[tokio::test(start_paused = true)]
async fn unchanged_generation_is_rechecked_sooner() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let script = Scripted::new(&clock, periodic(clock.service_now(), 5 * HOUR, 6 * HOUR));
    let refresher = start(&clock, &script, || 0.0);
    let rx = refresher.subscribe();

    at(t0, 4 * HOUR + SEC).await;
    let first_success = rx.borrow().last_success;
    assert_eq!((script.calls(), generation(&rx)), (2, 1));
    at(t0, 4 * HOUR + 15 * MIN + SEC).await;
    assert_eq!((script.calls(), generation(&rx)), (3, 1));
    assert!(rx.borrow().last_success > first_success);

    at(t0, 6 * HOUR).await;
    // 4 h (2 h left) → 15 min cap, 15, 15, then remaining / 6: 12.5 min, 10 min 25 s.
    let want = [
        Duration::ZERO,
        4 * HOUR,
        4 * HOUR + 15 * MIN,
        4 * HOUR + 30 * MIN,
        4 * HOUR + 45 * MIN,
        4 * HOUR + 57 * MIN + 30 * SEC,
        5 * HOUR + 7 * MIN + 55 * SEC,
    ];
    let got = script.call_offsets(t0);
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (got, want) in got.into_iter().zip(want) {
        assert_near(got, want);
    }
    let issued = held(&rx).unwrap();
    assert_eq!(
        (issued.generation, issued.access_key_id.as_str()),
        (2, "STS.gen1")
    );
}

/// The metadata load over one 6 h lifetime with a service that rotates 1 h before expiry.
#[tokio::test(start_paused = true)]
async fn metadata_load_over_one_lifetime_is_small() {
    for (name, jitter) in [
        ("random", rand::random::<f64> as fn() -> f64),
        ("worst case", || 0.999_999),
    ] {
        let clock = TestClock::new();
        let t0 = Instant::now();
        let script = Scripted::new(&clock, periodic(clock.service_now(), 5 * HOUR, 6 * HOUR));
        let refresher = start(&clock, &script, jitter);
        let rx = refresher.subscribe();
        // Every minute: servable, and never stale for the SDKs (15 min or more left).
        for minute in 0..=360u32 {
            at(t0, MIN * minute + SEC).await;
            let now = Instant::now();
            let state = rx.borrow().clone();
            let issued = state.credentials_at(now).expect("servable throughout");
            assert!(issued.expires_at - now >= 15 * MIN, "minute {minute}");
        }
        let fetches = script.calls();
        println!(
            "{name} jitter: {fetches} metadata fetches over 6 h: {:?}",
            script.call_offsets(t0)
        );
        assert!((3..=10).contains(&fetches), "{name}: {fetches} fetches");
        assert_eq!(generation(&rx), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn failure_keeps_old_credentials_backs_off_and_recovers() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let respond: Respond = Box::new(|n, wall| match n {
        1..=10 => Err(unreachable()),
        _ => fetched(creds(&format!("STS.gen{n}"), wall, 6 * HOUR)),
    });
    let script = Scripted::new(&clock, respond);
    let refresher = start(&clock, &script, || 0.5);
    let rx = refresher.subscribe();

    at(t0, REFRESH_AT_HALF_JITTER + SEC).await;
    let state = rx.borrow().clone();
    let issued = state
        .credentials_at(Instant::now())
        .expect("old credentials still served");
    assert_eq!(issued.generation, 1);
    assert!(state.is_stale(Instant::now()));
    assert!(state
        .last_error
        .as_deref()
        .unwrap()
        .contains("cannot connect"));
    let failing_since = state.failing_since.expect("failing_since set");
    assert_near(
        failing_since.duration_since(clock.base_wall).unwrap(),
        REFRESH_AT_HALF_JITTER,
    );

    at(t0, REFRESH_AT_HALF_JITTER + 10 * MIN).await;
    // Full jitter pinned at 0.5: half of 1, 2, 4, … s, capped at half of 60 s.
    let want_gaps = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0];
    let calls = script.call_offsets(t0);
    assert_eq!(calls.len(), 12, "{calls:?}");
    for (i, want) in want_gaps.into_iter().enumerate() {
        assert_near(calls[i + 2] - calls[i + 1], Duration::from_secs_f64(want));
    }
    let state = rx.borrow().clone();
    assert_eq!(state.credentials.as_ref().unwrap().generation, 2);
    assert_eq!((state.last_error, state.failing_since), (None, None));
}

#[tokio::test(start_paused = true)]
async fn outage_past_expiry_stops_serving_exactly_at_serve_until_then_recovers() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let origin = clock.service_now();
    let respond: Respond = Box::new(move |n, wall| {
        let down = n > 0 && wall < origin + 6 * HOUR + 30 * MIN;
        if down {
            Err(unreachable())
        } else {
            fetched(creds(&format!("STS.gen{n}"), wall, 6 * HOUR))
        }
    });
    let script = Scripted::new(&clock, respond);
    // A long backoff cap: the sleep would overshoot serve_until without the early wake-up.
    let cfg = RefreshPolicy {
        backoff_max: HOUR,
        ..RefreshPolicy::default()
    };
    let refresher = start_with(&clock, &script, cfg, || 0.999);
    let mut rx = refresher.subscribe();
    let first: Weak<Issued> =
        Arc::downgrade(&wait_for_credentials(&mut rx, 5 * SEC).await.unwrap());
    let serve_until = first.upgrade().unwrap().serve_until;
    assert_eq!(serve_until - t0, 6 * HOUR - MIN);

    tokio::time::sleep_until(serve_until - SEC).await;
    let state = rx.borrow().clone();
    assert!(state
        .credentials_at(serve_until - Duration::from_nanos(1))
        .is_ok());
    assert!(matches!(
        state.credentials_at(serve_until),
        Err(Unavailable::ExpiredRefreshFailing { error: Some(_), .. })
    ));
    drop(state);

    tokio::time::sleep_until(serve_until + Duration::from_millis(1)).await;
    let woke_at_serve_until = script.call_offsets(t0).into_iter().any(|t| {
        let d = serve_until - t0;
        t.abs_diff(d) <= Duration::from_millis(2)
    });
    assert!(woke_at_serve_until, "{:?}", script.call_offsets(t0));
    let state = rx.borrow().clone();
    assert!(state.credentials.is_none());
    assert!(
        matches!(&state.reason, Unavailable::ExpiredRefreshFailing { error: Some(e), .. } if e.contains("cannot connect"))
    );
    assert!(
        first.upgrade().is_none(),
        "dropped credentials still referenced"
    );
    // Callers fail fast instead of waiting: the agent has held credentials before.
    let mut waiter = refresher.subscribe();
    assert!(matches!(
        wait_for_credentials(&mut waiter, 5 * SEC).await,
        Err(Unavailable::ExpiredRefreshFailing { .. })
    ));

    at(t0, 8 * HOUR).await;
    let issued = held(&rx).expect("recovered");
    assert_eq!(issued.generation, 2);
    assert!(rx.borrow().last_error.is_none());
}

#[tokio::test(start_paused = true)]
async fn role_not_attached_drops_credentials_until_reattached() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let respond: Respond = Box::new(|n, wall| match n {
        1..=3 => Err(FakeError::RoleNotAttached {
            role_name: Some(ROLE.to_owned()),
        }),
        _ => fetched(creds(&format!("STS.gen{n}"), wall, 6 * HOUR)),
    });
    let script = Scripted::new(&clock, respond);
    let refresher = start(&clock, &script, || 0.5);
    let mut rx = refresher.subscribe();
    let first = Arc::downgrade(&wait_for_credentials(&mut rx, 5 * SEC).await.unwrap());

    at(t0, REFRESH_AT_HALF_JITTER + Duration::from_millis(100)).await;
    let state = rx.borrow().clone();
    assert!(state.credentials.is_none());
    let want = Unavailable::RoleNotAttached {
        role_name: Some(ROLE.to_owned()),
    };
    assert_eq!(state.reason, want);
    assert_eq!(state.credentials_at(Instant::now()).unwrap_err(), want);
    drop(state);
    assert!(
        first.upgrade().is_none(),
        "dropped credentials still referenced"
    );
    let mut waiter = refresher.subscribe();
    assert_eq!(
        wait_for_credentials(&mut waiter, 5 * SEC)
            .await
            .unwrap_err(),
        want
    );

    // Attached again: 0.5 + 1 + 2 s of backoff later.
    at(t0, REFRESH_AT_HALF_JITTER + 4 * SEC).await;
    assert_eq!((script.calls(), generation(&rx)), (5, 2));
}

#[tokio::test(start_paused = true)]
async fn expired_on_arrival_keeps_the_old_credentials() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let respond: Respond = Box::new(|n, wall| match n {
        // 30 s left: inside the 60 s margin.
        1 => fetched(creds("STS.late", wall, 30 * SEC)),
        _ => fetched(creds(&format!("STS.gen{n}"), wall, 6 * HOUR)),
    });
    let script = Scripted::new(&clock, respond);
    let refresher = start(&clock, &script, || 0.5);
    let rx = refresher.subscribe();

    at(t0, REFRESH_AT_HALF_JITTER + Duration::from_millis(100)).await;
    let state = rx.borrow().clone();
    assert_eq!(
        state.credentials.as_ref().unwrap().access_key_id,
        "STS.gen0"
    );
    assert!(state.last_error.unwrap().contains("expired on arrival"));
    at(t0, REFRESH_AT_HALF_JITTER + SEC).await;
    assert_eq!(held(&rx).unwrap().access_key_id, "STS.gen2");
}

/// Every attempt's outcome reaches the recorder (metrics) as one fixed word: a new generation,
/// the same one again, the source's error kind, or the refresher's own `expired_on_arrival`.
#[tokio::test(start_paused = true)]
async fn every_outcome_is_recorded_by_its_kind() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let origin = clock.service_now();
    let respond: Respond = Box::new(move |n, wall| match n {
        0 | 1 => fetched(creds("STS.same", origin, 6 * HOUR)),
        2 => Err(unreachable()),
        3 => fetched(creds("STS.late", wall, 30 * SEC)),
        4 => Err(FakeError::RoleNotAttached { role_name: None }),
        _ => fetched(creds(&format!("STS.gen{n}"), wall, 6 * HOUR)),
    });
    let script = Scripted::new(&clock, respond);
    let outcomes = Outcomes::default();
    let _refresher = Refresher::builder(script.clone(), RefreshPolicy::default(), clock as _)
        .jitter(|| 0.5)
        .metrics(outcomes.clone())
        .spawn();

    at(t0, 6 * HOUR).await;
    assert_eq!(
        outcomes.taken(),
        [
            "success",
            "unchanged",
            "unreachable",
            "expired_on_arrival",
            "role_not_attached",
            "success"
        ]
    );
    assert_eq!(script.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn lifetime_shorter_than_margin_is_never_served() {
    let clock = TestClock::new();
    let script = Scripted::new(&clock, rotating(50 * SEC));
    let refresher = start(&clock, &script, || 0.5);
    let mut rx = refresher.subscribe();
    let err = wait_for_credentials(&mut rx, 5 * SEC).await.unwrap_err();
    match err {
        Unavailable::MetadataUnreachable { error, .. } => {
            assert!(error.contains("expired on arrival"), "{error}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(script.calls() > 2, "keeps retrying");
}

#[tokio::test(start_paused = true)]
async fn stepped_wall_clock_does_not_move_the_deadline() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let script = Scripted::new(&clock, rotating(6 * HOUR));
    let refresher = start(&clock, &script, || 0.0);
    let mut rx = refresher.subscribe();
    let first = wait_for_credentials(&mut rx, 5 * SEC).await.unwrap();

    clock.set_skew(3600);
    at(t0, HOUR).await;
    clock.set_skew(-3600);
    at(t0, 4 * HOUR - SEC).await;
    let now_held = held(&rx).unwrap();
    assert!(Arc::ptr_eq(&first, &now_held));
    assert_eq!(now_held.serve_until - t0, 6 * HOUR - MIN);
    assert_eq!(script.calls(), 1);
    at(t0, 4 * HOUR + SEC).await;
    assert_eq!(script.calls(), 2);
    // The skew at arrival is reported (local clock 1 h behind the service).
    assert_eq!(rx.borrow().clock_skew_secs, Some(-3600));
}

#[tokio::test(start_paused = true)]
async fn short_lifetime_refreshes_before_the_margin() {
    let clock = TestClock::new();
    let t0 = Instant::now();
    let script = Scripted::new(&clock, rotating(5 * MIN));
    let refresher = start(&clock, &script, rand::random::<f64>);
    let rx = refresher.subscribe();
    for s in 1..=1800u32 {
        at(t0, SEC * s).await;
        let now = Instant::now();
        assert!(
            rx.borrow().credentials_at(now).is_ok(),
            "unservable at {s} s"
        );
    }
    let calls = script.call_offsets(t0);
    for pair in calls.windows(2) {
        let gap = pair[1] - pair[0];
        // Half-life (150 s), up to 10 % earlier: always before remaining − margin (240 s).
        assert!(gap >= 135 * SEC - SEC && gap <= 150 * SEC, "{calls:?}");
    }
    assert!(calls.len() >= 12, "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_cold_start_is_single_flight() {
    let clock = TestClock::new();
    let gate = Arc::new(Notify::new());
    let script = Scripted::gated(&clock, rotating(6 * HOUR), Some(Arc::clone(&gate)));
    let refresher = start(&clock, &script, || 0.0);
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let mut rx = refresher.subscribe();
            tokio::spawn(async move { wait_for_credentials(&mut rx, 5 * SEC).await })
        })
        .collect();
    tokio::time::sleep(SEC).await;
    assert_eq!(script.calls(), 1);
    gate.notify_one();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap().generation, 1);
    }
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn cold_start_failures_are_reported_then_waiters_get_credentials() {
    let clock = TestClock::new();
    let respond: Respond = Box::new(|n, wall| match n {
        0..=2 => Err(unreachable()),
        _ => fetched(creds("STS.gen", wall, 6 * HOUR)),
    });
    let script = Scripted::new(&clock, respond);
    let refresher = start(&clock, &script, || 0.5);
    let mut rx = refresher.subscribe();
    tokio::time::sleep(Duration::from_millis(100)).await;
    match rx.borrow().reason.clone() {
        Unavailable::MetadataUnreachable { since, error } => {
            assert_eq!(since, clock.base_wall);
            assert!(error.contains("cannot connect"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Retries at 0.5, 1.5 and 3.5 s: a caller waiting 5 s gets the credentials.
    let issued = wait_for_credentials(&mut rx, 5 * SEC).await.unwrap();
    assert_eq!((issued.generation, script.calls()), (1, 4));
}

#[tokio::test(start_paused = true)]
async fn heartbeat_advances_while_sleeping_and_drop_stops_the_task() {
    let clock = TestClock::new();
    let script = Scripted::new(&clock, rotating(6 * HOUR));
    let refresher = start(&clock, &script, || 0.0);
    let mut rx = refresher.subscribe();
    tokio::time::sleep(10 * MIN).await;
    let beat = refresher.last_heartbeat();
    assert!(
        Instant::now() - beat <= HEARTBEAT_INTERVAL,
        "{:?}",
        Instant::now() - beat
    );
    assert!(!refresher.is_finished());
    rx.borrow_and_update();
    drop(refresher);
    assert!(rx.changed().await.is_err(), "sender still alive after drop");
    assert!(rx.borrow().credentials.is_some(), "last state kept");
}

/// Regression (fault matrix row "local clock an hour behind"): with the local clock an hour
/// behind, 6 s credentials looked 1 h 6 s long and were served long past `Expiration`. The
/// lifetime is now measured from the service's clock when the local one is behind it.
#[test]
fn a_local_clock_behind_the_service_measures_from_the_service_clock() {
    use std::time::SystemTime;
    let service = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let c = creds("STS.a", service, 6 * SEC);
    let behind = service - HOUR;
    // The service's Date, plus the second it truncates away.
    assert_eq!(
        super::lifetime_clock(behind, Some(service), &c),
        service + SEC
    );
    // Without a Date, LastUpdated (plus its hidden second).
    assert_eq!(super::lifetime_clock(behind, None, &c), service + SEC);
    // A local clock consistent with the service's whole-second Date is kept as it is.
    let local = service + Duration::from_millis(400);
    assert_eq!(super::lifetime_clock(local, Some(service), &c), local);
    // A local clock ahead is kept: it only shortens the serving time.
    let ahead = service + HOUR;
    assert_eq!(super::lifetime_clock(ahead, Some(service), &c), ahead);
    // A Date older than LastUpdated never moves the clock before LastUpdated.
    assert_eq!(
        super::lifetime_clock(behind, Some(service - 10 * SEC), &c),
        service + SEC
    );
}

/// A profile's assumed role (issue 13): every `AssumeRole` returns new credentials valid for
/// the requested `DurationSeconds` (default 3600 s). Over 12 h of simulated time, with any
/// jitter, no 6 h window holds more than 10 STS calls, and the credentials stay servable with
/// at least the SDKs' 15 minutes left. Prints the counts (docs/sts.md quotes them).
#[tokio::test(start_paused = true)]
async fn assume_role_calls_per_profile_over_six_hours() {
    for (name, jitter) in [
        ("random", rand::random::<f64> as fn() -> f64),
        ("earliest", || 0.999_999),
        ("latest", || 0.0),
    ] {
        let clock = TestClock::new();
        let t0 = Instant::now();
        let script = Scripted::new(&clock, rotating(HOUR));
        let refresher = start(&clock, &script, jitter);
        let rx = refresher.subscribe();
        for minute in 0..=720u32 {
            at(t0, MIN * minute + SEC).await;
            let now = Instant::now();
            let state = rx.borrow().clone();
            let issued = state.credentials_at(now).expect("servable throughout");
            assert!(
                issued.expires_at - now >= 15 * MIN,
                "{name}: minute {minute}"
            );
        }
        let calls = script.call_offsets(t0);
        // The most calls in any half-open 6 h window (each window starts at a call).
        let most = (0..calls.len())
            .map(|i| {
                calls[i..]
                    .iter()
                    .take_while(|t| **t < calls[i] + 6 * HOUR)
                    .count()
            })
            .max()
            .unwrap_or(0);
        let first_six_hours = calls.iter().filter(|t| **t < 6 * HOUR).count();
        println!(
            "{name} jitter: {first_six_hours} AssumeRole calls in the first 6 h, at most {most} \
             in any 6 h, with 3600 s sessions; at {:?}",
            calls
                .iter()
                .map(|d| format!("{}m", d.as_secs() / 60))
                .collect::<Vec<_>>()
        );
        assert!(
            (6..=10).contains(&most),
            "{name}: {most} AssumeRole calls in 6 h"
        );
    }
}
