//! Inverted dropout: in training each element is zeroed with probability p and the rest are
//! scaled by 1/(1-p), so evaluation is the identity.
//!
//! The mask is counter-based: element i keeps iff `u(seed, i) >= p`, where `u` is the i-th
//! output of a SplitMix64 stream seeded with `seed`. Any chunking of the work therefore gives
//! the same mask, whatever the number of threads.

use rayon::prelude::*;

use super::elementwise::{CHUNK, par_zip_map};
use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

/// A uniform number in [0, 1) for element `i` of the stream `seed` (SplitMix64 output i).
#[inline(always)]
fn uniform(seed: u64, i: u64) -> f32 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // the top 24 bits, exactly representable in f32
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// Mask of `n` elements: 0 with probability p, otherwise 1/(1-p).
pub fn mask(p: f32, n: usize, seed: u64) -> Result<Vec<f32>, OpError> {
    if !(0.0..1.0).contains(&p) {
        crate::op_bail!("dropout probability must be in [0, 1), got {p}");
    }
    let scale = 1.0 / (1.0 - p);
    let mut m = vec![0.0f32; n];
    m.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, chunk)| {
        let start = (ci * CHUNK) as u64;
        for (j, v) in chunk.iter_mut().enumerate() {
            *v = if uniform(seed, start + j as u64) >= p {
                scale
            } else {
                0.0
            };
        }
    });
    Ok(m)
}

/// Returns (y, mask) where mask holds 0 or 1/(1-p) per element; deterministic in `seed`.
pub fn forward(p: f32, x: &Tensor, seed: u64) -> Result<(Tensor, Vec<f32>), OpError> {
    let m = mask(p, x.numel(), seed)?;
    // (same shape as x)
    let y = Tensor::new(x.shape().to_vec(), par_zip_map(x.data(), &m, |v, k| v * k))?;
    Ok((y, m))
}

/// d_x = d_y * mask.
pub fn backward(mask: &[f32], d_y: &Tensor) -> Result<Tensor, OpError> {
    if mask.len() != d_y.numel() {
        crate::op_bail!(
            "dropout mask has {} elements but the gradient {:?} has {}",
            mask.len(),
            d_y.shape(),
            d_y.numel()
        );
    }
    Tensor::new(
        d_y.shape().to_vec(),
        par_zip_map(d_y.data(), mask, |g, k| g * k),
    )
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

    #[test]
    fn mask_is_deterministic_scaled_and_near_p() {
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
