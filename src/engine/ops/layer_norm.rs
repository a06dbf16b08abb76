//! Layer normalisation over the trailing axes `axis..` (ONNX LayerNormalization, PyTorch's
//! `nn.LayerNorm`): each row of `d = x.shape[axis..].product()` elements is normalised by its
//! own mean and (biased) variance, then scaled and shifted element-wise.
//!
//! Shapes: x `[.., d_axis, ..]` (any rank), scale and bias `x.shape[axis..]`; y as x. The
//! row statistics are summed in f64 and recomputed once by the backward (one pass over x;
//! keeping them would need a saved-state variant for one op that vision transformers use a
//! few dozen times per pass).

use rayon::prelude::*;

use super::shape::rows_per_task;
use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

/// Checks the operand shapes; returns the output shape (x's).
pub fn output_shape(
    axis: usize,
    x: &[usize],
    scale: &[usize],
    bias: Option<&[usize]>,
) -> Result<Vec<usize>, OpError> {
    if axis == 0 || axis >= x.len() {
        crate::op_bail!(
            "layer norm over axes {axis}.. of a rank-{} input (needs 1 <= axis < rank)",
            x.len()
        );
    }
    let trailing = &x[axis..];
    if scale != trailing || bias.is_some_and(|b| b != trailing) {
        crate::op_bail!(
            "layer norm scale {scale:?} / bias {bias:?} must have the trailing shape {trailing:?}"
        );
    }
    Ok(x.to_vec())
}

/// Mean and 1/√(var + eps) of one row.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / d;
    (mean as f32, (1.0 / (var + f64::from(eps)).sqrt()) as f32)
}

/// y = (x − mean) / √(var + eps) · scale + bias, per row of `x.shape[axis..]`.
pub fn forward(
    axis: usize,
    eps: f32,
    x: &Tensor,
    scale: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    let shape = output_shape(axis, x.shape(), scale.shape(), bias.map(|b| b.shape()))?;
    let d: usize = x.shape()[axis..].iter().product();
    let mut y = Tensor::try_zeros(&shape)?;
    if d == 0 {
        return Ok(y);
    }
    let (g, b) = (scale.data(), bias.map(|b| b.data()));
    y.data_mut()
        .par_chunks_mut(d)
        .with_min_len(rows_per_task(d))
        .zip(x.data().par_chunks(d))
        .for_each(|(yr, xr)| {
            let (mean, inv_std) = row_stats(xr, eps);
            for (i, (o, &v)) in yr.iter_mut().zip(xr).enumerate() {
                *o = (v - mean) * inv_std * g[i] + b.map_or(0.0, |b| b[i]);
            }
        });
    Ok(y)
}

