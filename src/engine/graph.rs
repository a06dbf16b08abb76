//! `Graph`: a static DAG of named values, op nodes in topological order, and named parameters.
//!
//! A graph is made from a [`GraphDef`] (names, any node order), which is where every check
//! happens: unknown names, duplicate names, cycles, arity, parameter shapes and the shape of
//! every value (inferred from the declared input shapes). After that, `forward` runs nodes in
//! order and keeps what the caller asks for; `backward` walks them in reverse from seed
//! gradients at any values. There is no global tape: a [`ForwardPass`] is the tape.

use std::collections::{HashMap, HashSet};

use super::error::{GraphError, GraphResult, OpError};
use super::fuse::InferenceCache;
use super::ops::{ForwardCtx, Mode, Op, OpOutput, Saved, conv};
use super::tensor::{Tensor, checked_numel, fmt_shape};
use super::train_fusion::ConvActivationPairs;

pub type ValueId = usize;
pub type NodeId = usize;
pub type ParamId = usize;

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// The i-th graph input.
    Input(usize),
    Param(ParamId),
    /// The output of a node.
    Node(NodeId),
}

#[derive(Clone, Debug)]
pub struct ValueInfo {
    pub name: String,
    pub kind: ValueKind,
    /// Shape inferred for the declared input shapes (dimension 0 of inputs is the batch and
    /// may differ at run time).
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    /// False for buffers such as batch norm running statistics.
    pub trainable: bool,
}

/// A graph input: name and shape `[batch, ..]` (for images `[n, c, h, w]`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputDef {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A node by names: `output = op(inputs...)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeDef {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub output: String,
}

/// Everything needed to make a graph, referring to values by name, nodes in any order.
#[derive(Clone, Debug, Default)]
pub struct GraphDef {
    pub inputs: Vec<InputDef>,
    pub params: Vec<Param>,
    pub nodes: Vec<NodeDef>,
    pub outputs: Vec<String>,
}

