//! Walks an ONNX graph and maps each node onto the engine's ops (or folds it at import).
//!
//! This file holds the walk itself (order, graph input and outputs, constants and parameters)
//! and the `map` dispatch; the ops are converted by family in `nn`, `array` and `math`.

mod array;
mod math;
mod nn;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use self::array::constant_value;
use super::attrs::Attrs;
use super::fold::{self, FOLDABLE};
use super::proto::{GraphProto, NodeProto, ValueInfoProto, type_proto};
use super::shape::{self, SymShape};
use super::tensor::{self, Const, Int};
use super::{ImportedModel, Problem, UnsupportedNode};
use crate::engine::graph::{InputDef, NodeDef};
use crate::engine::ops::{BinaryOp, Op, ReduceKind};
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
            "Reshape" => self.reshape(n, a, x_name),
            "Squeeze" | "Unsqueeze" => self.squeeze(n, a, op, x_name),
            "Transpose" => self.transpose(a, x_name),
            "Gemm" => self.gemm(n, a),
            "MatMul" => self.matmul(n),
            "Gather" => self.gather(n, a),
            "Slice" => self.slice(n, a),
            "Einsum" => self.einsum(n, a),
            "Expand" => self.expand(n),
            "Concat" => self.concat(n, a),
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
            "Softmax" | "LogSoftmax" => self.softmax(a, op, x_name),
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
}
