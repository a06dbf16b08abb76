//! Binary element-wise ops with numpy broadcasting (residual adds, squeeze-excite scales,
//! Keras-style folded batch norm as Mul + Add).
//!
//! Kernels, fastest first: equal shapes; one operand broadcast as a contiguous "middle block"
//! of the other, i.e. the full operand viewed as `[outer, mid, inner]` and the small one as
//! `[mid]` (scalars, per-channel `[1, c, 1, 1]` / `[c, 1, 1]`, squeeze-excite `[n, c, 1, 1]`,
//! bias rows `[c]`); and a general strided walk. `forward_naive` is the reference for all three.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::shape::{rows_per_task, strides_of};
use crate::engine::error::OpError;
use crate::engine::tensor::{Tensor, checked_numel};

/// Elements per rayon task for flat element-wise loops.
pub(crate) const CHUNK: usize = 1 << 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// 1 where a = b, else 0 (ONNX Equal on run-time values); no gradient.
    Equal,
    /// 1 where a < b, else 0; no gradient.
    Less,
    /// 1 where a > b, else 0; no gradient.
    Greater,
}

impl BinaryOp {
    pub fn name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Equal => "Equal",
            BinaryOp::Less => "Less",
            BinaryOp::Greater => "Greater",
        }
    }

    #[inline(always)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Equal => f32::from(a == b),
            BinaryOp::Less => f32::from(a < b),
            BinaryOp::Greater => f32::from(a > b),
        }
    }
}

/// `y = f(x)` element-wise, in parallel chunks.
pub(crate) fn par_map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = f(v);
            }
        });
    y
}

/// `y = f(a, b)` element-wise over equal-length slices, in parallel chunks.
pub(crate) fn par_zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0.0; a.len()];
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(yc, (ac, bc))| {
            for ((o, &u), &v) in yc.iter_mut().zip(ac).zip(bc) {
                *o = f(u, v);
            }
        });
    y
}

/// Numpy broadcast of two shapes (aligned at the right).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => crate::op_bail!("shapes {a:?} and {b:?} cannot be broadcast together"),
        };
    }
    if checked_numel(&out).is_none() {
        crate::op_bail!("broadcast of {a:?} and {b:?} is too large");
    }
    Ok(out)
}

/// `shape` left-padded with ones to `rank`.
fn aligned(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut s = vec![1; rank - shape.len()];
    s.extend_from_slice(shape);
    s
}

/// Strides of `shape` (aligned to `out`) inside the broadcast output: 0 along broadcast dims.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = aligned(shape, out.len());
    let st = strides_of(&s);
    s.iter()
        .zip(st)
        .map(|(&d, st)| if d == 1 { 0 } else { st })
        .collect()
}

/// When `small` (broadcast to `out`) is constant except along one contiguous run of dims where
/// it matches `out`, the output seen as `[outer, mid, inner]` reads `small[mid]`: returns
/// (outer, mid, inner). Size-1 output dims may sit anywhere.
pub(crate) fn middle_block(small: &[usize], out: &[usize]) -> Option<(usize, usize, usize)> {
    if small.len() > out.len() {
        return None;
    }
    let s = aligned(small, out.len());
    // dims where small varies (equals out, size > 1)
    let varying: Vec<usize> = (0..out.len())
        .filter(|&i| out[i] != 1 && s[i] == out[i])
        .collect();
    if (0..out.len()).any(|i| s[i] != 1 && s[i] != out[i]) {
        return None;
    }
    let Some((&lo, &hi)) = varying.first().zip(varying.last()) else {
        return Some((1, 1, out.iter().product()));
    };
    // every non-trivial dim between lo and hi must vary too
    if (lo..=hi).any(|i| out[i] != 1 && s[i] != out[i]) {
        return None;
    }
    let outer = out[..lo].iter().product();
    let mid = out[lo..=hi].iter().product();
    let inner = out[hi + 1..].iter().product();
    Some((outer, mid, inner))
}

