//! The inference rewrite of a graph: what onnxruntime does before running a mobile network.
//!
//! Three folds, each only where the value it removes is read by exactly one node and is not
//! in the caller's keep list (nor a graph output):
//! - `Pad` (constant 0, height/width only) → the following convolution's padding;
//! - evaluation-mode `BatchNorm2d` → the preceding convolution's weights and bias
//!   (`w' = w·s`, `b' = (b − mean)·s + beta`, `s = gamma / sqrt(var + eps)`);
//! - a following `Relu` / `Clip` → the convolution's output ([`Op::FusedConv2d`]);
//! - a residual join `Add(conv(x), r)` of equal shapes, with the `Relu` / `Clip` after it →
//!   the convolution's output (`FusedConvSpec::residual`): ResNet's blocks end this way, and
//!   the two element-wise passes and their buffers cost ~10 % of its forward pass.
//!
//! A fused node's output keeps the name of the last value it replaced, so names a caller reads
//! (logits, a CAM layer, the input) mean the same value in both graphs. The result is marked
//! inference-only: a training-mode forward of it is an error, because its batch norms are gone.
//! Backward through it is exact for input gradients (saliency, Grad-CAM): the folds are linear
//! and the fused activations' derivatives are read from their outputs.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use super::{Graph, GraphDef, InputDef, NodeDef, Param};
use crate::engine::error::GraphResult;
use crate::engine::ops::{BinaryOp, FusedActivation, FusedConvSpec, Op, PadSpec};
use crate::engine::tensor::Tensor;

/// How many of each fold a rewrite made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuseReport {
    pub pads: usize,
    pub batch_norms: usize,
    pub activations: usize,
    pub residuals: usize,
}

impl FuseReport {
    pub fn total(&self) -> usize {
        self.pads + self.batch_norms + self.activations + self.residuals
    }
}

/// The rewritten graph for evaluation, keeping every value named in `keep` (and the graph's
/// inputs and outputs) readable and seedable under its name.
pub fn fuse_for_inference(graph: &Graph, keep: &[&str]) -> GraphResult<(Graph, FuseReport)> {
    let mut work = Work::new(graph, keep);
    let mut report = FuseReport::default();
    for n in 0..work.nodes.len() {
        if work.fold_pad(n) {
            report.pads += 1;
        }
    }
    for n in 0..work.nodes.len() {
        if work.fold_batch_norm(n) {
            report.batch_norms += 1;
        }
    }
    for n in 0..work.nodes.len() {
        if work.fuse_residual(n) {
            report.residuals += 1;
        }
    }
    for n in 0..work.nodes.len() {
        if work.fuse_activation(n) {
            report.activations += 1;
        }
    }
    let mut fused = Graph::from_def(work.into_def(graph))?;
    fused.inference_only = true;
    Ok((fused, report))
}

/// The graph being rewritten: nodes by name in topological order (`None` once folded away).
struct Work {
    nodes: Vec<Option<NodeDef>>,
    params: Vec<Param>,
    param_index: HashMap<String, usize>,
    /// Node index producing each node output.
    producer: HashMap<String, usize>,
    /// Number of node inputs reading each value.
    uses: HashMap<String, usize>,
    /// Values that must survive: the keep list, graph inputs and outputs.
    pinned: HashSet<String>,
    /// Every name in use, for fresh parameter names.
    names: HashSet<String>,
    /// Each value's shape at the graph's declared input shapes.
    shapes: HashMap<String, Vec<usize>>,
}

impl Work {
    fn new(graph: &Graph, keep: &[&str]) -> Self {
        let name = |v: usize| graph.value(v).name.clone();
        let nodes: Vec<Option<NodeDef>> = graph
            .nodes()
            .iter()
            .map(|n| {
                Some(NodeDef {
                    name: n.name.clone(),
                    op: n.op.clone(),
                    inputs: n.inputs.iter().map(|&v| name(v)).collect(),
                    output: name(n.output),
                })
            })
            .collect();
        let mut uses: HashMap<String, usize> = HashMap::new();
        let mut producer = HashMap::new();
        for (i, n) in nodes.iter().flatten().enumerate() {
            for v in &n.inputs {
                *uses.entry(v.clone()).or_default() += 1;
            }
            producer.insert(n.output.clone(), i);
        }
        let mut pinned: HashSet<String> = keep.iter().map(|s| s.to_string()).collect();
        pinned.extend(graph.outputs().iter().map(|&v| name(v)));
        pinned.extend(graph.inputs().iter().map(|&v| name(v)));
        let params = graph.params().to_vec();
        let param_index = params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let names = graph.values().iter().map(|v| v.name.clone()).collect();
        let shapes = graph
            .values()
            .iter()
            .map(|v| (v.name.clone(), v.shape.clone()))
            .collect();
        Self {
            nodes,
            params,
            param_index,
            producer,
            uses,
            pinned,
            names,
            shapes,
        }
    }

