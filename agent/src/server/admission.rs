//! Admission: how many connections are served at once, and what the others get.
//!
//! At most `max_connections` connections are served at once ([`Admission::admit`] hands out a
//! [`ConnSlot`], counted by the [`Gauge`]). A connection beyond that is answered
//! `503 TooManyConnections` with `Connection: close` at once ([`Admission::reject`]), so
//! clients fail fast instead of queueing: gracefully (the answer, then what the client sends is
//! read and discarded for up to [`REJECT_LINGER`]) for up to [`MAX_REJECTING`] connections at
//! once, beyond that written without waiting and closed. Rejections are counted in the
//! metrics and logged at most once per [`SUMMARY_INTERVAL`].
//!
//! Every limit on who is served how much lives here: shares per caller (per uid) belong in
//! [`Admission::admit`], which the server calls after it has captured the connection's caller.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::listener::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::audit::SUMMARY_INTERVAL;
use super::connection::MAX_BUF_SIZE;
use super::memory::TRIM_AFTER_CONNECTIONS;
use super::routes::ApiError;
use crate::metrics::Metrics;
use crate::server::config::Config as ServerConfig;

/// The most excess connections kept open at once to deliver `TooManyConnections` gracefully
/// ([`reject`]); beyond it the answer is written without waiting and the connection closed at
/// once ([`reject_at_once`]).
pub(super) const MAX_REJECTING: usize = 64;

/// The server's connection limits and the state of its rejections.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Connections being served (at most `max_connections`).
    active: Arc<Gauge>,
    /// Connections being answered `TooManyConnections` (at most [`MAX_REJECTING`]).
    rejecting: Arc<AtomicUsize>,
    /// Connections rejected since the last warning.
    rejected: u64,
    /// When the last warning about rejected connections was logged.
    rejected_logged: Option<Instant>,
}

impl Admission {
    /// A place for a connection under `cfg` (held until the [`ConnSlot`] is dropped), or
    /// `None` when `cfg.max_connections` are served already: then [`Admission::reject`] it.
    pub(super) fn admit(&self, cfg: &ServerConfig) -> Option<ConnSlot> {
        ConnSlot::take(&self.active, cfg.max_connections)
    }

    /// Answers `stream`, refused by [`Admission::admit`], with `503 TooManyConnections` in the
    /// background; counts it in `metrics` and logs (at most once per [`SUMMARY_INTERVAL`]).
    pub(super) fn reject(&mut self, stream: Stream, cfg: &ServerConfig, metrics: &Metrics) {
        self.rejected += 1;
        metrics.connection_rejected();
        let now = Instant::now();
        if self
            .rejected_logged
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_INTERVAL)
        {
            tracing::warn!(
                max_connections = cfg.max_connections,
                rejected = std::mem::take(&mut self.rejected),
                "too many connections; answering 503 TooManyConnections"
            );
            self.rejected_logged = Some(now);
        }
        if let Some(slot) = Slot::take(&self.rejecting, MAX_REJECTING) {
            tokio::spawn(async move {
                let _slot = slot;
                reject(stream).await;
            });
        } else {
            reject_at_once(stream);
        }
    }

    /// The connections being served.
    pub(super) fn gauge(&self) -> &Arc<Gauge> {
        &self.active
    }
}

/// The open connections: how many, the most at once since memory was last given back, and a
/// signal when the last one closes.
#[derive(Debug, Default)]
pub(super) struct Gauge {
    active: AtomicUsize,
    high_water: AtomicUsize,
    all_closed: Notify,
    /// Signalled when the last connection of a burst closes (see
    /// [`trim_after_bursts`](super::memory::trim_after_bursts)).
    pub(super) trim_wanted: Notify,
}

impl Gauge {
    /// How many connections are open.
    pub(super) fn count(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Completes once no connection is open.
    pub(super) async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A counted connection; released on drop. When the last of a burst of at least
/// [`TRIM_AFTER_CONNECTIONS`] closes, the memory their buffers used is given back to the
/// kernel a moment later ([`trim_after_bursts`](super::memory::trim_after_bursts)): the
/// allocator keeps freed memory otherwise, and the agent's RSS would stay at its peak. Not at
/// once: with many short connections (a new one per request), the count drops to zero again
/// and again, and trimming each time cost more CPU than the connections themselves.
#[derive(Debug)]
pub(super) struct ConnSlot(Arc<Gauge>);

impl ConnSlot {
    fn take(gauge: &Arc<Gauge>, max: usize) -> Option<ConnSlot> {
        let n = gauge
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        gauge.high_water.fetch_max(n + 1, Ordering::Relaxed);
        Some(ConnSlot(Arc::clone(gauge)))
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
            if self.0.high_water.swap(0, Ordering::Relaxed) >= TRIM_AFTER_CONNECTIONS {
                self.0.trim_wanted.notify_one();
            }
        }
    }
}

/// A counted place among at most `max`; released on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(counter)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a rejected connection is given to read the answer and finish sending its request.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Answers a connection beyond `max_connections` at once with `503 TooManyConnections` and
/// `Connection: close`, then reads and discards what the client sends (at most
/// [`MAX_BUF_SIZE`] bytes, for at most [`REJECT_LINGER`]) before closing, so that the
/// client's own write does not fail and it reads the answer rather than a reset.
async fn reject(mut stream: Stream) {
    let answer = ApiError::TooManyConnections.to_raw_http();
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 1024];
        let mut read = 0;
        while read < MAX_BUF_SIZE {
            match stream.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Answers an excess connection when [`reject`] cannot linger on it (too many already are):
/// writes `503 TooManyConnections` without waiting (a new socket's buffer always has room for
/// it) and closes. The client still reads the answer before seeing the connection end, so even
/// a burst of thousands of connections gets the reason rather than a bare close.
///
/// The write goes through the plain socket: tokio's `try_write` refuses (`WouldBlock`) until
/// the runtime has seen the new socket's first readiness event, which a just-accepted one may
/// not have had yet.
fn reject_at_once(stream: Stream) {
    if let Ok(mut stream) = stream.into_inner().into_std() {
        let _ = io::Write::write(&mut stream, &ApiError::TooManyConnections.to_raw_http());
    }
}
