//! The two transports a row's probers ask over: the agent's Unix socket and its loopback TCP
//! listener (`[bridge] listen`), and how a TCP prober reaches the listener ([`Bridge`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::{parse_response, Response};

/// How long one TCP exchange may take before it counts as a failed request.
const TCP_EXCHANGE_DEADLINE: Duration = Duration::from_secs(30);

/// Which of the agent's listeners a [`Sample`](super::Sample) was asked over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    /// The Unix socket (`[server] socket_path`).
    Socket,
    /// The loopback TCP listener (`[bridge] listen`).
    Tcp,
}

impl Transport {
    /// Both, in the order rows report them.
    pub const ALL: [Transport; 2] = [Transport::Socket, Transport::Tcp];
}

/// Where a row's agent listens on loopback TCP, and from which network namespace a client
/// reaches it.
#[derive(Debug, Clone, Copy)]
pub enum Bridge {
    /// `addr` in the test's own network namespace.
    Loopback(SocketAddr),
    /// `addr` in the network namespace of process `pid` (an agent started under `unshare
    /// --net`): each connection is made from a short-lived thread that entered it, so the
    /// client socket is there too and the agent's socket-table lookup finds it.
    InNetns {
        /// The process whose network namespace to enter.
        pid: u32,
        /// The listener's address in it.
        addr: SocketAddr,
    },
}

impl Bridge {
    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            Bridge::Loopback(addr) | Bridge::InNetns { addr, .. } => addr,
        }
    }

    /// A new connection to the listener.
    ///
    /// # Errors
    /// When the connection (or entering the namespace) fails.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        match *self {
            Bridge::Loopback(addr) => TcpStream::connect(addr).await,
            Bridge::InNetns { pid, addr } => connect_in_netns(pid, addr).await,
        }
    }

    /// `GET path` on a new connection with `Host: 127.0.0.1` and `Connection: close`, read to
    /// the end (up to 30 s); never panics.
    ///
    /// # Errors
    /// A description when connecting, writing or reading fails or takes too long, or the
    /// answer has no HTTP head.
    pub async fn get(&self, path: &str) -> Result<Response, String> {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let exchange = async {
            let mut s = self.connect().await.map_err(|e| format!("connect: {e}"))?;
            s.write_all(raw.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)
                .await
                .map_err(|e| format!("read: {e}"))?;
            Ok::<_, String>(out)
        };
        let out = tokio::time::timeout(TCP_EXCHANGE_DEADLINE, exchange)
            .await
            .map_err(|_| format!("no answer over TCP within {TCP_EXCHANGE_DEADLINE:?}"))??;
        if !out.windows(4).any(|w| w == b"\r\n\r\n") {
            return Err(format!(
                "no HTTP answer over TCP: {:?}",
                String::from_utf8_lossy(&out)
            ));
        }
        Ok(parse_response(&out))
    }
}

/// Connects to `addr` from a thread of its own that entered the network namespace of `pid`
/// (the thread ends right after; a pooled thread must never change namespace).
async fn connect_in_netns(pid: u32, addr: SocketAddr) -> io::Result<TcpStream> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) on a valid namespace descriptor affects only this thread, which
        // ends right after connecting.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
        let stream = if entered {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        } else {
            Err(io::Error::last_os_error())
        };
        let _ = tx.send(stream);
    });
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the namespace thread ended without an answer"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}
