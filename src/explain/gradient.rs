//! The saliency family: maps made from the gradient of the target score with respect to the
//! input. All are taken w.r.t. the (normalised) input tensor the model sees.
//!
//! - [`Explainer::saliency`]: vanilla gradient, map = max_c |dy_c/dx| / max.
//! - [`Explainer::smooth_grad`]: the gradient averaged over noisy copies of the input.
//! - [`Explainer::integrated_gradients`]: (x - x') times the gradient averaged along the
//!   straight path from a baseline x' to x (midpoint Riemann sum).
//! - [`Explainer::gradient_x_input`]: dy_c/dx * x.
//! - [`Explainer::guided_backprop`]: gradients whose negative parts are zeroed at every ReLU.
//!   **It fails the model-randomisation sanity check** (Adebayo et al. 2018): its maps barely
//!   change when the top layers are re-initialised, i.e. they show edges of the image more than
//!   what the model uses. Use it for pictures, not as evidence.
//!
//! Every method returns a [`GradientMap`]: `raw` `[c, h, w]` and `map` = max over channels of
//! |raw| divided by its maximum, in [0, 1].

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Map;
use super::target::{Explainer, ResolvedTarget, Target};
use super::util::{batch_of, gaussian_blur};
use super::{Control, ExplainError, ExplainResult, single_image_dims};
use crate::engine::graph::{ValueId, ValueKind};
use crate::engine::ops::{Activation, ForwardCtx, Saved};
use crate::engine::{Mode, Op, Tensor};

/// A gradient-based explanation of one image.
#[derive(Clone, Debug)]
pub struct GradientMap {
    /// The attribution `[c, h, w]` (the input gradient for saliency).
    pub raw: Tensor,
    /// max_c |raw| / max, `[h, w]` in [0, 1].
    pub map: Map,
    pub target: ResolvedTarget,
}

