//! Ops that move data without arithmetic: pad, flatten, reshape, transpose, concat.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::{Tensor, checked_numel};

/// Rows of fewer elements than this are grouped so that one rayon task moves at least this many.
const MIN_TASK_ELEMS: usize = 1 << 13;

/// Constant padding: `(before, after)` per dimension (length = rank of x).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PadSpec {
    pub pads: Vec<(usize, usize)>,
    pub value: f32,
}

pub fn check_axis(axis: usize, x: &[usize]) -> Result<(), OpError> {
    if axis >= x.len() {
        crate::op_bail!(
            "axis {axis} is out of range for shape {x:?} (rank {})",
            x.len()
        );
    }
    Ok(())
}

/// Number of elements of a shape, as an error when it is too large.
fn numel_of(shape: &[usize]) -> Result<usize, OpError> {
    checked_numel(shape).ok_or_else(|| OpError(format!("shape {shape:?} is too large")))
}

/// Row-major strides of a shape.
pub(crate) fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The rayon `with_min_len` for a parallel iterator over rows of `row_len` elements.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (MIN_TASK_ELEMS / row_len.max(1)).max(1)
}

// ---------------------------------------------------------------------------------------------
// Pad

pub fn pad_output_shape(spec: &PadSpec, x: &[usize]) -> Result<Vec<usize>, OpError> {
    if spec.pads.len() != x.len() {
        crate::op_bail!(
            "pad has {} (before, after) pairs but the input {x:?} has rank {}",
            spec.pads.len(),
            x.len()
        );
    }
    let mut out = Vec::with_capacity(x.len());
    for (&d, &(b, a)) in x.iter().zip(&spec.pads) {
        let o = d
            .checked_add(b)
            .and_then(|v| v.checked_add(a))
            .ok_or_else(|| OpError(format!("padding {:?} of shape {x:?} overflows", spec.pads)))?;
        out.push(o);
    }
    numel_of(&out)?;
    Ok(out)
}

/// For the output row whose multi-index (over all dims but the last) is `row`, the offset of
/// the matching input row, or `None` when the row lies in the padding.
fn pad_source_row(
    row: usize,
    out_shape: &[usize],
    x_shape: &[usize],
    pads: &[(usize, usize)],
) -> Option<usize> {
    let rank = out_shape.len();
    let mut rem = row;
    let mut offset = 0;
    let mut x_stride = x_shape[rank - 1];
    for d in (0..rank - 1).rev() {
        let i = rem % out_shape[d];
        rem /= out_shape[d];
        let (before, _) = pads[d];
        if i < before || i - before >= x_shape[d] {
            return None;
        }
        offset += (i - before) * x_stride;
        x_stride *= x_shape[d];
    }
    Some(offset)
}

pub fn pad_forward(spec: &PadSpec, x: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = pad_output_shape(spec, x.shape())?;
    let rank = out_shape.len();
    if rank == 0 {
        return Ok(x.clone());
    }
    let mut y = Tensor::full(&out_shape, spec.value);
    let out_last = out_shape[rank - 1];
    if y.numel() == 0 || x.numel() == 0 {
        return Ok(y);
    }
    let x_last = x.shape()[rank - 1];
    let (before_last, _) = spec.pads[rank - 1];
    let xd = x.data();
    // (rows of y, out_last): each output row copies one input row (or stays padding)
    y.data_mut()
        .par_chunks_mut(out_last)
        .with_min_len(rows_per_task(out_last))
        .enumerate()
        .for_each(|(row, dst)| {
            if let Some(src) = pad_source_row(row, &out_shape, x.shape(), &spec.pads) {
                dst[before_last..before_last + x_last].copy_from_slice(&xd[src..src + x_last]);
            }
        });
    Ok(y)
}

