//! The training loop and its metrics. Knows graphs, data sets and checkpoints; knows nothing of
//! display: progress leaves as [`TrainEvent`]s (over a channel when run by [`runner::spawn`]),
//! and a [`Control`] handle pauses, resumes or stops between batches.
//!
//! ```text
//! TrainData (train / val / test Dataset) + Model (description + Graph) + TrainConfig
//!   --fit--> per batch: forward(train) -> loss (BCE-with-logits for one logit, softmax CE for k)
//!            -> backward -> finite check -> optimiser step -> running stats
//!            per epoch: eval on val -> early stopping -> atomic checkpoint (+ train_state.json)
//!   --> TrainSummary (history, stop reason, test metrics)
//! ```
//!
//! A run whose loss, gradients or parameters become NaN or infinite stops with
//! [`TrainError::Diverged`]; no checkpoint is ever written from non-finite parameters, so the
//! last one on disk stays the last good one.

pub mod arch;
pub mod config;
pub mod data;
pub mod events;
pub mod metrics;
pub mod runner;
pub mod state;
pub mod trainer;

use thiserror::Error;

pub use config::TrainConfig;
pub use data::{DataSpec, TrainData};
pub use events::{Control, EpochStats, StopReason, TrainEvent, TrainSummary};
pub use metrics::{ClassMetrics, Misclassified};
pub use runner::{TrainHandle, spawn};
pub use trainer::{Head, evaluate, fit};

/// Why training could not start or did not finish. Messages are one sentence for the user.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TrainError {
    /// Bad configuration, model or data (nothing was trained).
    #[error("{0}")]
    Invalid(String),
    /// The loss, a gradient or a parameter became NaN or infinite.
    #[error("{0}")]
    Diverged(String),
    /// Any other failure while running (data, graph, checkpoint).
    #[error("{0}")]
    Failed(String),
}

impl TrainError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    pub fn failed(msg: impl std::fmt::Display) -> Self {
        Self::Failed(msg.to_string())
    }
}

pub type TrainResult<T> = Result<T, TrainError>;
