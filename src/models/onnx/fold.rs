//! Constant folding at import: ops whose inputs are all known (shape arithmetic, `Constant`
//! tensors, casts) are evaluated here and never reach the engine graph.

use super::Problem;
use super::attrs::Attrs;
use super::shape::{self, SymShape};
use super::tensor::{self, Const, Data, Int};
use crate::engine::ops::shape::broadcast_sources;

/// Ops that [`fold`] evaluates when all their inputs are constants.
pub const FOLDABLE: &[&str] = &[
    "Gather",
    "Cast",
    "Slice",
    "Concat",
    "ConstantOfShape",
    "Expand",
    "Unsqueeze",
    "Squeeze",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Identity",
    "Reshape",
    "Flatten",
    "Transpose",
    "Equal",
    "Less",
    "Greater",
    "Not",
    "Where",
    "Mod",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Pow",
    "Range",
    "ScatterND",
];

fn bad(msg: String) -> Problem {
    Problem::Invalid(msg)
}

impl Data {
    /// The elements at the given flat indices.
    fn pick(&self, idx: &[usize]) -> Data {
        match self {
            Data::F32(v) => Data::F32(idx.iter().map(|&i| v[i]).collect()),
            Data::I64(v) => Data::I64(idx.iter().map(|&i| v[i]).collect()),
        }
    }
}

fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

fn known_shape(dims: &[usize]) -> SymShape {
    dims.iter().map(|&d| Int::Known(d as i64)).collect()
}

fn to_dims(s: &[Int], what: &str) -> Result<Vec<usize>, Problem> {
    s.iter().map(|&d| shape::known(d, what)).collect()
}

/// Walks every multi-index of `dims` in row-major order, summing `f(dim, index)` per element.
fn gather_multi(dims: &[usize], f: impl Fn(usize, usize) -> usize) -> Vec<usize> {
    let n = numel(dims);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        out.push(idx.iter().enumerate().map(|(d, &k)| f(d, k)).sum());
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Evaluates `op` on constant inputs (`None` for omitted optional inputs).
pub fn fold(
    op: &str,
    attrs: &Attrs,
    opset: i64,
    inputs: &[Option<&Const>],
) -> Result<Const, Problem> {
    let input = |i: usize| {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| bad(format!("input {i} is missing")))
    };
    let x = input(0)?;
    match op {
        "Identity" => Ok(x.clone()),
        "Gather" => gather(x, input(1)?, attrs.int("axis", 0)),
        "Cast" => cast(x, attrs.int("to", 1)),
        "Slice" => slice(x, attrs, opset, inputs),
        "Concat" => {
            let all: Vec<&Const> = inputs.iter().flatten().copied().collect();
            concat(&all, attrs.int("axis", 0))
        }
        "ConstantOfShape" => constant_of_shape(x, attrs),
        "Expand" => expand(x, input(1)?),
        "Unsqueeze" | "Squeeze" => {
            let axes = axes_of(attrs, opset, inputs)?;
            let dims = known_shape(&x.dims);
            let out = if op == "Unsqueeze" {
                unsqueeze_shape(
                    &dims,
                    &axes.ok_or_else(|| bad("Unsqueeze without axes".into()))?,
                )?
            } else {
                squeeze_shape(&dims, axes.as_deref())?
            };
            Ok(Const {
                dims: to_dims(&out, "dimension")?,
                data: x.data.clone(),
            })
        }
        "Reshape" => {
            let target = input(1)?.to_i64("the reshape target")?;
            let t: Vec<Int> = target.into_iter().map(Int::Known).collect();
            let out = shape::reshape(&known_shape(&x.dims), &t, attrs.int("allowzero", 0) != 0)?;
            Ok(Const {
                dims: to_dims(&out, "dimension")?,
                data: x.data.clone(),
            })
        }
        "Flatten" => {
            let a = shape::axis(attrs.int("axis", 1), x.dims.len() + 1)?;
            let dims = vec![numel(&x.dims[..a]), numel(&x.dims[a..])];
            Ok(Const {
                dims,
                data: x.data.clone(),
            })
        }
        "Transpose" => transpose(x, attrs.ints("perm")),
        "Mul" | "Add" | "Sub" | "Div" => binary(op, x, input(1)?),
        "Equal" | "Less" | "Greater" => compare(op, x, input(1)?),
        "Not" => match &x.data {
            Data::I64(v) => Ok(Const {
                dims: x.dims.clone(),
                data: Data::I64(
                    v.iter()
                        .map(|&i| Ok(Int::Known((truth(i, "Not")? == 0) as i64)))
                        .collect::<Result<_, Problem>>()?,
                ),
            }),
            Data::F32(_) => Err(bad("Not of a float tensor".into())),
        },
        "Where" => where_(x, input(1)?, input(2)?),
        "Mod" => modulo(x, input(1)?, attrs.int("fmod", 0) != 0),
        "Sqrt" => unary_float(x, op, f32::sqrt),
        "Reciprocal" => unary_float(x, op, |v| 1.0 / v),
        "Neg" => match &x.data {
            Data::I64(v) => Ok(Const {
                dims: x.dims.clone(),
                data: Data::I64(v.iter().map(|&i| shape::neg(i)).collect()),
            }),
            Data::F32(v) => Ok(Const::f32(x.dims.clone(), v.iter().map(|&f| -f).collect())),
        },
        "Pow" => {
            let e = input(1)?;
            let dims = numeric_broadcast(&x.dims, &e.dims)?;
            let (a, b) = (x.to_f32(op)?, e.to_f32(op)?);
            let (ia, ib) = (
                broadcast_sources(&x.dims, &dims),
                broadcast_sources(&e.dims, &dims),
            );
            let v: Vec<f32> = ia.iter().zip(&ib).map(|(&i, &j)| a[i].powf(b[j])).collect();
            // an integer base keeps an integer result (ONNX: the output type is the base's)
            match x.data {
                Data::I64(_) => Ok(Const {
                    dims,
                    data: Data::I64(v.iter().map(|&f| Int::Known(f as i64)).collect()),
                }),
                Data::F32(_) => Ok(Const::f32(dims, v)),
            }
        }
        "Range" => range(x, input(1)?, input(2)?),
        "ScatterND" => scatter_nd(x, input(1)?, input(2)?, &attrs.string("reduction", "none")),
        _ => Err(bad(format!("{op} cannot be evaluated at import time"))),
    }
}

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

