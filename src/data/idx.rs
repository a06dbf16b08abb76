//! MNIST / Fashion-MNIST in the IDX format (`*-images-idx3-ubyte`, `*-labels-idx1-ubyte`),
//! optionally gzip-compressed (detected by the gzip magic bytes, not the file name).
//!
//! IDX header: two zero bytes, a type byte (0x08 = unsigned byte, the only one accepted), the
//! number of dimensions, then each dimension as a big-endian u32. Images are `[n, rows, cols]`
//! (magic 0x00000803), labels `[n]` (magic 0x00000801). The declared sizes must match the file
//! length exactly and the two counts must agree. The whole set is held as bytes (MNIST's 60,000
//! training images are 47 MB).

use std::fs;
use std::io::Read;
use std::path::Path;

use super::preprocess::{Channels, Preprocess};
use super::{DataError, DataResult};
use crate::engine::Tensor;

const IDX_UBYTE: u8 = 0x08;
/// Refuse to inflate a .gz beyond this (a hostile file could expand without bound).
const MAX_INFLATED: u64 = 1 << 31;

/// An image/label pair of IDX files.
#[derive(Debug, Clone)]
pub struct IdxSet {
    images: Vec<u8>, // (n, rows, cols)
    labels: Vec<u8>, // (n,)
    rows: usize,
    cols: usize,
    n_classes: usize,
    preprocess: Preprocess,
}

/// Reads a file, inflating it when it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> DataResult<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| DataError::path(path, format!("cannot read: {e}")))?;
    if !raw.starts_with(&[0x1F, 0x8B]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .map_err(|e| DataError::path(path, format!("cannot inflate gzip data: {e}")))?;
    Ok(out)
}

/// Parses an IDX byte stream with `rank` dimensions of unsigned bytes: `(dims, payload)`.
pub fn parse_idx<'a>(bytes: &'a [u8], rank: u8, name: &Path) -> DataResult<(Vec<usize>, &'a [u8])> {
    let bad = |msg: String| DataError::path(name, msg);
    if bytes.len() < 4 {
        return Err(bad(format!(
            "{} bytes is too short for an IDX header",
            bytes.len()
        )));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = ((IDX_UBYTE as u32) << 8) | rank as u32;
    if magic != expected {
        return Err(bad(format!(
            "bad IDX magic number 0x{magic:08X}, expected 0x{expected:08X} (unsigned bytes, {rank} dimension(s))"
        )));
    }
    let header = 4 + 4 * rank as usize;
    if bytes.len() < header {
        return Err(bad(format!(
            "IDX header needs {header} bytes, the file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let declared = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("IDX dimensions {dims:?} overflow")))?;
    let payload = &bytes[header..];
    if payload.len() != declared {
        return Err(bad(format!(
            "IDX header declares dimensions {dims:?} = {declared} bytes of data, the file holds {}",
            payload.len()
        )));
    }
    Ok((dims, payload))
}

/// Encodes unsigned bytes as an IDX stream (for tests and tools).
pub fn write_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, IDX_UBYTE, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

impl IdxSet {
    /// Reads an images file (`idx3`) and a labels file (`idx1`), plain or gzip.
    pub fn open(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> DataResult<Self> {
        let (ip, lp) = (images.as_ref(), labels.as_ref());
        Self::from_bytes(&read_maybe_gz(ip)?, ip, &read_maybe_gz(lp)?, lp)
    }

    /// Parses already-read streams; the paths only name them in errors.
    pub fn from_bytes(
        images: &[u8],
        images_name: &Path,
        labels: &[u8],
        labels_name: &Path,
    ) -> DataResult<Self> {
        let (idims, ipix) = parse_idx(images, 3, images_name)?;
        let (ldims, lbytes) = parse_idx(labels, 1, labels_name)?;
        let (n, rows, cols) = (idims[0], idims[1], idims[2]);
        if ldims[0] != n {
            return Err(DataError::path(
                labels_name,
                format!(
                    "declares {} labels but {} has {n} images",
                    ldims[0],
                    images_name.display()
                ),
            ));
        }
        if n == 0 || rows == 0 || cols == 0 {
            return Err(DataError::path(
                images_name,
                format!("holds no images ({n} x {rows} x {cols})"),
            ));
        }
        let n_classes = lbytes.iter().copied().max().map_or(0, |m| m as usize + 1);
        Ok(Self {
            images: ipix.to_vec(),
            labels: lbytes.to_vec(),
            rows,
            cols,
            n_classes: n_classes.max(2),
            preprocess: Preprocess::plain(Channels::Gray, [rows, cols]),
        })
    }

    /// Another channel count or size (default: 1 x rows x cols).
    pub fn with_preprocess(mut self, preprocess: Preprocess) -> DataResult<Self> {
        preprocess.validate()?;
        self.preprocess = preprocess;
        Ok(self)
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image size `(rows, cols)` as stored.
    pub fn image_size(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// `max label + 1` (at least 2); class names are the digits "0", "1", ...
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.get(i).map(|&l| l as usize)
    }

    /// The raw image `i` as stored, `(rows, cols)` bytes.
    pub fn pixels(&self, i: usize) -> Option<&[u8]> {
        let px = self.rows * self.cols;
        self.images.get(i * px..(i + 1) * px)
    }

    /// Image `i` as a raw sample `[c, h, w]` in [0, 1] (before normalisation).
    pub fn load_raw(&self, i: usize) -> DataResult<Tensor> {
        let px = self.pixels(i).ok_or_else(|| {
            DataError::invalid(format!(
                "IDX index {i} is out of range: {} images",
                self.len()
            ))
        })?;
        let planes = px.iter().map(|&v| v as f32 / 255.0).collect(); // (1, rows, cols)
        self.preprocess
            .raw_from_unit_planes(planes, 1, self.rows, self.cols)
    }
}
