//! Small loopback servers for the STS client's tests: an HTTPS STS answering a script (its
//! certificate for 127.0.0.1, the PEM written for `[sts] ca_file`), a metadata service serving
//! the token, `region-id` and `instance-id`, and a proxy that records `CONNECT` and refuses it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A request as the STS test server saw it; header names lower-case.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) headers: Vec<(String, String)>,
}

impl Seen {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The query parameters, decoded.
    pub(super) fn param(&self, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(&format!("https://x/?{}", self.query)).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// A script status that makes the STS read the request and never answer.
pub(super) const HANG: u16 = 599;

/// The HTTPS STS: answers each request with the next `(status, JSON body)` of its script (a
/// 500 once it runs out; [`HANG`]: no answer ever).
pub(super) struct Sts {
    pub(super) addr: SocketAddr,
    pub(super) ca_file: PathBuf,
    _dir: tempfile::TempDir,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1, and that certificate as
/// a PEM file in a temporary directory.
fn tls_acceptor() -> (TlsAcceptor, PathBuf, tempfile::TempDir) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("sts-ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    (TlsAcceptor::from(Arc::new(config)), ca_file, dir)
}

/// An HTTPS server that reads a request head, never answers, and signals when the client
/// closes the connection.
pub(super) struct SilentSts {
    pub(super) addr: SocketAddr,
    pub(super) ca_file: PathBuf,
    _dir: tempfile::TempDir,
    pub(super) closed: Arc<tokio::sync::Notify>,
}

impl SilentSts {
    pub(super) async fn start() -> SilentSts {
        let (acceptor, ca_file, dir) = tls_acceptor();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closed = Arc::new(tokio::sync::Notify::new());
        let signal = Arc::clone(&closed);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, signal) = (acceptor.clone(), Arc::clone(&signal));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 4096];
                    // Until EOF or an error: the client went away.
                    while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                    signal.notify_one();
                });
            }
        });
        SilentSts {
            addr,
            ca_file,
            _dir: dir,
            closed,
        }
    }
}

impl Sts {
    pub(super) async fn start(script: Vec<(u16, String)>) -> Sts {
        let (acceptor, ca_file, dir) = tls_acceptor();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let recorded = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, recorded, script) =
                    (acceptor.clone(), Arc::clone(&recorded), Arc::clone(&script));
                tokio::spawn(async move {
                    // A client refusing the certificate ends the handshake: nothing to serve.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (recorded, script) = (Arc::clone(&recorded), Arc::clone(&script));
                            async move {
                                let response = answer(&request, &recorded, &script);
                                if response.status() == HANG {
                                    std::future::pending::<()>().await;
                                }
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Sts {
            addr,
            ca_file,
            _dir: dir,
            seen,
        }
    }

    pub(super) fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(
    request: &hyper::Request<hyper::body::Incoming>,
    recorded: &Mutex<Vec<Seen>>,
    script: &Mutex<VecDeque<(u16, String)>>,
) -> hyper::Response<Full<Bytes>> {
    recorded.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().unwrap_or_default().to_owned(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect(),
    });
    let (status, body) = script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((500, r#"{"Code":"InternalError"}"#.to_owned()));
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("date", "Tue, 14 Nov 2023 22:13:20 GMT")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The metadata service's token, `region-id` and `instance-id` over plain HTTP; `region-id`
/// answers 500 to its first `fail_region` requests.
pub(super) struct Metadata {
    pub(super) addr: SocketAddr,
    pub(super) region_gets: Arc<AtomicUsize>,
}

impl Metadata {
    pub(super) async fn start(fail_region: usize) -> Metadata {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let region_gets = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&region_gets);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (status, body) = match request.uri().path() {
                        "/latest/api/token" => (200, "METADATA-TOKEN"),
                        "/latest/meta-data/region-id" => {
                            if count.fetch_add(1, Ordering::SeqCst) < fail_region {
                                (500, "")
                            } else {
                                (200, "cn-hangzhou")
                            }
                        }
                        "/latest/meta-data/instance-id" => (200, "i-bp67acfmxazb4ph3xxxx"),
                        _ => (404, ""),
                    };
                    let response = hyper::Response::builder()
                        .status(status)
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap();
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        Metadata { addr, region_gets }
    }

    pub(super) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A proxy that records the first line of each `CONNECT` and answers 403.
pub(super) struct RefusingProxy {
    pub(super) addr: SocketAddr,
    pub(super) asked: Arc<Mutex<Vec<String>>>,
}

impl RefusingProxy {
    pub(super) async fn start() -> RefusingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&asked);
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head);
                recorded
                    .lock()
                    .unwrap()
                    .push(text.lines().next().unwrap_or_default().to_owned());
                let _ = tcp
                    .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        RefusingProxy { addr, asked }
    }
}
