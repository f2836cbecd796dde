//! The two reference servers, each run in its own process with a multi-threaded tokio runtime of
//! two workers, like the agent. The benchmark runs bare hyper's accept loop in a worker task
//! (`bench hyper --accept-on-worker`), where the agent runs its own; the floor's stays in
//! `block_on`.
//!
//! - The **floor** (`bench floor`): reads a request head and writes back canned bytes, the
//!   agent's whole response (head and body) as captured from the agent. Nothing is parsed
//!   beyond finding the end of the head: the physical limit of the transport.
//! - **Bare hyper** (`bench hyper`): hyper's HTTP/1.1 server answering every request with the
//!   agent's body and the same `Content-Type` and `Cache-Control` headers, on a Unix socket or
//!   on loopback TCP (the reference of the agent's loopback listener).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use crate::load::Addr;

/// The agent's runtime: multi-threaded, two workers (`ecs_credential_agent::cli`).
pub fn agent_like_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

fn bind(socket: &Path) -> UnixListener {
    let _ = std::fs::remove_file(socket);
    let l = UnixListener::bind(socket).expect("bind the socket");
    println!("listening");
    l
}

/// Serves `response` (raw HTTP bytes) to every request head on `socket`, forever.
pub async fn floor(socket: &Path, response: Vec<u8>) {
    let listener = bind(socket);
    let response: Arc<[u8]> = response.into();
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let response = Arc::clone(&response);
        tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            let mut have = 0usize;
            loop {
                let Ok(n) = s.read(&mut buf[have..]).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                let from = have.saturating_sub(3);
                have += n;
                if buf[from..have].windows(4).any(|w| w == b"\r\n\r\n") {
                    have = 0;
                    if s.write_all(&response).await.is_err() {
                        return;
                    }
                } else if have == buf.len() {
                    return;
                }
            }
        });
    }
}

/// Serves `body` with hyper to every request on `addr` (a Unix socket, or loopback TCP with
/// `TCP_NODELAY` set on each connection as the agent's listener does), forever.
pub async fn bare_hyper(addr: Addr, body: Vec<u8>) {
    let body = Bytes::from(body);
    match addr {
        Addr::Unix(socket) => {
            let listener = bind(&socket);
            loop {
                if let Ok((s, _)) = listener.accept().await {
                    tokio::spawn(serve_hyper(s, body.clone()));
                }
            }
        }
        Addr::Tcp(a) => {
            let listener = TcpListener::bind(a).await.expect("bind the TCP address");
            println!("listening");
            loop {
                if let Ok((s, _)) = listener.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve_hyper(s, body.clone()));
                }
            }
        }
    }
}

/// One bare hyper connection.
async fn serve_hyper<S>(s: S, body: Bytes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |_req| {
        let mut resp = http::Response::new(Full::new(body.clone()));
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        async move { Ok::<_, Infallible>(resp) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(s), service)
        .await;
}

/// A metadata emulator on `127.0.0.1` (default configuration): prints `listening on
/// ENDPOINT`; with `sts_ca_file`, also an STS emulator that lets the metadata emulator's role
/// assume the profile's ([`crate::profile::ROLE_ARN`]), its CA written there, and prints `sts
/// listening on ENDPOINT`. Then serves until the process is killed.
pub async fn emulator(sts_ca_file: Option<std::path::PathBuf>) {
    use ecs_metadata_emulator::sts::{StsConfig, StsEmulator, TargetRole};
    use std::io::Write;
    let emu = ecs_metadata_emulator::Emulator::start_local(Default::default())
        .expect("start the emulator");
    let mut lines = format!("listening on {}\n", emu.endpoint());
    let _sts = sts_ca_file.map(|ca_file| {
        let sts = StsEmulator::start(StsConfig {
            keys: emu.key_store(),
            roles: vec![TargetRole::new(
                crate::profile::ROLE_ARN,
                ecs_metadata_emulator::config::DEFAULT_ROLE_NAME,
            )],
            ca_file: Some(ca_file),
            ..StsConfig::default()
        })
        .expect("start the STS emulator");
        lines.push_str(&format!("sts listening on {}\n", sts.endpoint()));
        sts
    });
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes())
        .and_then(|()| out.flush())
        .expect("write to stdout");
    drop(out);
    std::future::pending::<()>().await;
}
