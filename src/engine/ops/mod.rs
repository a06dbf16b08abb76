//! The closed set of operations a graph node can perform, dispatched with `match`.
//!
//! Each op family lives in its own file with one forward/backward pair per op; this file only
//! routes a node's inputs to them. Conventions shared by every family:
//! - images are NCHW `[n, c, h, w]`; shapes are documented on every public function;
//! - `backward` gets the node's inputs, its output `y`, what forward saved, and `d_y` (the
//!   gradient of the seed w.r.t. `y`, same shape as `y`); it returns one `Option<Tensor>` per
//!   input, computing only those whose `needs[i]` is true;
//! - ops never panic on user-influenced data: shape problems are [`OpError`]s.

pub mod activation;
pub mod bilinear;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub(crate) mod lanes;
pub mod layer_norm;
pub mod linear;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod select;
pub mod shape;
pub mod upsample;

use serde::{Deserialize, Serialize};

pub use activation::Activation;
pub use bilinear::{BilinearSpec, Coordinates};
pub use conv::{Conv2dSpec, FusedActivation, FusedConvSpec, Padding2d};
pub use elementwise::BinaryOp;
pub use linear::GemmSpec;
pub use norm::BatchNormSpec;
pub use pool::Pool2dSpec;
pub use reduce::{ReduceKind, ReduceSpec};
pub use shape::PadSpec;
pub use upsample::UpsampleSpec;

use super::error::OpError;
use super::tensor::Tensor;

/// Serde's default for a slice's step.
fn one() -> usize {
    1
}

/// One node's operation. Input order is part of each variant's contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Inputs: x `[n, c_in, h, w]`, weight `[c_out, c_in / groups, kh, kw]`, optional bias `[c_out]`.
    Conv2d(Conv2dSpec),
    /// A convolution with batch norm and zero padding folded in and an optional ReLU / Clip on
    /// its output; made only by `engine::graph::fuse` for inference graphs (never in training graphs
    /// or checkpoints). Inputs as `Conv2d`.
    FusedConv2d(FusedConvSpec),
    /// Inputs: x `[n, c, h, w]`, gamma `[c]`, beta `[c]`, running_mean `[c]`, running_var `[c]`.
    BatchNorm2d(BatchNormSpec),
    /// Layer normalisation over axes `axis..`. Inputs: x (any rank > axis), scale and optional
    /// bias of shape `x.shape[axis..]`.
    LayerNorm {
        axis: usize,
        eps: f32,
    },
    /// Element-wise activation. Input: x (any shape).
    Activation(Activation),
    /// Input: x `[n, c, h, w]`.
    MaxPool2d(Pool2dSpec),
    /// Input: x `[n, c, h, w]`.
    AvgPool2d(Pool2dSpec),
    /// `[n, c, h, w]` → `[n, c, 1, 1]`.
    GlobalAvgPool,
    /// Sum / mean / max / min / L2 norm over any axes. Input: x (any rank).
    Reduce(ReduceSpec),
    /// Nearest-neighbour upsampling by whole factors: `[n, c, h, w]` → `[n, c, h·sh, w·sw]`.
    Upsample(UpsampleSpec),
    /// Bilinear resizing to any size: `[n, c, h, w]` → `[n, c, out_h, out_w]`.
    Bilinear(BilinearSpec),
    /// Constant padding of any dimensions. Input: x.
    Pad(PadSpec),
    /// `[d0, .., d(axis-1), d(axis), ..]` → `[d0 * .. * d(axis-1), d(axis) * ..]` (ONNX Flatten).
    Flatten {
        axis: usize,
    },
    /// ONNX Reshape semantics: `0` copies the input's dimension, one `-1` is inferred.
    Reshape {
        shape: Vec<i64>,
    },
    /// Inputs: x `[1, ..]` and any value `like` `[n, ..]`: x repeated along the batch to
    /// `[n, ..]` (an imported constant that an exporter expanded to the run-time batch). No
    /// gradient flows to `like`, whose values are not read.
    RepeatBatch,
    /// Permutes dimensions: output dim i is input dim `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    /// Inputs: a, b, optional c. `alpha * op(a) @ op(b) + beta * c` (ONNX Gemm; Linear is
    /// `trans_b = true` with weight `[out, in]`).
    Gemm(GemmSpec),
    /// Inputs: a `[.., m, k]`, b `[.., k, n]` with broadcast batch dimensions (ONNX MatMul).
    MatMul,
    /// Inputs: a, b with numpy broadcasting.
    Binary(BinaryOp),
    /// Inputs: cond, a, b with numpy broadcasting: a where cond ≠ 0, else b (ONNX Where).
    Where,
    /// `x[.., start..end:step, ..]` along `axis` (ONNX Split, Slice and Gather on run-time
    /// values; `step` ≥ 1, absent from descriptions written before it existed).
    Slice {
        axis: usize,
        start: usize,
        end: usize,
        #[serde(default = "one")]
        step: usize,
    },
    /// Concatenation of all inputs along `axis`.
    Concat {
        axis: usize,
    },
    /// Inverted dropout with probability `p` in training; identity in evaluation.
    Dropout {
        p: f32,
    },
    /// Softmax along `axis`.
    Softmax {
        axis: usize,
    },
    /// Log-softmax along `axis` (a classifier trained with NLL loss ends in it).
    LogSoftmax {
        axis: usize,
    },
    Identity,
}

