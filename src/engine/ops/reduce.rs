//! Reductions over any set of axes (ONNX ReduceSum / ReduceMean / ReduceMax / ReduceMin /
//! ReduceL2): forward and backward.
//!
//! Not a hot path in the networks convscope explains (adaptive average pooling, the common
//! case, runs as [`super::Op::GlobalAvgPool`]), so one plain loop serves every rank: the input
//! is walked in row-major order with an odometer, and each element's output index is the dot
//! product of its index with the output strides, zero along the reduced axes. Sums accumulate
//! in f64.

use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;
use crate::op_bail;

use super::pool::max_wins;

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReduceKind {
    Sum,
    Mean,
    /// The largest element; its gradient goes to the first (row-major) element that attains
    /// it, a NaN winning over any number.
    Max,
    /// The smallest element, as `Max`.
    Min,
    /// √(Σ x²).
    L2,
}

impl ReduceKind {
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "ReduceSum",
            ReduceKind::Mean => "ReduceMean",
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::L2 => "ReduceL2",
        }
    }
}

/// A reduction over `axes` (ascending, distinct, each below the input's rank); with `keepdims`
/// the reduced axes stay as size-1 dimensions, otherwise they are removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReduceSpec {
    pub kind: ReduceKind,
    pub axes: Vec<usize>,
    pub keepdims: bool,
}

impl ReduceSpec {
    fn reduced(&self, dim: usize) -> bool {
        self.axes.contains(&dim)
    }
}

