//! Math ops of the ONNX import: matrix products (`Gemm`, `MatMul`, `Einsum`), reductions and
//! `Where` of run-time values.

use super::{Importer, Val, bad, node_label};
use crate::engine::ops::{GemmSpec, Op, ReduceKind, ReduceSpec};
use crate::models::onnx::Problem;
use crate::models::onnx::attrs::Attrs;
use crate::models::onnx::proto::NodeProto;
use crate::models::onnx::shape::{self, SymShape};
use crate::models::onnx::tensor::{self, Int};

impl Importer {
    pub(super) fn gemm(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let (w, ws) = self.value(self.required(n, 1)?, true)?;
        if xs.len() != 2 || ws.len() != 2 {
            return Err(bad(format!("needs 2-D operands, got {xs:?} and {ws:?}")));
        }
        let spec = GemmSpec {
            trans_a: a.int("transA", 0) != 0,
            trans_b: a.int("transB", 0) != 0,
            alpha: a.float("alpha", 1.0),
            beta: a.float("beta", 1.0),
        };
        let m = if spec.trans_a { xs[1] } else { xs[0] };
        let nn = if spec.trans_b { ws[0] } else { ws[1] };
        let mut inputs = vec![x, w];
        if let Some(c) = self.input_name(n, 2) {
            inputs.push(self.value(c, true)?.0);
        }
        Ok((Op::Gemm(spec), inputs, vec![m, nn]))
    }

