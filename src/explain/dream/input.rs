//! From the dream's RGB image in [0, 1] to the tensor a model takes, by its [`Preprocess`]
//! preset (channel order or luma, `(v·255·scale − mean) / std`, NCHW or NHWC), and back for
//! gradients. Resizing is not done here: the [`Sampler`](super::warp::Sampler) already samples
//! at the model's input size.

use crate::engine::Tensor;
use crate::explain::{ExplainError, ExplainResult};
use crate::models::{Channels, Layout, Preprocess};

/// ITU-R 601 luma, the weights `data::preprocess` converts RGB to gray with.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// The affine map from `(3, h, w)` RGB in [0, 1] to the model's input `[1, ..]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInput {
    /// `(h, w)` of the model's input.
    pub size: [usize; 2],
    channels: Channels,
    layout: Layout,
    /// Per model channel: input = rgb-derived value · mul + add.
    mul: [f32; 3],
    add: [f32; 3],
}

impl ModelInput {
    /// Checks the preset against the graph's input shape `input_shape` (`[n, c, h, w]` or
    /// `[n, h, w, c]` by the preset's layout).
    pub fn new(preprocess: &Preprocess, input_shape: &[usize]) -> ExplainResult<Self> {
        preprocess
            .validate()
            .map_err(|e| ExplainError::invalid(e.to_string()))?;
        let c = preprocess.channel_count();
        let [h, w] = preprocess.size;
        let want: [usize; 3] = match preprocess.layout {
            Layout::Nchw => [c, h, w],
            Layout::Nhwc => [h, w, c],
        };
        if input_shape.len() != 4 || input_shape[1..] != want {
            return Err(ExplainError::invalid(format!(
                "the model's input has shape {input_shape:?}, but its preprocessing makes {c} channels of {h}x{w} ({:?}); dreaming needs them to agree",
                preprocess.layout
            )));
        }
        let k = 255.0 * preprocess.scale;
        Ok(Self {
            size: [h, w],
            channels: preprocess.channels,
            layout: preprocess.layout,
            mul: std::array::from_fn(|i| k / preprocess.std[i]),
            add: std::array::from_fn(|i| -preprocess.mean[i] / preprocess.std[i]),
        })
    }

    fn channel_count(&self) -> usize {
        if self.channels == Channels::Gray {
            1
        } else {
            3
        }
    }

    /// Model channel `m`'s weights over (r, g, b).
    fn mix(&self, m: usize) -> [f32; 3] {
        match self.channels {
            Channels::Rgb => std::array::from_fn(|i| f32::from(u8::from(i == m))),
            Channels::Bgr => std::array::from_fn(|i| f32::from(u8::from(i == 2 - m))),
            Channels::Gray => LUMA,
        }
    }

    /// RGB planes `(3, h, w)` at the model's size → the input tensor `[1, c, h, w]` or
    /// `[1, h, w, c]`.
    pub fn tensor(&self, rgb: &[f32]) -> ExplainResult<Tensor> {
        let [h, w] = self.size;
        let (hw, c) = (h * w, self.channel_count());
        let mut data = vec![0.0f32; c * hw];
        for m in 0..c {
            let mix = self.mix(m);
            for i in 0..hw {
                let v = mix[0] * rgb[i] + mix[1] * rgb[hw + i] + mix[2] * rgb[2 * hw + i];
                let at = match self.layout {
                    Layout::Nchw => m * hw + i,
                    Layout::Nhwc => i * c + m,
                };
                data[at] = v * self.mul[m] + self.add[m];
            }
        }
        let shape = match self.layout {
            Layout::Nchw => vec![1, c, h, w],
            Layout::Nhwc => vec![1, h, w, c],
        };
        Ok(Tensor::new(shape, data)?)
    }

    /// The adjoint of [`tensor`](Self::tensor): d RGB `(3, h, w)` from d input.
    pub fn adjoint(&self, d_input: &Tensor) -> Vec<f32> {
        let [h, w] = self.size;
        let (hw, c) = (h * w, self.channel_count());
        let d = d_input.data();
        let mut out = vec![0.0f32; 3 * hw]; // (3, h, w)
        for m in 0..c {
            let mix = self.mix(m);
            for i in 0..hw {
                let at = match self.layout {
                    Layout::Nchw => m * hw + i,
                    Layout::Nhwc => i * c + m,
                };
                let g = d[at] * self.mul[m];
                for (k, wk) in mix.iter().enumerate() {
                    out[k * hw + i] += wk * g;
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::models::preprocess::{Image, image_to_tensor};

    /// The mapping equals the model's own preprocessing of the same 8-bit picture.
    #[test]
    fn agrees_with_image_to_tensor() {
        let (h, w) = (3, 4);
        let bytes: Vec<u8> = (0..3 * h * w).map(|i| (i * 19 % 256) as u8).collect();
        let rgb: Vec<f32> = bytes.iter().map(|&b| f32::from(b) / 255.0).collect();
        let img = Image::from_unit_planes(rgb.clone(), 3, h, w);
        for (channels, layout) in [
            (Channels::Rgb, Layout::Nchw),
            (Channels::Bgr, Layout::Nhwc),
            (Channels::Gray, Layout::Nchw),
        ] {
            let mut p = Preprocess::imagenet().with_size([h, w]);
            p.resize = crate::models::Resize::Squash;
            p.channels = channels;
            p.layout = layout;
            let want = image_to_tensor(&img, &p).unwrap();
            let got = ModelInput::new(&p, want.shape())
                .unwrap()
                .tensor(&rgb)
                .unwrap();
            assert_eq!(got.shape(), want.shape());
            for (a, b) in got.data().iter().zip(want.data()) {
                assert!((a - b).abs() < 1e-4, "{channels:?} {layout:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn adjoint_matches_the_dot_product_identity() {
        let (h, w) = (2, 3);
        let mut p = Preprocess::imagenet().with_size([h, w]);
        for (channels, layout) in [
            (Channels::Bgr, Layout::Nhwc),
            (Channels::Gray, Layout::Nchw),
        ] {
            p.channels = channels;
            p.layout = layout;
            let c = if channels == Channels::Gray { 1 } else { 3 };
            let shape = match layout {
                Layout::Nchw => vec![1, c, h, w],
                Layout::Nhwc => vec![1, h, w, c],
            };
            let mi = ModelInput::new(&p, &shape).unwrap();
            let x: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin()).collect();
            let zero = mi.tensor(&[0.0; 18]).unwrap();
            let ax = mi.tensor(&x).unwrap();
            let y: Vec<f32> = (0..c * 6).map(|i| (i as f32 * 0.71).cos()).collect();
            let lhs: f32 = ax
                .data()
                .iter()
                .zip(zero.data())
                .zip(&y)
                .map(|((a, z), b)| (a - z) * b)
                .sum();
            let rhs: f32 = x
                .iter()
                .zip(mi.adjoint(&Tensor::new(shape, y).unwrap()))
                .map(|(a, b)| a * b)
                .sum();
            assert!(
                (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
                "{lhs} vs {rhs}"
            );
        }
    }
}
