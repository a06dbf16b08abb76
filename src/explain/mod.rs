//! Explanations of a model's decision, all on top of [`engine::Graph`](crate::engine::Graph):
//! activations, the saliency family ([`gradient`]), the CAM family ([`cam`]), occlusion
//! ([`occlusion`]) and faithfulness metrics ([`faithfulness`]).
//!
//! Everything starts from an [`Explainer`] (a graph plus where its class scores are) and an
//! input tensor `[n, c, h, w]` of the graph's input shape (batch 1 for maps). Maps come back as
//! [`Map`]s `[h, w]`: the normalised one at the input's resolution in [0, 1], and the raw one
//! (for CAM methods at the layer's resolution, for gradient methods the input gradient
//! `[c, h, w]`). The CLI and the GUI call the same functions; long-running ones take a
//! [`Control`] (progress callback and cancel flag) checked between batches.

pub mod activations;
pub mod cam;
pub mod dream;
pub mod faithfulness;
pub mod gradient;
pub mod layout;
pub mod method;
pub mod microscope;
pub mod occlusion;
pub mod rollout;
pub mod target;
mod util;

use std::sync::atomic::{AtomicBool, Ordering};

use thiserror::Error;

use crate::engine::{GraphError, OpError, Tensor};

pub use crate::engine::Map;
pub use method::{Explanation, FaithfulnessScores, Method, MethodOptions};
pub use target::{Explainer, ResolvedTarget, ScoreHead, Target};

#[derive(Debug, Error)]
pub enum ExplainError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{0}")]
    Op(#[from] OpError),
    #[error("{0}")]
    Invalid(String),
    #[error("the computation was cancelled")]
    Cancelled,
}

impl ExplainError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

pub type ExplainResult<T> = Result<T, ExplainError>;

/// How far a long computation is: `done` of `total` units (batches, samples or steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// Progress reporting and cancellation for long computations. `Control::default()` does
/// neither. The callback runs on the computing thread: keep it cheap (send on a channel).
#[derive(Clone, Copy, Default)]
pub struct Control<'a> {
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    pub cancel: Option<&'a AtomicBool>,
}

impl std::fmt::Debug for Control<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel.map(|c| c.load(Ordering::Relaxed)))
            .finish()
    }
}

impl Control<'_> {
    /// Reports progress and returns `Err(Cancelled)` when the cancel flag is set.
    pub fn step(&self, done: usize, total: usize) -> ExplainResult<()> {
        if let Some(report) = self.progress {
            report(Progress { done, total });
        }
        match self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(ExplainError::Cancelled),
            _ => Ok(()),
        }
    }
}

/// `[c, h, w]` of a batch-1 image tensor `[1, c, h, w]`, or an error naming its shape.
pub(crate) fn single_image_dims(x: &Tensor) -> ExplainResult<[usize; 3]> {
    match x.shape() {
        &[1, c, h, w] if c > 0 && h > 0 && w > 0 => Ok([c, h, w]),
        s => Err(ExplainError::invalid(format!(
            "an explanation takes one image [1, c, h, w], got shape {s:?}"
        ))),
    }
}
