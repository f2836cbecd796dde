//! What identifying a loopback TCP caller costs the agent per connection, measured in this
//! process with the agent's own code: [`SockDiag::lookup`] (one `NETLINK_SOCK_DIAG` exact
//! lookup) and [`Caller::of_tcp_owner`] (the `Caller` built from its answer), each timed
//! over many calls on one live connection.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use ecs_credential_agent::identity::{Caller, SockDiag};
use serde::Serialize;

/// The per-connection cost of the caller lookup, nanoseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Lookup {
    /// Calls timed.
    pub calls: u32,
    /// One `SockDiag::lookup`.
    pub sock_diag_ns: f64,
    /// One `Caller::of_tcp_owner` on its answer.
    pub caller_ns: f64,
}

/// Times `n` lookups and `n` callers; `None` when no netlink socket or loopback connection
/// can be had.
pub fn cost(n: u32) -> Option<Lookup> {
    let diag = SockDiag::open().ok()?;
    let listener = TcpListener::bind("127.0.0.1:0").ok()?;
    let SocketAddr::V4(addr) = listener.local_addr().ok()? else {
        return None;
    };
    let _client = TcpStream::connect(addr).ok()?;
    let (_server, SocketAddr::V4(peer)) = listener.accept().ok()? else {
        return None;
    };
    let owner = diag.lookup(peer, addr).ok()?;
    let start = Instant::now();
    for _ in 0..n {
        diag.lookup(peer, addr).ok()?;
    }
    let sock_diag_ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(Caller::of_tcp_owner(std::hint::black_box(&owner)));
    }
    let caller_ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    Some(Lookup {
        calls: n,
        sock_diag_ns,
        caller_ns,
    })
}
