//! Small tensor helpers shared by the explanation methods: batching variants of one image and
//! a Gaussian blur.

use super::{ExplainError, ExplainResult};
use crate::engine::Tensor;

/// Stacks `count` images `(c, h, w)` made by `make(i, out)` into a batch `[count, c, h, w]`.
pub(crate) fn batch_of(
    chw: [usize; 3],
    count: usize,
    mut make: impl FnMut(usize, &mut [f32]),
) -> ExplainResult<Tensor> {
    let [c, h, w] = chw;
    let mut t = Tensor::try_zeros(&[count, c, h, w])?; // (count, c, h, w)
    for (i, item) in t.data_mut().chunks_exact_mut(c * h * w).enumerate() {
        make(i, item);
    }
    Ok(t)
}

/// Checks a batch size option.
pub(crate) fn check_batch(batch: usize) -> ExplainResult<usize> {
    if batch == 0 {
        return Err(ExplainError::invalid("the batch size must be at least 1"));
    }
    Ok(batch)
}

/// Separable Gaussian blur of each plane of `(planes, h, w)` data, standard deviation `sigma`
/// pixels, kernel radius ceil(3 sigma), edges clamped. `sigma <= 0` copies.
pub(crate) fn gaussian_blur(data: &[f32], h: usize, w: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 || h == 0 || w == 0 {
        return data.to_vec();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let mut out = vec![0.0f32; data.len()];
    let mut tmp = vec![0.0f32; h * w]; // (h, w)
    for (src, dst) in data.chunks_exact(h * w).zip(out.chunks_exact_mut(h * w)) {
        for y in 0..h {
            for x in 0..w {
                tmp[y * w + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, kv)| kv * src[y * w + clamp(x as isize + k as isize - radius, w)])
                    .sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                dst[y * w + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, kv)| kv * tmp[clamp(y as isize + k as isize - radius, h) * w + x])
                    .sum();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_constants_and_mass() {
        let flat = vec![2.0f32; 5 * 6];
        assert!(
            gaussian_blur(&flat, 5, 6, 1.5)
                .iter()
                .all(|&v| (v - 2.0).abs() < 1e-5)
        );
        let mut spike = vec![0.0f32; 11 * 11];
        spike[5 * 11 + 5] = 1.0;
        let b = gaussian_blur(&spike, 11, 11, 1.0);
        let sum: f32 = b.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4 && b[5 * 11 + 5] < 0.2 && b[5 * 11 + 5] > b[5 * 11 + 6]);
    }
}