/// Per-node state that forward keeps for backward.
#[derive(Clone, Debug, Default)]
pub enum Saved {
    #[default]
    None,
    /// Flat input index of each max-pool or Max / Min reduction output's winner.
    Argmax(Vec<u32>),
    /// Per-channel statistics used by this batch norm pass (batch or running ones).
    BatchNorm { mean: Vec<f32>, inv_std: Vec<f32> },
    /// Dropout's scale per element (0 or 1/(1-p)).
    Mask(Vec<f32>),
}

/// Whether a pass trains (batch statistics, dropout) or evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    #[default]
    Eval,
    Train,
}

/// What an op needs besides its inputs during forward.
#[derive(Clone, Copy, Debug)]
pub struct ForwardCtx {
    pub mode: Mode,
    /// Seed for this node's randomness (dropout), derived from the pass seed and node index so
    /// that results do not depend on thread scheduling.
    pub seed: u64,
}

/// The result of one op's forward pass.
#[derive(Debug)]
pub struct OpOutput {
    pub y: Tensor,
    pub saved: Saved,
    /// Batch norm in training: the new running mean and variance (inputs 3 and 4).
    pub running_stats: Option<(Tensor, Tensor)>,
}

impl OpOutput {
    pub(crate) fn plain(y: Tensor) -> Self {
        Self {
            y,
            saved: Saved::None,
            running_stats: None,
        }
    }
}

