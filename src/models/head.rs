//! Fine-tuning: replacing a model's classifier with a fresh fully connected layer of `k`
//! classes (an imported ImageNet network re-aimed at a small data set).
//!
//! The classifier is the last layer before the output: a `Gemm` (PyTorch's Linear, ONNX
//! Gemm) or tf2onnx's Dense as `MatMul` + `Add`, optionally followed by `Softmax`, `Identity`
//! or `Dropout`. Those trailing nodes are dropped (training wants logits) and the classifier
//! becomes `Gemm(x, head.weight [k, in], head.bias [k])` with PyTorch's Linear init. The
//! rest of the graph and its weights are unchanged.

use std::collections::HashSet;

use super::description::{ParamDesc, weights_of};
use super::{Model, ModelError};
use crate::engine::graph::NodeDef;
use crate::engine::ops::GemmSpec;
use crate::engine::ops::elementwise::BinaryOp;
use crate::engine::{Op, init};

/// How to replace the head.
#[derive(Clone, Copy, Debug)]
pub struct NewHead {
    /// Output classes of the new layer (2 or more: softmax cross-entropy).
    pub classes: usize,
    /// Seeds the new layer's weights.
    pub seed: u64,
    /// Mark every other parameter as not trainable (train the new head only).
    pub freeze_backbone: bool,
}

/// The classifier found at the end of a description.
struct Classifier {
    /// Indices of the nodes to remove (classifier and trailing nodes).
    remove: Vec<usize>,
    /// The classifier's input value (features `[n, in]`).
    features: String,
    /// Parameters only the removed nodes read.
    old_params: Vec<String>,
    /// Input features `in`.
    in_features: usize,
}

fn no_head(msg: impl Into<String>) -> ModelError {
    ModelError::Other(format!("cannot replace the classifier: {}", msg.into()))
}

/// Walks back from the single output past Softmax/Identity/Dropout to the classifier.
fn find_classifier(model: &Model) -> Result<Classifier, ModelError> {
    let d = &model.description;
    let [out] = d.outputs.as_slice() else {
        return Err(no_head(format!(
            "the model has {} outputs, not one",
            d.outputs.len()
        )));
    };
    let producer = |value: &str| d.nodes.iter().position(|n| n.output == value);
    let is_param = |name: &str| d.params.iter().any(|p| p.name == name);
    let shape_of = |name: &str| d.params.iter().find(|p| p.name == name).map(|p| &p.shape);
    let mut remove = Vec::new();
    let mut at = producer(out).ok_or_else(|| no_head("no node produces the output"))?;
    while matches!(
        d.nodes[at].op,
        Op::Softmax { .. } | Op::LogSoftmax { .. } | Op::Identity | Op::Dropout { .. }
    ) {
        remove.push(at);
        let input = &d.nodes[at].inputs[0];
        at = producer(input).ok_or_else(|| no_head(format!("no node produces '{input}'")))?;
    }
    let node = &d.nodes[at];
    let (features, weight, trans_b, bias) = match &node.op {
        Op::Gemm(spec) if !spec.trans_a && node.inputs.len() >= 2 && is_param(&node.inputs[1]) => (
            node.inputs[0].clone(),
            node.inputs[1].clone(),
            spec.trans_b,
            node.inputs.get(2).cloned(),
        ),
        // tf2onnx's Dense: MatMul(x, w [in, out]) then Add(., b).
        Op::Binary(BinaryOp::Add) => {
            let (mm_out, b) = match (is_param(&node.inputs[0]), is_param(&node.inputs[1])) {
                (false, true) => (&node.inputs[0], &node.inputs[1]),
                (true, false) => (&node.inputs[1], &node.inputs[0]),
                _ => {
                    return Err(no_head(format!(
                        "the last layer '{}' is an Add of two run-time values, not a dense layer",
                        node.name
                    )));
                }
            };
            let mm = producer(mm_out)
                .filter(|&i| d.nodes[i].op == Op::MatMul && is_param(&d.nodes[i].inputs[1]))
                .ok_or_else(|| {
                    no_head(format!(
                        "the last layer '{}' is not a dense layer (MatMul + Add)",
                        node.name
                    ))
                })?;
            remove.push(mm);
            (
                d.nodes[mm].inputs[0].clone(),
                d.nodes[mm].inputs[1].clone(),
                false,
                Some(b.clone()),
            )
        }
        op => {
            return Err(no_head(format!(
                "the output comes from '{}' ({}), not from a fully connected layer (Gemm, or MatMul + Add)",
                node.name,
                op.kind_name()
            )));
        }
    };
    remove.push(at);
    let w_shape =
        shape_of(&weight).ok_or_else(|| no_head(format!("'{weight}' is not a parameter")))?;
    let in_features = match w_shape.as_slice() {
        [o, i] => {
            if trans_b {
                *i
            } else {
                *o
            }
        }
        s => {
            return Err(no_head(format!(
                "the classifier weight '{weight}' has shape {s:?}, not [out, in]"
            )));
        }
    };
    // Parameters read by a kept node stay (shared weights are unusual but legal).
    let kept_reads: HashSet<&str> = d
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !remove.contains(i))
        .flat_map(|(_, n)| n.inputs.iter().map(String::as_str))
        .collect();
    let old_params = std::iter::once(weight)
        .chain(bias)
        .filter(|p| is_param(p) && !kept_reads.contains(p.as_str()))
        .collect();
    Ok(Classifier {
        remove,
        features,
        old_params,
        in_features,
    })
}

