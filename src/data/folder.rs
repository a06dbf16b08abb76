//! Image-folder data sets: one first-level sub-folder per class, images anywhere below it.
//!
//! Layout rules, in the order they are applied:
//! - Wrapper folders are looked through: while a folder holds no image file and exactly one
//!   visible sub-folder that is not a split name, the data set starts in that sub-folder (so
//!   `data/smiles` with its single `SMILEs/` works as `data/smiles/SMILEs`).
//! - Split folders: when the root holds `train/`, `val/` (or `valid/`, `validation/`) or
//!   `test/`, each is a data set of class sub-folders and defines that split; the class list is
//!   the sorted union of their class names.
//! - Otherwise the first-level sub-folders are the classes, sorted by name, and the split is
//!   stratified: within each class, files are sorted by path, shuffled with a PRNG keyed by
//!   (seed, class index), and the first `round(n * test_fraction)` go to test, the next
//!   `round(n * val_fraction)` to val, the rest to train. The same seed gives the same split on
//!   every machine (`FolderOptions::default()` is the "stratified 80/20 split with seed 0").
//! - Files are images by extension (png, jpg/jpeg, bmp, gif, webp, tif/tiff); other files and
//!   files that fail to decode (with `verify`, the default) are skipped and listed by name in
//!   [`ImageFolder::skipped`]. Hidden entries (starting with '.') and files directly in the
//!   root are ignored. Symlinked folders are not followed (no cycles).
//!
//! Decoded pixels go through [`Preprocess`]: x / 255, grayscale replicated to 3 channels or
//! colour turned into luma for 1, bilinear resize (exact when sizes match), optional mean/std.

use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::decode::decode_planes;
use super::preprocess::{Channels, Preprocess};
use super::rng::SplitMix64;
use super::{DataError, DataResult, Skipped};
use crate::engine::Tensor;

const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"];
const VAL_NAMES: [&str; 3] = ["val", "valid", "validation"];

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The split a folder name stands for, if any (case-insensitive).
    fn from_folder_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ if VAL_NAMES.contains(&lower.as_str()) => Some(Split::Val),
            _ => None,
        }
    }
}

/// How to read a folder data set.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderOptions {
    pub preprocess: Preprocess,
    /// Fractions of each class held out when the folder has no split sub-folders.
    pub val_fraction: f32,
    pub test_fraction: f32,
    pub seed: u64,
    /// Decode every file once while opening (in parallel) and skip those that fail, so that
    /// every index of every split loads. Without it, a bad file surfaces when it is loaded and
    /// the loader skips it then.
    pub verify: bool,
}

impl Default for FolderOptions {
    /// 3x64x64 in [0, 1], stratified 80/20 train/test split with seed 0, verified.
    fn default() -> Self {
        Self {
            preprocess: Preprocess::plain(Channels::Rgb, [64, 64]),
            val_fraction: 0.0,
            test_fraction: 0.2,
            seed: 0,
            verify: true,
        }
    }
}

impl FolderOptions {
    fn validate(&self) -> DataResult<()> {
        self.preprocess.validate()?;
        let ok = |f: f32| f.is_finite() && (0.0..1.0).contains(&f);
        if !ok(self.val_fraction)
            || !ok(self.test_fraction)
            || self.val_fraction + self.test_fraction >= 1.0
        {
            return Err(DataError::invalid(format!(
                "val fraction {} and test fraction {} must be in [0, 1) and leave a training part",
                self.val_fraction, self.test_fraction
            )));
        }
        Ok(())
    }
}

/// One labelled file.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    path: PathBuf,
    label: usize,
}

/// A scanned image folder with its three splits (some possibly empty).
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    train: Vec<Item>,
    val: Vec<Item>,
    test: Vec<Item>,
    skipped: Vec<Skipped>,
    presplit: bool,
    preprocess: Preprocess,
}

/// One split of a folder data set: what [`super::Dataset::Folder`] holds.
#[derive(Debug, Clone)]
pub struct FolderSplit {
    pub split: Split,
    classes: Vec<String>,
    items: Vec<Item>,
    preprocess: Preprocess,
}

