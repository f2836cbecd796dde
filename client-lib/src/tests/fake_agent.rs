//! A fake `ecs-credential-agent`: a small hyper server on a Unix socket in a temporary
//! directory, answering with a test-supplied function and counting requests.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// A marker planted as the secrets; it must never show in Debug output or error messages.
pub(crate) const MARKER: &str = "MARKER-SECRET-9b2e7d";

/// An answer: HTTP status and JSON body.
pub(crate) type Reply = (u16, String);

/// Answers request number `n` (0-based) for `path`.
pub(crate) type Respond = dyn Fn(usize, &str) -> Reply + Send + Sync;

pub(crate) struct FakeAgent {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeAgent {
    /// Starts serving on the current tokio runtime.
    pub(crate) async fn start(
        respond: impl Fn(usize, &str) -> Reply + Send + Sync + 'static,
    ) -> FakeAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind fake agent");
        let hits = Arc::new(AtomicUsize::new(0));
        let respond: Arc<Respond> = Arc::new(respond);
        let task = tokio::spawn(serve(listener, respond, hits.clone()));
        FakeAgent {
            _dir: dir,
            path,
            hits,
            task,
        }
    }

    /// Requests answered so far.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: UnixListener, respond: Arc<Respond>, hits: Arc<AtomicUsize>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (respond, hits) = (respond.clone(), hits.clone());
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            let (status, body) = respond(n, request.uri().path());
            let response = hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response");
            async move { Ok::<_, Infallible>(response) }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Formats a time as the agent does: `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc(t: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&format).expect("format")
}

/// A `200` credential body with the marker as secrets, expiring at `expiration`.
pub(crate) fn credentials_body(access_key_id: &str, expiration: OffsetDateTime) -> String {
    format!(
        r#"{{"Code":"Success","AccessKeyId":"{access_key_id}","AccessKeySecret":"{MARKER}","SecurityToken":"{MARKER}-token","Expiration":"{}","LastUpdated":"{}"}}"#,
        utc(expiration),
        utc(expiration - time::Duration::hours(6)),
    )
}

/// An agent error body.
pub(crate) fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "Code": code, "Message": message }).to_string()
}

/// A settable wall clock for the client.
#[derive(Clone)]
pub(crate) struct TestClock(Arc<Mutex<OffsetDateTime>>);

impl TestClock {
    pub(crate) fn at(t: OffsetDateTime) -> TestClock {
        TestClock(Arc::new(Mutex::new(t)))
    }

    pub(crate) fn set(&self, t: OffsetDateTime) {
        *self.0.lock().unwrap() = t;
    }

    pub(crate) fn as_clock(&self) -> crate::client::Clock {
        let inner = self.0.clone();
        Arc::new(move || *inner.lock().unwrap())
    }
}

/// Every message in `err`'s source chain, joined.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(" | ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
