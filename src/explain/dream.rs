//! Activation maximisation ("dream"): an image optimised with Adam to maximise a weighted sum
//! of class logits (pre-softmax) and channel means, so that classes mix by weight.
//!
//! One step of a [`Dreamer`]:
//! 1. parameters → RGB image `(3, s, s)` in [0, 1] ([`Parameterisation`]: Lucid's
//!    decorrelated-colour Fourier space with 1/f scaling, or plain pixels clamped to [0, 1]);
//! 2. a random view of it (pad, jitter, zoom, rotation) resampled to the model's input size
//!    ([`warp`]), then the model's normalisation and layout ([`input`]);
//! 3. forward and backward of `J = Σ weight · objective` to the input tensor;
//! 4. the gradient back through the view and the parameterisation, minus the gradients of the
//!    total-variation, L2 and blur penalties ([`regularise`]), and one Adam step (the engine's
//!    [`Optimizer`], so the update is PyTorch's).
//!
//! Every random draw comes from one ChaCha8 stream seeded by [`DreamConfig::seed`]: a seed
//! gives the same image bit for bit. [`Dreamer::set_targets`] keeps the image and the Adam
//! moments, so a moved weight slider continues from where the image is.
//! [`deep_dream`] amplifies a layer's activations in a photo, octave by octave.

pub mod fourier;
pub mod input;
pub mod regularise;
pub mod warp;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use self::fourier::FourierBasis;
use self::input::ModelInput;
use self::warp::{Sampler, View};
use super::gradient::standard_normal;
use super::target::{Explainer, ResolvedTarget, Target};
use super::{Control, ExplainError, ExplainResult};
use crate::engine::graph::ValueId;
use crate::engine::optim::{Optimizer, OptimizerConfig};
use crate::engine::{BackwardRequest, ForwardOptions, Graph, Keep, Param, Tensor};
use crate::models::Preprocess;
use crate::models::description::Filter;
use crate::models::preprocess::resize_f32;

/// What one term of the objective measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DreamObjective {
    /// A class's pre-softmax score (for a single-logit model, class 0 is the negated logit).
    Class(usize),
    /// The mean of one channel of a layer: over `h, w` of `[1, c, h, w]` (NCHW, as the engine
    /// keeps every 4-D value) or the single value of `[1, c]`.
    Channel { layer: String, channel: usize },
    /// The mean of the squares of a whole layer (DeepDream's objective).
    Layer { layer: String },
}

/// One weighted term of the objective. Negative weights push away.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DreamTarget {
    pub objective: DreamObjective,
    pub weight: f32,
}

impl DreamTarget {
    pub fn class(class: usize, weight: f32) -> Self {
        Self {
            objective: DreamObjective::Class(class),
            weight,
        }
    }
}

/// What a class term maximises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassScore {
    /// The pre-softmax logit: `J = Σ w · logit` (keras-vis, Lucid). One class of a mix can
    /// win outright when its logit is the easier to raise.
    #[default]
    Logit,
    /// The log-probability `logit − logsumexp(logits)` (for a single logit, log σ(±logit)):
    /// `J = Σ w · log p` is largest where the probabilities are proportional to the weights,
    /// so a mix keeps every class in it.
    LogProbability,
}

/// How the image is parameterised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Parameterisation {
    /// Lucid's default: a 1/f-scaled spectrum per decorrelated colour channel, then a sigmoid.
    Fourier,
    /// Pixel values themselves, clamped to [0, 1] after every step.
    Pixels,
}

/// Everything that shapes a dream. `Default` is the setting that passes the leopard check
/// (BENCHMARKS.md): Lucid's defaults (Fourier, lr 0.05, pad 12, jitter 8, zoom 0.95–1.05,
/// ±10°) at 224×224.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DreamConfig {
    /// Side of the square image in pixels (resampled to the model's input size).
    pub size: usize,
    /// Adam's learning rate (on the parameters).
    pub lr: f32,
    pub parameterisation: Parameterisation,
    /// What class targets maximise.
    pub class_score: ClassScore,
    /// Grey border added around the image before the view is drawn, pixels.
    pub pad: usize,
    /// Largest random shift of the view, whole pixels.
    pub jitter: usize,
    /// Random zoom range (> 1 zooms in); equal ends mean a fixed zoom.
    pub scale: (f32, f32),
    /// Largest random rotation, degrees.
    pub rotation_degrees: f32,
    /// Weight of the total-variation penalty (mean |neighbour difference|).
    pub tv_weight: f32,
    /// Weight of the L2 penalty (mean squared distance from grey).
    pub l2_weight: f32,
    /// Weight of the blur penalty (pull towards the image blurred by `blur_sigma`).
    pub blur_weight: f32,
    pub blur_sigma: f32,
    /// Standard deviation of the random initial parameters.
    pub init_sd: f32,
    pub seed: u64,
}

