//! The closed set of data sets and the batch loader.
//!
//! [`Loader::epoch`] returns a [`BatchIter`]: a named prefetch thread decodes the next batches
//! (items of a batch in parallel on rayon's pool) while the caller computes, and hands them over
//! a bounded channel of `prefetch` batches. So at most `prefetch + 2` batches exist at once (the
//! queue, the one being built, the caller's), whatever the data set's size: a folder larger than
//! memory streams from disk. An optional cache keeps decoded raw samples under a byte budget
//! (first come, first kept; no eviction), so later epochs skip decoding for what fits.
//!
//! Order: shuffled per epoch from (seed, epoch), or sequential. Every index appears exactly once
//! per epoch. The last partial batch is kept unless `drop_last`; a batch size larger than the data
//! set yields one batch holding the whole set, even with `drop_last` (an epoch is never empty).
//! A sample that fails to load is left out of its batch and recorded in [`Loader::skipped`]; a
//! batch whose samples all fail is left out. Augmentation draws from a PRNG keyed by (seed,
//! epoch, index), so batches are identical for a given seed whatever the thread count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rayon::prelude::*;

use super::augment::Augment;
use super::cifar::{self, CifarSet};
use super::folder::FolderSplit;
use super::idx::IdxSet;
use super::preprocess::Preprocess;
use super::rng::SplitMix64;
use super::synthetic::{self, SyntheticFaces};
use super::{DataError, DataResult, Skipped};
use crate::engine::Tensor;

/// Every kind of data set the application can train or evaluate on.
#[derive(Debug, Clone)]
pub enum Dataset {
    Synthetic(SyntheticFaces),
    Folder(FolderSplit),
    Idx(IdxSet),
    Cifar(CifarSet),
}