impl Op {
    /// Short name for messages and summaries, e.g. `Conv2d`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "Conv2d",
            Op::FusedConv2d(_) => "FusedConv2d",
            Op::BatchNorm2d(_) => "BatchNorm2d",
            Op::LayerNorm { .. } => "LayerNorm",
            Op::Activation(a) => a.name(),
            Op::MaxPool2d(_) => "MaxPool2d",
            Op::AvgPool2d(_) => "AvgPool2d",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::Reduce(r) => r.kind.name(),
            Op::Upsample(_) => "Upsample",
            Op::Bilinear(_) => "Bilinear",
            Op::Pad(_) => "Pad",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::Binary(b) => b.name(),
            Op::Where => "Where",
            Op::Concat { .. } => "Concat",
            Op::Slice { .. } => "Slice",
            Op::RepeatBatch => "RepeatBatch",
            Op::Dropout { .. } => "Dropout",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Identity => "Identity",
        }
    }

    /// The allowed number of inputs.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Conv2d(_) => (2, 3),
            // x, w, b, and the residual r when the spec has one (then b is required)
            Op::FusedConv2d(s) if s.residual => (4, 4),
            Op::FusedConv2d(_) => (2, 3),
            Op::BatchNorm2d(_) => (5, 5),
            Op::Gemm(_) | Op::LayerNorm { .. } => (2, 3),
            Op::MatMul | Op::Binary(_) | Op::RepeatBatch => (2, 2),
            Op::Where => (3, 3),
            Op::Concat { .. } => (1, usize::MAX),
            _ => (1, 1),
        }
    }

    /// Output shape for the given input shapes, checking everything forward would check.
    pub fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, OpError> {
        let (lo, hi) = self.arity();
        if inputs.len() < lo || inputs.len() > hi {
            crate::op_bail!(
                "takes {} inputs, got {}",
                if lo == hi {
                    lo.to_string()
                } else if hi == usize::MAX {
                    format!("at least {lo}")
                } else {
                    format!("{lo} to {hi}")
                },
                inputs.len()
            );
        }
        let x = inputs[0];
        match self {
            Op::Conv2d(s) => conv::output_shape(s, x, inputs[1], inputs.get(2).copied()),
            Op::FusedConv2d(s) => {
                let y = conv::output_shape(&s.conv, x, inputs[1], inputs.get(2).copied())?;
                if s.residual && inputs[3] != y.as_slice() {
                    crate::op_bail!(
                        "residual shape {:?} does not match output shape {y:?}",
                        inputs[3]
                    );
                }
                Ok(y)
            }
            Op::BatchNorm2d(_) => norm::output_shape(x, &inputs[1..]),
            Op::LayerNorm { axis, .. } => {
                layer_norm::output_shape(*axis, x, inputs[1], inputs.get(2).copied())
            }
            Op::Activation(_) | Op::Dropout { .. } | Op::Identity => Ok(x.to_vec()),
            Op::Softmax { axis } | Op::LogSoftmax { axis } => {
                shape::check_axis(*axis, x).map(|_| x.to_vec())
            }
            Op::MaxPool2d(s) | Op::AvgPool2d(s) => pool::output_shape(s, x),
            Op::GlobalAvgPool => pool::global_output_shape(x),
            Op::Reduce(r) => reduce::output_shape(r, x),
            Op::Upsample(u) => upsample::output_shape(u, x),
            Op::Bilinear(b) => bilinear::output_shape(b, x),
            Op::Pad(s) => shape::pad_output_shape(s, x),
            Op::Flatten { axis } => shape::flatten_output_shape(*axis, x),
            Op::Reshape { shape } => shape::reshape_output_shape(shape, x),
            Op::Transpose { perm } => shape::transpose_output_shape(perm, x),
            Op::Gemm(s) => linear::gemm_output_shape(s, x, inputs[1], inputs.get(2).copied()),
            Op::MatMul => linear::matmul_output_shape(x, inputs[1]),
            Op::Binary(_) => elementwise::broadcast_shape(x, inputs[1]),
            Op::Where => select::output_shape(x, inputs[1], inputs[2]),
            Op::Concat { axis } => shape::concat_output_shape(*axis, inputs),
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => shape::slice_output_shape(*axis, *start, *end, *step, x),
            Op::RepeatBatch => shape::repeat_batch_output_shape(x, inputs[1]),
        }
    }

    /// Runs the op. `inputs` are in the order documented on each variant.
    pub fn forward(&self, inputs: &[&Tensor], ctx: ForwardCtx) -> Result<OpOutput, OpError> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        self.output_shape(&shapes)?;
        let x = inputs[0];
        let training = ctx.mode == Mode::Train;
        Ok(match self {
            Op::Conv2d(s) => {
                OpOutput::plain(conv::forward(s, x, inputs[1], inputs.get(2).copied())?)
            }
            Op::FusedConv2d(s) if s.residual => OpOutput::plain(conv::forward_residual(
                &s.conv,
                s.activation,
                x,
                inputs[1],
                inputs.get(2).copied(),
                inputs[3],
            )?),
            Op::FusedConv2d(s) => OpOutput::plain(conv::forward_fused(
                &s.conv,
                s.activation,
                x,
                inputs[1],
                inputs.get(2).copied(),
            )?),
            Op::BatchNorm2d(s) => {
                let (y, mean, inv_std, running) =
                    norm::forward(s, x, inputs[1], inputs[2], inputs[3], inputs[4], training)?;
                OpOutput {
                    y,
                    saved: Saved::BatchNorm { mean, inv_std },
                    running_stats: running,
                }
            }
            Op::LayerNorm { axis, eps } => OpOutput::plain(layer_norm::forward(
                *axis,
                *eps,
                x,
                inputs[1],
                inputs.get(2).copied(),
            )?),
            Op::Activation(a) => OpOutput::plain(activation::forward(*a, x)),
            Op::MaxPool2d(s) => {
                let (y, argmax) = pool::max_forward(s, x)?;
                OpOutput {
                    y,
                    saved: Saved::Argmax(argmax),
                    running_stats: None,
                }
            }
            Op::AvgPool2d(s) => OpOutput::plain(pool::avg_forward(s, x)?),
            Op::GlobalAvgPool => OpOutput::plain(pool::global_avg_forward(x)?),
            Op::Upsample(u) => OpOutput::plain(upsample::forward(u, x)?),
            Op::Bilinear(b) => OpOutput::plain(bilinear::forward(b, x)?),
            Op::Reduce(r) => {
                let (y, winners) = reduce::forward(r, x)?;
                OpOutput {
                    y,
                    saved: Saved::Argmax(winners),
                    running_stats: None,
                }
            }
            Op::Pad(s) => OpOutput::plain(shape::pad_forward(s, x)?),
            Op::Flatten { axis } => OpOutput::plain(
                x.clone()
                    .reshaped(shape::flatten_output_shape(*axis, x.shape())?)?,
            ),
            Op::Reshape { shape } => OpOutput::plain(
                x.clone()
                    .reshaped(shape::reshape_output_shape(shape, x.shape())?)?,
            ),
            Op::Transpose { perm } => OpOutput::plain(shape::transpose_forward(perm, x)?),
            Op::Gemm(s) => OpOutput::plain(linear::gemm_forward(
                s,
                x,
                inputs[1],
                inputs.get(2).copied(),
            )?),
            Op::MatMul => OpOutput::plain(linear::matmul_forward(x, inputs[1])?),
            Op::Binary(b) => OpOutput::plain(elementwise::forward(*b, x, inputs[1])?),
            Op::Where => OpOutput::plain(select::forward(x, inputs[1], inputs[2])?),
            Op::Concat { axis } => OpOutput::plain(shape::concat_forward(*axis, inputs)?),
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => OpOutput::plain(shape::slice_forward(*axis, *start, *end, *step, x)?),
            Op::RepeatBatch => OpOutput::plain(shape::repeat_batch_forward(x, inputs[1])?),
            Op::Dropout { p } => {
                if training && *p > 0.0 {
                    let (y, mask) = dropout::forward(*p, x, ctx.seed)?;
                    OpOutput {
                        y,
                        saved: Saved::Mask(mask),
                        running_stats: None,
                    }
                } else {
                    OpOutput::plain(x.clone())
                }
            }
            Op::Softmax { axis } => OpOutput::plain(activation::softmax_forward(*axis, x)?),
            Op::LogSoftmax { axis } => OpOutput::plain(activation::log_softmax_forward(*axis, x)?),
            Op::Identity => OpOutput::plain(x.clone()),
        })
    }

    /// Gradients of the node's inputs given `d_y`; `needs[i]` says which to compute.
    pub fn backward(
        &self,
        inputs: &[&Tensor],
        y: &Tensor,
        saved: &Saved,
        d_y: &Tensor,
        needs: &[bool],
        mode: Mode,
    ) -> Result<Vec<Option<Tensor>>, OpError> {
        if d_y.shape() != y.shape() {
            crate::op_bail!(
                "gradient shape {:?} does not match output shape {:?}",
                d_y.shape(),
                y.shape()
            );
        }
        let x = inputs[0];
        let only_x = |d_x: Tensor| vec![Some(d_x)];
        Ok(match self {
            Op::Conv2d(s) => conv::backward(s, x, inputs[1], inputs.len() > 2, d_y, needs)?,
            Op::FusedConv2d(s) => {
                conv::backward_fused(s, x, inputs[1], inputs.len() > 2, y, d_y.clone(), needs)?
            }
            Op::BatchNorm2d(s) => batch_norm_backward(s, inputs, saved, d_y.clone(), needs, mode)?,
            Op::LayerNorm { axis, eps } => {
                layer_norm::backward(*axis, *eps, x, inputs[1], inputs.len() > 2, d_y, needs)?
            }
            Op::Activation(a) => only_x(activation::backward(*a, x, y, d_y)),
            Op::MaxPool2d(_) => {
                let Saved::Argmax(argmax) = saved else {
                    crate::op_bail!("max pool backward without saved winners");
                };
                only_x(pool::max_backward(x.shape(), argmax, d_y)?)
            }
            Op::AvgPool2d(s) => only_x(pool::avg_backward(s, x.shape(), d_y)?),
            Op::GlobalAvgPool => only_x(pool::global_avg_backward(x.shape(), d_y)?),
            Op::Upsample(u) => only_x(upsample::backward(u, x.shape(), d_y)?),
            Op::Bilinear(b) => only_x(bilinear::backward(b, x.shape(), d_y)?),
            Op::Reduce(r) => {
                let winners = match saved {
                    Saved::Argmax(w) => w.as_slice(),
                    _ => &[],
                };
                only_x(reduce::backward(r, x, y, winners, d_y)?)
            }
            Op::Pad(s) => only_x(shape::pad_backward(s, x.shape(), d_y)?),
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity => {
                only_x(d_y.clone().reshaped(x.shape().to_vec())?)
            }
            Op::Transpose { perm } => only_x(shape::transpose_backward(perm, d_y)?),
            Op::Gemm(s) => {
                linear::gemm_backward(s, x, inputs[1], inputs.get(2).copied(), d_y, needs)?
            }
            Op::MatMul => linear::matmul_backward(x, inputs[1], d_y, needs)?,
            Op::Binary(b) => elementwise::backward(*b, x, inputs[1], y, d_y, needs)?,
            Op::Where => select::backward(x, inputs[1], inputs[2], d_y, needs)?,
            Op::Concat { axis } => shape::concat_backward(*axis, inputs, d_y)?
                .into_iter()
                .map(Some)
                .collect(),
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => only_x(shape::slice_backward(
                *axis,
                *start,
                *end,
                *step,
                x.shape(),
                d_y,
            )?),
            Op::RepeatBatch => vec![Some(shape::repeat_batch_backward(x.shape(), d_y)?), None],
            Op::Dropout { .. } => match saved {
                Saved::Mask(mask) => only_x(dropout::backward(mask, d_y)?),
                _ => only_x(d_y.clone()),
            },
            Op::Softmax { axis } => only_x(activation::softmax_backward(*axis, y, d_y)?),
            Op::LogSoftmax { axis } => only_x(activation::log_softmax_backward(*axis, y, d_y)?),
        })
    }

    /// [`Op::backward`] for a caller that owns `d_y` and is done with it (the graph): where the
    /// input gradient is `d_y` itself, reshaped, masked (activation derivative, dropout),
    /// rescaled per element (batch norm) or passed through an addition, it is computed in d_y's
    /// buffer instead of a new one. Results are bit-identical to
    /// `backward`'s.
    pub fn backward_owned(
        &self,
        inputs: &[&Tensor],
        y: &Tensor,
        saved: &Saved,
        mut d_y: Tensor,
        needs: &[bool],
        mode: Mode,
    ) -> Result<Vec<Option<Tensor>>, OpError> {
        if d_y.shape() != y.shape() {
            return self.backward(inputs, y, saved, &d_y, needs, mode); // reports the mismatch
        }
        let x = inputs[0];
        let need = |i: usize| needs.get(i).copied().unwrap_or(false);
        match self {
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Identity => {
                return Ok(vec![Some(d_y.reshaped(x.shape().to_vec())?)]);
            }
            Op::Dropout { .. } => {
                return Ok(vec![Some(match saved {
                    Saved::Mask(mask) => dropout::backward_owned(mask, d_y)?,
                    _ => d_y,
                })]);
            }
            Op::BatchNorm2d(s) => return batch_norm_backward(s, inputs, saved, d_y, needs, mode),
            Op::Activation(a) => {
                if let Some(act) = FusedActivation::of(*a) {
                    // act'(x) read from y: the same 0/1 factor `activation::backward` computes
                    act.mask_gradient(y.data(), d_y.data_mut());
                    return Ok(vec![Some(d_y)]);
                }
            }
            Op::FusedConv2d(s) => {
                return conv::backward_fused(s, x, inputs[1], inputs.len() > 2, y, d_y, needs);
            }
            Op::Binary(BinaryOp::Add) if inputs.iter().all(|t| t.shape() == y.shape()) => {
                // no broadcasting: both gradients are d_y
                return Ok(match (need(0), need(1)) {
                    (true, true) => vec![Some(d_y.clone()), Some(d_y)],
                    (true, false) => vec![Some(d_y), None],
                    (false, true) => vec![None, Some(d_y)],
                    (false, false) => vec![None, None],
                });
            }
            _ => {}
        }
        self.backward(inputs, y, saved, &d_y, needs, mode)
    }

    /// Multiply-accumulate count of one forward pass for the given input shapes (for summaries).
    pub fn macs(&self, inputs: &[&[usize]], output: &[usize]) -> u64 {
        let out: u64 = output.iter().map(|&d| d as u64).product();
        match self {
            Op::Conv2d(_) | Op::FusedConv2d(_) => {
                // each output element reads (c_in / groups) * kh * kw weights
                let w = inputs.get(1).copied().unwrap_or(&[]);
                out * w.iter().skip(1).map(|&d| d as u64).product::<u64>()
            }
            Op::Gemm(s) => {
                let a = inputs[0];
                let k = if s.trans_a { a.first() } else { a.get(1) };
                out * k.copied().unwrap_or(0) as u64
            }
            Op::MatMul => out * inputs[0].last().copied().unwrap_or(0) as u64,
            _ => 0,
        }
    }
}