/// `[d_x, d_scale, d_bias]` (d_bias only with a bias), each computed iff `needs[i]`:
/// with x̂ = (x − mean)·inv_std and g = d_y·scale per row,
/// d_x = inv_std · (g − mean(g) − x̂ · mean(g·x̂)); d_scale = Σ_rows d_y·x̂; d_bias = Σ_rows d_y.
pub fn backward(
    axis: usize,
    eps: f32,
    x: &Tensor,
    scale: &Tensor,
    has_bias: bool,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    output_shape(axis, x.shape(), scale.shape(), None)?;
    if d_y.shape() != x.shape() {
        crate::op_bail!(
            "layer norm gradient has shape {:?}, expected {:?}",
            d_y.shape(),
            x.shape()
        );
    }
    let need = |i: usize| needs.get(i).copied().unwrap_or(false);
    let d: usize = x.shape()[axis..].iter().product();
    let g = scale.data();
    // (mean, inv_std) of every row, once for d_x and d_scale
    let stats: Vec<(f32, f32)> = if d > 0 && (need(0) || need(1)) {
        x.data().par_chunks(d).map(|r| row_stats(r, eps)).collect()
    } else {
        Vec::new()
    };
    let d_x = if need(0) {
        let mut d_x = Tensor::try_zeros(x.shape())?;
        if d > 0 {
            d_x.data_mut()
                .par_chunks_mut(d)
                .with_min_len(rows_per_task(d))
                .zip(x.data().par_chunks(d).zip(d_y.data().par_chunks(d)))
                .zip(stats.par_iter())
                .for_each(|((dxr, (xr, dyr)), &(mean, inv_std))| {
                    let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
                    for i in 0..d {
                        let gi = f64::from(dyr[i] * g[i]);
                        sum_g += gi;
                        sum_gx += gi * f64::from((xr[i] - mean) * inv_std);
                    }
                    let (mean_g, mean_gx) = ((sum_g / d as f64) as f32, (sum_gx / d as f64) as f32);
                    for i in 0..d {
                        let xhat = (xr[i] - mean) * inv_std;
                        dxr[i] = inv_std * (dyr[i] * g[i] - mean_g - xhat * mean_gx);
                    }
                });
        }
        Some(d_x)
    } else {
        None
    };
    let d_scale = if need(1) {
        let mut acc = vec![0.0f64; d];
        for ((xr, dyr), &(mean, inv_std)) in x
            .data()
            .chunks_exact(d.max(1))
            .zip(d_y.data().chunks_exact(d.max(1)))
            .zip(&stats)
        {
            for i in 0..d {
                acc[i] += f64::from(dyr[i] * (xr[i] - mean) * inv_std);
            }
        }
        Some(to_tensor(scale.shape(), &acc)?)
    } else {
        None
    };
    let mut out = vec![d_x, d_scale];
    if has_bias {
        out.push(if need(2) {
            let mut acc = vec![0.0f64; d];
            for dyr in d_y.data().chunks_exact(d.max(1)) {
                for (a, &v) in acc.iter_mut().zip(dyr) {
                    *a += f64::from(v);
                }
            }
            Some(to_tensor(scale.shape(), &acc)?)
        } else {
            None
        });
    }
    Ok(out)
}

/// f64 sums as a float32 tensor of `shape`.
fn to_tensor(shape: &[usize], sums: &[f64]) -> Result<Tensor, OpError> {
    Tensor::new(shape.to_vec(), sums.iter().map(|&v| v as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    /// Against a direct f64 evaluation of the definition (PyTorch's `layer_norm` formula).
    #[test]
    fn forward_matches_the_definition() {
        let x = test_tensor(&[2, 3, 4], 1).map(|v| v * 3.0 + 1.0);
        let (g, b) = (test_tensor(&[4], 2), test_tensor(&[4], 3));
        let y = forward(2, 1e-5, &x, &g, Some(&b)).unwrap();
        for (r, (xr, yr)) in x.data().chunks(4).zip(y.data().chunks(4)).enumerate() {
            let m: f64 = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / 4.0;
            let var: f64 = xr.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / 4.0;
            for i in 0..4 {
                let want = (f64::from(xr[i]) - m) / (var + 1e-5).sqrt() * f64::from(g.data()[i])
                    + f64::from(b.data()[i]);
                assert!((f64::from(yr[i]) - want).abs() < 1e-5, "row {r} col {i}");
            }
        }
        // over the last two axes
        let g2 = test_tensor(&[3, 4], 4);
        let y2 = forward(1, 1e-5, &x, &g2, None).unwrap();
        assert_eq!(y2.shape(), x.shape());
        assert!(forward(0, 1e-5, &x, &g, None).is_err());
        assert!(forward(2, 1e-5, &x, &g2, None).is_err());
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = test_tensor(&[2, 3, 5], 5).map(|v| v * 2.0);
        let (g, b) = (test_tensor(&[5], 6), test_tensor(&[5], 7));
        let op = Op::LayerNorm { axis: 2, eps: 1e-5 };
        assert_op_gradients(
            &op,
            &[x.clone(), g.clone(), b],
            &[true, true, true],
            Mode::Eval,
            1e-2,
        );
        let g2 = test_tensor(&[3, 5], 8);
        let op = Op::LayerNorm { axis: 1, eps: 1e-3 };
        assert_op_gradients(&op, &[x, g2], &[true, true], Mode::Eval, 1e-2);
    }
}