    pub(super) fn matmul(&mut self, n: &NodeProto) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let (w, ws) = self.value(self.required(n, 1)?, true)?;
        if xs.len() < 2 || ws.len() < 2 {
            return Err(bad(format!(
                "needs operands of rank 2 or more, got {xs:?} and {ws:?}"
            )));
        }
        let mut out = shape::broadcast(&xs[..xs.len() - 2], &ws[..ws.len() - 2])?;
        out.push(xs[xs.len() - 2]);
        out.push(ws[ws.len() - 1]);
        Ok((Op::MatMul, vec![x, w], out))
    }

    /// `Einsum` of two operands that is a batched matrix product (MaxViT's attention:
    /// `B G H I D, B G H J D -> B G H I J` and `B G H I J, B G H J D -> B G H I D`): the same
    /// leading letters in all three terms, then `i k, k j -> i j` or `i k, j k -> i j` (the
    /// second operand's last two axes swapped first). Other equations are refused with the
    /// equation named.
    pub(super) fn einsum(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let eq = a.string("equation", "");
        let refuse = || {
            bad(format!(
                "has equation {eq:?}; only batched matrix products (\"..ik,..kj->..ij\" or \
                 \"..ik,..jk->..ij\") are supported"
            ))
        };
        let compact: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, out) = compact.split_once("->").ok_or_else(refuse)?;
        let (ta, tb) = lhs.split_once(',').ok_or_else(refuse)?;
        let (ta, tb, to): (Vec<char>, Vec<char>, Vec<char>) = (
            ta.chars().collect(),
            tb.chars().collect(),
            out.chars().collect(),
        );
        let r = ta.len();
        let letters_ok = [&ta, &tb, &to]
            .iter()
            .all(|t| t.iter().all(|c| c.is_ascii_alphabetic()));
        if !letters_ok || r < 2 || tb.len() != r || to.len() != r || n.input.len() != 2 {
            return Err(refuse());
        }
        let batch = &ta[..r - 2];
        let (i, k, j) = (ta[r - 2], ta[r - 1], to[r - 1]);
        if &tb[..r - 2] != batch || &to[..r - 2] != batch || to[r - 2] != i {
            return Err(refuse());
        }
        if i == k || j == k || j == i {
            return Err(refuse());
        }
        let transposed = match (tb[r - 2], tb[r - 1]) {
            (kk, jj) if kk == k && jj == j => false,
            (jj, kk) if kk == k && jj == j => true,
            _ => return Err(refuse()),
        };
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let (mut y, mut ys) = self.value(self.required(n, 1)?, false)?;
        if xs.len() != r || ys.len() != r {
            return Err(bad(format!(
                "has operands of ranks {} and {} for the rank-{r} equation {eq:?}",
                xs.len(),
                ys.len()
            )));
        }
        if transposed {
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(r - 2, r - 1);
            let name = format!("{}/rhs_t", n.output.first().cloned().unwrap_or_default());
            ys.swap(r - 2, r - 1);
            let label = format!("{}/transpose", node_label(n));
            self.push_node(label, Op::Transpose { perm }, vec![y], &name, ys.clone());
            y = name;
        }
        if xs[r - 1] != ys[r - 2] {
            return Err(bad(format!(
                "contracts {:?} with {:?} in {eq:?}",
                xs[r - 1],
                ys[r - 2]
            )));
        }
        let mut out_shape = shape::broadcast(&xs[..r - 2], &ys[..r - 2])?;
        out_shape.push(xs[r - 2]);
        out_shape.push(ys[r - 1]);
        Ok((Op::MatMul, vec![x, y], out_shape))
    }

    /// `ReduceMean` over the two spatial axes of an NCHW value: adaptive average pooling to 1×1
    /// as both PyTorch exporters write it (axes as an attribute before opset 18, as a constant
    /// input from 18 on, where PyTorch's default exporter writes `(-1, -2)`). `keepdims=1` is the
    /// engine's global average pool; `keepdims=0` is that pool, then a reshape to `(N, C)`. Any
    /// other axes are refused with the axes named (no general reduction op yet).
    /// ReduceSum / Mean / Max / Min / L2 over constant axes (an attribute, or an input from
    /// opset 13 for ReduceSum and 18 for the others). Averaging both spatial axes of an NCHW
    /// value (adaptive average pooling to 1x1) runs as `GlobalAvgPool`; the batch axis cannot
    /// be reduced (each image is explained on its own).
    pub(super) fn reduce(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
        kind: ReduceKind,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(self.required(n, 0)?, false)?;
        let axes_since = if kind == ReduceKind::Sum { 13 } else { 18 };
        let axes = match self.ints_attr_or_input(n, a, "axes", 1, axes_since)? {
            Some(v) if !v.is_empty() => v,
            // no axes: every axis (or none at all with noop_with_empty_axes)
            _ if self.opset >= axes_since && a.int("noop_with_empty_axes", 0) != 0 => {
                return Ok((Op::Identity, vec![x], s));
            }
            _ => (0..s.len() as i64).collect(),
        };
        let mut norm: Vec<usize> = axes
            .iter()
            .map(|&v| shape::axis(v, s.len()))
            .collect::<Result<_, _>>()?;
        norm.sort_unstable();
        norm.dedup();
        let keepdims = a.int("keepdims", 1) != 0;
        if let Some(&batch) = norm.iter().find(|&&d| matches!(s[d], Int::Batch(_))) {
            return Err(bad(format!(
                "reduces axis {batch} of {axes:?}, the batch axis; only axes of one image can be                  reduced"
            )));
        }
        if kind == ReduceKind::Mean && s.len() == 4 && norm == [2, 3] {
            let pooled = vec![s[0], s[1], Int::Known(1), Int::Known(1)];
            if keepdims {
                return Ok((Op::GlobalAvgPool, vec![x], pooled));
            }
            // keepdims=0: the pool under its own name, then (N, C, 1, 1) -> (N, C)
            let out = n.output.first().cloned().unwrap_or_default();
            let pool_name = format!("{out}/pooled");
            let label = format!("{}/pool", node_label(n));
            self.push_node(label, Op::GlobalAvgPool, vec![x], &pool_name, pooled);
            return Ok((Op::Flatten { axis: 1 }, vec![pool_name], vec![s[0], s[1]]));
        }
        let out: SymShape = s
            .iter()
            .enumerate()
            .filter_map(|(d, &dim)| match (norm.contains(&d), keepdims) {
                (false, _) => Some(dim),
                (true, true) => Some(Int::Known(1)),
                (true, false) => None,
            })
            .collect();
        let spec = ReduceSpec {
            kind,
            axes: norm,
            keepdims,
        };
        Ok((Op::Reduce(spec), vec![x], out))
    }

    /// `Where(cond, a, b)` with a run-time input. A constant side may be ±∞ (PyTorch's
    /// `masked_fill(-inf)`): it becomes ±`f32::MAX`, which gives the same softmax weights (0)
    /// and keeps the no-infinities rule for parameters.
    pub(super) fn where_(&mut self, n: &NodeProto) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let mut names = Vec::with_capacity(3);
        let mut shapes = Vec::with_capacity(3);
        for i in 0..3 {
            let name = self.required(n, i)?;
            if let Some(Val::Const(c)) = self.vals.get_mut(name)
                && let tensor::Data::F32(v) = &mut c.data
            {
                for x in v.iter_mut().filter(|x| x.is_infinite()) {
                    *x = f32::MAX.copysign(*x);
                }
            }
            let (v, s) = self.value(name, false)?;
            names.push(v);
            shapes.push(s);
        }
        let s = shape::broadcast(&shape::broadcast(&shapes[0], &shapes[1])?, &shapes[2])?;
        Ok((Op::Where, names, s))
    }
}
