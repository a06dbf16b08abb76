//! Matrix products: ONNX Gemm (Linear layers) and MatMul. All products go through `gemm.rs`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::elementwise::{broadcast_shape, reduce_to_shape};
use crate::engine::error::OpError;
use crate::engine::gemm::{MatRef, Parallelism, sgemm};
use crate::engine::tensor::{Tensor, checked_numel};

/// y = alpha * op(a) @ op(b) + beta * c, with op = transpose when the flag is set.
/// a `[m, k]` (or `[k, m]`), b `[k, n]` (or `[n, k]`), c broadcastable to `[m, n]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmSpec {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
}

impl GemmSpec {
    /// A fully connected layer: x `[n, in]` @ w`[out, in]`ᵀ + b `[out]`.
    pub fn linear() -> Self {
        Self {
            trans_a: false,
            trans_b: true,
            alpha: 1.0,
            beta: 1.0,
        }
    }
}

/// `[rows, cols]` of a rank-2 shape.
fn dims2(what: &str, s: &[usize]) -> Result<(usize, usize), OpError> {
    match s {
        &[r, c] => Ok((r, c)),
        _ => Err(OpError(format!("gemm {what} must be 2-D, got shape {s:?}"))),
    }
}

/// (m, k, n) of `op(a) @ op(b)`, checking that the inner dimensions agree.
fn gemm_dims(spec: &GemmSpec, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize), OpError> {
    let (ar, ac) = dims2("a", a)?;
    let (br, bc) = dims2("b", b)?;
    let (m, k) = if spec.trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if spec.trans_b { (bc, br) } else { (br, bc) };
    if k != k2 {
        crate::op_bail!(
            "gemm inner dimensions differ: a {a:?}{} and b {b:?}{} give {k} and {k2}",
            if spec.trans_a { "ᵀ" } else { "" },
            if spec.trans_b { "ᵀ" } else { "" }
        );
    }
    Ok((m, k, n))
}

pub fn gemm_output_shape(
    spec: &GemmSpec,
    a: &[usize],
    b: &[usize],
    c: Option<&[usize]>,
) -> Result<Vec<usize>, OpError> {
    let (m, _, n) = gemm_dims(spec, a, b)?;
    let out = vec![m, n];
    if checked_numel(&out).is_none() {
        crate::op_bail!("gemm output {out:?} is too large");
    }
    if let Some(c) = c {
        // unidirectional broadcast: c must broadcast to [m, n] without growing it
        let ok = c.len() <= 2 && broadcast_shape(c, &out).is_ok_and(|s| s == out);
        if !ok {
            crate::op_bail!("gemm c {c:?} does not broadcast to the output [{m}, {n}]");
        }
    }
    Ok(out)
}

/// `a` as the matrix `op(a)` (a transpose is a stride swap).
fn op_view(t: &Tensor, trans: bool) -> MatRef<'_> {
    let (r, c) = (t.shape()[0], t.shape()[1]);
    let v = MatRef::row_major(t.data(), r, c);
    if trans { v.t() } else { v }
}

/// c broadcast to `[m, n]` (shapes already checked by [`gemm_output_shape`]).
fn broadcast_c(c: &Tensor, m: usize, n: usize) -> Vec<f32> {
    let cd = c.data();
    let col_varies = c.shape().last().is_some_and(|&d| d == n && n != 1);
    let row_varies = c.shape().len() == 2 && c.shape()[0] == m && m != 1;
    let mut y = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let ci = if row_varies { i } else { 0 };
            let cj = if col_varies { j } else { 0 };
            y[i * n + j] = cd[ci * if col_varies { n } else { 1 } + cj];
        }
    }
    y
}

