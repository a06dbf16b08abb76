//! Batch normalisation over the channels of NCHW tensors.

use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNormSpec {
    pub eps: f32,
    /// PyTorch convention: running = (1 - momentum) * running + momentum * batch.
    pub momentum: f32,
}

/// x `[n, c, h, w]` (or `[n, c]`), params each `[c]` → same shape as x.
pub fn output_shape(x: &[usize], params: &[&[usize]]) -> Result<Vec<usize>, OpError> {
    let _ = (x, params);
    todo!()
}

/// Returns (y, mean used, inv_std used, new running (mean, var) when training).
/// Training uses batch statistics (biased variance for normalising, unbiased for the running
/// update, as PyTorch); evaluation uses the running statistics.
pub fn forward(
    spec: &BatchNormSpec,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    training: bool,
) -> Result<(Tensor, Vec<f32>, Vec<f32>, Option<(Tensor, Tensor)>), OpError> {
    let _ = (spec, x, gamma, beta, running_mean, running_var, training);
    todo!()
}

/// Returns gradients for the five inputs `[d_x, grad_gamma, grad_beta, None, None]`.
pub fn backward(
    spec: &BatchNormSpec,
    x: &Tensor,
    gamma: &Tensor,
    mean: &[f32],
    inv_std: &[f32],
    d_y: &Tensor,
    needs: &[bool],
    training: bool,
) -> Result<Vec<Option<Tensor>>, OpError> {
    let _ = (spec, x, gamma, mean, inv_std, d_y, needs, training);
    todo!()
}
