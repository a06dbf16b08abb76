//! Models and pictures compiled into the binary (assets/), and opening imported ONNX models with
//! their preset.
//!
//! EfficientNet-Lite0 is embedded as its ONNX file (18.8 MB) rather than as safetensors plus a
//! description: both weigh the same (the weights are 99.9 % of either), and importing the
//! embedded bytes takes a few tens of milliseconds, so one importer serves files and the bundle.
//! Licence and provenance: assets/models/NOTICE.md.

use std::path::Path;

use super::labels::{ModelPreset, PresetOrigin};
use super::onnx::{ImportedModel, OPEN_SPATIAL_DEFAULT, import_onnx_bytes, import_onnx_sized};
use super::torchvision;
use super::{Model, ModelDescription, ModelError};
use crate::engine::Graph;

/// Names of the bundled pretrained models.
pub const PRETRAINED: &[&str] = &["efficientnet-lite0"];

/// EfficientNet-Lite0 (ImageNet-1k), Apache-2.0, see assets/models/NOTICE.md.
pub const EFFICIENTNET_LITE0_ONNX: &[u8] =
    include_bytes!("../../assets/models/efficientnet_lite0.onnx");

/// The sample photos (CC0 / public domain, assets/images/SOURCE.md): file name and PNG bytes.
pub const SAMPLE_IMAGES: &[(&str, &[u8])] = &[
    (
        "chelsea.png",
        include_bytes!("../../assets/images/chelsea.png"),
    ),
    (
        "coffee.png",
        include_bytes!("../../assets/images/coffee.png"),
    ),
    (
        "rocket.png",
        include_bytes!("../../assets/images/rocket.png"),
    ),
];

/// The bundled pretrained model `name`, or `None` for an unknown name.
pub fn pretrained(name: &str) -> Option<Result<Model, ModelError>> {
    match name {
        "efficientnet-lite0" => Some(
            import_onnx_bytes(EFFICIENTNET_LITE0_ONNX, None)
                .map_err(|e| ModelError::Other(e.to_string()))
                .and_then(|m| with_preset(m, name, ModelPreset::efficientnet_lite0())),
        ),
        _ => None,
    }
}

/// Scores per example of a graph's first output: the product of its non-batch dimensions.
pub fn outputs_per_example(graph: &Graph) -> usize {
    graph
        .outputs()
        .first()
        .map(|&v| graph.value(v).shape.iter().skip(1).product())
        .unwrap_or(0)
}

/// Builds the graph of an imported model and attaches a preset.
pub fn with_preset(
    imported: ImportedModel,
    name: &str,
    preset: ModelPreset,
) -> Result<Model, ModelError> {
    let graph = Graph::from_def(imported.def)?;
    let description = ModelDescription::from_graph(name, &graph, preset.preprocess, preset.labels);
    Ok(Model { description, graph })
}

/// Imports an ONNX file with its sidecar preset (`x.onnx` → `x.preset.ron`) if there is one,
/// else torchvision's transform for the model the file says it is ([`torchvision::identify`]),
/// else a preset guessed from the shapes.
pub fn open_onnx(path: &Path) -> Result<(Model, PresetOrigin), ModelError> {
    let sidecar = ModelPreset::read_sidecar(path)?;
    // a file that leaves its input's height and width open is imported at the preset's size
    let spatial = sidecar
        .as_ref()
        .map_or(OPEN_SPATIAL_DEFAULT, |(p, _)| p.preprocess.size);
    let imported =
        import_onnx_sized(path, spatial).map_err(|e| ModelError::Other(e.to_string()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let metadata = imported.metadata.clone();
    // the graph's own checks name a node; the user needs the file too
    let graph = Graph::from_def(imported.def).map_err(|e| ModelError::file(path, e.to_string()))?;
    let outputs = outputs_per_example(&graph);
    let (preset, origin) = match sidecar {
        Some((preset, file)) => (preset, PresetOrigin::Sidecar(file)),
        None => match torchvision::identify(path, &metadata, graph.input_shape(), outputs) {
            Some(tv) => (
                tv.model_preset(),
                PresetOrigin::Torchvision(format!("{} ({})", tv.name, tv.weights)),
            ),
            None => (
                ModelPreset::guess(graph.input_shape(), outputs),
                PresetOrigin::Guessed,
            ),
        },
    };
    let description = ModelDescription::from_graph(&name, &graph, preset.preprocess, preset.labels);
    Ok((Model { description, graph }, origin))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sample_images_are_pngs() {
        for (name, bytes) in SAMPLE_IMAGES {
            assert!(bytes.starts_with(b"\x89PNG"), "{name}");
        }
    }
}
