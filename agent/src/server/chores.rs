//! The accept loop's other work — the shutdown signal, the audit flush and heartbeat ticks,
//! the memory trimmer, the test hook — polled only when one of them woke the loop.
//!
//! A `select!` over the listener and five other futures polls all six at every wake-up, so
//! every accepted connection paid for polling the shutdown future (two signal streams), two
//! intervals, the trimmer and the hook: about 1,500 instructions per connection at 8 clients
//! (the benchmark's `callgrind.sh`). Here the other futures are polled with a waker of their
//! own ([`Chores::waker`]) that marks them due before waking the loop's task: a wake-up by the
//! listener alone polls only the listener.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};

/// Whether the accept loop's chores may be ready, and the waker that says so.
#[derive(Debug)]
pub(super) struct Chores {
    shared: Arc<ChoreWaker>,
    /// The task waker last handed to `shared` (compared, not locked, at each wake-up).
    task: Option<Waker>,
}

#[derive(Debug, Default)]
struct ChoreWaker {
    due: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for ChoreWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.due.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Chores {
    /// Chores due at once (nothing has been polled yet).
    pub(super) fn new() -> Chores {
        let shared = Arc::new(ChoreWaker::default());
        shared.due.store(true, Ordering::Relaxed);
        Chores { shared, task: None }
    }

    /// After a chore completed: it must be polled again to register for its next wake-up.
    pub(super) fn mark_due(&self) {
        self.shared.due.store(true, Ordering::Relaxed);
    }

    /// The waker to poll the chores with when one of them may be ready (or when the task's
    /// waker changed, so the chores must register again); `None` when none can be.
    pub(super) fn waker(&mut self, task: &Waker) -> Option<Waker> {
        let fresh = self.task.as_ref().is_some_and(|w| w.will_wake(task));
        if !fresh {
            *self
                .shared
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            self.task = Some(task.clone());
        }
        if !self.shared.due.swap(false, Ordering::AcqRel) && fresh {
            return None;
        }
        Some(Waker::from(Arc::clone(&self.shared)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn chores_are_polled_only_after_their_own_wake_up() {
        let count = Arc::new(Count::default());
        let task = Waker::from(Arc::clone(&count));
        let mut chores = Chores::new();
        let waker = chores.waker(&task).expect("due at first");
        assert!(chores.waker(&task).is_none(), "a listener wake-up alone");
        waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(chores.waker(&task).is_some(), "due after their own wake-up");
        assert!(chores.waker(&task).is_none());
        chores.mark_due();
        assert!(chores.waker(&task).is_some(), "due after one completed");
        let other = Waker::from(Arc::new(Count::default()));
        assert!(
            chores.waker(&other).is_some(),
            "a new task waker: register again"
        );
    }
}
