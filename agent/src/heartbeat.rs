//! Liveness heartbeats: a long-running loop records the monotonic time each time it shows it is
//! alive, and a watchdog ([`crate::systemd`]) checks that every loop's last beat is recent
//! before it tells systemd `WATCHDOG=1`.
//!
//! The refresher has its own (`Refresher::heartbeat`); the server's accept loop beats through
//! a [`Heartbeat`] given to [`crate::server::Server::supervision`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The writing side of a heartbeat. Clones share it; [`Heartbeat::subscribe`] gives readers.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<watch::Sender<Instant>>);

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}

impl Heartbeat {
    /// A heartbeat whose first beat is now. Call inside a tokio runtime when time is paused.
    pub fn new() -> Heartbeat {
        Heartbeat(Arc::new(watch::channel(Instant::now()).0))
    }

    /// Records that the loop is alive now.
    pub fn beat(&self) {
        self.0.send_replace(Instant::now());
    }

    /// The monotonic time of the last beat.
    pub fn last(&self) -> Instant {
        *self.0.borrow()
    }

    /// A reader of the last beat's time.
    pub fn subscribe(&self) -> watch::Receiver<Instant> {
        self.0.subscribe()
    }
}

/// One loop the watchdog checks: its name (for log lines), its last beat, and the longest gap
/// between beats that a healthy loop can show.
#[derive(Debug, Clone)]
pub struct Watched {
    /// `"refresher"` or `"server"`.
    pub name: &'static str,
    /// The loop's heartbeat.
    pub beats: watch::Receiver<Instant>,
    /// A beat older than this means the loop is wedged.
    pub max_gap: Duration,
}

impl Watched {
    /// Whether the last beat is within `max_gap` of `now`.
    pub fn is_alive(&self, now: Instant) -> bool {
        now.saturating_duration_since(*self.beats.borrow()) <= self.max_gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_is_alive_until_its_beat_is_older_than_max_gap() {
        let hb = Heartbeat::new();
        let w = Watched {
            name: "server",
            beats: hb.subscribe(),
            max_gap: Duration::from_secs(5),
        };
        assert!(w.is_alive(Instant::now()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(w.is_alive(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!w.is_alive(Instant::now()));
        hb.beat();
        assert!(w.is_alive(Instant::now()));
        assert_eq!(hb.last(), Instant::now());
    }
}
