//! What `--model M` refers to: an `.onnx` file, a checkpoint directory, or a bundled model name
//! (`smile-cnn` freshly initialised from `--seed`, `efficientnet-lite0` pretrained).

use std::path::{Path, PathBuf};

use super::{CliError, CliResult};
use crate::models::bundled::{self, PRETRAINED};
use crate::models::labels::{ModelPreset, PresetOrigin};
use crate::models::{self, Model};

/// A resolved `--model` argument.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// A directory holding `model.ron` and `weights.safetensors`.
    Checkpoint(PathBuf),
    /// A bundled architecture, freshly initialised from `seed`.
    Bundled { name: String, seed: u64 },
    /// A bundled pretrained model.
    Pretrained(String),
    /// An ONNX file (with an optional `.preset.ron` sidecar).
    Onnx(PathBuf),
}

/// Every bundled name, for messages.
fn bundled_names() -> String {
    let names: Vec<&str> = models::BUNDLED.iter().chain(PRETRAINED).copied().collect();
    names.join(", ")
}

fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Decides what `spec` names. Existing paths win over bundled names.
pub fn resolve(spec: &str, seed: u64) -> CliResult<ModelSource> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(ModelSource::Checkpoint(path.to_path_buf()));
    }
    if path.is_file() && is_onnx(path) {
        return Ok(ModelSource::Onnx(path.to_path_buf()));
    }
    if models::BUNDLED.contains(&spec) {
        return Ok(ModelSource::Bundled {
            name: spec.to_string(),
            seed,
        });
    }
    if PRETRAINED.contains(&spec) {
        return Ok(ModelSource::Pretrained(spec.to_string()));
    }
    let what = if path.exists() {
        "is not a model convscope can open"
    } else {
        "does not exist"
    };
    Err(CliError(format!(
        "{spec}: {what} (expected an .onnx file, a checkpoint directory with model.ron and weights.safetensors, or one of the bundled models: {})",
        bundled_names()
    )))
}

/// Loads and validates the model.
pub fn load(source: &ModelSource) -> CliResult<Model> {
    Ok(load_with_origin(source)?.0)
}

/// Loads the model and says where its preprocessing preset and labels came from.
pub fn load_with_origin(source: &ModelSource) -> CliResult<(Model, PresetOrigin)> {
    match source {
        ModelSource::Checkpoint(dir) => Ok((models::load_model(dir)?, PresetOrigin::Builtin)),
        ModelSource::Bundled { name, seed } => {
            let (description, weights) = models::bundled(name, *seed)
                .ok_or_else(|| CliError(format!("{name}: unknown bundled model")))??;
            let graph = description.build(weights)?;
            Ok((Model { description, graph }, PresetOrigin::Builtin))
        }
        ModelSource::Pretrained(name) => {
            let model = bundled::pretrained(name)
                .ok_or_else(|| CliError(format!("{name}: unknown bundled model")))??;
            Ok((model, PresetOrigin::Builtin))
        }
        ModelSource::Onnx(path) => Ok(bundled::open_onnx(path)?),
    }
}

/// `--write-preset`: saves the preset in use (read or guessed) beside an ONNX file and returns
/// the sidecar's path.
pub fn write_preset(source: &ModelSource, model: &Model) -> CliResult<PathBuf> {
    let ModelSource::Onnx(path) = source else {
        return Err(CliError(format!(
            "{}: --write-preset applies to .onnx files; checkpoints keep their preset in model.ron and bundled models have theirs built in",
            display_name(source)
        )));
    };
    let preset = ModelPreset {
        preprocess: model.description.preprocess.clone(),
        labels: model.description.labels.clone(),
    };
    Ok(preset.write_sidecar(path)?)
}

/// A short display name for reports.
pub fn display_name(source: &ModelSource) -> String {
    match source {
        ModelSource::Checkpoint(dir) | ModelSource::Onnx(dir) => dir.display().to_string(),
        ModelSource::Bundled { name, .. } | ModelSource::Pretrained(name) => name.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_unknowns() {
        assert_eq!(
            resolve("smile-cnn", 3).unwrap(),
            ModelSource::Bundled {
                name: "smile-cnn".into(),
                seed: 3
            }
        );
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        assert_eq!(
            resolve(dir, 0).unwrap(),
            ModelSource::Checkpoint(tmp.path().to_path_buf())
        );
        let e = resolve("/no/such/model", 0).unwrap_err().0;
        assert!(
            e.starts_with("/no/such/model: does not exist") && e.contains("smile-cnn"),
            "{e}"
        );
        assert_eq!(
            resolve("efficientnet-lite0", 0).unwrap(),
            ModelSource::Pretrained("efficientnet-lite0".into())
        );
        let onnx = tmp.path().join("net.onnx");
        std::fs::write(&onnx, "x").unwrap();
        assert_eq!(
            resolve(onnx.to_str().unwrap(), 0).unwrap(),
            ModelSource::Onnx(onnx.clone())
        );
        let e = load(&ModelSource::Onnx(onnx)).unwrap_err().0;
        assert!(
            e.contains("net.onnx") && e.contains("not a valid ONNX"),
            "{e}"
        );
        let file = tmp.path().join("m.bin");
        std::fs::write(&file, "x").unwrap();
        let e = resolve(file.to_str().unwrap(), 0).unwrap_err().0;
        assert!(e.contains("m.bin: is not a model"), "{e}");
    }

    #[test]
    fn loading_an_empty_directory_names_the_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load(&ModelSource::Checkpoint(tmp.path().to_path_buf()))
            .unwrap_err()
            .0;
        assert!(e.contains("model.ron"), "{e}");
    }
}
