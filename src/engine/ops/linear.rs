//! Matrix products: ONNX Gemm (Linear layers) and MatMul. All products go through `gemm.rs`.

use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

/// y = alpha * op(a) @ op(b) + beta * c, with op = transpose when the flag is set.
/// a `[m, k]` (or `[k, m]`), b `[k, n]` (or `[n, k]`), c broadcastable to `[m, n]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmSpec {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
}

impl GemmSpec {
    /// A fully connected layer: x `[n, in]` @ w`[out, in]`ᵀ + b `[out]`.
    pub fn linear() -> Self {
        Self { trans_a: false, trans_b: true, alpha: 1.0, beta: 1.0 }
    }
}

pub fn gemm_output_shape(
    spec: &GemmSpec,
    a: &[usize],
    b: &[usize],
    c: Option<&[usize]>,
) -> Result<Vec<usize>, OpError> {
    let _ = (spec, a, b, c);
    todo!()
}

pub fn gemm_forward(spec: &GemmSpec, a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> Result<Tensor, OpError> {
    let _ = (spec, a, b, c);
    todo!()
}

/// `[d_a, d_b, d_c]` (d_c reduced to c's shape), each iff `needs[i]`.
pub fn gemm_backward(
    spec: &GemmSpec,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    let _ = (spec, a, b, c, d_y, needs);
    todo!()
}

pub fn matmul_output_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let _ = (a, b);
    todo!()
}

pub fn matmul_forward(a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let _ = (a, b);
    todo!()
}

pub fn matmul_backward(a: &Tensor, b: &Tensor, d_y: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>, OpError> {
    let _ = (a, b, d_y, needs);
    todo!()
}
