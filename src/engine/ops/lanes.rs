//! Vectorisable reductions over f32 slices.
//!
//! A plain `iter().sum()` over f32 is one serial chain of dependent adds (the compiler may not
//! reorder float additions), about 4 cycles per element. These helpers keep `LANES` independent
//! partial sums, which LLVM maps onto SIMD registers, and add the lanes in a fixed order at the
//! end: the result depends only on the data, never on threads, so it is deterministic.
//! Each is compiled once per instruction-set level and chosen at run time (`simd::kernel!`).

use crate::engine::simd;

/// Independent partial sums per reduction (one AVX-512 register of f32).
const LANES: usize = 16;

/// Adds the lanes in a fixed order, then the tail elements.
#[inline(always)]
fn finish(acc: [f32; LANES], tail: impl Iterator<Item = f32>) -> f32 {
    let mut s = 0.0f32;
    for a in acc {
        s += a;
    }
    for t in tail {
        s += t;
    }
    s
}

simd::kernel! {
    /// Σ v.
    pub(crate) fn sum(v: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let chunks = v.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        finish(acc, tail.iter().copied())
    }
}

simd::kernel! {
    /// Σ (v − shift)².
    pub(crate) fn sum_sq_dev(v: &[f32], shift: f32) -> f32 {
        let mut acc = [0.0f32; LANES];
        let chunks = v.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            for (a, &x) in acc.iter_mut().zip(c) {
                let d = x - shift;
                *a += d * d;
            }
        }
        finish(acc, tail.iter().map(|&x| (x - shift) * (x - shift)))
    }
}

simd::kernel! {
    /// (Σ g, Σ g · (x − shift)) over two slices of equal length.
    pub(crate) fn sum_and_dot_dev(g: &[f32], x: &[f32], shift: f32) -> (f32, f32) {
        let mut sg = [0.0f32; LANES];
        let mut sgx = [0.0f32; LANES];
        let gc = g.chunks_exact(LANES);
        let xc = x.chunks_exact(LANES);
        let (gt, xt) = (gc.remainder(), xc.remainder());
        for (gl, xl) in gc.zip(xc) {
            for i in 0..LANES {
                sg[i] += gl[i];
                sgx[i] += gl[i] * (xl[i] - shift);
            }
        }
        (
            finish(sg, gt.iter().copied()),
            finish(sgx, gt.iter().zip(xt).map(|(&a, &b)| a * (b - shift))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::test_tensor;

    /// Each reduction against an f64 sum of the same terms, on lengths around the lane count,
    /// at every instruction-set level of this CPU.
    #[test]
    fn reductions_match_f64_sums() {
        simd::for_each_level(1, |_| reductions_match_f64_sums_here());
    }

    fn reductions_match_f64_sums_here() {
        for len in [0usize, 1, 15, 16, 17, 100, 4096 + 7] {
            let x = test_tensor(&[len.max(1)], len as u64);
            let g = test_tensor(&[len.max(1)], len as u64 + 1);
            let (x, g) = (&x.data()[..len], &g.data()[..len]);
            let shift = 0.25f32;
            let want_sum: f64 = x.iter().map(|&v| v as f64).sum();
            let want_sq: f64 = x.iter().map(|&v| (v as f64 - 0.25).powi(2)).sum();
            let want_g: f64 = g.iter().map(|&v| v as f64).sum();
            let want_gx: f64 = g
                .iter()
                .zip(x)
                .map(|(&a, &b)| a as f64 * (b as f64 - 0.25))
                .sum();
            let tol = 1e-5 * (len as f64 + 1.0);
            assert!((sum(x) as f64 - want_sum).abs() <= tol, "sum, len {len}");
            assert!(
                (sum_sq_dev(x, shift) as f64 - want_sq).abs() <= tol,
                "sum_sq_dev, len {len}"
            );
            let (sg, sgx) = sum_and_dot_dev(g, x, shift);
            assert!((sg as f64 - want_g).abs() <= tol, "sum g, len {len}");
            assert!((sgx as f64 - want_gx).abs() <= tol, "sum gx, len {len}");
        }
    }
}