/// A name not yet used by any parameter or value of the description.
fn fresh_name(model: &Model, base: &str) -> String {
    let d = &model.description;
    let taken = |n: &str| {
        d.params.iter().any(|p| p.name == n)
            || d.nodes.iter().any(|x| x.output == n || x.name == n)
            || d.inputs.iter().any(|i| i.name == n)
    };
    let mut name = base.to_string();
    let mut k = 1;
    while taken(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// `model` with its classifier replaced by a fresh `Gemm` of `head.classes` outputs (see the
/// module doc). Labels are reset to `class 0..k-1` (training sets them from the data).
pub fn replace_head(model: Model, head: NewHead) -> Result<Model, ModelError> {
    if head.classes < 2 {
        return Err(no_head(format!(
            "a new head needs at least 2 classes, {} were asked for",
            head.classes
        )));
    }
    let found = find_classifier(&model)?;
    let w_name = fresh_name(&model, "head.weight");
    let b_name = fresh_name(&model, "head.bias");
    let out_name = fresh_name(&model, "head.logits");
    let mut rng = init::rng(head.seed);
    let w_shape = [head.classes, found.in_features];
    let err = |e: crate::engine::OpError| no_head(e.to_string());
    let w = init::torch_default_weight(&w_shape, &mut rng).map_err(err)?;
    let b = init::torch_default_bias(&w_shape, &mut rng).map_err(err)?;

    let mut weights = weights_of(&model.graph);
    let mut d = model.description;
    for p in &found.old_params {
        weights.remove(p);
    }
    d.params.retain(|p| !found.old_params.contains(&p.name));
    if head.freeze_backbone {
        for p in &mut d.params {
            p.trainable = false;
        }
    }
    d.params.push(ParamDesc {
        name: w_name.clone(),
        shape: w_shape.to_vec(),
        trainable: true,
    });
    d.params.push(ParamDesc {
        name: b_name.clone(),
        shape: vec![head.classes],
        trainable: true,
    });
    weights.insert(w_name.clone(), w);
    weights.insert(b_name.clone(), b);
    d.nodes = d
        .nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !found.remove.contains(i))
        .map(|(_, n)| n)
        .collect();
    d.nodes.push(NodeDef {
        name: out_name.clone(),
        op: Op::Gemm(GemmSpec::linear()),
        inputs: vec![found.features, w_name, b_name],
        output: out_name.clone(),
    });
    d.outputs = vec![out_name];
    d.labels = (0..head.classes).map(|k| format!("class {k}")).collect();
    let graph = d.build(weights)?;
    Ok(Model {
        description: d,
        graph,
    })
}
