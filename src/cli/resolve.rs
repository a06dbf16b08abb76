//! What `--model M` refers to: a checkpoint directory or a bundled model name. Other model
//! sources (ONNX files) join by adding a [`ModelSource`] variant and a branch in [`resolve`]
//! and [`load`].

use std::path::{Path, PathBuf};

use super::{CliError, CliResult};
use crate::models::{self, Model};

/// A resolved `--model` argument.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// A directory holding `model.ron` and `weights.safetensors`.
    Checkpoint(PathBuf),
    /// A bundled architecture, freshly initialised from `seed`.
    Bundled { name: String, seed: u64 },
}

/// Decides what `spec` names. Existing paths win over bundled names.
pub fn resolve(spec: &str, seed: u64) -> CliResult<ModelSource> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(ModelSource::Checkpoint(path.to_path_buf()));
    }
    if models::BUNDLED.contains(&spec) {
        return Ok(ModelSource::Bundled {
            name: spec.to_string(),
            seed,
        });
    }
    let what = if path.exists() {
        "is not a model convscope can open"
    } else {
        "does not exist"
    };
    Err(CliError(format!(
        "{spec}: {what} (expected a checkpoint directory with model.ron and weights.safetensors, or one of the bundled models: {})",
        models::BUNDLED.join(", ")
    )))
}

/// Loads and validates the model.
pub fn load(source: &ModelSource) -> CliResult<Model> {
    match source {
        ModelSource::Checkpoint(dir) => Ok(models::load_model(dir)?),
        ModelSource::Bundled { name, seed } => {
            let (description, weights) = models::bundled(name, *seed)
                .ok_or_else(|| CliError(format!("{name}: unknown bundled model")))??;
            let graph = description.build(weights)?;
            Ok(Model { description, graph })
        }
    }
}

/// A short display name for reports.
pub fn display_name(source: &ModelSource) -> String {
    match source {
        ModelSource::Checkpoint(dir) => dir.display().to_string(),
        ModelSource::Bundled { name, .. } => name.clone(),
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
