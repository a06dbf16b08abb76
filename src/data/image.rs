//! Decoded images and the resize a model's preset asks for: PIL's antialiased filters
//! (`Image.resize(..., BILINEAR | BICUBIC)`), torchvision's shorter-side resize and centre crop.
//!
//! PIL is the reference because pretrained models were evaluated through it (torchvision's
//! transforms call it on PIL images). Downscaling uses a filter whose support grows with the
//! downscale factor, so every source pixel contributes (area-aware); upscaling is plain
//! interpolation with half-pixel centres. 8-bit images follow PIL's fixed-point arithmetic
//! (22-bit coefficients, 8-bit intermediate after the horizontal pass), which makes the result
//! bit-identical to PIL's; other images (16-bit, float, synthetic) take the same filter in `f32`.
//!
//! Every image → tensor path goes through here and [`super::preprocess`]: prediction,
//! explanation, the window, training and evaluation.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::DataResult;
use super::decode::{decode_planes, decode_planes_from_bytes};

/// PIL's `PRECISION_BITS` for 8-bit resampling: 32 − 8 − 2.
const PRECISION_BITS: u32 = 22;

/// The resampling filter of the resize, as PIL's (antialiased when shrinking).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Filter {
    #[default]
    Bilinear,
    /// Keys' cubic with a = −0.5 (PIL's BICUBIC; torchvision's Swin, MaxViT, EfficientNet-B0).
    Bicubic,
}

/// The contributing source range and normalised weights of each output pixel along one axis.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisTaps {
    /// Per output pixel: the first source index and its weights (one per consecutive source).
    pub taps: Vec<(usize, Vec<f64>)>,
}

impl AxisTaps {
    /// PIL's `precompute_coeffs` for the bilinear (triangle) filter over the whole axis.
    pub fn triangle(n_in: usize, n_out: usize) -> Self {
        Self::new(Filter::Bilinear, n_in, n_out)
    }

