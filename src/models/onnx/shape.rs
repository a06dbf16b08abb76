//! Symbolic shapes at import time: every dimension is a number or a multiple of the batch size.
//!
//! The engine only knows the declared batch (1); ONNX files keep the batch dynamic and compute
//! reshape targets from `Shape(x)`. Tracking `Int::Batch(k)` lets the importer fold those
//! computations into `Reshape` targets with `0`/`-1` so the batch stays dynamic.

use super::Problem;
use super::tensor::Int;

pub type SymShape = Vec<Int>;

fn bad(msg: String) -> Problem {
    Problem::Invalid(msg)
}

/// The declared value of a dimension (batch taken as 1), as the engine's shape inference sees it.
pub fn declared(d: Int) -> usize {
    match d {
        Int::Known(n) => n.max(0) as usize,
        Int::Batch(k) => k.max(0) as usize,
    }
}

pub fn declared_shape(s: &[Int]) -> Vec<usize> {
    s.iter().map(|&d| declared(d)).collect()
}

/// A fixed dimension, or an error naming `what` when it depends on the batch.
pub fn known(d: Int, what: &str) -> Result<usize, Problem> {
    match d {
        Int::Known(n) if n >= 0 => Ok(n as usize),
        Int::Known(n) => Err(bad(format!("{what} is negative ({n})"))),
        Int::Batch(_) => Err(bad(format!("{what} depends on the batch size"))),
    }
}

/// Shape arithmetic on file-controlled numbers: overflow is an error, not a panic or a wrap.
fn checked(r: Option<i64>, a: Int, op: &str, b: Int) -> Result<i64, Problem> {
    r.ok_or_else(|| bad(format!("shape arithmetic {a:?} {op} {b:?} overflows")))
}

pub fn mul(a: Int, b: Int) -> Result<Int, Problem> {
    match (a, b) {
        (Int::Known(x), Int::Known(y)) => Ok(Int::Known(checked(x.checked_mul(y), a, "*", b)?)),
        (Int::Batch(k), Int::Known(y)) | (Int::Known(y), Int::Batch(k)) => {
            Ok(batch(checked(k.checked_mul(y), a, "*", b)?))
        }
        _ => Err(bad(
            "a product of two batch-sized dimensions is not supported".into(),
        )),
    }
}

/// Exact division (shape arithmetic never needs rounding).
pub fn div(a: Int, b: Int) -> Result<Int, Problem> {
    // checked: i64::MIN / -1 overflows
    let exact = |x: i64, y: i64| {
        (x.checked_rem(y) == Some(0))
            .then(|| x.checked_div(y))
            .flatten()
    };
    let r = match (a, b) {
        (Int::Known(x), Int::Known(y)) => exact(x, y).map(Int::Known),
        (Int::Batch(k), Int::Known(y)) => exact(k, y).map(batch),
        (Int::Batch(k), Int::Batch(j)) => exact(k, j).map(Int::Known),
        (Int::Known(_), Int::Batch(_)) => None,
    };
    r.ok_or_else(|| {
        bad(format!(
            "shape arithmetic {a:?} / {b:?} does not divide exactly"
        ))
    })
}

pub fn add(a: Int, b: Int) -> Result<Int, Problem> {
    match (a, b) {
        (Int::Known(x), Int::Known(y)) => Ok(Int::Known(checked(x.checked_add(y), a, "+", b)?)),
        (Int::Batch(k), Int::Batch(j)) => Ok(batch(checked(k.checked_add(j), a, "+", b)?)),
        _ => Err(bad(
            "adding a number to a batch-sized dimension is not supported".into(),
        )),
    }
}

pub fn neg(a: Int) -> Int {
    match a {
        // saturating: -i64::MIN does not exist; such a dimension is refused later as absurd
        Int::Known(x) => Int::Known(x.saturating_neg()),
        Int::Batch(k) => batch(k.saturating_neg()),
    }
}

fn batch(k: i64) -> Int {
    if k == 0 { Int::Known(0) } else { Int::Batch(k) }
}

/// Product of dimensions (at most one may depend on the batch).
pub fn product(dims: &[Int]) -> Result<Int, Problem> {
    dims.iter().try_fold(Int::Known(1), |acc, &d| mul(acc, d))
}