/// y `[m, n]` = alpha * op(a) @ op(b) + beta * c.
pub fn gemm_forward(
    spec: &GemmSpec,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    let out = gemm_output_shape(spec, a.shape(), b.shape(), c.map(|t| t.shape()))?;
    let (m, n) = (out[0], out[1]);
    let (y, beta) = match c {
        Some(c) if spec.beta != 0.0 => (broadcast_c(c, m, n), spec.beta),
        _ => (vec![0.0f32; m * n], 0.0),
    };
    let mut y = y;
    let (op_a, op_b) = (op_view(a, spec.trans_a), op_view(b, spec.trans_b));
    if spec.trans_b && m > 1 {
        // A transposed b (a Linear layer's weight) is a column-major right operand, which the
        // `gemm` crate multiplies ~4x slower than yᵀ = op(b)ᵀ @ op(a)ᵀ with the weight on the
        // left (smile CNN fc1, 32x8192 @ 8192x128: 1.74 against 0.44 ms); yᵀ `[n, m]` is then
        // transposed into y (m·n floats, small beside m·k·n multiply-adds).
        let mut yt = vec![0.0f32; m * n]; // (n, m)
        sgemm(
            spec.alpha,
            op_b.t(),
            op_a.t(),
            0.0,
            &mut yt,
            Parallelism::Rayon,
        );
        for (i, row) in y.chunks_exact_mut(n).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = beta * *v + yt[j * m + i];
            }
        }
    } else {
        sgemm(spec.alpha, op_a, op_b, beta, &mut y, Parallelism::Rayon);
    }
    Tensor::new(out, y)
}

/// `[d_a, d_b, d_c]` (d_c reduced to c's shape), each iff `needs[i]`.
pub fn gemm_backward(
    spec: &GemmSpec,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    let out = gemm_output_shape(spec, a.shape(), b.shape(), c.map(|t| t.shape()))?;
    if d_y.shape() != out.as_slice() {
        crate::op_bail!(
            "gemm gradient has shape {:?}, expected {out:?}",
            d_y.shape()
        );
    }
    let (m, n) = (out[0], out[1]);
    let need = |i: usize| needs.get(i).copied().unwrap_or(false);
    let dy = MatRef::row_major(d_y.data(), m, n);
    let (op_a, op_b) = (op_view(a, spec.trans_a), op_view(b, spec.trans_b));
    let par = Parallelism::Rayon;
    let d_a = if need(0) {
        let mut g = vec![0.0f32; a.numel()];
        if spec.trans_a {
            // a is [k, m]: d_a = alpha * op(b) @ d_yᵀ
            sgemm(spec.alpha, op_b, dy.t(), 0.0, &mut g, par);
        } else {
            // a is [m, k]: d_a = alpha * d_y @ op(b)ᵀ
            sgemm(spec.alpha, dy, op_b.t(), 0.0, &mut g, par);
        }
        Some(Tensor::new(a.shape().to_vec(), g)?)
    } else {
        None
    };
    let d_b = if need(1) {
        let mut g = vec![0.0f32; b.numel()];
        if spec.trans_b {
            // b is [n, k]: d_b = alpha * d_yᵀ @ op(a)
            sgemm(spec.alpha, dy.t(), op_a, 0.0, &mut g, par);
        } else {
            // b is [k, n]: d_b = alpha * op(a)ᵀ @ d_y
            sgemm(spec.alpha, op_a.t(), dy, 0.0, &mut g, par);
        }
        Some(Tensor::new(b.shape().to_vec(), g)?)
    } else {
        None
    };
    let d_c = match c {
        Some(c) if need(2) => {
            let r = reduce_to_shape(d_y, c.shape())?;
            Some(r.map(|v| v * spec.beta))
        }
        _ => None,
    };
    let mut grads = vec![d_a, d_b];
    if c.is_some() {
        grads.push(d_c);
    }
    Ok(grads)
}

/// Shapes of a MatMul with numpy's 1-D rules applied: a as `[.., m, k]`, b as `[.., k, n]`,
/// the broadcast batch shape, and the final output shape.
struct MatMulDims {
    a3: Vec<usize>,
    b3: Vec<usize>,
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    out: Vec<usize>,
}