pub fn forward(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    // one monomorphic closure per op, so that the loops vectorise (a `match` on the op inside
    // them kept them scalar)
    match op {
        BinaryOp::Add => forward_with(op, |u, v| u + v, a, b),
        BinaryOp::Sub => forward_with(op, |u, v| u - v, a, b),
        BinaryOp::Mul => forward_with(op, |u, v| u * v, a, b),
        BinaryOp::Div => forward_with(op, |u, v| u / v, a, b),
        BinaryOp::Equal => forward_with(op, |u, v| f32::from(u == v), a, b),
        BinaryOp::Less => forward_with(op, |u, v| f32::from(u < v), a, b),
        BinaryOp::Greater => forward_with(op, |u, v| f32::from(u > v), a, b),
    }
}

/// [`forward`] with `f` = `op.apply`.
fn forward_with(
    op: BinaryOp,
    f: impl Fn(f32, f32) -> f32 + Sync + Copy,
    a: &Tensor,
    b: &Tensor,
) -> Result<Tensor, OpError> {
    let out = broadcast_shape(a.shape(), b.shape())?;
    let data = if a.shape() == b.shape() {
        par_zip_map(a.data(), b.data(), f)
    } else if a.shape() == out.as_slice()
        && let Some(blk) = middle_block(b.shape(), &out)
    {
        block_broadcast(a.data(), b.data(), blk, f)
    } else if b.shape() == out.as_slice()
        && let Some(blk) = middle_block(a.shape(), &out)
    {
        block_broadcast(b.data(), a.data(), blk, move |v, u| f(u, v))
    } else {
        strided_broadcast(op, a, b, &out)
    };
    Tensor::new(out, data)
}

/// `y[o, m, i] = f(full[o, m, i], small[m])` with full `(outer, mid, inner)`.
fn block_broadcast(
    full: &[f32],
    small: &[f32],
    (_outer, mid, inner): (usize, usize, usize),
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    if mid == 1 {
        // a scalar: plain chunks, whatever the shape
        let s = small[0];
        return par_map(full, |v| f(v, s));
    }
    let mut y = vec![0.0; full.len()];
    if y.is_empty() {
        return y;
    }
    // (outer * mid, inner): each row shares one value of `small`
    y.par_chunks_mut(inner)
        .zip(full.par_chunks(inner))
        .with_min_len(rows_per_task(inner))
        .enumerate()
        .for_each(|(row, (yr, xr))| {
            let s = small[row % mid];
            for (o, &v) in yr.iter_mut().zip(xr) {
                *o = f(v, s);
            }
        });
    y
}

/// General broadcasting: for each output row (last dim), offsets into a and b by strides.
fn strided_broadcast(op: BinaryOp, a: &Tensor, b: &Tensor, out: &[usize]) -> Vec<f32> {
    let n: usize = out.iter().product();
    let mut y = vec![0.0; n];
    if n == 0 {
        return y;
    }
    let rank = out.len();
    let (sa, sb) = (
        broadcast_strides(a.shape(), out),
        broadcast_strides(b.shape(), out),
    );
    let last = out[rank - 1];
    let (ad, bd) = (a.data(), b.data());
    y.par_chunks_mut(last)
        .with_min_len(rows_per_task(last))
        .enumerate()
        .for_each(|(row, yr)| {
            let (mut oa, mut ob, mut rem) = (0, 0, row);
            for d in (0..rank - 1).rev() {
                let i = rem % out[d];
                rem /= out[d];
                oa += i * sa[d];
                ob += i * sb[d];
            }
            for (j, o) in yr.iter_mut().enumerate() {
                *o = op.apply(ad[oa + j * sa[rank - 1]], bd[ob + j * sb[rank - 1]]);
            }
        });
    y
}

