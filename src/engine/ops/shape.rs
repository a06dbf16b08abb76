//! Ops that move data without arithmetic: pad, flatten, reshape, transpose, concat.

use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

/// Constant padding: `(before, after)` per dimension (length = rank of x).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PadSpec {
    pub pads: Vec<(usize, usize)>,
    pub value: f32,
}

pub fn check_axis(axis: usize, x: &[usize]) -> Result<(), OpError> {
    let _ = (axis, x);
    todo!()
}

pub fn pad_output_shape(spec: &PadSpec, x: &[usize]) -> Result<Vec<usize>, OpError> {
    let _ = (spec, x);
    todo!()
}

pub fn pad_forward(spec: &PadSpec, x: &Tensor) -> Result<Tensor, OpError> {
    let _ = (spec, x);
    todo!()
}

pub fn pad_backward(spec: &PadSpec, x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let _ = (spec, x_shape, d_y);
    todo!()
}

pub fn flatten_output_shape(axis: usize, x: &[usize]) -> Result<Vec<usize>, OpError> {
    let _ = (axis, x);
    todo!()
}

pub fn reshape_output_shape(shape: &[i64], x: &[usize]) -> Result<Vec<usize>, OpError> {
    let _ = (shape, x);
    todo!()
}

pub fn transpose_output_shape(perm: &[usize], x: &[usize]) -> Result<Vec<usize>, OpError> {
    let _ = (perm, x);
    todo!()
}

pub fn transpose_forward(perm: &[usize], x: &Tensor) -> Result<Tensor, OpError> {
    let _ = (perm, x);
    todo!()
}

/// d_x = transpose(d_y, inverse(perm)).
pub fn transpose_backward(perm: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let _ = (perm, d_y);
    todo!()
}

pub fn concat_output_shape(axis: usize, inputs: &[&[usize]]) -> Result<Vec<usize>, OpError> {
    let _ = (axis, inputs);
    todo!()
}

pub fn concat_forward(axis: usize, inputs: &[&Tensor]) -> Result<Tensor, OpError> {
    let _ = (axis, inputs);
    todo!()
}

/// One gradient per input: the slices of d_y along `axis`.
pub fn concat_backward(axis: usize, inputs: &[&Tensor], d_y: &Tensor) -> Result<Vec<Tensor>, OpError> {
    let _ = (axis, inputs, d_y);
    todo!()
}
