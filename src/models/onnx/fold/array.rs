//! Folding of the ops that move or pick elements (gather, slice, concat, expand, transpose,
//! squeeze and unsqueeze, `Range`, `ScatterND`, `ConstantOfShape`), with the axis and index rules
//! the importer also uses on run-time values.

use super::{bad, gather_multi, numel, numeric_broadcast, strides};
use crate::engine::ops::shape::broadcast_sources;
use crate::models::onnx::Problem;
use crate::models::onnx::attrs::Attrs;
use crate::models::onnx::shape::{self, SymShape};
use crate::models::onnx::tensor::{self, Const, Data, Int};

/// The `axes` of Squeeze/Unsqueeze: an attribute before opset 13, an input from 13 on.
pub fn axes_of(
    attrs: &Attrs,
    opset: i64,
    inputs: &[Option<&Const>],
) -> Result<Option<Vec<i64>>, Problem> {
    if opset < 13 || attrs.has("axes") {
        return Ok(attrs.ints("axes"));
    }
    inputs
        .get(1)
        .copied()
        .flatten()
        .map(|c| c.to_i64("axes"))
        .transpose()
}

pub fn unsqueeze_shape(dims: &[Int], axes: &[i64]) -> Result<SymShape, Problem> {
    let rank = dims.len() + axes.len();
    let mut norm: Vec<usize> = axes
        .iter()
        .map(|&a| shape::axis(a, rank))
        .collect::<Result<_, _>>()?;
    norm.sort_unstable();
    norm.dedup();
    if norm.len() != axes.len() {
        return Err(bad(format!("Unsqueeze axes {axes:?} repeat an axis")));
    }
    let mut src = dims.iter();
    Ok((0..rank)
        .map(|i| {
            if norm.contains(&i) {
                Int::Known(1)
            } else {
                src.next().copied().unwrap_or(Int::Known(1))
            }
        })
        .collect())
}

pub fn squeeze_shape(dims: &[Int], axes: Option<&[i64]>) -> Result<SymShape, Problem> {
    let Some(axes) = axes else {
        return Ok(dims
            .iter()
            .copied()
            .filter(|&d| d != Int::Known(1))
            .collect());
    };
    let norm: Vec<usize> = axes
        .iter()
        .map(|&a| shape::axis(a, dims.len()))
        .collect::<Result<_, _>>()?;
    for &a in &norm {
        if dims[a] != Int::Known(1) {
            return Err(bad(format!(
                "cannot squeeze axis {a} of shape {dims:?}: it is not 1"
            )));
        }
    }
    Ok(dims
        .iter()
        .enumerate()
        .filter(|(i, _)| !norm.contains(i))
        .map(|(_, &d)| d)
        .collect())
}

/// An ONNX index into an axis of length `n` (negative counts from the end) as a position;
/// `what` names it in the error.
pub fn index_in(i: i64, n: i64, what: &str) -> Result<usize, Problem> {
    let j = if i < 0 { i + n } else { i };
    (0..n)
        .contains(&j)
        .then_some(j as usize)
        .ok_or_else(|| bad(format!("{what} {i} is out of range for {n}")))
}

pub(super) fn gather(x: &Const, idx: &Const, axis: i64) -> Result<Const, Problem> {
    let a = shape::axis(axis, x.dims.len())?;
    let n = x.dims[a] as i64;
    let ids: Vec<usize> = idx
        .to_i64("Gather indices")?
        .into_iter()
        .map(|i| index_in(i, n, "Gather index"))
        .collect::<Result<_, _>>()?;
    let outer = numel(&x.dims[..a]);
    let inner = numel(&x.dims[a + 1..]);
    let mut src = Vec::with_capacity(outer * ids.len() * inner);
    for o in 0..outer {
        for &j in &ids {
            src.extend((0..inner).map(|k| (o * x.dims[a] + j) * inner + k));
        }
    }
    let dims = [&x.dims[..a], &idx.dims[..], &x.dims[a + 1..]].concat();
    Ok(Const {
        dims,
        data: x.data.pick(&src),
    })
}

