//! A model's preprocessing preset and the one image → tensor path that prediction,
//! explanation, the window, the data loader, training and evaluation all take:
//!
//! ```text
//! decode -> Image (bytes kept when 8-bit) -> fit: resize and crop (super::image)
//!        -> channel conversion -> raw sample [c, h, w] in [0, 1], RGB order       (raw)
//!        -> [cache] -> augmentation (training only, super::augment)
//!        -> channel order, (pixel · scale − mean) / std, layout                  (finish)
//! ```
//!
//! The preset is part of a model's description (`model.ron`), so the types live here, in the
//! data layer, and `models` re-exports them.

use serde::{Deserialize, Serialize};

pub use super::image::Filter;
use super::image::Image;
use super::{DataError, DataResult};
use crate::engine::Tensor;

/// ITU-R BT.601 luma weights, as PIL's `convert("L")` and torchvision's `Grayscale` use them.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// How an image is resized to the model's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resize {
    /// Resize the whole image to `size`, ignoring the aspect ratio.
    Squash,
    /// Resize the shorter side to `size · 256/224`, then crop the centre (torchvision eval).
    ShorterSideCrop,
    /// Resize the shorter side to `shorter`, then crop the centre to `size`: torchvision's
    /// `Resize(shorter)` + `CenterCrop(size)` with any pair (its weights' transforms use 232,
    /// 236, 342, ... as well as 256 for 224).
    ShorterSideTo { shorter: usize },
}

/// Channel order the model expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channels {
    Rgb,
    Bgr,
    /// One channel: the image's luma.
    Gray,
}

/// Memory layout of the input tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Image → tensor: resize to `size` `[h, w]`, then per channel
/// `x = (pixel · scale − mean[c]) / std[c]` with pixels in 0..=255.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub size: [usize; 2],
    pub resize: Resize,
    /// Absent from presets written before it existed (bilinear).
    #[serde(default)]
    pub filter: Filter,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub channels: Channels,
    pub layout: Layout,
}

impl Preprocess {
    /// torchvision's ImageNet evaluation transform: 224×224 centre crop, x/255, ImageNet mean
    /// and std, RGB, NCHW.
    pub fn imagenet() -> Self {
        Self {
            size: [224, 224],
            resize: Resize::ShorterSideCrop,
            filter: Filter::Bilinear,
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channels: Channels::Rgb,
            layout: Layout::Nchw,
        }
    }

    /// x/255 only (the smile CNN, Keras-book style): 64×64 squashed, RGB, NCHW.
    pub fn unit() -> Self {
        Self {
            size: [64, 64],
            resize: Resize::Squash,
            filter: Filter::Bilinear,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            channels: Channels::Rgb,
            layout: Layout::Nchw,
        }
    }

    /// x/255 only, squashed to `size` with `channels` (1 gray or 3 RGB), NCHW: what the data
    /// sets give by default at their own size.
    pub fn plain(channels: Channels, size: [usize; 2]) -> Self {
        Self {
            channels,
            ..Self::unit().with_size(size)
        }
    }

    pub fn with_size(mut self, size: [usize; 2]) -> Self {
        self.size = size;
        self
    }

    /// Channels of the model's input: 1 for gray, 3 for RGB or BGR.
    pub fn channel_count(&self) -> usize {
        match self.channels {
            Channels::Gray => 1,
            Channels::Rgb | Channels::Bgr => 3,
        }
    }