impl Default for DreamConfig {
    fn default() -> Self {
        Self {
            size: 224,
            lr: 0.05,
            parameterisation: Parameterisation::Fourier,
            class_score: ClassScore::Logit,
            pad: 12,
            jitter: 8,
            scale: (0.95, 1.05),
            rotation_degrees: 10.0,
            tv_weight: 0.0,
            l2_weight: 0.0,
            blur_weight: 0.0,
            blur_sigma: 0.5,
            init_sd: 0.01,
            seed: 0,
        }
    }
}

impl DreamConfig {
    fn validate(&self) -> ExplainResult<()> {
        if self.size == 0 {
            return Err(ExplainError::invalid(
                "the dream image size must be at least 1",
            ));
        }
        let finite = [
            self.lr,
            self.scale.0,
            self.scale.1,
            self.rotation_degrees,
            self.tv_weight,
            self.l2_weight,
            self.blur_weight,
            self.blur_sigma,
            self.init_sd,
        ];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(ExplainError::invalid(format!(
                "dream settings must be finite and >= 0: lr {}, scale {:?}, rotation {}, tv {}, l2 {}, blur {} (sigma {}), init sd {}",
                self.lr,
                self.scale,
                self.rotation_degrees,
                self.tv_weight,
                self.l2_weight,
                self.blur_weight,
                self.blur_sigma,
                self.init_sd
            )));
        }
        if self.scale.0 <= 0.0 || self.scale.1 < self.scale.0 {
            return Err(ExplainError::invalid(format!(
                "the dream zoom range {:?} must be positive and in order",
                self.scale
            )));
        }
        Ok(())
    }
}

/// What one step reports. Scores and probabilities are those of the view the step optimised
/// (use [`Dreamer::evaluate`] for the untransformed image).
#[derive(Clone, Debug, PartialEq)]
pub struct DreamStep {
    /// Steps taken so far (1 after the first).
    pub step: usize,
    /// `Σ weight · objective` (penalties excluded).
    pub objective: f32,
    /// Each target's unweighted value, in target order.
    pub values: Vec<f32>,
    /// `(class, probability)` of every class target, in target order.
    pub targets: Vec<(usize, f32)>,
    /// The five most probable classes, best first.
    pub top5: Vec<(usize, f32)>,
}

/// A target bound to the graph.
#[derive(Clone, Debug)]
enum Bound {
    Class(ResolvedTarget),
    Channel { value: ValueId, channel: usize },
    Layer { value: ValueId },
}

/// The optimisation state of one dream.
pub struct Dreamer<'g> {
    explainer: Explainer<'g>,
    input: ModelInput,
    config: DreamConfig,
    targets: Vec<(Bound, f32)>,
    basis: Option<FourierBasis>,
    /// One parameter holding the image's parameters (Fourier `(2, 3, s, wf)` or pixels
    /// `(3, s, s)`), so the engine's Adam keeps its moments.
    params: Vec<Param>,
    optimizer: Optimizer,
    rng: ChaCha8Rng,
    step: usize,
}

impl std::fmt::Debug for Dreamer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dreamer")
            .field("config", &self.config)
            .field("targets", &self.targets)
            .field("step", &self.step)
            .finish()
    }
}