fn gather(x: &Const, idx: &Const, axis: i64) -> Result<Const, Problem> {
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

fn cast(x: &Const, to: i64) -> Result<Const, Problem> {
    // FLOAT, FLOAT16, DOUBLE, BFLOAT16 become f32; every integer type and BOOL stays exact.
    let data = match to {
        1 | 10 | 11 | 16 => Data::F32(x.to_f32("a cast to float")?),
        9 => Data::I64(match &x.data {
            Data::F32(v) => v.iter().map(|&f| Int::Known((f != 0.0) as i64)).collect(),
            Data::I64(v) => v
                .iter()
                .map(|&i| Int::Known((i != Int::Known(0)) as i64))
                .collect(),
        }),
        2..=7 | 12 | 13 => match &x.data {
            Data::F32(v) => Data::I64(v.iter().map(|&f| Int::Known(f as i64)).collect()),
            Data::I64(v) => Data::I64(v.clone()),
        },
        _ => return Err(bad(format!("Cast to data type {to} is not supported"))),
    };
    Ok(Const {
        dims: x.dims.clone(),
        data,
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

fn slice(
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

fn concat(all: &[&Const], axis: i64) -> Result<Const, Problem> {
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

fn constant_of_shape(shape_in: &Const, attrs: &Attrs) -> Result<Const, Problem> {
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

fn numeric_broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, Problem> {
    let s = shape::broadcast(&known_shape(a), &known_shape(b))?;
    to_dims(&s, "dimension")
}

fn expand(x: &Const, shape_in: &Const) -> Result<Const, Problem> {
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

fn transpose(x: &Const, perm: Option<Vec<i64>>) -> Result<Const, Problem> {
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

fn binary(op: &str, a: &Const, b: &Const) -> Result<Const, Problem> {
    let dims = numeric_broadcast(&a.dims, &b.dims)?;
    let (ia, ib) = (
        broadcast_sources(&a.dims, &dims),
        broadcast_sources(&b.dims, &dims),
    );
    let data = match (&a.data, &b.data) {
        (Data::I64(x), Data::I64(y)) => Data::I64(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| int_op(op, x[i], y[j]))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            let (x, y) = (a.to_f32(op)?, b.to_f32(op)?);
            Data::F32(
                ia.iter()
                    .zip(&ib)
                    .map(|(&i, &j)| float_op(op, x[i], y[j]))
                    .collect(),
            )
        }
    };
    Ok(Const { dims, data })
}

/// `Range(start, limit, delta)`: integers stay integers (at most 2^24 entries: a hostile
/// file cannot make the importer allocate without bound).
fn range(start: &Const, limit: &Const, delta: &Const) -> Result<Const, Problem> {
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
fn scatter_nd(
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

/// An integer's truth value; a batch multiple is never zero (the batch is at least 1).
fn truth(i: Int, op: &str) -> Result<i64, Problem> {
    match i {
        Int::Known(k) => Ok(k),
        Int::Batch(k) if k != 0 => Ok(1),
        Int::Batch(_) => Err(bad(format!("{op} of a zero batch multiple"))),
    }
}

/// `Equal`, `Less`, `Greater` as 0/1 integers (ONNX bool). A batch-sized dimension compares
/// with a number only where the answer holds for every batch size ≥ 1 (`n == -1` is false,
/// as in `expand(n, -1, -1)`); otherwise the file's meaning depends on the batch, an error.
fn compare(op: &str, a: &Const, b: &Const) -> Result<Const, Problem> {
    let dims = numeric_broadcast(&a.dims, &b.dims)?;
    let (ia, ib) = (
        broadcast_sources(&a.dims, &dims),
        broadcast_sources(&b.dims, &dims),
    );
    let v: Vec<Int> = match (&a.data, &b.data) {
        (Data::I64(x), Data::I64(y)) => ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| compare_ints(op, x[i], y[j]).map(|t| Int::Known(t as i64)))
            .collect::<Result<_, _>>()?,
        _ => {
            let (x, y) = (a.to_f32(op)?, b.to_f32(op)?);
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let t = match op {
                        "Equal" => x[i] == y[j],
                        "Less" => x[i] < y[j],
                        _ => x[i] > y[j],
                    };
                    Int::Known(t as i64)
                })
                .collect()
        }
    };
    Ok(Const {
        dims,
        data: Data::I64(v),
    })
}

fn compare_ints(op: &str, x: Int, y: Int) -> Result<bool, Problem> {
    let ord = match (x, y) {
        (Int::Known(p), Int::Known(q)) => Some(p.cmp(&q)),
        (Int::Batch(p), Int::Batch(q)) if p == q => Some(std::cmp::Ordering::Equal),
        // k·n against m for every n ≥ 1: decided when m lies outside the reachable values
        (Int::Batch(k), Int::Known(m)) if k > 0 && m < k => Some(std::cmp::Ordering::Greater),
        (Int::Known(m), Int::Batch(k)) if k > 0 && m < k => Some(std::cmp::Ordering::Less),
        _ => None,
    };
    let ord = ord.ok_or_else(|| {
        bad(format!(
            "{op} of {x:?} and {y:?} depends on the batch size, which is only known at run time"
        ))
    })?;
    Ok(match op {
        "Equal" => ord.is_eq(),
        "Less" => ord.is_lt(),
        _ => ord.is_gt(),
    })
}

/// `Where(cond, x, y)` with numpy broadcasting; integers stay integers (shape lists keep their
/// batch entries).
fn where_(cond: &Const, x: &Const, y: &Const) -> Result<Const, Problem> {
    let dims = numeric_broadcast(&numeric_broadcast(&cond.dims, &x.dims)?, &y.dims)?;
    let ic = broadcast_sources(&cond.dims, &dims);
    let (ix, iy) = (
        broadcast_sources(&x.dims, &dims),
        broadcast_sources(&y.dims, &dims),
    );
    let pick: Vec<bool> = match &cond.data {
        Data::I64(v) => ic
            .iter()
            .map(|&i| truth(v[i], "Where").map(|t| t != 0))
            .collect::<Result<_, _>>()?,
        Data::F32(v) => ic.iter().map(|&i| v[i] != 0.0).collect(),
    };
    // element k from a (at ix[k]) where pick[k], else from b (at iy[k])
    fn choose<T: Copy>(pick: &[bool], a: &[T], ix: &[usize], b: &[T], iy: &[usize]) -> Vec<T> {
        pick.iter()
            .enumerate()
            .map(|(k, &p)| if p { a[ix[k]] } else { b[iy[k]] })
            .collect()
    }
    let data = match (&x.data, &y.data) {
        (Data::I64(a), Data::I64(b)) => Data::I64(choose(&pick, a, &ix, b, &iy)),
        _ => {
            let (a, b) = (x.to_f32("Where")?, y.to_f32("Where")?);
            Data::F32(choose(&pick, &a, &ix, &b, &iy))
        }
    };
    Ok(Const { dims, data })
}

/// `Mod`: integers take the divisor's sign (Python's %, ONNX's default); `fmod` and floats
/// take the dividend's (C's fmod).
fn modulo(a: &Const, b: &Const, fmod: bool) -> Result<Const, Problem> {
    let dims = numeric_broadcast(&a.dims, &b.dims)?;
    let (ia, ib) = (
        broadcast_sources(&a.dims, &dims),
        broadcast_sources(&b.dims, &dims),
    );
    match (&a.data, &b.data) {
        (Data::I64(_), Data::I64(_)) => {
            let (x, y) = (a.to_i64("Mod")?, b.to_i64("Mod")?);
            let v = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let r = x[i]
                        .checked_rem(y[j])
                        .ok_or_else(|| bad("integer Mod by zero".into()))?;
                    let r = if !fmod && r != 0 && (r < 0) != (y[j] < 0) {
                        r + y[j]
                    } else {
                        r
                    };
                    Ok(Int::Known(r))
                })
                .collect::<Result<_, Problem>>()?;
            Ok(Const {
                dims,
                data: Data::I64(v),
            })
        }
        _ => {
            let (x, y) = (a.to_f32("Mod")?, b.to_f32("Mod")?);
            let v = ia.iter().zip(&ib).map(|(&i, &j)| x[i] % y[j]).collect();
            Ok(Const::f32(dims, v))
        }
    }
}

/// A float function of each element (integers are converted first, as the exporters cast
/// shape numbers to float before `Sqrt`).
fn unary_float(x: &Const, op: &str, f: impl Fn(f32) -> f32) -> Result<Const, Problem> {
    let v = x.to_f32(op)?;
    Ok(Const::f32(x.dims.clone(), v.into_iter().map(f).collect()))
}

fn int_op(op: &str, x: Int, y: Int) -> Result<Int, Problem> {
    match (op, x, y) {
        ("Div", Int::Known(p), Int::Known(q)) => {
            // ONNX integer division truncates.
            p.checked_div(q)
                .map(Int::Known)
                .ok_or_else(|| bad("integer division by zero".into()))
        }
        ("Div", _, _) => shape::div(x, y),
        ("Mul", _, _) => shape::mul(x, y),
        ("Add", _, _) => shape::add(x, y),
        _ => shape::add(x, shape::neg(y)),
    }
}

fn float_op(op: &str, x: f32, y: f32) -> f32 {
    match op {
        "Mul" => x * y,
        "Add" => x + y,
        "Sub" => x - y,
        _ => x / y,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::models::onnx::proto::NodeProto;

    fn no_attrs() -> NodeProto {
        NodeProto::default()
    }

    #[test]
    fn gather_slice_concat() {
        let n = no_attrs();
        let a = Attrs::of(&n);
        let x = Const::ints(vec![4], vec![1, 32, 7, 7]);
        let g = fold(
            "Gather",
            &a,
            13,
            &[Some(&x), Some(&Const::ints(vec![], vec![-1]))],
        )
        .unwrap();
        assert_eq!(g, Const::ints(vec![], vec![7]));
        let s = fold(
            "Slice",
            &a,
            13,
            &[
                Some(&x),
                Some(&Const::ints(vec![1], vec![1])),
                Some(&Const::ints(vec![1], vec![i64::MAX])),
            ],
        )
        .unwrap();
        assert_eq!(s, Const::ints(vec![3], vec![32, 7, 7]));
        let c = fold("Concat", &a, 13, &[Some(&g), Some(&g)]);
        assert!(c.is_err(), "rank-0 concat has no axis 0");
    }

    #[test]
    fn transpose_and_expand() {
        let n = no_attrs();
        let a = Attrs::of(&n);
        let x = Const::f32(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let t = fold("Transpose", &a, 13, &[Some(&x)]).unwrap();
        assert_eq!(t, Const::f32(vec![3, 2], vec![0., 3., 1., 4., 2., 5.]));
        let e = fold(
            "Expand",
            &a,
            13,
            &[
                Some(&Const::f32(vec![2, 1], vec![1., 2.])),
                Some(&Const::ints(vec![2], vec![2, 2])),
            ],
        )
        .unwrap();
        assert_eq!(e, Const::f32(vec![2, 2], vec![1., 1., 2., 2.]));
        let m = fold(
            "Sub",
            &a,
            13,
            &[Some(&x), Some(&Const::f32(vec![3], vec![1., 1., 1.]))],
        )
        .unwrap();
        assert_eq!(m, Const::f32(vec![2, 3], vec![-1., 0., 1., 2., 3., 4.]));
    }

    /// `expand(n, -1, -1)`'s shape arithmetic with a batch-sized entry, Mod's two sign rules,
    /// Range, and ScatterND as Swin's mask builds it.
    #[test]
    fn comparisons_where_mod_range_and_scatter() {
        let n = no_attrs();
        let a = Attrs::of(&n);
        let shape = Const {
            dims: vec![3],
            data: Data::I64(vec![Int::Batch(1), Int::Known(-1), Int::Known(5)]),
        };
        let minus1 = Const::ints(vec![], vec![-1]);
        let eq = fold("Equal", &a, 13, &[Some(&shape), Some(&minus1)]).unwrap();
        assert_eq!(eq, Const::ints(vec![3], vec![0, 1, 0]));
        let ones = Const::ints(vec![3], vec![1, 1, 1]);
        let w = fold("Where", &a, 13, &[Some(&eq), Some(&ones), Some(&shape)]).unwrap();
        assert_eq!(
            w.data,
            Data::I64(vec![Int::Batch(1), Int::Known(1), Int::Known(5)])
        );
        // a batch multiple against a positive number is not decided by the file
        let five = Const::ints(vec![], vec![5]);
        assert!(fold("Equal", &a, 13, &[Some(&shape), Some(&five)]).is_err());
        let (x, y) = (
            Const::ints(vec![2], vec![-7, 7]),
            Const::ints(vec![], vec![3]),
        );
        assert_eq!(
            fold("Mod", &a, 13, &[Some(&x), Some(&y)]).unwrap(),
            Const::ints(vec![2], vec![2, 1])
        );
        let zero = Const::ints(vec![], vec![0]);
        assert!(fold("Mod", &a, 13, &[Some(&x), Some(&zero)]).is_err());
        let r = fold(
            "Range",
            &a,
            13,
            &[
                Some(&Const::ints(vec![], vec![1])),
                Some(&Const::ints(vec![], vec![8])),
                Some(&y),
            ],
        )
        .unwrap();
        assert_eq!(r, Const::ints(vec![3], vec![1, 4, 7]));
        let huge = Const::ints(vec![], vec![1 << 40]);
        let one = Const::ints(vec![], vec![1]);
        assert!(fold("Range", &a, 13, &[Some(&zero), Some(&huge), Some(&one)]).is_err());
        let data = Const::f32(vec![2, 3], vec![0.0; 6]);
        let idx = Const::ints(vec![1, 1], vec![1]);
        let upd = Const::f32(vec![1, 3], vec![1.0, 2.0, 3.0]);
        let sc = fold("ScatterND", &a, 13, &[Some(&data), Some(&idx), Some(&upd)]).unwrap();
        assert_eq!(
            sc,
            Const::f32(vec![2, 3], vec![0.0, 0.0, 0.0, 1.0, 2.0, 3.0])
        );
        let bad_idx = Const::ints(vec![1, 1], vec![2]);
        assert!(
            fold(
                "ScatterND",
                &a,
                13,
                &[Some(&data), Some(&bad_idx), Some(&upd)]
            )
            .is_err()
        );
        let sq = fold("Sqrt", &a, 13, &[Some(&Const::ints(vec![], vec![64]))]).unwrap();
        assert_eq!(sq, Const::f32(vec![], vec![8.0]));
    }

    #[test]
    fn slice_negative_step() {
        assert_eq!(slice_range(-1, i64::MIN, -1, 3).unwrap(), vec![2, 1, 0]);
        assert_eq!(slice_range(0, 2, 1, 5).unwrap(), vec![0, 1]);
    }
}
