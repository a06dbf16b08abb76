//! What a training run reports, and how it is steered.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::metrics::ClassMetrics;
use crate::data::Skipped;
use crate::engine::Tensor;

/// One message from a training run. `epoch` counts from 1, `batch` from 1 within the epoch.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// Sizes, before the first batch.
    Started {
        epochs: usize,
        batches_per_epoch: usize,
        train_len: usize,
        val_len: usize,
        test_len: usize,
    },
    BatchDone {
        epoch: usize,
        batch: usize,
        batches: usize,
        loss: f32,
        acc: f64,
        lr: f32,
        /// Training images per second over the epoch so far (data waiting included).
        images_per_s: f64,
    },
    EpochDone(EpochStats),
    /// Throttled pictures of the model: the first convolution's weights
    /// `[c_out, c_in, kh, kw]` (a copy) and requested activations of the probe image.
    Snapshot {
        epoch: usize,
        batch: usize,
        filters: Option<Tensor>,
        activations: Vec<(String, Tensor)>,
        /// Every parameter and buffer by name, when [`super::TrainConfig::snapshot_weights`]
        /// asks for them.
        weights: Option<crate::models::Weights>,
    },
    /// A checkpoint was written (atomically) after `epochs_done` full epochs.
    Checkpoint {
        path: PathBuf,
        epochs_done: usize,
    },
    Done(Box<TrainSummary>),
    Failed(String),
}

/// The figures of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_acc: f64,
    pub val_loss: Option<f32>,
    pub val_acc: Option<f64>,
    pub seconds: f64,
}

/// Why the loop ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StopReason {
    /// All epochs ran.
    Completed,
    /// Validation loss did not improve for `patience` epochs; best after `best_epoch`.
    EarlyStopped { best_epoch: usize },
    /// [`Control::stop`] was called.
    Stopped,
}

/// The outcome of a finished run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSummary {
    pub history: Vec<EpochStats>,
    pub stop: StopReason,
    pub best_val_loss: Option<f32>,
    /// Metrics on the test set (when there is one and the run was not stopped).
    pub test: Option<ClassMetrics>,
    pub test_loss: Option<f32>,
    /// Samples that could not be loaded during the run, each once.
    pub skipped: Vec<Skipped>,
}

const RUN: u8 = 0;
const PAUSE: u8 = 1;
const STOP: u8 = 2;

/// Pause / resume / stop, checked between batches. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct Control(Arc<AtomicU8>);

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn pause(&self) {
        // never turn a stop back into a pause
        let _ = self
            .0
            .compare_exchange(RUN, PAUSE, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        let _ = self
            .0
            .compare_exchange(PAUSE, RUN, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.0.store(STOP, Ordering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.0.load(Ordering::SeqCst) == PAUSE
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst) == STOP
    }

    /// Blocks while paused; true when the run should stop.
    pub fn wait_if_paused(&self) -> bool {
        while self.is_paused() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.is_stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_wins_over_pause() {
        let c = Control::new();
        c.pause();
        assert!(c.is_paused());
        c.resume();
        assert!(!c.is_paused() && !c.is_stopped());
        c.pause();
        let other = c.clone();
        let t = std::thread::spawn(move || other.wait_if_paused());
        std::thread::sleep(Duration::from_millis(50));
        c.stop();
        assert!(t.join().unwrap_or(false));
        c.pause();
        assert!(c.is_stopped());
    }
}
