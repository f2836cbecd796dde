//! A scripted HTTP/1.1 server on 127.0.0.1:0 for the client's request-level tests: it answers
//! each request with the next canned response and records method, path and headers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One canned answer.
#[derive(Debug, Clone)]
pub(super) enum Canned {
    /// A complete response with `Content-Length`.
    Reply {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A 200 announcing `Content-Length: len` (the body is streamed only if read).
    Huge { len: usize },
    /// A 200 with a chunked body of `len` bytes and no `Content-Length`.
    HugeChunked { len: usize },
    /// Reads the request, then never answers.
    Hang,
    /// Reads the request, then closes the connection without answering.
    Close,
    /// Reads the request, then sends these bytes as they are (not HTTP) and closes.
    Raw(&'static [u8]),
    /// A 200 head, then one body byte every `every`, for `bytes` bytes.
    Trickle { every: Duration, bytes: usize },
}

/// A request as the server saw it. Header names are lowercase.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) headers: Vec<(String, String)>,
}

impl Recorded {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The running server; it stops when the test's runtime ends.
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    /// Starts a server that answers with `script` in order (a 500 once it runs out).
    pub(super) async fn start(script: Vec<Canned>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (recorded, count) = (Arc::clone(&requests), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (recorded, script) = (Arc::clone(&recorded), Arc::clone(&script));
                tokio::spawn(serve(stream, recorded, script));
            }
        });
        Server {
            addr,
            requests,
            connections,
        }
    }

    pub(super) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(super) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub(super) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Canned>>>,
) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    recorded.lock().unwrap().push(request);
    let next = script.lock().unwrap().pop_front();
    let canned = next.unwrap_or(Canned::Reply {
        status: 500,
        content_type: "text/plain",
        body: b"script exhausted".to_vec(),
    });
    // Write errors mean the client hung up, which some tests expect.
    let _ = answer(&mut stream, canned).await;
}

async fn answer(stream: &mut TcpStream, canned: Canned) -> std::io::Result<()> {
    match canned {
        Canned::Reply {
            status,
            content_type,
            body,
        } => {
            let head = format!(
                "HTTP/1.1 {status} Status\r\nContent-Type: {content_type}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Canned::Huge { len } => {
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            let block = vec![b'a'; 64 * 1024];
            for _ in 0..len / block.len() {
                stream.write_all(&block).await?;
            }
        }
        Canned::HugeChunked { len } => {
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            let block = vec![b'a'; 16 * 1024];
            for _ in 0..len / block.len() {
                stream
                    .write_all(format!("{:x}\r\n", block.len()).as_bytes())
                    .await?;
                stream.write_all(&block).await?;
                stream.write_all(b"\r\n").await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
        Canned::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
        Canned::Close => {}
        Canned::Raw(bytes) => stream.write_all(bytes).await?,
        Canned::Trickle { every, bytes } => {
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            for _ in 0..bytes {
                tokio::time::sleep(every).await;
                stream.write_all(b"a").await?;
            }
        }
    }
    stream.shutdown().await
}

/// Reads one request head (and a `Content-Length` body, discarded).
async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body_len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - (head_end + 4);
    while have < body_len {
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Some(Recorded {
        method,
        path,
        headers,
    })
}
