//! The caller of an accepted loopback TCP connection, from the kernel's socket table.
//!
//! TCP has no `SO_PEERCRED` (on an accepted TCP socket it reports no pid and uid/gid `-1`).
//! The kernel still knows which socket is on the other end: on loopback, the caller's socket
//! is in the same network namespace, and its **local** address is the peer address `accept(2)`
//! returned, its **remote** address the listener's. [`SockDiag::lookup`] asks for exactly that
//! socket with one `NETLINK_SOCK_DIAG` request (`SOCK_DIAG_BY_FAMILY` without `NLM_F_DUMP`,
//! an exact lookup: `sock_diag(7)`, uapi `linux/inet_diag.h`), and the answer names the
//! socket's owner uid (the credentials of whoever created it, as `xt_owner` matches them),
//! its inode, and, on kernels that send `INET_DIAG_CGROUP_ID` (attribute 21), the cgroup v2 id
//! of the socket (the inode number of the cgroup's directory under `/sys/fs/cgroup`).
//!
//! **A socket already closed is denied.** A client that connects, sends and closes at once
//! leaves a TIME-WAIT mini-socket that reports uid 0 and inode 0: taken at face value, any
//! user would read as root. The lookup therefore requires a non-zero inode, and reports
//! [`TcpLookupError::Closed`] otherwise; a socket not found at all is
//! [`TcpLookupError::NotFound`]. Both deny the connection. A client that only shut down its
//! writing side (`shutdown(SHUT_WR)`) still owns its socket and keeps its inode.
//!
//! What the kernel does not say is not made up: a TCP caller has no pid and no process (so no
//! executable), and its gid and groups are those the user database gives its uid
//! (`getgrouplist(3)`), which is weaker than `SO_PEERGROUPS` (a process may have dropped or
//! gained groups since login).

use std::io;
use std::net::{IpAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{
    nlas::Nla as InetNla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use super::{Caller, Transport};

/// `INET_DIAG_CGROUP_ID` (uapi `linux/inet_diag.h`): the socket's cgroup v2 id, a `u64` in
/// host byte order. `netlink-packet-sock-diag` 0.5 has no typed attribute for it.
pub const INET_DIAG_CGROUP_ID: u16 = 21;

/// `INET_DIAG_NOCOOKIE` twice: "no cookie", the socket is found by its addresses alone. A zero
/// cookie (what `SocketId::new_v4` sets) would have to match the socket's cookie, and fails.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// How long a lookup waits for the kernel's answer (it comes within microseconds; this only
/// keeps a lost answer from blocking the accept loop for good).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest answer expected: one `inet_diag_msg` (72 bytes) and a few attributes.
const ANSWER_BUF: usize = 8 * 1024;

/// The owner of a caller's TCP socket, as the kernel's socket table reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOwner {
    /// The uid that created the socket.
    pub uid: u32,
    /// The socket's inode number (never 0: a lookup that finds 0 fails).
    pub inode: u32,
    /// The socket's cgroup v2 id, when the kernel sends `INET_DIAG_CGROUP_ID`.
    pub cgroup_id: Option<u64>,
}

/// Why the caller of a TCP connection could not be identified. Each denies the connection.
#[derive(Debug, thiserror::Error)]
pub enum TcpLookupError {
    /// The kernel has no socket with that address pair (the caller's socket is gone).
    #[error("no socket from {peer} to {listener} in the kernel's socket table")]
    NotFound {
        /// The caller's address (the peer `accept(2)` returned).
        peer: SocketAddrV4,
        /// The listener's address.
        listener: SocketAddrV4,
    },
    /// The caller's socket is closed already: only a TIME-WAIT mini-socket is left, which
    /// reports inode 0 and uid 0, not its owner.
    #[error("the socket from {peer} is closed already (inode 0); its owner is unknown")]
    Closed {
        /// The caller's address.
        peer: SocketAddrV4,
    },
    /// The netlink request failed (no `AF_NETLINK` allowed, for example).
    #[error("sock_diag lookup failed: {0}")]
    Netlink(#[source] io::Error),
    /// The kernel's answer could not be understood.
    #[error("sock_diag answer not understood: {0}")]
    Malformed(String),
}

/// A `NETLINK_SOCK_DIAG` socket for exact lookups, one at a time (a `std` mutex: each lookup
/// is one `send(2)` and one `recv(2)` of a few hundred bytes, never across `.await`).
#[derive(Debug)]
pub struct SockDiag {
    socket: Mutex<Socket>,
    seq: AtomicU32,
}

impl SockDiag {
    /// Opens the netlink socket.
    ///
    /// # Errors
    ///
    /// The OS error of `socket(2)`, `bind(2)` or `connect(2)` (for example `EAFNOSUPPORT` where
    /// a sandbox does not allow `AF_NETLINK`).
    pub fn open() -> io::Result<SockDiag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        nix::sys::socket::setsockopt(
            &socket.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0),
        )?;
        Ok(SockDiag {
            socket: Mutex::new(socket),
            seq: AtomicU32::new(1),
        })
    }

    /// The owner of the TCP socket whose local address is `peer` and whose remote address is
    /// `listener`: for a connection accepted on `listener` from `peer`, the caller's socket.
    /// Blocks for one netlink round trip (a hash lookup in the kernel).
    ///
    /// # Errors
    ///
    /// [`TcpLookupError::NotFound`] or [`TcpLookupError::Closed`] when the owner is unknown;
    /// [`TcpLookupError::Netlink`] or [`TcpLookupError::Malformed`] when the lookup failed.
    pub fn lookup(
        &self,
        peer: SocketAddrV4,
        listener: SocketAddrV4,
    ) -> Result<TcpOwner, TcpLookupError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let request = encode(seq, peer, listener);
        let socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        socket.send(&request, 0).map_err(TcpLookupError::Netlink)?;
        let mut buf = vec![0u8; ANSWER_BUF];
        // Answers to earlier lookups that timed out may still be queued: skip them by seq.
        loop {
            let n = socket
                .recv(&mut &mut buf[..], 0)
                .map_err(TcpLookupError::Netlink)?;
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&buf[..n])
                .map_err(|e| TcpLookupError::Malformed(e.to_string()))?;
            if msg.header.sequence_number != seq {
                continue;
            }
            return decode(msg.payload, peer, listener);
        }
    }
}

