//! The data a run trains on: train / val / test sets built for a given model, so that images
//! arrive at the model's input size and channel count with its normalisation.

use std::path::PathBuf;

use super::{TrainError, TrainResult};
use crate::data::{
    CifarSet, Confound, Dataset, FolderOptions, IdxSet, ImageFolder, Preprocess, Skipped, Split,
    SyntheticFaces,
};
use crate::models::{self, Channels, Layout};

/// Train, optional validation and test sets sharing one class list.
#[derive(Clone, Debug)]
pub struct TrainData {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    pub classes: Vec<String>,
    /// Files left out while scanning (not images, or undecodable), each once.
    pub skipped: Vec<Skipped>,
}

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    /// The built-in faces: independent train / val / test draws. The confound (if any) is
    /// planted in train and val; the test faces never have it, so test accuracy measures the
    /// true cue.
    Synthetic {
        seed: u64,
        train: usize,
        val: usize,
        test: usize,
        confound: Confound,
    },
    /// MNIST / Fashion-MNIST IDX files (optionally gzipped): a training pair and an optional
    /// test pair.
    Idx {
        train_images: PathBuf,
        train_labels: PathBuf,
        test: Option<(PathBuf, PathBuf)>,
    },
    /// The CIFAR-10 binary version: a folder with `data_batch_1.bin`…`data_batch_5.bin` and
    /// `test_batch.bin`.
    Cifar { dir: PathBuf },
    /// An image folder (class sub-folders, or train/val/test splits of them).
    Folder {
        root: PathBuf,
        val_fraction: f32,
        test_fraction: f32,
        seed: u64,
    },
}

/// The data layer's preprocessing for a model: its input `[c, h, w]` and its normalisation,
/// with the model's pixel scale folded into mean and std (the data layer always gives x/255).
pub fn preprocess_for(graph_input: &[usize], p: &models::Preprocess) -> TrainResult<Preprocess> {
    let [_, c, h, w] = match graph_input {
        &[n, c, h, w] => [n, c, h, w],
        s => {
            return Err(TrainError::invalid(format!(
                "the model's input has shape {s:?}; image data needs [n, channels, height, width]"
            )));
        }
    };
    if p.layout != Layout::Nchw || p.channels == Channels::Bgr {
        return Err(TrainError::invalid(
            "the model expects NHWC or BGR input; training and evaluation read RGB NCHW models only",
        ));
    }
    if c != 1 && c != 3 {
        return Err(TrainError::invalid(format!(
            "the model takes {c} input channels but images give 3 (RGB) or 1 (gray); only 1- or 3-channel models can read image data"
        )));
    }
    let described = if p.channels == Channels::Gray { 1 } else { 3 };
    if described != c {
        return Err(TrainError::invalid(format!(
            "the model's input has {c} channels but its preprocessing describes {described}"
        )));
    }
    let base = Preprocess::new(c, h, w);
    // (x·scale − m)/s with x in 0..=255 equals (x/255 − m/(255·scale)) / (s/(255·scale)).
    let k = 255.0 * p.scale;
    if !(k.is_finite() && k > 0.0) {
        return Err(TrainError::invalid(format!(
            "the model's pixel scale {} is not a positive number",
            p.scale
        )));
    }
    let identity = (k - 1.0).abs() < 1e-6 && p.mean == [0.0; 3] && p.std == [1.0; 3];
    if identity {
        return Ok(base);
    }
    let mean: Vec<f32> = p.mean[..c].iter().map(|m| m / k).collect();
    let std: Vec<f32> = p.std[..c].iter().map(|s| s / k).collect();
    base.with_mean_std(mean, std)
        .map_err(|e| TrainError::invalid(format!("the model's preprocessing: {e}")))
}

fn non_empty(d: Dataset) -> Option<Dataset> {
    (!d.is_empty()).then_some(d)
}

