//! Helpers shared by the emulator's integration tests: a started emulator, a plain HTTP client,
//! and a raw TCP client for faults that break HTTP.

#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::time::Duration;

use ecs_metadata_emulator::{Emulator, EmulatorConfig, TOKEN_HEADER, TOKEN_TTL_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const ROLE_LIST: &str = "/latest/meta-data/ram/security-credentials/";
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Upper bound for anything that should happen promptly on loopback (generous: a loaded 2-core
/// machine may stall a process for seconds; only a hang reaches it).
pub const PROMPT: Duration = Duration::from_secs(30);

/// A started emulator and a client for it.
pub struct Fixture {
    pub emulator: Emulator,
    pub client: reqwest::Client,
}

/// A plain answer: status and body text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

pub fn start(config: EmulatorConfig) -> Fixture {
    let emulator = Emulator::start_local(config).expect("start emulator");
    let client = reqwest::Client::builder()
        .timeout(PROMPT)
        .build()
        .expect("build client");
    Fixture { emulator, client }
}

impl Fixture {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emulator.endpoint())
    }

    pub fn creds_path(&self) -> String {
        format!(
            "{ROLE_LIST}{}",
            self.emulator.role_name().expect("role attached")
        )
    }

    /// PUT for a metadata token with `ttl` (None = no TTL header).
    pub async fn put_token(&self, ttl: Option<&str>) -> Answer {
        let mut req = self.client.put(self.url(TOKEN_PATH));
        if let Some(ttl) = ttl {
            req = req.header(TOKEN_TTL_HEADER, ttl);
        }
        answer(req.send().await.expect("token PUT")).await
    }

    /// A fresh metadata token valid for 21600 s.
    pub async fn token(&self) -> String {
        let a = self.put_token(Some("21600")).await;
        assert_eq!(a.status, 200, "token PUT: {a:?}");
        a.body
    }

    /// GET `path` with `token` (None = tokenless).
    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.header(TOKEN_HEADER, token);
        }
        answer(req.send().await.expect("GET")).await
    }

    /// GET `path` with a fresh metadata token.
    pub async fn get_with_token(&self, path: &str) -> Answer {
        let token = self.token().await;
        self.get(path, Some(&token)).await
    }

    /// The credential JSON through a token, asserting 200.
    pub async fn credentials(&self) -> serde_json::Value {
        let a = self.get_with_token(&self.creds_path()).await;
        assert_eq!(a.status, 200, "credential GET: {a:?}");
        serde_json::from_str(&a.body).expect("credential JSON")
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.text().await.expect("body");
    Answer {
        status,
        content_type,
        body,
    }
}

pub fn is_404_page(a: &Answer) -> bool {
    a.status == 404 && a.body.contains("<title>404 - Not Found</title>")
}

/// What a raw connection saw within `wait`.
#[derive(Debug)]
pub struct Raw {
    pub bytes: Vec<u8>,
    /// `Some(kind)` if the read failed (e.g. ConnectionReset); `None` on EOF or timeout.
    pub error: Option<std::io::ErrorKind>,
    pub eof: bool,
}

impl Raw {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The head (status line + headers) if it arrived.
    pub fn head(&self) -> Option<String> {
        let text = self.text();
        text.find("\r\n\r\n").map(|end| text[..end].to_owned())
    }

    /// Bytes after the head.
    pub fn body_len(&self) -> usize {
        let text = self.text();
        text.find("\r\n\r\n").map_or(0, |end| text.len() - end - 4)
    }
}

/// Sends `request` (a full HTTP/1.1 request) and reads whatever comes back within `wait`.
pub async fn raw(addr: std::net::SocketAddr, request: &str, wait: Duration) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                return Raw {
                    bytes,
                    error: None,
                    eof: false,
                }
            }
            Ok(Ok(0)) => {
                return Raw {
                    bytes,
                    error: None,
                    eof: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => {
                return Raw {
                    bytes,
                    error: Some(e.kind()),
                    eof: false,
                }
            }
        }
    }
}

/// A raw GET request for `path` with `token`, closing the connection after the answer.
pub fn raw_get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{TOKEN_HEADER}: {token}\r\nConnection: close\r\n\r\n")
}
pub mod sts;
