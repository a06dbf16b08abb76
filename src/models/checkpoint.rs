//! Checkpoints: a directory holding `model.ron` (the [`ModelDescription`]) and
//! `weights.safetensors` (one tensor per parameter, named as in the description).
//!
//! Saving is atomic at the directory level. Both files are written into a fresh sibling
//! directory `.<name>.tmp-<pid>-<nanos>` and fsynced; then an existing checkpoint at the target
//! is renamed aside to `.<name>.old-...`, the new directory is renamed into place, and the old
//! one is removed. A directory cannot replace a non-empty directory in one `rename`, so there is
//! a moment between the two renames in which the target does not exist; a crash there leaves
//! the previous checkpoint complete under `.<name>.old-...` and nothing at the target. At no
//! point does the target hold a new `model.ron` with old weights (or a half-written file), which
//! renaming the two files one by one could not promise. Leftover hidden `.tmp`/`.old`
//! directories are never read by `load`.
//!
//! Weights are stored as little-endian F32. Loading also accepts F16, BF16 and F64 tensors
//! (converted to f32) so that checkpoints exported from PyTorch load, and skips PyTorch's
//! integer `*.num_batches_tracked` batch norm counters.

use std::borrow::Cow;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use safetensors::tensor::{Dtype, SafeTensors, View};

use super::description::{ModelDescription, Weights};
use super::{Model, ModelError};
use crate::engine::tensor::{checked_numel, fmt_shape};
use crate::engine::{Param, Tensor};

pub const MODEL_FILE: &str = "model.ron";
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// PyTorch's batch norm step counter, which convscope's batch norm does not use.
const TORCH_BN_COUNTER: &str = ".num_batches_tracked";

/// A parameter as a safetensors view (F32, little-endian bytes).
struct F32View<'a> {
    tensor: &'a Tensor,
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(
            self.tensor
                .data()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )
    }

    fn data_len(&self) -> usize {
        self.tensor.numel() * 4
    }
}

/// The safetensors bytes of `params` (F32).
pub fn encode_weights(params: &[Param]) -> Result<Vec<u8>, ModelError> {
    let views = params
        .iter()
        .map(|p| (p.name.as_str(), F32View { tensor: &p.tensor }));
    let metadata = [("format".to_string(), "convscope".to_string())].into();
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| ModelError::Other(format!("cannot encode the weights: {e}")))
}

/// Decodes safetensors bytes read from `path` (named in every error).
pub fn decode_weights(bytes: &[u8], path: &Path) -> Result<Weights, ModelError> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| ModelError::file(path, format!("is not a valid safetensors file ({e})")))?;
    let mut weights = Weights::new();
    for (name, view) in file.iter() {
        if is_torch_bn_counter(name, view.dtype()) {
            continue;
        }
        let shape = view.shape().to_vec();
        if checked_numel(&shape).is_none() {
            return Err(ModelError::file(
                path,
                format!(
                    "tensor '{name}' has an impossible shape {}",
                    fmt_shape(&shape)
                ),
            ));
        }
        let data = to_f32(view.dtype(), view.data()).ok_or_else(|| {
            ModelError::file(
                path,
                format!(
                    "tensor '{name}' has data type {:?}; convscope reads F32, F16, BF16 and F64",
                    view.dtype()
                ),
            )
        })?;
        let tensor = Tensor::new(shape, data)
            .map_err(|e| ModelError::file(path, format!("tensor '{name}': {e}")))?;
        weights.insert(name.to_string(), tensor);
    }
    Ok(weights)
}

/// PyTorch's integer batch norm step counter (`bn.num_batches_tracked`), present in every
/// state dict with batch norm; convscope's batch norm does not use it.
fn is_torch_bn_counter(name: &str, dtype: Dtype) -> bool {
    name.ends_with(TORCH_BN_COUNTER) && matches!(dtype, Dtype::I64 | Dtype::I32)
}

/// Little-endian floats of a supported dtype as f32; `None` for other dtypes.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        // bfloat16 is the upper half of an f32
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        _ => return None,
    })
}