/// The reference: one multi-index decomposition per element.
pub fn forward_naive(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let out = broadcast_shape(a.shape(), b.shape())?;
    let (sa, sb) = (
        broadcast_strides(a.shape(), &out),
        broadcast_strides(b.shape(), &out),
    );
    let n: usize = out.iter().product();
    let mut data = Vec::with_capacity(n);
    for e in 0..n {
        let (mut oa, mut ob, mut rem) = (0, 0, e);
        for d in (0..out.len()).rev() {
            let i = rem % out[d];
            rem /= out[d];
            oa += i * sa[d];
            ob += i * sb[d];
        }
        data.push(op.apply(a.data()[oa], b.data()[ob]));
    }
    Tensor::new(out, data)
}

/// Sums `g` (shaped like the broadcast output) down to `target`, which broadcasts to it.
/// Deterministic: partial sums are formed in fixed chunks whatever the thread count.
pub fn reduce_to_shape(g: &Tensor, target: &[usize]) -> Result<Tensor, OpError> {
    let out = g.shape();
    if target == out {
        return Ok(g.clone());
    }
    if broadcast_shape(target, out)?.as_slice() != out {
        crate::op_bail!("cannot reduce a gradient of shape {out:?} to shape {target:?}");
    }
    let data = match middle_block(target, out) {
        Some((outer, mid, inner)) => reduce_block(g.data(), outer, mid, inner),
        None => reduce_strided(g.data(), target, out),
    };
    Tensor::new(target.to_vec(), data)
}

/// `r[m] = Σ_{o, i} g[o, m, i]` for g `(outer, mid, inner)`.
fn reduce_block(g: &[f32], outer: usize, mid: usize, inner: usize) -> Vec<f32> {
    if mid == 1 {
        // a scalar: fixed-size partial sums, then their sum
        let parts: Vec<f64> = g
            .par_chunks(CHUNK)
            .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
            .collect();
        return vec![parts.iter().sum::<f64>() as f32];
    }
    (0..mid)
        .into_par_iter()
        .with_min_len(rows_per_task(outer * inner))
        .map(|m| {
            let mut acc = 0.0f64;
            for o in 0..outer {
                let row = &g[(o * mid + m) * inner..(o * mid + m + 1) * inner];
                acc += row.iter().map(|&v| v as f64).sum::<f64>();
            }
            acc as f32
        })
        .collect()
}

