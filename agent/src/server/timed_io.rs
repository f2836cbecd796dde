//! The connection's socket as hyper sees it ([`TimedIo`]): it moves the connection's phase
//! to `Head` on the first byte of a request head, and follows where request heads end in the
//! bytes read ([`HeadScan`]), so that the connection's timer enforces `header_timeout` and
//! `idle_timeout` (see [`connection`](super::connection), "Timeouts"). Writes pass through.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::connection::{Ctx, Phase};
use super::listener::Stream;

/// The socket, noticing the first byte of each request head (`Idle → Head`) and whether what
/// it read ends inside a head.
pub(super) struct TimedIo {
    inner: Stream,
    ctx: Arc<Ctx>,
    header_timeout: Duration,
}

impl TimedIo {
    /// `stream`, marking `ctx`'s phase; a head that starts must be complete within
    /// `header_timeout`.
    pub(super) fn new(stream: Stream, ctx: Arc<Ctx>, header_timeout: Duration) -> TimedIo {
        TimedIo {
            inner: stream,
            ctx,
            header_timeout,
        }
    }
}

/// Follows where request heads end in the bytes read, as httparse reads them: a head ends
/// with an empty line (`\r\n` or `\n`); empty lines before a head are skipped. A request body
/// (always refused) is taken for the start of a head: at worst such a connection then gets
/// `header_timeout` instead of `idle_timeout` once answered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeadScan {
    /// A non-empty line has been read since the last head ended.
    pub(super) in_head: bool,
    /// The current line has a byte other than `\r`.
    line_has_content: bool,
}

impl HeadScan {
    /// Moves past `bytes`, the next bytes read. Only the chunk's last two lines matter (where
    /// the last complete line ends and what follows it), so this looks at a few bytes from the
    /// end, not at every byte read ([`HeadScan::scan_every_byte`] is the plain definition it
    /// is tested against).
    pub(super) fn scan(&mut self, bytes: &[u8]) {
        let content = |s: &[u8]| s.iter().any(|&b| b != b'\r');
        let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
            if content(bytes) {
                self.line_has_content = true;
                self.in_head = true;
            }
            return;
        };
        // The line the last `\n` ends: from the previous `\n`, or continued from earlier reads.
        let ended_has_content = match bytes[..last].iter().rposition(|&b| b == b'\n') {
            Some(prev) => content(&bytes[prev + 1..last]),
            None => self.line_has_content || content(&bytes[..last]),
        };
        // A line with content is part of a head; an empty one ends it (or is skipped).
        self.in_head = ended_has_content;
        self.line_has_content = content(&bytes[last + 1..]);
        self.in_head |= self.line_has_content;
    }

    /// [`HeadScan::scan`], byte by byte.
    #[cfg(test)]
    fn scan_every_byte(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => {
                    if !self.line_has_content {
                        self.in_head = false;
                    }
                    self.line_has_content = false;
                }
                b'\r' => {}
                _ => {
                    self.line_has_content = true;
                    self.in_head = true;
                }
            }
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let mut conn = self.ctx.lock();
            conn.scan.scan(&buf.filled()[before..]);
            conn.begun = true;
            if let Phase::Idle(_) = conn.phase {
                conn.phase = Phase::Head(Instant::now() + self.header_timeout);
            }
        }
        res
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    /// Vectored writes let hyper send the head and the body with one `writev(2)` instead of
    /// copying the body into its own buffer first.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_scan_tells_whether_the_bytes_read_end_inside_a_head() {
        let ends_inside = |chunks: &[&[u8]]| {
            let mut scan = HeadScan::default();
            chunks.iter().for_each(|c| scan.scan(c));
            scan.in_head
        };
        let get = b"GET /v1/credentials HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(!ends_inside(&[]));
        assert!(!ends_inside(&[get]));
        assert!(!ends_inside(&[b"GET / HTTP/1.1\nHost: x\n\n"]), "bare LF");
        assert!(ends_inside(&[b"G"]));
        assert!(ends_inside(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]));
        assert!(ends_inside(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r"]));
        // Split anywhere, even inside the final empty line.
        for i in 0..get.len() {
            assert!(ends_inside(&[&get[..i], &get[i..], b"GET"]), "{i}");
            assert_eq!(ends_inside(&[&get[..i]]), i > 0, "{i}");
            assert!(!ends_inside(&[&get[..i], &get[i..]]), "{i}");
        }
        // Pipelined: complete heads, then the start of one.
        assert!(ends_inside(&[
            &[&get[..], &get[..], b"GET /v1/cre"].concat()
        ]));
        assert!(!ends_inside(&[&[&get[..], &get[..]].concat()]));
        // Empty lines between heads are skipped, not the start of a head.
        assert!(!ends_inside(&[&[&get[..], b"\r\n\r\n\n"].concat()]));
    }

    proptest::proptest! {
        /// Looking only at each chunk's last lines gives the same state as reading every byte.
        #[test]
        fn head_scan_of_the_last_lines_matches_every_byte(
            chunks in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec![b'\r', b'\n', b'G', b' ']),
                    0..12,
                ),
                0..8,
            )
        ) {
            let (mut fast, mut slow) = (HeadScan::default(), HeadScan::default());
            for chunk in &chunks {
                fast.scan(chunk);
                slow.scan_every_byte(chunk);
                proptest::prop_assert_eq!(fast, slow, "after {:?}", chunk);
            }
        }
    }
}