impl<'g> Dreamer<'g> {
    /// A dream from random parameters drawn from `config.seed`.
    pub fn new(
        graph: &'g Graph,
        preprocess: &Preprocess,
        targets: Vec<DreamTarget>,
        config: DreamConfig,
    ) -> ExplainResult<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let s = config.size;
        let n = match config.parameterisation {
            Parameterisation::Fourier => 2 * 3 * s * (s / 2 + 1),
            Parameterisation::Pixels => 3 * s * s,
        };
        let sd = config.init_sd;
        let init: Vec<f32> = match config.parameterisation {
            Parameterisation::Fourier => (0..n).map(|_| sd * standard_normal(&mut rng)).collect(),
            Parameterisation::Pixels => (0..n)
                .map(|_| (0.5 + sd * standard_normal(&mut rng)).clamp(0.0, 1.0))
                .collect(),
        };
        Self::build(graph, preprocess, targets, config, init, rng)
    }

    /// A dream starting from `start` (resized to `config.size` if needed): a warm start from a
    /// previous image, or a photo to dream into.
    pub fn from_image(
        graph: &'g Graph,
        preprocess: &Preprocess,
        start: &image::RgbImage,
        targets: Vec<DreamTarget>,
        config: DreamConfig,
    ) -> ExplainResult<Self> {
        config.validate()?;
        let rgb = rgb_planes(start, config.size)?;
        let s = config.size;
        let init = match config.parameterisation {
            Parameterisation::Fourier => {
                FourierBasis::new(s, s).params_of_planes(&fourier::from_rgb(&rgb, s * s))
            }
            Parameterisation::Pixels => rgb,
        };
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Self::build(graph, preprocess, targets, config, init, rng)
    }

    fn build(
        graph: &'g Graph,
        preprocess: &Preprocess,
        targets: Vec<DreamTarget>,
        config: DreamConfig,
        init: Vec<f32>,
        rng: ChaCha8Rng,
    ) -> ExplainResult<Self> {
        config.validate()?;
        let explainer = Explainer::new(graph)?;
        let input = ModelInput::new(preprocess, graph.input_shape())?;
        let s = config.size;
        let basis =
            (config.parameterisation == Parameterisation::Fourier).then(|| FourierBasis::new(s, s));
        let shape = vec![init.len()];
        let params = vec![Param {
            name: "dream.image".into(),
            tensor: Tensor::new(shape, init)?,
            trainable: true,
        }];
        let optimizer = Optimizer::new(OptimizerConfig::adam(config.lr))?;
        let mut dreamer = Self {
            explainer,
            input,
            config,
            targets: Vec::new(),
            basis,
            params,
            optimizer,
            rng,
            step: 0,
        };
        dreamer.set_targets(targets)?;
        Ok(dreamer)
    }

    /// Replaces the objective; the image, the Adam moments, the random stream and the step
    /// count carry on, so the next step continues from the current image.
    pub fn set_targets(&mut self, targets: Vec<DreamTarget>) -> ExplainResult<()> {
        if targets.is_empty() {
            return Err(ExplainError::invalid("a dream needs at least one target"));
        }
        let bound = targets
            .iter()
            .map(|t| {
                if !t.weight.is_finite() {
                    return Err(ExplainError::invalid(format!(
                        "the weight {} of {:?} is not a finite number",
                        t.weight, t.objective
                    )));
                }
                Ok((self.bind(&t.objective)?, t.weight))
            })
            .collect::<ExplainResult<Vec<_>>>()?;
        self.targets = bound;
        Ok(())
    }

    fn bind(&self, objective: &DreamObjective) -> ExplainResult<Bound> {
        let head = &self.explainer.head;
        match objective {
            DreamObjective::Class(c) => Ok(Bound::Class(head.resolve(Target::Class(*c), &[])?)),
            DreamObjective::Channel { layer, channel } => {
                let value = self.explainer.value(layer)?;
                let shape = &self.explainer.graph.value(value).shape;
                let channels = match shape.as_slice() {
                    [_, c] | [_, c, _, _] => *c,
                    s => {
                        return Err(ExplainError::invalid(format!(
                            "layer '{layer}' has shape {s:?}; a channel objective needs [n, c] or [n, c, h, w]"
                        )));
                    }
                };
                if *channel >= channels {
                    return Err(ExplainError::invalid(format!(
                        "layer '{layer}' has {channels} channels, so channel {channel} does not exist"
                    )));
                }
                Ok(Bound::Channel {
                    value,
                    channel: *channel,
                })
            }
            DreamObjective::Layer { layer } => Ok(Bound::Layer {
                value: self.explainer.value(layer)?,
            }),
        }
    }

    pub fn config(&self) -> &DreamConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Changes Adam's learning rate; the moments are kept.
    pub fn set_lr(&mut self, lr: f32) -> ExplainResult<()> {
        self.optimizer.set_lr(lr)?;
        self.config.lr = lr;
        Ok(())
    }

    /// The current image as RGB planes `(3, s, s)` in [0, 1].
    pub fn rgb(&self) -> Vec<f32> {
        let p = self.params[0].tensor.data();
        match &self.basis {
            Some(b) => fourier::to_rgb(&b.planes(p), self.config.size * self.config.size),
            None => p.to_vec(),
        }
    }

    /// The current image, `size × size`.
    pub fn image(&self) -> image::RgbImage {
        planes_to_image(&self.rgb(), self.config.size, self.config.size)
    }

    /// One Adam step on a fresh random view.
    pub fn step(&mut self) -> ExplainResult<DreamStep> {
        let c = &self.config;
        let view = View::random(
            c.size,
            c.pad,
            c.jitter,
            c.scale,
            c.rotation_degrees,
            &mut self.rng,
        );
        let (report, grad) = self.objective_gradient(&view)?;
        let grads = vec![Some(Tensor::new(vec![grad.len()], grad)?)];
        self.optimizer.step(&mut self.params, &grads)?;
        if self.basis.is_none() {
            self.params[0]
                .tensor
                .data_mut()
                .iter_mut()
                .for_each(|v| *v = v.clamp(0.0, 1.0));
        }
        self.step += 1;
        Ok(DreamStep {
            step: self.step,
            ..report
        })
    }

    /// Scores of the untransformed image (resampled to the model's input size); no step.
    pub fn evaluate(&self) -> ExplainResult<DreamStep> {
        let s = self.config.size;
        let sampler = Sampler::new(&View::whole(s, s), [s, s], self.input.size, 0.5, false);
        let x = self.input.tensor(&sampler.apply(&self.rgb()))?;
        let (report, _) = forward_objective(
            &self.explainer,
            &self.targets,
            self.config.class_score,
            &x,
            false,
        )?;
        Ok(DreamStep {
            step: self.step,
            ..report
        })
    }

    /// The report of `view` and the descent direction for the parameters: minus the gradient
    /// of `J` plus the weighted penalty gradients, taken back through the view and the
    /// parameterisation. Public within the crate for the finite-difference tests.
    pub(crate) fn objective_gradient(&self, view: &View) -> ExplainResult<(DreamStep, Vec<f32>)> {
        let c = &self.config;
        let (s, hw) = (c.size, c.size * c.size);
        let p = self.params[0].tensor.data();
        let rgb = match &self.basis {
            Some(b) => fourier::to_rgb(&b.planes(p), hw),
            None => p.to_vec(),
        }; // (3, s, s)
        let sampler = Sampler::new(view, [s, s], self.input.size, 0.5, false);
        let x = self.input.tensor(&sampler.apply(&rgb))?;
        let (report, dx) = forward_objective(
            &self.explainer,
            &self.targets,
            self.config.class_score,
            &x,
            true,
        )?;
        let d_rgb = match dx {
            Some(dx) => sampler.adjoint(&self.input.adjoint(&dx)),
            None => vec![0.0; rgb.len()],
        };
        let mut g: Vec<f32> = d_rgb.iter().map(|v| -v).collect(); // descent, (3, s, s)
        if c.tv_weight > 0.0 {
            regularise::total_variation(&rgb, s, s, c.tv_weight, &mut g);
        }
        if c.l2_weight > 0.0 {
            regularise::l2(&rgb, c.l2_weight, &mut g);
        }
        if c.blur_weight > 0.0 {
            regularise::blur(&rgb, s, s, c.blur_sigma, c.blur_weight, &mut g);
        }
        let d_params = match &self.basis {
            Some(b) => b.planes_adjoint(&fourier::to_rgb_adjoint(&rgb, &g, hw)),
            None => g,
        };
        Ok((report, d_params))
    }

    /// The penalised objective `J − Σ weight · penalty` of `view` (for finite differences).
    #[cfg(test)]
    pub(crate) fn total_objective(&self, view: &View) -> ExplainResult<f32> {
        let c = &self.config;
        let (s, hw) = (c.size, c.size * c.size);
        let p = self.params[0].tensor.data();
        let rgb = match &self.basis {
            Some(b) => fourier::to_rgb(&b.planes(p), hw),
            None => p.to_vec(),
        };
        let sampler = Sampler::new(view, [s, s], self.input.size, 0.5, false);
        let x = self.input.tensor(&sampler.apply(&rgb))?;
        let (report, _) = forward_objective(
            &self.explainer,
            &self.targets,
            self.config.class_score,
            &x,
            false,
        )?;
        let mut sink = vec![0.0; rgb.len()];
        let tv = regularise::total_variation(&rgb, s, s, 0.0, &mut sink);
        let l2 = regularise::l2(&rgb, 0.0, &mut sink);
        Ok(report.objective - c.tv_weight * tv - c.l2_weight * l2)
    }

    /// The raw parameters (for tests and finite differences).
    pub fn params(&self) -> &[f32] {
        self.params[0].tensor.data()
    }

    #[cfg(test)]
    pub(crate) fn params_mut(&mut self) -> &mut [f32] {
        self.params[0].tensor.data_mut()
    }
}

