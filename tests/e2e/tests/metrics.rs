//! End-to-end tests of the Prometheus metrics: `GET /metrics` on the agent socket and on the
//! `[metrics] listen` loopback TCP address, values that move, and no secret in them.

use std::net::SocketAddr;
use std::time::Duration;

use ecs_credential_agent_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric family the agent exposes from the start (name as in `# TYPE`, type).
const FAMILIES: [(&str, &str); 9] = [
    (
        "ecs_credential_agent_credentials_expires_in_seconds",
        "gauge",
    ),
    ("ecs_credential_agent_credentials_generation", "gauge"),
    ("ecs_credential_agent_ready", "gauge"),
    ("ecs_credential_agent_credentials_stale", "gauge"),
    ("ecs_credential_agent_refreshes", "counter"),
    ("ecs_credential_agent_metadata_requests", "counter"),
    (
        "ecs_credential_agent_metadata_request_duration_seconds",
        "histogram",
    ),
    ("ecs_credential_agent_callers_denied", "counter"),
    ("ecs_credential_agent_socket_requests", "counter"),
];

/// The value of the sample named exactly `series` (name and labels); 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn refreshes_success(text: &str) -> f64 {
    sample(
        text,
        "ecs_credential_agent_refreshes_total{result=\"success\"}",
    )
}

fn expires_in(text: &str) -> f64 {
    sample(text, "ecs_credential_agent_credentials_expires_in_seconds")
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// One `GET path` over TCP with `Connection: close`.
async fn tcp_get(addr: SocketAddr, path: &str) -> Response {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    parse_response(&raw)
}

/// Checks a scrape's status, type, families and ending; returns the body.
fn check_scrape(r: &Response) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some(OPENMETRICS));
    for (name, kind) in FAMILIES {
        assert!(
            r.body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) missing:\n{}",
            r.body
        );
        assert!(
            r.body.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    r.body.clone()
}

fn agent_with_metrics(endpoint: &str, addr: SocketAddr) -> AgentConfig {
    let mut config = AgentConfig::new(endpoint);
    config.set("metrics", "listen", &format!("\"{addr}\""));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_metrics_move_with_refreshes_and_denials_and_hold_no_secret() {
    // Credentials live 4 s and rotate after 1 s, so refreshes keep bringing new generations.
    let emu = emulator(short_lived(4, 1)).await;
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("server", "socket_mode", "\"0666\"");
    let agent = TestAgent::builder(agent_bin!(), &config).start().await;
    agent.open_dir();
    let served = agent.credentials().await;

    let first = check_scrape(&agent.get("/metrics").await);
    let credentials_200 =
        "ecs_credential_agent_metadata_requests_total{endpoint=\"credentials\",status=\"200\"}";
    assert!(sample(&first, credentials_200) >= 1.0, "{first}");
    assert!(refreshes_success(&first) >= 1.0, "{first}");
    assert!(expires_in(&first) > 0.0, "{first}");
    assert_eq!(sample(&first, "ecs_credential_agent_ready"), 1.0);
    let credentials_ok =
        "ecs_credential_agent_socket_requests_total{endpoint=\"credentials\",status=\"200\"}";
    assert_eq!(sample(&first, credentials_ok), 1.0, "{first}");

    // A refresh increments the counter.
    let before = refreshes_success(&first);
    let later = eventually(Duration::from_secs(30), || async {
        let text = agent.get("/metrics").await.body;
        (refreshes_success(&text) > before).then_some(text)
    })
    .await
    .unwrap_or_else(|| panic!("no refresh counted within 30 s; logs:\n{}", agent.logs()));
    assert!(sample(&later, "ecs_credential_agent_credentials_generation") >= 2.0);

    // A denied caller increments the denials.
    if is_root() {
        let denied_before = sample(&later, "ecs_credential_agent_callers_denied_total");
        let out = get_as_nobody(agent_bin!(), &agent.socket);
        assert_eq!(out.status.code(), Some(77), "{out:?}");
        let text = agent.get("/metrics").await.body;
        assert_eq!(
            sample(&text, "ecs_credential_agent_callers_denied_total"),
            denied_before + 1.0,
            "{text}"
        );
    } else {
        eprintln!("SKIPPED: the denial part needs root (CI runs as root)");
    }

    // No secret, metadata token or AccessKeyId in any label or value.
    let last = agent.get("/metrics").await.body;
    let mut secrets = vec![
        served["AccessKeySecret"].as_str().unwrap().to_owned(),
        served["SecurityToken"].as_str().unwrap().to_owned(),
        served["AccessKeyId"].as_str().unwrap().to_owned(),
    ];
    secrets.extend(emu.issued_tokens());
    assert!(secrets.len() > 3, "the emulator issued no metadata token");
    for (text, what) in [
        (&first, "the first scrape"),
        (&later, "a later scrape"),
        (&last, "the last scrape"),
    ] {
        assert_no_secret(text, &secrets, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_serves_only_metrics_and_expiry_counts_down() {
    let emu = emulator(Default::default()).await;
    let addr = free_port();
    let agent = TestAgent::builder(agent_bin!(), &agent_with_metrics(&emu.endpoint(), addr))
        .start()
        .await;
    agent.credentials().await;

    let first = check_scrape(&tcp_get(addr, "/metrics").await);
    let credentials_200 =
        "ecs_credential_agent_metadata_requests_total{endpoint=\"credentials\",status=\"200\"}";
    assert!(sample(&first, credentials_200) >= 1.0, "{first}");
    let e1 = expires_in(&first);
    assert!(e1 > 0.0, "{first}");
    // The gauge counts down in whole seconds: scrape until it moved.
    let e2 = eventually(Duration::from_secs(30), || async {
        let e2 = expires_in(&check_scrape(&tcp_get(addr, "/metrics").await));
        (e2 != e1).then_some(e2)
    })
    .await
    .unwrap_or(e1);
    assert!(
        e2 > 0.0 && e2 < e1,
        "expiry did not count down: {e1} then {e2}"
    );

    for path in ["/v1/credentials", "/v1/health", "/"] {
        let r = tcp_get(addr, path).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert!(!r.body.contains("AccessKey"), "{r:?}");
    }
    // The socket serves the same registry to allowed callers.
    check_scrape(&agent.get("/metrics").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_metrics_address_is_a_clear_startup_error() {
    let emu = emulator(Default::default()).await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let dir = tempfile::Builder::new().prefix("eca-").tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = TestAgent::builder(agent_bin!(), &agent_with_metrics(&emu.endpoint(), addr))
        .dir(dir)
        .socket(socket.clone())
        .spawn();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("the agent should stop at once");
    assert_eq!(status.code(), Some(1), "{}", agent.logs());
    let logs = agent.logs();
    assert!(
        logs.contains(&addr.to_string()) && logs.contains("[metrics] listen"),
        "the error should name the address and the key:\n{logs}"
    );
    assert!(!socket.exists(), "the socket was left behind");
    drop(busy);
}
