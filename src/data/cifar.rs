//! CIFAR-10 binary batches (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`).
//!
//! Each record is 3073 bytes: the label (0..=9), then 1024 red, 1024 green and 1024 blue bytes,
//! each a 32x32 row-major plane, i.e. already `(3, 32, 32)`. The format has no header, so
//! validation is: a non-empty file whose length is a whole number of records, and every label
//! below 10. (The official batches hold 10,000 records; smaller files are accepted.)

use std::fs;
use std::path::{Path, PathBuf};

use super::folder::Split;
use super::preprocess::{Channels, Preprocess};
use super::{DataError, DataResult};
use crate::engine::Tensor;

pub const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;
/// Bytes per record: one label byte and the (3, 32, 32) pixels.
pub const RECORD: usize = 1 + PIXELS;

pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-10 records from one or more batch files.
#[derive(Debug, Clone)]
pub struct CifarSet {
    records: Vec<u8>, // (n, 3073)
    preprocess: Preprocess,
}

/// Checks one batch file's bytes (length and labels).
fn validate_batch(bytes: &[u8], name: &Path) -> DataResult<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::path(
            name,
            format!(
                "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records",
                bytes.len()
            ),
        ));
    }
    if let Some((i, rec)) = bytes
        .chunks_exact(RECORD)
        .enumerate()
        .find(|(_, r)| r[0] as usize >= CLASSES.len())
    {
        return Err(DataError::path(
            name,
            format!("record {i} has label {}, CIFAR-10 labels are 0..=9", rec[0]),
        ));
    }
    Ok(())
}

impl CifarSet {
    /// Reads and concatenates batch files in the order given.
    pub fn open(paths: &[PathBuf]) -> DataResult<Self> {
        if paths.is_empty() {
            return Err(DataError::invalid("no CIFAR-10 batch files given"));
        }
        let mut records = Vec::new();
        for p in paths {
            let bytes = fs::read(p).map_err(|e| DataError::path(p, format!("cannot read: {e}")))?;
            validate_batch(&bytes, p)?;
            records.extend_from_slice(&bytes);
        }
        Ok(Self {
            records,
            preprocess: Preprocess::plain(Channels::Rgb, [SIDE, SIDE]),
        })
    }

    /// The batches of a split in the usual directory (`cifar-10-batches-bin`): `Train` reads the
    /// `data_batch_N.bin` files present (N = 1..5, at least one), `Test` reads `test_batch.bin`.
    pub fn open_dir(dir: impl AsRef<Path>, split: Split) -> DataResult<Self> {
        let dir = dir.as_ref();
        let paths: Vec<PathBuf> = match split {
            Split::Train => (1..=5)
                .map(|i| dir.join(format!("data_batch_{i}.bin")))
                .filter(|p| p.is_file())
                .collect(),
            Split::Test => vec![dir.join("test_batch.bin")],
            Split::Val => {
                return Err(DataError::path(dir, "CIFAR-10 has no validation batch"));
            }
        };
        if paths.is_empty() {
            return Err(DataError::path(dir, "holds no data_batch_N.bin files"));
        }
        Self::open(&paths)
    }

    /// Another channel count or size (default: 3 x 32 x 32).
    pub fn with_preprocess(mut self, preprocess: Preprocess) -> DataResult<Self> {
        preprocess.validate()?;
        self.preprocess = preprocess;
        Ok(self)
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    pub fn len(&self) -> usize {
        self.records.len() / RECORD
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn record(&self, i: usize) -> Option<&[u8]> {
        self.records.get(i * RECORD..(i + 1) * RECORD)
    }

    pub fn label(&self, i: usize) -> Option<usize> {
        self.record(i).map(|r| r[0] as usize)
    }

    /// Record `i` as a raw sample `[c, h, w]` in [0, 1] (before normalisation).
    pub fn load_raw(&self, i: usize) -> DataResult<Tensor> {
        let rec = self.record(i).ok_or_else(|| {
            DataError::invalid(format!(
                "CIFAR-10 index {i} is out of range: {} records",
                self.len()
            ))
        })?;
        let planes = rec[1..].iter().map(|&v| v as f32 / 255.0).collect(); // (3, 32, 32)
        self.preprocess.raw_from_unit_planes(planes, 3, SIDE, SIDE)
    }
}