    /// The node that alone reads `value`, when `value` may be fused away.
    fn sole_reader(&self, value: &str) -> Option<usize> {
        if self.pinned.contains(value) || self.uses.get(value) != Some(&1) {
            return None;
        }
        self.nodes.iter().position(|n| {
            n.as_ref()
                .is_some_and(|n| n.inputs.iter().any(|v| v == value))
        })
    }

    /// The node producing `value`, if it is still in the graph.
    fn producer_of(&self, value: &str) -> Option<usize> {
        self.producer
            .get(value)
            .copied()
            .filter(|&i| self.nodes[i].is_some())
    }

    /// Whether two values have the same shape at the declared input shapes.
    fn same_known_shape(&self, a: &str, b: &str) -> bool {
        matches!((self.shapes.get(a), self.shapes.get(b)), (Some(x), Some(y)) if x == y)
    }

    fn param(&self, name: &str) -> Option<&Tensor> {
        self.param_index.get(name).map(|&i| &self.params[i].tensor)
    }

    fn fresh_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.names.contains(&name) {
            k += 1;
            name = format!("{base}{k}");
        }
        self.names.insert(name.clone());
        name
    }

    fn add_param(&mut self, base: &str, tensor: Tensor) -> String {
        let name = self.fresh_name(base);
        self.param_index.insert(name.clone(), self.params.len());
        self.params.push(Param {
            name: name.clone(),
            tensor,
            trainable: false,
        });
        name
    }

    /// Conv (node `n`) reading a zero Pad of height/width only: the pad becomes the
    /// convolution's padding.
    fn fold_pad(&mut self, n: usize) -> bool {
        let Some(Some(node)) = self.nodes.get(n) else {
            return false;
        };
        if !matches!(node.op, Op::Conv2d(_) | Op::FusedConv2d(_)) {
            return false;
        }
        let padded = node.inputs[0].clone();
        let Some(p) = self.producer_of(&padded) else {
            return false;
        };
        let Some(Op::Pad(spec)) = self.nodes[p].as_ref().map(|d| &d.op) else {
            return false;
        };
        let Some([top, bottom, left, right]) = spatial_zero_pad(spec) else {
            return false;
        };
        if self.sole_reader(&padded) != Some(n) {
            return false;
        }
        let source = self.nodes[p].as_ref().map(|d| d.inputs[0].clone());
        let (Some(source), Some(Some(node))) = (source, self.nodes.get_mut(n)) else {
            return false;
        };
        let conv = match &mut node.op {
            Op::Conv2d(s) => s,
            Op::FusedConv2d(s) => &mut s.conv,
            _ => return false,
        };
        conv.padding.top += top;
        conv.padding.bottom += bottom;
        conv.padding.left += left;
        conv.padding.right += right;
        node.inputs[0] = source;
        self.nodes[p] = None;
        true
    }

    /// Conv (node `n`) whose output only an eval-mode BatchNorm2d reads: the batch norm's affine
    /// map is folded into new weight and bias parameters.
    fn fold_batch_norm(&mut self, n: usize) -> bool {
        let Some(Some(node)) = self.nodes.get(n) else {
            return false;
        };
        if !matches!(node.op, Op::Conv2d(_)) {
            return false;
        }
        let Some(b) = self.sole_reader(&node.output) else {
            return false;
        };
        let Some(bn) = self.nodes[b].as_ref() else {
            return false;
        };
        let Op::BatchNorm2d(spec) = &bn.op else {
            return false;
        };
        if bn.inputs[0] != node.output {
            return false;
        }
        let stats: Option<Vec<&Tensor>> = bn.inputs[1..].iter().map(|v| self.param(v)).collect();
        let (Some(stats), Some(w)) = (stats, self.param(&node.inputs[1])) else {
            return false;
        };
        let bias = match node.inputs.get(2) {
            Some(v) => match self.param(v) {
                Some(t) => Some(t),
                None => return false, // a computed bias: leave it
            },
            None => None,
        };
        let Some((w2, b2)) = fold_affine(w, bias, &stats, spec.eps) else {
            return false;
        };
        let (base, bn_out) = (node.name.clone(), bn.output.clone());
        let w_name = self.add_param(&format!("{base}.folded_weight"), w2);
        let b_name = self.add_param(&format!("{base}.folded_bias"), b2);
        let Some(Some(node)) = self.nodes.get_mut(n) else {
            return false;
        };
        node.inputs.truncate(1);
        node.inputs.push(w_name);
        node.inputs.push(b_name);
        node.output = bn_out.clone();
        self.producer.insert(bn_out, n);
        self.nodes[b] = None;
        true
    }

    /// Conv (node `n`) whose output only a ReLU or Clip reads: the activation moves into the
    /// convolution.
    fn fuse_activation(&mut self, n: usize) -> bool {
        let Some(Some(node)) = self.nodes.get(n) else {
            return false;
        };
        let Op::Conv2d(conv) = &node.op else {
            return false;
        };
        let Some(a) = self.sole_reader(&node.output) else {
            return false;
        };
        let Some(act_node) = self.nodes[a].as_ref() else {
            return false;
        };
        let Op::Activation(act) = act_node.op else {
            return false;
        };
        let Some(act) = FusedActivation::of(act) else {
            return false;
        };
        let spec = FusedConvSpec {
            conv: conv.clone(),
            activation: Some(act),
            residual: false,
        };
        let out = act_node.output.clone();
        let Some(Some(node)) = self.nodes.get_mut(n) else {
            return false;
        };
        node.op = Op::FusedConv2d(spec);
        node.output = out.clone();
        self.producer.insert(out, n);
        self.nodes[a] = None;
        true
    }

    /// `Add` (node `n`) of a biased convolution's output, read by nothing else, and a value
    /// `r` of the same shape computed before that convolution: the addition (and a ReLU or
    /// Clip that alone reads its result) moves into the convolution, which reads `r` as a
    /// fourth input. Of two candidate convolutions the later one takes it (the other's output
    /// is then ready when it runs). Shapes are checked where they are known (the graph's
    /// traced shapes); the op checks them again at run time.
    fn fuse_residual(&mut self, n: usize) -> bool {
        let Some(Some(add)) = self.nodes.get(n) else {
            return false;
        };
        if !matches!(add.op, Op::Binary(BinaryOp::Add)) || add.inputs.len() != 2 {
            return false;
        }
        let (a, b) = (add.inputs[0].clone(), add.inputs[1].clone());
        // (conv node, residual value): the conv must be a plain biased Conv2d whose only
        // reader is this Add, and the residual must exist before the conv runs
        let candidate = |conv_v: &str, res_v: &str| -> Option<usize> {
            let c = self.producer_of(conv_v)?;
            let node = self.nodes[c].as_ref()?;
            if !matches!(node.op, Op::Conv2d(_)) || node.inputs.len() != 3 || conv_v == res_v {
                return None;
            }
            if self.sole_reader(conv_v) != Some(n) {
                return None;
            }
            // a graph input or computed by an earlier node (a parameter would not follow the
            // run-time batch the way the convolution's output does)
            let ready = match self.producer_of(res_v) {
                Some(p) => p < c,
                None => self.param(res_v).is_none() && self.shapes.contains_key(res_v),
            };
            (ready && self.same_known_shape(conv_v, res_v)).then_some(c)
        };
        let choice = match (candidate(&a, &b), candidate(&b, &a)) {
            (Some(ca), Some(cb)) if cb > ca => Some((cb, a)),
            (Some(ca), _) => Some((ca, b)),
            (None, Some(cb)) => Some((cb, a)),
            (None, None) => None,
        };
        let Some((c, residual)) = choice else {
            return false;
        };
        let mut out = add.output.clone();
        let mut activation = None;
        if let Some(r) = self.sole_reader(&out)
            && let Some(Some(act_node)) = self.nodes.get(r)
            && let Op::Activation(act) = act_node.op
            && let Some(act) = FusedActivation::of(act)
        {
            activation = Some(act);
            out = act_node.output.clone();
            self.nodes[r] = None;
        }
        let Some(Some(conv)) = self.nodes.get_mut(c) else {
            return false;
        };
        let Op::Conv2d(spec) = &conv.op else {
            return false;
        };
        conv.op = Op::FusedConv2d(FusedConvSpec {
            conv: spec.clone(),
            activation,
            residual: true,
        });
        conv.inputs.push(residual);
        conv.output = out.clone();
        self.producer.insert(out, c);
        self.nodes[n] = None;
        true
    }

    /// The definition of the rewritten graph; parameters no node reads any more are dropped
    /// (unless kept).
    fn into_def(self, graph: &Graph) -> GraphDef {
        let nodes: Vec<NodeDef> = self.nodes.into_iter().flatten().collect();
        let read: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .collect();
        let pinned = &self.pinned;
        let params = self
            .params
            .into_iter()
            .filter(|p| read.contains(p.name.as_str()) || pinned.contains(&p.name))
            .collect();
        GraphDef {
            inputs: graph
                .inputs()
                .iter()
                .map(|&v| InputDef {
                    name: graph.value(v).name.clone(),
                    shape: graph.value(v).shape.clone(),
                })
                .collect(),
            params,
            nodes,
            outputs: graph
                .outputs()
                .iter()
                .map(|&v| graph.value(v).name.clone())
                .collect(),
        }
    }
}

