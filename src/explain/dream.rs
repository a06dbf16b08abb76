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
//!
//! Children: `config` (what a dream is asked for and what a step reports), `objective` (one
//! step's forward and backward of the objective), `deep` (DeepDream), and the image machinery
//! (`fourier`, `warp`, `input`, `regularise`); this file holds the [`Dreamer`] itself.

mod config;
mod deep;
pub mod fourier;
pub mod input;
mod objective;
pub mod regularise;
pub mod warp;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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

pub use config::{
    ClassScore, DreamConfig, DreamObjective, DreamStep, DreamTarget, Parameterisation,
};
pub use deep::{DeepDreamOptions, deep_dream};
use objective::forward_objective;

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
