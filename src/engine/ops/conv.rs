//! 2-D convolution: stride, asymmetric padding, dilation, groups (incl. depthwise), optional bias.

use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

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
        Self { top: p, left: p, bottom: p, right: p }
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

/// Output shape `[n, c_out, oh, ow]` for x `[n, c_in, h, w]`, w `[c_out, c_in/groups, kh, kw]`,
/// optional bias `[c_out]`.
pub fn output_shape(
    spec: &Conv2dSpec,
    x: &[usize],
    w: &[usize],
    b: Option<&[usize]>,
) -> Result<Vec<usize>, OpError> {
    let _ = (spec, x, w, b);
    todo!("conv output_shape")
}

/// y `[n, c_out, oh, ow]` = conv(x `[n, c_in, h, w]`, w `[c_out, c_in/g, kh, kw]`) + b `[c_out]`.
pub fn forward(spec: &Conv2dSpec, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor, OpError> {
    let _ = (spec, x, w, b);
    todo!("conv forward")
}

/// Returns `[d_x, grad_w, grad_b]` (grad_b only when `has_bias`), each computed iff `needs[i]`.
pub fn backward(
    spec: &Conv2dSpec,
    x: &Tensor,
    w: &Tensor,
    has_bias: bool,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    let _ = (spec, x, w, has_bias, d_y, needs);
    todo!("conv backward")
}