/// The output shape of `spec` on x's shape, checking the axes and that Max / Min / Mean have
/// elements to reduce.
pub fn output_shape(spec: &ReduceSpec, x: &[usize]) -> Result<Vec<usize>, OpError> {
    if spec.axes.windows(2).any(|w| w[0] >= w[1]) {
        op_bail!(
            "reduction axes {:?} are not ascending and distinct",
            spec.axes
        );
    }
    if let Some(&a) = spec.axes.iter().find(|&&a| a >= x.len()) {
        op_bail!("reduction axis {a} is out of range for rank {}", x.len());
    }
    if reduced_count(spec, x) == 0 && spec.kind != ReduceKind::Sum && spec.kind != ReduceKind::L2 {
        op_bail!(
            "{} over axes {:?} of shape {x:?} has no elements to reduce",
            spec.kind.name(),
            spec.axes
        );
    }
    Ok(x.iter()
        .enumerate()
        .filter_map(|(d, &n)| match (spec.reduced(d), spec.keepdims) {
            (false, _) => Some(n),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect())
}

/// For each input dimension, the stride of its index in the (flat) output: zero along reduced
/// axes.
fn output_strides(spec: &ReduceSpec, x: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; x.len()];
    let mut s = 1;
    for d in (0..x.len()).rev() {
        if !spec.reduced(d) {
            strides[d] = s;
            s *= x[d];
        }
    }
    strides
}

/// Calls `f(input flat index, output flat index)` for every element of x in row-major order.
fn for_each_element(spec: &ReduceSpec, x: &[usize], f: impl FnMut(usize, usize)) {
    super::shape::walk_strided(x, &output_strides(spec, x), f);
}

/// y (see [`output_shape`]) and, for Max / Min, the flat input index of each output's winner.
pub fn forward(spec: &ReduceSpec, x: &Tensor) -> Result<(Tensor, Vec<u32>), OpError> {
    let shape = output_shape(spec, x.shape())?;
    // never more elements than x
    let n_out: usize = shape.iter().product();
    let xd = x.data();
    let winners = matches!(spec.kind, ReduceKind::Max | ReduceKind::Min);
    if winners && u32::try_from(xd.len()).is_err() {
        op_bail!(
            "{} of {} elements: more than a winner index can hold",
            spec.kind.name(),
            xd.len()
        );
    }
    if winners {
        let mut best: Vec<Option<u32>> = vec![None; n_out];
        // max pooling's rule; for Min on negated values (a negated NaN is still NaN)
        let beats = |v: f32, b: f32| match spec.kind {
            ReduceKind::Max => max_wins(v, b),
            _ => max_wins(-v, -b),
        };
        for_each_element(spec, x.shape(), |i, o| match best[o] {
            Some(b) if !beats(xd[i], xd[b as usize]) => {}
            // the check above keeps every index within u32
            _ => best[o] = Some(i as u32),
        });
        let idx: Vec<u32> = best.into_iter().map(|b| b.unwrap_or(0)).collect();
        let y = idx.iter().map(|&i| xd[i as usize]).collect();
        return Ok((Tensor::new(shape, y)?, idx));
    }
    let mut acc = vec![0.0f64; n_out];
    match spec.kind {
        ReduceKind::L2 => for_each_element(spec, x.shape(), |i, o| {
            acc[o] += f64::from(xd[i]) * f64::from(xd[i]);
        }),
        _ => for_each_element(spec, x.shape(), |i, o| acc[o] += f64::from(xd[i])),
    }
    let count = reduced_count(spec, x.shape()) as f64;
    let y = acc
        .into_iter()
        .map(|s| match spec.kind {
            ReduceKind::Mean => (s / count) as f32,
            ReduceKind::L2 => s.sqrt() as f32,
            _ => s as f32,
        })
        .collect();
    Ok((Tensor::new(shape, y)?, Vec::new()))
}

/// Input elements per output element (the product of the reduced axes' sizes; axes checked
/// by the caller or by [`output_shape`]).
fn reduced_count(spec: &ReduceSpec, x: &[usize]) -> usize {
    spec.axes.iter().map(|&a| x[a]).product()
}

/// d_x `x.shape` from d_y `y.shape`: Sum spreads d_y over its elements, Mean divides it by
/// their count, L2 scales it by x / y (zero where y is zero), Max / Min give it to the winner.
pub fn backward(
    spec: &ReduceSpec,
    x: &Tensor,
    y: &Tensor,
    winners: &[u32],
    d_y: &Tensor,
) -> Result<Tensor, OpError> {
    let shape = output_shape(spec, x.shape())?;
    if d_y.shape() != shape.as_slice() || y.shape() != shape.as_slice() {
        op_bail!(
            "reduction gradient shape {:?} does not match output shape {shape:?}",
            d_y.shape()
        );
    }
    let (xd, yd, dyd) = (x.data(), y.data(), d_y.data());
    let mut dx = vec![0.0f32; xd.len()];
    match spec.kind {
        ReduceKind::Max | ReduceKind::Min => {
            if winners.len() != dyd.len() {
                op_bail!("{} backward without saved winners", spec.kind.name());
            }
            for (&w, &g) in winners.iter().zip(dyd) {
                match dx.get_mut(w as usize) {
                    Some(d) => *d += g,
                    None => op_bail!("{} winner {w} is out of range", spec.kind.name()),
                }
            }
        }
        ReduceKind::Sum => for_each_element(spec, x.shape(), |i, o| dx[i] = dyd[o]),
        ReduceKind::Mean => {
            let inv = 1.0 / reduced_count(spec, x.shape()) as f32;
            for_each_element(spec, x.shape(), |i, o| dx[i] = dyd[o] * inv);
        }
        ReduceKind::L2 => for_each_element(spec, x.shape(), |i, o| {
            if yd[o] != 0.0 {
                dx[i] = xd[i] / yd[o] * dyd[o];
            }
        }),
    }
    Tensor::new(x.shape().to_vec(), dx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    const EVERY_KIND: [ReduceKind; 5] = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::L2,
    ];

    fn spec(kind: ReduceKind, axes: &[usize], keepdims: bool) -> ReduceSpec {
        ReduceSpec {
            kind,
            axes: axes.to_vec(),
            keepdims,
        }
    }

    /// Every kind against a direct loop over a rank-3 tensor, reducing the middle axis.
    #[test]
    fn middle_axis_matches_a_direct_loop() {
        let x = test_tensor(&[2, 3, 4], 5);
        let xd = x.data();
        for kind in EVERY_KIND {
            let (y, _) = forward(&spec(kind, &[1], false), &x).unwrap();
            assert_eq!(y.shape(), &[2, 4]);
            for a in 0..2 {
                for c in 0..4 {
                    let col: Vec<f32> = (0..3).map(|b| xd[(a * 3 + b) * 4 + c]).collect();
                    let want = match kind {
                        ReduceKind::Sum => col.iter().sum(),
                        ReduceKind::Mean => col.iter().sum::<f32>() / 3.0,
                        ReduceKind::Max => col.iter().copied().fold(f32::MIN, f32::max),
                        ReduceKind::Min => col.iter().copied().fold(f32::MAX, f32::min),
                        ReduceKind::L2 => col.iter().map(|v| v * v).sum::<f32>().sqrt(),
                    };
                    let got = y.data()[a * 4 + c];
                    assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "{kind:?}");
                }
            }
        }
    }

    #[test]
    fn keepdims_and_every_axis() {
        let x = test_tensor(&[2, 3, 4], 6);
        let (y, _) = forward(&spec(ReduceKind::Sum, &[0, 2], true), &x).unwrap();
        assert_eq!(y.shape(), &[1, 3, 1]);
        let (y, _) = forward(&spec(ReduceKind::Mean, &[0, 1, 2], false), &x).unwrap();
        assert_eq!(y.shape(), &[] as &[usize]);
        let want = x.data().iter().map(|&v| f64::from(v)).sum::<f64>() / 24.0;
        assert!((f64::from(y.data()[0]) - want).abs() < 1e-6);
    }

    /// Finite differences through the op, every kind, several axis sets.
    #[test]
    fn gradients_match_finite_differences() {
        for (axes, keepdims) in [(vec![1], false), (vec![0, 2], true), (vec![2], false)] {
            for kind in EVERY_KIND {
                let x = test_tensor(&[2, 3, 4], 11);
                let op = Op::Reduce(spec(kind, &axes, keepdims));
                assert_op_gradients(&op, &[x], &[true], Mode::Eval, 1e-2);
            }
        }
    }

    #[test]
    fn ties_and_nan_pick_the_first_winner() {
        let x = Tensor::new(vec![1, 4], vec![1.0, 3.0, 3.0, f32::NAN]).unwrap();
        let (y, w) = forward(&spec(ReduceKind::Max, &[1], false), &x).unwrap();
        assert!(y.data()[0].is_nan());
        assert_eq!(w, vec![3]);
        let x = Tensor::new(vec![1, 3], vec![2.0, 1.0, 1.0]).unwrap();
        let (_, w) = forward(&spec(ReduceKind::Min, &[1], false), &x).unwrap();
        assert_eq!(w, vec![1]);
    }

    #[test]
    fn bad_axes_and_empty_extents_are_errors() {
        let x = test_tensor(&[2, 3], 1);
        assert!(output_shape(&spec(ReduceKind::Sum, &[2], false), x.shape()).is_err());
        assert!(output_shape(&spec(ReduceKind::Sum, &[1, 0], false), x.shape()).is_err());
        assert!(output_shape(&spec(ReduceKind::Max, &[1], false), &[2, 0]).is_err());
        assert_eq!(
            output_shape(&spec(ReduceKind::Sum, &[1], false), &[2, 0]).unwrap(),
            vec![2]
        );
    }
}