/// Softmax of the logits (or the two probabilities of a single logit).
fn class_probabilities(logits: &[f32]) -> Vec<f32> {
    if let [l] = logits {
        let p1 = 1.0 / (1.0 + (-l).exp());
        return vec![1.0 - p1, p1];
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| (v / sum) as f32).collect()
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// ln(1 + e^v), stable for large |v|.
fn softplus(v: f32) -> f32 {
    v.max(0.0) + (-v.abs()).exp().ln_1p()
}

fn log_sum_exp(v: &[f32]) -> f32 {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + v
        .iter()
        .map(|&x| f64::from(x - max).exp())
        .sum::<f64>()
        .ln() as f32
}

/// One forward pass of `x` `[1, ..]`: the report and, with `grad`, dJ/dx for
/// `J = Σ weight · value`. Runs on the inference rewrite of the graph (batch norms folded,
/// activations fused into their convolutions; cached on the graph) keeping the targets'
/// layers: the unfused graph with every value kept spent a third of a dream step on separate
/// batch-norm and clip passes and their gradients (EfficientNet-Lite0 at AVX2).
fn forward_objective(
    explainer: &Explainer,
    targets: &[(Bound, f32)],
    class_score: ClassScore,
    x: &Tensor,
    grad: bool,
) -> ExplainResult<(DreamStep, Option<Tensor>)> {
    let head = &explainer.head;
    let layers: Vec<ValueId> = targets
        .iter()
        .filter_map(|(b, _)| match b {
            Bound::Channel { value, .. } | Bound::Layer { value } => Some(*value),
            Bound::Class(_) => None,
        })
        .collect();
    let fast = explainer.fast_graph(&layers)?;
    let graph: &Graph = &fast;
    let fast_head = explainer.fast_id(graph, head.value)?;
    let mut keep = layers
        .iter()
        .map(|&v| explainer.fast_id(graph, v))
        .collect::<ExplainResult<Vec<_>>>()?;
    keep.push(fast_head);
    let opts = if grad {
        ForwardOptions::eval_for_backward_keeping(keep)
    } else {
        ForwardOptions {
            keep: Keep::Values(keep),
            ..ForwardOptions::eval()
        }
    };
    let pass = graph.forward(std::slice::from_ref(x), &opts)?;
    let logits_t = pass
        .get(fast_head)
        .ok_or_else(|| ExplainError::invalid("the forward pass lost the logits"))?;
    let logits = logits_t.data();
    let probs = class_probabilities(logits);
    let mut seeds: Vec<(ValueId, Tensor)> = Vec::new();
    let mut values = Vec::with_capacity(targets.len());
    let mut report_targets = Vec::new();
    let mut objective = 0.0f32;
    for (bound, weight) in targets {
        let value = match bound {
            Bound::Class(t) => {
                report_targets.push((t.class, probs.get(t.class).copied().unwrap_or(0.0)));
                let score = head.score(t, logits);
                if grad {
                    let mut seed = head.seed(t, logits_t.shape())?.map(|v| v * weight);
                    if class_score == ClassScore::LogProbability {
                        // d log p / d logits = onehot − softmax; for one logit
                        // d log σ(s l) / d l = s (1 − σ(s l))
                        match logits {
                            [_] => seed.data_mut()[0] *= 1.0 - sigmoid(score),
                            _ => seed
                                .data_mut()
                                .iter_mut()
                                .zip(&probs)
                                .for_each(|(g, p)| *g -= weight * p),
                        }
                    }
                    seeds.push((fast_head, seed));
                }
                match (class_score, logits) {
                    (ClassScore::Logit, _) => score,
                    (ClassScore::LogProbability, [_]) => -softplus(-score),
                    (ClassScore::LogProbability, _) => score - log_sum_exp(logits),
                }
            }
            Bound::Channel { value, channel } => {
                let id = explainer.fast_id(graph, *value)?;
                let a = lookup(graph, &pass, id)?;
                let plane = a.numel() / a.shape()[1].max(1);
                let slice = &a.data()[channel * plane..(channel + 1) * plane];
                if grad {
                    let mut seed = Tensor::try_zeros(a.shape())?;
                    seed.data_mut()[channel * plane..(channel + 1) * plane]
                        .iter_mut()
                        .for_each(|v| *v = weight / plane as f32);
                    seeds.push((id, seed));
                }
                slice.iter().sum::<f32>() / plane as f32
            }
            Bound::Layer { value } => {
                let id = explainer.fast_id(graph, *value)?;
                let a = lookup(graph, &pass, id)?;
                let n = a.numel().max(1) as f32;
                if grad {
                    seeds.push((id, a.map(|v| weight * 2.0 * v / n)));
                }
                a.data().iter().map(|v| v * v).sum::<f32>() / n
            }
        };
        objective += weight * value;
        values.push(value);
    }
    let dx = if grad {
        let input = graph.inputs()[0];
        let req = BackwardRequest {
            seeds,
            param_grads: false,
            value_grads: vec![input],
        };
        let mut grads = graph.backward(&pass, &req)?;
        Some(match grads.values.remove(&input) {
            Some(g) => g,
            None => Tensor::try_zeros(x.shape())?,
        })
    } else {
        None
    };
    let report = DreamStep {
        step: 0,
        objective,
        values,
        targets: report_targets,
        top5: crate::models::scores::top_k(&probs, 5),
    };
    Ok((report, dx))
}

fn lookup<'a>(
    graph: &'a Graph,
    pass: &'a crate::engine::ForwardPass,
    value: ValueId,
) -> ExplainResult<&'a Tensor> {
    let t = graph.lookup(pass, value).ok_or_else(|| {
        ExplainError::invalid(format!(
            "the forward pass did not keep '{}'",
            graph.value(value).name
        ))
    })?;
    if t.rank() < 2 || t.shape()[0] != 1 {
        return Err(ExplainError::invalid(format!(
            "layer '{}' has shape {:?}; a dream objective needs batch 1 and a channel axis",
            graph.value(value).name,
            t.shape()
        )));
    }
    Ok(t)
}

