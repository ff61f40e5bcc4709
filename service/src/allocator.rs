//! The capture's memory policy for the C allocator (glibc's malloc), which
//! the capture's store (SQLite, Parquet encoding) and every thread use.
//!
//! - [`tune_for_capture`], before the capture's threads start: two malloc
//!   arenas instead of eight per core (every thread of the capture, the ring
//!   buffer reader, the store writer, the export and its encoder, the
//!   metrics, allocated in an arena of its own, and every arena keeps what it
//!   once held), and a fixed mmap threshold (by default glibc raises the
//!   threshold to the size of each large block freed, so from the second
//!   export on, an export's batch buffers came from the heap instead of
//!   their own mappings and stayed resident afterwards; at a fixed 256 KiB
//!   they are unmapped when freed).
//! - [`release_free_memory`], after each export (the scheduled export's
//!   `after_export` hook): an export's batches and encoder buffers are freed
//!   when it ends, but the allocator keeps freed memory in its arenas;
//!   without this the capture's resident memory would stay at its largest
//!   export's peak until the next one.
//!
//! The effect of both on resident memory is measured by the soak test and
//! `capture_bench` (BENCHMARKS.md, "Capture").
//!
//! Elsewhere than glibc, both do nothing.

/// Tunes the allocator for a long-running capture; call before the
/// capture starts its threads.
pub fn tune_for_capture() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt changes tuning parameters of the C allocator; called
    // before the capture's threads start, it races with no allocation that
    // depends on it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Gives the memory the allocator holds free back to the system.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own
    // arenas to the system; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
