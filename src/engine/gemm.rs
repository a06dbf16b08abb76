//! The single place where matrices are multiplied.
//!
//! Matrices are strided views: element (i, j) of a matrix lives at `data[i * rs + j * cs]`, so
//! a transpose is a swap of strides and costs nothing.
//!
//! The fast path is the `gemm` crate's kernels (AVX-512, AVX2 + FMA, NEON, scalar; rayon
//! parallelism), chosen by measurement against `matrixmultiply`: see BENCHMARKS.md,
//! "GEMM and convolution". Which kernels run follows [`simd::level`], not the crate's own
//! detection, so that `CONVSCOPE_SIMD` caps the products too.

use crate::engine::simd::{self, Level};

/// A read-only strided matrix `[rows, cols]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Distance between rows (elements).
    pub rs: usize,
    /// Distance between columns (elements).
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element the strides address lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1).checked_mul(self.rs).and_then(|r| {
            (self.cols - 1)
                .checked_mul(self.cs)
                .and_then(|c| r.checked_add(c))
        });
        matches!(last, Some(l) if l < self.data.len())
    }
}

/// Whether a product may use the rayon pool (callers already inside a parallel loop say no).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallelism {
    Sequential,
    Rayon,
}

/// Below this many multiply-adds a product stays on the calling thread: forking costs more
/// than it saves (about 10 µs of work on one core).
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// `c = beta * c + alpha * a @ b` with c row-major `[m, n]`, a `[m, k]`, b `[k, n]`.
/// `beta == 0` overwrites c without reading it (so NaNs in c do not propagate).
///
/// Panics if the shapes disagree or a view's strides reach outside its slice: callers derive
/// these from validated tensor shapes, so a mismatch is a bug in the engine, not user input.
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32], par: Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(
        b.rows, k,
        "sgemm: a is [{m}, {k}] but b is [{}, {n}]",
        b.rows
    );
    assert!(
        c.len() >= m * n,
        "sgemm: c holds {} elements, [{m}, {n}] needs {}",
        c.len(),
        m * n
    );
    assert!(
        a.in_bounds() && b.in_bounds(),
        "sgemm: a strided view reaches outside its data"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale_in_place(&mut c[..m * n], beta);
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if par == Parallelism::Rayon && threads > 1 && m * n * k >= PARALLEL_MIN_MACS
    {
        gemm_common::Parallelism::Rayon(threads)
    } else {
        gemm_common::Parallelism::None
    };
    // SAFETY: the asserts above guarantee that every element addressed through (rows, cols,
    // rs, cs) lies inside `a.data` / `b.data`, and that c holds the row-major [m, n] output.
    // `c` is a unique borrow, so it does not alias a or b. The crate's `alpha` scales dst
    // and `beta` scales the product; `read_dst == false` makes it ignore (not read) dst.
    unsafe {
        gemm_at(
            simd::level(),
            Product {
                a,
                b,
                dst: c.as_mut_ptr(),
                alpha,
                beta,
                parallelism,
            },
        )
    };
}

/// One call's operands for [`gemm_at`], named as for [`sgemm`]: dst `[a.rows, b.cols]` =
/// beta · dst + alpha · a @ b, dst read only when beta ≠ 0.
struct Product<'a> {
    a: MatRef<'a>,
    b: MatRef<'a>,
    dst: *mut f32,
    alpha: f32,
    beta: f32,
    parallelism: gemm_common::Parallelism,
}

/// The `gemm` crate's own kernels for `level`, called directly: the crate picks its kernels by
/// what the CPU has and cannot be capped, so `CONVSCOPE_SIMD=avx2` on an AVX-512 machine would
/// otherwise still multiply with AVX-512. Each arm is what `gemm::gemm` runs for that level
/// (`gemm_common::gemm_def!`): the same driver, micro-kernels and SIMD token. Like `gemm::gemm`
/// it multiplies a row-major product as its transpose, dstᵀ `[n, m]` = bᵀ @ aᵀ: the
/// micro-kernels load and store whole vectors down a column, so the destination's unit stride
/// must run along the driver's rows. Called the other way round (session 8 to 9), every store
/// of a register tile was a strided scatter and the packing of the operands was chosen for
/// the wrong sides: the smile CNN's 16x75x4096 product ran at 30 GFLOP/s on one core at AVX2
/// instead of 55, the 1024³ square at AVX-512 at 62 instead of 143 (`benches/gemm.rs`).
///
/// # Safety
/// As `gemm::gemm`: every element the views address lies inside their data; `dst` holds the
/// row-major `[m, n]` output and aliases neither; `level` is supported by the CPU.
unsafe fn gemm_at(level: Level, p: Product<'_>) {
    use gemm_common::gemm::gemm_basic_generic;
    use gemm_common::simd::MixedSimd;
    #[cfg(target_arch = "x86_64")]
    use gemm_f32::microkernel::{avx512f, fma};

    let (m, k, n) = (p.a.rows, p.a.cols, p.b.cols);
    macro_rules! run {
        ($simd:ty, $ukr:path, $lanes:expr) => {{
            use $ukr as ukr;
            let Some(token) = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new() else {
                unreachable!("simd::level() returned a level this CPU lacks");
            };
            // SAFETY: the caller's contract, as for `gemm::gemm`.
            unsafe {
                gemm_basic_generic::<
                    _,
                    f32,
                    { $lanes },
                    { ukr::MR_DIV_N * $lanes },
                    { ukr::NR },
                    { ukr::MR_DIV_N },
                    { ukr::H_M },
                    { ukr::H_N },
                >(
                    token,
                    // dstᵀ = bᵀ @ aᵀ: m' = n, n' = m; (cs, rs) of each operand's transpose
                    n,
                    m,
                    k,
                    p.dst,
                    n as isize,
                    1,
                    p.beta != 0.0,
                    p.b.data.as_ptr(),
                    p.b.rs as isize,
                    p.b.cs as isize,
                    p.a.data.as_ptr(),
                    p.a.rs as isize,
                    p.a.cs as isize,
                    p.beta,
                    p.alpha,
                    false,
                    false,
                    false,
                    // a multiply and an add: only the scalar kernels call it, and there
                    // `f32::mul_add` would be a libm call per element
                    |x, y, z| x * y + z,
                    &ukr::UKR,
                    &ukr::H_UKR,
                    false,
                    p.parallelism,
                )
            }
        }};
    }

    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => run!(gemm_common::simd::V4, avx512f::f32, 16),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => run!(gemm_common::simd::V3, fma::f32, 8),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => run!(
            gemm_common::simd::Scalar,
            gemm_f32::microkernel::neon::f32,
            4
        ),
        // the portable packs of four: SSE2 / NEON by the compiler, a multiply and an add
        _ => run!(gemm_common::simd::Scalar, crate::engine::gemm_portable, 4),
    }
}

