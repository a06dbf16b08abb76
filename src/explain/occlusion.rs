//! Occlusion sensitivity (Zeiler & Fergus): slide a patch filled with a constant over the
//! image and record how much the target score y_c (pre-softmax) drops.

use super::Map;
use super::gradient::fill_image;
use super::target::{Explainer, ResolvedTarget, Target};
use super::util::batch_of;
use super::{Control, ExplainError, ExplainResult, single_image_dims};
use crate::engine::Tensor;

#[derive(Clone, Debug, PartialEq)]
pub struct OcclusionOptions {
    /// Side of the square patch in input pixels.
    pub patch: usize,
    pub stride: usize,
    /// Patch value per channel (or one for all); `vec![0.0]` is the mean colour for
    /// mean/std-normalised inputs.
    pub fill: Vec<f32>,
    /// Occluded images per forward pass.
    pub batch: usize,
}

impl Default for OcclusionOptions {
    fn default() -> Self {
        Self {
            patch: 32,
            stride: 16,
            fill: vec![0.0],
            batch: 16,
        }
    }
}

#[derive(Clone, Debug)]
pub struct OcclusionResult {
    /// Score drop y_c(x) - y_c(occluded) per patch position `[rows, cols]`.
    pub raw: Map,
    /// Per pixel, the mean drop of the patches covering it, scaled to [0, 1] by min-max.
    pub map: Map,
    pub target: ResolvedTarget,
    pub score: f32,
}

/// Patch origins along an axis of `size`: every `stride`, plus the last fitting position so
/// that the whole axis is covered.
fn origins(size: usize, patch: usize, stride: usize) -> Vec<usize> {
    let last = size - patch;
    let mut v: Vec<usize> = (0..=last).step_by(stride).collect();
    if v.last() != Some(&last) {
        v.push(last);
    }
    v
}

impl Explainer<'_> {
    pub fn occlusion(
        &self,
        x: &Tensor,
        target: Target,
        opts: &OcclusionOptions,
        ctl: Control,
    ) -> ExplainResult<OcclusionResult> {
        let chw = single_image_dims(x)?;
        let [_, h, w] = chw;
        let batch = self.batch_size(opts.batch)?;
        if opts.patch == 0 || opts.stride == 0 || opts.patch > h.min(w) {
            return Err(ExplainError::invalid(format!(
                "occlusion patch {} / stride {} do not fit a {h}x{w} image",
                opts.patch, opts.stride
            )));
        }
        let fill = fill_image(&opts.fill, chw)?; // (c, h, w)
        let t = self.resolve(x, target)?;
        let score = self.scores(x, &t)?[0];
        let ys = origins(h, opts.patch, opts.stride);
        let xs = origins(w, opts.patch, opts.stride);
        let positions: Vec<(usize, usize)> = ys
            .iter()
            .flat_map(|&y| xs.iter().map(move |&x| (y, x)))
            .collect();
        let mut drops = Vec::with_capacity(positions.len());
        let total = positions.len().div_ceil(batch);
        for (b, group) in positions.chunks(batch).enumerate() {
            ctl.step(b, total)?;
            let occluded = batch_of(chw, group.len(), |i, out| {
                out.copy_from_slice(x.data());
                let (py, px) = group[i];
                for (o, f) in out.chunks_exact_mut(h * w).zip(fill.chunks_exact(h * w)) {
                    for y in py..py + opts.patch {
                        let row = y * w;
                        o[row + px..row + px + opts.patch]
                            .copy_from_slice(&f[row + px..row + px + opts.patch]);
                    }
                }
            })?;
            drops.extend(self.scores(&occluded, &t)?.into_iter().map(|s| score - s));
        }
        ctl.step(total, total)?;
        let mut sum = vec![0.0f32; h * w]; // (h, w)
        let mut count = vec![0u32; h * w]; // (h, w)
        for (&(py, px), &d) in positions.iter().zip(&drops) {
            for y in py..py + opts.patch {
                for x in px..px + opts.patch {
                    sum[y * w + x] += d;
                    count[y * w + x] += 1;
                }
            }
        }
        let per_pixel: Vec<f32> = sum
            .iter()
            .zip(&count)
            .map(|(&s, &n)| if n > 0 { s / n as f32 } else { 0.0 })
            .collect();
        Ok(OcclusionResult {
            raw: Map::new(ys.len(), xs.len(), drops)?,
            map: Map::new(h, w, per_pixel)?.normalised(),
            target: t,
            score,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::origins;

    #[test]
    fn origins_cover_the_axis() {
        assert_eq!(origins(10, 4, 3), vec![0, 3, 6]);
        assert_eq!(origins(10, 4, 4), vec![0, 4, 6]);
        assert_eq!(origins(4, 4, 2), vec![0]);
    }
}
