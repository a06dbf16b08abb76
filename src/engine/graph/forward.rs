//! The forward pass: what it keeps ([`Keep`], [`ForwardOptions`]) and the tape it leaves
//! ([`ForwardPass`]), which `backward` reads.

use std::collections::HashSet;

use super::{Graph, NodeId, ParamId, ValueId, ValueKind, on_pool};
use crate::engine::error::{GraphError, GraphResult, OpError};
use crate::engine::ops::{ForwardCtx, Mode, Op, OpOutput, Saved, conv};
use crate::engine::rng;
use crate::engine::tensor::{Tensor, fmt_shape};

/// Which values a forward pass keeps besides the graph outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Keep {
    /// Only the outputs; intermediate values are freed as soon as no later node needs them.
    #[default]
    Outputs,
    /// Every value: for `backward` and for the layer browser.
    All,
    /// What `backward` needs: every value except the outputs of convolutions whose ReLU / Clip
    /// runs in the convolution's kernel (the only reader of such an output, see
    /// `graph::train_fusion`); gradients, seeds and backward results are the same as with
    /// `All`. Training passes use it.
    Backward,
    /// What `backward` needs and these values: a convolution whose output is listed is not
    /// fused with its activation, so that its own output is there to read.
    BackwardAnd(Vec<ValueId>),
    /// The outputs and these values.
    Values(Vec<ValueId>),
}

#[derive(Clone, Debug, Default)]
pub struct ForwardOptions {
    pub mode: Mode,
    pub keep: Keep,
    /// Seed for dropout masks in training mode.
    pub seed: u64,
}

impl ForwardOptions {
    pub fn eval() -> Self {
        Self::default()
    }

    /// Evaluation keeping every value, ready for `backward`.
    pub fn eval_for_backward() -> Self {
        Self {
            keep: Keep::All,
            ..Self::default()
        }
    }

    /// Evaluation keeping what `backward` needs and `values` (faster than
    /// [`Self::eval_for_backward`]: convolutions run their activations in their kernels).
    pub fn eval_for_backward_keeping(values: Vec<ValueId>) -> Self {
        Self {
            keep: Keep::BackwardAnd(values),
            ..Self::default()
        }
    }

    pub fn train(seed: u64) -> Self {
        Self {
            mode: Mode::Train,
            keep: Keep::Backward,
            seed,
        }
    }
}

/// The values and saved state of one forward pass; the tape for `backward` (a sibling module,
/// hence the fields' `pub(super)`).
#[derive(Debug)]
pub struct ForwardPass {
    pub(super) mode: Mode,
    /// Indexed by `ValueId`; parameters are not copied here (`None`).
    pub(super) values: Vec<Option<Tensor>>,
    /// Indexed by `NodeId`.
    pub(super) saved: Vec<Saved>,
    /// Batch norm running statistics computed in training: (mean param, var param, mean, var).
    pub(super) running_updates: Vec<(ParamId, ParamId, Tensor, Tensor)>,
    /// Indexed by the convolution's `NodeId`: it ran its activation in its kernel, and its own
    /// output was never stored (empty: no pair was fused).
    pub(super) fused: Vec<bool>,
}

impl ForwardPass {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A kept value (inputs and node outputs; parameters live in the graph).
    pub fn get(&self, id: ValueId) -> Option<&Tensor> {
        self.values.get(id).and_then(|v| v.as_ref())
    }

    /// The kept values of a pass of `from` moved to the value ids of `to` by name (values `to`
    /// lacks are dropped, values `from` fused away are absent). For reading values of a fused
    /// pass with the ids of the original graph; the result has no saved state, so `backward`
    /// on it is not supported.
    pub fn renamed(self, from: &Graph, to: &Graph) -> ForwardPass {
        let mut values: Vec<Option<Tensor>> = vec![None; to.values.len()];
        for (id, v) in self.values.into_iter().enumerate() {
            if let (Some(t), Some(info)) = (v, from.values.get(id))
                && let Some(&dst) = to.by_name.get(&info.name)
            {
                values[dst] = Some(t);
            }
        }
        ForwardPass {
            mode: self.mode,
            values,
            saved: Vec::new(),
            running_updates: Vec::new(),
            fused: Vec::new(),
        }
    }

    /// Takes a kept value out of the pass.
    pub fn take(&mut self, id: ValueId) -> Option<Tensor> {
        self.values.get_mut(id).and_then(|v| v.take())
    }
}

impl Graph {
    /// Runs the graph on `inputs` (one tensor per graph input, batch in dimension 0).
    pub fn forward(&self, inputs: &[Tensor], opts: &ForwardOptions) -> GraphResult<ForwardPass> {
        on_pool(|| self.forward_on_pool(inputs, opts))
    }