pub fn pad_backward(spec: &PadSpec, x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = pad_output_shape(spec, x_shape)?;
    if d_y.shape() != out_shape.as_slice() {
        crate::op_bail!(
            "pad gradient has shape {:?}, expected {out_shape:?}",
            d_y.shape()
        );
    }
    let mut d_x = Tensor::try_zeros(x_shape)?;
    let rank = x_shape.len();
    if rank == 0 {
        return Ok(d_y.clone());
    }
    if d_x.numel() == 0 {
        return Ok(d_x);
    }
    let x_last = x_shape[rank - 1];
    let out_strides = strides_of(&out_shape);
    let dy = d_y.data();
    // (rows of x, x_last): each input row reads its window of the output row
    d_x.data_mut()
        .par_chunks_mut(x_last)
        .with_min_len(rows_per_task(x_last))
        .enumerate()
        .for_each(|(row, dst)| {
            let mut rem = row;
            let mut src = spec.pads[rank - 1].0;
            for d in (0..rank - 1).rev() {
                let i = rem % x_shape[d];
                rem /= x_shape[d];
                src += (i + spec.pads[d].0) * out_strides[d];
            }
            dst.copy_from_slice(&dy[src..src + x_last]);
        });
    Ok(d_x)
}

// ---------------------------------------------------------------------------------------------
// Flatten, Reshape

/// ONNX Flatten: `[prod(d[..axis]), prod(d[axis..])]`; `axis` may equal the rank.
pub fn flatten_output_shape(axis: usize, x: &[usize]) -> Result<Vec<usize>, OpError> {
    if axis > x.len() {
        crate::op_bail!(
            "flatten axis {axis} is out of range for shape {x:?} (rank {})",
            x.len()
        );
    }
    let outer = numel_of(&x[..axis])?;
    let inner = numel_of(&x[axis..])?;
    Ok(vec![outer, inner])
}