/// `[top, bottom, left, right]` of a constant-zero pad of a 4-D value that pads only the
/// spatial dimensions.
fn spatial_zero_pad(spec: &PadSpec) -> Option<[usize; 4]> {
    match spec.pads.as_slice() {
        [(0, 0), (0, 0), (t, b), (l, r)] if spec.value == 0.0 => Some([*t, *b, *l, *r]),
        _ => None,
    }
}

/// Weight `[c_out, ..]` and bias `[c_out]` of a convolution followed by batch norm
/// (gamma, beta, mean, var, each `[c_out]`), computed in f64. None when shapes disagree or a
/// result is not finite.
fn fold_affine(
    w: &Tensor,
    bias: Option<&Tensor>,
    stats: &[&Tensor],
    eps: f32,
) -> Option<(Tensor, Tensor)> {
    let c_out = *w.shape().first()?;
    let [gamma, beta, mean, var] = stats else {
        return None;
    };
    if stats.iter().any(|t| t.shape() != [c_out]) || bias.is_some_and(|b| b.shape() != [c_out]) {
        return None;
    }
    let per = w.numel() / c_out.max(1);
    let mut w2 = w.clone();
    let mut b2 = vec![0.0f32; c_out];
    for c in 0..c_out {
        let denom = (var.data()[c] as f64 + eps as f64).sqrt();
        if denom <= 0.0 || !denom.is_finite() {
            return None;
        }
        let s = gamma.data()[c] as f64 / denom;
        for v in &mut w2.data_mut()[c * per..(c + 1) * per] {
            *v = (*v as f64 * s) as f32;
        }
        let b = bias.map_or(0.0, |b| b.data()[c] as f64);
        b2[c] = ((b - mean.data()[c] as f64) * s + beta.data()[c] as f64) as f32;
    }
    let b2 = Tensor::new(vec![c_out], b2).ok()?;
    (!w2.has_non_finite() && !b2.has_non_finite()).then_some((w2, b2))
}

