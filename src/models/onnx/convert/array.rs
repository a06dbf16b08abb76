//! Array ops of the ONNX import: split, gather, slice, expand, concat, reshape, squeeze and
//! transpose of run-time values, and the value of a `Constant` node.

use super::{Importer, bad, node_label};
use crate::engine::Tensor;
use crate::engine::ops::{BinaryOp, Op};
use crate::models::onnx::Problem;
use crate::models::onnx::attrs::Attrs;
use crate::models::onnx::fold;
use crate::models::onnx::proto::NodeProto;
use crate::models::onnx::shape::{self, SymShape};
use crate::models::onnx::tensor::{self, Const, Int};

impl Importer {
    /// `Split` of a run-time value: one engine `Slice` per output (sizes from the `split`
    /// attribute before opset 13, the `split` input from 13, else `num_outputs` (opset 18) or
    /// the output count, equal parts with a smaller last one as ONNX specifies).
    pub(super) fn split(&mut self, n: &NodeProto, a: &Attrs) -> Result<(), Problem> {
        let (x, s) = self.value(self.required(n, 0)?, false)?;
        let axis = shape::axis(a.int("axis", 0), s.len())?;
        let Int::Known(dim) = s[axis] else {
            return Err(bad(format!(
                "splits axis {axis}, the batch axis; only fixed-size axes can be split"
            )));
        };
        let outputs = n.output.len();
        let sizes: Vec<i64> = match self.ints_attr_or_input(n, a, "split", 1, 13)? {
            Some(v) => v,
            None => {
                let parts = if self.opset >= 18 {
                    a.int("num_outputs", outputs as i64)
                } else {
                    outputs as i64
                };
                if parts <= 0 {
                    return Err(bad(format!("splits into {parts} parts")));
                }
                let each = (dim + parts - 1) / parts;
                (0..parts)
                    .map(|i| each.min(dim - i * each).max(0))
                    .collect()
            }
        };
        if sizes.len() != outputs
            || sizes.iter().any(|&v| v < 0)
            || sizes.iter().sum::<i64>() != dim
        {
            return Err(bad(format!(
                "splits axis {axis} of size {dim} into {sizes:?} for {outputs} outputs"
            )));
        }
        let mut start = 0usize;
        for (k, (out, &len)) in n.output.iter().zip(&sizes).enumerate() {
            let end = start + len as usize;
            let mut shape_k = s.clone();
            shape_k[axis] = Int::Known(len);
            if !out.is_empty() {
                let op = Op::Slice {
                    axis,
                    start,
                    end,
                    step: 1,
                };
                let label = format!("{}/{k}", node_label(n));
                self.push_node(label, op, vec![x.clone()], out, shape_k);
            }
            start = end;
        }
        Ok(())
    }