/// Numpy broadcast of two symbolic shapes.
pub fn broadcast(a: &[Int], b: &[Int]) -> Result<SymShape, Problem> {
    let n = a.len().max(b.len());
    let at = |s: &[Int], i: usize| {
        let off = n - s.len();
        if i < off { Int::Known(1) } else { s[i - off] }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (Int::Known(1), y) => Ok(y),
            (x, Int::Known(1)) => Ok(x),
            // a batch-sized dimension meeting its traced size written as a literal (a reshape
            // kept as written, see `traced_batch_inside`): equal at the traced batch, the only
            // batch such a graph runs at
            (Int::Known(m), Int::Batch(k)) | (Int::Batch(k), Int::Known(m)) if m == k => {
                Ok(Int::Known(m))
            }
            (x, y) => Err(bad(format!(
                "shapes {a:?} and {b:?} do not broadcast ({x:?} vs {y:?})"
            ))),
        })
        .collect()
}

/// Normalises a possibly negative axis for a tensor of `rank` dimensions.
pub fn axis(a: i64, rank: usize) -> Result<usize, Problem> {
    let r = rank as i64;
    let n = if a < 0 { a + r } else { a };
    if n < 0 || n >= r {
        return Err(bad(format!("axis {a} is out of range for rank {rank}")));
    }
    Ok(n as usize)
}

/// ONNX Reshape semantics on symbolic shapes: `0` copies the input dimension (unless
/// `allowzero`), one `-1` is inferred.
pub fn reshape(input: &[Int], target: &[Int], allowzero: bool) -> Result<SymShape, Problem> {
    // PyTorch's default exporter (torch.export) writes shapes it traced as literals: `x.view(1,
    // -1)` for `x.view(x.size(0), -1)` at batch 1. A leading literal equal to the traced size
    // of a batch-sized leading dimension is read as "the batch", the only reading under which
    // the network works for every batch (the same at the traced size).
    let batch_literal = matches!(
        (input.first(), target.first()),
        (Some(Int::Batch(b)), Some(Int::Known(t))) if b == t && *t > 0
    ) && !target.iter().any(|t| matches!(t, Int::Batch(_)));
    let target: Vec<Int> = if batch_literal {
        std::iter::once(input[0])
            .chain(target[1..].iter().copied())
            .collect()
    } else {
        target.to_vec()
    };
    let target = target.as_slice();
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            Int::Known(0) if !allowzero => *input.get(i).ok_or_else(|| {
                bad(format!(
                    "reshape target {target:?} copies dimension {i} of a rank-{} input",
                    input.len()
                ))
            })?,
            Int::Known(-1) if infer.is_none() => {
                infer = Some(i);
                Int::Known(1)
            }
            Int::Known(v) if v < 0 => {
                return Err(bad(format!("reshape target {target:?} is invalid")));
            }
            other => other,
        });
    }
    if let Some(i) = infer {
        out[i] = div(product(input)?, product(&out)?)?;
    } else if product(input)? != product(&out)? {
        out = traced_batch_inside(input, &out)
            .ok_or_else(|| bad(format!("cannot reshape {input:?} to {target:?}")))?;
    }
    Ok(out)
}

/// A literal target traced at batch 1 for an input with a batch dimension (Swin's window
/// partition `[N, 8, 8, 7, 7, C]` viewed as `[N·64, 49, C]`, written `[64, 49, C]`). The batch
/// factor N (the outermost factor of the batch dimension, `k·N` with N outside) goes to the one
/// target dimension that can hold it for every N: the product of the dimensions before it
/// divides the product before the batch, and the product through it is a multiple of that.
/// Where two dimensions qualify (`[L, N, E]` written `[L, E]` may be `[L·N, E]` or `[L, N·E]`, and
/// PyTorch's attention writes both), nothing in the file says which, and the target is kept
/// as written: the graph then runs at the traced batch only, as onnxruntime runs such files.
/// None when the sizes disagree at the traced batch too.
fn traced_batch_inside(input: &[Int], out: &[Int]) -> Option<SymShape> {
    let mut batch = input
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d, Int::Batch(_)));
    let (p, &Int::Batch(k)) = batch.next()? else {
        return None;
    };
    if batch.next().is_some() || out.iter().any(|d| matches!(d, Int::Batch(_))) || k <= 0 {
        return None;
    }
    let known = |s: &[Int]| match product(s) {
        Ok(Int::Known(v)) => Some(v),
        _ => None,
    };
    let before = known(&input[..p])?;
    let total_in = before
        .checked_mul(k)?
        .checked_mul(known(&input[p + 1..])?)?;
    if known(out)? != total_in {
        return None; // the sizes disagree even at the traced batch
    }
    let places: Vec<usize> = (0..out.len())
        .filter(|&j| {
            let (Some(q0), Some(q1)) = (known(&out[..j]), known(&out[..=j])) else {
                return false;
            };
            q0 > 0 && before % q0 == 0 && q1 % before == 0
        })
        .collect();
    let mut fixed = out.to_vec();
    if let [j] = places[..] {
        let Int::Known(m) = out[j] else {
            return None;
        };
        fixed[j] = Int::Batch(m);
    }
    Some(fixed)
}

