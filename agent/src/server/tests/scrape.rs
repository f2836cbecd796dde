//! `GET /metrics` on the socket, and what the server counts.

use super::*;

/// The value of the sample named exactly `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_served_and_requests_counted_by_endpoint_and_status() {
    let (state, _) = valid_state();
    let h = Harness::start(state, |_| {});
    let state = h.state.subscribe();
    h.metrics
        .observe_credentials(move |now| state.borrow().gauges(now));
    assert_eq!(h.get("/v1/credentials").await.status, 200);
    assert_eq!(h.get("/nope").await.status, 404);
    let r = h.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let requests = "ecs_credential_agent_socket_requests_total";
    let at = |s: String| sample(&text, &s).unwrap_or_else(|| panic!("{s}:\n{text}"));
    assert_eq!(
        at(format!(
            "{requests}{{endpoint=\"credentials\",status=\"200\"}}"
        )),
        1.0
    );
    assert_eq!(
        at(format!("{requests}{{endpoint=\"other\",status=\"404\"}}")),
        1.0
    );
    assert_eq!(at("ecs_credential_agent_ready".to_owned()), 1.0);
    assert_eq!(
        at("ecs_credential_agent_credentials_generation".to_owned()),
        1.0
    );
    assert!(at("ecs_credential_agent_credentials_expires_in_seconds".to_owned()) > 21_000.0);
    assert!(!text.contains(SECRET) && !text.contains(TOKEN) && !text.contains("STS.test1"));
    // The scrape itself is counted once it is answered.
    let again = h.get("/metrics").await.text();
    assert_eq!(
        sample(
            &again,
            &format!("{requests}{{endpoint=\"metrics\",status=\"200\"}}")
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn denied_callers_get_no_metrics_and_are_counted() {
    let (state, _) = valid_state();
    let me = nix::unistd::geteuid().as_raw();
    let h = Harness::start_judging_every_uid(state, |c| c.allowed_uids = vec![me]);
    // A caller revoked by a reload is denied at its next request (counted by endpoint, since
    // the request is read); a new connection of it is denied at accept (no request is read).
    let mut kept = h.connect().await;
    assert_eq!(get_on(&mut kept, "/v1/health").await.status, 200);
    h.reload(|c| c.allowed_uids = Vec::new());
    get_on(&mut kept, "/metrics")
        .await
        .assert_error(403, "Forbidden");
    h.get("/v1/credentials")
        .await
        .assert_error(403, "Forbidden");
    let text = h.metrics.encode();
    assert_eq!(
        sample(&text, "ecs_credential_agent_callers_denied_total"),
        Some(2.0)
    );
    let forbidden =
        "ecs_credential_agent_socket_requests_total{endpoint=\"metrics\",status=\"403\"}";
    assert_eq!(sample(&text, forbidden), Some(1.0), "{text}");
}
