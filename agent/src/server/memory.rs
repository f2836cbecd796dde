//! Giving freed memory back to the kernel after a burst of connections: the allocator keeps
//! what a thousand connections' buffers used otherwise, and the agent's RSS would stay at its
//! peak.

use std::sync::Arc;
use std::time::Duration;

use super::admission::Gauge;

/// Connections open at once after which, when they have all closed, freed memory is given
/// back to the kernel.
pub(super) const TRIM_AFTER_CONNECTIONS: usize = 64;
/// How long after such a burst freed memory is given back (the most often it is, too).
const TRIM_DELAY: Duration = Duration::from_secs(1);

/// Gives freed memory back to the kernel [`TRIM_DELAY`] after the last connection of a burst
/// of at least [`TRIM_AFTER_CONNECTIONS`] closed ([`ConnSlot`](super::admission::ConnSlot));
/// under steady connection churn, at most once per [`TRIM_DELAY`]. Never completes.
pub(super) async fn trim_after_bursts(gauge: Arc<Gauge>) {
    loop {
        gauge.trim_wanted.notified().await;
        tokio::time::sleep(TRIM_DELAY).await;
        release_free_memory();
    }
}

/// Returns the allocator's free memory to the kernel (glibc `malloc_trim(0)`, which releases
/// free pages in every arena, not only at the top of the heap). A no-op on other C libraries.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists under its locks; it
    // takes no pointer and is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
