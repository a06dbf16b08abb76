//! The process's allocator settings, shared by the binary and the benchmark binaries so that
//! both measure the engine with the memory behaviour users get.
//!
//! The binaries declare mimalloc as their global allocator (a `#[global_allocator]` must live
//! in the binary crate): it keeps freed pages for reuse, where the engine allocates and frees
//! multi-megabyte activation and column buffers every pass, and the system allocator returns
//! them to the kernel and page-faults them back in each time.

/// mimalloc gives freed memory back to the kernel ("purges") 10 ms after it is freed; a
/// smile CNN training step frees and reallocates ~100 MB of activations every ~40 ms, so each
/// step page-faulted all of them back in (measured: sys time 0.2–0.5 s → 0.03 s per bench
/// run). With a 1 s delay, `convscope train` on SMILEsmileD still had slow steps (mean step
/// 40.8–41.3 ms, median 38.4–39.0, some of 140–230 ms); with 10 s the mean is 38.1–38.9 ms,
/// as with purging switched off. Memory still goes back to the kernel 10 s after work stops.
///
/// Call before any other thread runs. Does nothing in a process whose global allocator is not
/// mimalloc but for setting an option nobody reads.
pub fn keep_freed_pages_mapped() {
    // A user's own MIMALLOC_PURGE_DELAY (read by mimalloc at start-up) wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // mimalloc v2/v3's `mi_option_purge_delay` (index in `mi_option_e`; the Rust binding has
    // no constant for it).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: a plain setter of mimalloc's option table (linked in through the mimalloc crate,
    // a dependency of this library), called before any other thread runs.
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, 10_000);
    }
}
