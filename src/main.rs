/// mimalloc keeps freed pages for reuse: the engine allocates and frees multi-megabyte
/// activation buffers every pass, and the system allocator returns them to the kernel and
/// page-faults them back in each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(convscope::cli::main());
}
