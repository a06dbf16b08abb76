//! Turning decoded pixels into the tensor a model asks for: channel conversion, bilinear resize,
//! and the optional per-channel `(x - mean) / std`. Every source hands in planes already scaled
//! to [0, 1] (8-bit data as x / 255).

use super::{DataError, DataResult};
use crate::engine::Tensor;

/// ITU-R BT.601 luma weights, as PIL's `convert("L")` and torchvision's `Grayscale` use them.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// What one sample must look like: `[channels, height, width]`, then optional normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// 1 (grayscale) or 3 (RGB). Colour images become luma for 1; gray ones are replicated for 3.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Per-channel mean and standard deviation subtracted / divided after the x / 255 scaling;
    /// `None` keeps values in [0, 1].
    pub mean_std: Option<(Vec<f32>, Vec<f32>)>,
}

impl Preprocess {
    /// `[channels, height, width]` with values in [0, 1].
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
            mean_std: None,
        }
    }

    /// Adds per-channel normalisation; lengths must equal `channels` and every std be > 0.
    pub fn with_mean_std(mut self, mean: Vec<f32>, std: Vec<f32>) -> DataResult<Self> {
        self.mean_std = Some((mean, std));
        self.validate()?;
        Ok(self)
    }

    /// The output shape of one sample, `[c, h, w]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    pub fn validate(&self) -> DataResult<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(DataError::invalid(format!(
                "preprocessing asks for {} channels; only 1 (gray) or 3 (RGB) are supported",
                self.channels
            )));
        }
        if self.height == 0 || self.width == 0 {
            return Err(DataError::invalid(format!(
                "preprocessing asks for an empty image size {}x{}",
                self.height, self.width
            )));
        }
        if let Some((mean, std)) = &self.mean_std {
            if mean.len() != self.channels || std.len() != self.channels {
                return Err(DataError::invalid(format!(
                    "mean has {} and std {} values for {} channels",
                    mean.len(),
                    std.len(),
                    self.channels
                )));
            }
            if std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
                return Err(DataError::invalid(format!(
                    "std {std:?} must be positive and finite"
                )));
            }
        }
        Ok(())
    }

    /// Planes `(c_in, h, w)` in [0, 1] to the raw (un-normalised) sample `[channels, height,
    /// width]`: channel conversion first (it is cheaper at the source size only when shrinking,
    /// but doing it first keeps one code path), then bilinear resize, exact when sizes match.
    pub fn to_raw(&self, planes: Vec<f32>, c_in: usize, h: usize, w: usize) -> DataResult<Tensor> {
        if planes.len() != c_in * h * w || h == 0 || w == 0 {
            return Err(DataError::invalid(format!(
                "pixel buffer of {} values does not match [{c_in}, {h}, {w}]",
                planes.len()
            )));
        }
        let planes = convert_channels(planes, c_in, self.channels, h * w)?; // (channels, h, w)
        let out = if (h, w) == (self.height, self.width) {
            planes
        } else {
            resize_bilinear(&planes, self.channels, h, w, self.height, self.width)
        }; // (channels, height, width)
        Ok(Tensor::new(self.shape().to_vec(), out)?)
    }

    /// Applies `(x - mean) / std` per channel in place on a `[c, h, w]` sample (no-op without
    /// normalisation).
    pub fn normalise(&self, sample: &mut Tensor) {
        let Some((mean, std)) = &self.mean_std else {
            return;
        };
        let plane = self.height * self.width;
        for (c, chunk) in sample.data_mut().chunks_mut(plane).enumerate() {
            let (m, s) = (mean[c % mean.len()], std[c % std.len()]);
            chunk.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
    }
}

/// `(c_in, hw)` planes to `(c_out, hw)`: equal counts pass through, 1 -> 3 replicates, 3 -> 1
/// takes BT.601 luma; anything else is an error.
pub fn convert_channels(
    planes: Vec<f32>,
    c_in: usize,
    c_out: usize,
    hw: usize,
) -> DataResult<Vec<f32>> {
    match (c_in, c_out) {
        (a, b) if a == b => Ok(planes),
        (1, 3) => Ok(planes.repeat(3)),
        (3, 1) => {
            let (r, rest) = planes.split_at(hw);
            let (g, b) = rest.split_at(hw);
            Ok((0..hw)
                .map(|i| LUMA[0] * r[i] + LUMA[1] * g[i] + LUMA[2] * b[i])
                .collect())
        }
        _ => Err(DataError::invalid(format!(
            "cannot convert {c_in} channels to {c_out}"
        ))),
    }
}

/// Source taps and weights for bilinear sampling along one axis with half-pixel centres
/// (PyTorch's `align_corners=False`, no antialiasing): output i samples source coordinate
/// `(i + 0.5) * in / out - 0.5`, clamped to the edge.
fn taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|i| {
            let src = ((i as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// Bilinear resize of `(c, h, w)` planes to `(c, oh, ow)`. Downscaling by more than 2x aliases
/// (as PyTorch's `interpolate(antialias=False)` does); data sets here are near model size.
pub fn resize_bilinear(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let ty = taps(h, oh);
    let tx = taps(w, ow);
    let mut out = vec![0.0f32; c * oh * ow]; // (c, oh, ow)
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
        for (oy, &(y0, y1, fy)) in ty.iter().enumerate() {
            let (r0, r1) = (&plane[y0 * w..(y0 + 1) * w], &plane[y1 * w..(y1 + 1) * w]);
            for (ox, &(x0, x1, fx)) in tx.iter().enumerate() {
                let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
                let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
                dst[oy * ow + ox] = top + (bottom - top) * fy;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_exact_and_gray_replicates() {
        let p = Preprocess::new(3, 2, 2);
        let t = p.to_raw(vec![0.1, 0.2, 0.3, 0.4], 1, 2, 2).unwrap();
        assert_eq!(t.shape(), &[3, 2, 2]);
        assert_eq!(t.data(), &[0.1, 0.2, 0.3, 0.4].repeat(3)[..]);
    }

    #[test]
    fn colour_to_gray_uses_luma() {
        let p = Preprocess::new(1, 1, 1);
        let t = p.to_raw(vec![1.0, 0.0, 0.0], 3, 1, 1).unwrap();
        assert!((t.data()[0] - 0.299).abs() < 1e-6);
    }

    #[test]
    fn upscale_2x_matches_half_pixel_bilinear() {
        // PyTorch: F.interpolate(tensor([[[[0., 1.]]]]), size=(1, 4), mode="bilinear",
        // align_corners=False) = [0, 0.25, 0.75, 1].
        let out = resize_bilinear(&[0.0, 1.0], 1, 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
        // Downscale by 2 averages pairs: [0, 1, 2, 3] -> [0.5, 2.5].
        assert_eq!(
            resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 1, 1, 4, 1, 2),
            vec![0.5, 2.5]
        );
    }

    #[test]
    fn normalise_and_validation() {
        let p = Preprocess::new(1, 1, 2)
            .with_mean_std(vec![0.5], vec![0.25])
            .unwrap();
        let mut t = Tensor::new(vec![1, 1, 2], vec![0.5, 1.0]).unwrap();
        p.normalise(&mut t);
        assert_eq!(t.data(), &[0.0, 2.0]);
        assert!(Preprocess::new(2, 4, 4).validate().is_err());
        assert!(
            Preprocess::new(3, 4, 4)
                .with_mean_std(vec![0.0], vec![1.0])
                .is_err()
        );
        assert!(p.to_raw(vec![0.0; 3], 1, 2, 2).is_err());
    }
}
