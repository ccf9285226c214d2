//! Giving the heap back to the kernel once connections close.
//!
//! glibc's malloc keeps freed memory in its arenas: after 5,000 idle connections closed, a sidecar still
//! held all of their RSS (measured in BENCHMARKS.md, "Issue 15: memory"). `malloc_trim(0)` returns the
//! free pages of every arena; it takes the arena locks and walks the free lists, so it runs on the
//! blocking pool, and only after enough connections closed to be worth it.
//!
//! glibc also gives threads that allocate at once arenas of their own (up to eight per core). With one
//! arena instead (every thread, the data-plane worker included, on the main heap), 5,000 idle HTTP
//! connections cost the client sidecar 22.0 KB each instead of 24.8, in two runs of `ironmesh-bench
//! memory` (BENCHMARKS.md); idle RSS and the TCP port did not change. So [`limit_malloc_arenas`] caps
//! them at one per data-plane worker.
#![allow(
    unsafe_code,
    reason = "malloc_trim and mallopt are glibc's; they have no safe wrapper"
)]

use std::sync::Arc;
use std::time::Duration;

use crate::limits::ConnectionCount;

/// How often the closed-connection counter is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Connections closed since the last trim before another one is worth the walk of the free lists.
const CLOSED_BEFORE_TRIM: u64 = 256;

/// Whether `closed` connections (since the last trim) freed enough to trim.
pub(crate) fn worth_trimming(closed: u64) -> bool {
    closed >= CLOSED_BEFORE_TRIM
}

/// Runs for the life of the data plane: every few seconds, trims the heap if enough connections closed.
pub(crate) async fn return_freed_memory(count: Arc<ConnectionCount>) {
    let mut trimmed_at = count.closed();
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let closed = count.closed();
        if worth_trimming(closed - trimmed_at) {
            trimmed_at = closed;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Caps glibc's malloc arenas at one per data-plane worker (`workers`, at least one), unless the
/// operator chose a cap with `GLIBC_TUNABLES=glibc.malloc.arena_max=N`. Call it before the proxy
/// starts its threads.
pub fn limit_malloc_arenas(workers: usize) {
    let chosen = std::env::var("GLIBC_TUNABLES").is_ok_and(|value| value.contains("arena_max"));
    if !chosen {
        set_arena_max(i32::try_from(workers.max(1)).unwrap_or(i32::MAX));
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(arenas: i32) {
    // SAFETY: mallopt only sets a glibc malloc parameter; M_ARENA_MAX limits arenas created from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only reorganises glibc's own free lists under its arena locks; it does not
    // touch live allocations. With another allocator preloaded it finds glibc's arenas empty.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_closed_connections_are_not_worth_a_trim() {
        assert!(!worth_trimming(0));
        assert!(!worth_trimming(CLOSED_BEFORE_TRIM - 1));
        assert!(worth_trimming(CLOSED_BEFORE_TRIM));
    }

    #[test]
    fn closing_counts_every_connection_that_ends() {
        let count = Arc::new(ConnectionCount::default());
        let slots: Vec<_> = (0..3).map(|_| crate::limits::Slot::new(&count)).collect();
        assert_eq!((count.get(), count.closed()), (3, 0));
        drop(slots);
        assert_eq!((count.get(), count.closed()), (0, 3));
    }
}
