//! The wall clock, injected.
//!
//! The agent reads the wall clock in exactly one place per credential generation: when the
//! credentials arrive, to turn their `Expiration` into a deadline on the monotonic clock
//! (`tokio::time::Instant`). Everything after that runs on the monotonic clock, so a stepped or
//! skewed system clock cannot make the agent serve expired credentials or refresh late.
//! Tests inject a [`TimeSource`] to skew the wall clock.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Something that tells the wall-clock time.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl TimeSource for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one permitted use of SystemTime::now
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A shared, injectable wall clock.
pub type SharedTimeSource = Arc<dyn TimeSource>;

/// A wall clock at a fixed offset from the system clock (tests of clock skew).
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock {
    /// Seconds added to the system time; negative moves the clock back.
    pub offset_secs: i64,
}

impl TimeSource for SkewedClock {
    fn now(&self) -> SystemTime {
        let now = SystemClock.now();
        let by = std::time::Duration::from_secs(self.offset_secs.unsigned_abs());
        if self.offset_secs >= 0 {
            now + by
        } else {
            now - by
        }
    }
}