// ---------------------------------------------------------------------------------------------
// The per-graph cache
// ---------------------------------------------------------------------------------------------

/// At most this many keep lists are cached per graph (explanations use one or two).
const CACHE_ENTRIES: usize = 4;

/// Fused versions of one graph by keep list: `None` when the rewrite changed nothing (the
/// graph itself is used, not a copy). Cleared whenever the graph's parameters may change;
/// a clone of the graph starts empty.
#[derive(Default)]
pub struct InferenceCache(Mutex<CacheEntries>);

impl Clone for InferenceCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for InferenceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InferenceCache")
    }
}

type CacheEntries = Vec<(Vec<String>, Option<Arc<Graph>>)>;

impl InferenceCache {
    /// The entries; a poisoned lock (a panic elsewhere) still holds a consistent list.
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheEntries> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn clear(&mut self) {
        match self.0.get_mut() {
            Ok(v) => v.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
    }
}

/// Above this many parameter floats (256 MiB), a rewrite that only fused activations is not
/// worth a second copy of the weights: it saves one element-wise pass per fused node (no
/// measurable gain on VGG16, whose fused copy would hold another 528 MB).
const LARGE_COPY_FLOATS: usize = 64 << 20;

/// Whether to keep a fused graph with `floats` parameter floats instead of the original.
fn worth_a_copy(report: &FuseReport, floats: usize) -> bool {
    report.pads + report.batch_norms > 0 || (report.activations > 0 && floats <= LARGE_COPY_FLOATS)
}

/// The graph to evaluate: the fused one, or the original when nothing (worth a copy of the
/// weights) could be fused.
#[derive(Clone, Debug)]
pub enum InferenceGraph<'a> {
    Unchanged(&'a Graph),
    Fused(Arc<Graph>),
}

impl Deref for InferenceGraph<'_> {
    type Target = Graph;
    fn deref(&self) -> &Graph {
        match self {
            InferenceGraph::Unchanged(g) => g,
            InferenceGraph::Fused(g) => g,
        }
    }
}

