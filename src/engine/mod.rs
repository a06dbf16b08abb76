//! The CNN engine: tensors, ops, graphs, gradients, losses and optimisers. No UI, no files.

pub mod error;
pub mod gemm;
mod gemm_portable;
pub mod gradcheck;
pub mod graph;
pub mod init;
pub mod loss;
pub mod map;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod simd;
pub mod tensor;

pub use error::{GraphError, OpError};
pub use graph::{
    BackwardRequest, ForwardOptions, ForwardPass, Gradients, Graph, GraphDef, Keep, Param, ValueId,
};
pub use map::Map;
pub use ops::{Mode, Op};
pub use tensor::Tensor;