/// Batch norm's input gradients from the statistics its forward saved, d_x in d_y's buffer.
fn batch_norm_backward(
    spec: &BatchNormSpec,
    inputs: &[&Tensor],
    saved: &Saved,
    d_y: Tensor,
    needs: &[bool],
    mode: Mode,
) -> Result<Vec<Option<Tensor>>, OpError> {
    let Saved::BatchNorm { mean, inv_std } = saved else {
        crate::op_bail!("batch norm backward without saved statistics");
    };
    let training = mode == Mode::Train;
    norm::backward(
        spec, inputs[0], inputs[1], mean, inv_std, d_y, needs, training,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::test_tensor;

    fn bits(t: &Option<Tensor>) -> Option<(Vec<usize>, Vec<u32>)> {
        t.as_ref().map(|t| {
            (
                t.shape().to_vec(),
                t.data().iter().map(|v| v.to_bits()).collect(),
            )
        })
    }

    /// `backward_owned` against `backward` on every op it handles itself and on ops it passes
    /// on: same shapes, same bits (signed zeros included), same `None`s. (Batch norm and
    /// dropout share one implementation, their borrowed form copying d_y first: for them this
    /// checks the dispatch — statistics, mode, mask; their finite-difference and PyTorch tests
    /// check the arithmetic.)
    #[test]
    fn owned_backward_is_bit_identical_to_backward() {
        let x = test_tensor(&[2, 3, 5, 4], 1);
        let w = test_tensor(&[4, 3, 3, 3], 2);
        let b = test_tensor(&[4], 3);
        let conv = Conv2dSpec::stride1(1);
        let fused = |activation| {
            Op::FusedConv2d(FusedConvSpec {
                conv: conv.clone(),
                activation,
                residual: false,
            })
        };
        let small = test_tensor(&[1, 3, 1, 1], 4); // broadcast against x
        // batch norm parameters [3]: gamma, beta, running mean, running variance (> 0)
        let (g3, b3, m3) = (
            test_tensor(&[3], 5),
            test_tensor(&[3], 6),
            test_tensor(&[3], 7),
        );
        let v3 = Tensor::full(&[3], 0.7);
        // (op, inputs, the `needs` patterns to try)
        type Case<'a> = (Op, Vec<&'a Tensor>, Vec<Vec<bool>>);
        let cases: Vec<Case> = vec![
            (Op::Flatten { axis: 1 }, vec![&x], vec![vec![true]]),
            (
                Op::Reshape { shape: vec![0, -1] },
                vec![&x],
                vec![vec![true]],
            ),
            (Op::Identity, vec![&x], vec![vec![true]]),
            (Op::Dropout { p: 0.5 }, vec![&x], vec![vec![true]]),
            (
                Op::BatchNorm2d(BatchNormSpec {
                    eps: 1e-3,
                    momentum: 0.1,
                }),
                vec![&x, &g3, &b3, &m3, &v3],
                vec![
                    vec![true, true, true, false, false],
                    vec![true, false, false, false, false],
                ],
            ),
            (Op::Activation(Activation::Relu), vec![&x], vec![vec![true]]),
            (
                Op::Activation(Activation::Clip {
                    min: -0.2,
                    max: 0.3,
                }),
                vec![&x],
                vec![vec![true]],
            ),
            (
                Op::Activation(Activation::LeakyRelu { alpha: 0.1 }),
                vec![&x],
                vec![vec![true]],
            ),
            (
                fused(Some(FusedActivation::Relu)),
                vec![&x, &w, &b],
                vec![vec![true, true, true], vec![true, false, false]],
            ),
            (fused(None), vec![&x, &w], vec![vec![true, true]]),
            (
                Op::Binary(BinaryOp::Add),
                vec![&x, &x],
                vec![
                    vec![true, true],
                    vec![true, false],
                    vec![false, true],
                    vec![false, false],
                ],
            ),
            (
                Op::Binary(BinaryOp::Add),
                vec![&x, &small],
                vec![vec![true, true]],
            ),
            (
                Op::Binary(BinaryOp::Sub),
                vec![&x, &x],
                vec![vec![true, true]],
            ),
        ];
        // training mode too: dropout with a mask, batch norm through its batch statistics
        for mode in [Mode::Eval, Mode::Train] {
            let ctx = ForwardCtx { mode, seed: 3 };
            for (op, inputs, needs_list) in &cases {
                let out = op.forward(inputs, ctx).unwrap();
                let d_y = test_tensor(out.y.shape(), 9);
                for needs in needs_list {
                    let want = op
                        .backward(inputs, &out.y, &out.saved, &d_y, needs, mode)
                        .unwrap();
                    let got = op
                        .backward_owned(inputs, &out.y, &out.saved, d_y.clone(), needs, mode)
                        .unwrap();
                    assert_eq!(got.len(), want.len(), "{op:?}");
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            bits(g),
                            bits(w),
                            "{op:?} {mode:?} input {i}, needs {needs:?}"
                        );
                    }
                }
            }
        }
    }

    /// A gradient of the wrong shape is an error on the owned path too, not a panic.
    #[test]
    fn owned_backward_reports_a_wrong_gradient_shape() {
        let x = test_tensor(&[2, 3], 1);
        let op = Op::Activation(Activation::Relu);
        let err = op
            .backward_owned(
                &[&x],
                &x,
                &Saved::None,
                test_tensor(&[3, 2], 2),
                &[true],
                Mode::Eval,
            )
            .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
