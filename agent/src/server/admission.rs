//! Admission: how many connections are served at once, and what the others get.
//!
//! At most `max_connections` connections are served at once, and at most
//! `max_connections_per_uid` of them from one uid (root and the agent's own uid are exempt):
//! [`Admission::admit`] hands out a [`ConnSlot`], counted by the [`Gauge`] and the uid's
//! share. A connection beyond either limit is answered `503 TooManyConnections` with
//! `Connection: close` at once ([`Admission::reject`]), so clients fail fast instead of
//! queueing. A caller that is not allowed takes no slot at all: it is answered
//! `403 Forbidden` at once ([`Admission::deny`]). Both answers are delivered the same way
//! ([`answer`]): gracefully (the answer, the write side shut down, then what the client sends
//! read and discarded for up to [`ANSWER_LINGER`], so a client that sends its request late
//! still reads the answer rather than a reset) for up to [`MAX_ANSWERING`] connections of each
//! kind at once, beyond that written without waiting and closed. Rejections are counted in the
//! metrics and logged at most once per [`SUMMARY_INTERVAL`].
//!
//! Every limit on who is served how much lives here.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::listener::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::audit::SUMMARY_INTERVAL;
use super::connection::MAX_BUF_SIZE;
use super::memory::TRIM_AFTER_CONNECTIONS;
use super::routes::ApiError;
use crate::identity::TcpLookupError;
use crate::metrics::Metrics;
use crate::server::config::Config as ServerConfig;

/// The most connections of one kind (`503` or `403`) kept open at once to deliver their
/// answer gracefully ([`answer`]); beyond it the answer is written without waiting and the
/// connection closed at once ([`answer_at_once`]).
pub(super) const MAX_ANSWERING: usize = 64;

/// Why [`Admission::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `max_connections` are served already.
    Full,
    /// The caller's uid holds its `max_connections_per_uid` already.
    UidShare,
}

/// The server's connection limits and the state of its rejections.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Connections being served (at most `max_connections`).
    active: Arc<Gauge>,
    /// Connections being served per uid, for the uids that are not exempt (a `std` mutex:
    /// taken once when a connection opens and once when it closes, never per request).
    shares: Arc<Mutex<HashMap<u32, usize>>>,
    /// Connections being answered `TooManyConnections` (at most [`MAX_ANSWERING`]).
    rejecting: Arc<AtomicUsize>,
    /// Connections being answered `Forbidden` (at most [`MAX_ANSWERING`]).
    denying: Arc<AtomicUsize>,
    /// Connections rejected since the last warning: beyond `max_connections`, beyond a uid's
    /// share.
    rejected: (u64, u64),
    /// When the last warning about rejected connections was logged.
    rejected_logged: Option<Instant>,
    /// Loopback TCP connections refused since the last warning because their caller could not
    /// be identified, and when that warning was logged.
    unidentified: (u64, Option<Instant>),
}

impl Admission {
    /// A place for a connection of `uid` under `cfg` (held until the [`ConnSlot`] is dropped),
    /// or why not: then [`Admission::reject`] it. An `exempt` uid (root, the agent's own) has
    /// no share to exceed.
    pub(super) fn admit(
        &self,
        cfg: &ServerConfig,
        uid: u32,
        exempt: bool,
    ) -> Result<ConnSlot, Refusal> {
        let share = if exempt {
            None
        } else {
            Some(Share::take(&self.shares, uid, cfg.per_uid_limit()).ok_or(Refusal::UidShare)?)
        };
        ConnSlot::take(&self.active, cfg.max_connections, share).ok_or(Refusal::Full)
    }