/// A Slice's `(starts, ends, axes, steps)`, equal in length: attributes before opset 10,
/// constant inputs 1..=4 from 10 on (axes default to 0.., steps to 1).
pub fn slice_params(
    attrs: &Attrs,
    opset: i64,
    inputs: &[Option<&Const>],
) -> Result<[Vec<i64>; 4], Problem> {
    let list = |i: usize, name: &str| -> Result<Option<Vec<i64>>, Problem> {
        if opset < 10 {
            return Ok(attrs.ints(name));
        }
        inputs
            .get(i)
            .copied()
            .flatten()
            .map(|c| c.to_i64(name))
            .transpose()
    };
    let starts = list(1, "starts")?.ok_or_else(|| bad("Slice without starts".into()))?;
    let ends = list(2, "ends")?.ok_or_else(|| bad("Slice without ends".into()))?;
    let axes = list(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = list(4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(bad(
            "Slice starts, ends, axes and steps differ in length".into()
        ));
    }
    Ok([starts, ends, axes, steps])
}

pub(super) fn slice(
    x: &Const,
    attrs: &Attrs,
    opset: i64,
    inputs: &[Option<&Const>],
) -> Result<Const, Problem> {
    let [starts, ends, axes, steps] = slice_params(attrs, opset, inputs)?;
    let mut picks: Vec<Vec<usize>> = x.dims.iter().map(|&d| (0..d).collect()).collect();
    for (((&s, &e), &a), &st) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
        let a = shape::axis(a, x.dims.len())?;
        picks[a] = slice_range(s, e, st, x.dims[a] as i64)?;
    }
    let dims: Vec<usize> = picks.iter().map(Vec::len).collect();
    let st = strides(&x.dims);
    let src = gather_multi(&dims, |d, k| picks[d][k] * st[d]);
    Ok(Const {
        dims,
        data: x.data.pick(&src),
    })
}

/// Indices selected along one axis of length `n` (ONNX clamping rules).
pub fn slice_range(start: i64, end: i64, step: i64, n: i64) -> Result<Vec<usize>, Problem> {
    if step == 0 {
        return Err(bad("Slice step 0".into()));
    }
    let norm = |v: i64| if v < 0 { v + n } else { v };
    let (s, e) = if step > 0 {
        (norm(start).clamp(0, n), norm(end).clamp(0, n))
    } else {
        (norm(start).clamp(-1, n - 1), norm(end).clamp(-1, n - 1))
    };
    let mut out = Vec::new();
    let mut i = s;
    while (step > 0 && i < e) || (step < 0 && i > e) {
        out.push(i as usize);
        i += step;
    }
    Ok(out)
}

pub(super) fn concat(all: &[&Const], axis: i64) -> Result<Const, Problem> {
    let first = all.first().ok_or_else(|| bad("Concat of nothing".into()))?;
    let a = shape::axis(axis, first.dims.len())?;
    for c in all {
        let same = c.dims.len() == first.dims.len()
            && c.dims
                .iter()
                .zip(&first.dims)
                .enumerate()
                .all(|(i, (x, y))| i == a || x == y);
        if !same {
            return Err(bad(format!(
                "Concat of shapes {:?} and {:?} along axis {a}",
                first.dims, c.dims
            )));
        }
    }
    let floats = all.iter().any(|c| matches!(c.data, Data::F32(_)));
    let outer = numel(&first.dims[..a]);
    let mut dims = first.dims.clone();
    dims[a] = all.iter().map(|c| c.dims[a]).sum();
    let chunk = |c: &Const, o: usize| {
        let len = numel(&c.dims[a..]);
        o * len..(o + 1) * len
    };
    let data = if floats {
        let parts: Vec<Vec<f32>> = all
            .iter()
            .map(|c| c.to_f32("a Concat operand"))
            .collect::<Result<_, _>>()?;
        let mut v = Vec::new();
        for o in 0..outer {
            for (c, p) in all.iter().zip(&parts) {
                v.extend_from_slice(&p[chunk(c, o)]);
            }
        }
        Data::F32(v)
    } else {
        let mut v = Vec::new();
        for o in 0..outer {
            for c in all {
                if let Data::I64(p) = &c.data {
                    v.extend_from_slice(&p[chunk(c, o)]);
                }
            }
        }
        Data::I64(v)
    };
    Ok(Const { dims, data })
}

pub(super) fn constant_of_shape(shape_in: &Const, attrs: &Attrs) -> Result<Const, Problem> {
    let raw = shape_in.to_i64("the ConstantOfShape shape")?;
    let (dims, n) = tensor::checked_dims("ConstantOfShape output", &raw)?;
    let value = match attrs.tensor("value") {
        Some(t) => tensor::decode(t, None)?,
        None => Const::f32(vec![1], vec![0.0]),
    };
    Ok(Const {
        dims,
        data: match value.data {
            Data::F32(v) => Data::F32(vec![v.first().copied().unwrap_or(0.0); n]),
            Data::I64(v) => Data::I64(vec![v.first().copied().unwrap_or(Int::Known(0)); n]),
        },
    })
}