/// RGB planes `(3, size, size)` in [0, 1] of an image, squashed to `size × size` with the
/// models' antialiased bilinear filter when its size differs.
pub fn rgb_planes(img: &image::RgbImage, size: usize) -> ExplainResult<Vec<f32>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(ExplainError::invalid("the start image is empty"));
    }
    let planes = image_planes(img);
    Ok(if (h, w) == (size, size) {
        planes
    } else {
        resize_f32(Filter::Bilinear, &planes, [3, h, w], [size, size])
    })
}

/// `(3, h, w)` planes in [0, 1] of an 8-bit image.
fn image_planes(img: &image::RgbImage) -> Vec<f32> {
    let hw = (img.width() * img.height()) as usize;
    let mut planes = vec![0.0f32; 3 * hw];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            planes[c * hw + i] = f32::from(px.0[c]) / 255.0;
        }
    }
    planes
}

/// `(3, h, w)` planes in [0, 1] to an 8-bit image (rounded, clamped).
pub fn planes_to_image(planes: &[f32], h: usize, w: usize) -> image::RgbImage {
    let hw = h * w;
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb(std::array::from_fn(|c| {
            (planes[c * hw + i] * 255.0).round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// How [`deep_dream`] runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeepDreamOptions {
    /// Number of scales, the smallest first; each is `octave_scale` times the previous.
    pub octaves: usize,
    pub steps_per_octave: usize,
    pub octave_scale: f32,
    /// Step size: each step moves pixels by `lr · g / mean |g|` (pixels in [0, 1]).
    pub lr: f32,
    /// Seed of the random roll applied before tiling.
    pub seed: u64,
}

impl Default for DeepDreamOptions {
    fn default() -> Self {
        Self {
            octaves: 4,
            steps_per_octave: 10,
            octave_scale: 1.4,
            lr: 0.01,
            seed: 0,
        }
    }
}

/// DeepDream (Mordvintsev et al. 2015): gradient ascent on the mean squared activation of
/// `layer`, starting from `photo`, at `octaves` scales from the smallest up; the detail dreamt
/// at one scale is carried up to the next. The model sees the image in tiles of its input size
/// after a random circular roll (so tile seams move), or stretched when the image is smaller.
/// Progress counts steps.
pub fn deep_dream(
    graph: &Graph,
    preprocess: &Preprocess,
    photo: &image::RgbImage,
    layer: &str,
    opts: &DeepDreamOptions,
    ctl: Control,
) -> ExplainResult<image::RgbImage> {
    let scale_ok = opts.octave_scale.is_finite() && opts.octave_scale >= 1.0;
    let lr_ok = opts.lr.is_finite() && opts.lr > 0.0;
    if opts.octaves == 0 || !scale_ok || !lr_ok {
        return Err(ExplainError::invalid(format!(
            "DeepDream needs at least one octave, an octave scale >= 1 and a positive step (got {}, {}, {})",
            opts.octaves, opts.octave_scale, opts.lr
        )));
    }
    let explainer = Explainer::new(graph)?;
    let input = ModelInput::new(preprocess, graph.input_shape())?;
    let value = explainer.value(layer)?;
    let targets = [(Bound::Layer { value }, 1.0f32)];
    let (h0, w0) = (photo.height() as usize, photo.width() as usize);
    if h0 == 0 || w0 == 0 {
        return Err(ExplainError::invalid("the photo is empty"));
    }
    let photo = image_planes(photo); // (3, h0, w0)
    let sizes: Vec<(usize, usize)> = (0..opts.octaves)
        .rev()
        .map(|o| {
            let f = opts.octave_scale.powi(o as i32);
            let sz = |n: usize| ((n as f32 / f).round() as usize).max(1);
            (sz(h0), sz(w0))
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let total = opts.octaves * opts.steps_per_octave;
    let (mut detail, mut prev) = (vec![0.0f32; 3 * sizes[0].0 * sizes[0].1], sizes[0]);
    let mut img = Vec::new();
    for (o, &(h, w)) in sizes.iter().enumerate() {
        let base = resize_f32(Filter::Bilinear, &photo, [3, h0, w0], [h, w]);
        let detail_here = resize_f32(Filter::Bilinear, &detail, [3, prev.0, prev.1], [h, w]);
        img = base.iter().zip(&detail_here).map(|(a, b)| a + b).collect();
        for step in 0..opts.steps_per_octave {
            ctl.step(o * opts.steps_per_octave + step, total)?;
            let g = tiled_gradient(&explainer, &input, &targets, &img, [h, w], &mut rng)?;
            let mean_abs = g.iter().map(|v| v.abs()).sum::<f32>() / g.len() as f32;
            let k = opts.lr / (mean_abs + 1e-12);
            for (p, g) in img.iter_mut().zip(&g) {
                *p = (*p + k * g).clamp(0.0, 1.0);
            }
        }
        detail = img.iter().zip(&base).map(|(a, b)| a - b).collect();
        prev = (h, w);
    }
    ctl.step(total, total)?;
    let (h, w) = prev;
    Ok(planes_to_image(&img, h, w))
}

/// dJ/d image `(3, h, w)` summed over tiles of the model's input size that cover the image
/// after a random roll (or one stretched view along an axis shorter than the model's input).
fn tiled_gradient(
    explainer: &Explainer,
    input: &ModelInput,
    targets: &[(Bound, f32)],
    img: &[f32],
    [h, w]: [usize; 2],
    rng: &mut ChaCha8Rng,
) -> ExplainResult<Vec<f32>> {
    use rand::RngExt;
    let [mh, mw] = input.size;
    // (centre, extent) of the tiles along one axis of length n for a model side m
    let mut axis = |n: usize, m: usize| -> Vec<(f32, f32)> {
        if n <= m {
            return vec![(n as f32 / 2.0, n as f32)];
        }
        let roll = rng.random_range(0..m);
        (0..n.div_ceil(m))
            .map(|k| ((roll + k * m) as f32 + m as f32 / 2.0, m as f32))
            .collect()
    };
    let (rows, cols) = (axis(h, mh), axis(w, mw));
    let mut g = vec![0.0f32; img.len()];
    for &(cy, ey) in &rows {
        for &(cx, ex) in &cols {
            let view = View {
                center: [cy, cx],
                extent: [ey, ex],
                angle: 0.0,
            };
            let sampler = Sampler::new(&view, [h, w], [mh, mw], 0.5, true);
            let x = input.tensor(&sampler.apply(img))?;
            let (_, dx) = forward_objective(explainer, targets, ClassScore::Logit, &x, true)?;
            if let Some(dx) = dx {
                let d = sampler.adjoint(&input.adjoint(&dx));
                g.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            }
        }
    }
    Ok(g)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::graph::InputDef;
    use crate::engine::ops::{Activation, Conv2dSpec, GemmSpec};
    use crate::engine::{GraphDef, Op};
    use crate::models::{Layout, Resize};

    /// x [1, 3, 6, 6] → conv 3→2 (3x3, pad 1) → tanh → global mean → linear 2→3 → softmax.
    /// Smooth everywhere, so finite differences are accurate.
    fn tiny(layout: Layout) -> (Graph, Preprocess) {
        let shape = match layout {
            Layout::Nchw => vec![1, 3, 6, 6],
            Layout::Nhwc => vec![1, 6, 6, 3],
        };
        let mut d = GraphDef {
            inputs: vec![InputDef {
                name: "x".into(),
                shape,
            }],
            outputs: vec!["probs".into()],
            ..GraphDef::default()
        };
        let w: Vec<f32> = (0..54)
            .map(|i| ((i * 29 % 17) as f32 - 8.0) / 20.0)
            .collect();
        d.param("w", Tensor::new(vec![2, 3, 3, 3], w).unwrap(), true);
        let v = vec![1.0, -0.5, -0.7, 0.9, 0.3, 0.4];
        d.param("v", Tensor::new(vec![3, 2], v).unwrap(), true);
        d.param(
            "b",
            Tensor::new(vec![3], vec![0.0, 0.1, -0.1]).unwrap(),
            true,
        );
        let conv = Conv2dSpec::stride1(1);
        let src = if layout == Layout::Nhwc {
            d.push(
                "nchw",
                Op::Transpose {
                    perm: vec![0, 3, 1, 2],
                },
                &["x"],
            );
            "nchw"
        } else {
            "x"
        };
        d.push("conv", Op::Conv2d(conv), &[src, "w"]);
        d.push("act", Op::Activation(Activation::Tanh), &["conv"]);
        d.push("gap", Op::GlobalAvgPool, &["act"]);
        d.push("flat", Op::Flatten { axis: 1 }, &["gap"]);
        d.push("logits", Op::Gemm(GemmSpec::linear()), &["flat", "v", "b"]);
        d.push("probs", Op::Softmax { axis: 1 }, &["logits"]);
        let mut p = Preprocess::imagenet().with_size([6, 6]);
        p.resize = Resize::Squash;
        p.layout = layout;
        (Graph::from_def(d).unwrap(), p)
    }

    fn targets() -> Vec<DreamTarget> {
        vec![
            DreamTarget::class(0, 0.7),
            DreamTarget::class(2, 0.3),
            DreamTarget {
                objective: DreamObjective::Channel {
                    layer: "act".into(),
                    channel: 1,
                },
                weight: 0.5,
            },
            DreamTarget {
                objective: DreamObjective::Layer {
                    layer: "conv".into(),
                },
                weight: 0.2,
            },
        ]
    }

    /// The analytic descent direction equals minus the central difference of the penalised
    /// objective, through the parameterisation, the view (rotated, zoomed, padded, 5 → 6
    /// pixels), the normalisation and the model.
    fn check_gradient(parameterisation: Parameterisation, layout: Layout, class_score: ClassScore) {
        let (g, p) = tiny(layout);
        let config = DreamConfig {
            size: 5,
            parameterisation,
            class_score,
            init_sd: if parameterisation == Parameterisation::Fourier {
                0.3
            } else {
                0.2
            },
            tv_weight: 0.05,
            l2_weight: 0.3,
            ..DreamConfig::default()
        };
        let mut d = Dreamer::new(&g, &p, targets(), config).unwrap();
        let view = View {
            center: [2.7, 2.4],
            extent: [6.2, 5.8],
            angle: 0.2,
        };
        let (_, grad) = d.objective_gradient(&view).unwrap();
        let scale = grad.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        let eps = 1e-2;
        let mut checked = 0;
        for i in (0..grad.len()).step_by(grad.len() / 17 + 1) {
            let orig = d.params()[i];
            d.params_mut()[i] = orig + eps;
            let up = d.total_objective(&view).unwrap();
            d.params_mut()[i] = orig - eps;
            let down = d.total_objective(&view).unwrap();
            d.params_mut()[i] = orig;
            let fd = -(up - down) / (2.0 * eps);
            assert!(
                (fd - grad[i]).abs() <= 2e-2 * scale + 1e-5,
                "{parameterisation:?} {layout:?} param {i}: finite difference {fd}, analytic {}",
                grad[i]
            );
            checked += 1;
        }
        assert!(checked >= 10);
    }

    #[test]
    fn fourier_gradient_of_log_probabilities_matches_finite_differences() {
        check_gradient(
            Parameterisation::Fourier,
            Layout::Nchw,
            ClassScore::LogProbability,
        );
    }

    #[test]
    fn pixel_gradient_of_logits_matches_finite_differences_nhwc() {
        check_gradient(Parameterisation::Pixels, Layout::Nhwc, ClassScore::Logit);
    }

    #[test]
    fn blur_penalty_smooths() {
        let (g, p) = tiny(Layout::Nchw);
        let config = DreamConfig {
            size: 6,
            parameterisation: Parameterisation::Pixels,
            init_sd: 0.3,
            blur_weight: 1000.0,
            ..DreamConfig::default()
        };
        let mut d = Dreamer::new(&g, &p, vec![DreamTarget::class(0, 0.0)], config).unwrap();
        let mut sink = vec![0.0; 108];
        let tv0 = regularise::total_variation(&d.rgb(), 6, 6, 0.0, &mut sink);
        for _ in 0..5 {
            d.step().unwrap();
        }
        let tv1 = regularise::total_variation(&d.rgb(), 6, 6, 0.0, &mut sink);
        assert!(tv1 < 0.8 * tv0, "total variation {tv0} -> {tv1}");
    }
}