    /// Checks the preset before it touches pixels; the message names the bad field.
    pub fn validate(&self) -> DataResult<()> {
        if self.size[0] == 0 || self.size[1] == 0 {
            return Err(DataError::invalid(format!(
                "the preprocessing size {:?} is empty",
                self.size
            )));
        }
        if self.std.iter().any(|&s| !(s > 0.0 && s.is_finite()))
            || !self.scale.is_finite()
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(DataError::invalid(format!(
                "the preprocessing scale {}, mean {:?} and std {:?} must be finite with std > 0",
                self.scale, self.mean, self.std
            )));
        }
        Ok(())
    }

    /// `[c, h, w]` of a raw sample ([`Self::raw`]): always channels first, RGB order.
    pub fn raw_shape(&self) -> [usize; 3] {
        [self.channel_count(), self.size[0], self.size[1]]
    }

    /// The shape of one finished sample ([`Self::finish`]): `[c, h, w]` (NCHW) or `[h, w, c]`
    /// (NHWC), the model's input without its batch axis.
    pub fn sample_shape(&self) -> [usize; 3] {
        let [c, h, w] = self.raw_shape();
        match self.layout {
            Layout::Nchw => [c, h, w],
            Layout::Nhwc => [h, w, c],
        }
    }

    /// The first half of the path: `image` fitted to the preset's size (resize and crop,
    /// [`fit`]) and converted to its channel count, as a raw sample `[c, h, w]` in [0, 1]
    /// (pixel / 255), RGB order. Training augments raw samples; the cache keeps them.
    pub fn raw(&self, image: &Image) -> DataResult<Tensor> {
        self.validate()?;
        let c = self.channel_count();
        let fitted = fit(image, self);
        let (h, w) = (fitted.height, fitted.width);
        // Channel conversion after resizing: PIL's convert("L") would come first, but luma is
        // linear, so the order only changes rounding.
        let unit = convert_channels(fitted.unit_values(), fitted.channels, c, h * w)?; // (c, h, w)
        Ok(Tensor::new(vec![c, h, w], unit)?)
    }

    /// [`Self::raw`] of decoded planes `(c_in, h, w)` in [0, 1] (8-bit data, every value k/255,
    /// is resized as bytes, as PIL would).
    pub fn raw_from_unit_planes(
        &self,
        planes: Vec<f32>,
        c_in: usize,
        h: usize,
        w: usize,
    ) -> DataResult<Tensor> {
        if planes.len() != c_in * h * w || h == 0 || w == 0 {
            return Err(DataError::invalid(format!(
                "pixel buffer of {} values does not match [{c_in}, {h}, {w}]",
                planes.len()
            )));
        }
        self.raw(&Image::from_unit_planes(planes, c_in, h, w))
    }

    /// The second half: a raw sample `[c, h, w]` in [0, 1] to what the model reads, in the
    /// preset's channel order, `(pixel · scale − mean[c]) / std[c]` with pixel = 255·x (mean
    /// and std indexed by the model's channel, i.e. after reordering), in its layout
    /// ([`Self::sample_shape`]).
    pub fn finish(&self, raw: &Tensor) -> DataResult<Tensor> {
        let [c, h, w] = self.raw_shape();
        if raw.shape() != [c, h, w] {
            return Err(DataError::invalid(format!(
                "a raw sample of shape {:?} does not fit the preprocessing's [{c}, {h}, {w}]",
                raw.shape()
            )));
        }
        let order: &[usize] = match self.channels {
            Channels::Bgr => &[2, 1, 0],
            Channels::Rgb => &[0, 1, 2],
            Channels::Gray => &[0],
        };
        let hw = h * w;
        let x = raw.data();
        let mut chw = vec![0f32; c * hw]; // (c, h, w), normalised
        for (dst_c, &src_c) in order.iter().enumerate() {
            let (m, s) = (self.mean[dst_c], self.std[dst_c]);
            let src = &x[src_c * hw..][..hw];
            for (d, &v) in chw[dst_c * hw..][..hw].iter_mut().zip(src) {
                *d = (v * 255.0 * self.scale - m) / s;
            }
        }
        let data = match self.layout {
            Layout::Nchw => chw,
            Layout::Nhwc => {
                let mut hwc = vec![0f32; hw * c]; // (h, w, c)
                for ch in 0..c {
                    for i in 0..hw {
                        hwc[i * c + ch] = chw[ch * hw + i];
                    }
                }
                hwc
            }
        };
        Ok(Tensor::new(self.sample_shape().to_vec(), data)?)
    }

    /// The whole path for one image: the model input `[1, c, h, w]` (NCHW) or `[1, h, w, c]`
    /// (NHWC).
    pub fn image_to_tensor(&self, image: &Image) -> DataResult<Tensor> {
        let sample = self.finish(&self.raw(image)?)?;
        let mut shape = vec![1];
        shape.extend_from_slice(sample.shape());
        Ok(sample.reshaped(shape)?)
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

/// torchvision's `Resize(s)` for an int `s`: the shorter side becomes `s`, the longer one
/// `int(s · long / short)`. Returns `(h, w)`.
fn shorter_side_size(h: usize, w: usize, short: usize) -> (usize, usize) {
    if h <= w {
        (short, (short as f64 * w as f64 / h as f64) as usize)
    } else {
        ((short as f64 * h as f64 / w as f64) as usize, short)
    }
}

/// Resizes (and crops) an image to the preset's size.
pub fn fit(image: &Image, preset: &Preprocess) -> Image {
    let [oh, ow] = preset.size;
    let short = match preset.resize {
        Resize::Squash => return image.resized_with(preset.filter, oh, ow),
        // torchvision eval: Resize(size·256/224) then CenterCrop(size); the shorter side
        // target covers both crop dimensions.
        Resize::ShorterSideCrop => (oh.max(ow) as f64 * 256.0 / 224.0) as usize,
        Resize::ShorterSideTo { shorter } => shorter,
    };
    let (rh, rw) = shorter_side_size(image.height, image.width, short.max(1));
    image
        .resized_with(preset.filter, rh, rw)
        .centre_crop(oh, ow)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::data::image::Pixels;

    #[test]
    fn same_size_is_exact_and_gray_replicates() {
        let p = Preprocess::plain(Channels::Rgb, [2, 2]);
        let t = p
            .raw_from_unit_planes(vec![0.1, 0.2, 0.3, 0.4], 1, 2, 2)
            .unwrap();
        assert_eq!(t.shape(), &[3, 2, 2]);
        assert_eq!(t.data(), &[0.1, 0.2, 0.3, 0.4].repeat(3)[..]);
    }

    #[test]
    fn colour_to_gray_uses_luma() {
        let p = Preprocess::plain(Channels::Gray, [1, 1]);
        let t = p
            .raw_from_unit_planes(vec![1.0, 0.0, 0.0], 3, 1, 1)
            .unwrap();
        assert!((t.data()[0] - 0.299).abs() < 1e-6);
        assert!(p.raw_from_unit_planes(vec![0.0; 3], 1, 2, 2).is_err());
    }

    #[test]
    fn layouts_channels_and_normalisation() {
        // one 1x2 image: pixel 0 red, pixel 1 blue
        let img = Image {
            pixels: Pixels::U8(vec![255, 0, 0, 0, 0, 255]),
            channels: 3,
            height: 1,
            width: 2,
        };
        let mut p = Preprocess::unit().with_size([1, 2]);
        let t = p.image_to_tensor(&img).unwrap();
        assert_eq!(t.shape(), &[1, 3, 1, 2]);
        assert_eq!(t.data(), &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        p.channels = Channels::Bgr;
        p.layout = Layout::Nhwc;
        p.mean = [0.5, 0.0, 0.0];
        let t = p.image_to_tensor(&img).unwrap();
        assert_eq!(t.shape(), &[1, 1, 2, 3]);
        // (h, w, c) with c = b, g, r; mean 0.5 on the blue (first) channel
        assert_eq!(t.data(), &[-0.5, 0.0, 1.0, 0.5, 0.0, 0.0]);
        p.std = [0.0, 1.0, 1.0];
        assert!(p.image_to_tensor(&img).is_err());
    }

    #[test]
    fn finish_refuses_a_raw_sample_of_another_size() {
        let p = Preprocess::unit().with_size([4, 4]);
        let raw = Tensor::new(vec![3, 2, 2], vec![0.0; 12]).unwrap();
        assert!(p.finish(&raw).is_err());
    }

    #[test]
    fn shorter_side() {
        assert_eq!(shorter_side_size(300, 451, 256), (256, 384));
        assert_eq!(shorter_side_size(640, 427, 256), (383, 256));
    }

    #[test]
    fn centre_crop_of_a_wide_image() {
        let (h, w) = (4, 8);
        let img = Image {
            pixels: Pixels::U8((0..h * w).map(|i| i as u8).collect()),
            channels: 1,
            height: h,
            width: w,
        };
        let mut p = Preprocess::unit().with_size([224, 224]);
        p.resize = Resize::ShorterSideCrop;
        p.channels = Channels::Gray;
        let f = fit(&img, &p);
        assert_eq!((f.height, f.width), (224, 224));
    }
}
