//! Data sets for training and evaluation: the built-in synthetic smiles/frowns, image folders,
//! MNIST-style IDX files, CIFAR-10 binary batches, splits, batching and augmentation.
//!
//! Every source yields single samples in the model's layout without the batch axis (`[c, h,
//! w]` or `[h, w, c]`) plus a class index; [`loader::Loader`] stacks them into batches. The
//! pipeline of one sample is the same for every source, and the same as prediction's
//! ([`preprocess`]):
//!
//! ```text
//! decode -> planes in [0, 1] -> fit to the model's preset (PIL's resize, crop) -> channels
//!        -> raw [c, h, w] in [0, 1]                                               (load_raw)
//!        -> [cache] -> augmentation (loader only) -> order, scale, mean/std, layout (finish)
//! ```
//!
//! This layer depends on `engine::Tensor` only, never on the engine's ops; `models` reads its
//! preset types and image path, never the other way round.

pub mod augment;
pub mod cifar;
pub mod decode;
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod preprocess;
pub mod rng;
pub mod synthetic;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::engine::OpError;

pub use augment::Augment;
pub use cifar::CifarSet;
pub use folder::{FolderOptions, FolderSplit, ImageFolder, Split};
pub use idx::IdxSet;
pub use loader::{Batch, BatchIter, Dataset, Loader, LoaderOptions};
pub use preprocess::{Channels, Filter, Layout, Preprocess, Resize};
pub use synthetic::{Confound, SyntheticFaces};

/// What went wrong while reading a data set. Messages name the file or folder.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DataError {
    /// A problem with one file or folder (missing, unreadable, malformed).
    #[error("{}: {msg}", path.display())]
    Path { path: PathBuf, msg: String },
    /// A problem with options or shapes that no single file is to blame for.
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub fn path(path: &Path, msg: impl Into<String>) -> Self {
        Self::Path {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

impl From<OpError> for DataError {
    fn from(e: OpError) -> Self {
        Self::Invalid(e.0)
    }
}

pub type DataResult<T> = Result<T, DataError>;

/// One sample that could not be used, with the reason (decode error, not an image, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The file, or `"<source>#<index>"` for samples that are not files.
    pub name: String,
    pub reason: String,
}
