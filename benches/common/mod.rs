//! Timing shared by the benchmark binaries (std::time only; no harness).

use std::time::Instant;

/// The allocator and settings the `convscope` binary runs with (`convscope::allocator`): a
/// benchmark on the system allocator measured the GEMM paths' column buffers page-faulting in
/// on every call, which the application never does (an im2col convolution looked 2–3x slower
/// than in a training step).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Call first in every benchmark's `main`.
pub fn init() {
    convscope::allocator::keep_freed_pages_mapped();
}

/// `BENCH_RUNS` from the environment, or `default`.
pub fn bench_runs(default: usize) -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// The process's CPU time (user + system, all threads) in seconds.
fn process_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Median time (seconds) of `runs` calls after two warm-up calls: wall time, or with
/// `BENCH_CPU=1` in the environment the process's CPU time, which other jobs on a shared
/// machine disturb far less (use it with `RAYON_NUM_THREADS=1` to compare kernels' work).
pub fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let cpu = std::env::var_os("BENCH_CPU").is_some();
    let now = || {
        if cpu {
            process_cpu_secs()
        } else {
            START.with(|s| s.elapsed().as_secs_f64())
        }
    };
    f();
    f();
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = now();
            f();
            now() - s
        })
        .collect();
    convscope::cli::bench::median(&mut t)
}

thread_local! {
    /// Origin of the wall clock readings.
    static START: Instant = Instant::now();
}