impl DataSpec {
    /// Builds the three sets for a model whose input is `graph_input` (e.g. `[1, 3, 64, 64]`).
    pub fn build(&self, graph_input: &[usize], p: &models::Preprocess) -> TrainResult<TrainData> {
        let pre = preprocess_for(graph_input, p)?;
        match self {
            DataSpec::Synthetic {
                seed,
                train,
                val,
                test,
                confound,
            } => {
                if *train == 0 {
                    return Err(TrainError::invalid("the synthetic training set is empty"));
                }
                let set = |s: u64, n: usize, c: Confound| -> TrainResult<Dataset> {
                    SyntheticFaces::new(s, n)
                        .with_confound(c)
                        .and_then(|f| f.with_preprocess(pre.clone()))
                        .map(Dataset::Synthetic)
                        .map_err(|e| TrainError::invalid(e.to_string()))
                };
                // distinct seeds: train, val and test faces never coincide
                let train = set(*seed, *train, *confound)?;
                let classes = train.classes();
                Ok(TrainData {
                    train,
                    val: non_empty(set(seed ^ 0x5EED_0000_0000_0001, *val, *confound)?),
                    test: non_empty(set(seed ^ 0x5EED_0000_0000_0002, *test, Confound::None)?),
                    classes,
                    skipped: Vec::new(),
                })
            }
            DataSpec::Idx {
                train_images,
                train_labels,
                test,
            } => {
                let open = |images: &PathBuf, labels: &PathBuf| -> TrainResult<Dataset> {
                    IdxSet::open(images, labels)
                        .and_then(|d| d.with_preprocess(pre.clone()))
                        .map(Dataset::Idx)
                        .map_err(|e| TrainError::invalid(e.to_string()))
                };
                let train = open(train_images, train_labels)?;
                let test = match test {
                    Some((i, l)) => Some(open(i, l)?),
                    None => None,
                };
                Ok(TrainData {
                    classes: train.classes(),
                    train,
                    val: None,
                    test,
                    skipped: Vec::new(),
                })
            }
            DataSpec::Cifar { dir } => {
                let open = |split: Split| -> TrainResult<Dataset> {
                    CifarSet::open_dir(dir, split)
                        .and_then(|d| d.with_preprocess(pre.clone()))
                        .map(Dataset::Cifar)
                        .map_err(|e| TrainError::invalid(e.to_string()))
                };
                let train = open(Split::Train)?;
                Ok(TrainData {
                    classes: train.classes(),
                    test: Some(open(Split::Test)?),
                    train,
                    val: None,
                    skipped: Vec::new(),
                })
            }
            DataSpec::Folder {
                root,
                val_fraction,
                test_fraction,
                seed,
            } => {
                let options = FolderOptions {
                    preprocess: pre,
                    val_fraction: *val_fraction,
                    test_fraction: *test_fraction,
                    seed: *seed,
                    verify: true,
                };
                let folder = ImageFolder::open(root, &options)
                    .map_err(|e| TrainError::invalid(e.to_string()))?;
                let train = Dataset::Folder(folder.split(Split::Train));
                if train.is_empty() {
                    return Err(TrainError::invalid(format!(
                        "{}: the training split has no images",
                        root.display()
                    )));
                }
                Ok(TrainData {
                    classes: folder.classes().to_vec(),
                    val: non_empty(Dataset::Folder(folder.split(Split::Val))),
                    test: non_empty(Dataset::Folder(folder.split(Split::Test))),
                    train,
                    skipped: folder.skipped().to_vec(),
                })
            }
        }
    }
}

/// A folder to evaluate on: its `test/` split when it has split folders, else every image.
pub fn evaluation_folder(
    root: &std::path::Path,
    graph_input: &[usize],
    p: &models::Preprocess,
) -> TrainResult<(Dataset, Vec<String>, Vec<Skipped>)> {
    let options = FolderOptions {
        preprocess: preprocess_for(graph_input, p)?,
        ..FolderOptions::default()
    };
    let folder =
        ImageFolder::open(root, &options).map_err(|e| TrainError::invalid(e.to_string()))?;
    let split = if folder.is_presplit() && folder.split_sizes()[2] > 0 {
        folder.split(Split::Test)
    } else {
        folder.all()
    };
    Ok((
        Dataset::Folder(split),
        folder.classes().to_vec(),
        folder.skipped().to_vec(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_folded_into_mean_and_std() {
        let mut p = models::Preprocess::unit();
        assert_eq!(
            preprocess_for(&[1, 3, 64, 64], &p).unwrap(),
            Preprocess::new(3, 64, 64)
        );
        p.scale = 1.0; // raw 0..255 minus 127.5, divided by 127.5
        p.mean = [127.5; 3];
        p.std = [127.5; 3];
        let got = preprocess_for(&[1, 3, 64, 64], &p).unwrap();
        let (m, s) = got.mean_std.unwrap();
        assert!((m[0] - 0.5).abs() < 1e-6 && (s[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn odd_channel_counts_name_both_sides() {
        let e = preprocess_for(&[1, 4, 64, 64], &models::Preprocess::unit())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4 input channels") && e.contains("3 (RGB)"),
            "{e}"
        );
    }
}
