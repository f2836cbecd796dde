//! Tests of the registry's exposition and the state gauges (paused time); the TCP listener's
//! are in `server::metrics_listener`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::credentials::State;
use crate::server::routes::label;
use crate::sources::metadata::{endpoint_label, MetadataError, ROLE_LIST_PATH, TOKEN_PATH};
use crate::test_support::{issued, SECRET, TOKEN};

/// The value of the sample whose name and labels are exactly `series`, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn full(name: &str) -> String {
    format!("{PREFIX}_{name}")
}

#[test]
fn every_metric_has_help_type_and_conventional_name() {
    let m = Metrics::new();
    let fresh = m.encode();
    // Before the first request the request families have no sample; the latency histograms
    // exist for every endpoint from the start.
    assert!(!fresh.contains(&full("socket_requests")), "{fresh}");
    for endpoint in ["token", "role_list", "credentials"] {
        let count = format!(
            "{}_count{{endpoint=\"{endpoint}\"}}",
            full("metadata_request_duration_seconds")
        );
        assert_eq!(sample(&fresh, &count), Some(0.0), "{fresh}");
    }
    m.metadata_request(
        endpoint_label(TOKEN_PATH),
        Some(200),
        Duration::from_millis(1),
    );
    m.socket_request(label("/v1/health"), 200);
    let text = m.encode();
    let rows = [
        ("refreshes", "counter"),
        ("metadata_requests", "counter"),
        ("metadata_request_duration_seconds", "histogram"),
        ("socket_requests", "counter"),
        ("callers_denied", "counter"),
        ("connections_rejected", "counter"),
        ("connections_rejected_per_uid", "counter"),
        ("credentials_expires_in_seconds", "gauge"),
        ("last_refresh_success_timestamp_seconds", "gauge"),
        ("credentials_generation", "gauge"),
        ("ready", "gauge"),
        ("credentials_stale", "gauge"),
    ];
    for (name, kind) in rows {
        let name = full(name);
        let help = format!("# HELP {name} ");
        let help_line = text.lines().find(|l| l.starts_with(&help));
        assert!(
            help_line.is_some_and(|l| l.len() > help.len() + 10),
            "no HELP for {name}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} is not a {kind}:\n{text}"
        );
    }
    assert!(text.contains(&format!(
        "# UNIT {} seconds\n",
        full("credentials_expires_in_seconds")
    )));
    // Counters are exposed with `_total`; the outcomes are there from the start.
    assert_eq!(sample(&text, &full("callers_denied_total")), Some(0.0));
    assert_eq!(
        sample(&text, &full("connections_rejected_total")),
        Some(0.0)
    );
    let success = format!("{}{{result=\"success\"}}", full("refreshes_total"));
    assert_eq!(sample(&text, &success), Some(0.0), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Nothing observed yet: not ready.
    assert_eq!(sample(&text, &full("ready")), Some(0.0));
    assert_eq!(
        sample(&text, &full("credentials_expires_in_seconds")),
        Some(0.0)
    );
}

#[test]
fn recorded_events_move_the_values() {
    let m = Metrics::new();
    m.refresh(Ok(true));
    m.refresh(Ok(true));
    m.refresh(Ok(false));
    let timeout = MetadataError::Timeout {
        path: "/x".to_owned(),
        after: Duration::from_secs(3),
    };
    m.refresh(Err(timeout.kind()));
    m.metadata_request(
        endpoint_label(TOKEN_PATH),
        Some(200),
        Duration::from_millis(3),
    );
    m.metadata_request(
        endpoint_label(ROLE_LIST_PATH),
        Some(200),
        Duration::from_millis(30),
    );
    let cred_path = format!("{ROLE_LIST_PATH}EcsRole");
    m.metadata_request(
        endpoint_label(&cred_path),
        Some(200),
        Duration::from_millis(7),
    );
    m.metadata_request(endpoint_label(&cred_path), None, Duration::from_secs(3));
    m.socket_request(label("/v1/credentials"), 200);
    m.socket_request(label("/v1/credentials"), 200);
    m.socket_request(label("/nope/a-caller-chosen-value"), 404);
    // The listener's series are its own, the hot path's too.
    for _ in 0..3 {
        m.bridge_request(label("/v1/credentials"), 200);
    }
    m.bridge_request(label("/v1/credentials"), 403);
    m.caller_denied();
    m.connection_rejected();
    m.connection_rejected_per_uid();
    m.connection_rejected_per_uid();
    let text = m.encode();
    let at = |series: String| sample(&text, &series).unwrap_or_else(|| panic!("{series}\n{text}"));
    let refreshes = full("refreshes_total");
    assert_eq!(at(format!("{refreshes}{{result=\"success\"}}")), 2.0);
    assert_eq!(at(format!("{refreshes}{{result=\"unchanged\"}}")), 1.0);
    assert_eq!(at(format!("{refreshes}{{result=\"timeout\"}}")), 1.0);
    let md = full("metadata_requests_total");
    assert_eq!(
        at(format!("{md}{{endpoint=\"token\",status=\"200\"}}")),
        1.0
    );
    assert_eq!(
        at(format!("{md}{{endpoint=\"role_list\",status=\"200\"}}")),
        1.0
    );
    assert_eq!(
        at(format!("{md}{{endpoint=\"credentials\",status=\"200\"}}")),
        1.0
    );
    assert_eq!(
        at(format!("{md}{{endpoint=\"credentials\",status=\"error\"}}")),
        1.0
    );
    let hist = full("metadata_request_duration_seconds");
    assert_eq!(at(format!("{hist}_count{{endpoint=\"credentials\"}}")), 2.0);
    assert!((at(format!("{hist}_sum{{endpoint=\"credentials\"}}")) - 3.007).abs() < 1e-9);
    assert_eq!(
        at(format!(
            "{hist}_bucket{{le=\"0.01\",endpoint=\"credentials\"}}"
        )),
        1.0
    );
    let sock = full("socket_requests_total");
    assert_eq!(
        at(format!("{sock}{{endpoint=\"credentials\",status=\"200\"}}")),
        2.0
    );
    assert_eq!(
        at(format!("{sock}{{endpoint=\"other\",status=\"404\"}}")),
        1.0
    );
    let bridge = full("bridge_requests_total");
    assert_eq!(
        at(format!(
            "{bridge}{{endpoint=\"credentials\",status=\"200\"}}"
        )),
        3.0
    );
    assert_eq!(
        at(format!(
            "{bridge}{{endpoint=\"credentials\",status=\"403\"}}"
        )),
        1.0
    );
    assert!(
        !text.contains("a-caller-chosen-value"),
        "a path became a label"
    );
    assert!(!text.contains("EcsRole"), "a role name became a label");
    assert_eq!(at(full("callers_denied_total")), 1.0);
    assert_eq!(at(full("connections_rejected_total")), 1.0);
    assert_eq!(at(full("connections_rejected_per_uid_total")), 2.0);
}

#[tokio::test(start_paused = true)]
async fn state_gauges_are_computed_at_scrape_time() {
    let m = Metrics::new();
    let (tx, rx) = watch::channel(State::default());
    m.observe_credentials(move |now| rx.borrow().gauges(now));
    let value = |name: &str| sample(&m.encode(), &full(name)).unwrap();
    assert_eq!(value("ready"), 0.0);

    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    tx.send_modify(|s| {
        s.credentials = Some(Arc::new(issued(
            3,
            "STS.metrics-test",
            Duration::from_secs(100),
            Duration::from_secs(10),
        )));
        s.last_success = Some(wall);
    });
    assert_eq!(value("credentials_expires_in_seconds"), 100.0);
    assert_eq!(value("credentials_generation"), 3.0);
    assert_eq!(value("ready"), 1.0);
    assert_eq!(value("credentials_stale"), 0.0);
    assert_eq!(
        value("last_refresh_success_timestamp_seconds"),
        1_700_000_000.0
    );

    tokio::time::advance(Duration::from_millis(30_500)).await;
    tx.send_modify(|s| s.last_error = Some("metadata service unavailable".to_owned()));
    assert_eq!(value("credentials_expires_in_seconds"), 69.5);
    assert_eq!(value("credentials_stale"), 1.0);
    assert_eq!(value("ready"), 1.0);

    // Past Expiration minus the margin: held, but neither ready nor stale-but-valid.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(value("ready"), 0.0);
    assert_eq!(value("credentials_stale"), 0.0);
    assert_eq!(value("credentials_expires_in_seconds"), 9.5);
    let text = m.encode();
    for secret in [SECRET, TOKEN, "STS.metrics-test"] {
        assert!(!text.contains(secret), "{secret} leaked into the metrics");
    }
}