    /// `Gather` of a run-time value at constant indices on a fixed-size axis: a scalar index
    /// is a one-entry `Slice` with the axis dropped (ViT's class token `x[:, 0]`, the `q, k, v`
    /// of a fused projection); a list of indices is one `Slice` per run of consecutive indices,
    /// concatenated.
    pub(super) fn gather(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(self.required(n, 0)?, false)?;
        let axis = shape::axis(a.int("axis", 0), s.len())?;
        let idx = self
            .const_input(n, 1, "the indices")?
            .ok_or_else(|| bad("has no indices"))?
            .clone();
        let len = match s[axis] {
            Int::Known(len) => len,
            Int::Batch(m) => {
                // PyTorch's default exporter writes `as_strided` after adaptive pooling as a
                // Gather of the whole flattened value at the traced batch: indices 0..m in
                // order, shaped like the result. That is a reshape.
                let in_order = idx.to_i64("the indices").ok().is_some_and(|v| {
                    v.len() as i64 == m && v.iter().enumerate().all(|(i, &j)| j == i as i64)
                });
                if s.len() == 1 && in_order {
                    let target: Vec<Int> = idx.dims.iter().map(|&d| Int::Known(d as i64)).collect();
                    let out = shape::reshape(&s, &target, false)?;
                    let engine = shape::reshape_target(&s, &out)?;
                    return Ok((Op::Reshape { shape: engine }, vec![x], out));
                }
                return Err(bad(format!(
                    "gathers along axis {axis}, the batch axis; only fixed-size axes are supported"
                )));
            }
        };
        if idx.dims.len() > 1 {
            return Err(bad(format!(
                "has indices of shape {:?}; only a scalar or a list is supported",
                idx.dims
            )));
        }
        let ids: Vec<usize> = idx
            .to_i64("the indices")?
            .into_iter()
            .map(|i| fold::index_in(i, len, "index"))
            .collect::<Result<_, _>>()?;
        // runs of consecutive indices, each one Slice
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &i in &ids {
            match runs.last_mut() {
                Some((_, end)) if *end == i => *end += 1,
                _ => runs.push((i, i + 1)),
            }
        }
        let mut picked = s.clone();
        picked[axis] = Int::Known(ids.len() as i64);
        if let (&[(start, end)], 1) = (runs.as_slice(), idx.dims.len()) {
            // one run of a list: the Slice is the result
            let op = Op::Slice {
                axis,
                start,
                end,
                step: 1,
            };
            return Ok((op, vec![x], picked));
        }
        let out = n.output.first().cloned().unwrap_or_default();
        let mut parts = Vec::new();
        for (k, &(start, end)) in runs.iter().enumerate() {
            let name = format!("{out}/part{k}");
            let mut ps = s.clone();
            ps[axis] = Int::Known((end - start) as i64);
            let op = Op::Slice {
                axis,
                start,
                end,
                step: 1,
            };
            self.push_node(
                format!("{}/slice{k}", node_label(n)),
                op,
                vec![x.clone()],
                &name,
                ps,
            );
            parts.push(name);
        }
        if idx.dims.len() == 1 {
            return Ok((Op::Concat { axis }, parts, picked));
        }
        // a scalar index drops the axis
        let mut dropped = s.clone();
        dropped.remove(axis);
        let engine = shape::reshape_target(&picked, &dropped)?;
        Ok((Op::Reshape { shape: engine }, parts, dropped))
    }

