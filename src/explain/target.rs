//! What an explanation explains: a class score. Scores are always the pre-softmax /
//! pre-sigmoid values (logits); [`ScoreHead`] finds them behind a trailing Softmax or Sigmoid.
//! For a model with a single logit, class 1 is the logit and class 0 its negation.

use std::sync::OnceLock;

use super::layout::{Layouts, PixelLayout};
use super::{ExplainError, ExplainResult};
use crate::engine::graph::ValueId;
use crate::engine::graph::fuse::{InferenceGraph, names_of};
use crate::engine::ops::Activation;
use crate::engine::{
    BackwardRequest, ForwardOptions, ForwardPass, Gradients, Graph, Keep, Op, Tensor,
};

/// The class to explain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// The model's top class for this input (for a single logit: 1 when the logit is >= 0).
    #[default]
    Top,
    Class(usize),
}

/// Where a graph's class scores are: the value holding the logits `[n, k]` (any shape whose
/// items hold `k` numbers).
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreHead {
    pub value: ValueId,
    /// Logits per batch item; 1 for a single-logit (sigmoid) model.
    pub logits: usize,
}

/// A target resolved against a model and an input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResolvedTarget {
    pub class: usize,
    /// Index into the logits (0 for a single-logit model).
    pub logit: usize,
    /// +1, or -1 for class 0 of a single-logit model.
    pub sign: f32,
}

impl ScoreHead {
    /// The logits of `graph`: its first output, or the input of the Softmax/Sigmoid producing it.
    pub fn find(graph: &Graph) -> ExplainResult<ScoreHead> {
        let mut value = *graph
            .outputs()
            .first()
            .ok_or_else(|| ExplainError::invalid("the graph has no output to explain"))?;
        while let Some(node) = graph.producer(value) {
            match node.op {
                Op::Softmax { .. }
                | Op::LogSoftmax { .. }
                | Op::Activation(Activation::Sigmoid) => value = node.inputs[0],
                _ => break,
            }
        }
        let shape = &graph.value(value).shape;
        let logits: usize = shape.iter().skip(1).product();
        if shape.is_empty() || logits == 0 {
            return Err(ExplainError::invalid(format!(
                "the score value '{}' has shape {shape:?}; expected [n, classes]",
                graph.value(value).name
            )));
        }
        Ok(ScoreHead { value, logits })
    }

    /// Number of classes: the logits, or 2 for a single logit.
    pub fn classes(&self) -> usize {
        if self.logits == 1 { 2 } else { self.logits }
    }

    pub fn resolve(&self, target: Target, logits: &[f32]) -> ExplainResult<ResolvedTarget> {
        let class = match target {
            Target::Class(c) => c,
            Target::Top if self.logits == 1 => {
                usize::from(logits.first().is_some_and(|&l| l >= 0.0))
            }
            Target::Top => argmax(logits),
        };
        if class >= self.classes() {
            return Err(ExplainError::invalid(format!(
                "target class {class} is out of range: the model has {} classes",
                self.classes()
            )));
        }
        Ok(if self.logits == 1 {
            ResolvedTarget {
                class,
                logit: 0,
                sign: if class == 1 { 1.0 } else { -1.0 },
            }
        } else {
            ResolvedTarget {
                class,
                logit: class,
                sign: 1.0,
            }
        })
    }

    /// The differentiated score y_c of one item's logits.
    pub fn score(&self, t: &ResolvedTarget, logits: &[f32]) -> f32 {
        t.sign * logits[t.logit]
    }