    /// Answers `stream`, refused by [`Admission::admit`] for `why`, with
    /// `503 TooManyConnections` in the background; counts it in `metrics` and logs (at most
    /// once per [`SUMMARY_INTERVAL`]).
    pub(super) fn reject(
        &mut self,
        stream: Stream,
        why: Refusal,
        cfg: &ServerConfig,
        metrics: &Metrics,
    ) {
        match why {
            Refusal::Full => {
                self.rejected.0 += 1;
                metrics.connection_rejected();
            }
            Refusal::UidShare => {
                self.rejected.1 += 1;
                metrics.connection_rejected_per_uid();
            }
        }
        let now = Instant::now();
        if self
            .rejected_logged
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_INTERVAL)
        {
            let (rejected, rejected_per_uid) = std::mem::take(&mut self.rejected);
            tracing::warn!(
                max_connections = cfg.max_connections,
                max_connections_per_uid = cfg.per_uid_limit(),
                rejected,
                rejected_per_uid,
                "too many connections; answering 503 TooManyConnections"
            );
            self.rejected_logged = Some(now);
        }
        answer(stream, ApiError::TooManyConnections, &self.rejecting);
    }

    /// Answers `stream`, whose caller is not allowed, with `403 Forbidden` in the background,
    /// outside the slots of allowed callers. The caller (its audit event, its count) is the
    /// server's business; this only delivers the answer.
    pub(super) fn deny(&self, stream: Stream, refused: ApiError) {
        answer(stream, refused, &self.denying);
    }

    /// Answers `stream`, a loopback TCP connection whose caller could not be identified
    /// (`why`), with `403 Forbidden` in the background, like a denied caller; logs at most once
    /// per [`SUMMARY_INTERVAL`] (a client that closes at once can make many).
    pub(super) fn unidentified(&mut self, stream: Stream, why: &TcpLookupError) {
        self.unidentified.0 += 1;
        let now = Instant::now();
        if self
            .unidentified
            .1
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_INTERVAL)
        {
            tracing::warn!(
                error = %why,
                refused = std::mem::take(&mut self.unidentified.0),
                "[bridge] caller not identified; answering 403"
            );
            self.unidentified.1 = Some(now);
        }
        answer(stream, ApiError::Unidentified, &self.denying);
    }

    /// The connections being served.
    pub(super) fn gauge(&self) -> &Arc<Gauge> {
        &self.active
    }
}

/// Delivers `error`'s answer on `stream`: gracefully ([`linger`]) while fewer than
/// [`MAX_ANSWERING`] connections counted by `pool` are, else at once ([`answer_at_once`]).
fn answer(stream: Stream, error: ApiError, pool: &Arc<AtomicUsize>) {
    let raw = error.to_raw_http();
    if let Some(slot) = Slot::take(pool, MAX_ANSWERING) {
        tokio::spawn(async move {
            let _slot = slot;
            linger(stream, &raw).await;
        });
    } else {
        answer_at_once(stream, &raw);
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
///
/// It also holds the connection's place in its uid's share, when the uid has one.
#[derive(Debug)]
pub(super) struct ConnSlot {
    gauge: Arc<Gauge>,
    _share: Option<Share>,
}

impl ConnSlot {
    fn take(gauge: &Arc<Gauge>, max: usize, share: Option<Share>) -> Option<ConnSlot> {
        let n = gauge
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        gauge.high_water.fetch_max(n + 1, Ordering::Relaxed);
        Some(ConnSlot {
            gauge: Arc::clone(gauge),
            _share: share,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let gauge = &self.gauge;
        if gauge.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            gauge.all_closed.notify_waiters();
            if gauge.high_water.swap(0, Ordering::Relaxed) >= TRIM_AFTER_CONNECTIONS {
                gauge.trim_wanted.notify_one();
            }
        }
    }
}

/// A connection's place in its uid's share; released on drop (a uid with no connection left
/// is forgotten, so the map holds only uids with open connections).
#[derive(Debug)]
struct Share {
    shares: Arc<Mutex<HashMap<u32, usize>>>,
    uid: u32,
}

impl Share {
    fn take(shares: &Arc<Mutex<HashMap<u32, usize>>>, uid: u32, max: usize) -> Option<Share> {
        let mut map = shares.lock().unwrap_or_else(PoisonError::into_inner);
        let held = map.entry(uid).or_insert(0);
        if *held >= max {
            if *held == 0 {
                map.remove(&uid);
            }
            return None;
        }
        *held += 1;
        Some(Share {
            shares: Arc::clone(shares),
            uid,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut map = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = map.get_mut(&self.uid) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.uid);
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

/// How long a refused connection is given to read the answer and finish sending its request.
const ANSWER_LINGER: Duration = Duration::from_secs(1);

/// Writes `raw` (an answer with `Connection: close`) on a refused connection, shuts down the
/// write side, then reads and discards what the client sends (at most [`MAX_BUF_SIZE`]
/// bytes, for at most [`ANSWER_LINGER`]) before closing, so that the client's own write does
/// not fail and it reads the answer rather than a reset, even when it sends its request after
/// the answer was written.
async fn linger(mut stream: Stream, raw: &[u8]) {
    let _ = tokio::time::timeout(ANSWER_LINGER, async {
        stream.write_all(raw).await?;
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

/// Answers a refused connection when [`linger`] cannot (too many are lingering already):
/// writes `raw` without waiting (a new socket's buffer always has room for it) and closes. The
/// client still reads the answer before seeing the connection end, so even a burst of
/// thousands of connections gets the reason rather than a bare close.
///
/// The write goes through the plain socket: tokio's `try_write` refuses (`WouldBlock`) until
/// the runtime has seen the new socket's first readiness event, which a just-accepted one may
/// not have had yet.
fn answer_at_once(stream: Stream, raw: &[u8]) {
    stream.write_at_once(raw);
}
