//! The bound loopback TCP listener and its accepted connections' callers.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::task::{Context, Poll};

use crate::identity::{Caller, SockDiag, TcpLookupError};
use crate::server::Stream;

/// Why the loopback listener could not be set up (the agent exits 1 at startup).
#[derive(Debug, thiserror::Error)]
pub enum BridgeBindError {
    /// `bind(2)` or `listen(2)` failed (the port is taken, for example).
    #[error("cannot listen on {addr} ([bridge] listen): {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddrV4,
        /// The OS error.
        source: io::Error,
    },
    /// No `NETLINK_SOCK_DIAG` socket: callers could not be identified, so every one would be
    /// refused (a sandbox without `AF_NETLINK` in `RestrictAddressFamilies=`, for example).
    #[error(
        "cannot open a NETLINK_SOCK_DIAG socket, needed to identify [bridge] callers \
         (is AF_NETLINK allowed?): {0}"
    )]
    SockDiag(#[source] io::Error),
}

/// The loopback TCP listener, with the netlink socket its callers are looked up through.
#[derive(Debug)]
pub struct BridgeListener {
    inner: tokio::net::TcpListener,
    addr: SocketAddrV4,
    diag: SockDiag,
}

/// A connection accepted on the [`BridgeListener`]: its stream, and its caller or why none is
/// known.
pub type Bridged = (Stream, Result<Caller, TcpLookupError>);

impl BridgeListener {
    /// Binds `addr` (`127.0.0.1:PORT`; port 0 picks a free one, see
    /// [`BridgeListener::local_addr`]). Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`BridgeBindError`] naming what failed.
    pub fn bind(addr: SocketAddrV4) -> Result<BridgeListener, BridgeBindError> {
        let bind = |source| BridgeBindError::Bind { addr, source };
        let std = std::net::TcpListener::bind(addr).map_err(bind)?;
        BridgeListener::from_std(std).map_err(|e| match e {
            BridgeBindError::Bind { source, .. } => bind(source),
            other => other,
        })
    }

    /// Wraps an already bound, listening socket (from systemd, for example). Must be called
    /// inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`BridgeBindError::Bind`] when the socket is not bound to an IPv4 address or cannot be
    /// registered; [`BridgeBindError::SockDiag`] when no netlink socket can be opened.
    pub fn from_std(listener: std::net::TcpListener) -> Result<BridgeListener, BridgeBindError> {
        let unspecified = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
        let fail = |source| BridgeBindError::Bind {
            addr: unspecified,
            source,
        };
        let addr = match listener.local_addr().map_err(fail)? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => {
                return Err(fail(io::Error::other(
                    "not an IPv4 socket (the caller lookup covers IPv4 loopback only)",
                )))
            }
        };
        listener.set_nonblocking(true).map_err(fail)?;
        let inner = tokio::net::TcpListener::from_std(listener).map_err(fail)?;
        let diag = SockDiag::open().map_err(BridgeBindError::SockDiag)?;
        Ok(BridgeListener { inner, addr, diag })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Accepts the next connection and looks up its caller at once, before anything is read
    /// from it: the owner of the socket whose local address is the peer and whose remote
    /// address is this listener ([`SockDiag::lookup`]), which must still be open. `Pending`
    /// (with a wake-up through `cx` later) while no connection waits.
    ///
    /// # Errors
    ///
    /// The OS error from `accept(2)`. A failed lookup is not an error here: it is the
    /// connection's `Err` caller, to be answered `403`.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<Bridged>> {
        let (stream, peer) = std::task::ready!(self.inner.poll_accept(cx))?;
        let caller = match peer {
            SocketAddr::V4(peer) => self
                .diag
                .lookup(peer, self.addr)
                .map(|owner| Caller::of_tcp_owner(&owner)),
            SocketAddr::V6(_) => Err(TcpLookupError::Malformed(
                "an IPv6 peer on an IPv4 listener".to_owned(),
            )),
        };
        // Answers are written whole; no reason to hold the last segment back.
        let _ = stream.set_nodelay(true);
        Poll::Ready(Ok((Stream::Tcp(stream), caller)))
    }
}
