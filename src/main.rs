/// mimalloc keeps freed pages for reuse: the engine allocates and frees multi-megabyte
/// activation buffers every pass, and the system allocator returns them to the kernel and
/// page-faults them back in each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Piped into `head`: end quietly when the reader goes away, as command-line tools do,
    // instead of panicking in println! (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_pages_mapped();
    std::process::exit(convscope::cli::main());
}

/// mimalloc gives freed memory back to the kernel ("purges") 10 ms after it is freed; a
/// smile CNN training step frees and reallocates ~100 MB of activations every ~40 ms, so each
/// step page-faulted all of them back in (measured: sys time 0.2–0.5 s → 0.03 s per bench
/// run). With a 1 s delay, `convscope train` on SMILEsmileD still had slow steps (mean step
/// 40.8–41.3 ms, median 38.4–39.0, some of 140–230 ms); with 10 s the mean is 38.1–38.9 ms,
/// as with purging switched off. Memory still goes back to the kernel 10 s after work stops.
fn keep_freed_pages_mapped() {
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
    // SAFETY: a plain setter of mimalloc's option table, called before any other thread runs.
    unsafe {
        mi_option_set(MI_OPTION_PURGE_DELAY, 10_000);
    }
}
