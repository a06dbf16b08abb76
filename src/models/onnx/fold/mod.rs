//! Constant folding at import: ops whose inputs are all known (shape arithmetic, `Constant`
//! tensors, casts) are evaluated here and never reach the engine graph.
//!
//! This file holds the [`fold`] dispatch and the index helpers its children share; `array`
//! folds the ops that move elements, `math` the casts, arithmetic and comparisons.

mod array;
mod math;

use super::Problem;
use super::attrs::Attrs;
use super::shape::{self, SymShape};
use super::tensor::{Const, Data, Int};
use crate::engine::ops::shape::broadcast_sources;

pub use self::array::{
    axes_of, index_in, slice_params, slice_range, squeeze_shape, unsqueeze_shape,
};
use self::array::{concat, constant_of_shape, expand, gather, range, scatter_nd, slice, transpose};
use self::math::{binary, cast, compare, modulo, truth, unary_float, where_};

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

fn numeric_broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, Problem> {
    let s = shape::broadcast(&known_shape(a), &known_shape(b))?;
    to_dims(&s, "dimension")
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
