//! Walks an ONNX graph and maps each node onto the engine's ops (or folds it at import).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use super::attrs::Attrs;
use super::fold::{self, FOLDABLE};
use super::proto::{GraphProto, NodeProto, ValueInfoProto, type_proto};
use super::shape::{self, SymShape};
use super::tensor::{self, Const, Int};
use super::{ImportedModel, Problem, UnsupportedNode};
use crate::engine::graph::{InputDef, NodeDef};
use crate::engine::ops::{
    Activation, BatchNormSpec, BilinearSpec, BinaryOp, Conv2dSpec, Coordinates, GemmSpec, Op,
    PadSpec, Padding2d, Pool2dSpec, ReduceKind, ReduceSpec, UpsampleSpec,
};
use crate::engine::{GraphDef, Tensor};

/// Operator types the importer accepts besides [`FOLDABLE`] (which it also maps to engine ops
/// where their inputs are run-time values, as far as `map` says).
const SUPPORTED: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Erf",
    "Gelu",
    "LayerNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceL2",
    "Resize",
    "Upsample",
    "Split",
    "Pad",
    "Gemm",
    "MatMul",
    "Dropout",
    "Softmax",
    "LogSoftmax",
    "Constant",
    "Shape",
    "Einsum",
];

/// What the importer knows about a value.
enum Val {
    /// Known now: folded away or turned into a parameter when an engine op reads it.
    Const(Const),
    /// Computed by the engine at run time; symbolic shape.
    Dyn(SymShape),
}

fn bad(msg: impl Into<String>) -> Problem {
    Problem::Invalid(msg.into())
}

struct Importer {
    /// Height and width for an image input whose file leaves them open.
    spatial: [usize; 2],
    opset: i64,
    vals: HashMap<String, Val>,
    def: GraphDef,
    /// Constants already added to `def.params`.
    params: HashSet<String>,
    /// How many node inputs and graph outputs read each name: a constant read once moves
    /// into its parameter instead of being copied (VGG16's weights are 528 MB).
    uses: HashMap<String, usize>,
    /// The graph input's name: the value whose batch a constant expanded to the run-time
    /// batch follows ([`Op::RepeatBatch`]).
    input: String,
}

pub fn import_graph(
    g: &GraphProto,
    opset: i64,
    base_dir: Option<&Path>,
    spatial: [usize; 2],
) -> Result<ImportedModel, Problem> {
    check_supported(g)?;
    let mut imp = Importer {
        spatial,
        opset,
        vals: HashMap::new(),
        def: GraphDef::default(),
        params: HashSet::new(),
        uses: HashMap::new(),
        input: String::new(),
    };
    for name in g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(g.output.iter().map(|o| o.name()))
    {
        *imp.uses.entry(name.to_string()).or_insert(0) += 1;
    }
    for t in &g.initializer {
        let name = t.name.clone().unwrap_or_default();
        imp.vals
            .insert(name, Val::Const(tensor::decode(t, base_dir)?));
    }
    let (input_name, input_shape) = imp.graph_input(g)?;
    for &i in &topo_order(g, &imp.vals)? {
        let n = &g.node[i];
        imp.node(n).map_err(|e| Problem::Node {
            node: node_label(n),
            op: n.op_type().to_string(),
            msg: match e {
                Problem::Invalid(m) => m,
                other => other.to_string(),
            },
        })?;
    }
    let mut output_names = Vec::new();
    for o in &g.output {
        let name = o.name().to_string();
        match imp.vals.get(&name) {
            Some(Val::Dyn(_)) => output_names.push(name),
            Some(Val::Const(_)) => {
                return Err(bad(format!("the graph output '{name}' is a constant")));
            }
            None => {
                return Err(bad(format!(
                    "the graph output '{name}' is not produced by any node"
                )));
            }
        }
    }
    imp.def.outputs = output_names.clone();
    Ok(ImportedModel {
        def: imp.def,
        input_name,
        input_shape,
        output_names,
        opset,
        metadata: Vec::new(),
    })
}

fn node_label(n: &NodeProto) -> String {
    match n.name() {
        "" => n.output.first().cloned().unwrap_or_default(),
        name => name.to_string(),
    }
}

/// Lists every node whose operator is not supported, all at once.
fn check_supported(g: &GraphProto) -> Result<(), Problem> {
    let unsupported: Vec<UnsupportedNode> = g
        .node
        .iter()
        .filter(|n| {
            let std_domain = matches!(n.domain(), "" | "ai.onnx");
            !std_domain || !(SUPPORTED.contains(&n.op_type()) || FOLDABLE.contains(&n.op_type()))
        })
        .map(|n| UnsupportedNode {
            op_type: match n.domain() {
                "" | "ai.onnx" => n.op_type().to_string(),
                d => format!("{d}.{}", n.op_type()),
            },
            node: node_label(n),
        })
        .collect();
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(Problem::Unsupported(unsupported))
    }
}

