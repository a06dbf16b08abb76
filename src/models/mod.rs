//! Building and loading graphs: presets, the RON model description, safetensors checkpoints.

pub mod bundled;
pub mod checkpoint;
pub mod description;
pub mod head;
pub mod labels;
pub mod onnx;
pub mod preprocess;
pub mod presets;
pub mod scores;
pub mod summary;
pub mod torchvision;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::engine::GraphError;

pub use checkpoint::{load_checkpoint, load_model, save_checkpoint, save_model};
pub use description::{Channels, Layout, ModelDescription, ParamDesc, Preprocess, Resize, Weights};
pub use presets::{BUNDLED, SmileCnnConfig, bundled, smile_cnn};

/// Why a model could not be described, built, saved or loaded. Messages name the file or the
/// tensor concerned.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A problem with one file (missing, unreadable, malformed).
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A weight that does not fit the description.
    #[error("weight '{name}': {msg}")]
    Weight { name: String, msg: String },
    #[error("{0}")]
    Graph(#[from] GraphError),
    #[error("{0}")]
    Other(String),
}

impl ModelError {
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        Self::File {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn weight(name: &str, msg: impl Into<String>) -> Self {
        Self::Weight {
            name: name.to_string(),
            msg: msg.into(),
        }
    }
}

/// A model ready to run: its description (preprocessing, labels) and its validated graph.
#[derive(Clone, Debug)]
pub struct Model {
    pub description: ModelDescription,
    pub graph: crate::engine::Graph,
}