/// `c *= beta`, where `beta == 0` writes zeros (NaN-safe), for products with nothing to add.
fn scale_in_place(c: &mut [f32], beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else if beta != 1.0 {
        c.iter_mut().for_each(|v| *v *= beta);
    }
}

/// The reference every fast path is tested against: the textbook triple loop.
pub fn sgemm_naive(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    debug_assert_eq!(b.rows, k);
    debug_assert!(c.len() >= m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
            }
            let dst = &mut c[i * n + j];
            *dst = if beta == 0.0 {
                alpha * acc
            } else {
                beta * *dst + alpha * acc
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::test_values;
    use proptest::prelude::*;

    /// A `[rows, cols]` view over fresh data, stored transposed (column-major) when `trans`.
    fn view(data: &[f32], rows: usize, cols: usize, trans: bool) -> MatRef<'_> {
        if trans {
            MatRef::row_major(data, cols, rows).t()
        } else {
            MatRef::row_major(data, rows, cols)
        }
    }

    fn max_abs_diff(x: &[f32], y: &[f32]) -> f32 {
        x.iter()
            .zip(y)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
    }

    fn check_against_naive(
        (m, k, n): (usize, usize, usize),
        (ta, tb): (bool, bool),
        alpha: f32,
        beta: f32,
        par: Parallelism,
        seed: u64,
    ) -> Result<(), TestCaseError> {
        let a = test_values(m * k, seed);
        let b = test_values(k * n, seed + 1);
        let mut c_fast = test_values(m * n, seed + 2);
        if beta == 0.0 {
            // beta == 0 must not read c: NaNs there would otherwise leak into the result.
            c_fast.fill(f32::NAN);
        }
        let mut c_ref = c_fast.clone();
        sgemm(
            alpha,
            view(&a, m, k, ta),
            view(&b, k, n, tb),
            beta,
            &mut c_fast,
            par,
        );
        sgemm_naive(
            alpha,
            view(&a, m, k, ta),
            view(&b, k, n, tb),
            beta,
            &mut c_ref,
        );
        prop_assert!(c_fast.iter().all(|v| v.is_finite()), "non-finite output");
        let scale = c_ref.iter().fold(1.0f32, |s, v| s.max(v.abs()));
        let diff = max_abs_diff(&c_fast, &c_ref);
        prop_assert!(
            diff <= 1e-5 * scale * (k as f32).sqrt().max(1.0),
            "diff {diff} scale {scale}"
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn sgemm_matches_naive(
            m in 0usize..40, k in 0usize..40, n in 0usize..40,
            ta: bool, tb: bool,
            alpha in prop::sample::select(vec![1.0f32, -0.5, 2.0, 0.0]),
            beta in prop::sample::select(vec![0.0f32, 1.0, 0.5, -2.0]),
            parallel: bool,
            seed in 0u64..1000,
        ) {
            let par = if parallel { Parallelism::Rayon } else { Parallelism::Sequential };
            simd::try_each_level(2, |level| {
                check_against_naive((m, k, n), (ta, tb), alpha, beta, par, seed)
                    .map_err(|e| TestCaseError::fail(format!("{level}: {e}")))
            })?;
        }
    }

    #[test]
    fn sgemm_matches_naive_on_a_parallel_sized_product() {
        // large enough to cross PARALLEL_MIN_MACS so the threaded path is exercised
        simd::for_each_level(2, |level| {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0)] {
                    if let Err(e) = check_against_naive(
                        (67, 131, 70),
                        (ta, tb),
                        alpha,
                        beta,
                        Parallelism::Rayon,
                        9,
                    ) {
                        panic!("{level}: {e}");
                    }
                }
            }
        });
    }

    #[test]
    fn beta_zero_with_empty_k_writes_zeros_over_nan() {
        let mut c = vec![f32::NAN; 6];
        sgemm(
            1.0,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 3),
            0.0,
            &mut c,
            Parallelism::Sequential,
        );
        assert_eq!(c, vec![0.0; 6]);
    }
}