/// General reduction: each element of g adds into its strided target slot (sequential).
fn reduce_strided(g: &[f32], target: &[usize], out: &[usize]) -> Vec<f32> {
    let st = broadcast_strides(target, out);
    let mut acc = vec![0.0f64; target.iter().product()];
    for (e, &v) in g.iter().enumerate() {
        let (mut o, mut rem) = (0, e);
        for d in (0..out.len()).rev() {
            o += (rem % out[d]) * st[d];
            rem /= out[d];
        }
        acc[o] += v as f64;
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// `[d_a, d_b]`, each summed back down to its input's shape, each iff `needs[i]`.
pub fn backward(
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    y: &Tensor,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    let out = broadcast_shape(a.shape(), b.shape())?;
    if d_y.shape() != out.as_slice() || y.shape() != out.as_slice() {
        crate::op_bail!(
            "{} gradient has shape {:?}, expected {out:?} for inputs {:?} and {:?}",
            op.name(),
            d_y.shape(),
            a.shape(),
            b.shape()
        );
    }
    let need = |i: usize| needs.get(i).copied().unwrap_or(false);
    if matches!(op, BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater) {
        // a comparison is piecewise constant: zero gradient almost everywhere
        let zeros = |want: bool, shape: &[usize]| want.then(|| Tensor::zeros(shape));
        return Ok(vec![zeros(need(0), a.shape()), zeros(need(1), b.shape())]);
    }
    let d_a = if need(0) {
        // d(a op b)/da: 1 for Add/Sub, b for Mul, 1/b for Div
        let full = match op {
            BinaryOp::Add | BinaryOp::Sub => d_y.clone(),
            BinaryOp::Mul => forward(BinaryOp::Mul, d_y, b)?,
            BinaryOp::Div => forward(BinaryOp::Div, d_y, b)?,
            // (returned above; a comparison's gradient is zero)
            BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater => d_y.map(|_| 0.0),
        };
        Some(reduce_to_shape(&full, a.shape())?)
    } else {
        None
    };
    let d_b = if need(1) {
        // d(a op b)/db: 1 for Add, -1 for Sub, a for Mul, -a/b² = -y/b for Div
        let full = match op {
            BinaryOp::Add => d_y.clone(),
            BinaryOp::Sub => d_y.map(|v| -v),
            BinaryOp::Mul => forward(BinaryOp::Mul, d_y, a)?,
            BinaryOp::Div => {
                let dy_y = Tensor::new(
                    out.clone(),
                    par_zip_map(d_y.data(), y.data(), |g, v| -g * v),
                )?;
                forward(BinaryOp::Div, &dy_y, b)?
            }
            // (returned above; a comparison's gradient is zero)
            BinaryOp::Equal | BinaryOp::Less | BinaryOp::Greater => d_y.map(|_| 0.0),
        };
        Some(reduce_to_shape(&full, b.shape())?)
    } else {
        None
    };
    Ok(vec![d_a, d_b])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    const OPS: [BinaryOp; 4] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];

    /// Test data kept away from zero so that Div is smooth.
    fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
        test_tensor(shape, seed).map(|v| if v >= 0.0 { v + 0.5 } else { v - 0.5 })
    }

    const PAIRS: [(&[usize], &[usize]); 10] = [
        (&[2, 3, 4, 5], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[1, 3, 1, 1]),
        (&[3, 1, 1], &[2, 3, 4, 5]),
        (&[2, 3, 4, 5], &[]),
        (&[1], &[2, 3]),
        (&[2, 3, 4, 5], &[2, 3, 1, 1]),
        (&[4, 3], &[3]),
        (&[2, 1, 4], &[3, 1]),
        (&[2, 3, 4, 5], &[3, 1, 5]),
        (&[1, 3, 1, 5], &[2, 1, 4, 1]),
    ];

    #[test]
    fn broadcast_shapes() {
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shape(&[], &[2]).unwrap(), vec![2]);
        assert!(broadcast_shape(&[2, 3], &[4]).is_err());
        assert!(
            forward(
                BinaryOp::Add,
                &test_tensor(&[2, 3], 1),
                &test_tensor(&[2], 2)
            )
            .is_err()
        );
    }

    #[test]
    fn middle_blocks() {
        assert_eq!(middle_block(&[1, 3, 1, 1], &[2, 3, 4, 5]), Some((2, 3, 20)));
        assert_eq!(middle_block(&[3, 1, 1], &[2, 3, 4, 5]), Some((2, 3, 20)));
        assert_eq!(middle_block(&[2, 3, 1, 1], &[2, 3, 4, 5]), Some((1, 6, 20)));
        assert_eq!(middle_block(&[], &[2, 3]), Some((1, 1, 6)));
        assert_eq!(middle_block(&[3], &[4, 3]), Some((4, 3, 1)));
        assert_eq!(middle_block(&[3, 1, 5], &[2, 3, 4, 5]), None);
    }

    #[test]
    fn every_path_matches_naive() {
        for (sa, sb) in PAIRS {
            for (i, op) in OPS.into_iter().enumerate() {
                let a = away_from_zero(sa, 10 + i as u64);
                let b = away_from_zero(sb, 20 + i as u64);
                assert_eq!(
                    forward(op, &a, &b).unwrap(),
                    forward_naive(op, &a, &b).unwrap(),
                    "{op:?} {sa:?} {sb:?}"
                );
                assert_eq!(
                    forward(op, &b, &a).unwrap(),
                    forward_naive(op, &b, &a).unwrap(),
                    "{op:?} {sb:?} {sa:?}"
                );
            }
        }
    }

    #[test]
    fn large_per_channel_matches_naive() {
        let a = test_tensor(&[2, 16, 33, 35], 3);
        let b = test_tensor(&[16, 1, 1], 4);
        assert_eq!(
            forward(BinaryOp::Mul, &a, &b).unwrap(),
            forward_naive(BinaryOp::Mul, &a, &b).unwrap()
        );
        let g = test_tensor(&[2, 16, 33, 35], 5);
        let r = reduce_to_shape(&g, &[16, 1, 1]).unwrap();
        let r_naive = reduce_strided(g.data(), &[16, 1, 1], &[2, 16, 33, 35]);
        for (x, y) in r.data().iter().zip(&r_naive) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    /// A random shape of rank <= 4 and a second shape broadcast-compatible with it.
    fn shape_pair() -> impl proptest::strategy::Strategy<Value = (Vec<usize>, Vec<usize>)> {
        use proptest::prelude::*;
        (
            proptest::collection::vec(1usize..5, 0..5),
            any::<u64>(),
            0usize..5,
        )
            .prop_map(|(full, bits, drop)| {
                // the second shape: a suffix of `full` with some dims set to 1
                let start = drop.min(full.len());
                let small: Vec<usize> = full[start..]
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if bits >> i & 1 == 1 { 1 } else { d })
                    .collect();
                (full, small)
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        #[test]
        fn fast_paths_match_naive_on_random_shapes((sa, sb) in shape_pair(), swap: bool, seed in 0u64..1000) {
            let (sa, sb) = if swap { (sb, sa) } else { (sa, sb) };
            let a = away_from_zero(&sa, seed);
            let b = away_from_zero(&sb, seed + 1);
            for op in OPS {
                proptest::prop_assert_eq!(forward(op, &a, &b).unwrap(), forward_naive(op, &a, &b).unwrap());
            }
            let out = broadcast_shape(&sa, &sb).unwrap();
            let g = test_tensor(&out, seed + 2);
            for target in [&sa, &sb] {
                let r = reduce_to_shape(&g, target).unwrap();
                let r_naive = reduce_strided(g.data(), target, &out);
                for (x, y) in r.data().iter().zip(&r_naive) {
                    proptest::prop_assert!((x - y).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn values() {
        let a = Tensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::new(vec![2], vec![10.0, 20.0]).unwrap();
        assert_eq!(
            forward(BinaryOp::Sub, &a, &b).unwrap().data(),
            &[-9.0, -18.0, -7.0, -16.0]
        );
        assert_eq!(
            forward(BinaryOp::Div, &b, &a).unwrap().data(),
            &[10.0, 10.0, 10.0 / 3.0, 5.0]
        );
    }

    #[test]
    fn gradients_with_broadcasting() {
        for (sa, sb) in PAIRS {
            for (i, op) in OPS.into_iter().enumerate() {
                let a = away_from_zero(sa, 30 + i as u64);
                let b = away_from_zero(sb, 40 + i as u64);
                assert_op_gradients(
                    &Op::Binary(op),
                    &[a.clone(), b.clone()],
                    &[true, true],
                    Mode::Eval,
                    1e-2,
                );
                assert_op_gradients(&Op::Binary(op), &[b, a], &[true, true], Mode::Eval, 1e-2);
            }
        }
    }

    #[test]
    fn backward_respects_needs_and_checks_shapes() {
        let a = test_tensor(&[2, 3], 1);
        let b = test_tensor(&[3], 2);
        let y = forward(BinaryOp::Mul, &a, &b).unwrap();
        let g = backward(BinaryOp::Mul, &a, &b, &y, &y, &[false, true]).unwrap();
        assert!(g[0].is_none());
        assert_eq!(g[1].as_ref().map(|t| t.shape().to_vec()), Some(vec![3]));
        assert!(backward(BinaryOp::Mul, &a, &b, &y, &b, &[true, true]).is_err());
        assert!(reduce_to_shape(&a, &[2]).is_err());
    }
}
