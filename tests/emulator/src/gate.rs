//! Gates: hold matching requests open until the test lets them through.

use std::fmt;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::fault::{Endpoint, Route};
use crate::state::Shared;

/// The part of a gate the request path sees.
#[derive(Debug)]
pub(crate) struct GateShared {
    pub(crate) endpoint: Endpoint,
    open: watch::Sender<bool>,
    waiting: watch::Sender<usize>,
}

impl GateShared {
    pub(crate) fn matches(&self, route: Route) -> bool {
        self.endpoint.matches(route)
    }

    /// Waits until the gate is released. A request whose client goes away while it waits stops
    /// counting as waiting.
    pub(crate) async fn hold(&self) {
        struct Waiting<'a>(&'a watch::Sender<usize>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n -= 1);
            }
        }
        let mut open = self.open.subscribe();
        self.waiting.send_modify(|n| *n += 1);
        let _waiting = Waiting(&self.waiting);
        // The sender lives as long as `self`, so this only ends when the gate opens.
        let _ = open.wait_for(|open| *open).await;
    }
}

/// Holds every metadata request to one [`Endpoint`] open, after counting it, until
/// [`Gate::release`]. Made by [`Emulator::gate`](crate::Emulator::gate).
///
/// Held requests wait before faults are applied and before the request is answered, so a
/// released request sees the emulator's state at release time. Dropping the gate releases it,
/// so a failing test cannot leave requests hanging.
pub struct Gate {
    inner: Arc<GateShared>,
    emulator: Weak<Shared>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("endpoint", &self.inner.endpoint)
            .field("waiting", &self.waiting())
            .field("released", &self.is_released())
            .finish()
    }
}

impl Gate {
    pub(crate) fn new(endpoint: Endpoint, emulator: &Arc<Shared>) -> (Self, Arc<GateShared>) {
        let inner = Arc::new(GateShared {
            endpoint,
            open: watch::Sender::new(false),
            waiting: watch::Sender::new(0),
        });
        let gate = Self {
            inner: Arc::clone(&inner),
            emulator: Arc::downgrade(emulator),
        };
        (gate, inner)
    }

    /// How many requests are held right now.
    pub fn waiting(&self) -> usize {
        *self.inner.waiting.borrow()
    }

    /// Resolves once at least `n` requests are held. Pair it with a timeout in tests.
    pub async fn until_waiting(&self, n: usize) {
        let mut rx = self.inner.waiting.subscribe();
        // The sender lives in `self.inner`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|w| *w >= n).await;
    }

    /// Lets every held request through and stops holding new ones.
    pub fn release(&self) {
        self.inner.open.send_replace(true);
        if let Some(emulator) = self.emulator.upgrade() {
            emulator.remove_gate(&self.inner);
        }
    }

    /// Whether [`Gate::release`] was called.
    pub fn is_released(&self) -> bool {
        *self.inner.open.borrow()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.release();
    }
}