fn matmul_dims(a: &[usize], b: &[usize]) -> Result<MatMulDims, OpError> {
    if a.is_empty() || b.is_empty() {
        crate::op_bail!("matmul operands must have rank >= 1, got {a:?} and {b:?}");
    }
    // 1-D a is a row vector [1, k]; 1-D b is a column vector [k, 1]; both dims are dropped after
    let a3 = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b3 = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a3[a3.len() - 2], a3[a3.len() - 1]);
    let (k2, n) = (b3[b3.len() - 2], b3[b3.len() - 1]);
    if k != k2 {
        crate::op_bail!("matmul inner dimensions differ: a {a:?} and b {b:?} ({k} vs {k2})");
    }
    let batch = broadcast_shape(&a3[..a3.len() - 2], &b3[..b3.len() - 2])
        .map_err(|e| OpError(format!("matmul batch dimensions of {a:?} and {b:?}: {e}")))?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    if checked_numel(&out).is_none() || checked_numel(&[batch.iter().product(), m, n]).is_none() {
        crate::op_bail!("matmul output of {a:?} and {b:?} is too large");
    }
    Ok(MatMulDims {
        a3,
        b3,
        batch,
        m,
        k,
        n,
        out,
    })
}

pub fn matmul_output_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    Ok(matmul_dims(a, b)?.out)
}

/// Offset of batch item `i` (row-major over `batch`) inside an operand with batch dims `own`
/// (right-aligned, broadcast along size-1 dims), in units of whole matrices.
fn batch_offset(i: usize, batch: &[usize], own: &[usize]) -> usize {
    let mut rem = i;
    let mut off = 0;
    let mut stride = 1;
    for d in (0..batch.len()).rev() {
        let idx = rem % batch[d];
        rem /= batch[d];
        let od = d as isize - (batch.len() - own.len()) as isize;
        if od >= 0 {
            let size = own[od as usize];
            if size != 1 {
                off += idx * stride;
            }
            stride *= size;
        }
    }
    off
}

/// Runs `f(item, out_matrix)` for every batch item, in parallel over items when there are
/// several (then each product is sequential) or with a parallel product for a single item.
fn for_each_batch(
    count: usize,
    out: &mut [f32],
    mat: usize,
    f: impl Fn(usize, &mut [f32], Parallelism) + Sync,
) {
    if mat == 0 || count == 0 {
        return;
    }
    if count == 1 {
        f(0, out, Parallelism::Rayon);
    } else {
        out.par_chunks_mut(mat)
            .enumerate()
            .for_each(|(i, o)| f(i, o, Parallelism::Sequential));
    }
}

/// y = a @ b with broadcast batch dims (numpy / ONNX MatMul).
pub fn matmul_forward(a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let d = matmul_dims(a.shape(), b.shape())?;
    let (ab, bb) = (&d.a3[..d.a3.len() - 2], &d.b3[..d.b3.len() - 2]);
    let count: usize = d.batch.iter().product();
    let (m, k, n) = (d.m, d.k, d.n);
    let mut y = vec![0.0f32; count * m * n];
    // (batch, m, n)
    for_each_batch(count, &mut y, m * n, |i, o, par| {
        let ao = batch_offset(i, &d.batch, ab) * m * k;
        let bo = batch_offset(i, &d.batch, bb) * k * n;
        let am = MatRef::row_major(&a.data()[ao..ao + m * k], m, k);
        let bm = MatRef::row_major(&b.data()[bo..bo + k * n], k, n);
        sgemm(1.0, am, bm, 0.0, o, par);
    });
    Tensor::new(d.out, y)
}

