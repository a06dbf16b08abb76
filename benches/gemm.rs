//! GEMM candidates on the shapes convolutions produce: `cargo bench --bench gemm`.
//!
//! Prints, for 1 and 2 threads, the median GFLOP/s (2·m·k·n / time) of our `sgemm` (the `gemm`
//! crate) and of `matrixmultiply` (with its `threading` feature), both on row-major operands.

mod common;

use common::median_secs;
use convscope::engine::gemm::{MatRef, Parallelism, sgemm};

/// (label, m, k, n)
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("3x3 64->64 @56x56", 64, 576, 3136),
    ("3x3 256->256 @14x14", 256, 2304, 196),
    ("square 1024", 1024, 1024, 1024),
    ("smile conv1 5x5 3->16 @64x64", 16, 75, 4096),
    ("smile conv2 3x3 16->32 @32x32", 32, 144, 1024),
    ("1x1 144->24 @56x56", 24, 144, 3136),
];

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 16) as f32 / 65536.0 - 0.5
        })
        .collect()
}

fn main() {
    common::init();
    if let Ok(spec) = std::env::var("MM_CHILD") {
        run_mm_child(&spec);
        return;
    }
    let runs = common::bench_runs(21);
    println!(
        "{:<32} {:>3} {:>12} {:>16}",
        "shape (m, k, n)", "thr", "gemm GF/s", "matrixmult GF/s"
    );
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("rayon pool");
        for &(label, m, k, n) in SHAPES {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let mut c = vec![0.0f32; m * n];
            let flops = 2.0 * (m * k * n) as f64;
            let ours = pool.install(|| {
                median_secs(runs, || {
                    sgemm(
                        1.0,
                        MatRef::row_major(&a, m, k),
                        MatRef::row_major(&b, k, n),
                        0.0,
                        &mut c,
                        Parallelism::Rayon,
                    )
                })
            });
            // matrixmultiply reads its thread count from MATMUL_NUM_THREADS once per process,
            // so it is run in a child process per thread count (see `mm_child`).
            let mm = mm_child(threads, m, k, n, runs);
            println!(
                "{:<32} {:>3} {:>12.1} {:>16}",
                format!("{label} ({m},{k},{n})"),
                threads,
                flops / ours / 1e9,
                mm.map_or("n/a".to_string(), |s| format!("{:.1}", flops / s / 1e9))
            );
        }
    }
}

/// Times matrixmultiply in a child process with `MATMUL_NUM_THREADS=threads`.
fn mm_child(threads: usize, m: usize, k: usize, n: usize, runs: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe)
        .env("MM_CHILD", format!("{m},{k},{n},{runs}"))
        .env("MATMUL_NUM_THREADS", threads.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Child side of [`mm_child`]: prints the median seconds of one matrixmultiply product.
fn run_mm_child(spec: &str) {
    let v: Vec<usize> = spec.split(',').filter_map(|s| s.parse().ok()).collect();
    let &[m, k, n, runs] = v.as_slice() else {
        return;
    };
    let a = values(m * k, 1);
    let b = values(k * n, 2);
    let mut c = vec![0.0f32; m * n];
    let secs = median_secs(runs, || {
        // SAFETY: a is [m, k], b is [k, n], c is [m, n], all row-major and distinct.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    });
    println!("{secs}");
}