/// IEEE half precision to f32 (exact: every f16 is an f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match exp {
        // zero and subnormals: mant · 2^-24
        0 => {
            let v = mant as f32 / (1u32 << 24) as f32;
            return if sign != 0 { -v } else { v };
        }
        // infinities and NaNs keep their payload
        0x1f => sign | 0x7f80_0000 | (mant << 13),
        // rebias the exponent from 15 to 127
        _ => sign | ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// Fails unless `params` are exactly the described parameters, in any order, with their shapes.
fn check_params(description: &ModelDescription, params: &[Param]) -> Result<(), ModelError> {
    if params.len() != description.params.len() {
        return Err(ModelError::Other(format!(
            "the model description lists {} parameters but {} were given",
            description.params.len(),
            params.len()
        )));
    }
    for d in &description.params {
        let p = params
            .iter()
            .find(|p| p.name == d.name)
            .ok_or_else(|| ModelError::weight(&d.name, "is described but was not given"))?;
        if p.tensor.shape() != d.shape.as_slice() {
            return Err(ModelError::weight(
                &d.name,
                format!(
                    "has shape {} but the description says {}",
                    fmt_shape(p.tensor.shape()),
                    fmt_shape(&d.shape)
                ),
            ));
        }
    }
    Ok(())
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> ModelError {
    ModelError::file(path, format!("{what}: {e}"))
}

/// Writes `bytes` to a new file at `path` and flushes it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let mut f = fs::File::create(path).map_err(|e| io_err(path, "cannot create the file", e))?;
    f.write_all(bytes)
        .map_err(|e| io_err(path, "cannot write the file", e))?;
    f.sync_all()
        .map_err(|e| io_err(path, "cannot flush the file to disk", e))
}

/// Flushes a directory's entries (new names after create/rename) to disk.
fn sync_dir(path: &Path) -> Result<(), ModelError> {
    crate::io::sync_dir(path).map_err(|e| io_err(path, "cannot flush the directory to disk", e))
}

/// A hidden sibling of `dir` that no other save uses.
fn sibling(parent: &Path, name: &str, tag: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    parent.join(format!(".{name}.{tag}-{}-{nanos}", std::process::id()))
}

