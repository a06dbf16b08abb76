//! Bilinear resizing of NCHW planes to any size (ONNX Resize in `linear` mode, PyTorch's
//! `F.interpolate(mode="bilinear")`): forward and backward.
//!
//! Output row i reads the source coordinate `src(i)` of its [`Coordinates`] rule, clamped to
//! `[0, in − 1]`, and mixes rows ⌊src⌋ and ⌊src⌋ + 1 (the last row twice at the edge) with
//! weights `1 − frac` and `frac`; columns likewise. The backward pass scatters each output
//! gradient to its four sources with the same weights.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::{Tensor, checked_numel, dims4};
use crate::op_bail;

/// How an output index maps to a source coordinate (ONNX `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Coordinates {
    /// `(i + 0.5) / scale − 0.5` (PyTorch's `align_corners=False`).
    HalfPixel,
    /// As `HalfPixel`, but 0 for an output of one pixel.
    PytorchHalfPixel,
    /// `i · (in − 1) / (out − 1)` (PyTorch's `align_corners=True`).
    AlignCorners,
    /// `i / scale`.
    Asymmetric,
}

/// The output size and the scales the coordinates use (ONNX keeps a given scale even where
/// `out / in` rounds differently).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BilinearSpec {
    pub out_h: usize,
    pub out_w: usize,
    pub scale_h: f32,
    pub scale_w: f32,
    pub coordinates: Coordinates,
}

/// `[n, c, h, w]` → `[n, c, out_h, out_w]`.
pub fn output_shape(s: &BilinearSpec, x: &[usize]) -> Result<Vec<usize>, OpError> {
    let [n, c, h, w] = dims4(x)?;
    if s.out_h == 0 || s.out_w == 0 || h == 0 || w == 0 {
        op_bail!(
            "bilinear resizing of {x:?} to {}x{} needs non-empty planes",
            s.out_h,
            s.out_w
        );
    }
    if !(s.scale_h > 0.0 && s.scale_w > 0.0 && s.scale_h.is_finite() && s.scale_w.is_finite()) {
        op_bail!(
            "bilinear resizing needs positive scales, got {}x{}",
            s.scale_h,
            s.scale_w
        );
    }
    let out = vec![n, c, s.out_h, s.out_w];
    if checked_numel(&out).is_none() {
        op_bail!("resizing {x:?} to {}x{} overflows", s.out_h, s.out_w);
    }
    Ok(out)
}

/// Per output index along one axis: the two source indices and their weights.
fn taps(n_in: usize, n_out: usize, scale: f32, coords: Coordinates) -> Vec<(usize, usize, f32)> {
    (0..n_out)
        .map(|i| {
            let i = i as f32;
            let src = match coords {
                Coordinates::HalfPixel => (i + 0.5) / scale - 0.5,
                Coordinates::PytorchHalfPixel if n_out > 1 => (i + 0.5) / scale - 0.5,
                Coordinates::PytorchHalfPixel => 0.0,
                Coordinates::AlignCorners if n_out > 1 => {
                    i * (n_in - 1) as f32 / (n_out - 1) as f32
                }
                Coordinates::AlignCorners => 0.0,
                Coordinates::Asymmetric => i / scale,
            };
            let src = src.clamp(0.0, (n_in - 1) as f32);
            let lo = (src.floor() as usize).min(n_in - 1);
            let hi = (lo + 1).min(n_in - 1);
            (lo, hi, src - lo as f32)
        })
        .collect()
}

