//! The `convscope` binary: parses the command line, then runs a subcommand (`cli`) or opens the
//! window (`app`). Nothing else lives here.

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
    let command = match convscope::cli::parse() {
        Ok(command) => command,
        Err(code) => std::process::exit(code),
    };
    // The instruction-set cap applies to every kernel of the process, so it is settled before
    // any work: a command stops on a bad CONVSCOPE_SIMD; the window shows it and runs at the
    // best level instead.
    let simd = convscope::engine::simd::init_from_env();
    let code = match command {
        Some(command) => convscope::cli::run(command, simd),
        None => window(simd.err().map(|e| e.to_string())),
    };
    std::process::exit(code);
}

/// No subcommand: the window, with the instruction-set error to show if there was one.
#[cfg(feature = "gui")]
fn window(simd_error: Option<String>) -> i32 {
    match convscope::app::run(simd_error) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("convscope: {e}");
            1
        }
    }
}

#[cfg(not(feature = "gui"))]
fn window(_simd_error: Option<String>) -> i32 {
    eprintln!(
        "convscope: this convscope was built without the window (feature `gui`); run a \
         subcommand, see --help"
    );
    1
}