    fn forward_on_pool(
        &self,
        inputs: &[Tensor],
        opts: &ForwardOptions,
    ) -> GraphResult<ForwardPass> {
        if inputs.len() != self.inputs.len() {
            return Err(GraphError::Other(format!(
                "the graph takes {} inputs, {} were given",
                self.inputs.len(),
                inputs.len()
            )));
        }
        if self.inference_only && opts.mode == Mode::Train {
            return Err(GraphError::Other(
                "this graph was fused for inference (batch norms folded) and cannot run in training mode".into(),
            ));
        }
        let mut values: Vec<Option<Tensor>> = vec![None; self.values.len()];
        for (&id, t) in self.inputs.iter().zip(inputs) {
            let declared = &self.values[id].shape;
            let ok =
                t.rank() == declared.len() && t.shape()[1..] == declared[1..] && t.shape()[0] > 0;
            if !ok {
                let dims: Vec<String> = std::iter::once("N".to_string())
                    .chain(declared[1..].iter().map(|d| d.to_string()))
                    .collect();
                return Err(GraphError::InputShape {
                    name: self.values[id].name.clone(),
                    expected: format!("[{}]", dims.join(", ")),
                    got: fmt_shape(t.shape()),
                });
            }
            values[id] = Some(t.clone());
        }

        // Last node that reads each value, so that unkept intermediates can be freed early.
        let keep_all = matches!(opts.keep, Keep::All | Keep::Backward | Keep::BackwardAnd(_));
        let mut kept: HashSet<ValueId> = self.outputs.iter().copied().collect();
        if let Keep::Values(ids) | Keep::BackwardAnd(ids) = &opts.keep {
            kept.extend(ids.iter().copied());
        }
        // A convolution + activation pair runs as one kernel unless every value is kept or the
        // caller asked for the convolution's own output (VGG16 at batch 1: the separate ReLU
        // passes took 21 ms of a 250 ms forward pass).
        let fused: Vec<bool> = if opts.keep == Keep::All || self.fused_pairs.is_empty() {
            Vec::new()
        } else {
            (0..self.nodes.len())
                .map(|c| {
                    self.fused_pairs.activation_of(c).is_some()
                        && !kept.contains(&self.nodes[c].output)
                })
                .collect()
        };
        let is_fused = |c: NodeId| fused.get(c).copied().unwrap_or(false);
        let mut last_use = vec![usize::MAX; self.values.len()];
        if !keep_all {
            for (n, node) in self.nodes.iter().enumerate() {
                for &v in &node.inputs {
                    last_use[v] = n;
                }
            }
        }

        let mut saved = Vec::with_capacity(self.nodes.len());
        let mut running_updates = Vec::new();
        for (n, node) in self.nodes.iter().enumerate() {
            if self.fused_pairs.conv_of(n).is_some_and(is_fused) {
                // its output was computed by its convolution
                saved.push(Saved::None);
                continue;
            }
            // the value the node's result is stored as: a fused convolution's is its activation's
            let mut dest = node.output;
            let out = {
                let mut ins: Vec<&Tensor> = Vec::with_capacity(node.inputs.len());
                for &v in &node.inputs {
                    let t = match self.values[v].kind {
                        ValueKind::Param(p) => Some(&self.params[p].tensor),
                        _ => values[v].as_ref(),
                    };
                    ins.push(t.ok_or_else(|| {
                        GraphError::Other(format!(
                            "internal: value '{}' was freed before node '{}'",
                            self.values[v].name, node.name
                        ))
                    })?);
                }
                let ctx = ForwardCtx {
                    mode: opts.mode,
                    seed: opts.seed ^ (n as u64).wrapping_mul(rng::GOLDEN),
                };
                let node_error = |e: OpError| GraphError::Node {
                    node: node.name.clone(),
                    op: node.op.kind_name().to_string(),
                    msg: {
                        let shown: Vec<String> = ins.iter().map(|t| fmt_shape(t.shape())).collect();
                        format!("{e} (input shapes {})", shown.join(", "))
                    },
                };
                match (&node.op, self.fused_pairs.activation_of(n)) {
                    (Op::Conv2d(spec), Some((a, act))) if is_fused(n) => {
                        // (n, c_out, oh, ow): the activation's output; the convolution's is
                        // never stored
                        dest = self.nodes[a].output;
                        let b = ins.get(2).copied();
                        let y = conv::forward_fused(spec, Some(act), ins[0], ins[1], b)
                            .map_err(node_error)?;
                        OpOutput::plain(y)
                    }
                    _ => node.op.forward(&ins, ctx).map_err(node_error)?,
                }
            };
            if let Some((mean, var)) = out.running_stats
                && let (ValueKind::Param(pm), ValueKind::Param(pv)) = (
                    self.values[node.inputs[3]].kind,
                    self.values[node.inputs[4]].kind,
                )
            {
                running_updates.push((pm, pv, mean, var));
            }
            values[dest] = Some(out.y);
            saved.push(out.saved);
            if !keep_all {
                for &v in &node.inputs {
                    if last_use[v] == n && !kept.contains(&v) {
                        values[v] = None;
                    }
                }
                // A value nobody reads and nobody asked for.
                if last_use[dest] == usize::MAX && !kept.contains(&dest) {
                    values[dest] = None;
                }
            }
        }
        Ok(ForwardPass {
            mode: opts.mode,
            values,
            saved,
            running_updates,
            fused,
        })
    }

    /// Writes the running statistics a training pass computed into the batch norm buffers.
    pub fn apply_running_stats(&mut self, pass: &mut ForwardPass) {
        self.inference.clear();
        for (pm, pv, mean, var) in pass.running_updates.drain(..) {
            self.params[pm].tensor = mean;
            self.params[pv].tensor = var;
        }
    }
}
