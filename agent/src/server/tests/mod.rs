//! Tests of the server over real Unix sockets in a temporary directory.

mod authorization;
mod bind;
mod http;
mod keepalive;
mod profiles;
mod scrape;
mod shutdown;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Listener, Published, Server, Supervision};
use crate::credentials::{Issued, State};
use crate::metrics::Metrics;
use crate::server::config::Config as ServerConfig;
pub(super) use crate::test_support::{issued, wall, SECRET, TOKEN};

/// A state holding one valid generation (6 h, 60 s margin).
pub(super) fn valid_state() -> (State, Arc<Issued>) {
    let c = Arc::new(issued(
        1,
        "STS.test1",
        Duration::from_secs(21_600),
        Duration::from_secs(60),
    ));
    let state = State {
        clock_skew_secs: Some(0),
        ..state_with(&c)
    };
    (state, c)
}

/// A state holding `c`, fetched successfully.
pub(super) fn state_with(c: &Arc<Issued>) -> State {
    State {
        credentials: Some(Arc::clone(c)),
        last_success: Some(wall()),
        ..State::default()
    }
}

/// One `GET` on an open keep-alive connection.
pub(super) async fn get_on(s: &mut UnixStream, path: &str) -> Response {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(s)
        .await
        .expect("an answer on the kept connection")
}

/// A config for tests: socket in `dir`, short waits.
pub(super) fn test_config(dir: &Path) -> ServerConfig {
    ServerConfig {
        socket_path: dir.join("agent.sock"),
        first_credentials_wait: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

/// A running server.
pub(super) struct Harness {
    pub(super) _dir: tempfile::TempDir,
    pub(super) path: PathBuf,
    pub(super) state: watch::Sender<State>,
    pub(super) metrics: Metrics,
    /// The server configuration, as a reload (`SIGHUP`) would publish it.
    pub(super) config: watch::Sender<Arc<Published>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<(Listener, std::io::Result<()>)>>,
}

impl Harness {
    /// Starts a server with `tweak` applied to the test config and `state` published.
    pub(super) fn start(state: State, tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
        Harness::start_with(state, tweak, Supervision::default())
    }

    /// [`Harness::start`], judging the test's own uid (root, or the agent's) by the
    /// configuration's `allowed_uids` and `allowed_gids` like any other caller, so it can be
    /// denied ([`Supervision::judge_every_uid`]).
    pub(super) fn start_judging_every_uid(
        state: State,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Harness {
        let supervision = Supervision {
            judge_every_uid: true,
            ..Supervision::default()
        };
        Harness::start_with(state, tweak, supervision)
    }

    /// Publishes the running configuration with `tweak` applied, as a reload would.
    pub(super) fn reload(&self, tweak: impl FnOnce(&mut ServerConfig)) {
        let mut published = Published::clone(&self.config.borrow());
        tweak(&mut published.server);
        self.config.send_replace(Arc::new(published));
    }

    /// Publishes `profiles` with the running server configuration, as a reload would.
    pub(super) fn reload_profiles(&self, profiles: crate::profiles::Set) {
        let mut published = Published::clone(&self.config.borrow());
        published.profiles = Arc::new(profiles);
        self.config.send_replace(Arc::new(published));
    }

    /// [`Harness::start`] with `supervision` (its test hooks).
    pub(super) fn start_with(
        state: State,
        tweak: impl FnOnce(&mut ServerConfig),
        supervision: Supervision,
    ) -> Harness {
        Harness::start_with_profiles(state, tweak, supervision, crate::profiles::Set::default())
    }

    /// [`Harness::start_with`], serving `profiles` too.
    pub(super) fn start_with_profiles(
        state: State,
        tweak: impl FnOnce(&mut ServerConfig),
        supervision: Supervision,
        profiles: crate::profiles::Set,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg);
        let listener = Listener::bind(&cfg).unwrap();
        let (state_tx, state_rx) = watch::channel(state);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let path = cfg.socket_path.clone();
        let metrics = Metrics::new();
        let server_metrics = metrics.clone();
        let published = Published {
            server: cfg,
            profiles: Arc::new(profiles),
        };
        let (config, config_rx) = watch::channel(Arc::new(published));
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            let r = Server::new(&listener, config_rx, state_rx, server_metrics)
                .supervision(supervision)
                .run(shutdown)
                .await;
            (listener, r)
        });
        Harness {
            _dir: dir,
            path,
            state: state_tx,
            metrics,
            config,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Triggers shutdown; the returned handle yields the listener and `run`'s result.
    pub(super) fn shutdown(&mut self) -> JoinHandle<(Listener, std::io::Result<()>)> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap()
    }

    pub(super) async fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.path).await.unwrap()
    }

    /// Sends a `GET /v1/credentials` on a new connection and waits (up to 60 s) until the
    /// server holds it waiting for the first credentials: the connection and its waiting
    /// request each hold a receiver of the refresher's state, so the sender counts two more.
    pub(super) async fn request_waiting_for_credentials(&self) -> UnixStream {
        let before = self.state.receiver_count();
        let mut s = self.connect().await;
        s.write_all(b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.state.receiver_count() < before + 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the request is not waiting for credentials after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s
    }

    /// One request on a fresh connection with `Connection: close`.
    pub(super) async fn get(&self, path: &str) -> Response {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        self.raw(&raw).await
    }

    /// Sends `raw` on a fresh connection and reads one response.
    pub(super) async fn raw(&self, raw: &str) -> Response {
        let mut s = self.connect().await;
        s.write_all(raw.as_bytes()).await.unwrap();
        read_response(&mut s).await.expect("a response")
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) head: String,
    pub(super) body: Vec<u8>,
}

impl Response {
    /// A header value by (lowercase) name.
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.text()))
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a JSON error with this status and code.
    pub(super) fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}\n{}", self.head, self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.json()["Code"], code, "{}", self.text());
        assert!(self.json()["Message"].is_string());
    }
}

/// Reads one response (head, then `Content-Length` bytes); `None` on EOF before a head.
pub(super) async fn read_response(s: &mut UnixStream) -> Option<Response> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    let mut resp = Response {
        status,
        head,
        body: buf[head_end + 4..].to_vec(),
    };
    let len: usize = resp
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while resp.body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "EOF inside the body");
        resp.body.extend_from_slice(&chunk[..n]);
    }
    Some(resp)
}

/// Waits (real time, bounded) until the peer closes `s`; returns how long it took.
pub(super) async fn closed_within(s: &mut UnixStream, limit: Duration) -> Option<Duration> {
    let start = std::time::Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}
