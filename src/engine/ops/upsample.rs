//! Nearest-neighbour upsampling of NCHW planes by whole factors (ONNX Resize / Upsample in
//! nearest mode with integer scales, PyTorch's `nn.Upsample(scale_factor=k)`): forward and
//! backward.
//!
//! Output pixel (i, j) copies input pixel (i / sh, j / sw) (integer division); the backward
//! pass sums each sh × sw block of d_y into its source pixel.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::{Tensor, checked_numel, dims4};
use crate::op_bail;

/// Whole upsampling factors along height and width (each ≥ 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsampleSpec {
    pub sh: usize,
    pub sw: usize,
}

/// `[n, c, h, w]` → `[n, c, h·sh, w·sw]`.
pub fn output_shape(s: &UpsampleSpec, x: &[usize]) -> Result<Vec<usize>, OpError> {
    let [n, c, h, w] = dims4(x)?;
    if s.sh == 0 || s.sw == 0 {
        op_bail!(
            "upsampling factors must be at least 1, got {}x{}",
            s.sh,
            s.sw
        );
    }
    let out = match (h.checked_mul(s.sh), w.checked_mul(s.sw)) {
        (Some(oh), Some(ow)) => vec![n, c, oh, ow],
        _ => op_bail!("upsampling {x:?} by {}x{} overflows", s.sh, s.sw),
    };
    if checked_numel(&out).is_none() {
        op_bail!("upsampling {x:?} by {}x{} overflows", s.sh, s.sw);
    }
    Ok(out)
}

/// y `[n, c, h·sh, w·sw]` from x `[n, c, h, w]`, parallel over planes.
pub fn forward(s: &UpsampleSpec, x: &Tensor) -> Result<Tensor, OpError> {
    let shape = output_shape(s, x.shape())?;
    let [_, _, h, w] = dims4(x.shape())?;
    let (oh, ow) = (shape[2], shape[3]);
    let mut y = Tensor::try_zeros(&shape)?;
    if h * w == 0 {
        return Ok(y);
    }
    y.data_mut()
        .par_chunks_mut(oh * ow)
        .zip(x.data().par_chunks(h * w))
        .for_each(|(yp, xp)| {
            for (i, row) in yp.chunks_exact_mut(ow).enumerate() {
                let src = &xp[(i / s.sh) * w..][..w];
                for (out, &v) in row.chunks_exact_mut(s.sw).zip(src) {
                    out.fill(v);
                }
            }
        });
    Ok(y)
}

/// d_x `x_shape` from d_y `[n, c, h·sh, w·sw]`: each block of sh × sw gradients summed.
pub fn backward(s: &UpsampleSpec, x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let shape = output_shape(s, x_shape)?;
    if d_y.shape() != shape.as_slice() {
        op_bail!(
            "upsampling gradient has shape {:?}, expected {shape:?}",
            d_y.shape()
        );
    }
    let [_, _, h, w] = dims4(x_shape)?;
    let (oh, ow) = (shape[2], shape[3]);
    let mut d_x = Tensor::try_zeros(x_shape)?;
    if h * w == 0 {
        return Ok(d_x);
    }
    d_x.data_mut()
        .par_chunks_mut(h * w)
        .zip(d_y.data().par_chunks(oh * ow))
        .for_each(|(xp, yp)| {
            for (i, row) in yp.chunks_exact(ow).enumerate() {
                let dst = &mut xp[(i / s.sh) * w..][..w];
                for (d, block) in dst.iter_mut().zip(row.chunks_exact(s.sw)) {
                    *d += block.iter().sum::<f32>();
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

    /// Against the definition y[n, c, i, j] = x[n, c, i / sh, j / sw].
    #[test]
    fn matches_the_definition() {
        let x = test_tensor(&[2, 3, 4, 5], 1);
        let s = UpsampleSpec { sh: 2, sw: 3 };
        let y = forward(&s, &x).unwrap();
        assert_eq!(y.shape(), &[2, 3, 8, 15]);
        for p in 0..6 {
            for i in 0..8 {
                for j in 0..15 {
                    let want = x.data()[(p * 4 + i / 2) * 5 + j / 3];
                    assert_eq!(y.data()[(p * 8 + i) * 15 + j], want);
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (sh, sw) in [(2, 2), (1, 3), (3, 1)] {
            let x = test_tensor(&[1, 2, 3, 4], 7);
            let op = Op::Upsample(UpsampleSpec { sh, sw });
            assert_op_gradients(&op, &[x], &[true], Mode::Eval, 1e-2);
        }
    }

    #[test]
    fn bad_factors_and_shapes_are_errors() {
        assert!(output_shape(&UpsampleSpec { sh: 0, sw: 1 }, &[1, 1, 2, 2]).is_err());
        assert!(output_shape(&UpsampleSpec { sh: 2, sw: 2 }, &[1, 2, 2]).is_err());
        assert!(
            output_shape(
                &UpsampleSpec {
                    sh: usize::MAX,
                    sw: 2
                },
                &[1, 1, 2, 2]
            )
            .is_err()
        );
    }
}