/// The exact-lookup request for the socket from `peer` to `listener`, serialized.
fn encode(seq: u32, peer: SocketAddrV4, listener: SocketAddrV4) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    // No NLM_F_DUMP: "a query about an individual socket" (sock_diag(7)).
    header.flags = NLM_F_REQUEST;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: AF_INET,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: peer.port(),
                destination_port: listener.port(),
                source_address: IpAddr::V4(*peer.ip()),
                destination_address: IpAddr::V4(*listener.ip()),
                interface_id: 0,
                cookie: NO_COOKIE,
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// The owner named by the kernel's answer `payload` to the lookup of `peer` → `listener`.
fn decode(
    payload: NetlinkPayload<SockDiagMessage>,
    peer: SocketAddrV4,
    listener: SocketAddrV4,
) -> Result<TcpOwner, TcpLookupError> {
    match payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
            owner(&response, peer)
        }
        NetlinkPayload::Error(e) => {
            let err = e.to_io();
            if err.raw_os_error() == Some(libc::ENOENT) {
                Err(TcpLookupError::NotFound { peer, listener })
            } else {
                Err(TcpLookupError::Netlink(err))
            }
        }
        other => Err(TcpLookupError::Malformed(format!(
            "unexpected message type {}",
            other.message_type()
        ))),
    }
}

/// The owner in `response`, refusing a socket without an inode (closed: its uid is not its
/// owner's).
fn owner(response: &InetResponse, peer: SocketAddrV4) -> Result<TcpOwner, TcpLookupError> {
    let h = &response.header;
    let found = (h.socket_id.source_address, h.socket_id.source_port);
    if found != (IpAddr::V4(*peer.ip()), peer.port()) {
        return Err(TcpLookupError::Malformed(format!(
            "answer names {}:{}, not {peer}",
            found.0, found.1
        )));
    }
    if h.inode == 0 {
        return Err(TcpLookupError::Closed { peer });
    }
    Ok(TcpOwner {
        uid: h.uid,
        inode: h.inode,
        cgroup_id: response.nlas.iter().find_map(cgroup_id),
    })
}

/// The value of an `INET_DIAG_CGROUP_ID` attribute (which the crate passes through untyped).
fn cgroup_id(nla: &InetNla) -> Option<u64> {
    match nla {
        InetNla::Other(attr) if attr.kind() == INET_DIAG_CGROUP_ID && attr.value_len() == 8 => {
            let mut value = [0u8; 8];
            attr.emit_value(&mut value);
            Some(u64::from_ne_bytes(value))
        }
        _ => None,
    }
}

impl Caller {
    /// The caller owning a TCP socket, as [`SockDiag::lookup`] found it: its uid and cgroup
    /// id; its primary gid and its groups from the user database, each read when first needed
    /// ([`Caller::gid`], [`Caller::groups`]: authorization needs them only when the uid alone
    /// does not decide); no pid, no process. Reads nothing itself.
    pub fn of_tcp_owner(owner: &TcpOwner) -> Caller {
        Caller {
            uid: owner.uid,
            gid: OnceLock::new(),
            groups: OnceLock::new(),
            pid: None,
            process: None,
            transport: Transport::Tcp,
            cgroup_id: owner.cgroup_id,
        }
    }
}

/// The primary gid the user database gives `uid` (`getpwuid(3)`); the uid itself when it has
/// no entry.
pub(super) fn user_gid(uid: u32) -> u32 {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or(uid, |u| u.gid.as_raw())
}

/// The groups the user database gives `uid` (primary `gid` included), as `initgroups(3)`
/// would set them at login (`getgrouplist(3)`); empty when the uid has no entry.
pub(super) fn user_groups(uid: u32, gid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(uid.into()) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, gid.into())
        .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