/// y `[n, c, out_h, out_w]` from x `[n, c, h, w]`, parallel over planes.
pub fn forward(s: &BilinearSpec, x: &Tensor) -> Result<Tensor, OpError> {
    let shape = output_shape(s, x.shape())?;
    let [_, _, h, w] = dims4(x.shape())?;
    let (rows, cols) = (
        taps(h, s.out_h, s.scale_h, s.coordinates),
        taps(w, s.out_w, s.scale_w, s.coordinates),
    );
    let mut y = Tensor::try_zeros(&shape)?;
    y.data_mut()
        .par_chunks_mut(s.out_h * s.out_w)
        .zip(x.data().par_chunks(h * w))
        .for_each(|(yp, xp)| {
            for (row, &(y0, y1, fy)) in yp.chunks_exact_mut(s.out_w).zip(&rows) {
                let (a, b) = (&xp[y0 * w..][..w], &xp[y1 * w..][..w]);
                for (out, &(x0, x1, fx)) in row.iter_mut().zip(&cols) {
                    let top = a[x0] + (a[x1] - a[x0]) * fx;
                    let bottom = b[x0] + (b[x1] - b[x0]) * fx;
                    *out = top + (bottom - top) * fy;
                }
            }
        });
    Ok(y)
}

/// d_x `x_shape` from d_y `[n, c, out_h, out_w]`: each output gradient scattered to its four
/// sources with the forward weights.
pub fn backward(s: &BilinearSpec, x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let shape = output_shape(s, x_shape)?;
    if d_y.shape() != shape.as_slice() {
        op_bail!(
            "bilinear resizing gradient has shape {:?}, expected {shape:?}",
            d_y.shape()
        );
    }
    let [_, _, h, w] = dims4(x_shape)?;
    let (rows, cols) = (
        taps(h, s.out_h, s.scale_h, s.coordinates),
        taps(w, s.out_w, s.scale_w, s.coordinates),
    );
    let mut d_x = Tensor::try_zeros(x_shape)?;
    d_x.data_mut()
        .par_chunks_mut(h * w)
        .zip(d_y.data().par_chunks(s.out_h * s.out_w))
        .for_each(|(xp, yp)| {
            for (row, &(y0, y1, fy)) in yp.chunks_exact(s.out_w).zip(&rows) {
                for (&g, &(x0, x1, fx)) in row.iter().zip(&cols) {
                    let (top, bottom) = (g * (1.0 - fy), g * fy);
                    xp[y0 * w + x0] += top * (1.0 - fx);
                    xp[y0 * w + x1] += top * fx;
                    xp[y1 * w + x0] += bottom * (1.0 - fx);
                    xp[y1 * w + x1] += bottom * fx;
                }
            }
        });
    Ok(d_x)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    fn spec(out: [usize; 2], scale: [f32; 2], coordinates: Coordinates) -> BilinearSpec {
        BilinearSpec {
            out_h: out[0],
            out_w: out[1],
            scale_h: scale[0],
            scale_w: scale[1],
            coordinates,
        }
    }

    /// Twice the size with half-pixel centres: the first output of each pair sits a quarter
    /// pixel before its source (clamped at the edge), the second a quarter after.
    #[test]
    fn doubling_with_half_pixel_centres() {
        let x = Tensor::new(vec![1, 1, 1, 3], vec![0.0, 4.0, 8.0]).unwrap();
        let y = forward(&spec([1, 6], [1.0, 2.0], Coordinates::HalfPixel), &x).unwrap();
        assert_eq!(y.data(), &[0.0, 1.0, 3.0, 5.0, 7.0, 8.0]);
        let y = forward(
            &spec([1, 5], [1.0, 5.0 / 3.0], Coordinates::AlignCorners),
            &x,
        )
        .unwrap();
        assert_eq!(y.data(), &[0.0, 2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (out, scale, c) in [
            ([7, 5], [7.0 / 4.0, 5.0 / 3.0], Coordinates::HalfPixel),
            ([2, 2], [0.5, 2.0 / 3.0], Coordinates::PytorchHalfPixel),
            ([6, 9], [1.5, 3.0], Coordinates::AlignCorners),
            ([8, 6], [2.0, 2.0], Coordinates::Asymmetric),
        ] {
            let op = Op::Bilinear(spec(out, scale, c));
            let x = test_tensor(&[2, 2, 4, 3], 3);
            assert_op_gradients(&op, &[x], &[true], Mode::Eval, 1e-2);
        }
    }
}