/// `[d_a, d_b]`: per batch item d_a = d_y @ bᵀ and d_b = aᵀ @ d_y, then summed over the batch
/// dims each operand was broadcast along.
pub fn matmul_backward(
    a: &Tensor,
    b: &Tensor,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    let d = matmul_dims(a.shape(), b.shape())?;
    if d_y.shape() != d.out.as_slice() {
        crate::op_bail!(
            "matmul gradient has shape {:?}, expected {:?}",
            d_y.shape(),
            d.out
        );
    }
    let (ab, bb) = (&d.a3[..d.a3.len() - 2], &d.b3[..d.b3.len() - 2]);
    let count: usize = d.batch.iter().product();
    let (m, k, n) = (d.m, d.k, d.n);
    let dyd = d_y.data();
    let need = |i: usize| needs.get(i).copied().unwrap_or(false);
    let mut full_shape = d.batch.clone();
    let d_a = if need(0) {
        // (batch, m, k)
        let mut g = vec![0.0f32; count * m * k];
        for_each_batch(count, &mut g, m * k, |i, o, par| {
            let gy = MatRef::row_major(&dyd[i * m * n..(i + 1) * m * n], m, n);
            let bo = batch_offset(i, &d.batch, bb) * k * n;
            let bm = MatRef::row_major(&b.data()[bo..bo + k * n], k, n);
            sgemm(1.0, gy, bm.t(), 0.0, o, par);
        });
        full_shape.extend([m, k]);
        let g = Tensor::new(full_shape.clone(), g)?;
        Some(reduce_to_shape(&g, &d.a3)?.reshaped(a.shape().to_vec())?)
    } else {
        None
    };
    let d_b = if need(1) {
        // (batch, k, n)
        let mut g = vec![0.0f32; count * k * n];
        for_each_batch(count, &mut g, k * n, |i, o, par| {
            let gy = MatRef::row_major(&dyd[i * m * n..(i + 1) * m * n], m, n);
            let ao = batch_offset(i, &d.batch, ab) * m * k;
            let am = MatRef::row_major(&a.data()[ao..ao + m * k], m, k);
            sgemm(1.0, am.t(), gy, 0.0, o, par);
        });
        let mut shape = d.batch.clone();
        shape.extend([k, n]);
        let g = Tensor::new(shape, g)?;
        Some(reduce_to_shape(&g, &d.b3)?.reshaped(b.shape().to_vec())?)
    } else {
        None
    };
    Ok(vec![d_a, d_b])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gemm::sgemm_naive;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
    }

    #[test]
    fn gemm_values_with_bias_row() {
        // Linear: x [2, 3] @ w [2, 3]ᵀ + b [2]
        let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let w = t(&[2, 3], &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5]);
        let b = t(&[2], &[10.0, 20.0]);
        let y = gemm_forward(&GemmSpec::linear(), &x, &w, Some(&b)).unwrap();
        assert_eq!(y.data(), &[8.0, 23.0, 8.0, 27.5]);
        let s = GemmSpec {
            trans_a: false,
            trans_b: true,
            alpha: 2.0,
            beta: 0.5,
        };
        let c = t(&[2, 1], &[2.0, 4.0]);
        let y = gemm_forward(&s, &x, &w, Some(&c)).unwrap();
        assert_eq!(y.data(), &[-3.0, 7.0, -2.0, 17.0]);
    }

    #[test]
    fn gemm_shape_errors() {
        let s = GemmSpec::linear();
        assert!(gemm_output_shape(&s, &[2, 3], &[3, 4], None).is_err());
        assert!(gemm_output_shape(&s, &[2, 3], &[4, 3], Some(&[3])).is_err());
        assert!(gemm_output_shape(&s, &[2, 3], &[4, 3], Some(&[2, 4, 1])).is_err());
        assert!(gemm_output_shape(&s, &[2, 3, 1], &[4, 3], None).is_err());
        for c in [&[][..], &[1], &[4], &[1, 4], &[2, 1], &[2, 4], &[1, 1]] {
            assert_eq!(
                gemm_output_shape(&s, &[2, 3], &[4, 3], Some(c)).unwrap(),
                vec![2, 4],
                "{c:?}"
            );
        }
    }

    #[test]
    fn gemm_gradients_all_transposes_and_c() {
        let c_shapes: [Option<&[usize]>; 6] = [
            None,
            Some(&[]),
            Some(&[4]),
            Some(&[1, 4]),
            Some(&[3, 1]),
            Some(&[3, 4]),
        ];
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for c in c_shapes {
                    let spec = GemmSpec {
                        trans_a,
                        trans_b,
                        alpha: 0.7,
                        beta: 1.3,
                    };
                    let a = test_tensor(if trans_a { &[5, 3] } else { &[3, 5] }, 1);
                    let b = test_tensor(if trans_b { &[4, 5] } else { &[5, 4] }, 2);
                    let mut inputs = vec![a, b];
                    if let Some(cs) = c {
                        inputs.push(test_tensor(cs, 3));
                    }
                    assert_op_gradients(
                        &Op::Gemm(spec),
                        &inputs,
                        &[true, true, true],
                        Mode::Eval,
                        1e-2,
                    );
                }
            }
        }
    }

    #[test]
    fn gemm_backward_respects_needs() {
        let (a, b) = (test_tensor(&[2, 3], 1), test_tensor(&[3, 4], 2));
        let s = GemmSpec {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 1.0,
        };
        let y = gemm_forward(&s, &a, &b, None).unwrap();
        let g = gemm_backward(&s, &a, &b, None, &y, &[false, true]).unwrap();
        assert_eq!(g.len(), 2);
        assert!(g[0].is_none() && g[1].is_some());
        assert!(gemm_backward(&s, &a, &b, None, &a, &[true, true]).is_err());
    }

    #[test]
    fn matmul_shapes() {
        assert_eq!(matmul_output_shape(&[2, 3], &[3, 4]).unwrap(), vec![2, 4]);
        assert_eq!(
            matmul_output_shape(&[5, 1, 2, 3], &[4, 3, 6]).unwrap(),
            vec![5, 4, 2, 6]
        );
        assert_eq!(matmul_output_shape(&[3], &[3, 4]).unwrap(), vec![4]);
        assert_eq!(matmul_output_shape(&[2, 3], &[3]).unwrap(), vec![2]);
        assert_eq!(
            matmul_output_shape(&[3], &[3]).unwrap(),
            Vec::<usize>::new()
        );
        assert!(matmul_output_shape(&[2, 3], &[4, 5]).is_err());
        assert!(matmul_output_shape(&[2, 2, 3], &[3, 3, 4]).is_err());
        assert!(matmul_output_shape(&[], &[3]).is_err());
    }

    #[test]
    fn batched_matmul_matches_per_item_naive() {
        let a = test_tensor(&[2, 1, 3, 4], 1);
        let b = test_tensor(&[3, 4, 5], 2);
        let y = matmul_forward(&a, &b).unwrap();
        assert_eq!(y.shape(), &[2, 3, 3, 5]);
        for i in 0..2 {
            for j in 0..3 {
                let mut want = vec![0.0; 15];
                let am = MatRef::row_major(&a.data()[i * 12..(i + 1) * 12], 3, 4);
                let bm = MatRef::row_major(&b.data()[j * 20..(j + 1) * 20], 4, 5);
                sgemm_naive(1.0, am, bm, 0.0, &mut want);
                let at = (i * 3 + j) * 15;
                // The fast GEMM sums in another order than the naive loop: compare to 1e-5.
                for (got, want) in y.data()[at..at + 15].iter().zip(&want) {
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_gradients() {
        let cases: [(&[usize], &[usize]); 6] = [
            (&[3, 4], &[4, 2]),
            (&[2, 3, 4], &[2, 4, 2]),
            (&[2, 1, 3, 4], &[3, 4, 2]),
            (&[3, 4], &[2, 4, 5]),
            (&[4], &[2, 4, 3]),
            (&[2, 3, 4], &[4]),
        ];
        for (sa, sb) in cases {
            let inputs = [test_tensor(sa, 4), test_tensor(sb, 5)];
            assert_op_gradients(&Op::MatMul, &inputs, &[true, true], Mode::Eval, 1e-2);
        }
    }
}