    /// PIL's `precompute_coeffs` for `filter` over the whole axis: output `i` is centred at
    /// source coordinate `(i + 0.5)·in/out`; when shrinking, the filter is stretched by
    /// `in/out` so that it averages every pixel it covers.
    pub fn new(filter: Filter, n_in: usize, n_out: usize) -> Self {
        let (kernel, support): (fn(f64) -> f64, f64) = match filter {
            Filter::Bilinear => (triangle, 1.0),
            Filter::Bicubic => (bicubic, 2.0),
        };
        let scale = n_in as f64 / n_out as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let taps = (0..n_out)
            .map(|i| {
                let center = (i as f64 + 0.5) * scale;
                // PIL rounds with a C cast (truncation toward zero) after adding 0.5.
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).clamp(0, n_in as i64) as usize;
                let mut w: Vec<f64> = (xmin..xmax.max(xmin))
                    .map(|x| kernel((x as f64 - center + 0.5) / filterscale))
                    .collect();
                let total: f64 = w.iter().sum();
                if total != 0.0 {
                    w.iter_mut().for_each(|v| *v /= total);
                }
                (xmin, w)
            })
            .collect();
        Self { taps }
    }

    /// PIL's `normalize_coeffs_8bpc`: weights as fixed-point integers, rounded half away from 0.
    fn fixed_point(&self) -> Vec<(usize, Vec<i64>)> {
        let one = (1u64 << PRECISION_BITS) as f64;
        self.taps
            .iter()
            .map(|(start, w)| {
                let k = w
                    .iter()
                    .map(|&v| {
                        if v < 0.0 {
                            (-0.5 + v * one) as i64
                        } else {
                            (0.5 + v * one) as i64
                        }
                    })
                    .collect();
                (*start, k)
            })
            .collect()
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// PIL's `bicubic_filter`: Keys' cubic convolution with a = −0.5, support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// PIL's `clip8`: the fixed-point sum (with its rounding half-unit already added) to a byte.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Antialiased resize of 8-bit planes `(c, h, w)` to `(c, oh, ow)` with `filter`,
/// bit-identical to PIL: horizontal pass first (rounded to bytes), then vertical; an axis whose
/// size does not change is not resampled.
pub fn resize_u8(
    filter: Filter,
    src: &[u8],
    [c, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
) -> Vec<u8> {
    let horizontal = if ow != w {
        let taps = AxisTaps::new(filter, w, ow).fixed_point();
        let mut out = vec![0u8; c * h * ow]; // (c, h, ow)
        for (row_in, row_out) in src.chunks_exact(w).zip(out.chunks_exact_mut(ow)) {
            for (dst, (start, k)) in row_out.iter_mut().zip(&taps) {
                let acc = k
                    .iter()
                    .zip(&row_in[*start..])
                    .fold(1i64 << (PRECISION_BITS - 1), |a, (&k, &p)| a + k * p as i64);
                *dst = clip8(acc);
            }
        }
        out
    } else {
        src.to_vec()
    };
    if oh == h {
        return horizontal;
    }
    let taps = AxisTaps::new(filter, h, oh).fixed_point();
    let mut out = vec![0u8; c * oh * ow]; // (c, oh, ow)
    for ch in 0..c {
        let plane = &horizontal[ch * h * ow..(ch + 1) * h * ow]; // (h, ow)
        let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow]; // (oh, ow)
        for (oy, (start, k)) in taps.iter().enumerate() {
            for ox in 0..ow {
                let acc = k
                    .iter()
                    .enumerate()
                    .fold(1i64 << (PRECISION_BITS - 1), |a, (j, &k)| {
                        a + k * plane[(start + j) * ow + ox] as i64
                    });
                dst[oy * ow + ox] = clip8(acc);
            }
        }
    }
    out
}

/// The same filter in `f32` for planes `(c, h, w)` of any range (no intermediate rounding).
pub fn resize_f32(
    filter: Filter,
    src: &[f32],
    [c, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
) -> Vec<f32> {
    let horizontal = if ow != w {
        let taps = AxisTaps::new(filter, w, ow);
        let mut out = vec![0f32; c * h * ow]; // (c, h, ow)
        for (row_in, row_out) in src.chunks_exact(w).zip(out.chunks_exact_mut(ow)) {
            for (dst, (start, k)) in row_out.iter_mut().zip(&taps.taps) {
                *dst = k
                    .iter()
                    .zip(&row_in[*start..])
                    .map(|(&k, &p)| k * p as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    } else {
        src.to_vec()
    };
    if oh == h {
        return horizontal;
    }
    let taps = AxisTaps::new(filter, h, oh);
    let mut out = vec![0f32; c * oh * ow]; // (c, oh, ow)
    for ch in 0..c {
        let plane = &horizontal[ch * h * ow..(ch + 1) * h * ow]; // (h, ow)
        let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow]; // (oh, ow)
        for (oy, (start, k)) in taps.taps.iter().enumerate() {
            for ox in 0..ow {
                dst[oy * ow + ox] = k
                    .iter()
                    .enumerate()
                    .map(|(j, &k)| k * plane[(start + j) * ow + ox] as f64)
                    .sum::<f64>() as f32;
            }
        }
    }
    out
}

/// Decoded pixels, `(c, h, w)` planes, kept as bytes when the source was 8-bit.
#[derive(Clone, Debug, PartialEq)]
pub enum Pixels {
    U8(Vec<u8>),
    /// Values on the [0, 1] scale, as decoded (16-bit, float and synthetic images): kept as
    /// they are, so that an image that needs no resampling reaches the model unrounded.
    F32(Vec<f32>),
}

/// An image ready for preprocessing.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub pixels: Pixels,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Image {
    /// Decodes a file (PNG, JPEG, ...; truncated JPEGs refused). The error names the file.
    pub fn open(path: &Path) -> DataResult<Self> {
        let (planes, c, h, w) = decode_planes(path)?; // (c, h, w)
        Ok(Self::from_unit_planes(planes, c, h, w))
    }

    /// Decodes encoded bytes (a bundled sample); `name` names them in errors.
    pub fn decode(bytes: &[u8], name: &Path) -> DataResult<Self> {
        let (planes, c, h, w) = decode_planes_from_bytes(bytes, name)?; // (c, h, w)
        Ok(Self::from_unit_planes(planes, c, h, w))
    }

    /// Planes in [0, 1] (as the data layer decodes them); 8-bit data (every value k/255) is
    /// recovered exactly as bytes.
    pub fn from_unit_planes(
        planes: Vec<f32>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Self {
        let bytes: Option<Vec<u8>> = planes
            .iter()
            .map(|&v| {
                let k = (v * 255.0).round();
                ((0.0..=255.0).contains(&k) && (v - k / 255.0).abs() < 1e-6).then_some(k as u8)
            })
            .collect();
        let pixels = match bytes {
            Some(b) => Pixels::U8(b),
            None => Pixels::F32(planes),
        };
        Self {
            pixels,
            channels,
            height,
            width,
        }
    }

    /// Resized to `(oh, ow)` with PIL's bilinear filter.
    pub fn resized(&self, oh: usize, ow: usize) -> Self {
        self.resized_with(Filter::Bilinear, oh, ow)
    }

    /// Resized to `(oh, ow)` with PIL's `filter`.
    pub fn resized_with(&self, filter: Filter, oh: usize, ow: usize) -> Self {
        let chw = [self.channels, self.height, self.width];
        let c = self.channels;
        let pixels = match &self.pixels {
            Pixels::U8(p) => Pixels::U8(resize_u8(filter, p, chw, [oh, ow])),
            Pixels::F32(p) => Pixels::F32(resize_f32(filter, p, chw, [oh, ow])),
        };
        Self {
            pixels,
            channels: c,
            height: oh,
            width: ow,
        }
    }

    /// torchvision's `CenterCrop((oh, ow))`: the window at offsets rounded half to even; an
    /// axis shorter than the crop is first padded with zeros, `(d // 2, (d + 1) // 2)`.
    pub fn centre_crop(&self, oh: usize, ow: usize) -> Self {
        /// (zeros before the image, first image index) along one axis
        fn offsets(n: usize, want: usize) -> (usize, usize) {
            if want > n {
                ((want - n) / 2, 0)
            } else {
                (0, round_half_even((n - want) as f64 / 2.0))
            }
        }
        fn crop<T: Copy + Default>(p: &[T], [c, h, w]: [usize; 3], oh: usize, ow: usize) -> Vec<T> {
            let ((pad_y, top), (pad_x, left)) = (offsets(h, oh), offsets(w, ow));
            let (rows, cols) = (h.min(oh), w.min(ow)); // image rows and columns kept
            let mut out = vec![T::default(); c * oh * ow]; // (c, oh, ow)
            for ch in 0..c {
                for y in 0..rows {
                    let src = (ch * h + top + y) * w + left;
                    let dst = (ch * oh + pad_y + y) * ow + pad_x;
                    out[dst..dst + cols].copy_from_slice(&p[src..src + cols]);
                }
            }
            out
        }
        let chw = [self.channels, self.height, self.width];
        let pixels = match &self.pixels {
            Pixels::U8(p) => Pixels::U8(crop(p, chw, oh, ow)),
            Pixels::F32(p) => Pixels::F32(crop(p, chw, oh, ow)),
        };
        Self {
            pixels,
            channels: self.channels,
            height: oh,
            width: ow,
        }
    }

    /// Values on the 0..=255 scale, `(c, h, w)`.
    pub fn values(&self) -> Vec<f32> {
        match &self.pixels {
            Pixels::U8(p) => p.iter().map(|&v| v as f32).collect(),
            Pixels::F32(p) => p.iter().map(|v| v * 255.0).collect(),
        }
    }

    /// Values on the [0, 1] scale (bytes / 255), `(c, h, w)`.
    pub fn unit_values(&self) -> Vec<f32> {
        match &self.pixels {
            Pixels::U8(p) => p.iter().map(|&v| v as f32 / 255.0).collect(),
            Pixels::F32(p) => p.clone(),
        }
    }

    /// As an 8-bit RGB picture: a gray image in all three channels, float values rounded to
    /// the nearest byte (8-bit images come back exactly).
    pub fn to_rgb8(&self) -> image::RgbImage {
        let (c, h, w) = (self.channels, self.height, self.width);
        let v = self.values(); // (c, h, w) on the 0..=255 scale
        if c == 0 || v.len() < c * h * w {
            return image::RgbImage::new(w as u32, h as u32);
        }
        image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let i = y as usize * w + x as usize;
            image::Rgb(std::array::from_fn(|ch| {
                v[ch.min(c - 1) * h * w + i].round().clamp(0.0, 255.0) as u8
            }))
        })
    }
}

/// Python's `round` (half to even), which torchvision's `CenterCrop` uses for the offsets.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as usize
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_image_as_rgb_bytes() {
        // gray, 8-bit: every channel the same byte, exactly
        let gray = Image::from_unit_planes(vec![0.0, 1.0 / 255.0, 128.0 / 255.0, 1.0], 1, 2, 2);
        let rgb = gray.to_rgb8();
        assert_eq!(rgb.get_pixel(0, 1).0, [128, 128, 128]);
        assert_eq!(rgb.get_pixel(1, 0).0, [1, 1, 1]);
        // colour, not 8-bit: the nearest byte per plane
        let colour = Image::from_unit_planes(vec![0.5, 0.2, 0.999], 3, 1, 1);
        assert!(matches!(colour.pixels, Pixels::F32(_)));
        assert_eq!(colour.to_rgb8().get_pixel(0, 0).0, [128, 51, 255]);
    }

    #[test]
    fn taps_cover_the_source_and_sum_to_one() {
        for (n_in, n_out) in [(451, 224), (7, 16), (10, 3), (224, 224), (1, 5)] {
            let t = AxisTaps::triangle(n_in, n_out);
            for (start, w) in &t.taps {
                assert!(start + w.len() <= n_in);
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        // Shrinking 4 -> 2: output 0 is centred at 1.0 with a triangle of half-width 2, which
        // PIL samples at pixel centres 0.5, 1.5, 2.5 (window [0, 3)): 0.75, 0.75, 0.25 -> /1.75.
        let t = AxisTaps::triangle(4, 2);
        assert_eq!(t.taps[0].0, 0);
        let w = &t.taps[0].1;
        let want = [3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0];
        assert_eq!(w.len(), 3);
        assert!(
            w.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{w:?}"
        );
    }

    #[test]
    fn u8_and_f32_paths_agree_within_rounding() {
        let (c, h, w) = (2, 9, 13);
        let src: Vec<u8> = (0..c * h * w).map(|i| ((i * 37) % 256) as u8).collect();
        let srcf: Vec<f32> = src.iter().map(|&v| v as f32).collect();
        for (oh, ow) in [(4, 5), (20, 30), (9, 6)] {
            let a = resize_u8(Filter::Bilinear, &src, [c, h, w], [oh, ow]);
            let b = resize_f32(Filter::Bilinear, &srcf, [c, h, w], [oh, ow]);
            for (x, y) in a.iter().zip(&b) {
                // two roundings to bytes: at most one unit each
                assert!((*x as f32 - y).abs() <= 1.0 + 1e-3, "{x} vs {y}");
            }
        }
        assert_eq!(resize_u8(Filter::Bilinear, &src, [c, h, w], [h, w]), src);
    }

    #[test]
    fn constant_images_stay_constant() {
        let src = vec![200u8; 3 * 10 * 7];
        assert!(
            resize_u8(Filter::Bilinear, &src, [3, 10, 7], [3, 4])
                .iter()
                .all(|&v| v == 200)
        );
        assert!(
            resize_u8(Filter::Bilinear, &src, [3, 10, 7], [23, 19])
                .iter()
                .all(|&v| v == 200)
        );
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(2.4), 2);
    }
}