    /// The class probability: softmax over the logits, or sigmoid of the signed single logit.
    pub fn probability(&self, t: &ResolvedTarget, logits: &[f32]) -> f32 {
        if self.logits == 1 {
            return 1.0 / (1.0 + (-self.score(t, logits)).exp());
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
        (logits[t.logit] - max).exp() / sum
    }

    /// The seed d(sum over items of y_c)/d(logits): `sign` at each item's target logit, shaped
    /// like the logits value of the pass (`[n, ..]`).
    pub fn seed(&self, t: &ResolvedTarget, shape: &[usize]) -> ExplainResult<Tensor> {
        let mut seed = Tensor::try_zeros(shape)?;
        let per_item = self.logits;
        if seed.numel() % per_item != 0 {
            return Err(ExplainError::invalid(format!(
                "logits of shape {shape:?} do not hold {per_item} values per item"
            )));
        }
        for item in seed.data_mut().chunks_exact_mut(per_item) {
            item[t.logit] = t.sign;
        }
        Ok(seed)
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// A graph with its score head: the object every explanation method hangs off.
#[derive(Clone, Debug)]
pub struct Explainer<'g> {
    pub graph: &'g Graph,
    pub head: ScoreHead,
    /// Where each value lies on the image grid, followed through the graph once, when a
    /// method first asks (the CAM layer checks, the CAMs and rollout all read it).
    layouts: OnceLock<Layouts>,
}

impl Explainer<'_> {
    /// The images per forward pass for a batch size option: the option, or 1 for a graph that
    /// runs at its traced batch only (see [`Graph::max_batch`]).
    pub(crate) fn batch_size(&self, asked: usize) -> ExplainResult<usize> {
        Ok(super::util::check_batch(asked)?.min(self.graph.max_batch()))
    }
}

/// One forward pass and the logits of each batch item.
pub(crate) struct Scored {
    pub pass: ForwardPass,
    /// `(n, logits)` row-major.
    pub logits: Vec<f32>,
}

impl Scored {
    pub fn item(&self, i: usize, per_item: usize) -> &[f32] {
        &self.logits[i * per_item..(i + 1) * per_item]
    }
}

impl<'g> Explainer<'g> {
    pub fn new(graph: &'g Graph) -> ExplainResult<Self> {
        if graph.inputs().len() != 1 {
            return Err(ExplainError::invalid(format!(
                "explanations need a graph with one input, this one has {}",
                graph.inputs().len()
            )));
        }
        Ok(Self {
            head: ScoreHead::find(graph)?,
            graph,
            layouts: OnceLock::new(),
        })
    }

    /// The layouts of every value of the graph ([`Layouts`]).
    pub(crate) fn layouts(&self) -> &Layouts {
        self.layouts.get_or_init(|| Layouts::of(self.graph))
    }

    /// How value `v` lies on the image grid, if it does ([`Layouts::get`]).
    pub fn layout(&self, v: ValueId) -> Option<PixelLayout> {
        self.layouts().get(self.graph, v)
    }

    /// A value by name, or an error naming it.
    pub fn value(&self, name: &str) -> ExplainResult<ValueId> {
        self.graph
            .layer_value(name)
            .ok_or_else(|| ExplainError::invalid(format!("the model has no value named '{name}'")))
    }

    pub fn input_value(&self) -> ValueId {
        self.graph.inputs()[0]
    }

    /// Forward pass keeping `keep`; returns the pass and the logits of each item.
    pub(crate) fn run(&self, x: &Tensor, keep: Keep) -> ExplainResult<Scored> {
        let keep = match keep {
            Keep::Outputs => Keep::Values(vec![self.head.value]),
            Keep::Values(mut v) => {
                v.push(self.head.value);
                Keep::Values(v)
            }
            Keep::BackwardAnd(mut v) => {
                v.push(self.head.value);
                Keep::BackwardAnd(v)
            }
            Keep::All => Keep::All,
            Keep::Backward => Keep::Backward,
        };
        let opts = ForwardOptions {
            keep,
            ..ForwardOptions::eval()
        };
        let pass = self.graph.forward(std::slice::from_ref(x), &opts)?;
        let logits = pass
            .get(self.head.value)
            .ok_or_else(|| ExplainError::invalid("the forward pass lost the logits"))?
            .data()
            .to_vec();
        Ok(Scored { pass, logits })
    }

    /// Logits of every item of `x`, `(n, logits)` row-major (on the inference graph).
    pub fn logits(&self, x: &Tensor) -> ExplainResult<Vec<f32>> {
        let fast = self.fast_graph(&[])?;
        let head = self.fast_id(&fast, self.head.value)?;
        let opts = ForwardOptions {
            keep: Keep::Values(vec![head]),
            ..ForwardOptions::eval()
        };
        let pass = fast.forward(std::slice::from_ref(x), &opts)?;
        Ok(pass
            .get(head)
            .ok_or_else(|| ExplainError::invalid("the forward pass lost the logits"))?
            .data()
            .to_vec())
    }