    /// `Slice` of a run-time value with constant starts, ends, axes and positive steps (Swin's
    /// `torch.roll`, window bookkeeping and patch merging `x[:, 0::2, 1::2]`): one engine
    /// `Slice` per cut axis, chained. The batch axis can only be taken whole.
    pub(super) fn slice(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(self.required(n, 0)?, false)?;
        // starts, ends, axes and steps must be known now (inputs 1..=4 from opset 10)
        let mut refs: Vec<Option<&Const>> = vec![None];
        for i in 1..n.input.len() {
            refs.push(self.const_input(n, i, "a slice bound")?);
        }
        let [starts, ends, axes, steps] = fold::slice_params(a, self.opset, &refs)?;
        let mut cuts = Vec::new(); // (axis, start, end, step, entries)
        for (((&st, &en), &ax), &step) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
            let axis = shape::axis(ax, s.len())?;
            if step < 1 {
                return Err(bad(format!(
                    "steps by {step} along axis {axis}; only positive steps are supported"
                )));
            }
            let len = match s[axis] {
                Int::Known(len) => len,
                Int::Batch(_) => {
                    if st == 0 && en >= i64::from(i32::MAX) && step == 1 {
                        continue; // the whole batch
                    }
                    return Err(bad(format!("cuts the batch axis {axis}")));
                }
            };
            let picked = fold::slice_range(st, en, step, len)?;
            let first = picked.first().copied().unwrap_or(0);
            let last = picked.last().map_or(first, |&l| l + 1);
            cuts.push((axis, first, last, step as usize, picked.len()));
        }
        let out = n.output.first().cloned().unwrap_or_default();
        let (mut cur, mut cur_shape) = (x, s);
        for (k, &(axis, start, end, step, entries)) in cuts.iter().enumerate() {
            cur_shape[axis] = Int::Known(entries as i64);
            let op = Op::Slice {
                axis,
                start,
                end,
                step,
            };
            if k + 1 == cuts.len() {
                return Ok((op, vec![cur], cur_shape));
            }
            let name = format!("{out}/cut{k}");
            let label = format!("{}/cut{k}", node_label(n));
            self.push_node(label, op, vec![cur], &name, cur_shape.clone());
            cur = name;
        }
        Ok((Op::Identity, vec![cur], cur_shape)) // nothing cut
    }

    /// `Expand` of a value to a shape known at import time: where nothing grows it is the
    /// value itself; a constant `[1, ..]` growing only along a run-time batch is repeated to the
    /// batch ([`Op::RepeatBatch`]: ViT's class token from the legacy exporter). Other
    /// broadcasts of run-time values are refused with the shapes named.
    pub(super) fn expand(&mut self, n: &NodeProto) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let x_name = self.required(n, 0)?;
        let xs = self.sym_shape(x_name)?;
        let target = self
            .const_input(n, 1, "the shape")?
            .ok_or_else(|| bad("has no shape input"))?;
        let target: Vec<Int> = match &target.data {
            tensor::Data::I64(v) => v.clone(),
            tensor::Data::F32(_) => return Err(bad("has a float shape input")),
        };
        let out = shape::broadcast(&xs, &target)?;
        if out == xs {
            let (x, s) = self.value(x_name, false)?;
            return Ok((Op::Identity, vec![x], s));
        }
        let grows_batch_only = out.len() == xs.len()
            && out.first() == Some(&Int::Batch(1))
            && xs.first() == Some(&Int::Known(1))
            && out[1..] == xs[1..];
        if grows_batch_only && self.konst(x_name).is_some() {
            let (x, _) = self.value(x_name, false)?;
            return Ok((Op::RepeatBatch, vec![x, self.input.clone()], out));
        }
        // growing along dimensions of known size only: x + zeros of those sizes (1 where the
        // output keeps x's run-time batch), whose broadcast is the expansion and whose
        // gradient sums back to x
        let padded = out.len() - xs.len();
        let grows_batch = out.iter().enumerate().any(|(d, o)| {
            matches!(o, Int::Batch(_)) && (d < padded || matches!(xs[d - padded], Int::Known(1)))
        });
        if !grows_batch {
            let mut dims = Vec::with_capacity(out.len());
            for o in &out {
                dims.push(match o {
                    Int::Known(k) if *k >= 0 => *k as usize,
                    Int::Batch(_) => 1,
                    _ => {
                        return Err(bad(format!(
                            "expands to {out:?}; only sizes known at import time are supported"
                        )));
                    }
                });
            }
            let numel = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .filter(|&n| n <= 1 << 28)
                .ok_or_else(|| bad(format!("expands to {out:?}, which is too large")))?;
            let (x, _) = self.value(x_name, false)?;
            let zeros = format!("{}/expand_zeros", node_label(n));
            let t = Tensor::new(dims, vec![0.0; numel]).map_err(|e| bad(e.to_string()))?;
            self.def.param(&zeros, t, false);
            self.params.insert(zeros.clone());
            return Ok((Op::Binary(BinaryOp::Add), vec![x, zeros], out));
        }
        Err(bad(format!(
            "broadcasts a run-time value of shape {xs:?} to {out:?}; only a constant grows \
             along the run-time batch"
        )))
    }

    /// `name` (a parameter `[1, ..]`) repeated to the graph input's batch, as a new value
    /// named after the node; returns that name.
    fn repeat_batch(&mut self, n: &NodeProto, name: &str) -> Result<String, Problem> {
        let mut s = self.sym_shape(name)?;
        let out = format!("{}/{name}/batch", node_label(n));
        s[0] = Int::Batch(1);
        let inputs = vec![name.to_string(), self.input.clone()];
        self.push_node(out.clone(), Op::RepeatBatch, inputs, &out, s);
        Ok(out)
    }

    /// `Reshape` of a run-time value to a constant target shape.
    pub(super) fn reshape(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
        x_name: &str,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(x_name, false)?;
        let target = self
            .const_input(n, 1, "the reshape target")?
            .ok_or_else(|| bad("has no shape input"))?;
        let target = match &target.data {
            tensor::Data::I64(v) => v.clone(),
            tensor::Data::F32(_) => return Err(bad("has a float shape input")),
        };
        let out = shape::reshape(&s, &target, a.int("allowzero", 0) != 0)?;
        let engine = shape::reshape_target(&s, &out)?;
        Ok((Op::Reshape { shape: engine }, vec![x], out))
    }

    /// `Squeeze` or `Unsqueeze` (`op`) of a run-time value over constant axes.
    pub(super) fn squeeze(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
        op: &str,
        x_name: &str,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(x_name, false)?;
        let consts: Vec<Option<&Const>> = (0..n.input.len())
            .map(|i| self.input_name(n, i).and_then(|nm| self.konst(nm)))
            .collect();
        if self.opset >= 13
            && self.input_name(n, 1).is_some()
            && consts.get(1).copied().flatten().is_none()
        {
            return Err(bad("has run-time axes; only constant axes are supported"));
        }
        let axes = fold::axes_of(a, self.opset, &consts)?;
        let out = if op == "Squeeze" {
            fold::squeeze_shape(&s, axes.as_deref())?
        } else {
            fold::unsqueeze_shape(&s, &axes.ok_or_else(|| bad("has no axes"))?)?
        };
        let engine = shape::reshape_target(&s, &out)?;
        Ok((Op::Reshape { shape: engine }, vec![x], out))
    }

    /// `Transpose` of a run-time value (`perm`, or the axes reversed).
    pub(super) fn transpose(
        &mut self,
        a: &Attrs,
        x_name: &str,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(x_name, false)?;
        let perm: Vec<usize> = match a.ints("perm") {
            Some(p) => p
                .iter()
                .map(|&v| shape::axis(v, s.len()))
                .collect::<Result<_, _>>()?,
            None => (0..s.len()).rev().collect(),
        };
        if perm.len() != s.len() {
            return Err(bad(format!(
                "perm {perm:?} does not match rank {}",
                s.len()
            )));
        }
        let out = perm.iter().map(|&p| s[p]).collect();
        Ok((Op::Transpose { perm }, vec![x], out))
    }

    /// `Concat` of run-time values and constants along one axis.
    pub(super) fn concat(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let mut names = Vec::new();
        let mut shapes = Vec::new();
        for i in n.input.iter().filter(|s| !s.is_empty()) {
            let (nm, s) = self.value(i, false)?;
            names.push(nm);
            shapes.push(s);
        }
        let rank = shapes.first().ok_or_else(|| bad("has no inputs"))?.len();
        let axis = shape::axis(a.int("axis", 0), rank)?;
        if axis != 0 && shapes.iter().any(|s| s.first() == Some(&Int::Batch(1))) {
            // PyTorch's default exporter traces `token.expand(n, -1, -1)` at batch 1
            // and writes the bare parameter: a constant with a leading 1 beside the
            // batch follows the batch
            for (nm, s) in names.iter_mut().zip(shapes.iter_mut()) {
                if s.first() == Some(&Int::Known(1)) && self.params.contains(nm.as_str()) {
                    *nm = self.repeat_batch(n, nm)?;
                    s[0] = Int::Batch(1);
                }
            }
        }
        let first = shapes[0].clone();
        let mut out = first.clone();
        out[axis] = Int::Known(0);
        for s in &shapes {
            let same =
                s.len() == first.len() && (0..s.len()).all(|d| d == axis || s[d] == first[d]);
            if !same {
                return Err(bad(format!(
                    "cannot concatenate {first:?} and {s:?} along axis {axis}"
                )));
            }
            out[axis] = shape::add(out[axis], s[axis])?;
        }
        Ok((Op::Concat { axis }, names, out))
    }
}

/// The value of a `Constant` node.
pub(super) fn constant_value(a: &Attrs) -> Result<Const, Problem> {
    if let Some(t) = a.tensor("value") {
        return tensor::decode(t, None);
    }
    if a.has("value_float") {
        return Ok(Const::f32(vec![], vec![a.float("value_float", 0.0)]));
    }
    if let Some(v) = a.floats("value_floats").filter(|_| a.has("value_floats")) {
        return Ok(Const::f32(vec![v.len()], v));
    }
    if a.has("value_int") {
        return Ok(Const::ints(vec![], vec![a.int("value_int", 0)]));
    }
    if let Some(v) = a.ints("value_ints") {
        return Ok(Const::ints(vec![v.len()], v));
    }
    Err(bad(
        "holds a value kind the importer does not read (sparse tensor or strings)",
    ))
}
