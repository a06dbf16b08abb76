//! Folding of the element-wise ops: casts, arithmetic, comparisons, `Where`, `Mod` and float
//! functions, with integers (shape numbers, batch multiples included) kept exact.

use super::{bad, numeric_broadcast};
use crate::engine::ops::shape::broadcast_sources;
use crate::models::onnx::Problem;
use crate::models::onnx::shape;
use crate::models::onnx::tensor::{Const, Data, Int};

pub(super) fn cast(x: &Const, to: i64) -> Result<Const, Problem> {
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

pub(super) fn binary(op: &str, a: &Const, b: &Const) -> Result<Const, Problem> {
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

/// An integer's truth value; a batch multiple is never zero (the batch is at least 1).
pub(super) fn truth(i: Int, op: &str) -> Result<i64, Problem> {
    match i {
        Int::Known(k) => Ok(k),
        Int::Batch(k) if k != 0 => Ok(1),
        Int::Batch(_) => Err(bad(format!("{op} of a zero batch multiple"))),
    }
}

/// `Equal`, `Less`, `Greater` as 0/1 integers (ONNX bool). A batch-sized dimension compares
/// with a number only where the answer holds for every batch size ≥ 1 (`n == -1` is false,
/// as in `expand(n, -1, -1)`); otherwise the file's meaning depends on the batch, an error.
pub(super) fn compare(op: &str, a: &Const, b: &Const) -> Result<Const, Problem> {
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
pub(super) fn where_(cond: &Const, x: &Const, y: &Const) -> Result<Const, Problem> {
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
pub(super) fn modulo(a: &Const, b: &Const, fmod: bool) -> Result<Const, Problem> {
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
pub(super) fn unary_float(x: &Const, op: &str, f: impl Fn(f32) -> f32) -> Result<Const, Problem> {
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