impl Dataset {
    pub fn len(&self) -> usize {
        match self {
            Dataset::Synthetic(s) => s.len(),
            Dataset::Folder(f) => f.len(),
            Dataset::Idx(d) => d.len(),
            Dataset::Cifar(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label of item `i` (`None` out of range), known without decoding.
    pub fn label(&self, i: usize) -> Option<usize> {
        match self {
            Dataset::Synthetic(s) => (i < s.len()).then(|| s.label(i)),
            Dataset::Folder(f) => f.label(i),
            Dataset::Idx(d) => d.label(i),
            Dataset::Cifar(c) => c.label(i),
        }
    }

    /// Class names in label order.
    pub fn classes(&self) -> Vec<String> {
        match self {
            Dataset::Synthetic(_) => synthetic::CLASSES.iter().map(|s| s.to_string()).collect(),
            Dataset::Folder(f) => f.classes().to_vec(),
            Dataset::Idx(d) => (0..d.n_classes()).map(|c| c.to_string()).collect(),
            Dataset::Cifar(_) => cifar::CLASSES.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn preprocess(&self) -> &Preprocess {
        match self {
            Dataset::Synthetic(s) => s.preprocess(),
            Dataset::Folder(f) => f.preprocess(),
            Dataset::Idx(d) => d.preprocess(),
            Dataset::Cifar(c) => c.preprocess(),
        }
    }

    /// The shape of every finished sample: `[c, h, w]` (NCHW) or `[h, w, c]` (NHWC).
    pub fn sample_shape(&self) -> [usize; 3] {
        self.preprocess().sample_shape()
    }

    /// A name for item `i` in reports: the file path, or `<kind>#<index>`.
    pub fn item_name(&self, i: usize) -> String {
        match self {
            Dataset::Folder(f) => f
                .path(i)
                .map_or_else(|| format!("folder#{i}"), |p| p.display().to_string()),
            Dataset::Synthetic(_) => format!("synthetic#{i}"),
            Dataset::Idx(_) => format!("idx#{i}"),
            Dataset::Cifar(_) => format!("cifar#{i}"),
        }
    }

    /// Item `i` as a raw sample ([`Preprocess::raw`]): `[c, h, w]` in [0, 1], RGB order.
    pub fn load_raw(&self, i: usize) -> DataResult<Tensor> {
        match self {
            Dataset::Synthetic(s) => s.load_raw(i),
            Dataset::Folder(f) => f.load_raw(i),
            Dataset::Idx(d) => d.load_raw(i),
            Dataset::Cifar(c) => c.load_raw(i),
        }
    }

    /// Item `i` fully preprocessed ([`Self::sample_shape`]), and its label.
    pub fn load(&self, i: usize) -> DataResult<(Tensor, usize)> {
        let label = self.label(i).ok_or_else(|| {
            DataError::invalid(format!("index {i} is out of range: {} items", self.len()))
        })?;
        let x = self.preprocess().finish(&self.load_raw(i)?)?;
        Ok((x, label))
    }
}

/// How to batch a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderOptions {
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Leave out the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    pub augment: Augment,
    /// Batches decoded ahead of the caller (at least 1).
    pub prefetch: usize,
    /// Byte budget of the decoded-sample cache (0 = no cache).
    pub cache_bytes: usize,
}

impl Default for LoaderOptions {
    /// Batch 32, shuffled with seed 0, last batch kept, no augmentation, 2 batches ahead,
    /// no cache.
    fn default() -> Self {
        Self {
            batch_size: 32,
            shuffle: true,
            seed: 0,
            drop_last: false,
            augment: Augment::default(),
            prefetch: 2,
            cache_bytes: 0,
        }
    }
}

/// A stacked batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// (n, c, h, w)
    pub x: Tensor,
    pub labels: Vec<usize>,
    /// The data set indices of the rows of `x`.
    pub indices: Vec<usize>,
}

/// Decoded raw samples kept under a byte budget.
#[derive(Debug)]
struct SampleCache {
    budget: usize,
    used: AtomicUsize,
    map: Mutex<HashMap<usize, Arc<Tensor>>>,
}

impl SampleCache {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            used: AtomicUsize::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, i: usize) -> Option<Arc<Tensor>> {
        if self.budget == 0 {
            return None;
        }
        self.map.lock().ok()?.get(&i).cloned()
    }

    /// Keeps `t` when it fits in what is left of the budget.
    fn offer(&self, i: usize, t: &Tensor) {
        let bytes = t.numel() * std::mem::size_of::<f32>();
        if self.budget == 0 || self.used.load(Ordering::Relaxed) + bytes > self.budget {
            return;
        }
        if let Ok(mut map) = self.map.lock()
            && !map.contains_key(&i)
        {
            self.used.fetch_add(bytes, Ordering::Relaxed);
            map.insert(i, Arc::new(t.clone()));
        }
    }
}

/// Everything the prefetch thread shares with the loader.
#[derive(Debug)]
struct Shared {
    dataset: Dataset,
    options: LoaderOptions,
    cache: SampleCache,
    skipped: Mutex<Vec<Skipped>>,
}

/// Batches a data set epoch by epoch.
#[derive(Debug, Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl Loader {
    pub fn new(dataset: Dataset, options: LoaderOptions) -> DataResult<Self> {
        if options.batch_size == 0 {
            return Err(DataError::invalid("batch size must be at least 1"));
        }
        if dataset.is_empty() {
            return Err(DataError::invalid(
                "the data set is empty: nothing to batch",
            ));
        }
        options.augment.validate()?;
        dataset.preprocess().validate()?;
        let cache = SampleCache::new(options.cache_bytes);
        Ok(Self {
            shared: Arc::new(Shared {
                dataset,
                options,
                cache,
                skipped: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn dataset(&self) -> &Dataset {
        &self.shared.dataset
    }

    pub fn options(&self) -> &LoaderOptions {
        &self.shared.options
    }

    /// The order in which an epoch visits the indices.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shared.dataset.len()).collect();
        if self.shared.options.shuffle {
            SplitMix64::for_item(self.shared.options.seed, 0xE90C, epoch).shuffle(&mut order);
        }
        order
    }

    /// Index chunks of one epoch, one per batch (see the module docs for the last batch).
    fn chunks(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = self.epoch_order(epoch);
        let b = self.shared.options.batch_size;
        let mut chunks: Vec<Vec<usize>> = order.chunks(b).map(<[usize]>::to_vec).collect();
        let partial = chunks.last().is_some_and(|c| c.len() < b);
        if self.shared.options.drop_last && partial && chunks.len() > 1 {
            chunks.pop();
        }
        chunks
    }

    /// Number of batches an epoch yields (before any load failure).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.shared.dataset.len(), self.shared.options.batch_size);
        if self.shared.options.drop_last && n > b {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Starts decoding epoch `epoch` in the background.
    pub fn epoch(&self, epoch: u64) -> BatchIter {
        let chunks = self.chunks(epoch);
        let remaining = chunks.len();
        let (tx, rx) = sync_channel(self.shared.options.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&self.shared);
        let stop_flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("convscope-data".into())
            .spawn(move || produce(&shared, epoch, chunks, &tx, &stop_flag));
        match handle {
            Ok(h) => BatchIter {
                rx: Some(rx),
                stop,
                handle: Some(h),
                remaining,
                failed: None,
            },
            Err(e) => BatchIter {
                rx: None,
                stop,
                handle: None,
                remaining: 0,
                failed: Some(DataError::invalid(format!(
                    "cannot start the data thread: {e}"
                ))),
            },
        }
    }

    /// Samples that failed to load so far (each file once), with the reason.
    pub fn skipped(&self) -> Vec<Skipped> {
        self.shared
            .skipped
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Bytes held by the sample cache.
    pub fn cached_bytes(&self) -> usize {
        self.shared.cache.used.load(Ordering::Relaxed)
    }
}

/// The prefetch thread's loop: build each batch and send it, until done, stopped, or the
/// receiver is gone.
fn produce(
    shared: &Shared,
    epoch: u64,
    chunks: Vec<Vec<usize>>,
    tx: &SyncSender<DataResult<Batch>>,
    stop: &AtomicBool,
) {
    for chunk in chunks {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let batch = match build_batch(shared, epoch, &chunk) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => continue, // every sample failed; they are in the skip report
            Err(e) => Err(e),
        };
        let failed = batch.is_err();
        if tx.send(batch).is_err() || failed {
            return;
        }
    }
}

/// One sample: from the cache or decoded (and offered to the cache), then augmented and
/// finished in the model's channel order, normalisation and layout.
fn prepare(shared: &Shared, epoch: u64, i: usize) -> DataResult<Tensor> {
    let mut x = match shared.cache.get(i) {
        Some(t) => (*t).clone(),
        None => {
            let t = shared.dataset.load_raw(i)?;
            shared.cache.offer(i, &t);
            t
        }
    }; // (c, h, w)
    let aug = &shared.options.augment;
    if !aug.is_identity() {
        let mut rng =
            SplitMix64::for_item(shared.options.seed ^ epoch.rotate_left(32), 0xA06, i as u64);
        aug.apply(&mut x, &mut rng)?;
    }
    shared.dataset.preprocess().finish(&x)
}

/// Loads a chunk in parallel and stacks what loaded; `None` when nothing did.
fn build_batch(shared: &Shared, epoch: u64, chunk: &[usize]) -> DataResult<Option<Batch>> {
    let loaded: Vec<(usize, DataResult<Tensor>)> = chunk
        .par_iter()
        .map(|&i| (i, prepare(shared, epoch, i)))
        .collect();
    let shape = shared.dataset.sample_shape(); // [c, h, w] or [h, w, c]
    let per: usize = shape.iter().product();
    let mut data = Vec::with_capacity(loaded.len() * per); // (n, ...shape)
    let (mut labels, mut indices) = (Vec::new(), Vec::new());
    for (i, result) in loaded {
        match result {
            Ok(x) if x.numel() == per => {
                data.extend_from_slice(x.data());
                labels.push(shared.dataset.label(i).unwrap_or(0));
                indices.push(i);
            }
            Ok(x) => {
                return Err(DataError::invalid(format!(
                    "{} loaded as {:?}, expected {shape:?}",
                    shared.dataset.item_name(i),
                    x.shape()
                )));
            }
            Err(e) => record_skip(shared, i, &e),
        }
    }
    if indices.is_empty() {
        return Ok(None);
    }
    let x = Tensor::new([&[indices.len()][..], &shape].concat(), data)?;
    Ok(Some(Batch { x, labels, indices }))
}

fn record_skip(shared: &Shared, i: usize, e: &DataError) {
    let name = shared.dataset.item_name(i);
    let reason = match e {
        DataError::Path { msg, .. } => msg.clone(),
        DataError::Invalid(msg) => msg.clone(),
    };
    if let Ok(mut s) = shared.skipped.lock()
        && !s.iter().any(|k| k.name == name)
    {
        s.push(Skipped { name, reason });
    }
}

/// The batches of one epoch, decoded ahead on a background thread. Dropping it stops the
/// thread after the batch it is building.
#[derive(Debug)]
pub struct BatchIter {
    rx: Option<Receiver<DataResult<Batch>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
    failed: Option<DataError>,
}

impl Iterator for BatchIter {
    type Item = DataResult<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let item = self.rx.as_ref()?.recv().ok()?; // Err: the producer finished
        self.remaining = self.remaining.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining + usize::from(self.failed.is_some())))
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver first unblocks a producer waiting on a full channel.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
