//! What a convolution is asked to do: padding, the spec of `Conv2d` and of the inference
//! rewrite's fused convolution, and the activations that can be fused into it.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::mask_outside;

/// Zero padding on each side of the spatial dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Padding2d {
    pub top: usize,
    pub left: usize,
    pub bottom: usize,
    pub right: usize,
}

impl Padding2d {
    pub fn uniform(p: usize) -> Self {
        Self {
            top: p,
            left: p,
            bottom: p,
            right: p,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2dSpec {
    /// `[sh, sw]`
    pub stride: [usize; 2],
    pub padding: Padding2d,
    /// `[dh, dw]`
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dSpec {
    /// Stride 1, `pad` zeros on every side, undilated, one group: the plain convolution of
    /// hand-built graphs (the smile CNN, tests).
    pub fn stride1(pad: usize) -> Self {
        Self {
            stride: [1, 1],
            padding: Padding2d::uniform(pad),
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// An element-wise activation applied to a convolution's output in the same pass (inference
/// graphs made by `engine::graph::fuse`). Only activations whose derivative can be read from the
/// output are allowed, so that backward through the fused op stays exact without keeping the
/// pre-activation values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum FusedActivation {
    Relu,
    /// min(max(x, min), max) with `min < max` (ReLU6 is 0..6).
    Clip {
        min: f32,
        max: f32,
    },
}

impl FusedActivation {
    /// The clamp bounds `(lo, hi)` of the activation.
    pub(super) fn bounds(self) -> (f32, f32) {
        match self {
            FusedActivation::Relu => (0.0, f32::INFINITY),
            FusedActivation::Clip { min, max } => (min, max),
        }
    }

    /// act(z) for one element: the same expression as `Activation::apply` so that fused and
    /// unfused graphs agree bit for bit on the activation.
    #[inline(always)]
    pub fn apply(self, z: f32) -> f32 {
        match self {
            FusedActivation::Relu => z.max(0.0),
            FusedActivation::Clip { min, max } => z.max(min).min(max),
        }
    }

    /// act'(z) read from y = act(z): for ReLU z > 0 ⇔ y > 0; for Clip z ∈ (min, max) ⇔
    /// y ∈ (min, max). Matches `Activation::derivative` (0 at the kinks).
    #[inline(always)]
    pub fn passes(self, y: f32) -> bool {
        let (lo, hi) = self.bounds();
        y > lo && y < hi
    }

    /// The fused form of an element-wise activation, for those whose derivative can be read
    /// from their output (ReLU, and Clip with `min < max`, which also rules out NaN bounds).
    pub fn of(act: crate::engine::ops::activation::Activation) -> Option<Self> {
        use crate::engine::ops::activation::Activation;
        match act {
            Activation::Relu => Some(FusedActivation::Relu),
            Activation::Clip { min, max } if min < max => Some(FusedActivation::Clip { min, max }),
            _ => None,
        }
    }

    /// Multiplies `d_y` by the activation's derivative (0 or 1), read from the output `y`
    /// (same shape as `d_y`): turns the gradient of act(z) into the gradient of z, in place.
    pub fn mask_gradient(self, y: &[f32], d_y: &mut [f32]) {
        let (lo, hi) = self.bounds();
        d_y.par_chunks_mut(1 << 14)
            .zip(y.par_chunks(1 << 14))
            .for_each(|(dz, yc)| mask_outside(lo, hi, yc, dz));
    }

    /// The activation this one fuses.
    pub fn activation(self) -> crate::engine::ops::activation::Activation {
        match self {
            FusedActivation::Relu => crate::engine::ops::activation::Activation::Relu,
            FusedActivation::Clip { min, max } => {
                crate::engine::ops::activation::Activation::Clip { min, max }
            }
        }
    }
}

/// A convolution with its (optional) activation fused: inference graphs only. Batch norm and
/// zero padding are folded into the convolution's weights, bias and `conv.padding` by the
/// rewrite, so they need no field here.
///
/// With `residual`, the op reads a fourth input r of the output's shape (x, w, b, r; the bias
/// is then always present) and computes y = act(conv(x, w) + b + r): a ResNet block's
/// `Add` of its shortcut and the `Relu` after it, done while the output is written instead of
/// as two more passes over it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FusedConvSpec {
    pub conv: Conv2dSpec,
    pub activation: Option<FusedActivation>,
    #[serde(default)]
    pub residual: bool,
}
