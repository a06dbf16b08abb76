//! Max, average and global average pooling over NCHW tensors.

use serde::{Deserialize, Serialize};

use super::conv::Padding2d;
use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool2dSpec {
    /// `[kh, kw]`
    pub kernel: [usize; 2],
    /// `[sh, sw]`
    pub stride: [usize; 2],
    pub padding: Padding2d,
    /// Output size rounds up instead of down (windows must still start inside the input or
    /// its left/top padding, as PyTorch).
    pub ceil_mode: bool,
    /// Average pooling only: padded zeros count in the divisor.
    pub count_include_pad: bool,
}

/// `[n, c, oh, ow]` for x `[n, c, h, w]`.
pub fn output_shape(spec: &Pool2dSpec, x: &[usize]) -> Result<Vec<usize>, OpError> {
    let _ = (spec, x);
    todo!()
}

/// `[n, c, 1, 1]` for x `[n, c, h, w]`.
pub fn global_output_shape(x: &[usize]) -> Result<Vec<usize>, OpError> {
    let _ = x;
    todo!()
}

/// Returns (y `[n, c, oh, ow]`, flat index into x of each output's maximum).
pub fn max_forward(spec: &Pool2dSpec, x: &Tensor) -> Result<(Tensor, Vec<u32>), OpError> {
    let _ = (spec, x);
    todo!()
}

pub fn max_backward(x_shape: &[usize], argmax: &[u32], d_y: &Tensor) -> Result<Tensor, OpError> {
    let _ = (x_shape, argmax, d_y);
    todo!()
}

pub fn avg_forward(spec: &Pool2dSpec, x: &Tensor) -> Result<Tensor, OpError> {
    let _ = (spec, x);
    todo!()
}

pub fn avg_backward(spec: &Pool2dSpec, x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let _ = (spec, x_shape, d_y);
    todo!()
}

pub fn global_avg_forward(x: &Tensor) -> Result<Tensor, OpError> {
    let _ = x;
    todo!()
}

pub fn global_avg_backward(x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let _ = (x_shape, d_y);
    todo!()
}
