//! torchvision's evaluation transforms by model name (`assets/models/torchvision_presets.ron`,
//! generated from torchvision by `tools/torchvision_presets.py`), and the model a file says it
//! is: a value of its ONNX metadata or its file name naming a torchvision model (`swin_t.onnx`,
//! `legacy_vit_b_16.onnx`), when its input and outputs fit that model.

use std::path::Path;
use std::sync::OnceLock;

use serde::Deserialize;

use super::description::{Channels, Filter, Layout, Preprocess, Resize};
use super::labels::{ModelPreset, imagenet_labels};

const TABLE: &str = include_str!("../../assets/models/torchvision_presets.ron");

/// One model's DEFAULT weights and their evaluation transform.
#[derive(Clone, Debug, Deserialize)]
pub struct TorchvisionPreset {
    pub name: String,
    /// The weights' enum name (`IMAGENET1K_V2`, ...).
    pub weights: String,
    pub crop: usize,
    /// The shorter side's size before the crop.
    pub resize: usize,
    pub filter: Filter,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl TorchvisionPreset {
    /// The preset: shorter side to `resize` with `filter`, centre crop `crop`², x/255,
    /// mean/std, RGB, NCHW, ImageNet labels.
    pub fn model_preset(&self) -> ModelPreset {
        ModelPreset {
            preprocess: Preprocess {
                size: [self.crop, self.crop],
                resize: Resize::ShorterSideTo {
                    shorter: self.resize,
                },
                filter: self.filter,
                scale: 1.0 / 255.0,
                mean: self.mean,
                std: self.std,
                channels: Channels::Rgb,
                layout: Layout::Nchw,
            },
            labels: imagenet_labels(),
        }
    }
}

/// Every torchvision classification model, by name.
pub fn presets() -> &'static [TorchvisionPreset] {
    static TABLE_PARSED: OnceLock<Vec<TorchvisionPreset>> = OnceLock::new();
    TABLE_PARSED.get_or_init(|| {
        // the table is part of the binary and parsed by a test: an error here is a build bug
        ron::from_str(TABLE).unwrap_or_default()
    })
}

/// The preset of the model called `name` exactly.
pub fn preset(name: &str) -> Option<&'static TorchvisionPreset> {
    presets().iter().find(|p| p.name == name)
}

/// The torchvision model that `text` names: the longest model name in it that stands alone
/// (not followed or preceded by a letter or digit), case-insensitive, `-` read as `_`.
fn named_in(text: &str) -> Option<&'static TorchvisionPreset> {
    let text = text.to_ascii_lowercase().replace('-', "_");
    let bytes = text.as_bytes();
    let alone = |start: usize, end: usize| {
        let before = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let after = end == bytes.len() || !bytes[end].is_ascii_alphanumeric();
        before && after
    };
    presets()
        .iter()
        .filter(|p| {
            text.match_indices(p.name.as_str())
                .any(|(i, m)| alone(i, i + m.len()))
        })
        .max_by_key(|p| p.name.len())
}

/// The torchvision model a file says it is: a metadata value first, then the file name; only
/// when the model takes 3-channel NCHW images of the preset's crop size (or any size) and
/// gives 1,000 scores.
pub fn identify(
    path: &Path,
    metadata: &[(String, String)],
    input_shape: &[usize],
    outputs: usize,
) -> Option<&'static TorchvisionPreset> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let found = metadata
        .iter()
        .find_map(|(_, v)| named_in(v))
        .or_else(|| stem.as_deref().and_then(named_in))?;
    let fits = match *input_shape {
        [_, 3, h, w] => (h, w) == (found.crop, found.crop),
        _ => false,
    };
    (fits && outputs == 1000).then_some(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_holds_the_families() {
        let t: Vec<TorchvisionPreset> = ron::from_str(TABLE).unwrap();
        assert!(t.len() >= 80, "{}", t.len());
        let swin = preset("swin_t").unwrap();
        assert_eq!(
            (swin.crop, swin.resize, swin.filter),
            (224, 232, Filter::Bicubic)
        );
        let inception = preset("inception_v3").unwrap();
        assert_eq!((inception.crop, inception.resize), (299, 342));
        let vit = preset("vit_b_16").unwrap();
        assert_eq!(
            (vit.crop, vit.resize, vit.filter),
            (224, 256, Filter::Bilinear)
        );
    }

    #[test]
    fn names_are_found_standing_alone() {
        let name = |s: &str| named_in(s).map(|p| p.name.as_str());
        assert_eq!(name("swin_t"), Some("swin_t"));
        assert_eq!(name("legacy_vit_b_16"), Some("vit_b_16"));
        assert_eq!(name("ResNet50-v2-export"), Some("resnet50"));
        // the longest name wins: not mobilenet_v3_small's prefix or a shorter model
        assert_eq!(name("mobilenet_v3_large"), Some("mobilenet_v3_large"));
        assert_eq!(name("efficientnet_v2_s"), Some("efficientnet_v2_s"));
        // glued to other letters or digits: no model
        assert_eq!(name("resnet500"), None);
        assert_eq!(name("myvgg16x"), None);
        assert_eq!(name("model"), None);
    }

    #[test]
    fn a_name_must_fit_the_shapes() {
        let p = Path::new("/tmp/inception_v3.onnx");
        assert!(identify(p, &[], &[1, 3, 299, 299], 1000).is_some());
        assert!(identify(p, &[], &[1, 3, 224, 224], 1000).is_none());
        assert!(identify(p, &[], &[1, 3, 299, 299], 10).is_none());
        // metadata first
        let meta = [("model".to_string(), "torchvision swin_t".to_string())];
        let found = identify(Path::new("x.onnx"), &meta, &[1, 3, 224, 224], 1000).unwrap();
        assert_eq!(found.name, "swin_t");
    }
}
