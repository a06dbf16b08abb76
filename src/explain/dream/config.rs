//! What a dream is asked for: its objective terms, parameterisation and settings, and what
//! each step reports.

use serde::{Deserialize, Serialize};

use super::{ExplainError, ExplainResult};

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
    pub(super) fn validate(&self) -> ExplainResult<()> {
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