impl ImageFolder {
    /// Scans `root` (see the module docs for the layout rules).
    pub fn open(root: impl AsRef<Path>, options: &FolderOptions) -> DataResult<Self> {
        options.validate()?;
        let given = root.as_ref();
        if !given.is_dir() {
            return Err(DataError::path(
                given,
                "is not a folder (or does not exist)",
            ));
        }
        let root = look_through_wrappers(given)?;
        let mut skipped = Vec::new();
        let split_dirs = split_folders(&root)?;
        let mut folder = if split_dirs.is_empty() {
            let (classes, items) = scan_classes(&root, &mut skipped)?;
            let [train, val, test] = stratified_split(items, classes.len(), options);
            Self::assemble(&root, classes, [train, val, test], false, options)
        } else {
            scan_presplit(&root, &split_dirs, &mut skipped, options)?
        };
        if options.verify {
            folder.verify(&mut skipped)?;
        }
        folder.skipped = skipped;
        Ok(folder)
    }

    fn assemble(
        root: &Path,
        classes: Vec<String>,
        [train, val, test]: [Vec<Item>; 3],
        presplit: bool,
        options: &FolderOptions,
    ) -> Self {
        Self {
            root: root.to_path_buf(),
            classes,
            train,
            val,
            test,
            skipped: Vec::new(),
            presplit,
            preprocess: options.preprocess.clone(),
        }
    }

    /// Decodes every file in parallel and drops those that fail; a class left without images
    /// is an error.
    fn verify(&mut self, skipped: &mut Vec<Skipped>) -> DataResult<()> {
        for items in [&mut self.train, &mut self.val, &mut self.test] {
            let results: Vec<Option<Skipped>> = items
                .par_iter()
                .map(|it| {
                    decode_planes(&it.path).err().map(|e| Skipped {
                        name: it.path.display().to_string(),
                        reason: error_reason(&e),
                    })
                })
                .collect();
            let mut keep = results.iter().map(Option::is_none);
            items.retain(|_| keep.next().unwrap_or(true));
            skipped.extend(results.into_iter().flatten());
        }
        for (label, class) in self.classes.iter().enumerate() {
            let all = [&self.train, &self.val, &self.test];
            if !all.iter().any(|s| s.iter().any(|it| it.label == label)) {
                return Err(DataError::path(
                    &self.root.join(class),
                    "has no image that decodes",
                ));
            }
        }
        Ok(())
    }

    /// The folder the data set was found in (after looking through wrappers).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// True when the split came from `train/`, `val/`, `test/` sub-folders.
    pub fn is_presplit(&self) -> bool {
        self.presplit
    }

    /// Files left out: not images, or (with `verify`) failing to decode.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    fn items(&self, split: Split) -> &[Item] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// Number of images in each split, `[train, val, test]`.
    pub fn split_sizes(&self) -> [usize; 3] {
        [self.train.len(), self.val.len(), self.test.len()]
    }

    /// Per-class counts of one split.
    pub fn class_counts(&self, split: Split) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        self.items(split)
            .iter()
            .for_each(|it| counts[it.label] += 1);
        counts
    }

    /// All images of one split, each once, in the order of the split (class-major, then path).
    pub fn split(&self, split: Split) -> FolderSplit {
        FolderSplit {
            split,
            classes: self.classes.clone(),
            items: self.items(split).to_vec(),
            preprocess: self.preprocess.clone(),
        }
    }

    /// Every image of every split together (e.g. to evaluate on a whole folder).
    pub fn all(&self) -> FolderSplit {
        let mut items = [self.train.as_slice(), &self.val, &self.test].concat();
        items.sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
        FolderSplit {
            split: Split::Test,
            classes: self.classes.clone(),
            items,
            preprocess: self.preprocess.clone(),
        }
    }
}

impl FolderSplit {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    fn item(&self, i: usize) -> DataResult<&Item> {
        self.items.get(i).ok_or_else(|| {
            DataError::invalid(format!(
                "index {i} is out of range: the {} split has {} images",
                self.split.name(),
                self.items.len()
            ))
        })
    }

    pub fn label(&self, i: usize) -> Option<usize> {
        self.items.get(i).map(|it| it.label)
    }

