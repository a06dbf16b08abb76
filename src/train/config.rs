//! Hyper-parameters of a training run (serde, every field defaulted).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{TrainError, TrainResult};
use crate::engine::optim::OptimizerConfig;

/// Everything [`super::fit`] needs besides the model and the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Adam 1e-3 by default.
    pub optimizer: OptimizerConfig,
    pub batch_size: usize,
    pub epochs: usize,
    /// Shuffling, dropout masks.
    pub seed: u64,
    /// Stop after this many epochs without a validation loss improvement of `min_delta`
    /// (`None`: never stop early; ignored without a validation set).
    pub patience: Option<usize>,
    pub min_delta: f32,
    /// Random horizontal flips of training images.
    pub hflip: bool,
    /// Where checkpoints go (`None`: no checkpoints).
    pub checkpoint_dir: Option<PathBuf>,
    /// Also checkpoint every this many batches (besides the end of every epoch).
    pub checkpoint_every_batches: Option<usize>,
    /// Least time between two [`super::TrainEvent::Snapshot`]s (one is always sent per epoch).
    pub snapshot_interval_ms: u64,
    /// Values whose activations on the probe image go into snapshots.
    pub probe_layers: Vec<String>,
    /// Copy every parameter into each snapshot, so that a watcher can run the model as it was
    /// (the window's Grad-CAM timeline of the probe image). Off by default: it costs a copy of
    /// the weights per snapshot.
    pub snapshot_weights: bool,
    /// A preprocessed probe image `[1, c, h, w]` for activation snapshots.
    #[serde(skip)]
    pub probe: Option<crate::engine::Tensor>,
    /// Epochs already done (set when resuming from a checkpoint).
    pub start_epoch: usize,
    /// Byte budget of the decoded-sample cache.
    pub cache_bytes: usize,
    /// A batch loss above this counts as divergence too (a healthy cross-entropy sits near
    /// ln(classes); 1e4 means logits ~1e4 on the wrong side, which only a blown-up run reaches,
    /// e.g. Adam at lr 1e6, whose values can stay finite for many steps).
    pub divergence_loss: f32,
    /// Fault injection: replace the loss gradient with NaN at this global step (0-based), to
    /// exercise divergence handling. Never set by the command line.
    #[serde(skip)]
    pub inject_nan_at_step: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::adam(1e-3),
            batch_size: 32,
            epochs: 10,
            seed: 0,
            patience: Some(5),
            min_delta: 0.0,
            hflip: false,
            checkpoint_dir: None,
            checkpoint_every_batches: None,
            snapshot_interval_ms: 250,
            probe_layers: Vec::new(),
            snapshot_weights: false,
            probe: None,
            start_epoch: 0,
            cache_bytes: 512 << 20,
            inject_nan_at_step: None,
            divergence_loss: 1e4,
        }
    }
}

impl TrainConfig {
    /// Checks what a user can get wrong, with one message each.
    pub fn validate(&self) -> TrainResult<()> {
        if self.epochs == 0 {
            return Err(TrainError::invalid(
                "--epochs must be at least 1 (0 epochs would train nothing)",
            ));
        }
        if self.batch_size == 0 {
            return Err(TrainError::invalid("the batch size must be at least 1"));
        }
        if self.checkpoint_every_batches == Some(0) {
            return Err(TrainError::invalid(
                "checkpoint interval must be at least 1 batch",
            ));
        }
        if self.divergence_loss.is_nan() || self.divergence_loss <= 0.0 {
            return Err(TrainError::invalid(
                "the divergence loss threshold must be positive",
            ));
        }
        if self.patience == Some(0) {
            return Err(TrainError::invalid("patience must be at least 1 epoch"));
        }
        self.optimizer
            .validate()
            .map_err(|e| TrainError::invalid(format!("optimiser: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_adam_1e3_batch_32() {
        let c: TrainConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.optimizer, OptimizerConfig::adam(1e-3));
        assert_eq!(c.batch_size, 32);
        assert_eq!(c, TrainConfig::default());
        let c: TrainConfig = serde_json::from_str(r#"{"epochs": 3, "batch_size": 8}"#).unwrap();
        assert_eq!((c.epochs, c.batch_size), (3, 8));
        c.validate().unwrap();
    }

    #[test]
    fn zero_epochs_and_bad_rates_are_errors() {
        let c = TrainConfig {
            epochs: 0,
            ..TrainConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("--epochs"));
        let c = TrainConfig {
            optimizer: OptimizerConfig::adam(f32::NAN),
            ..TrainConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("learning rate")
        );
    }
}
