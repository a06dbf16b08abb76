//! Regularisers of the dream image `(3, h, w)` in [0, 1], each returning its value and adding
//! its gradient (times a weight) into a buffer. All are means, so a weight means the same at
//! any image size.

use crate::explain::util::gaussian_blur;

/// Total variation: the mean absolute difference between horizontal and vertical neighbours.
/// Adds `weight · d tv / d x` to `grad`.
pub fn total_variation(x: &[f32], h: usize, w: usize, weight: f32, grad: &mut [f32]) -> f32 {
    let planes = x.len() / (h * w).max(1);
    let pairs = planes * (h * w.saturating_sub(1) + h.saturating_sub(1) * w);
    if pairs == 0 {
        return 0.0;
    }
    let n = pairs as f32;
    let mut sum = 0.0f32;
    let mut pair = |a: usize, b: usize, grad: &mut [f32]| {
        let d = x[b] - x[a];
        sum += d.abs();
        let g = weight * d.signum() * f32::from(u8::from(d != 0.0)) / n;
        grad[b] += g;
        grad[a] -= g;
    };
    for p in 0..planes {
        for y in 0..h {
            for i in 0..w {
                let at = (p * h + y) * w + i;
                if i + 1 < w {
                    pair(at, at + 1, grad);
                }
                if y + 1 < h {
                    pair(at, at + w, grad);
                }
            }
        }
    }
    sum / n
}

/// Mean squared distance from mid-grey (0.5). Adds `weight · d/dx` to `grad`.
pub fn l2(x: &[f32], weight: f32, grad: &mut [f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    let n = x.len() as f32;
    let mut sum = 0.0;
    for (g, &v) in grad.iter_mut().zip(x) {
        sum += (v - 0.5) * (v - 0.5);
        *g += weight * 2.0 * (v - 0.5) / n;
    }
    sum / n
}

/// Lucid's `blur_input_each_step`: the penalty 0.5 · mean (x − stop_gradient(blur(x)))², whose
/// gradient pulls each pixel towards its blurred neighbourhood (high frequencies fade).
/// Adds `weight · (x − blur(x)) / n` to `grad`.
pub fn blur(x: &[f32], h: usize, w: usize, sigma: f32, weight: f32, grad: &mut [f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    let blurred = gaussian_blur(x, h, w, sigma);
    let n = x.len() as f32;
    let mut sum = 0.0;
    for ((g, &v), b) in grad.iter_mut().zip(x).zip(blurred) {
        let d = v - b;
        sum += 0.5 * d * d;
        *g += weight * d / n;
    }
    sum / n
}
