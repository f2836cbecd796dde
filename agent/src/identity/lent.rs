//! The connection's socket, lent to its [`Caller`](super::Caller) for the reads it defers.
//!
//! The groups and the pidfd of a caller are asked of the kernel through the connection's
//! socket (`SO_PEERGROUPS`, `SO_PEERPIDFD`), which keeps naming the process that connected
//! for as long as it is open. Reading them when first needed rather than at accept keeps a new
//! connection cheap; it needs the socket at hand. A duplicate (`dup(2)`) would do, at the
//! price of two system calls per connection (the `dup` and its `close`); a borrow cannot
//! outlive the transport's stream. So the caller gets a [`Lease`] on the socket's descriptor,
//! and the transport keeps the socket in a [`LentSocket`], which ends the lease before the
//! socket is closed, under the same lock as every read through it: a read either happens while
//! the socket is open, or finds the lease ended and reads nothing. It never reaches whatever
//! the descriptor's number names after the close.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};

/// The caller's side of a lent socket: its descriptor while the socket is open, nothing after.
#[derive(Debug)]
pub(super) struct Lease(Mutex<Option<RawFd>>);

impl Lease {
    /// Runs `read` on the socket if it is still open (the lease not ended), holding the lease
    /// so the socket cannot be closed meanwhile; `None` once it has ended.
    pub(super) fn with<T>(&self, read: impl FnOnce(BorrowedFd<'_>) -> T) -> Option<T> {
        let fd = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        #[allow(unsafe_code)]
        // SAFETY: the descriptor is open while the lease holds it: `LentSocket::drop` empties
        // the lease, under this lock, before it closes the socket, and the guard is held until
        // `read` returns.
        let socket = unsafe { BorrowedFd::borrow_raw((*fd)?) };
        Some(read(socket))
    }
}

/// A connection's socket `S` whose descriptor is lent to the [`Caller`](super::Caller)
/// captured from it ([`Caller::of_unix_peer`](super::Caller::of_unix_peer)); use it as the `S`
/// it dereferences to. Dropping it ends the lease, then closes the socket.
#[derive(Debug)]
pub struct LentSocket<S: AsFd> {
    socket: ManuallyDrop<S>,
    lease: Arc<Lease>,
}

impl<S: AsFd> LentSocket<S> {
    /// `socket`, its descriptor lent through the returned [`Lease`].
    pub(super) fn new(socket: S) -> (LentSocket<S>, Arc<Lease>) {
        let lease = Arc::new(Lease(Mutex::new(Some(socket.as_fd().as_raw_fd()))));
        let lent = LentSocket {
            socket: ManuallyDrop::new(socket),
            lease: Arc::clone(&lease),
        };
        (lent, lease)
    }
}

impl<S: AsFd> LentSocket<S> {
    /// The socket back, the lease ended (the caller's deferred reads then find nothing).
    pub fn into_inner(self) -> S {
        let mut this = ManuallyDrop::new(self);
        *this.lease.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
        #[allow(unsafe_code)]
        // SAFETY: `this` is never dropped, so each field is moved out exactly once, here.
        let (socket, lease) = unsafe {
            (
                ManuallyDrop::take(&mut this.socket),
                std::ptr::read(&this.lease),
            )
        };
        drop(lease);
        socket
    }
}

impl<S: AsFd> Deref for LentSocket<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.socket
    }
}

impl<S: AsFd> DerefMut for LentSocket<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.socket
    }
}

impl<S: AsFd> Drop for LentSocket<S> {
    /// Ends the lease, then closes the socket while still holding it (a read in progress
    /// finishes first; one that comes later finds the lease ended).
    fn drop(&mut self) {
        let mut fd = self.lease.0.lock().unwrap_or_else(PoisonError::into_inner);
        *fd = None;
        #[allow(unsafe_code)]
        // SAFETY: dropped exactly once, here; `self.socket` is not used again.
        unsafe {
            ManuallyDrop::drop(&mut self.socket);
        }
    }
}
