//! Inverted dropout: in training each element is zeroed with probability p and the rest are
//! scaled by 1/(1-p), so evaluation is the identity.
//!
//! The mask is counter-based: element i keeps iff `u(seed, i) >= p`, where `u` is the i-th
//! output of a SplitMix64 stream seeded with `seed`. Any chunking of the work therefore gives
//! the same mask, whatever the number of threads.

use crate::engine::rng::{GOLDEN, mix64};
use crate::engine::simd;
use rayon::prelude::*;

use super::elementwise::CHUNK;
use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

/// The top 24 bits of output `i` of the SplitMix64 stream `seed`: a uniform integer in
/// [0, 2^24), i.e. a uniform number in [0, 1) in units of 2^-24.
#[inline(always)]
fn uniform24(seed: u64, i: u64) -> u32 {
    (mix64(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN))) >> 40) as u32
}

/// `1/(1-p)` and the 24-bit threshold `ceil(p * 2^24)` below which an element is dropped
/// (u / 2^24 >= p  <=>  u >= ceil(p * 2^24); the product is exact, a power-of-two scale).
fn scale_and_threshold(p: f32) -> Result<(f32, u32), OpError> {
    if !(0.0..1.0).contains(&p) {
        crate::op_bail!("dropout probability must be in [0, 1), got {p}");
    }
    Ok((1.0 / (1.0 - p), (p * (1u32 << 24) as f32).ceil() as u32))
}

simd::kernel! {
    /// Mask values of elements `start..start + m.len()`: 0 or `scale`. Compiled per
    /// instruction-set level (AVX-512 with DQ: 64-bit multiplies in vector registers).
    fn fill_mask(seed: u64, start: u64, threshold: u32, scale: f32, m: &mut [f32]) {
        for (j, v) in m.iter_mut().enumerate() {
            *v = if uniform24(seed, start + j as u64) >= threshold {
                scale
            } else {
                0.0
            };
        }
    }
}

simd::kernel! {
    /// `y = a * b` element-wise, compiled per instruction-set level.
    fn mul_into(a: &[f32], b: &[f32], y: &mut [f32]) {
        for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) {
            *o = u * v;
        }
    }
}

/// Mask of `n` elements: 0 with probability p, otherwise 1/(1-p).
pub fn mask(p: f32, n: usize, seed: u64) -> Result<Vec<f32>, OpError> {
    let (scale, threshold) = scale_and_threshold(p)?;
    let mut m = vec![0.0f32; n];
    m.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, chunk)| {
        fill_mask(seed, (ci * CHUNK) as u64, threshold, scale, chunk);
    });
    Ok(m)
}

/// Returns (y, mask) where mask holds 0 or 1/(1-p) per element; deterministic in `seed`.
/// One parallel pass: each chunk's mask is made and applied while it is in cache.
pub fn forward(p: f32, x: &Tensor, seed: u64) -> Result<(Tensor, Vec<f32>), OpError> {
    let (scale, threshold) = scale_and_threshold(p)?;
    let n = x.numel();
    let mut m = vec![0.0f32; n];
    let mut y = vec![0.0f32; n]; // (same shape as x)
    m.par_chunks_mut(CHUNK)
        .zip(y.par_chunks_mut(CHUNK))
        .zip(x.data().par_chunks(CHUNK))
        .enumerate()
        .for_each(|(ci, ((mc, yc), xc))| {
            fill_mask(seed, (ci * CHUNK) as u64, threshold, scale, mc);
            mul_into(xc, mc, yc);
        });
    Ok((Tensor::new(x.shape().to_vec(), y)?, m))
}

/// d_x = d_y * mask.
pub fn backward(mask: &[f32], d_y: &Tensor) -> Result<Tensor, OpError> {
    backward_owned(mask, d_y.clone())
}

/// d_x = d_y * mask, in d_y's buffer.
pub fn backward_owned(mask: &[f32], mut d_y: Tensor) -> Result<Tensor, OpError> {
    if mask.len() != d_y.numel() {
        crate::op_bail!(
            "dropout mask has {} elements but the gradient {:?} has {}",
            mask.len(),
            d_y.shape(),
            d_y.numel()
        );
    }
    d_y.data_mut()
        .par_chunks_mut(CHUNK)
        .zip(mask.par_chunks(CHUNK))
        .for_each(|(g, k)| mul_in_place(g, k));
    Ok(d_y)
}

simd::kernel! {
    /// `g = g * k` element-wise (the product of [`mul_into`]), per instruction-set level.
    fn mul_in_place(g: &mut [f32], k: &[f32]) {
        for (o, &v) in g.iter_mut().zip(k) {
            *o *= v;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{ForwardCtx, Mode, Op};

    #[test]
    fn rejects_bad_probabilities() {
        let x = test_tensor(&[4], 1);
        for p in [-0.1, 1.0, 1.5, f32::NAN] {
            assert!(forward(p, &x, 1).is_err(), "p = {p}");
        }
        assert!(backward(&[1.0; 3], &x).is_err());
    }

    /// At every instruction-set level of this CPU.
    #[test]
    fn mask_is_deterministic_scaled_and_near_p() {
        simd::for_each_level(2, |_| mask_is_deterministic_scaled_and_near_p_here());
    }

    fn mask_is_deterministic_scaled_and_near_p_here() {
        let n = 3 * CHUNK + 17;
        let a = mask(0.3, n, 42).unwrap();
        let b = mask(0.3, n, 42).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, mask(0.3, n, 43).unwrap());
        let scale = 1.0 / 0.7;
        assert!(a.iter().all(|&v| v == 0.0 || v == scale));
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        assert!((dropped - 0.3).abs() < 0.01, "dropped fraction {dropped}");
        // element i does not depend on n (counter-based)
        assert_eq!(&mask(0.3, 100, 42).unwrap()[..], &a[..100]);
        assert!(mask(0.0, 50, 1).unwrap().iter().all(|&v| v == 1.0));
    }

    /// The fused forward returns exactly `mask` and `x * mask`, across chunk boundaries.
    /// At every instruction-set level of this CPU.
    #[test]
    fn forward_is_input_times_mask() {
        simd::for_each_level(2, |_| forward_is_input_times_mask_here());
    }

    fn forward_is_input_times_mask_here() {
        let x = test_tensor(&[2, 3, CHUNK / 8 + 5, 9], 3);
        let (y, m) = forward(0.25, &x, 77).unwrap();
        assert_eq!(m, mask(0.25, x.numel(), 77).unwrap());
        for ((&yv, &xv), &k) in y.data().iter().zip(x.data()).zip(&m) {
            assert_eq!(yv.to_bits(), (xv * k).to_bits());
        }
        let d = backward(&m, &x).unwrap();
        assert_eq!(d, y);
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let n = 5 * CHUNK;
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let a = one.install(|| mask(0.5, n, 9).unwrap());
        assert_eq!(a, mask(0.5, n, 9).unwrap());
    }

    #[test]
    fn gradient_in_training() {
        let op = Op::Dropout { p: 0.4 };
        let x = test_tensor(&[2, 3, 4, 4], 5);
        assert_op_gradients(&op, std::slice::from_ref(&x), &[true], Mode::Train, 1e-2);
        assert_op_gradients(&op, std::slice::from_ref(&x), &[true], Mode::Eval, 1e-2);
        let ctx = ForwardCtx {
            mode: Mode::Eval,
            seed: 1,
        };
        assert_eq!(op.forward(&[&x], ctx).unwrap().y, x);
    }
}
