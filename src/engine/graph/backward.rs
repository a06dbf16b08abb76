//! The backward pass: seeds at any values, gradients of the requested values and the trainable
//! parameters, nodes visited in reverse from the tape a [`ForwardPass`] left.

use std::collections::{HashMap, HashSet};

use super::{ForwardPass, Graph, NodeId, ValueId, ValueKind, on_pool};
use crate::engine::error::{GraphError, GraphResult};
use crate::engine::ops::Saved;
use crate::engine::tensor::{Tensor, fmt_shape};

/// What to differentiate: seed gradients at values, and which gradients to return.
#[derive(Clone, Debug, Default)]
pub struct BackwardRequest {
    /// d(target)/d(value) at each seed value, shaped like the value.
    pub seeds: Vec<(ValueId, Tensor)>,
    /// Return gradients of every trainable parameter.
    pub param_grads: bool,
    /// Return gradients of these values (graph inputs or intermediate values).
    pub value_grads: Vec<ValueId>,
}

#[derive(Debug, Default)]
pub struct Gradients {
    /// Gradients of the requested values (absent where no seed reaches them).
    pub values: HashMap<ValueId, Tensor>,
    /// Indexed by `ParamId`; `Some` for trainable parameters reached from the seeds.
    pub params: Vec<Option<Tensor>>,
}

impl Graph {
    /// Which values need a gradient: requested ones, trainable params (when asked) and
    /// everything computed from them.
    fn needs_grad(&self, req: &BackwardRequest) -> Vec<bool> {
        let mut needs = vec![false; self.values.len()];
        for &v in &req.value_grads {
            if let Some(slot) = needs.get_mut(v) {
                *slot = true;
            }
        }
        if req.param_grads {
            for (id, info) in self.values.iter().enumerate() {
                if let ValueKind::Param(p) = info.kind {
                    needs[id] |= self.params[p].trainable;
                }
            }
        }
        for node in &self.nodes {
            if node.inputs.iter().any(|&v| needs[v]) {
                needs[node.output] = true;
            }
        }
        needs
    }

    /// Back-propagates the seeds through the pass (which must have been run with
    /// `Keep::All`, `Keep::Backward` or `Keep::BackwardAnd`). Only nodes between the seeds and the requested gradients are visited.
    pub fn backward(&self, pass: &ForwardPass, req: &BackwardRequest) -> GraphResult<Gradients> {
        on_pool(|| self.backward_on_pool(pass, req))
    }

    fn backward_on_pool(
        &self,
        pass: &ForwardPass,
        req: &BackwardRequest,
    ) -> GraphResult<Gradients> {
        let needs = self.needs_grad(req);
        let requested: HashSet<ValueId> = req.value_grads.iter().copied().collect();
        let mut grads: Vec<Option<Tensor>> = vec![None; self.values.len()];
        for (v, seed) in &req.seeds {
            let info = self
                .values
                .get(*v)
                .ok_or_else(|| GraphError::Other(format!("seed refers to unknown value id {v}")))?;
            if let Some(t) = self.lookup(pass, *v)
                && t.shape() != seed.shape()
            {
                return Err(GraphError::Other(format!(
                    "seed for '{}' has shape {}, the value has shape {}",
                    info.name,
                    fmt_shape(seed.shape()),
                    fmt_shape(t.shape())
                )));
            }
            accumulate(&mut grads[*v], seed.clone(), &info.name)?;
        }

        for (node_id, node) in self.nodes.iter().enumerate().rev() {
            if !needs[node.output] {
                continue;
            }
            let Some(mut d_y) = (if requested.contains(&node.output) {
                grads[node.output].clone()
            } else {
                grads[node.output].take()
            }) else {
                continue;
            };
            let missing = |v: ValueId| {
                GraphError::Other(format!(
                    "backward needs value '{}', which the forward pass did not keep (use Keep::All)",
                    self.values[v].name
                ))
            };
            let ran_fused = |c: NodeId| pass.fused.get(c).copied().unwrap_or(false);
            let fused_conv = self.fused_pairs.conv_of(node_id).filter(|&c| ran_fused(c));
            if let Some(c) = fused_conv
                && let Some((_, act)) = self.fused_pairs.activation_of(c)
            {
                // d act(z) → d z with act' read from the output; the convolution's own visit
                // carries it on
                let y = pass.get(node.output).ok_or_else(|| missing(node.output))?;
                act.mask_gradient(y.data(), d_y.data_mut());
                let z = self.nodes[c].output;
                accumulate(&mut grads[z], d_y, &self.values[z].name)?;
                continue;
            }
            let mut ins = Vec::with_capacity(node.inputs.len());
            for &v in &node.inputs {
                ins.push(self.lookup(pass, v).ok_or_else(|| missing(v))?);
            }
            let y = match self.fused_pairs.activation_of(node_id) {
                // a convolution whose output was never stored: its backward reads only the
                // shape of y, which the activation's output shares
                Some((a, _)) if ran_fused(node_id) => pass.get(self.nodes[a].output),
                _ => pass.get(node.output),
            }
            .ok_or_else(|| missing(node.output))?;
            let input_needs: Vec<bool> = node.inputs.iter().map(|&v| needs[v]).collect();
            let saved = pass.saved.get(node_id).unwrap_or(&Saved::None);
            let d_inputs = node
                .op
                .backward_owned(&ins, y, saved, d_y, &input_needs, pass.mode)
                .map_err(|e| GraphError::Node {
                    node: node.name.clone(),
                    op: node.op.kind_name().to_string(),
                    msg: format!("backward: {e}"),
                })?;
            for ((&v, d), &need) in node.inputs.iter().zip(d_inputs).zip(&input_needs) {
                if let (Some(d), true) = (d, need) {
                    accumulate(&mut grads[v], d, &self.values[v].name)?;
                }
            }
        }

        let mut out = Gradients {
            values: HashMap::new(),
            params: vec![None; self.params.len()],
        };
        for (id, g) in grads.into_iter().enumerate() {
            let Some(g) = g else { continue };
            match self.values[id].kind {
                ValueKind::Param(p) if req.param_grads && self.params[p].trainable => {
                    out.params[p] = Some(g.clone());
                    if requested.contains(&id) {
                        out.values.insert(id, g);
                    }
                }
                _ if requested.contains(&id) => {
                    out.values.insert(id, g);
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

fn accumulate(slot: &mut Option<Tensor>, g: Tensor, name: &str) -> GraphResult<()> {
    match slot {
        Some(acc) => acc
            .add_assign(&g)
            .map_err(|e| GraphError::Other(format!("gradient of '{name}': {e}"))),
        None => {
            *slot = Some(g);
            Ok(())
        }
    }
}