    pub fn path(&self, i: usize) -> Option<&Path> {
        self.items.get(i).map(|it| it.path.as_path())
    }

    /// Image `i` decoded and resized, `[c, h, w]` in [0, 1] (before normalisation).
    pub fn load_raw(&self, i: usize) -> DataResult<Tensor> {
        let item = self.item(i)?;
        let (planes, c, h, w) = decode_planes(&item.path)?;
        self.preprocess.raw_from_unit_planes(planes, c, h, w)
    }
}

/// The message of an error without its path prefix (the report names the file already).
fn error_reason(e: &DataError) -> String {
    match e {
        DataError::Path { msg, .. } => msg.clone(),
        DataError::Invalid(msg) => msg.clone(),
    }
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Every image file at or below `root` (by extension; hidden entries skipped, symlinked
/// folders not followed), in sorted depth-first order: a plain folder of images, with or without
/// class sub-folders (the microscope's patches read any folder). A single image file is a list
/// of one.
pub fn image_files_below(root: &Path) -> DataResult<Vec<PathBuf>> {
    if root.is_file() {
        return if has_image_extension(root) {
            Ok(vec![root.to_path_buf()])
        } else {
            Err(DataError::path(
                root,
                "is not an image file (png, jpg, bmp, gif, webp, tif)",
            ))
        };
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let (dirs, files) = list_dir(&dir)?;
        out.extend(files.into_iter().filter(|f| has_image_extension(f)));
        stack.extend(dirs.into_iter().rev());
    }
    Ok(out)
}

/// Visible entries of a folder split into (sub-folders, files), each sorted by name. Symlinks
/// to folders count as files-that-are-not-images and are thus never followed.
fn list_dir(dir: &Path) -> DataResult<(Vec<PathBuf>, Vec<PathBuf>)> {
    let entries =
        fs::read_dir(dir).map_err(|e| DataError::path(dir, format!("cannot list: {e}")))?;
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    for entry in entries {
        let entry = entry.map_err(|e| DataError::path(dir, format!("cannot list: {e}")))?;
        if is_hidden(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            dirs.push(entry.path());
        } else {
            files.push(entry.path());
        }
    }
    dirs.sort();
    files.sort();
    Ok((dirs, files))
}

fn folder_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn has_subfolders(dir: &Path) -> DataResult<bool> {
    Ok(!list_dir(dir)?.0.is_empty())
}

/// Descends through folders that hold no images and a single visible sub-folder which itself
/// has sub-folders (a lone folder of images is a single class, reported as such by the scan).
fn look_through_wrappers(root: &Path) -> DataResult<PathBuf> {
    let mut current = root.to_path_buf();
    loop {
        let (dirs, files) = list_dir(&current)?;
        let has_images = files.iter().any(|f| has_image_extension(f));
        match dirs.as_slice() {
            [only]
                if !has_images
                    && Split::from_folder_name(&folder_name(only)).is_none()
                    && has_subfolders(only)? =>
            {
                current = only.clone();
            }
            _ => return Ok(current),
        }
    }
}

/// The split sub-folders of `root` (empty when it is not split).
fn split_folders(root: &Path) -> DataResult<Vec<(Split, PathBuf)>> {
    let (dirs, _) = list_dir(root)?;
    Ok(dirs
        .into_iter()
        .filter_map(|d| Split::from_folder_name(&folder_name(&d)).map(|s| (s, d)))
        .collect())
}

/// Image files below `dir` at any depth, sorted; other files go to `skipped`.
fn collect_images(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    skipped: &mut Vec<Skipped>,
) -> DataResult<()> {
    let (dirs, files) = list_dir(dir)?;
    for f in files {
        if has_image_extension(&f) {
            out.push(f);
        } else {
            skipped.push(Skipped {
                name: f.display().to_string(),
                reason: "not an image file (unknown extension)".into(),
            });
        }
    }
    for d in dirs {
        collect_images(&d, out, skipped)?;
    }
    Ok(())
}

/// Class names (sorted) and labelled files of a folder whose sub-folders are classes.
fn scan_classes(root: &Path, skipped: &mut Vec<Skipped>) -> DataResult<(Vec<String>, Vec<Item>)> {
    let (dirs, _) = list_dir(root)?;
    match dirs.len() {
        0 => {
            return Err(DataError::path(
                root,
                "has no class sub-folders (expected one sub-folder per class)",
            ));
        }
        1 => {
            return Err(DataError::path(
                root,
                format!(
                    "has a single class sub-folder '{}'; a classifier needs at least two",
                    folder_name(&dirs[0])
                ),
            ));
        }
        _ => {}
    }
    let mut items = Vec::new();
    let mut classes = Vec::new();
    for (label, dir) in dirs.iter().enumerate() {
        let mut files = Vec::new();
        collect_images(dir, &mut files, skipped)?;
        if files.is_empty() {
            return Err(DataError::path(dir, "has no images"));
        }
        classes.push(folder_name(dir));
        items.extend(files.into_iter().map(|path| Item { path, label }));
    }
    Ok((classes, items))
}

/// Rounds `n * fraction` to the nearest count.
fn share(n: usize, fraction: f32) -> usize {
    ((n as f64 * fraction as f64).round() as usize).min(n)
}

/// `[train, val, test]` drawn per class (see the module docs).
fn stratified_split(items: Vec<Item>, n_classes: usize, options: &FolderOptions) -> [Vec<Item>; 3] {
    let mut by_class: Vec<Vec<Item>> = vec![Vec::new(); n_classes];
    items.into_iter().for_each(|it| by_class[it.label].push(it));
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (label, mut class_items) in by_class.into_iter().enumerate() {
        class_items.sort_by(|a, b| a.path.cmp(&b.path));
        SplitMix64::for_item(options.seed, 0x5917, label as u64).shuffle(&mut class_items);
        let n = class_items.len();
        let n_test = share(n, options.test_fraction);
        let n_val = share(n, options.val_fraction).min(n - n_test);
        let rest = class_items.split_off(n_test);
        test.extend(class_items);
        let mut rest = rest;
        let tail = rest.split_off(n_val);
        val.extend(rest);
        train.extend(tail);
    }
    for split in [&mut train, &mut val, &mut test] {
        split.sort_by(|a, b| (a.label, &a.path).cmp(&(b.label, &b.path)));
    }
    [train, val, test]
}

/// Reads `train/`, `val/`, `test/` sub-folders, each a set of class folders.
fn scan_presplit(
    root: &Path,
    split_dirs: &[(Split, PathBuf)],
    skipped: &mut Vec<Skipped>,
    options: &FolderOptions,
) -> DataResult<ImageFolder> {
    let mut classes: Vec<String> = Vec::new();
    for (_, dir) in split_dirs {
        let (dirs, _) = list_dir(dir)?;
        classes.extend(dirs.iter().map(|d| folder_name(d)));
    }
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return Err(DataError::path(
            root,
            format!(
                "its split folders hold {} class sub-folder(s); a classifier needs at least two",
                classes.len()
            ),
        ));
    }
    let mut parts: [Vec<Item>; 3] = Default::default();
    for (split, dir) in split_dirs {
        let slot = match split {
            Split::Train => 0,
            Split::Val => 1,
            Split::Test => 2,
        };
        let (dirs, _) = list_dir(dir)?;
        for class_dir in dirs {
            let name = folder_name(&class_dir);
            let label = classes.iter().position(|c| *c == name).unwrap_or(0);
            let mut files = Vec::new();
            collect_images(&class_dir, &mut files, skipped)?;
            parts[slot].extend(files.into_iter().map(|path| Item { path, label }));
        }
    }
    if parts.iter().all(Vec::is_empty) {
        return Err(DataError::path(root, "has split folders but no images"));
    }
    Ok(ImageFolder::assemble(root, classes, parts, true, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert_eq!(share(3690, 0.2), 738);
        assert_eq!(share(9475, 0.2), 1895);
    }

    #[test]
    fn split_names() {
        assert_eq!(Split::from_folder_name("Train"), Some(Split::Train));
        assert_eq!(Split::from_folder_name("validation"), Some(Split::Val));
        assert_eq!(Split::from_folder_name("smile"), None);
    }
}
