//! The top dataset patches of each unit: a folder streamed once through the graph up to the
//! layer, in batches, keeping for every chosen channel the `top` images with the highest peak
//! (the channel's largest activation over positions), where that peak is and the input pixels
//! it sees, and a histogram of the per-image peaks. What is kept is `channels × top` hits and
//! `channels × bins` counts, whatever the folder's size; a batch's images are decoded, run and
//! dropped before the next.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::receptive::{Field, receptive_fields};
use super::units::UnitLayer;
use super::visualise::stack;
use crate::engine::{ForwardOptions, Graph, Keep, Tensor};
use crate::explain::{Control, ExplainError, ExplainResult};
use crate::models::Preprocess;
use crate::models::preprocess::{Image, fit};

/// How a folder is scanned.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanConfig {
    /// Images per forward pass.
    pub batch: usize,
    /// Images kept per unit.
    pub top: usize,
    /// Histogram bins (a multiple of 4).
    pub bins: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            batch: 16,
            top: 9,
            bins: 40,
        }
    }
}

/// Where a scanned image comes from: a file, or a photo bundled in the binary (the default
/// when no folder is given).
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    File(PathBuf),
    Bundled {
        name: &'static str,
        bytes: &'static [u8],
    },
}

impl Source {
    /// The bundled sample photos.
    pub fn bundled() -> Vec<Source> {
        crate::models::bundled::SAMPLE_IMAGES
            .iter()
            .map(|&(name, bytes)| Source::Bundled { name, bytes })
            .collect()
    }

    /// The files of a folder list.
    pub fn files(paths: Vec<PathBuf>) -> Vec<Source> {
        paths.into_iter().map(Source::File).collect()
    }

    /// The path, or the bundled photo's name.
    pub fn display(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Bundled { name, .. } => format!("bundled:{name}"),
        }
    }

    /// Decoded (the error names the file).
    pub fn open(&self) -> ExplainResult<Image> {
        let image = match self {
            Source::File(p) => Image::open(p),
            Source::Bundled { name, bytes } => Image::decode(bytes, Path::new(name)),
        };
        image.map_err(|e| ExplainError::invalid(e.to_string()))
    }
}

/// One of a unit's best images.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub source: Source,
    /// The channel's peak in this image.
    pub score: f32,
    /// The channel's spatial mean in this image.
    pub mean: f32,
    /// `[y, x]` of the peak on the layer's grid.
    pub at: [usize; 2],
    /// The input pixels the peak sees, `[top, left, bottom, right)` in the model's input (the
    /// image after the preset's resize and crop).
    pub bbox: [usize; 4],
}

/// Counts over `[−range, range)` in `counts.len()` equal bins; the range doubles (merging
/// neighbouring bins) when a value falls outside, so any activation scale fits in fixed memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub range: f32,
    pub counts: Vec<u64>,
}

impl Histogram {
    fn new(bins: usize) -> Self {
        Self {
            range: 1.0,
            counts: vec![0; bins.max(4).div_ceil(4) * 4],
        }
    }

    fn add(&mut self, v: f32) {
        if !v.is_finite() {
            return;
        }
        while v.abs() >= self.range {
            let n = self.counts.len();
            let mut merged = vec![0u64; n];
            for (i, &c) in self.counts.iter().enumerate() {
                merged[n / 4 + i / 2] += c;
            }
            self.counts = merged;
            self.range *= 2.0;
        }
        let n = self.counts.len();
        let at = ((v + self.range) / (2.0 * self.range) * n as f32) as usize;
        self.counts[at.min(n - 1)] += 1;
    }

