//! Binary element-wise ops with numpy broadcasting (residual adds, squeeze-excite scales,
//! Keras-style folded batch norm as Mul + Add).

use serde::{Deserialize, Serialize};

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
        }
    }
}

/// Numpy broadcast of two shapes (aligned at the right).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let _ = (a, b);
    todo!()
}

pub fn forward(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let _ = (op, a, b);
    todo!()
}

/// `[d_a, d_b]`, each summed back down to its input's shape, each iff `needs[i]`.
pub fn backward(
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    y: &Tensor,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    let _ = (op, a, b, y, d_y, needs);
    todo!()
}
