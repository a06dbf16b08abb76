//! Element-wise activations and softmax.

use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    Relu,
    /// min(max(x, min), max); ReLU6 is `Clip { min: 0, max: 6 }`.
    Clip { min: f32, max: f32 },
    LeakyRelu { alpha: f32 },
    Sigmoid,
    Tanh,
    /// max(0, min(1, alpha * x + beta)) (ONNX defaults alpha 0.2, beta 0.5).
    HardSigmoid { alpha: f32, beta: f32 },
    /// x * relu6(x + 3) / 6
    HardSwish,
    /// x * sigmoid(x)
    Silu,
}

impl Activation {
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "Relu",
            Activation::Clip { .. } => "Clip",
            Activation::LeakyRelu { .. } => "LeakyRelu",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::Silu => "Silu",
        }
    }
}

/// y = act(x), any shape.
pub fn forward(act: Activation, x: &Tensor) -> Tensor {
    let _ = (act, x);
    todo!()
}

/// d_x given x, y = act(x) and d_y (all the same shape).
pub fn backward(act: Activation, x: &Tensor, y: &Tensor, d_y: &Tensor) -> Tensor {
    let _ = (act, x, y, d_y);
    todo!()
}

/// Softmax along `axis` (numerically stable).
pub fn softmax_forward(axis: usize, x: &Tensor) -> Result<Tensor, OpError> {
    let _ = (axis, x);
    todo!()
}

/// d_x = y * (d_y - sum(d_y * y, axis)).
pub fn softmax_backward(axis: usize, y: &Tensor, d_y: &Tensor) -> Result<Tensor, OpError> {
    let _ = (axis, y, d_y);
    todo!()
}