/// An engine `Reshape` target turning `input` into `output`: fixed dims literally, a batch-sized
/// dim as `0` where it stays in place, otherwise as the single `-1`.
pub fn reshape_target(input: &[Int], output: &[Int]) -> Result<Vec<i64>, Problem> {
    let mut minus_one = false;
    output
        .iter()
        .enumerate()
        .map(|(i, &d)| match d {
            Int::Known(n) => Ok(n),
            Int::Batch(_) if input.get(i) == Some(&d) => Ok(0),
            Int::Batch(_) if !minus_one => {
                minus_one = true;
                Ok(-1)
            }
            Int::Batch(_) => Err(bad(format!(
                "cannot express the reshape of {input:?} to {output:?} with a dynamic batch"
            ))),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use Int::{Batch as B, Known as K};

    #[test]
    fn a_traced_batch_inside_the_shape_is_placed_only_when_one_reading_fits() {
        // [4, N, 6] as [2, 12]: only [2, 12·N] keeps the batch's group whole for every N
        let one = reshape(&[K(4), B(1), K(6)], &[K(2), K(12)], false).unwrap();
        assert_eq!(one, [K(2), B(12)]);
        assert_eq!(
            reshape_target(&[K(4), B(1), K(6)], &one).unwrap(),
            vec![2, -1]
        );
        // nn.MultiheadAttention, sequence first: [L, N, E] written [L, 12, 64] may be
        // [L·N, 12, 64] or [L, 12·N, 64], and [L, N, E] written [L, E] may be [L·N, E] or
        // [L, N·E]: kept as written, so the graph runs at the traced batch
        let heads = reshape(&[K(197), B(1), K(768)], &[K(197), K(12), K(64)], false).unwrap();
        assert_eq!(heads, [K(197), K(12), K(64)]);
        let flat = reshape(&[K(17), B(1), K(16)], &[K(17), K(16)], false).unwrap();
        assert_eq!(flat, [K(17), K(16)]);
        // sizes that disagree at the traced batch stay an error
        assert!(reshape(&[K(197), B(1), K(768)], &[K(196), K(12), K(64)], false).is_err());
    }

    #[test]
    fn flatten_idiom_keeps_batch_dynamic() {
        let x = [B(1), K(1280), K(1), K(1)];
        let out = reshape(&x, &[B(1), K(-1)], false).unwrap();
        assert_eq!(out, vec![B(1), K(1280)]);
        assert_eq!(reshape_target(&x, &out).unwrap(), vec![0, 1280]);
    }

    /// torch.export's `view(1, -1)` traced at batch 1: the literal 1 is the batch.
    #[test]
    fn a_traced_batch_literal_stays_the_batch() {
        let x = [B(1), K(512), K(1), K(1)];
        let out = reshape(&x, &[K(1), K(512)], false).unwrap();
        assert_eq!(out, vec![B(1), K(512)]);
        assert_eq!(reshape_target(&x, &out).unwrap(), vec![0, 512]);
        assert_eq!(
            reshape(&x, &[K(1), K(-1)], false).unwrap(),
            vec![B(1), K(512)]
        );
        // a leading literal that is not the traced batch size: the only reading that works
        // for every batch is that the batch's group is the leading dimension (Swin's window
        // partition, [N, 8, 8, 7, 7, 96] written [64, 49, 96])
        assert_eq!(
            reshape(&x, &[K(2), K(256)], false).unwrap(),
            vec![B(2), K(256)]
        );
        let windows = [B(1), K(8), K(8), K(7), K(7), K(96)];
        assert_eq!(
            reshape(&windows, &[K(64), K(49), K(96)], false).unwrap(),
            vec![B(64), K(49), K(96)]
        );
    }

    #[test]
    fn moved_batch_becomes_minus_one() {
        let x = [B(1), K(4)];
        let out = [K(1), B(1), K(4)];
        assert_eq!(reshape_target(&x, &out).unwrap(), vec![1, -1, 4]);
    }

    #[test]
    fn arithmetic_on_batch() {
        assert_eq!(mul(B(1), K(3)).unwrap(), B(3));
        assert_eq!(div(B(6), K(3)).unwrap(), B(2));
        assert_eq!(div(B(6), B(3)).unwrap(), K(2));
        assert!(add(B(1), K(1)).is_err());
        assert!(div(K(5), K(2)).is_err());
        assert_eq!(broadcast(&[B(1), K(3)], &[K(3)]).unwrap(), vec![B(1), K(3)]);
        assert!(broadcast(&[B(1), K(3)], &[K(2), K(3)]).is_err());
    }
}
