//! An accepted connection's socket, whichever listener accepted it ([`Stream`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::identity::LentSocket;

/// An accepted connection's socket: from the Unix socket, lent to the
/// [`Caller`](crate::identity::Caller) captured from it (which reads its groups and pidfd
/// through it when first needed); or from the loopback TCP listener
/// ([`bridge`](super::bridge)), whose caller was looked up in the kernel's socket table at
/// accept and needs nothing from it later. Read and write it as either stream: each call is
/// passed through with one branch, no allocation and no system call of its own.
#[derive(Debug)]
pub enum Stream {
    /// A connection on the Unix socket.
    Unix(LentSocket<tokio::net::UnixStream>),
    /// A connection on the loopback TCP listener.
    Tcp(tokio::net::TcpStream),
}

impl Stream {
    /// Writes `raw` without waiting (a new socket's buffer always has room for a short
    /// answer) and closes the connection. Through the plain socket: tokio's `try_write`
    /// refuses (`WouldBlock`) until the runtime has seen the new socket's first readiness
    /// event, which a just-accepted one may not have had yet.
    pub(super) fn write_at_once(self, raw: &[u8]) {
        match self {
            Stream::Unix(s) => {
                if let Ok(mut s) = s.into_inner().into_std() {
                    let _ = io::Write::write(&mut s, raw);
                }
            }
            Stream::Tcp(s) => {
                if let Ok(mut s) = s.into_std() {
                    let _ = io::Write::write(&mut s, raw);
                }
            }
        }
    }
}

/// Passes `$call` on to the stream inside, pinned.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Unix(s) => {
                let $s = Pin::new(&mut **s);
                $call
            }
            Stream::Tcp(s) => {
                let $s = Pin::new(s);
                $call
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tcp(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}
