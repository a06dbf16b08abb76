//! `Graph`: a static DAG of named values, op nodes in topological order, and named parameters.
//!
//! A graph is made from a [`GraphDef`] (names, any node order), which is where every check
//! happens: unknown names, duplicate names, cycles, arity, parameter shapes and the shape of
//! every value (inferred from the declared input shapes). After that, `forward` runs nodes in
//! order and keeps what the caller asks for; `backward` walks them in reverse from seed
//! gradients at any values. There is no global tape: a [`ForwardPass`] is the tape.

//!
//! The module owns the data structure and its checks; its children are the passes over it:
//! `forward` (and the tape it leaves), `backward`, `fuse` (the inference rewrite, with the
//! cache of fused copies), `subgraph` (a prefix, at another input size) and `train_fusion`
//! (which convolution runs its activation in its kernel during training). They read the graph's private fields as its children, so no field
//! is widened for them.

mod backward;
mod forward;
pub mod fuse;
mod subgraph;
mod train_fusion;

use std::collections::HashMap;

pub use backward::{BackwardRequest, Gradients};
pub use forward::{ForwardOptions, ForwardPass, Keep};

use super::error::{GraphError, GraphResult};
use super::ops::Op;
use super::tensor::{Tensor, checked_numel, fmt_shape};
use fuse::InferenceCache;
use train_fusion::ConvActivationPairs;

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
    /// Fused copies for evaluation (`Graph::inference` in `engine::graph::fuse`).
    inference: InferenceCache,
    /// Made by the inference rewrite: batch norms are folded away, so it cannot train.
    inference_only: bool,
    /// Convolutions whose activation a pass that does not keep every value computes in the
    /// same kernel.
    fused_pairs: ConvActivationPairs,
    /// The largest batch the shapes allow: 1 for a graph that only works at its declared batch
    /// (an imported file whose reshape targets were traced at batch 1), else `usize::MAX`.
    max_batch: usize,
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

    /// A value by its name, or else the output of the node of that name (`convscope summary`
    /// lists node names; ONNX files name a node's output differently, e.g. `Clip_output_0`).
    pub fn layer_value(&self, name: &str) -> Option<ValueId> {
        self.value_id(name)
            .or_else(|| self.nodes.iter().find(|n| n.name == name).map(|n| n.output))
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