/// Node indices in dependency order (stable); names a dangling input or the nodes of a cycle.
fn topo_order(g: &GraphProto, known: &HashMap<String, Val>) -> Result<Vec<usize>, Problem> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o, i);
        }
    }
    let mut pending = vec![0usize; g.node.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(&p) = producer.get(inp.as_str()) {
                pending[i] += 1;
                consumers[p].push(i);
            } else if !known.contains_key(inp) {
                return Err(bad(format!(
                    "node '{}' ({}) reads '{inp}', which no node, initializer or input produces",
                    node_label(n),
                    n.op_type()
                )));
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..g.node.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(g.node.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &c in &consumers[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.insert(c);
            }
        }
    }
    if order.len() != g.node.len() {
        let stuck: Vec<String> = (0..g.node.len())
            .filter(|&i| pending[i] > 0)
            .map(|i| format!("'{}'", node_label(&g.node[i])))
            .collect();
        return Err(bad(format!(
            "the graph has a cycle through the nodes {}",
            stuck.join(", ")
        )));
    }
    Ok(order)
}

/// The declared symbolic shape of a graph input: dimension 0 is the batch.
/// The default height and width of an image input whose file leaves them open (ImageNet's).
pub const OPEN_SPATIAL_DEFAULT: [usize; 2] = [224, 224];

/// The graph input's shape: the batch symbolic; an image input `[n, c, h, w]` (or `[n, h, w,
/// c]` with 1 or 3 channels) whose height and width the file leaves open gets `spatial`.
fn input_shape(v: &ValueInfoProto, spatial: [usize; 2]) -> Result<SymShape, Problem> {
    let name = v.name();
    let Some(type_proto::Value::TensorType(tt)) = v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad(format!("the graph input '{name}' is not a tensor")));
    };
    if tt.elem_type() != 1 {
        return Err(bad(format!(
            "the graph input '{name}' has element type {}, only float is supported",
            tt.elem_type()
        )));
    }
    let dims = tt.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
    if dims.is_empty() {
        return Err(bad(format!(
            "the graph input '{name}' has no declared shape"
        )));
    }
    use super::proto::tensor_shape_proto::dimension::Value as D;
    let known = |i: usize| match dims.get(i).and_then(|d| d.value.as_ref()) {
        Some(D::DimValue(v)) if *v > 0 => Some(*v),
        _ => None,
    };
    // where an image's height and width sit: NCHW, or NHWC when only the last dim says 1 or 3
    let spatial_at = match (dims.len(), known(1), known(3)) {
        (4, Some(1 | 3), _) => Some(2),
        (4, _, Some(1 | 3)) => Some(1),
        (4, Some(_), _) => Some(2),
        _ => None,
    };
    dims.iter()
        .enumerate()
        .map(|(i, d)| match (i, &d.value) {
            (0, _) => Ok(Int::Batch(1)),
            (_, Some(D::DimValue(v))) if *v > 0 => Ok(Int::Known(*v)),
            // height (0) or width (1) of an image left open: the given size
            _ => match spatial_at.and_then(|at| i.checked_sub(at)).filter(|&k| k < 2) {
                Some(k) => Ok(Int::Known(spatial[k] as i64)),
                None => Err(bad(format!(
                    "the graph input '{name}' has a symbolic or zero dimension at position {i}; only the batch and an image's height and width may be left open"
                ))),
            },
        })
        .collect()
}

impl Importer {
    fn graph_input(&mut self, g: &GraphProto) -> Result<(String, Vec<usize>), Problem> {
        let inputs: Vec<&ValueInfoProto> = g
            .input
            .iter()
            .filter(|v| !self.vals.contains_key(v.name()))
            .collect();
        let [input] = inputs.as_slice() else {
            let names: Vec<&str> = inputs.iter().map(|v| v.name()).collect();
            return Err(bad(format!(
                "the graph must have exactly one input, it has {names:?}"
            )));
        };
        let sym = input_shape(input, self.spatial)?;
        let declared = shape::declared_shape(&sym);
        let name = input.name().to_string();
        self.def.inputs.push(InputDef {
            name: name.clone(),
            shape: declared.clone(),
        });
        self.vals.insert(name.clone(), Val::Dyn(sym));
        self.input = name.clone();
        Ok((name, declared))
    }

    /// Adds an engine node computing `output` (of symbolic shape `shape`) from `inputs`.
    fn push_node(
        &mut self,
        name: String,
        op: Op,
        inputs: Vec<String>,
        output: &str,
        shape: SymShape,
    ) {
        self.def.nodes.push(NodeDef {
            name,
            op,
            inputs,
            output: output.to_string(),
        });
        self.vals.insert(output.to_string(), Val::Dyn(shape));
    }

    fn konst(&self, name: &str) -> Option<&Const> {
        match self.vals.get(name) {
            Some(Val::Const(c)) => Some(c),
            _ => None,
        }
    }

    fn sym_shape(&self, name: &str) -> Result<SymShape, Problem> {
        match self.vals.get(name) {
            Some(Val::Dyn(s)) => Ok(s.clone()),
            Some(Val::Const(c)) => Ok(c.dims.iter().map(|&d| Int::Known(d as i64)).collect()),
            None => Err(bad(format!("reads the unknown value '{name}'"))),
        }
    }