impl GraphDef {
    /// Adds a node whose output value has the node's name; returns that name.
    pub fn push(&mut self, name: &str, op: Op, inputs: &[&str]) -> String {
        self.nodes.push(NodeDef {
            name: name.to_string(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: name.to_string(),
        });
        name.to_string()
    }

    pub fn param(&mut self, name: &str, tensor: Tensor, trainable: bool) -> String {
        self.params.push(Param {
            name: name.to_string(),
            tensor,
            trainable,
        });
        name.to_string()
    }
}

#[derive(Clone, Debug)]
pub struct Graph {
    values: Vec<ValueInfo>,
    nodes: Vec<Node>,
    params: Vec<Param>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    by_name: HashMap<String, ValueId>,
    /// Fused copies for evaluation (`Graph::inference` in `engine::fuse`).
    pub(super) inference: InferenceCache,
    /// Made by the inference rewrite: batch norms are folded away, so it cannot train.
    pub(super) inference_only: bool,
    /// Convolutions whose activation a pass that does not keep every value computes in the
    /// same kernel.
    fused_pairs: ConvActivationPairs,
    /// The largest batch the shapes allow: 1 for a graph that only works at its declared batch
    /// (an imported file whose reshape targets were traced at batch 1), else `usize::MAX`.
    max_batch: usize,
}

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
    /// `engine::train_fusion`); gradients, seeds and backward results are the same as with
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

/// The values and saved state of one forward pass; the tape for `backward`.
#[derive(Debug)]
pub struct ForwardPass {
    mode: Mode,
    /// Indexed by `ValueId`; parameters are not copied here (`None`).
    values: Vec<Option<Tensor>>,
    /// Indexed by `NodeId`.
    saved: Vec<Saved>,
    /// Batch norm running statistics computed in training: (mean param, var param, mean, var).
    running_updates: Vec<(ParamId, ParamId, Tensor, Tensor)>,
    /// Indexed by the convolution's `NodeId`: it ran its activation in its kernel, and its own
    /// output was never stored (empty: no pair was fused).
    fused: Vec<bool>,
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

fn node_error(node: &NodeDef, msg: impl Into<String>) -> GraphError {
    GraphError::Node {
        node: node.name.clone(),
        op: node.op.kind_name().to_string(),
        msg: msg.into(),
    }
}

/// Whether every node's shapes still check with each input's batch (dimension 0) one larger
/// than declared: shape inference only, no computation.
fn shapes_allow_another_batch(values: &[ValueInfo], inputs: &[ValueId], nodes: &[Node]) -> bool {
    let mut shapes: Vec<Vec<usize>> = values.iter().map(|v| v.shape.clone()).collect();
    for &i in inputs {
        if let Some(b) = shapes[i].first_mut() {
            *b += 1;
        }
    }
    for node in nodes {
        let ins: Vec<&[usize]> = node.inputs.iter().map(|&v| shapes[v].as_slice()).collect();
        match node.op.output_shape(&ins) {
            Ok(s) => shapes[node.output] = s,
            Err(_) => return false,
        }
    }
    true
}

impl Graph {
    /// Validates a definition and makes the graph. Errors name the node and the shapes.
    pub fn from_def(def: GraphDef) -> GraphResult<Graph> {
        let GraphDef {
            inputs,
            params,
            nodes,
            outputs,
        } = def;
        let mut values: Vec<ValueInfo> = Vec::new();
        let mut by_name: HashMap<String, ValueId> = HashMap::new();
        let mut declare =
            |name: &str, kind: ValueKind, shape: Vec<usize>| -> GraphResult<ValueId> {
                if by_name.contains_key(name) {
                    return Err(GraphError::DuplicateName(name.to_string()));
                }
                let id = values.len();
                values.push(ValueInfo {
                    name: name.to_string(),
                    kind,
                    shape,
                });
                by_name.insert(name.to_string(), id);
                Ok(id)
            };

        let mut input_ids = Vec::new();
        for (i, inp) in inputs.iter().enumerate() {
            if inp.shape.is_empty() || checked_numel(&inp.shape).is_none() {
                return Err(GraphError::InputShape {
                    name: inp.name.clone(),
                    expected: "a non-empty shape of reasonable size".into(),
                    got: fmt_shape(&inp.shape),
                });
            }
            input_ids.push(declare(&inp.name, ValueKind::Input(i), inp.shape.clone())?);
        }
        for (p, param) in params.iter().enumerate() {
            if param.tensor.has_non_finite() {
                return Err(GraphError::Param {
                    name: param.name.clone(),
                    msg: "contains NaN or infinite values".into(),
                });
            }
            declare(
                &param.name,
                ValueKind::Param(p),
                param.tensor.shape().to_vec(),
            )?;
        }
        // Node outputs are declared before ordering so that references can be resolved.
        let mut output_ids = Vec::with_capacity(nodes.len());
        for (n, node) in nodes.iter().enumerate() {
            output_ids.push(declare(&node.output, ValueKind::Node(n), Vec::new())?);
        }
        let mut node_inputs = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let mut ids = Vec::with_capacity(node.inputs.len());
            for name in &node.inputs {
                let id = by_name
                    .get(name)
                    .copied()
                    .ok_or_else(|| GraphError::UnknownValue {
                        node: node.name.clone(),
                        name: name.clone(),
                    })?;
                ids.push(id);
            }
            node_inputs.push(ids);
        }