    /// The inference rewrite of the graph (cached on the graph) keeping `values` and the
    /// logits under their names.
    pub(crate) fn fast_graph(&self, values: &[ValueId]) -> ExplainResult<InferenceGraph<'g>> {
        let mut names = names_of(self.graph, values);
        names.push(self.graph.value(self.head.value).name.clone());
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        Ok(self.graph.inference(&refs)?)
    }

    /// The id in `fast` of the value `v` of the original graph (kept values only).
    pub(crate) fn fast_id(&self, fast: &Graph, v: ValueId) -> ExplainResult<ValueId> {
        let name = &self.graph.value(v).name;
        fast.value_id(name)
            .ok_or_else(|| ExplainError::invalid(format!("internal: '{name}' was fused away")))
    }

    /// Resolves `target` for a single image.
    pub fn resolve(&self, x: &Tensor, target: Target) -> ExplainResult<ResolvedTarget> {
        let logits = self.logits(x)?;
        self.head.resolve(target, &logits[..self.head.logits])
    }

    /// Forward and backward of sum over items of y_c; gradients of `values` (and the input when
    /// listed). Returns the pass (all values kept), the gradients and the logits.
    pub(crate) fn forward_backward(
        &self,
        x: &Tensor,
        target: Option<Target>,
        resolved: Option<ResolvedTarget>,
        values: &[ValueId],
    ) -> ExplainResult<(Scored, Gradients, ResolvedTarget)> {
        // Runs on the inference graph keeping `values`; the pass and the gradients are handed
        // back under the original graph's ids.
        let fast = self.fast_graph(values)?;
        let head = self.fast_id(&fast, self.head.value)?;
        let fast_values = values
            .iter()
            .map(|&v| self.fast_id(&fast, v))
            .collect::<ExplainResult<Vec<_>>>()?;
        // the logits are read below: kept by name, whatever the fusion of the pass leaves out
        let mut keep = fast_values.clone();
        keep.push(head);
        let pass = fast.forward(
            std::slice::from_ref(x),
            &ForwardOptions::eval_for_backward_keeping(keep),
        )?;
        let logits_t = pass
            .get(head)
            .ok_or_else(|| ExplainError::invalid("the forward pass lost the logits"))?;
        let logits = logits_t.data().to_vec();
        let shape = logits_t.shape().to_vec();
        let t = match resolved {
            Some(t) => t,
            None => self
                .head
                .resolve(target.unwrap_or_default(), &logits[..self.head.logits])?,
        };
        let seed = self.head.seed(&t, &shape)?;
        let req = BackwardRequest {
            seeds: vec![(head, seed)],
            param_grads: false,
            value_grads: fast_values,
        };
        let fast_grads = fast.backward(&pass, &req)?;
        let grads = Gradients {
            values: fast_grads
                .values
                .into_iter()
                .filter_map(|(id, g)| self.graph.value_id(&fast.value(id).name).map(|o| (o, g)))
                .collect(),
            params: vec![None; self.graph.params().len()],
        };
        let pass = pass.renamed(&fast, self.graph);
        Ok((Scored { pass, logits }, grads, t))
    }

    /// The target class probability of every item of `x` (batched evaluation, no gradients).
    pub(crate) fn probabilities(&self, x: &Tensor, t: &ResolvedTarget) -> ExplainResult<Vec<f32>> {
        let logits = self.logits(x)?;
        Ok(logits
            .chunks_exact(self.head.logits)
            .map(|row| self.head.probability(t, row))
            .collect())
    }

    /// The target score y_c of every item of `x`.
    pub(crate) fn scores(&self, x: &Tensor, t: &ResolvedTarget) -> ExplainResult<Vec<f32>> {
        let logits = self.logits(x)?;
        Ok(logits
            .chunks_exact(self.head.logits)
            .map(|row| self.head.score(t, row))
            .collect())
    }
}
