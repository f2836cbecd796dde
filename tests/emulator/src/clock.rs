//! The wall clock, injected.
//!
//! Everything time-related the emulator answers with (`LastUpdated`, `Expiration`, when a
//! credential generation is due for rotation, when a metadata token's TTL ends) is read through
//! one [`TimeSource`], so a test can hold the clock still or jump it forward with
//! [`ManualClock`]. Only fault delays ([`Fault::Delay`](crate::Fault::Delay),
//! [`Fault::SlowBody`](crate::Fault::SlowBody)) run on tokio's timer.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Something that tells the wall-clock time.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl TimeSource for SystemClock {
    fn now(&self) -> SystemTime {
        // The one read of the real wall clock in this crate.
        SystemTime::now()
    }
}

/// A shared, injectable wall clock.
pub type SharedTimeSource = Arc<dyn TimeSource>;

/// A wall clock that only moves when told to; clones share the same time.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use ecs_metadata_emulator::{ManualClock, TimeSource};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_700_000_060));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }

    /// Sets the clock to `to` (may move it backwards).
    pub fn set(&self, to: SystemTime) {
        *self.lock() = to;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // A poisoned lock only means another thread panicked mid-assignment of a Copy value.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TimeSource for ManualClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }
}
