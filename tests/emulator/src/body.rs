//! The response body type: whole, never-arriving, or dribbled.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use tokio::time::Sleep;

/// A response body. Its exact size is always known, so hyper always sends `Content-Length`.
#[derive(Debug)]
pub(crate) struct ReplyBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The whole body at once; `None` once sent.
    Whole(Option<Bytes>),
    /// Announces `len` bytes and never sends any (the headers still go out).
    Never { len: u64 },
    /// `chunk` bytes after every `interval`.
    Slow {
        rest: Bytes,
        chunk: usize,
        interval: Duration,
        sleep: Pin<Box<Sleep>>,
    },
}

impl ReplyBody {
    pub(crate) fn whole(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Whole(Some(bytes.into())),
        }
    }

    pub(crate) fn never(len: usize) -> Self {
        Self {
            kind: Kind::Never { len: len as u64 },
        }
    }

    pub(crate) fn slow(bytes: Bytes, chunk: usize, interval: Duration) -> Self {
        Self {
            kind: Kind::Slow {
                rest: bytes,
                chunk: chunk.max(1),
                interval,
                sleep: Box::pin(tokio::time::sleep(interval)),
            },
        }
    }

    /// Collects a whole body (used for control API answers in tests of this module).
    #[cfg(test)]
    pub(crate) async fn collect_bytes(self) -> Bytes {
        http_body_util::BodyExt::collect(self)
            .await
            .expect("infallible")
            .to_bytes()
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Never { .. } => Poll::Pending,
            Kind::Slow {
                rest,
                chunk,
                interval,
                sleep,
            } => {
                if rest.is_empty() {
                    return Poll::Ready(None);
                }
                std::task::ready!(sleep.as_mut().poll(cx));
                let next = rest.split_to((*chunk).min(rest.len()));
                let deadline = tokio::time::Instant::now() + *interval;
                sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(Frame::data(next))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Kind::Never { len } => *len == 0,
            Kind::Slow { rest, .. } => rest.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let len = match &self.kind {
            Kind::Whole(bytes) => bytes.as_ref().map_or(0, |b| b.len() as u64),
            Kind::Never { len } => *len,
            Kind::Slow { rest, .. } => rest.len() as u64,
        };
        SizeHint::with_exact(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slow_body_dribbles_on_paused_time() {
        let start = tokio::time::Instant::now();
        let body = ReplyBody::slow(Bytes::from_static(b"abcdefg"), 3, Duration::from_secs(1));
        assert_eq!(body.size_hint().exact(), Some(7));
        assert_eq!(&body.collect_bytes().await[..], b"abcdefg");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn never_body_announces_length_and_never_ends() {
        let body = ReplyBody::never(42);
        assert_eq!(body.size_hint().exact(), Some(42));
        assert!(!body.is_end_stream());
        let collected = tokio::time::timeout(Duration::from_secs(3600), body.collect_bytes()).await;
        assert!(collected.is_err(), "a never-body must not complete");
    }
}
