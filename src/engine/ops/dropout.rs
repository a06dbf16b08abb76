//! Inverted dropout: in training each element is zeroed with probability p and the rest are
//! scaled by 1/(1-p), so evaluation is the identity.

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

/// Returns (y, mask) where mask holds 0 or 1/(1-p) per element; deterministic in `seed`.
pub fn forward(p: f32, x: &Tensor, seed: u64) -> Result<(Tensor, Vec<f32>), OpError> {
    let _ = (p, x, seed);
    todo!()
}

/// d_x = d_y * mask.
pub fn backward(mask: &[f32], d_y: &Tensor) -> Result<Tensor, OpError> {
    let _ = (mask, d_y);
    todo!()
}
