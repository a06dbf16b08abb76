//! Timing shared by the benchmark binaries (std::time only; no harness).

use std::time::Instant;

/// `BENCH_RUNS` from the environment, or `default`.
pub fn bench_runs(default: usize) -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// Median wall time (seconds) of `runs` calls after two warm-up calls.
pub fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    convscope::cli::bench::median(&mut t)
}