/// ONNX Reshape (allowzero = 0): `0` copies the input dimension, one `-1` is inferred.
pub fn reshape_output_shape(shape: &[i64], x: &[usize]) -> Result<Vec<usize>, OpError> {
    let total = numel_of(x)?;
    let mut out = Vec::with_capacity(shape.len());
    let mut inferred: Option<usize> = None;
    for (i, &s) in shape.iter().enumerate() {
        let d = match s {
            -1 => {
                if inferred.is_some() {
                    crate::op_bail!("reshape target {shape:?} has more than one -1");
                }
                inferred = Some(i);
                1
            }
            0 => match x.get(i) {
                Some(&d) => d,
                None => crate::op_bail!(
                    "reshape target {shape:?} copies dimension {i} (0) but the input {x:?} has rank {}",
                    x.len()
                ),
            },
            s if s < -1 => crate::op_bail!("reshape target {shape:?} has a negative dimension {s}"),
            s => usize::try_from(s).map_err(|_| {
                OpError(format!(
                    "reshape target {shape:?} has a dimension too large"
                ))
            })?,
        };
        out.push(d);
    }
    let known = numel_of(&out)?;
    if let Some(i) = inferred {
        if known == 0 || total % known != 0 {
            crate::op_bail!(
                "cannot infer the -1 of reshape target {shape:?} for input {x:?} ({total} elements)"
            );
        }
        out[i] = total / known;
    } else if known != total {
        crate::op_bail!("cannot reshape {x:?} ({total} elements) to {out:?} ({known} elements)");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Transpose

fn check_perm(perm: &[usize], x: &[usize]) -> Result<(), OpError> {
    if perm.len() != x.len() {
        crate::op_bail!(
            "transpose perm {perm:?} has length {} but the input {x:?} has rank {}",
            perm.len(),
            x.len()
        );
    }
    let mut seen = vec![false; perm.len()];
    for &p in perm {
        if p >= perm.len() || seen[p] {
            crate::op_bail!(
                "transpose perm {perm:?} is not a permutation of 0..{}",
                perm.len()
            );
        }
        seen[p] = true;
    }
    Ok(())
}

pub fn transpose_output_shape(perm: &[usize], x: &[usize]) -> Result<Vec<usize>, OpError> {
    check_perm(perm, x)?;
    Ok(perm.iter().map(|&p| x[p]).collect())
}

/// When `perm` is `[0, .., b-1]` followed by two swapped contiguous blocks of dimensions, the
/// transpose is a batch of 2-D transposes: returns (batch, rows, cols) of the source matrices.
fn as_batched_2d(perm: &[usize], x: &[usize]) -> Option<(usize, usize, usize)> {
    let r = perm.len();
    let b = perm
        .iter()
        .enumerate()
        .take_while(|&(i, &p)| i == p)
        .count();
    if b + 2 > r {
        return None;
    }
    // the tail must be [b+k, .., r-1, b, .., b+k-1] for some 0 < k < r-b
    let k = perm[b].checked_sub(b)?;
    let tail_ok = (b..r).all(|i| {
        let j = i - b;
        let expect = if j < r - b - k {
            b + k + j
        } else {
            b + j - (r - b - k)
        };
        perm[i] == expect
    });
    if k == 0 || !tail_ok {
        return None;
    }
    let batch = x[..b].iter().product();
    let rows = x[b..b + k].iter().product();
    let cols = x[b + k..].iter().product();
    Some((batch, rows, cols))
}

/// dst `[cols, rows]` = srcᵀ for src `[rows, cols]`, in cache-sized tiles.
fn transpose_2d(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const T: usize = 32;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// Fast transpose: batched tiled 2-D transposes where the permutation allows, otherwise a
/// parallel gather over output rows.
pub fn transpose_forward(perm: &[usize], x: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = transpose_output_shape(perm, x.shape())?;
    let mut y = Tensor::try_zeros(&out_shape)?;
    if y.numel() == 0 || out_shape.is_empty() {
        return x.clone().reshaped(out_shape);
    }
    let xd = x.data();
    if let Some((batch, rows, cols)) = as_batched_2d(perm, x.shape()) {
        let plane = rows * cols;
        if batch >= 2 {
            // (batch, cols, rows) from (batch, rows, cols)
            y.data_mut()
                .par_chunks_mut(plane)
                .zip(xd.par_chunks(plane))
                .for_each(|(dst, src)| transpose_2d(src, rows, cols, dst));
        } else {
            // one matrix: split the destination into row bands of columns of the source
            let band = 32usize;
            y.data_mut()
                .par_chunks_mut(band * rows)
                .enumerate()
                .for_each(|(bi, dst)| {
                    let c0 = bi * band;
                    let nc = dst.len() / rows;
                    for c in 0..nc {
                        for r in 0..rows {
                            dst[c * rows + r] = xd[r * cols + c0 + c];
                        }
                    }
                });
        }
        return Ok(y);
    }
    transpose_gather(perm, x, &mut y);
    Ok(y)
}

/// General transpose: for each output row, a strided walk through x.
fn transpose_gather(perm: &[usize], x: &Tensor, y: &mut Tensor) {
    let rank = perm.len();
    let x_strides = strides_of(x.shape());
    let out_shape = y.shape().to_vec();
    let last = out_shape[rank - 1];
    let inner_stride = x_strides[perm[rank - 1]];
    let xd = x.data();
    y.data_mut()
        .par_chunks_mut(last)
        .with_min_len(rows_per_task(last))
        .enumerate()
        .for_each(|(row, dst)| {
            let mut rem = row;
            let mut base = 0;
            for d in (0..rank - 1).rev() {
                base += (rem % out_shape[d]) * x_strides[perm[d]];
                rem /= out_shape[d];
            }
            for (j, v) in dst.iter_mut().enumerate() {
                *v = xd[base + j * inner_stride];
            }
        });
}

/// The reference: one multi-index decomposition per element.
pub fn transpose_naive(perm: &[usize], x: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = transpose_output_shape(perm, x.shape())?;
    let x_strides = strides_of(x.shape());
    let mut data = Vec::with_capacity(x.numel());
    for i in 0..x.numel() {
        let mut rem = i;
        let mut src = 0;
        for d in (0..out_shape.len()).rev() {
            src += (rem % out_shape[d]) * x_strides[perm[d]];
            rem /= out_shape[d];
        }
        data.push(x.data()[src]);
    }
    Tensor::new(out_shape, data)
}

fn inverse_perm(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        if p < inv.len() {
            inv[p] = i;
        }
    }
    inv
}

/// d_x = transpose(d_y, inverse(perm)).
pub fn transpose_backward(perm: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    check_perm(perm, d_y.shape())?;
    transpose_forward(&inverse_perm(perm), d_y)
}

// ---------------------------------------------------------------------------------------------
// RepeatBatch (a constant of batch 1 following the run-time batch)

/// `[like[0], x[1..]]` for x `[1, ..]`: the batch of `like`, the rest of `x`.
pub fn repeat_batch_output_shape(x: &[usize], like: &[usize]) -> Result<Vec<usize>, OpError> {
    if x.first() != Some(&1) || like.is_empty() {
        crate::op_bail!(
            "repeats a value of shape {x:?} to the batch of shape {like:?}; it needs a leading 1 \
             and a batch to follow"
        );
    }
    let mut out = x.to_vec();
    out[0] = like[0];
    Ok(out)
}

/// y `[n, ..]` = x `[1, ..]` repeated n times, n = like's batch (ViT's class token,
/// `class_token.expand(n, -1, -1)`).
pub fn repeat_batch_forward(x: &Tensor, like: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = repeat_batch_output_shape(x.shape(), like.shape())?;
    let mut data = Vec::new();
    data.try_reserve_exact(numel_of(&out_shape)?)
        .map_err(|_| OpError("cannot allocate a repeated value".into()))?;
    for _ in 0..out_shape[0] {
        data.extend_from_slice(x.data());
    }
    Tensor::new(out_shape, data)
}

/// d_x `[1, ..]` = Σ over the batch of d_y `[n, ..]`.
pub fn repeat_batch_backward(x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let item: usize = x_shape.iter().product();
    if x_shape.first() != Some(&1) || d_y.shape().get(1..) != x_shape.get(1..) {
        crate::op_bail!(
            "repeat gradient has shape {:?}, expected [n] + {:?}",
            d_y.shape(),
            x_shape.get(1..).unwrap_or(&[])
        );
    }
    let mut g = Tensor::try_zeros(x_shape)?;
    for chunk in d_y.data().chunks_exact(item.max(1)) {
        for (a, &b) in g.data_mut().iter_mut().zip(chunk) {
            *a += b;
        }
    }
    Ok(g)
}

// ---------------------------------------------------------------------------------------------
// Slice (one axis, positive step)

/// `x` with `axis` cut to `start..end` by `step` (ceil((end − start) / step) entries).
pub fn slice_output_shape(
    axis: usize,
    start: usize,
    end: usize,
    step: usize,
    x: &[usize],
) -> Result<Vec<usize>, OpError> {
    check_axis(axis, x)?;
    if start > end || end > x[axis] || step == 0 {
        crate::op_bail!(
            "slice {start}..{end} by {step} of axis {axis} lies outside its {} entries",
            x[axis]
        );
    }
    let mut out = x.to_vec();
    out[axis] = (end - start).div_ceil(step);
    Ok(out)
}

/// (outer, inner, the input's entries along `axis`) of a slice of `x`.
fn slice_extents(axis: usize, x: &[usize]) -> (usize, usize, usize) {
    let inner: usize = x[axis + 1..].iter().product();
    let outer: usize = x[..axis].iter().product();
    (outer, inner, x[axis])
}

/// y = x[.., start..end:step, ..] along `axis` (ONNX Split, Slice and Gather of run-time values).
pub fn slice_forward(
    axis: usize,
    start: usize,
    end: usize,
    step: usize,
    x: &Tensor,
) -> Result<Tensor, OpError> {
    let out_shape = slice_output_shape(axis, start, end, step, x.shape())?;
    let (outer, inner, along) = slice_extents(axis, x.shape());
    let picked = out_shape[axis];
    let mut data = Vec::new();
    data.try_reserve_exact(numel_of(&out_shape)?)
        .map_err(|_| OpError("cannot allocate a slice's output".into()))?;
    for o in 0..outer {
        let row = &x.data()[o * along * inner..][..along * inner];
        if step == 1 {
            data.extend_from_slice(&row[start * inner..][..picked * inner]);
        } else {
            for i in 0..picked {
                data.extend_from_slice(&row[(start + i * step) * inner..][..inner]);
            }
        }
    }
    Tensor::new(out_shape, data)
}

/// d_x: d_y at the sliced entries of `axis`, zero elsewhere.
pub fn slice_backward(
    axis: usize,
    start: usize,
    end: usize,
    step: usize,
    x_shape: &[usize],
    d_y: &Tensor,
) -> Result<Tensor, OpError> {
    let out_shape = slice_output_shape(axis, start, end, step, x_shape)?;
    if d_y.shape() != out_shape.as_slice() {
        crate::op_bail!(
            "slice gradient has shape {:?}, expected {out_shape:?}",
            d_y.shape()
        );
    }
    let (outer, inner, along) = slice_extents(axis, x_shape);
    let picked = out_shape[axis];
    let mut g = Tensor::try_zeros(x_shape)?;
    let gd = g.data_mut();
    for o in 0..outer {
        let src = &d_y.data()[o * picked * inner..][..picked * inner];
        let row = &mut gd[o * along * inner..][..along * inner];
        for (i, chunk) in src.chunks_exact(inner.max(1)).enumerate() {
            row[(start + i * step) * inner..][..inner].copy_from_slice(chunk);
        }
    }
    Ok(g)
}

// Concat

pub fn concat_output_shape(axis: usize, inputs: &[&[usize]]) -> Result<Vec<usize>, OpError> {
    let Some(first) = inputs.first() else {
        crate::op_bail!("concat needs at least one input");
    };
    check_axis(axis, first)?;
    let mut out = first.to_vec();
    out[axis] = 0;
    for s in inputs {
        let same_rest = s.len() == first.len()
            && s.iter()
                .zip(first.iter())
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !same_rest {
            crate::op_bail!(
                "concat along axis {axis}: shape {s:?} does not match {first:?} outside the axis"
            );
        }
        out[axis] = out[axis]
            .checked_add(s[axis])
            .ok_or_else(|| OpError("concat output is too large".into()))?;
    }
    numel_of(&out)?;
    Ok(out)
}

pub fn concat_forward(axis: usize, inputs: &[&Tensor]) -> Result<Tensor, OpError> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let out_shape = concat_output_shape(axis, &shapes)?;
    let inner: usize = out_shape[axis + 1..].iter().product();
    // elements each input contributes per outer index
    let pieces: Vec<usize> = inputs.iter().map(|t| t.shape()[axis] * inner).collect();
    let row: usize = pieces.iter().sum();
    let mut y = Tensor::try_zeros(&out_shape)?;
    if y.numel() == 0 {
        return Ok(y);
    }
    // (outer, row): each output row is the inputs' pieces side by side
    y.data_mut()
        .par_chunks_mut(row)
        .with_min_len(rows_per_task(row))
        .enumerate()
        .for_each(|(o, dst)| {
            let mut at = 0;
            for (t, &len) in inputs.iter().zip(&pieces) {
                dst[at..at + len].copy_from_slice(&t.data()[o * len..(o + 1) * len]);
                at += len;
            }
        });
    Ok(y)
}

/// One gradient per input: the slices of d_y along `axis`.
pub fn concat_backward(
    axis: usize,
    inputs: &[&Tensor],
    d_y: &Tensor,
) -> Result<Vec<Tensor>, OpError> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let out_shape = concat_output_shape(axis, &shapes)?;
    if d_y.shape() != out_shape.as_slice() {
        crate::op_bail!(
            "concat gradient has shape {:?}, expected {out_shape:?}",
            d_y.shape()
        );
    }
    let inner: usize = out_shape[axis + 1..].iter().product();
    let row = out_shape[axis] * inner;
    let dy = d_y.data();
    let mut start = 0;
    let mut grads = Vec::with_capacity(inputs.len());
    for t in inputs {
        let len = t.shape()[axis] * inner;
        let mut g = Tensor::try_zeros(t.shape())?;
        if len > 0 {
            // (outer, len) gathered from (outer, row) at column `start`
            g.data_mut()
                .par_chunks_mut(len)
                .with_min_len(rows_per_task(len))
                .enumerate()
                .for_each(|(o, dst)| {
                    dst.copy_from_slice(&dy[o * row + start..o * row + start + len])
                });
        }
        start += len;
        grads.push(g);
    }
    Ok(grads)
}