/// Saves a checkpoint to the directory `dir` (created or replaced atomically, see the module
/// documentation). An existing `dir` is replaced only when it is a checkpoint (holds
/// `model.ron`) or empty, so that a typo cannot wipe an unrelated folder.
pub fn save_checkpoint(
    dir: &Path,
    description: &ModelDescription,
    params: &[Param],
) -> Result<(), ModelError> {
    check_params(description, params)?;
    let ron = description.to_ron()?;
    let weights = encode_weights(params)?;

    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ModelError::file(dir, "is not a usable checkpoint directory name"))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.exists() {
        let replaceable = dir.is_dir()
            && (dir.join(MODEL_FILE).is_file()
                || fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()));
        if !replaceable {
            return Err(ModelError::file(
                dir,
                "exists and is not a checkpoint; refusing to replace it",
            ));
        }
    }
    fs::create_dir_all(&parent).map_err(|e| io_err(&parent, "cannot create the directory", e))?;

    let tmp = sibling(&parent, name, "tmp");
    fs::create_dir(&tmp).map_err(|e| io_err(&tmp, "cannot create the directory", e))?;
    let result = write_then_swap(&tmp, dir, &parent, name, ron.as_bytes(), &weights);
    if result.is_err() {
        // best effort: the temporary directory is hidden and never loaded anyway
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn write_then_swap(
    tmp: &Path,
    dir: &Path,
    parent: &Path,
    name: &str,
    ron: &[u8],
    weights: &[u8],
) -> Result<(), ModelError> {
    write_synced(&tmp.join(MODEL_FILE), ron)?;
    write_synced(&tmp.join(WEIGHTS_FILE), weights)?;
    sync_dir(tmp)?;
    let old = if dir.exists() {
        let old = sibling(parent, name, "old");
        fs::rename(dir, &old)
            .map_err(|e| io_err(dir, "cannot move the previous checkpoint aside", e))?;
        Some(old)
    } else {
        None
    };
    fs::rename(tmp, dir)
        .map_err(|e| io_err(dir, "cannot move the new checkpoint into place", e))?;
    sync_dir(parent)?;
    if let Some(old) = old {
        fs::remove_dir_all(&old)
            .map_err(|e| io_err(&old, "cannot remove the previous checkpoint", e))?;
    }
    Ok(())
}

/// Saves a model's description and current parameters.
pub fn save_model(dir: &Path, model: &Model) -> Result<(), ModelError> {
    save_checkpoint(dir, &model.description, model.graph.params())
}

/// Reads a checkpoint directory: the description and the weights, checked against each other
/// (every error names the file).
pub fn load_checkpoint(dir: &Path) -> Result<(ModelDescription, Weights), ModelError> {
    if !dir.is_dir() {
        let msg = if dir.exists() {
            "is not a checkpoint directory (expected a directory holding model.ron and weights.safetensors)"
        } else {
            "does not exist"
        };
        return Err(ModelError::file(dir, msg));
    }
    let ron_path = dir.join(MODEL_FILE);
    let text = fs::read_to_string(&ron_path)
        .map_err(|e| io_err(&ron_path, "cannot read the model description", e))?;
    let description = ModelDescription::from_ron(&text).map_err(|e| {
        ModelError::file(&ron_path, format!("is not a valid model description ({e})"))
    })?;

    let weights_path = dir.join(WEIGHTS_FILE);
    let bytes =
        fs::read(&weights_path).map_err(|e| io_err(&weights_path, "cannot read the weights", e))?;
    let weights = decode_weights(&bytes, &weights_path)?;
    description.check_weights(&weights).map_err(|e| {
        ModelError::file(&weights_path, format!("does not match {MODEL_FILE}: {e}"))
    })?;
    Ok((description, weights))
}

/// Loads a checkpoint and builds its graph.
pub fn load_model(dir: &Path) -> Result<Model, ModelError> {
    let (description, weights) = load_checkpoint(dir)?;
    let graph = description.build(weights).map_err(|e| {
        ModelError::file(
            &dir.join(MODEL_FILE),
            format!("describes an invalid graph: {e}"),
        )
    })?;
    Ok(Model { description, graph })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::test_tensor;
    use crate::engine::graph::{InputDef, NodeDef};
    use crate::engine::{Op, ops::Activation};
    use crate::models::description::{ParamDesc, Preprocess};

    fn sample() -> (ModelDescription, Vec<Param>) {
        let mut weird = test_tensor(&[2, 3], 5);
        // bit patterns that must survive: negative zero, a subnormal, NaN with payload, infinity
        weird.data_mut()[0] = -0.0;
        weird.data_mut()[1] = f32::from_bits(1);
        weird.data_mut()[2] = f32::from_bits(0x7fc0_1234);
        weird.data_mut()[3] = f32::NEG_INFINITY;
        let params = vec![
            Param {
                name: "a.weight".into(),
                tensor: weird,
                trainable: true,
            },
            Param {
                name: "a.running_var".into(),
                tensor: test_tensor(&[7], 6),
                trainable: false,
            },
        ];
        let description = ModelDescription {
            name: "sample".into(),
            inputs: vec![InputDef {
                name: "input".into(),
                shape: vec![1, 3],
            }],
            params: params
                .iter()
                .map(|p| ParamDesc {
                    name: p.name.clone(),
                    shape: p.tensor.shape().to_vec(),
                    trainable: p.trainable,
                })
                .collect(),
            nodes: vec![NodeDef {
                name: "act".into(),
                op: Op::Activation(Activation::LeakyRelu { alpha: 0.1 }),
                inputs: vec!["input".into()],
                output: "act".into(),
            }],
            outputs: vec!["act".into()],
            preprocess: Preprocess::imagenet(),
            labels: vec!["no".into(), "yes".into()],
        };
        (description, params)
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.data().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn save_then_load_is_bit_exact() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ckpt");
        let (d, params) = sample();
        save_checkpoint(&dir, &d, &params).unwrap();
        let (d2, w) = load_checkpoint(&dir).unwrap();
        assert_eq!(d2, d);
        assert_eq!(w.len(), 2);
        for p in &params {
            assert_eq!(w[&p.name].shape(), p.tensor.shape());
            assert_eq!(bits(&w[&p.name]), bits(&p.tensor), "{}", p.name);
        }
        // nothing but the checkpoint is left in the parent
        let entries: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn saving_again_replaces_the_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ckpt");
        let (d, mut params) = sample();
        save_checkpoint(&dir, &d, &params).unwrap();
        params[1].tensor = Tensor::full(&[7], 3.5);
        save_checkpoint(&dir, &d, &params).unwrap();
        let (_, w) = load_checkpoint(&dir).unwrap();
        assert_eq!(w["a.running_var"].data(), &[3.5; 7]);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_to_replace_a_folder_that_is_not_a_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("precious.txt"), "keep me").unwrap();
        let (d, params) = sample();
        let e = save_checkpoint(tmp.path(), &d, &params)
            .unwrap_err()
            .to_string();
        assert!(e.contains("refusing"), "{e}");
        assert!(tmp.path().join("precious.txt").exists());
    }

    #[test]
    fn save_checks_params_against_the_description() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, mut params) = sample();
        params[0].tensor = Tensor::zeros(&[6]);
        let e = save_checkpoint(&tmp.path().join("c"), &d, &params)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'a.weight'"), "{e}");
        assert!(!tmp.path().join("c").exists());
    }

    fn saved() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ckpt");
        let (d, params) = sample();
        save_checkpoint(&dir, &d, &params).unwrap();
        (tmp, dir)
    }

    fn load_err(dir: &Path) -> String {
        load_checkpoint(dir).unwrap_err().to_string()
    }

    #[test]
    fn missing_things_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load_err(&tmp.path().join("nope"));
        assert!(e.contains("nope") && e.contains("does not exist"), "{e}");

        let (_t, dir) = saved();
        fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
        let e = load_err(&dir);
        assert!(e.contains(WEIGHTS_FILE), "{e}");
        fs::remove_file(dir.join(MODEL_FILE)).unwrap();
        let e = load_err(&dir);
        assert!(e.contains(MODEL_FILE), "{e}");
    }

    #[test]
    fn truncated_or_lying_weights_are_errors() {
        let (_t, dir) = saved();
        let path = dir.join(WEIGHTS_FILE);
        let good = fs::read(&path).unwrap();
        for cut in [0, 4, 8, 20, good.len() / 2, good.len() - 1] {
            fs::write(&path, &good[..cut]).unwrap();
            let e = load_err(&dir);
            assert!(e.contains(WEIGHTS_FILE), "cut {cut}: {e}");
        }
        // header length claiming more bytes than the file has
        let mut lying = good.clone();
        lying[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        fs::write(&path, &lying).unwrap();
        assert!(load_err(&dir).contains(WEIGHTS_FILE));
        // header shape disagreeing with the byte offsets
        let text = String::from_utf8_lossy(&good).replacen("[7]", "[9]", 1);
        fs::write(&path, text.as_bytes()).unwrap();
        assert!(load_err(&dir).contains(WEIGHTS_FILE));
        // trailing garbage
        let mut long = good.clone();
        long.extend_from_slice(&[0; 16]);
        fs::write(&path, &long).unwrap();
        assert!(load_err(&dir).contains(WEIGHTS_FILE));
    }

    #[test]
    fn corrupt_description_is_an_error_naming_the_file() {
        let (_t, dir) = saved();
        fs::write(dir.join(MODEL_FILE), "ModelDescription(name: ").unwrap();
        let e = load_err(&dir);
        assert!(
            e.contains(MODEL_FILE) && e.contains("not a valid model description"),
            "{e}"
        );
    }

    #[test]
    fn shape_mismatch_between_files_is_an_error() {
        let (_t, dir) = saved();
        let path = dir.join(MODEL_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let (mut d, _) = sample();
        d.params[1].shape = vec![8];
        fs::write(&path, d.to_ron().unwrap()).unwrap();
        let e = load_err(&dir);
        assert!(
            e.contains(WEIGHTS_FILE) && e.contains("'a.running_var'") && e.contains("[8]"),
            "{e}"
        );
        assert!(text.contains("a.running_var"));
    }

    /// A safetensors file with one tensor `a.weight` of `dtype` and the given raw bytes.
    fn raw_file(dtype: Dtype, shape: Vec<usize>, bytes: &[u8]) -> Vec<u8> {
        let view = safetensors::tensor::TensorView::new(dtype, shape, bytes).unwrap();
        safetensors::serialize([("a.weight", view)], None).unwrap()
    }

    #[test]
    fn half_bfloat_and_double_are_converted() {
        let p = Path::new("w.safetensors");
        // f16: 1.0, -2.0, 65504 (max), smallest subnormal 2^-24
        let f16: Vec<u8> = [0x3c00u16, 0xc000, 0x7bff, 0x0001]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = decode_weights(&raw_file(Dtype::F16, vec![4], &f16), p).unwrap();
        assert_eq!(w["a.weight"].data(), &[1.0, -2.0, 65504.0, 2f32.powi(-24)]);
        let bf: Vec<u8> = [0x3f80u16, 0xc040]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = decode_weights(&raw_file(Dtype::BF16, vec![2], &bf), p).unwrap();
        assert_eq!(w["a.weight"].data(), &[1.0, -3.0]);
        let f64s: Vec<u8> = [0.5f64, -0.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let w = decode_weights(&raw_file(Dtype::F64, vec![1, 2], &f64s), p).unwrap();
        assert_eq!(w["a.weight"].shape(), &[1, 2]);
        assert_eq!(w["a.weight"].data(), &[0.5, -0.25]);
    }

    #[test]
    fn f16_special_values() {
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
    }

    #[test]
    fn unsupported_dtypes_are_named() {
        let e = decode_weights(
            &raw_file(Dtype::I32, vec![1], &[0; 4]),
            Path::new("w.safetensors"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("w.safetensors") && e.contains("I32") && e.contains("'a.weight'"),
            "{e}"
        );
    }

    #[test]
    fn pytorch_batch_norm_counters_are_skipped() {
        let (_t, dir) = saved();
        let (d, params) = sample();
        let counter = 5i64.to_le_bytes();
        let mut views: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
        let bytes: Vec<Vec<u8>> = params
            .iter()
            .map(|p| {
                p.tensor
                    .data()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        for (p, b) in params.iter().zip(&bytes) {
            let v = safetensors::tensor::TensorView::new(Dtype::F32, p.tensor.shape().to_vec(), b)
                .unwrap();
            views.push((p.name.clone(), v));
        }
        let counter_view =
            safetensors::tensor::TensorView::new(Dtype::I64, vec![], &counter).unwrap();
        views.push(("a.num_batches_tracked".into(), counter_view));
        fs::write(
            dir.join(WEIGHTS_FILE),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        let (d2, w) = load_checkpoint(&dir).unwrap();
        assert_eq!(d2, d);
        assert_eq!(w.len(), 2);
        assert!(!w.contains_key("a.num_batches_tracked"));
    }

    #[test]
    fn leftover_temporary_directories_do_not_matter() {
        let (t, dir) = saved();
        // a crashed save: a half-written hidden sibling
        let stale = t.path().join(".ckpt.tmp-1-1");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join(MODEL_FILE), "garbage").unwrap();
        assert!(load_checkpoint(&dir).is_ok());
        assert!(load_checkpoint(&stale).is_err());
    }
}