impl Graph {
    /// The inference rewrite of this graph keeping `keep` (see [`fuse_for_inference`]), built
    /// once per keep list and cached until the parameters change. Evaluation only.
    pub fn inference(&self, keep: &[&str]) -> GraphResult<InferenceGraph<'_>> {
        if self.inference_only {
            return Ok(InferenceGraph::Unchanged(self));
        }
        let mut key: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        key.sort();
        key.dedup();
        if let Some((_, hit)) = self.inference.lock().iter().find(|(k, _)| *k == key) {
            return Ok(match hit {
                Some(g) => InferenceGraph::Fused(Arc::clone(g)),
                None => InferenceGraph::Unchanged(self),
            });
        }
        let refs: Vec<&str> = key.iter().map(String::as_str).collect();
        let (fused, report) = fuse_for_inference(self, &refs)?;
        let floats = fused.params().iter().map(|p| p.tensor.numel()).sum();
        let entry = worth_a_copy(&report, floats).then(|| Arc::new(fused));
        let mut cache = self.inference.lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push((key, entry.clone()));
        Ok(match entry {
            Some(g) => InferenceGraph::Fused(g),
            None => InferenceGraph::Unchanged(self),
        })
    }
}

/// The names of `ids` in `graph` (for keep lists).
pub fn names_of(graph: &Graph, ids: &[usize]) -> Vec<String> {
    ids.iter()
        .filter_map(|&v| graph.values().get(v).map(|i| i.name.clone()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::test_tensor;
    use crate::engine::ops::{Activation, BatchNormSpec, Conv2dSpec, GemmSpec, Padding2d};
    use crate::engine::{BackwardRequest, ForwardOptions, Keep};

    fn conv(stride: usize, pad: usize, groups: usize) -> Op {
        Op::Conv2d(Conv2dSpec {
            stride: [stride, stride],
            padding: Padding2d::uniform(pad),
            dilation: [1, 1],
            groups,
        })
    }

    /// Batch norm parameters `[c]` with a positive variance and non-trivial statistics.
    fn bn_params(d: &mut GraphDef, name: &str, c: usize, seed: u64) -> [String; 4] {
        let var = test_tensor(&[c], seed + 3).map(|v| v.abs() + 0.3);
        [
            d.param(&format!("{name}.g"), test_tensor(&[c], seed), true),
            d.param(&format!("{name}.b"), test_tensor(&[c], seed + 1), true),
            d.param(&format!("{name}.m"), test_tensor(&[c], seed + 2), false),
            d.param(&format!("{name}.v"), var, false),
        ]
    }

    fn bn(d: &mut GraphDef, name: &str, x: &str, c: usize, seed: u64) -> String {
        let [g, b, m, v] = bn_params(d, name, c, seed);
        d.push(
            name,
            Op::BatchNorm2d(BatchNormSpec {
                eps: 1e-3,
                momentum: 0.1,
            }),
            &[x, &g, &b, &m, &v],
        )
    }

    /// x (2, 3, 9, 9) → Pad(H 1/0, W 2/1) → Conv 3x3 (bias) → BN → Clip(0, 6)
    /// → depthwise 3x3 stride 2 (no bias) → BN → Relu → GlobalAvgPool → Flatten → Gemm (5).
    fn small_net() -> Graph {
        let mut d = GraphDef::default();
        d.inputs.push(InputDef {
            name: "x".into(),
            shape: vec![2, 3, 9, 9],
        });
        let w1 = d.param("w1", test_tensor(&[4, 3, 3, 3], 1), true);
        let b1 = d.param("b1", test_tensor(&[4], 2), true);
        let w2 = d.param("w2", test_tensor(&[4, 1, 3, 3], 3), true);
        let wf = d.param("wf", test_tensor(&[5, 4], 4), true);
        let bf = d.param("bf", test_tensor(&[5], 5), true);
        let pads = PadSpec {
            pads: vec![(0, 0), (0, 0), (1, 0), (2, 1)],
            value: 0.0,
        };
        d.push("pad", Op::Pad(pads), &["x"]);
        d.push("conv1", conv(1, 0, 1), &["pad", &w1, &b1]);
        let n1 = bn(&mut d, "bn1", "conv1", 4, 10);
        d.push(
            "clip1",
            Op::Activation(Activation::Clip { min: 0.0, max: 6.0 }),
            &[&n1],
        );
        d.push("dw", conv(2, 1, 4), &["clip1", &w2]);
        let n2 = bn(&mut d, "bn2", "dw", 4, 20);
        d.push("relu2", Op::Activation(Activation::Relu), &[&n2]);
        d.push("gap", Op::GlobalAvgPool, &["relu2"]);
        d.push("flat", Op::Flatten { axis: 1 }, &["gap"]);
        let spec = GemmSpec {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        };
        d.push("fc", Op::Gemm(spec), &["flat", &wf, &bf]);
        d.outputs.push("fc".into());
        Graph::from_def(d).unwrap()
    }

    /// max |a − b| / max(max |b|, tiny).
    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.shape(), b.shape());
        let diff = a
            .data()
            .iter()
            .zip(b.data())
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        diff / b.max_abs().max(1e-12)
    }

    /// Output and d(logit 2 of item 0)/d(input) of a graph for input x.
    fn output_and_input_grad(g: &Graph, x: &Tensor) -> (Tensor, Tensor) {
        let pass = g
            .forward(
                std::slice::from_ref(x),
                &ForwardOptions::eval_for_backward(),
            )
            .unwrap();
        let out = g.outputs()[0];
        let y = g.lookup(&pass, out).unwrap().clone();
        let mut seed = Tensor::zeros(y.shape());
        seed.data_mut()[2] = 1.0;
        let input = g.inputs()[0];
        let req = BackwardRequest {
            seeds: vec![(out, seed)],
            param_grads: false,
            value_grads: vec![input],
        };
        let mut grads = g.backward(&pass, &req).unwrap();
        (y, grads.values.remove(&input).unwrap())
    }

    /// The fused graph `f` against the original `g` at input x: outputs within 1e-5 and input
    /// gradients within 1e-4 (relative to the largest entry), the gradient not all zero.
    fn assert_same_outputs_and_input_grads(g: &Graph, f: &Graph, x: &Tensor) {
        let (y0, gx0) = output_and_input_grad(g, x);
        let (y1, gx1) = output_and_input_grad(f, x);
        assert!(
            rel_diff(&y1, &y0) <= 1e-5,
            "outputs differ by {}",
            rel_diff(&y1, &y0)
        );
        assert!(gx0.max_abs() > 0.0);
        assert!(
            rel_diff(&gx1, &gx0) <= 1e-4,
            "gradients differ by {}",
            rel_diff(&gx1, &gx0)
        );
    }

    #[test]
    fn folds_pad_batch_norm_and_activations_exactly() {
        let g = small_net();
        let (f, report) = fuse_for_inference(&g, &[]).unwrap();
        assert_eq!(
            report,
            FuseReport {
                pads: 1,
                batch_norms: 2,
                activations: 2,
                residuals: 0,
            }
        );
        let kinds: Vec<&str> = f.nodes().iter().map(|n| n.op.kind_name()).collect();
        assert_eq!(
            kinds,
            [
                "FusedConv2d",
                "FusedConv2d",
                "GlobalAvgPool",
                "Flatten",
                "Gemm"
            ]
        );
        // the fused nodes' outputs keep the names of the last values they replaced
        assert!(f.value_id("clip1").is_some() && f.value_id("relu2").is_some());
        assert!(f.value_id("conv1").is_none() && f.value_id("bn1").is_none());
        // folded-away parameters are dropped
        assert!(f.param_id("bn1.g").is_none() && f.param_id("w1").is_none());

        // inputs with values spread around the clip bounds
        assert_same_outputs_and_input_grads(
            &g,
            &f,
            &test_tensor(&[2, 3, 9, 9], 7).map(|v| 4.0 * v),
        );
    }

    /// x (2, 4, 6, 6) → [1x1 conv (bias) → Relu → 1x1 conv (bias)] + x → Relu (the 1x1
    /// kernel's path, 36 columns: one whole panel and a partial one)
    /// → [3x3 stride-2 conv (bias)] + [1x1 stride-2 conv (bias), the later node] (no
    /// activation: the GEMM path) → + GlobalAvgPool of itself (a broadcast: not fused)
    /// → Flatten.
    fn residual_net() -> Graph {
        let mut d = GraphDef::default();
        d.inputs.push(InputDef {
            name: "x".into(),
            shape: vec![2, 4, 6, 6],
        });
        let p = |d: &mut GraphDef, name: &str, shape: &[usize], seed: u64| {
            d.param(name, test_tensor(shape, seed), true)
        };
        let (wa, ba) = (p(&mut d, "wa", &[4, 4, 1, 1], 1), p(&mut d, "ba", &[4], 2));
        let (wb, bb) = (p(&mut d, "wb", &[4, 4, 1, 1], 3), p(&mut d, "bb", &[4], 4));
        let (wc, bc) = (p(&mut d, "wc", &[6, 4, 3, 3], 5), p(&mut d, "bc", &[6], 6));
        let (wd, bd) = (p(&mut d, "wd", &[6, 4, 1, 1], 7), p(&mut d, "bd", &[6], 8));
        let add = || Op::Binary(BinaryOp::Add);
        d.push("a", conv(1, 0, 1), &["x", &wa, &ba]);
        d.push("a_relu", Op::Activation(Activation::Relu), &["a"]);
        d.push("b", conv(1, 0, 1), &["a_relu", &wb, &bb]);
        d.push("join1", add(), &["b", "x"]);
        d.push("out1", Op::Activation(Activation::Relu), &["join1"]);
        d.push("c", conv(2, 1, 1), &["out1", &wc, &bc]);
        d.push("down", conv(2, 0, 1), &["out1", &wd, &bd]);
        d.push("join2", add(), &["c", "down"]);
        d.push("gap", Op::GlobalAvgPool, &["join2"]);
        d.push("bcast", add(), &["join2", "gap"]);
        d.push("flat", Op::Flatten { axis: 1 }, &["bcast"]);
        d.outputs.push("flat".into());
        Graph::from_def(d).unwrap()
    }

    #[test]
    fn residual_joins_fuse_into_the_later_convolution_exactly() {
        let g = residual_net();
        let (f, report) = fuse_for_inference(&g, &[]).unwrap();
        assert_eq!(report.residuals, 2);
        assert_eq!(report.activations, 1); // a's Relu; out1's went with join1
        let kinds: Vec<&str> = f.nodes().iter().map(|n| n.op.kind_name()).collect();
        assert_eq!(
            kinds,
            [
                "FusedConv2d",
                "FusedConv2d",
                "Conv2d",
                "FusedConv2d",
                "GlobalAvgPool",
                "Add",
                "Flatten"
            ]
        );
        // join1 + its Relu went into b (output named out1), join2 into the later `down`
        let down = f.nodes().iter().find(|n| n.name == "down").unwrap();
        assert!(matches!(&down.op, Op::FusedConv2d(s) if s.residual && s.activation.is_none()));
        assert_eq!(f.value(down.inputs[3]).name, "c");
        assert_eq!(f.value(down.output).name, "join2");
        let b = f.nodes().iter().find(|n| n.name == "b").unwrap();
        assert!(matches!(&b.op, Op::FusedConv2d(s) if s.residual && s.activation.is_some()));
        assert_eq!(f.value(b.output).name, "out1");
        assert!(f.value_id("join1").is_none());

        // inputs spread around the ReLU kinks; the gradient reaches x through the convolutions
        // and through the shortcut (b's fourth input)
        let x = test_tensor(&[2, 4, 6, 6], 11).map(|v| 3.0 * v);
        assert_same_outputs_and_input_grads(&g, &f, &x);

        // keeping a convolution's own output keeps its Add; keeping the join's value keeps
        // the activation after it apart (the join is then the fused node's output)
        let (_, kept) = fuse_for_inference(&g, &["b"]).unwrap();
        assert_eq!(kept.residuals, 1);
        let (f, kept) = fuse_for_inference(&g, &["join1"]).unwrap();
        assert_eq!(kept.residuals, 2);
        let id = |g: &Graph| g.value_id("join1").unwrap();
        let opts = |g: &Graph| ForwardOptions {
            keep: Keep::Values(vec![id(g)]),
            ..ForwardOptions::eval()
        };
        let p0 = g.forward(std::slice::from_ref(&x), &opts(&g)).unwrap();
        let p1 = f.forward(std::slice::from_ref(&x), &opts(&f)).unwrap();
        assert!(rel_diff(p1.get(id(&f)).unwrap(), p0.get(id(&g)).unwrap()) <= 1e-5);
    }

    #[test]
    fn kept_values_survive_with_their_values() {
        let g = small_net();
        // keeping the first conv's output blocks its batch norm fold (and so its clip), and
        // keeping the pad output blocks the pad fold
        let (f, report) = fuse_for_inference(&g, &["conv1", "pad"]).unwrap();
        assert_eq!(
            report,
            FuseReport {
                pads: 0,
                batch_norms: 1,
                activations: 1,
                residuals: 0,
            }
        );
        let x = test_tensor(&[2, 3, 9, 9], 8);
        for name in ["conv1", "pad"] {
            let keep = |g: &Graph| Keep::Values(vec![g.value_id(name).unwrap()]);
            let opts = |g: &Graph| ForwardOptions {
                keep: keep(g),
                ..ForwardOptions::eval()
            };
            let p0 = g.forward(std::slice::from_ref(&x), &opts(&g)).unwrap();
            let p1 = f.forward(std::slice::from_ref(&x), &opts(&f)).unwrap();
            let a = p0.get(g.value_id(name).unwrap()).unwrap();
            let b = p1.get(f.value_id(name).unwrap()).unwrap();
            assert_eq!(a, b, "kept value {name}");
        }
        // a seed at a kept value back-propagates to the input in the fused graph too
        let (_, gx0) = output_and_input_grad(&g, &x);
        let (_, gx1) = output_and_input_grad(&f, &x);
        assert!(rel_diff(&gx1, &gx0) <= 1e-4);
    }

    #[test]
    fn values_read_twice_are_not_fused() {
        // conv output read by its batch norm and by a residual add: nothing may fold into it
        let mut d = GraphDef::default();
        d.inputs.push(InputDef {
            name: "x".into(),
            shape: vec![1, 2, 5, 5],
        });
        let w = d.param("w", test_tensor(&[2, 2, 3, 3], 1), true);
        d.push("conv", conv(1, 1, 1), &["x", &w]);
        let n = bn(&mut d, "bn", "conv", 2, 3);
        d.push(
            "add",
            Op::Binary(crate::engine::ops::BinaryOp::Add),
            &[&n, "conv"],
        );
        d.outputs.push("add".into());
        let g = Graph::from_def(d).unwrap();
        let (_, report) = fuse_for_inference(&g, &[]).unwrap();
        assert_eq!(report.total(), 0);
        assert!(matches!(
            g.inference(&[]).unwrap(),
            InferenceGraph::Unchanged(_)
        ));
    }

    #[test]
    fn fused_graphs_refuse_training_and_the_cache_follows_the_parameters() {
        let mut g = small_net();
        let x = test_tensor(&[2, 3, 9, 9], 9);
        let f = g.inference(&[]).unwrap();
        assert!(matches!(f, InferenceGraph::Fused(_)));
        assert!(
            f.forward(std::slice::from_ref(&x), &ForwardOptions::train(1))
                .is_err()
        );
        let y_before = f
            .forward(std::slice::from_ref(&x), &ForwardOptions::eval())
            .unwrap();
        let y_before = y_before.get(f.outputs()[0]).unwrap().clone();
        drop(f);
        // changing a parameter must change what the inference graph computes
        let p = g.param_id("bf").unwrap();
        g.params_mut()[p].tensor = Tensor::full(&[5], 100.0);
        let f = g.inference(&[]).unwrap();
        let y_after = f
            .forward(std::slice::from_ref(&x), &ForwardOptions::eval())
            .unwrap();
        let y_after = y_after.get(f.outputs()[0]).unwrap();
        assert!(y_after.data()[0] > y_before.data()[0] + 50.0);
    }

    #[test]
    fn activation_only_rewrites_of_huge_models_are_not_copied() {
        let acts = FuseReport {
            activations: 13,
            ..FuseReport::default()
        };
        let bns = FuseReport {
            batch_norms: 1,
            ..acts
        };
        assert!(worth_a_copy(&acts, 1 << 20));
        assert!(!worth_a_copy(&acts, 138 << 20)); // VGG16's 138 M weights
        assert!(worth_a_copy(&bns, 138 << 20));
        assert!(!worth_a_copy(&FuseReport::default(), 10));
    }

    #[test]
    fn non_zero_or_channel_pads_stay() {
        for (pads, value) in [
            (vec![(0, 0), (0, 0), (1, 1), (1, 1)], 1.0),
            (vec![(0, 0), (1, 0), (1, 1), (1, 1)], 0.0),
        ] {
            assert_eq!(spatial_zero_pad(&PadSpec { pads, value }), None);
        }
    }
}