    /// `(low edge, high edge, count)` of each bin from the first to the last non-empty one.
    pub fn bins(&self) -> Vec<(f32, f32, u64)> {
        let n = self.counts.len();
        let width = 2.0 * self.range / n as f32;
        let first = self.counts.iter().position(|&c| c > 0);
        let last = self.counts.iter().rposition(|&c| c > 0);
        match (first, last) {
            (Some(a), Some(b)) => (a..=b)
                .map(|i| {
                    let lo = -self.range + i as f32 * width;
                    (lo, lo + width, self.counts[i])
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What the scan found for one unit.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitScan {
    pub channel: usize,
    /// Best first, at most `top`.
    pub top: Vec<Hit>,
    /// The per-image peaks.
    pub histogram: Histogram,
    /// The largest spatial mean over the images (the statistic a visualisation maximises).
    pub max_mean: f32,
}

impl UnitScan {
    fn new(channel: usize, bins: usize) -> Self {
        Self {
            channel,
            top: Vec::new(),
            histogram: Histogram::new(bins),
            max_mean: f32::NEG_INFINITY,
        }
    }

    /// Counts an image's `score` (peak) and `mean`; `hit` makes the image's entry (a copy of
    /// its path) only when it enters the best `keep` — for most images of a large folder it
    /// does not, and this runs for every image and unit.
    fn offer(&mut self, score: f32, mean: f32, keep: usize, hit: impl FnOnce() -> Hit) {
        self.histogram.add(score);
        self.max_mean = self.max_mean.max(mean);
        if self.top.len() == keep && self.top.last().is_some_and(|l| l.score >= score) {
            return;
        }
        let at = self.top.partition_point(|h| h.score >= score);
        self.top.insert(at, hit());
        self.top.truncate(keep);
    }
}

/// The whole scan.
#[derive(Clone, Debug, PartialEq)]
pub struct ScanReport {
    pub layer: String,
    /// `[h, w]` of the model's input (the space of the hits' boxes).
    pub input_size: [usize; 2],
    /// Images read.
    pub images: usize,
    /// Images that could not be read, with the reason.
    pub skipped: Vec<(String, String)>,
    pub units: Vec<UnitScan>,
}

/// Every image at or below `root`, sorted; an error names the folder.
pub fn image_files(root: &Path) -> ExplainResult<Vec<Source>> {
    let files = crate::data::folder::image_files_below(root)
        .map_err(|e| ExplainError::invalid(e.to_string()))?;
    if files.is_empty() {
        return Err(ExplainError::invalid(format!(
            "{}: no image files (png, jpg, bmp, gif, webp, tif) at or below it",
            root.display()
        )));
    }
    Ok(Source::files(files))
}

/// Streams `files` through `graph` up to `layer` and keeps each channel's best images. An image
/// that cannot be read is skipped and listed; the scan fails only if none can be read.
pub fn scan_folder(
    graph: &Graph,
    preprocess: &Preprocess,
    layer: &UnitLayer,
    channels: &[usize],
    files: &[Source],
    config: &ScanConfig,
    ctl: Control,
) -> ExplainResult<ScanReport> {
    if config.batch == 0 || config.top == 0 {
        return Err(ExplainError::invalid(
            "the scan needs a batch and a top of at least 1",
        ));
    }
    if let Some(&c) = channels.iter().find(|&&c| c >= layer.channels) {
        return Err(ExplainError::invalid(format!(
            "channel {c} is out of range: layer '{}' has {} channels",
            layer.name, layer.channels
        )));
    }
    let prefix = graph.subgraph(&[layer.value], None)?;
    let fast = prefix.inference(&[layer.name.as_str()])?;
    let out = fast.value_id(&layer.name).ok_or_else(|| {
        ExplainError::invalid(format!("internal: '{}' was fused away", layer.name))
    })?;
    let field = receptive_fields(graph)[layer.value];
    let input_size = preprocess.size;
    let mut units: Vec<UnitScan> = channels
        .iter()
        .map(|&c| UnitScan::new(c, config.bins))
        .collect();
    let mut skipped = Vec::new();
    let mut images = 0usize;
    let batch_cap = config.batch.min(graph.max_batch()).max(1);
    let total = files.len();
    for (done, chunk) in files.chunks(batch_cap).enumerate() {
        let decoded: Vec<(usize, Result<Tensor, String>)> = chunk
            .par_iter()
            .enumerate()
            .map(|(i, source)| {
                let tensor = source
                    .open()
                    .and_then(|image| {
                        preprocess.image_to_tensor(&image).map_err(|e| {
                            ExplainError::invalid(format!("{}: {e}", source.display()))
                        })
                    })
                    .map_err(|e| e.to_string());
                (i, tensor)
            })
            .collect();
        let mut items = Vec::new();
        for (i, r) in decoded {
            match r {
                Ok(t) => items.push((i, t)),
                Err(e) => skipped.push((chunk[i].display(), e)),
            }
        }
        if !items.is_empty() {
            let x = stack(items.iter().map(|(_, t)| t))?;
            let opts = ForwardOptions {
                keep: Keep::Outputs,
                ..ForwardOptions::eval()
            };
            let pass = fast.forward(std::slice::from_ref(&x), &opts)?;
            let a = pass
                .get(out)
                .ok_or_else(|| ExplainError::invalid("the forward pass lost the layer"))?;
            record(
                a, &items, chunk, channels, field, input_size, config.top, &mut units,
            )?;
            images += items.len();
        }
        ctl.step(((done + 1) * batch_cap).min(total), total)?;
    }
    if images == 0 {
        return Err(ExplainError::invalid(format!(
            "none of the {total} images could be read (first: {})",
            skipped.first().map(|(_, e)| e.clone()).unwrap_or_default()
        )));
    }
    Ok(ScanReport {
        layer: layer.name.clone(),
        input_size,
        images,
        skipped,
        units,
    })
}

/// Offers each image's peak of each chosen channel to that unit. `a` is `[n, c, h, w]` or
/// `[n, c]`; `items[k].0` is item k's index in `chunk`.
#[allow(clippy::too_many_arguments)]
fn record(
    a: &Tensor,
    items: &[(usize, Tensor)],
    chunk: &[Source],
    channels: &[usize],
    field: Option<Field>,
    input_size: [usize; 2],
    top: usize,
    units: &mut [UnitScan],
) -> ExplainResult<()> {
    let shape = a.shape();
    let (c, h, w) = match shape {
        [_, c, h, w] => (*c, *h, *w),
        [_, c] => (*c, 1, 1),
        s => return Err(ExplainError::invalid(format!("the layer gave shape {s:?}"))),
    };
    let plane = h * w;
    let whole = [0, 0, input_size[0], input_size[1]];
    for (k, (i, _)) in items.iter().enumerate() {
        let item = &a.data()[k * c * plane..(k + 1) * c * plane];
        for (unit, &ch) in units.iter_mut().zip(channels) {
            let values = &item[ch * plane..(ch + 1) * plane];
            let (arg, peak) = values.iter().copied().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |(bi, bv), (j, v)| {
                    if v > bv { (j, v) } else { (bi, bv) }
                },
            );
            let mean = (values.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32;
            unit.offer(peak, mean, top, || {
                let at = [arg / w, arg % w];
                let bbox = match field {
                    Some(f) if plane > 1 => f.box_at(at[0], at[1], input_size),
                    _ => whole,
                };
                Hit {
                    source: chunk[*i].clone(),
                    score: peak,
                    mean,
                    at,
                    bbox,
                }
            });
        }
    }
    Ok(())
}

/// The patch of a hit: the image after the preset's resize and crop, cut to the hit's box.
pub fn crop_patch(hit: &Hit, preprocess: &Preprocess) -> ExplainResult<image::RgbImage> {
    let image = hit.source.open()?;
    let fitted = fit(&image, preprocess);
    let (h, w) = (fitted.height, fitted.width);
    let rgb = fitted.to_rgb8();
    let [top, left, bottom, right] = hit.bbox;
    let (bottom, right) = (bottom.min(h), right.min(w));
    if top >= bottom || left >= right {
        return Err(ExplainError::invalid(format!(
            "{}: the patch {:?} is outside the {h}x{w} image",
            hit.source.display(),
            hit.bbox
        )));
    }
    Ok(image::imageops::crop_imm(
        &rgb,
        left as u32,
        top as u32,
        (right - left) as u32,
        (bottom - top) as u32,
    )
    .to_image())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_doubles_without_losing_counts() {
        let mut h = Histogram::new(8);
        for v in [0.1, 0.5, -0.7, 3.0, 9.5, 0.0] {
            h.add(v);
        }
        assert_eq!(h.total(), 6);
        assert_eq!(h.range, 16.0);
        let bins = h.bins();
        assert!(bins.first().is_some_and(|b| b.0 <= -0.7));
        assert!(bins.last().is_some_and(|b| b.1 > 9.5));
        h.add(f32::NAN);
        assert_eq!(h.total(), 6);
    }

    #[test]
    fn a_unit_keeps_its_best_in_order() {
        let mut u = UnitScan::new(0, 8);
        for (i, s) in [3.0f32, 1.0, 5.0, 4.0, 2.0].into_iter().enumerate() {
            let hit = || Hit {
                source: Source::File(PathBuf::from(format!("{i}.png"))),
                score: s,
                mean: s / 2.0,
                at: [0, 0],
                bbox: [0, 0, 1, 1],
            };
            u.offer(s, s / 2.0, 3, hit);
        }
        let scores: Vec<f32> = u.top.iter().map(|h| h.score).collect();
        assert_eq!(scores, vec![5.0, 4.0, 3.0]);
        assert_eq!(u.max_mean, 2.5);
        assert_eq!(u.histogram.total(), 5);
    }
}
