//! End-to-end: a local user holding the `[metrics] listen` connections open without sending
//! anything does not blind the endpoint (issue 10 item 5). Against the agent before the fix,
//! holding its 16 slots made every scrape fail.

use std::net::SocketAddr;
use std::time::Duration;

use ecs_credential_agent::server::metrics_listener::MAX_CONNECTIONS;
use ecs_credential_agent_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// As many scrapes as the report that found the hole.
const SCRAPES: usize = 39;

/// A loopback address with a port that was free a moment ago.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// One scrape: connect, send the request at once, read to the end. `Err` describes a failure.
async fn scrape(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    if text.starts_with("HTTP/1.1 200 ") && text.ends_with("# EOF\n") {
        Ok(())
    } else {
        Err(format!("answer {text:?}"))
    }
}

/// Connections that send nothing, each held until the listener closes it (as an attacker
/// holding slots would: letting go of one the listener still serves would free its slot).
#[derive(Default)]
struct Idle(Vec<std::net::TcpStream>);

impl Idle {
    /// Opens `n` more.
    async fn open(&mut self, addr: SocketAddr, n: usize) {
        for _ in 0..n {
            let s = TcpStream::connect(addr).await.expect("connect");
            // Non-blocking, as tokio left it: `peek` below never waits.
            self.0.push(s.into_std().unwrap());
        }
    }

    /// Lets go of those the listener has closed (end of stream or reset; open ones would block).
    fn prune(&mut self) {
        self.0.retain(
            |s| matches!(s.peek(&mut [0u8]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        );
    }
}

/// Each round, the attacker opens `MAX_CONNECTIONS + 1` fresh connections that send nothing
/// (twice the limit in the first round) and keeps every one the listener has not closed, so
/// every slot holds an idle connection when the scrape arrives. Bound: every scrape succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_blind_the_metrics_listener() {
    // About three times MAX_CONNECTIONS descriptors are open at once.
    raise_open_files_limit();
    let emu = emulator(Default::default()).await;
    let addr = free_port();
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("metrics", "listen", &format!("\"{addr}\""));
    let agent = TestAgent::builder(agent_bin!(), &config).start().await;
    agent.credentials().await;
    scrape(addr).await.expect("a scrape with nothing held");

    let mut idle = Idle::default();
    let mut failed = Vec::new();
    for round in 0..SCRAPES {
        idle.prune();
        let fresh = if round == 0 {
            2 * MAX_CONNECTIONS
        } else {
            MAX_CONNECTIONS + 1
        };
        idle.open(addr, fresh).await;
        // Generous, for a loaded machine: a refused scrape fails at once, not at the deadline.
        match tokio::time::timeout(Duration::from_secs(30), scrape(addr)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("scrape {round}: {e}")),
            Err(_) => failed.push(format!("scrape {round}: no answer within 30 s")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {SCRAPES} scrapes failed with idle connections held: {failed:?}",
        failed.len(),
    );
}