    /// Makes a constant available to the engine as a parameter (once); returns its name.
    fn materialise(&mut self, name: &str, trainable: bool) -> Result<(), Problem> {
        if self.params.contains(name) {
            return Ok(());
        }
        let what = format!("tensor '{name}'");
        let c = self
            .konst(name)
            .ok_or_else(|| bad(format!("'{name}' is not a constant")))?;
        let dims = c.dims.clone();
        let data = if self.uses.get(name).copied().unwrap_or(0) <= 1 {
            // Its only reader is the node being converted: move the data into the parameter,
            // leaving the value known by shape only.
            let shape = dims.iter().map(|&d| Int::Known(d as i64)).collect();
            match self.vals.insert(name.to_string(), Val::Dyn(shape)) {
                Some(Val::Const(c)) => c.into_f32(&what)?,
                _ => return Err(bad(format!("'{name}' is not a constant"))),
            }
        } else {
            c.to_f32(&what)?
        };
        if data.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!(
                "tensor '{name}' contains NaN or infinite values"
            )));
        }
        let t = Tensor::new(dims, data).map_err(|e| bad(format!("{what}: {e}")))?;
        self.def.param(name, t, trainable);
        self.params.insert(name.to_string());
        Ok(())
    }

    /// A new scalar parameter `name` holding `v` (fixed, not trained).
    fn scalar_param(&mut self, name: &str, v: f32) -> Result<String, Problem> {
        if !self.params.contains(name) {
            let t = Tensor::new(vec![], vec![v]).map_err(|e| bad(format!("{name}: {e}")))?;
            self.def.param(name, t, false);
            self.params.insert(name.to_string());
            self.vals.insert(name.to_string(), Val::Dyn(Vec::new()));
        }
        Ok(name.to_string())
    }

    /// `Where(cond, a, b)` with a run-time input. A constant side may be ±∞ (PyTorch's
    /// `masked_fill(-inf)`): it becomes ±`f32::MAX`, which gives the same softmax weights (0)
    /// and keeps the no-infinities rule for parameters.
    fn where_(&mut self, n: &NodeProto) -> Result<(Op, Vec<String>, SymShape), Problem> {
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

    /// An engine input: a run-time value, or a constant as a parameter with the given role.
    fn value(&mut self, name: &str, trainable: bool) -> Result<(String, SymShape), Problem> {
        let s = self.sym_shape(name)?;
        if self.konst(name).is_some() {
            self.materialise(name, trainable)?;
        }
        Ok((name.to_string(), s))
    }

    fn node(&mut self, n: &NodeProto) -> Result<(), Problem> {
        let op = n.op_type();
        let attrs = Attrs::of(n);
        let out = n
            .output
            .first()
            .cloned()
            .ok_or_else(|| bad("has no output"))?;
        if op == "Constant" {
            let c = constant_value(&attrs)?;
            self.vals.insert(out, Val::Const(c));
            return Ok(());
        }
        if op == "Shape" {
            let c = self.shape_of(n, &attrs)?;
            self.vals.insert(out, Val::Const(c));
            return Ok(());
        }
        if op == "Split" {
            return self.split(n, &attrs);
        }
        let present: Vec<Option<&Const>> = n
            .input
            .iter()
            .map(|i| if i.is_empty() { None } else { self.konst(i) })
            .collect();
        let all_const = n
            .input
            .iter()
            .zip(&present)
            .all(|(i, c)| i.is_empty() || c.is_some());
        if all_const && !n.input.is_empty() && FOLDABLE.contains(&op) {
            let c = fold::fold(op, &attrs, self.opset, &present)?;
            self.vals.insert(out, Val::Const(c));
            return Ok(());
        }
        let (engine_op, inputs, shape) = self.map(n, op, &attrs)?;
        self.push_node(node_label(n), engine_op, inputs, &out, shape);
        Ok(())
    }

    /// `Shape(x)` (opset 15 `start`/`end` included), batch dimension kept symbolic.
    fn shape_of(&self, n: &NodeProto, attrs: &Attrs) -> Result<Const, Problem> {
        let s = self.sym_shape(n.input.first().map(String::as_str).unwrap_or(""))?;
        let r = s.len() as i64;
        let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (a, b) = (clampi(attrs.int("start", 0)), clampi(attrs.int("end", r)));
        let v: Vec<Int> = if a < b { s[a..b].to_vec() } else { Vec::new() };
        Ok(Const {
            dims: vec![v.len()],
            data: tensor::Data::I64(v),
        })
    }

    fn input_name<'n>(&self, n: &'n NodeProto, i: usize) -> Option<&'n str> {
        n.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn required<'n>(&self, n: &'n NodeProto, i: usize) -> Result<&'n str, Problem> {
        self.input_name(n, i)
            .ok_or_else(|| bad(format!("input {i} is missing")))
    }

    /// An optional input that must be known at import time (Clip bounds, pads, ratios).
    fn const_input(&self, n: &NodeProto, i: usize, what: &str) -> Result<Option<&Const>, Problem> {
        match self.input_name(n, i) {
            None => Ok(None),
            Some(name) => self
                .konst(name)
                .map(Some)
                .ok_or_else(|| bad(format!("{what} '{name}' must be a constant"))),
        }
    }

    /// Integers that the opset moved from attribute `name` to constant input `i` at opset
    /// `input_since` (Split's sizes at 13, ReduceMean's axes at 18); None when absent.
    fn ints_attr_or_input(
        &self,
        n: &NodeProto,
        a: &Attrs,
        name: &str,
        i: usize,
        input_since: i64,
    ) -> Result<Option<Vec<i64>>, Problem> {
        if self.opset < input_since {
            return Ok(a.ints(name));
        }
        self.const_input(n, i, &format!("the {name} input"))?
            .map(|c| c.to_i64(name))
            .transpose()
    }

    /// `Split` of a run-time value: one engine `Slice` per output (sizes from the `split`
    /// attribute before opset 13, the `split` input from 13, else `num_outputs` (opset 18) or
    /// the output count, equal parts with a smaller last one as ONNX specifies).
    fn split(&mut self, n: &NodeProto, a: &Attrs) -> Result<(), Problem> {
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

    /// `LayerNormalization` (opset 17): normalised over `axis..` (default the last axis), scale
    /// and optional bias of that trailing shape. Only its first output (the extra `Mean` and
    /// `InvStdDev` outputs are training intermediates no exporter reads).
    fn layer_norm(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(bad(
                "reads its Mean or InvStdDev output, which is not supported",
            ));
        }
        let (x, s) = self.value(self.required(n, 0)?, false)?;
        let axis = shape::axis(a.int("axis", -1), s.len())?;
        if axis == 0 {
            return Err(bad("normalises over the batch axis"));
        }
        let eps = a.float("epsilon", 1e-5);
        let (scale, _) = self.value(self.required(n, 1)?, true)?;
        let mut inputs = vec![x, scale];
        if let Some(b) = self.input_name(n, 2) {
            inputs.push(self.value(b, true)?.0);
        }
        Ok((Op::LayerNorm { axis, eps }, inputs, s))
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
    fn reduce(
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

    /// Resize (opset 10+) and Upsample (opsets 7–9), from scales or (Resize, opset 11+) target
    /// sizes, of height and width only:
    /// - `nearest` by whole factors: the nearest source of output pixel i is i / factor under
    ///   `half_pixel` and `pytorch_half_pixel` whatever the rounding mode, and under
    ///   `asymmetric` with `nearest_mode = floor` (PyTorch's nn.Upsample export);
    /// - `linear` (`bilinear` in Upsample) to any size, with `half_pixel`,
    ///   `pytorch_half_pixel`, `align_corners` or `asymmetric` coordinates (Upsample and Resize
    ///   10: asymmetric), without antialiasing.
    ///
    /// Other modes are refused by name.
    fn resize(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
        op: &str,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(self.required(n, 0)?, false)?;
        let &[batch, channels, Int::Known(h), Int::Known(w)] = s.as_slice() else {
            return Err(bad(format!(
                "resizes a value of shape {s:?}; only NCHW images of a fixed size are supported"
            )));
        };
        let mode = a.string("mode", "nearest");
        let linear = matches!(mode.as_str(), "linear" | "bilinear");
        if mode != "nearest" && !linear {
            return Err(bad(format!(
                "resizes in mode {mode:?}; only \"nearest\" and \"linear\" are supported"
            )));
        }
        let coords = if op == "Resize" && self.opset >= 11 {
            a.string("coordinate_transformation_mode", "half_pixel")
        } else {
            "asymmetric".to_string()
        };
        if !linear && op == "Resize" && self.opset >= 11 {
            let rounding = a.string("nearest_mode", "round_prefer_floor");
            let exact = matches!(coords.as_str(), "half_pixel" | "pytorch_half_pixel")
                || (coords == "asymmetric" && rounding == "floor");
            if !exact {
                return Err(bad(format!(
                    "resizes with coordinate_transformation_mode {coords:?} and nearest_mode \
                     {rounding:?}; only half_pixel, pytorch_half_pixel, or asymmetric with floor \
                     are supported"
                )));
            }
        }
        // scales: an attribute (Upsample before opset 9), input 1 (Upsample 9, Resize 10) or
        // input 2 (Resize 11+); sizes: input 3 (Resize 11+)
        let scales = match (op, self.opset) {
            ("Upsample", o) if o < 9 => a.floats("scales"),
            ("Upsample", _) | (_, 10) => self
                .const_input(n, 1, "the scales")?
                .map(|c| c.to_f32("scales"))
                .transpose()?,
            _ => self
                .const_input(n, 2, "the scales")?
                .map(|c| c.to_f32("scales"))
                .transpose()?
                .filter(|v| !v.is_empty()),
        };
        let sizes = match scales {
            Some(_) => None,
            None => {
                let sizes = self
                    .const_input(n, 3, "the sizes")?
                    .ok_or_else(|| bad("has neither scales nor sizes"))?
                    .to_i64("sizes")?;
                if sizes.len() != 4 {
                    return Err(bad(format!("has sizes {sizes:?}; four are needed")));
                }
                if matches!(channels, Int::Known(c) if c != sizes[1]) {
                    return Err(bad(format!(
                        "resizes {channels:?} channels to {}; only height and width can change",
                        sizes[1]
                    )));
                }
                Some(sizes)
            }
        };
        if let Some(v) = &scales
            && (v.len() != 4 || v[0] != 1.0 || v[1] != 1.0)
        {
            return Err(bad(format!(
                "resizes by {v:?}; only height and width can change"
            )));
        }
        if linear {
            if a.int("antialias", 0) != 0 {
                return Err(bad(
                    "resizes with antialias = 1; only antialias = 0 is supported",
                ));
            }
            let coordinates = match coords.as_str() {
                "half_pixel" => Coordinates::HalfPixel,
                "pytorch_half_pixel" => Coordinates::PytorchHalfPixel,
                "align_corners" => Coordinates::AlignCorners,
                "asymmetric" => Coordinates::Asymmetric,
                other => {
                    return Err(bad(format!(
                        "resizes linearly with coordinate_transformation_mode {other:?}; only \
                         half_pixel, pytorch_half_pixel, align_corners and asymmetric are supported"
                    )));
                }
            };
            // the output size, and the scales the coordinates use: given ones as given, else
            // out / in (ONNX's rule)
            let (out_h, out_w, scale_h, scale_w) = match (&scales, &sizes) {
                (Some(v), _) => {
                    let size = |have: i64, f: f32| (have as f64 * f as f64).floor();
                    (size(h, v[2]), size(w, v[3]), v[2], v[3])
                }
                (None, Some(z)) => (
                    z[2] as f64,
                    z[3] as f64,
                    z[2] as f32 / h.max(1) as f32,
                    z[3] as f32 / w.max(1) as f32,
                ),
                (None, None) => return Err(bad("has neither scales nor sizes")),
            };
            let fits = |v: f64| (1.0..=65_536.0).contains(&v);
            if !fits(out_h) || !fits(out_w) || h <= 0 || w <= 0 {
                return Err(bad(format!(
                    "resizes {h}x{w} pixels to {out_h}x{out_w}; sizes from 1 to 65536 are supported"
                )));
            }
            let spec = BilinearSpec {
                out_h: out_h as usize,
                out_w: out_w as usize,
                scale_h,
                scale_w,
                coordinates,
            };
            let out = vec![
                batch,
                channels,
                Int::Known(out_h as i64),
                Int::Known(out_w as i64),
            ];
            return Ok((Op::Bilinear(spec), vec![x], out));
        }
        let factors: Vec<f32> = match (scales, sizes) {
            (Some(v), _) => v,
            (None, Some(sizes)) => {
                let mut f = vec![1.0; 4];
                for (d, have) in [(2, h), (3, w)] {
                    if have <= 0 || sizes[d] < 0 || sizes[d] % have != 0 {
                        return Err(bad(format!(
                            "resizes {have} pixels to {}; only whole factors are supported",
                            sizes[d]
                        )));
                    }
                    f[d] = (sizes[d] / have) as f32;
                }
                f
            }
            (None, None) => return Err(bad("has neither scales nor sizes")),
        };
        let whole = |v: f32| v >= 1.0 && v.fract() == 0.0 && v <= 4096.0;
        if !whole(factors[2]) || !whole(factors[3]) {
            return Err(bad(format!(
                "resizes by {factors:?}; only whole factors ≥ 1 of height and width are supported \
                 in nearest mode"
            )));
        }
        let spec = UpsampleSpec {
            sh: factors[2] as usize,
            sw: factors[3] as usize,
        };
        let out = vec![
            batch,
            channels,
            Int::Known(h * spec.sh as i64),
            Int::Known(w * spec.sw as i64),
        ];
        Ok((Op::Upsample(spec), vec![x], out))
    }

    fn map(
        &mut self,
        n: &NodeProto,
        op: &str,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let x_name = self.required(n, 0)?;
        match op {
            "Conv" => self.conv(n, a),
            "BatchNormalization" => self.batch_norm(n, a),
            "MaxPool" | "AveragePool" => self.pool(n, a, op == "MaxPool"),
            "Relu" | "Sigmoid" | "Tanh" | "HardSwish" | "LeakyRelu" | "HardSigmoid" | "Clip"
            | "Erf" | "Gelu" | "Sqrt" | "Reciprocal" | "Neg" | "Pow" => {
                let act = self.activation(n, op, a)?;
                let (x, s) = self.value(x_name, false)?;
                Ok((Op::Activation(act), vec![x], s))
            }
            "Mul" | "Add" | "Sub" | "Div" | "Equal" | "Less" | "Greater" => {
                let b_op = match op {
                    "Mul" => BinaryOp::Mul,
                    "Add" => BinaryOp::Add,
                    "Sub" => BinaryOp::Sub,
                    "Div" => BinaryOp::Div,
                    "Equal" => BinaryOp::Equal,
                    "Less" => BinaryOp::Less,
                    _ => BinaryOp::Greater,
                };
                let (x, xs) = self.value(x_name, false)?;
                let (y, ys) = self.value(self.required(n, 1)?, false)?;
                let s = shape::broadcast(&xs, &ys)?;
                Ok((Op::Binary(b_op), vec![x, y], s))
            }
            // not b = (b == 0) on the 0/1 floats that comparisons give
            "Not" => {
                let (x, s) = self.value(x_name, false)?;
                let zero = self.scalar_param(&format!("{x}/not_zero"), 0.0)?;
                Ok((Op::Binary(BinaryOp::Equal), vec![x, zero], s))
            }
            "Where" => self.where_(n),
            "GlobalAveragePool" => {
                let (x, s) = self.value(x_name, false)?;
                if s.len() != 4 {
                    return Err(bad(format!("expects an NCHW input, got shape {s:?}")));
                }
                Ok((
                    Op::GlobalAvgPool,
                    vec![x],
                    vec![s[0], s[1], Int::Known(1), Int::Known(1)],
                ))
            }
            "Resize" | "Upsample" => self.resize(n, a, op),
            "ReduceSum" => self.reduce(n, a, ReduceKind::Sum),
            "ReduceMean" => self.reduce(n, a, ReduceKind::Mean),
            "ReduceMax" => self.reduce(n, a, ReduceKind::Max),
            "ReduceMin" => self.reduce(n, a, ReduceKind::Min),
            "ReduceL2" => self.reduce(n, a, ReduceKind::L2),
            "LayerNormalization" => self.layer_norm(n, a),
            "Pad" => self.pad(n, a),
            "Flatten" => {
                let (x, s) = self.value(x_name, false)?;
                let axis = shape::axis(a.int("axis", 1), s.len() + 1)?;
                let out = vec![shape::product(&s[..axis])?, shape::product(&s[axis..])?];
                Ok((Op::Flatten { axis }, vec![x], out))
            }
            "Reshape" => {
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
            "Squeeze" | "Unsqueeze" => {
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
            "Transpose" => {
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
            "Gemm" => self.gemm(n, a),
            "MatMul" => self.matmul(n),
            "Gather" => self.gather(n, a),
            "Slice" => self.slice(n, a),
            "Einsum" => self.einsum(n, a),
            "Expand" => self.expand(n),
            "Concat" => {
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
                    let same = s.len() == first.len()
                        && (0..s.len()).all(|d| d == axis || s[d] == first[d]);
                    if !same {
                        return Err(bad(format!(
                            "cannot concatenate {first:?} and {s:?} along axis {axis}"
                        )));
                    }
                    out[axis] = shape::add(out[axis], s[axis])?;
                }
                Ok((Op::Concat { axis }, names, out))
            }
            "Dropout" => {
                let p = if self.opset < 12 {
                    a.float("ratio", 0.5)
                } else {
                    match self.const_input(n, 1, "the dropout ratio")? {
                        Some(c) => c.scalar_f32("the dropout ratio")?,
                        None => 0.5,
                    }
                };
                if !(0.0..1.0).contains(&p) {
                    return Err(bad(format!("has dropout ratio {p}, outside [0, 1)")));
                }
                let (x, s) = self.value(x_name, false)?;
                Ok((Op::Dropout { p }, vec![x], s))
            }
            "Softmax" | "LogSoftmax" => {
                let (x, s) = self.value(x_name, false)?;
                let default = if self.opset < 13 { 1 } else { -1 };
                let axis = shape::axis(a.int("axis", default), s.len())?;
                // Before opset 13 Softmax flattens to 2-D at `axis`; that equals a softmax over
                // one axis only when `axis` is the last one.
                if self.opset < 13 && axis + 1 != s.len() {
                    return Err(bad(format!(
                        "with opset {} coerces its {}-D input to 2-D at axis {axis}, which only the last axis supports",
                        self.opset,
                        s.len()
                    )));
                }
                let op = if op == "Softmax" {
                    Op::Softmax { axis }
                } else {
                    Op::LogSoftmax { axis }
                };
                Ok((op, vec![x], s))
            }
            "Identity" => {
                let (x, s) = self.value(x_name, false)?;
                Ok((Op::Identity, vec![x], s))
            }
            "Cast" => {
                let to = a.int("to", 0);
                if !matches!(to, 1 | 10 | 11 | 16) {
                    return Err(bad(format!(
                        "casts a run-time tensor to data type {to}; only float is supported"
                    )));
                }
                let (x, s) = self.value(x_name, false)?;
                Ok((Op::Identity, vec![x], s))
            }
            _ => Err(bad(
                "is only supported on values known at import time (shape arithmetic)",
            )),
        }
    }

    fn activation(&self, n: &NodeProto, op: &str, a: &Attrs) -> Result<Activation, Problem> {
        Ok(match op {
            "Relu" => Activation::Relu,
            "Sigmoid" => Activation::Sigmoid,
            "Tanh" => Activation::Tanh,
            "HardSwish" => Activation::HardSwish,
            "Erf" => Activation::Erf,
            "Sqrt" => Activation::Sqrt,
            "Reciprocal" => Activation::Reciprocal,
            "Neg" => Activation::Neg,
            "Pow" => {
                let exponent = self
                    .const_input(n, 1, "the exponent")?
                    .ok_or_else(|| {
                        bad("raises to a run-time exponent; only a constant exponent is supported")
                    })?
                    .scalar_f32("the exponent")?;
                Activation::Pow { exponent }
            }
            "Gelu" => match a.string("approximate", "none").as_str() {
                "none" => Activation::Gelu { tanh: false },
                "tanh" => Activation::Gelu { tanh: true },
                other => return Err(bad(format!("has approximate={other:?} (none or tanh)"))),
            },
            "LeakyRelu" => Activation::LeakyRelu {
                alpha: a.float("alpha", 0.01),
            },
            "HardSigmoid" => Activation::HardSigmoid {
                alpha: a.float("alpha", 0.2),
                beta: a.float("beta", 0.5),
            },
            _ => {
                let (min, max) = if self.opset < 11 {
                    (
                        a.float("min", f32::NEG_INFINITY),
                        a.float("max", f32::INFINITY),
                    )
                } else {
                    let bound = |i: usize, default: f32| -> Result<f32, Problem> {
                        match self.const_input(n, i, "the Clip bound")? {
                            Some(c) => c.scalar_f32("the Clip bound"),
                            None => Ok(default),
                        }
                    };
                    (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
                };
                Activation::Clip { min, max }
            }
        })
    }

    fn conv(&mut self, n: &NodeProto, a: &Attrs) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let (w, ws) = self.value(self.required(n, 1)?, true)?;
        if xs.len() != 4 || ws.len() != 4 {
            return Err(bad(format!(
                "only 2-D convolutions are supported (input {xs:?}, weight {ws:?})"
            )));
        }
        let kernel = [
            shape::known(ws[2], "kernel height")?,
            shape::known(ws[3], "kernel width")?,
        ];
        let stride = pair(a.ints("strides"), 1, "strides")?;
        let dilation = pair(a.ints("dilations"), 1, "dilations")?;
        let groups = a.int("group", 1);
        if groups < 1 {
            return Err(bad(format!("has group {groups}")));
        }
        let padding = padding(a, &xs, kernel, stride, dilation)?;
        let out_hw = out_size(&xs, kernel, stride, dilation, padding, false)?;
        let mut inputs = vec![x, w];
        if let Some(b) = self.input_name(n, 2) {
            inputs.push(self.value(b, true)?.0);
        }
        let spec = Conv2dSpec {
            stride,
            padding,
            dilation,
            groups: groups as usize,
        };
        Ok((
            Op::Conv2d(spec),
            inputs,
            vec![xs[0], ws[0], out_hw[0], out_hw[1]],
        ))
    }

    fn batch_norm(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        if a.int("training_mode", 0) != 0 {
            return Err(bad(
                "is in training mode; only inference-mode batch norm is imported",
            ));
        }
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let mut inputs = vec![x];
        for (i, trainable) in [(1, true), (2, true), (3, false), (4, false)] {
            inputs.push(self.value(self.required(n, i)?, trainable)?.0);
        }
        // ONNX: running = momentum * running + (1 - momentum) * batch; the engine uses PyTorch's
        // convention with the weight on the batch statistic.
        let spec = BatchNormSpec {
            eps: a.float("epsilon", 1e-5),
            momentum: 1.0 - a.float("momentum", 0.9),
        };
        Ok((Op::BatchNorm2d(spec), inputs, xs))
    }

    fn pool(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
        max: bool,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        if xs.len() != 4 {
            return Err(bad(format!("only 2-D pooling is supported (input {xs:?})")));
        }
        let k = pair(Some(a.required_ints("kernel_shape")?), 1, "kernel_shape")?;
        let stride = pair(a.ints("strides"), 1, "strides")?;
        if pair(a.ints("dilations"), 1, "dilations")? != [1, 1] {
            return Err(bad(
                "has dilations other than 1, which pooling does not support",
            ));
        }
        let padding = padding(a, &xs, k, stride, [1, 1])?;
        let ceil_mode = a.int("ceil_mode", 0) != 0;
        let out_hw = out_size(&xs, k, stride, [1, 1], padding, ceil_mode)?;
        let spec = Pool2dSpec {
            kernel: k,
            stride,
            padding,
            ceil_mode,
            count_include_pad: a.int("count_include_pad", 0) != 0,
        };
        let op = if max {
            Op::MaxPool2d(spec)
        } else {
            Op::AvgPool2d(spec)
        };
        Ok((op, vec![x], vec![xs[0], xs[1], out_hw[0], out_hw[1]]))
    }

    fn pad(&mut self, n: &NodeProto, a: &Attrs) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let mode = a.string("mode", "constant");
        if mode != "constant" {
            return Err(bad(format!(
                "uses mode '{mode}'; only constant padding is supported"
            )));
        }
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let (raw, value, axes) = if self.opset < 11 {
            (a.required_ints("pads")?, a.float("value", 0.0), None)
        } else {
            let pads = self
                .const_input(n, 1, "the pads")?
                .ok_or_else(|| bad("has no pads"))?;
            let value = match self.const_input(n, 2, "the pad value")? {
                Some(c) => c.scalar_f32("the pad value")?,
                None => 0.0,
            };
            let axes = self
                .const_input(n, 3, "the pad axes")?
                .map(|c| c.to_i64("the pad axes"))
                .transpose()?;
            (pads.to_i64("the pads")?, value, axes)
        };
        let r = xs.len();
        let axes: Vec<usize> = match axes {
            Some(ax) => ax
                .iter()
                .map(|&v| shape::axis(v, r))
                .collect::<Result<_, _>>()?,
            None => (0..r).collect(),
        };
        if raw.len() != 2 * axes.len() {
            return Err(bad(format!(
                "has {} pads for {} axes",
                raw.len(),
                axes.len()
            )));
        }
        if raw.iter().any(|&p| p < 0) {
            return Err(bad(format!(
                "has negative pads {raw:?} (cropping is not supported)"
            )));
        }
        let mut pads = vec![(0usize, 0usize); r];
        let mut out = xs.clone();
        for (j, &ax) in axes.iter().enumerate() {
            let (b, e) = (raw[j], raw[j + axes.len()]);
            pads[ax] = (b as usize, e as usize);
            let total = b
                .checked_add(e)
                .ok_or_else(|| bad(format!("has pads {raw:?} that overflow")))?;
            if total > 0 {
                out[ax] = shape::add(xs[ax], Int::Known(total))
                    .map_err(|_| bad("pads the batch dimension"))?;
            }
        }
        Ok((Op::Pad(PadSpec { pads, value }), vec![x], out))
    }

    fn gemm(&mut self, n: &NodeProto, a: &Attrs) -> Result<(Op, Vec<String>, SymShape), Problem> {
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

    /// `Gather` of a run-time value at constant indices on a fixed-size axis: a scalar index
    /// is a one-entry `Slice` with the axis dropped (ViT's class token `x[:, 0]`, the `q, k, v`
    /// of a fused projection); a list of indices is one `Slice` per run of consecutive indices,
    /// concatenated.
    fn gather(&mut self, n: &NodeProto, a: &Attrs) -> Result<(Op, Vec<String>, SymShape), Problem> {
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
    fn slice(&mut self, n: &NodeProto, a: &Attrs) -> Result<(Op, Vec<String>, SymShape), Problem> {
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

    /// `Einsum` of two operands that is a batched matrix product (MaxViT's attention:
    /// `B G H I D, B G H J D -> B G H I J` and `B G H I J, B G H J D -> B G H I D`): the same
    /// leading letters in all three terms, then `i k, k j -> i j` or `i k, j k -> i j` (the
    /// second operand's last two axes swapped first). Other equations are refused with the
    /// equation named.
    fn einsum(&mut self, n: &NodeProto, a: &Attrs) -> Result<(Op, Vec<String>, SymShape), Problem> {
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

    /// `Expand` of a value to a shape known at import time: where nothing grows it is the
    /// value itself; a constant `[1, ..]` growing only along a run-time batch is repeated to the
    /// batch ([`Op::RepeatBatch`]: ViT's class token from the legacy exporter). Other
    /// broadcasts of run-time values are refused with the shapes named.
    fn expand(&mut self, n: &NodeProto) -> Result<(Op, Vec<String>, SymShape), Problem> {
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

    fn matmul(&mut self, n: &NodeProto) -> Result<(Op, Vec<String>, SymShape), Problem> {
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
}

/// The value of a `Constant` node.
fn constant_value(a: &Attrs) -> Result<Const, Problem> {
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

/// A two-element attribute (`[h, w]`), `default` for both when absent.
fn pair(v: Option<Vec<i64>>, default: usize, what: &str) -> Result<[usize; 2], Problem> {
    match v.as_deref() {
        None => Ok([default, default]),
        Some(&[h, w]) if h > 0 && w > 0 => Ok([h as usize, w as usize]),
        Some(other) => Err(bad(format!(
            "has {what} {other:?}; two positive numbers are needed"
        ))),
    }
}

/// Explicit padding from `pads` or `auto_pad` (SAME_* need the input's spatial size).
fn padding(
    a: &Attrs,
    xs: &[Int],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
) -> Result<Padding2d, Problem> {
    let auto = a.string("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => match a.ints("pads").as_deref() {
            None => Ok(Padding2d::default()),
            Some(&[t, l, b, r]) if t >= 0 && l >= 0 && b >= 0 && r >= 0 => Ok(Padding2d {
                top: t as usize,
                left: l as usize,
                bottom: b as usize,
                right: r as usize,
            }),
            Some(p) => Err(bad(format!(
                "has pads {p:?}; four non-negative numbers are needed"
            ))),
        },
        "VALID" => Ok(Padding2d::default()),
        "SAME_UPPER" | "SAME_LOWER" => {
            let upper = auto == "SAME_UPPER";
            let h = shape::known(xs[2], "the input height")?;
            let w = shape::known(xs[3], "the input width")?;
            let (top, bottom) = same_pads(h, k[0], s[0], d[0], upper);
            let (left, right) = same_pads(w, k[1], s[1], d[1], upper);
            Ok(Padding2d {
                top,
                left,
                bottom,
                right,
            })
        }
        other => Err(bad(format!("has auto_pad '{other}'"))),
    }
}

/// (begin, end) padding so that the output has ceil(n / s) positions; the odd pixel goes at
/// the end for SAME_UPPER, at the start for SAME_LOWER.
fn same_pads(n: usize, k: usize, s: usize, d: usize, upper: bool) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(n);
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

/// Spatial output size of a convolution or pooling window (PyTorch's ceil-mode rule: the last
/// window must start inside the input or its top/left padding).
fn out_size(
    xs: &[Int],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    p: Padding2d,
    ceil: bool,
) -> Result<[Int; 2], Problem> {
    let one = |n: usize,
               k: usize,
               s: usize,
               d: usize,
               before: usize,
               after: usize|
     -> Result<Int, Problem> {
        let span = (k - 1) * d + 1;
        let padded = n + before + after;
        if padded < span {
            return Err(bad(format!(
                "has a {k}x window larger than the padded input ({padded})"
            )));
        }
        let mut o = if ceil {
            (padded - span).div_ceil(s) + 1
        } else {
            (padded - span) / s + 1
        };
        if ceil && (o - 1) * s >= n + before {
            o -= 1;
        }
        Ok(Int::Known(o as i64))
    };
    let h = shape::known(xs[2], "the input height")?;
    let w = shape::known(xs[3], "the input width")?;
    Ok([
        one(h, k[0], s[0], d[0], p.top, p.bottom)?,
        one(w, k[1], s[1], d[1], p.left, p.right)?,
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_last_for_upper() {
        // 224 -> 112 with a 3x3 stride-2 window: total pad 1.
        assert_eq!(same_pads(224, 3, 2, 1, true), (0, 1));
        assert_eq!(same_pads(224, 3, 2, 1, false), (1, 0));
        assert_eq!(same_pads(7, 3, 1, 1, true), (1, 1));
    }
}