/// For every element of a tensor of `out` dims, the flat index of its source in a tensor of
/// `shape` broadcast to `out` (numpy rules: `shape` aligned at the right, size-1 dimensions
/// repeated).
pub fn broadcast_sources(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let lead = out.len() - shape.len();
    // the source's stride along each output dimension (0 where it broadcasts)
    let mut strides = vec![0usize; out.len()];
    let mut stride = 1;
    for d in (0..shape.len()).rev() {
        strides[lead + d] = if shape[d] == 1 { 0 } else { stride };
        stride *= shape[d];
    }
    let mut src = Vec::with_capacity(out.iter().product());
    walk_strided(out, &strides, |_, j| src.push(j));
    src
}

/// Calls `f(i, j)` for every element of a tensor of `dims` in row-major order: `i` its flat
/// index, `j` the sum of its index along each dimension times `strides` (the flat index of the
/// element it reads in a reduced or broadcast tensor; a stride of 0 repeats).
pub(crate) fn walk_strided(dims: &[usize], strides: &[usize], mut f: impl FnMut(usize, usize)) {
    let numel: usize = dims.iter().product();
    let mut idx = vec![0usize; dims.len()];
    let mut j = 0usize;
    for i in 0..numel {
        f(i, j);
        // odometer: the last dimension moves fastest
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            j += strides[d];
            if idx[d] < dims[d] {
                break;
            }
            j -= strides[d] * idx[d];
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
    }

    #[test]
    fn check_axis_rejects_out_of_range() {
        assert!(check_axis(1, &[2, 3]).is_ok());
        assert!(check_axis(2, &[2, 3]).is_err());
        assert!(check_axis(0, &[]).is_err());
    }

    #[test]
    fn pad_values_and_shape() {
        let x = t(&[1, 2], &[1.0, 2.0]);
        let spec = PadSpec {
            pads: vec![(1, 0), (1, 2)],
            value: -1.0,
        };
        let y = pad_forward(&spec, &x).unwrap();
        assert_eq!(y.shape(), &[2, 5]);
        assert_eq!(
            y.data(),
            &[-1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 1.0, 2.0, -1.0, -1.0]
        );
        assert!(pad_output_shape(&spec, &[1, 2, 3]).is_err());
    }

    #[test]
    fn pad_gradient() {
        let op = Op::Pad(PadSpec {
            pads: vec![(0, 1), (2, 0), (1, 1), (0, 3)],
            value: 0.5,
        });
        assert_op_gradients(
            &op,
            &[test_tensor(&[2, 3, 2, 3], 1)],
            &[true],
            Mode::Eval,
            1e-2,
        );
    }

    #[test]
    fn flatten_shapes_follow_onnx() {
        assert_eq!(flatten_output_shape(1, &[2, 3, 4, 5]).unwrap(), vec![2, 60]);
        assert_eq!(flatten_output_shape(0, &[2, 3]).unwrap(), vec![1, 6]);
        assert_eq!(flatten_output_shape(2, &[2, 3]).unwrap(), vec![6, 1]);
        assert!(flatten_output_shape(3, &[2, 3]).is_err());
    }

    #[test]
    fn reshape_shapes_follow_onnx() {
        assert_eq!(
            reshape_output_shape(&[0, -1], &[2, 3, 4]).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_output_shape(&[-1], &[2, 3, 4]).unwrap(), vec![24]);
        assert_eq!(
            reshape_output_shape(&[4, 0, 6], &[3, 3, 8]).unwrap(),
            vec![4, 3, 6]
        );
        assert!(reshape_output_shape(&[-1, -1], &[2, 3]).is_err());
        assert!(reshape_output_shape(&[5, -1], &[2, 3]).is_err());
        assert!(reshape_output_shape(&[7], &[2, 3]).is_err());
        assert!(reshape_output_shape(&[-2, 3], &[2, 3]).is_err());
        assert!(reshape_output_shape(&[0, 0, 0], &[2, 3]).is_err());
        assert!(reshape_output_shape(&[0, -1], &[0, 3]).is_err());
    }

    #[test]
    fn flatten_and_reshape_gradients() {
        let x = test_tensor(&[2, 3, 2], 2);
        assert_op_gradients(
            &Op::Flatten { axis: 1 },
            std::slice::from_ref(&x),
            &[true],
            Mode::Eval,
            1e-2,
        );
        assert_op_gradients(
            &Op::Reshape { shape: vec![3, -1] },
            &[x],
            &[true],
            Mode::Eval,
            1e-2,
        );
    }

    #[test]
    fn transpose_errors() {
        assert!(transpose_output_shape(&[0, 0], &[2, 3]).is_err());
        assert!(transpose_output_shape(&[0, 2], &[2, 3]).is_err());
        assert!(transpose_output_shape(&[0], &[2, 3]).is_err());
    }

    #[test]
    fn transpose_matches_naive_for_every_4d_perm() {
        let x = test_tensor(&[2, 3, 4, 5], 3);
        let mut perms = Vec::new();
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let p = vec![a, b, c, d];
                        let mut s = p.clone();
                        s.sort();
                        if s == [0, 1, 2, 3] {
                            perms.push(p);
                        }
                    }
                }
            }
        }
        assert_eq!(perms.len(), 24);
        for p in perms {
            let fast = transpose_forward(&p, &x).unwrap();
            let naive = transpose_naive(&p, &x).unwrap();
            assert_eq!(fast, naive, "perm {p:?}");
            let back = transpose_backward(&p, &fast).unwrap();
            assert_eq!(back, x, "perm {p:?} round trip");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        #[test]
        fn transpose_matches_naive_on_random_shapes(
            dims in proptest::collection::vec(1usize..6, 1..6),
            keys in proptest::collection::vec(proptest::prelude::any::<u32>(), 6),
            seed in 0u64..1000,
        ) {
            let mut perm: Vec<usize> = (0..dims.len()).collect();
            perm.sort_by_key(|&i| keys[i]);
            let x = test_tensor(&dims, seed);
            proptest::prop_assert_eq!(transpose_forward(&perm, &x).unwrap(), transpose_naive(&perm, &x).unwrap());
        }
    }

    #[test]
    fn transpose_large_single_matrix_matches_naive() {
        let x = test_tensor(&[70, 130], 4);
        assert_eq!(
            transpose_forward(&[1, 0], &x).unwrap(),
            transpose_naive(&[1, 0], &x).unwrap()
        );
        let x = test_tensor(&[1, 16, 9, 11], 5);
        for p in [[0, 2, 3, 1], [0, 3, 1, 2]] {
            assert_eq!(
                transpose_forward(&p, &x).unwrap(),
                transpose_naive(&p, &x).unwrap()
            );
        }
    }

    #[test]
    fn transpose_nchw_nhwc_values() {
        let x = t(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let y = transpose_forward(&[0, 2, 3, 1], &x).unwrap();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.data(), &[1.0, 3.0, 2.0, 4.0]);
    }

    #[test]
    fn transpose_gradient() {
        let op = Op::Transpose {
            perm: vec![2, 0, 3, 1],
        };
        assert_op_gradients(
            &op,
            &[test_tensor(&[2, 3, 4, 2], 6)],
            &[true],
            Mode::Eval,
            1e-2,
        );
    }

    #[test]
    fn concat_values_and_errors() {
        let a = t(&[2, 1], &[1.0, 2.0]);
        let b = t(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let y = concat_forward(1, &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.data(), &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        assert!(concat_forward(0, &[&a, &b]).is_err());
        assert!(concat_output_shape(2, &[&[2, 1], &[2, 1]]).is_err());
        assert!(concat_output_shape(0, &[&[2, 1], &[2]]).is_err());
    }

    #[test]
    fn concat_gradients_along_each_axis() {
        for axis in 0..3 {
            let mut sa = vec![2, 3, 2];
            sa[axis] = 1;
            let inputs = [
                test_tensor(&sa, 7),
                test_tensor(&[2, 3, 2], 8),
                test_tensor(&sa, 9),
            ];
            assert_op_gradients(
                &Op::Concat { axis },
                &inputs,
                &[true, true, true],
                Mode::Eval,
                1e-2,
            );
        }
    }

    #[test]
    fn slice_values_and_errors() {
        // (2, 3): columns 1..3
        let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let y = slice_forward(1, 1, 3, 1, &x).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.data(), &[2.0, 3.0, 5.0, 6.0]);
        let y = slice_forward(0, 1, 2, 1, &x).unwrap();
        assert_eq!(y.data(), &[4.0, 5.0, 6.0]);
        assert_eq!(slice_forward(1, 2, 2, 1, &x).unwrap().shape(), &[2, 0]);
        assert!(slice_forward(1, 2, 4, 1, &x).is_err());
        assert!(slice_forward(1, 2, 1, 1, &x).is_err());
        assert!(slice_forward(2, 0, 1, 1, &x).is_err());
        let g = slice_backward(1, 1, 3, 1, &[2, 3], &t(&[2, 2], &[1.0, 2.0, 3.0, 4.0])).unwrap();
        assert_eq!(g.data(), &[0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
        assert!(slice_backward(1, 1, 3, 1, &[2, 3], &t(&[2, 1], &[1.0, 2.0])).is_err());
    }

    /// Splitting and concatenating again is the identity, on every axis.
    #[test]
    fn slices_concatenated_give_the_input_back() {
        let x = test_tensor(&[2, 5, 3, 4], 11);
        for axis in 0..4 {
            let d = x.shape()[axis];
            let cut = d / 2;
            let a = slice_forward(axis, 0, cut, 1, &x).unwrap();
            let b = slice_forward(axis, cut, d, 1, &x).unwrap();
            assert_eq!(concat_forward(axis, &[&a, &b]).unwrap(), x, "axis {axis}");
        }
    }

    /// Every second entry from 1 (Swin's patch merging, `x[:, 1::2]`) and a step past the end.
    #[test]
    fn strided_slices_pick_and_scatter_their_entries() {
        let x = Tensor::new(vec![2, 5, 1], (0..10).map(|v| v as f32).collect()).unwrap();
        let y = slice_forward(1, 1, 5, 2, &x).unwrap();
        assert_eq!(y.shape(), [2, 2, 1]);
        assert_eq!(y.data(), [1.0, 3.0, 6.0, 8.0]);
        let one = slice_forward(1, 0, 5, 7, &x).unwrap();
        assert_eq!(one.data(), [0.0, 5.0]);
        let g = slice_backward(1, 1, 5, 2, x.shape(), &y).unwrap();
        assert_eq!(g.data(), [0.0, 1.0, 0.0, 3.0, 0.0, 0.0, 6.0, 0.0, 8.0, 0.0]);
        assert!(slice_forward(1, 0, 5, 0, &x).is_err());
        for axis in 0..3 {
            assert_op_gradients(
                &Op::Slice {
                    axis,
                    start: 0,
                    end: 3,
                    step: 2,
                },
                &[test_tensor(&[3, 4, 5], 13)],
                &[true],
                Mode::Eval,
                1e-2,
            );
        }
    }

    #[test]
    fn slice_gradients_along_each_axis() {
        for axis in 0..3 {
            assert_op_gradients(
                &Op::Slice {
                    axis,
                    start: 1,
                    end: 3,
                    step: 1,
                },
                &[test_tensor(&[3, 4, 5], 12)],
                &[true],
                Mode::Eval,
                1e-2,
            );
        }
    }
}