impl GradientMap {
    fn new(raw: Tensor, target: ResolvedTarget) -> ExplainResult<Self> {
        let map = Map::channel_max_abs(&raw)?.divided_by_max();
        Ok(Self { raw, map, target })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SmoothGradOptions {
    pub samples: usize,
    /// Noise standard deviation as a fraction of the input's range (max - min); 0.15 is the
    /// paper's usual value.
    pub sigma_fraction: f32,
    pub seed: u64,
    /// Noisy copies per forward/backward pass.
    pub batch: usize,
}

impl Default for SmoothGradOptions {
    fn default() -> Self {
        Self {
            samples: 25,
            sigma_fraction: 0.15,
            seed: 0,
            batch: 8,
        }
    }
}

/// The reference input of Integrated Gradients.
#[derive(Clone, Debug, PartialEq)]
pub enum Baseline {
    /// A constant value per channel. For a black image pass the normalised value of black,
    /// e.g. `-mean / std` for ImageNet preprocessing; `vec![0.0]` is the all-zero tensor.
    Fill(Vec<f32>),
    /// The input blurred with this standard deviation in pixels.
    Blurred { sigma: f32 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct IntegratedGradientsOptions {
    pub baseline: Baseline,
    pub steps: usize,
    /// Path points per forward/backward pass.
    pub batch: usize,
}

impl Default for IntegratedGradientsOptions {
    fn default() -> Self {
        Self {
            baseline: Baseline::Fill(vec![0.0]),
            steps: 32,
            batch: 8,
        }
    }
}

/// Integrated Gradients with its completeness check: the attributions sum to about
/// `input_score - baseline_score` (closer with more steps).
#[derive(Clone, Debug)]
pub struct IntegratedGradients {
    pub attribution: GradientMap,
    pub input_score: f32,
    pub baseline_score: f32,
}

/// A per-channel constant image `(c, h, w)`; one value is used for every channel.
pub(crate) fn fill_image(fill: &[f32], chw: [usize; 3]) -> ExplainResult<Vec<f32>> {
    let [c, h, w] = chw;
    if fill.len() != 1 && fill.len() != c {
        return Err(ExplainError::invalid(format!(
            "a fill needs 1 or {c} values (one per channel), got {}",
            fill.len()
        )));
    }
    Ok((0..c)
        .flat_map(|ch| std::iter::repeat_n(fill[ch % fill.len()], h * w))
        .collect())
}

impl Explainer<'_> {
    /// Gradient of y_c w.r.t. the input for every item of `x` `[n, c, h, w]` (summed seed; items
    /// are independent in evaluation mode), and the resolved target.
    pub fn input_gradient(
        &self,
        x: &Tensor,
        target: Option<Target>,
        resolved: Option<ResolvedTarget>,
    ) -> ExplainResult<(Tensor, ResolvedTarget)> {
        let input = self.input_value();
        let (_, mut grads, t) = self.forward_backward(x, target, resolved, &[input])?;
        let g = grads.values.remove(&input).ok_or_else(|| {
            ExplainError::invalid("the target score does not depend on the input")
        })?;
        Ok((g, t))
    }

    /// Vanilla saliency of one image `[1, c, h, w]`.
    pub fn saliency(&self, x: &Tensor, target: Target) -> ExplainResult<GradientMap> {
        let chw = single_image_dims(x)?;
        let (g, t) = self.input_gradient(x, Some(target), None)?;
        GradientMap::new(g.reshaped(chw.to_vec())?, t)
    }

    /// Gradient times input of one image.
    pub fn gradient_x_input(&self, x: &Tensor, target: Target) -> ExplainResult<GradientMap> {
        let chw = single_image_dims(x)?;
        let (g, t) = self.input_gradient(x, Some(target), None)?;
        let raw: Vec<f32> = g.data().iter().zip(x.data()).map(|(a, b)| a * b).collect();
        GradientMap::new(Tensor::new(chw.to_vec(), raw)?, t)
    }

    /// SmoothGrad: the mean gradient over `samples` copies of x plus N(0, sigma^2) noise.
    pub fn smooth_grad(
        &self,
        x: &Tensor,
        target: Target,
        opts: &SmoothGradOptions,
        ctl: Control,
    ) -> ExplainResult<GradientMap> {
        let chw = single_image_dims(x)?;
        let batch = self.batch_size(opts.batch)?;
        if opts.samples == 0 {
            return Err(ExplainError::invalid(
                "SmoothGrad needs at least one sample",
            ));
        }
        let t = self.resolve(x, target)?;
        let (lo, hi) = x
            .data()
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let sigma = opts.sigma_fraction * (hi - lo);
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let mut sum = vec![0.0f32; x.numel()]; // (c, h, w)
        let total = opts.samples.div_ceil(batch);
        for (b, start) in (0..opts.samples).step_by(batch).enumerate() {
            ctl.step(b, total)?;
            let count = batch.min(opts.samples - start);
            let noisy = batch_of(chw, count, |_, out| {
                for (o, &v) in out.iter_mut().zip(x.data()) {
                    *o = v + sigma * standard_normal(&mut rng);
                }
            })?;
            let (g, _) = self.input_gradient(&noisy, None, Some(t))?;
            for item in g.data().chunks_exact(sum.len()) {
                sum.iter_mut().zip(item).for_each(|(s, v)| *s += v);
            }
        }
        ctl.step(total, total)?;
        let n = opts.samples as f32;
        let raw = Tensor::new(chw.to_vec(), sum.into_iter().map(|v| v / n).collect())?;
        GradientMap::new(raw, t)
    }

    /// Integrated Gradients along the straight path from the baseline to x, `steps` midpoints
    /// x' + (k + 1/2)/steps (x - x'), batched through the batch dimension.
    pub fn integrated_gradients(
        &self,
        x: &Tensor,
        target: Target,
        opts: &IntegratedGradientsOptions,
        ctl: Control,
    ) -> ExplainResult<IntegratedGradients> {
        let chw = single_image_dims(x)?;
        let batch = self.batch_size(opts.batch)?;
        if opts.steps == 0 {
            return Err(ExplainError::invalid(
                "Integrated Gradients needs at least one step",
            ));
        }
        let [c, h, w] = chw;
        let base: Vec<f32> = match &opts.baseline {
            Baseline::Fill(fill) => fill_image(fill, chw)?,
            Baseline::Blurred { sigma } => gaussian_blur(x.data(), h, w, *sigma),
        }; // (c, h, w)
        let t = self.resolve(x, target)?;
        let base_t = Tensor::new(vec![1, c, h, w], base.clone())?;
        let baseline_score = self.scores(&base_t, &t)?[0];
        let input_score = self.scores(x, &t)?[0];
        let mut sum = vec![0.0f32; x.numel()]; // (c, h, w)
        let total = opts.steps.div_ceil(batch);
        for (b, start) in (0..opts.steps).step_by(batch).enumerate() {
            ctl.step(b, total)?;
            let count = batch.min(opts.steps - start);
            let points = batch_of(chw, count, |i, out| {
                let a = (start + i) as f32 + 0.5;
                let a = a / opts.steps as f32;
                for ((o, &xv), &bv) in out.iter_mut().zip(x.data()).zip(&base) {
                    *o = bv + a * (xv - bv);
                }
            })?;
            let (g, _) = self.input_gradient(&points, None, Some(t))?;
            for item in g.data().chunks_exact(sum.len()) {
                sum.iter_mut().zip(item).for_each(|(s, v)| *s += v);
            }
        }
        ctl.step(total, total)?;
        let n = opts.steps as f32;
        let raw: Vec<f32> = sum
            .iter()
            .zip(x.data())
            .zip(&base)
            .map(|((s, xv), bv)| (xv - bv) * s / n)
            .collect();
        Ok(IntegratedGradients {
            attribution: GradientMap::new(Tensor::new(chw.to_vec(), raw)?, t)?,
            input_score,
            baseline_score,
        })
    }

    /// Guided backpropagation of one image: the backward pass of the graph in which every
    /// ReLU-like node (Relu, Clip with min >= 0, LeakyRelu) additionally zeroes negative
    /// gradients. Runs its own forward/backward walk with `Op::forward`/`Op::backward` so the
    /// engine's semantics stay untouched. Fails the model-randomisation sanity check (module
    /// docs).
    pub fn guided_backprop(&self, x: &Tensor, target: Target) -> ExplainResult<GradientMap> {
        let chw = single_image_dims(x)?;
        let graph = self.graph;
        let input = self.input_value();
        // Forward, keeping every value and what each node saved.
        let mut values: Vec<Option<Tensor>> = vec![None; graph.values().len()];
        values[input] = Some(x.clone());
        let mut saved: Vec<Saved> = Vec::with_capacity(graph.nodes().len());
        for node in graph.nodes() {
            let ins = gather(graph, &values, &node.inputs)?;
            let ctx = ForwardCtx {
                mode: Mode::Eval,
                seed: 0,
            };
            let out = node
                .op
                .forward(&ins, ctx)
                .map_err(|e| node_err(&node.name, e))?;
            values[node.output] = Some(out.y);
            saved.push(out.saved);
        }
        let logits = values[self.head.value]
            .as_ref()
            .ok_or_else(|| ExplainError::invalid("the forward pass lost the logits"))?;
        let t = self
            .head
            .resolve(target, &logits.data()[..self.head.logits])?;
        let seed = self.head.seed(&t, logits.shape())?;

        // Which values depend on the input: only those need gradients.
        let mut needs = vec![false; graph.values().len()];
        needs[input] = true;
        for node in graph.nodes() {
            if node.inputs.iter().any(|&v| needs[v]) {
                needs[node.output] = true;
            }
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; graph.values().len()];
        grads[self.head.value] = Some(seed);
        for (n, node) in graph.nodes().iter().enumerate().rev() {
            if !needs[node.output] {
                continue;
            }
            let Some(d_y) = grads[node.output].take() else {
                continue;
            };
            let ins = gather(graph, &values, &node.inputs)?;
            let y = values[node.output]
                .as_ref()
                .ok_or_else(|| ExplainError::invalid("internal: missing node output"))?;
            let input_needs: Vec<bool> = node.inputs.iter().map(|&v| needs[v]).collect();
            let d_ins = node
                .op
                .backward_owned(&ins, y, &saved[n], d_y, &input_needs, Mode::Eval)
                .map_err(|e| node_err(&node.name, e))?;
            let guided = is_relu_like(&node.op);
            for ((&v, d), &need) in node.inputs.iter().zip(d_ins).zip(&input_needs) {
                let (Some(mut d), true) = (d, need) else {
                    continue;
                };
                if guided {
                    d.data_mut().iter_mut().for_each(|g| *g = g.max(0.0));
                }
                match &mut grads[v] {
                    Some(acc) => acc.add_assign(&d)?,
                    slot => *slot = Some(d),
                }
            }
        }
        let g = grads[input].take().ok_or_else(|| {
            ExplainError::invalid("the target score does not depend on the input")
        })?;
        GradientMap::new(g.reshaped(chw.to_vec())?, t)
    }
}

fn is_relu_like(op: &Op) -> bool {
    match op {
        Op::Activation(Activation::Relu) | Op::Activation(Activation::LeakyRelu { .. }) => true,
        Op::Activation(Activation::Clip { min, .. }) => *min >= 0.0,
        _ => false,
    }
}

fn node_err(node: &str, e: crate::engine::OpError) -> ExplainError {
    ExplainError::invalid(format!("node '{node}': {e}"))
}

/// The tensors of `ids`: parameters from the graph, the rest from `values`.
fn gather<'a>(
    graph: &'a crate::engine::Graph,
    values: &'a [Option<Tensor>],
    ids: &[ValueId],
) -> ExplainResult<Vec<&'a Tensor>> {
    ids.iter()
        .map(|&v| {
            let t = match graph.value(v).kind {
                ValueKind::Param(p) => graph.params().get(p).map(|p| &p.tensor),
                _ => values[v].as_ref(),
            };
            t.ok_or_else(|| {
                ExplainError::invalid(format!("internal: value '{}' missing", graph.value(v).name))
            })
        })
        .collect()
}

/// A standard normal draw: the first of a Box–Muller pair ([`crate::engine::rng::normal_pair`]).
pub(crate) fn standard_normal(rng: &mut ChaCha8Rng) -> f32 {
    crate::engine::rng::normal_pair(rng).0 as f32
}