        // Kahn's algorithm over nodes, stable in definition order.
        let producer = |v: ValueId| match values[v].kind {
            ValueKind::Node(n) => Some(n),
            _ => None,
        };
        let mut pending: Vec<usize> = node_inputs
            .iter()
            .map(|ins| ins.iter().filter(|&&v| producer(v).is_some()).count())
            .collect();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (n, ins) in node_inputs.iter().enumerate() {
            for &v in ins {
                if let Some(p) = producer(v) {
                    consumers[p].push(n);
                }
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..nodes.len()).filter(|&n| pending[n] == 0).collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for &c in &consumers[n] {
                pending[c] -= 1;
                if pending[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        if order.len() != nodes.len() {
            let stuck: Vec<String> = (0..nodes.len())
                .filter(|&n| pending[n] > 0)
                .map(|n| format!("'{}'", nodes[n].name))
                .collect();
            return Err(GraphError::Cycle(stuck.join(", ")));
        }

        // Renumber nodes in topological order and infer every shape.
        let mut position = vec![0usize; nodes.len()];
        for (pos, &n) in order.iter().enumerate() {
            position[n] = pos;
        }
        let mut node_defs: Vec<Option<NodeDef>> = nodes.into_iter().map(Some).collect();
        let mut graph_nodes = Vec::with_capacity(order.len());
        for &n in &order {
            let Some(def) = node_defs[n].take() else {
                return Err(GraphError::Other("internal: node ordered twice".into()));
            };
            let ins = &node_inputs[n];
            let shapes: Vec<&[usize]> = ins.iter().map(|&v| values[v].shape.as_slice()).collect();
            let out_shape = def.op.output_shape(&shapes).map_err(|e| {
                let shown: Vec<String> = shapes.iter().map(|s| fmt_shape(s)).collect();
                node_error(&def, format!("{e} (input shapes {})", shown.join(", ")))
            })?;
            if checked_numel(&out_shape).is_none() {
                return Err(node_error(
                    &def,
                    format!("output shape {out_shape:?} is too large"),
                ));
            }
            let out = output_ids[n];
            values[out].shape = out_shape;
            values[out].kind = ValueKind::Node(position[n]);
            graph_nodes.push(Node {
                name: def.name,
                op: def.op,
                inputs: ins.clone(),
                output: out,
            });
        }

        let mut out_ids = Vec::new();
        for name in &outputs {
            let id = by_name
                .get(name)
                .copied()
                .ok_or_else(|| GraphError::UnknownValue {
                    node: "(graph outputs)".into(),
                    name: name.clone(),
                })?;
            out_ids.push(id);
        }
        let fused_pairs = ConvActivationPairs::find(&graph_nodes, values.len(), &out_ids);
        let max_batch = if shapes_allow_another_batch(&values, &input_ids, &graph_nodes) {
            usize::MAX
        } else {
            1
        };
        Ok(Graph {
            values,
            nodes: graph_nodes,
            params,
            inputs: input_ids,
            outputs: out_ids,
            by_name,
            inference: InferenceCache::default(),
            inference_only: false,
            fused_pairs,
            max_batch,
        })
    }

    /// The largest batch a forward pass can take: 1 when the graph's shapes only work at the
    /// declared batch (callers that batch images then run them one at a time), else
    /// `usize::MAX`.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    pub fn values(&self) -> &[ValueInfo] {
        &self.values
    }

    pub fn value(&self, id: ValueId) -> &ValueInfo {
        &self.values[id]
    }

    pub fn value_id(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }

    /// Nodes in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Mutable parameters; drops the cached inference graphs, which copied the old ones.
    pub fn params_mut(&mut self) -> &mut [Param] {
        self.inference.clear();
        &mut self.params
    }

    pub fn param_id(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name)
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// Declared shape of the first input, e.g. `[1, 3, 224, 224]`.
    pub fn input_shape(&self) -> &[usize] {
        self.inputs
            .first()
            .map(|&v| self.values[v].shape.as_slice())
            .unwrap_or(&[])
    }

    /// Number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.tensor.numel())
            .sum()
    }

    /// The node producing a value, if any.
    pub fn producer(&self, id: ValueId) -> Option<&Node> {
        match self.values.get(id)?.kind {
            ValueKind::Node(n) => self.nodes.get(n),
            _ => None,
        }
    }

    /// A value's tensor: from the pass for inputs and node outputs, from the graph for params.
    pub fn lookup<'a>(&'a self, pass: &'a ForwardPass, id: ValueId) -> Option<&'a Tensor> {
        match self.values.get(id)?.kind {
            ValueKind::Param(p) => self.params.get(p).map(|p| &p.tensor),
            _ => pass.get(id),
        }
    }

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
                    seed: opts.seed ^ (n as u64).wrapping_mul(super::rng::GOLDEN),
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

/// Runs `f` on a worker of the current rayon pool (directly when already on one). Called from
/// any other thread, each of the pass's parallel loops would be injected into the pool from
/// outside while the caller sleeps on a latch, two thread wake-ups per loop; from a worker
/// they fork in place. Smile CNN (`convscope bench`, 2 threads): forward + backward to the
/// input at batch 1 1.46–2.02 → 0.95–0.99 ms, forward 0.60–0.98 → 0.45–0.68 ms, training step
/// at batch 32 37.0–38.1 → 35.8–37.0 ms.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
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
