//! What an imported model's input and outputs mean: its preprocessing and class labels, kept in
//! a RON sidecar beside the file (`model.onnx` → `model.preset.ron`), or guessed from the input
//! and output shapes when there is none.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ModelError;
use super::description::{Channels, Layout, Preprocess, Resize};

/// The ImageNet-1k class names in index order (torchvision's list; 0 = tench).
pub const IMAGENET_CLASSES: &str = include_str!("../../assets/models/imagenet_classes.txt");

/// The 1,000 ImageNet class names.
pub fn imagenet_labels() -> Vec<String> {
    IMAGENET_CLASSES.lines().map(str::to_string).collect()
}

/// Preprocessing and labels of a model that does not carry them itself (ONNX files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPreset {
    pub preprocess: Preprocess,
    /// Class names in output order; empty when unknown.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Where a model's preset came from (reported by `summary`).
#[derive(Clone, Debug, PartialEq)]
pub enum PresetOrigin {
    /// Part of the model (a checkpoint's `model.ron`, a bundled model).
    Builtin,
    /// Read from this sidecar file.
    Sidecar(PathBuf),
    /// Guessed from the shapes; `--write-preset` saves it for editing.
    Guessed,
    /// torchvision's evaluation transform of the model the file names (name and weights).
    Torchvision(String),
}

impl std::fmt::Display for PresetOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin => f.write_str("built in"),
            Self::Sidecar(p) => write!(f, "from {}", p.display()),
            Self::Guessed => f.write_str("guessed from the shapes"),
            Self::Torchvision(m) => write!(f, "torchvision's transform for {m}, named by the file"),
        }
    }
}

impl ModelPreset {
    /// A guess from the model's input shape (batch first) and its number of outputs per
    /// example: rank-4 inputs whose last dimension is 1 or 3 (and second is not) are NHWC
    /// (Keras exports); 1000 or 1001 outputs at any size mean an ImageNet classifier
    /// (torchvision's evaluation transform, ImageNet labels, a leading "background" for 1001);
    /// anything else gets x/255 squashed to the input size and no labels.
    pub fn guess(input_shape: &[usize], outputs: usize) -> Self {
        let (size, layout, c) = match *input_shape {
            [_, c, h, w] if matches!(c, 1 | 3) => ([h, w], Layout::Nchw, c),
            [_, h, w, c] if matches!(c, 1 | 3) => ([h, w], Layout::Nhwc, c),
            [_, c, h, w] => ([h, w], Layout::Nchw, c),
            _ => ([224, 224], Layout::Nchw, 3),
        };
        let channels = if c == 1 {
            Channels::Gray
        } else {
            Channels::Rgb
        };
        let (mut preprocess, labels) = match outputs {
            1000 => (Preprocess::imagenet(), imagenet_labels()),
            1001 => {
                let mut l = vec!["background".to_string()];
                l.extend(imagenet_labels());
                (Preprocess::imagenet(), l)
            }
            _ => (Preprocess::unit(), Vec::new()),
        };
        preprocess.size = size;
        preprocess.layout = layout;
        preprocess.channels = channels;
        if channels == Channels::Gray {
            // one channel: the mean/std of the first entry apply
            preprocess.mean = [preprocess.mean[0]; 3];
            preprocess.std = [preprocess.std[0]; 3];
        }
        Self { preprocess, labels }
    }

    /// EfficientNet-Lite0's reference preprocessing: the whole image squashed to 224×224
    /// (antialiased bilinear), x/255, ImageNet mean/std.
    pub fn efficientnet_lite0() -> Self {
        let mut preprocess = Preprocess::imagenet();
        preprocess.resize = Resize::Squash;
        Self {
            preprocess,
            labels: imagenet_labels(),
        }
    }

    /// `dir/model.onnx` → `dir/model.preset.ron`.
    pub fn sidecar_path(model: &Path) -> PathBuf {
        let stem = model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        model.with_file_name(format!("{stem}.preset.ron"))
    }

    pub fn to_ron(&self) -> Result<String, ModelError> {
        let config = ron::ser::PrettyConfig::new()
            .depth_limit(2)
            .struct_names(true);
        ron::ser::to_string_pretty(self, config)
            .map_err(|e| ModelError::Other(format!("cannot write the model preset: {e}")))
    }

    /// The sidecar of `model` if it exists; a malformed one is an error naming it.
    pub fn read_sidecar(model: &Path) -> Result<Option<(Self, PathBuf)>, ModelError> {
        let path = Self::sidecar_path(model);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::file(&path, format!("cannot read: {e}")))?;
        let preset: Self =
            ron::from_str(&text).map_err(|e| ModelError::file(&path, format!("{e}")))?;
        super::preprocess::validate(&preset.preprocess)
            .map_err(|e| ModelError::file(&path, e.to_string()))?;
        Ok(Some((preset, path)))
    }

    /// Writes the sidecar of `model` atomically (a full disk leaves the old one whole);
    /// returns its path.
    pub fn write_sidecar(&self, model: &Path) -> Result<PathBuf, ModelError> {
        let path = Self::sidecar_path(model);
        crate::io::write_atomically(&path, self.to_ron()?.as_bytes())
            .map_err(|e| ModelError::file(&path, format!("cannot write: {e}")))?;
        Ok(path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_labels_are_complete() {
        let l = imagenet_labels();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[0], "tench");
        assert_eq!(l[285], "Egyptian cat");
        assert_eq!(l[288], "leopard");
    }

    #[test]
    fn guesses() {
        let g = ModelPreset::guess(&[1, 3, 224, 224], 1000);
        assert_eq!(g.preprocess, Preprocess::imagenet());
        assert_eq!(g.labels.len(), 1000);
        let g = ModelPreset::guess(&[1, 224, 224, 3], 1001);
        assert_eq!(g.preprocess.layout, Layout::Nhwc);
        assert_eq!(g.labels[0], "background");
        assert_eq!(g.labels[1], "tench");
        let g = ModelPreset::guess(&[1, 64, 64, 3], 1);
        assert_eq!(g.preprocess.layout, Layout::Nhwc);
        assert_eq!(g.preprocess.size, [64, 64]);
        assert_eq!(g.preprocess.scale, 1.0 / 255.0);
        assert!(g.labels.is_empty());
        let g = ModelPreset::guess(&[1, 1, 28, 28], 10);
        assert_eq!(g.preprocess.channels, Channels::Gray);
        assert_eq!(g.preprocess.layout, Layout::Nchw);
    }

    #[test]
    fn sidecar_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("net.onnx");
        assert_eq!(
            ModelPreset::sidecar_path(&model),
            tmp.path().join("net.preset.ron")
        );
        assert!(ModelPreset::read_sidecar(&model).unwrap().is_none());
        let p = ModelPreset::guess(&[1, 3, 32, 32], 2);
        p.write_sidecar(&model).unwrap();
        let (back, path) = ModelPreset::read_sidecar(&model).unwrap().unwrap();
        assert_eq!(back, p);
        assert_eq!(path, tmp.path().join("net.preset.ron"));
        std::fs::write(&path, "ModelPreset(").unwrap();
        let e = ModelPreset::read_sidecar(&model).unwrap_err().to_string();
        assert!(e.contains("net.preset.ron"), "{e}");
    }
}
