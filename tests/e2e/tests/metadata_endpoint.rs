//! An endpoint that is not the ECS metadata service: the agent's log says so, with the shape
//! of what answered and what to do, and never repeats what it answered.
//!
//! Two peers on loopback: a TCP server that answers every connection with bytes that are not
//! HTTP, and the emulator answering the token `PUT` with an HTML page and `200` (a captive
//! portal, a web server on the wrong port).

use std::time::Duration;

use ecs_credential_agent_e2e::*;
use ecs_metadata_emulator::{Endpoint, Fault, Times};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long the first failed fetch may take to be logged on a loaded machine.
const LOGGED_WITHIN: Duration = Duration::from_secs(30);
/// What the log line says for such an endpoint.
const NOT_THE_SERVICE: &str = "does not answer like the ECS metadata service";
/// Planted in what the peer sends; it must appear in no log line.
const MARKER: &str = "MARKER-PEER-CONTENT";

/// A TCP server on `127.0.0.1:0` answering every connection with a line that is not HTTP
/// (as an SSH or SMTP server greets), then closing it. Returns its endpoint.
async fn garbage_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Let the request arrive first, so the agent reads an answer, not a reset.
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let line = format!("SSH-2.0-{MARKER} \x01\x02\r\n");
                let _ = stream.write_all(line.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    endpoint
}

/// Waits for the agent's log line about `endpoint` and returns all logs.
async fn wait_not_the_service(agent: &TestAgent, endpoint: &str, shape: &str) -> String {
    let needle = format!("{endpoint} {NOT_THE_SERVICE}: {shape}");
    let logged = agent.wait_for_log(&needle, LOGGED_WITHIN).await;
    let logs = agent.logs();
    assert!(logged, "no log line with {needle:?}; logs:\n{logs}");
    logs
}

fn assert_says_what_to_do_and_quotes_nothing(logs: &str) {
    let line = logs
        .lines()
        .find(|l| l.contains(NOT_THE_SERVICE))
        .expect("the line waited for");
    assert!(
        line.contains("check [metadata] endpoint (on ECS it is http://100.100.100.200)"),
        "{line}"
    );
    assert!(
        !logs.contains(MARKER),
        "the peer's bytes reached the logs:\n{logs}"
    );
    assert!(
        !logs.contains("Welcome"),
        "the page reached the logs:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_not_http_is_named_so_not_unreachable() {
    let endpoint = garbage_server().await;
    let config = AgentConfig::new(&endpoint);
    let agent = TestAgent::builder(agent_bin!(), &config).start().await;
    let logs = wait_not_the_service(&agent, &endpoint, "not HTTP").await;
    assert_says_what_to_do_and_quotes_nothing(&logs);
    assert!(!logs.contains("cannot connect"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_page_answered_to_the_token_put_is_named_by_its_shape() {
    let emu = emulator(Default::default()).await;
    emu.set_fault(Endpoint::Token, Fault::HtmlWith200, Times::Always);
    let endpoint = emu.endpoint();
    let config = AgentConfig::new(&endpoint);
    let agent = TestAgent::builder(agent_bin!(), &config).start().await;
    let shape = "HTTP 200 with Content-Type text/html";
    let logs = wait_not_the_service(&agent, &endpoint, shape).await;
    assert_says_what_to_do_and_quotes_nothing(&logs);
    assert!(
        logs.contains("an HTML page instead of a metadata token"),
        "{logs}"
    );
    assert!(!logs.contains("not allowed in a header"), "{logs}");
}
