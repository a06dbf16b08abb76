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
    convscope::allocator::keep_freed_pages_mapped();
    std::process::exit(convscope::cli::main());
}