pub(super) fn expand(x: &Const, shape_in: &Const) -> Result<Const, Problem> {
    let target = shape_in.to_i64("the Expand shape")?;
    let (target, _) = tensor::checked_dims("Expand shape", &target)?;
    let dims = numeric_broadcast(&x.dims, &target)?;
    tensor::checked_dims(
        "Expand output",
        &dims.iter().map(|&d| d as i64).collect::<Vec<_>>(),
    )?;
    Ok(Const {
        data: x.data.pick(&broadcast_sources(&x.dims, &dims)),
        dims,
    })
}

pub(super) fn transpose(x: &Const, perm: Option<Vec<i64>>) -> Result<Const, Problem> {
    let r = x.dims.len();
    let perm: Vec<usize> = match perm {
        Some(p) => p
            .iter()
            .map(|&a| shape::axis(a, r))
            .collect::<Result<_, _>>()?,
        None => (0..r).rev().collect(),
    };
    let st = strides(&x.dims);
    let dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
    let src = gather_multi(&dims, |d, k| k * st[perm[d]]);
    Ok(Const {
        dims,
        data: x.data.pick(&src),
    })
}

/// `Range(start, limit, delta)`: integers stay integers (at most 2^24 entries: a hostile
/// file cannot make the importer allocate without bound).
pub(super) fn range(start: &Const, limit: &Const, delta: &Const) -> Result<Const, Problem> {
    const MAX: f64 = (1u64 << 24) as f64;
    let all_int = [start, limit, delta]
        .iter()
        .all(|c| matches!(c.data, Data::I64(_)));
    let one = |c: &Const, what: &str| -> Result<f64, Problem> {
        let v = c.to_f32(what)?;
        match (&c.data, v.as_slice()) {
            (Data::I64(_), [_]) => Ok(c.to_i64(what)?[0] as f64),
            (_, [f]) => Ok(*f as f64),
            _ => Err(bad(format!("Range {what} is not a scalar"))),
        }
    };
    let (a, b, d) = (
        one(start, "start")?,
        one(limit, "limit")?,
        one(delta, "delta")?,
    );
    let n = ((b - a) / d).ceil();
    if d == 0.0 || !n.is_finite() || n > MAX {
        return Err(bad(format!(
            "Range({a}, {b}, {d}) is empty-stepped or too long"
        )));
    }
    let n = n.max(0.0) as usize;
    Ok(if all_int {
        let (a, d) = (a as i64, d as i64);
        Const::ints(vec![n], (0..n as i64).map(|i| a + i * d).collect())
    } else {
        Const::f32(vec![n], (0..n).map(|i| (a + i as f64 * d) as f32).collect())
    })
}

/// `ScatterND(data, indices, updates)` without reduction: copies of `data` with the slices
/// named by the last axis of `indices` replaced (Swin's shifted-window mask is built this way
/// from constants).
pub(super) fn scatter_nd(
    data: &Const,
    indices: &Const,
    updates: &Const,
    reduction: &str,
) -> Result<Const, Problem> {
    if reduction != "none" {
        return Err(bad(format!("ScatterND with reduction {reduction:?}")));
    }
    let q = *indices
        .dims
        .last()
        .ok_or_else(|| bad("ScatterND indices are a scalar".into()))?;
    if q > data.dims.len() {
        return Err(bad(format!(
            "ScatterND index depth {q} exceeds the data's rank {}",
            data.dims.len()
        )));
    }
    let slice: usize = numel(&data.dims[q..]);
    let count = numel(&indices.dims[..indices.dims.len() - 1]);
    if numel(&updates.dims) != count * slice {
        return Err(bad(format!(
            "ScatterND updates of shape {:?} do not fit indices {:?} into data {:?}",
            updates.dims, indices.dims, data.dims
        )));
    }
    let idx = indices.to_i64("ScatterND indices")?;
    let st = strides(&data.dims);
    let mut starts = Vec::with_capacity(count);
    for k in 0..count {
        let mut off = 0usize;
        for (d, &i) in idx[k * q..][..q].iter().enumerate() {
            off += index_in(i, data.dims[d] as i64, "ScatterND index")? * st[d];
        }
        starts.push(off);
    }
    // each start's slice of v replaced by the next `slice` elements of u
    fn scatter<T: Copy>(mut v: Vec<T>, u: &[T], starts: &[usize], slice: usize) -> Vec<T> {
        for (&o, part) in starts.iter().zip(u.chunks_exact(slice.max(1))) {
            v[o..o + slice].copy_from_slice(&part[..slice]);
        }
        v
    }
    let out = match (&data.data, &updates.data) {
        (Data::I64(v), Data::I64(u)) => Data::I64(scatter(v.clone(), u, &starts, slice)),
        _ => Data::F32(scatter(
            data.to_f32("ScatterND data")?,
            &updates.to_f32("ScatterND updates")?,
            &starts,
            slice,
        )),
    };
    Ok(Const {
        dims: data.dims.clone(),
        data: out,
    })
}
