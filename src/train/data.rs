//! The data a run trains on: train / val / test sets built for a given model, so that images
//! arrive at the model's input size and channel count with its normalisation.

use std::path::PathBuf;

use super::{TrainError, TrainResult};
use crate::data::{
    CifarSet, Confound, Dataset, FolderOptions, IdxSet, ImageFolder, Layout, Preprocess, Skipped,
    Split, SyntheticFaces,
};

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

/// A model's preset made to fit its graph's input `graph_input` (`[n, c, h, w]` for an NCHW
/// preset, `[n, h, w, c]` for NHWC): the size is the graph's, and the channel count must agree.
/// Data sets, training and evaluation preprocess by it exactly as prediction does.
pub fn preprocess_for(graph_input: &[usize], p: &Preprocess) -> TrainResult<Preprocess> {
    p.validate()
        .map_err(|e| TrainError::invalid(format!("the model's preprocessing: {e}")))?;
    let [c, h, w] = match (graph_input, p.layout) {
        (&[_, c, h, w], Layout::Nchw) => [c, h, w],
        (&[_, h, w, c], Layout::Nhwc) => [c, h, w],
        (s, layout) => {
            return Err(TrainError::invalid(format!(
                "the model's input has shape {s:?}; image data with its {layout:?} preprocessing needs 4 axes"
            )));
        }
    };
    if c != p.channel_count() {
        return Err(TrainError::invalid(format!(
            "the model takes {c} input channels but its preprocessing gives {} ({:?}); only 1- or 3-channel models can read image data",
            p.channel_count(),
            p.channels
        )));
    }
    Ok(p.clone().with_size([h, w]))
}

fn non_empty(d: Dataset) -> Option<Dataset> {
    (!d.is_empty()).then_some(d)
}

impl DataSpec {
    /// Builds the three sets for a model whose input is `graph_input` (e.g. `[1, 3, 64, 64]`).
    pub fn build(&self, graph_input: &[usize], p: &Preprocess) -> TrainResult<TrainData> {
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
    p: &Preprocess,
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
    fn the_preset_takes_the_graphs_size_in_either_layout() {
        let mut p = Preprocess::imagenet();
        let got = preprocess_for(&[1, 3, 96, 128], &p).unwrap();
        assert_eq!(got, Preprocess::imagenet().with_size([96, 128]));
        p.layout = Layout::Nhwc;
        p.channels = crate::data::Channels::Bgr;
        let got = preprocess_for(&[2, 96, 128, 3], &p).unwrap();
        assert_eq!(got.size, [96, 128]);
        assert_eq!(got.sample_shape(), [96, 128, 3]);
        // an NHWC preset on an NCHW graph reads the channel count from the last axis
        assert!(preprocess_for(&[1, 3, 96, 128], &p).is_err());
        assert!(preprocess_for(&[1, 3, 96], &p).is_err());
    }

    #[test]
    fn odd_channel_counts_name_both_sides() {
        let e = preprocess_for(&[1, 4, 64, 64], &Preprocess::unit())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4 input channels") && e.contains("gives 3"),
            "{e}"
        );
    }
}
