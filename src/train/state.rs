//! Resumable checkpoints: the model checkpoint (atomic, `models::save_checkpoint`) plus
//! `train_state.json` beside its files: epochs done, early-stopping state and the config.
//!
//! What is saved: parameters (with batch norm statistics) and the loop's position. What is not:
//! the optimiser's moments (the engine's `Optimizer` keeps them private), so a resumed Adam run
//! starts its moments afresh; this costs a few noisy steps, not correctness.
//!
//! The state file is written after the checkpoint (temporary file, fsync, rename), and carries a
//! digest of the parameters it belongs to. A crash between the two writes leaves a checkpoint
//! whose state file names other weights: [`load`] then reports no state rather than a wrong one.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use crate::models::{self, Model, ModelDescription, ModelError, Weights};

pub const STATE_FILE: &str = "train_state.json";

/// Where a run stood when its checkpoint was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Complete epochs the weights have seen (a mid-epoch checkpoint resumes that epoch anew).
    pub epochs_done: usize,
    pub best_val_loss: Option<f32>,
    pub best_epoch: Option<usize>,
    pub bad_epochs: usize,
    pub config: TrainConfig,
    /// FNV-1a of the parameters, in description order (set by [`save`]).
    pub weights_digest: String,
}

/// FNV-1a 64 over names, shapes and f32 bits of the parameters in `order`.
fn digest<'a>(tensors: impl Iterator<Item = (&'a str, &'a crate::engine::Tensor)>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, t) in tensors {
        eat(name.as_bytes());
        t.shape().iter().for_each(|d| eat(&d.to_le_bytes()));
        t.data()
            .iter()
            .for_each(|v| eat(&v.to_bits().to_le_bytes()));
    }
    format!("{h:016x}")
}

fn digest_weights(description: &ModelDescription, weights: &Weights) -> String {
    digest(
        description
            .params
            .iter()
            .filter_map(|p| weights.get(&p.name).map(|t| (p.name.as_str(), t))),
    )
}

/// Saves the checkpoint, then its state.
pub fn save(dir: &Path, model: &Model, mut state: TrainState) -> Result<(), ModelError> {
    models::save_model(dir, model)?;
    state.weights_digest = digest(
        model
            .graph
            .params()
            .iter()
            .map(|p| (p.name.as_str(), &p.tensor)),
    );
    let text = serde_json::to_string_pretty(&state)
        .map_err(|e| ModelError::Other(format!("cannot encode the training state: {e}")))?;
    let path = dir.join(STATE_FILE);
    crate::io::write_atomically(&path, text.as_bytes())
        .map_err(|e| ModelError::file(&path, format!("cannot write the training state ({e})")))
}

/// Loads a checkpoint and, when present and matching its weights, its training state.
pub fn load(dir: &Path) -> Result<(Model, Option<TrainState>), ModelError> {
    let (description, weights) = models::load_checkpoint(dir)?;
    let state = fs::read_to_string(dir.join(STATE_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<TrainState>(&t).ok())
        .filter(|s| s.weights_digest == digest_weights(&description, &weights));
    let graph = description.build(weights)?;
    Ok((Model { description, graph }, state))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tiny_model() -> Model {
        let (d, w) = models::smile_cnn(&models::SmileCnnConfig::default(), 1).unwrap();
        let graph = d.build(w).unwrap();
        Model {
            description: d,
            graph,
        }
    }

    fn state(epochs_done: usize) -> TrainState {
        TrainState {
            epochs_done,
            best_val_loss: Some(0.5),
            best_epoch: Some(1),
            bad_epochs: 0,
            config: TrainConfig::default(),
            weights_digest: String::new(),
        }
    }

    #[test]
    fn state_round_trips_and_must_match_the_weights() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ck");
        let mut model = tiny_model();
        save(&dir, &model, state(3)).unwrap();
        let (_, st) = load(&dir).unwrap();
        assert_eq!(st.unwrap().epochs_done, 3);
        // new weights saved without a state update: the stale state is not trusted
        let state_text = fs::read_to_string(dir.join(STATE_FILE)).unwrap();
        model.graph.params_mut()[0].tensor.data_mut()[0] += 1.0;
        save(&dir, &model, state(4)).unwrap();
        fs::write(dir.join(STATE_FILE), state_text).unwrap();
        let (_, st) = load(&dir).unwrap();
        assert!(st.is_none());
    }
}
