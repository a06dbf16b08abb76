//! Element-wise activations and softmax.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::elementwise::{CHUNK, par_map};
use super::shape::{check_axis, rows_per_task};
use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    Relu,
    /// min(max(x, min), max); ReLU6 is `Clip { min: 0, max: 6 }`.
    Clip {
        min: f32,
        max: f32,
    },
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    /// max(0, min(1, alpha * x + beta)) (ONNX defaults alpha 0.2, beta 0.5).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x * relu6(x + 3) / 6
    HardSwish,
    /// x * sigmoid(x)
    Silu,
    /// The error function (ONNX Erf; the legacy exporter's GELU is built from it).
    Erf,
    /// x · Φ(x), Φ the standard normal CDF (`tanh: false`, PyTorch's default), or its tanh
    /// approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (`tanh: true`).
    Gelu {
        tanh: bool,
    },
    /// √x (ONNX Sqrt of a run-time value: a LayerNorm written out by an exporter).
    Sqrt,
    /// 1 / x.
    Reciprocal,
    /// −x.
    Neg,
    /// x^exponent for a constant exponent (ONNX Pow with a constant scalar exponent).
    Pow {
        exponent: f32,
    },
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
            Activation::Erf => "Erf",
            Activation::Gelu { .. } => "Gelu",
            Activation::Sqrt => "Sqrt",
            Activation::Reciprocal => "Reciprocal",
            Activation::Neg => "Neg",
            Activation::Pow { .. } => "Pow",
        }
    }
}

use std::f32::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};

/// √(2/π), the tanh-GELU's scale.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The tanh-GELU's cubic coefficient.
const GELU_TANH_C: f32 = 0.044_715;
/// 1/√(2π), the standard normal density at 0.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Logistic function. Branch-free: for very negative x, exp(-x) overflows to +inf and the
/// quotient is exactly 0, which is the right limit.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Evaluates `$body` with `$a` bound to a copy of `$act` built from a literal variant, so that
/// each arm monomorphises the element loop and the per-element `match` in `apply` /
/// `derivative` folds away.
macro_rules! specialise {
    ($act:expr, $a:ident => $body:expr) => {
        match $act {
            Activation::Relu => {
                let $a = Activation::Relu;
                $body
            }
            Activation::Clip { min, max } => {
                let $a = Activation::Clip { min, max };
                $body
            }
            Activation::LeakyRelu { alpha } => {
                let $a = Activation::LeakyRelu { alpha };
                $body
            }
            Activation::Sigmoid => {
                let $a = Activation::Sigmoid;
                $body
            }
            Activation::Tanh => {
                let $a = Activation::Tanh;
                $body
            }
            Activation::HardSigmoid { alpha, beta } => {
                let $a = Activation::HardSigmoid { alpha, beta };
                $body
            }
            Activation::HardSwish => {
                let $a = Activation::HardSwish;
                $body
            }
            Activation::Silu => {
                let $a = Activation::Silu;
                $body
            }
            Activation::Erf => {
                let $a = Activation::Erf;
                $body
            }
            Activation::Gelu { tanh } => {
                let $a = Activation::Gelu { tanh };
                $body
            }
            Activation::Sqrt => {
                let $a = Activation::Sqrt;
                $body
            }
            Activation::Reciprocal => {
                let $a = Activation::Reciprocal;
                $body
            }
            Activation::Neg => {
                let $a = Activation::Neg;
                $body
            }
            Activation::Pow { exponent } => {
                let $a = Activation::Pow { exponent };
                $body
            }
        }
    };
}

impl Activation {
    /// act(x) for one element.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Clip { min, max } => x.max(min).min(max),
            Activation::LeakyRelu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Activation::Silu => x * sigmoid(x),
            Activation::Erf => libm::erff(x),
            Activation::Gelu { tanh: false } => 0.5 * x * (1.0 + libm::erff(x * FRAC_1_SQRT_2)),
            Activation::Gelu { tanh: true } => {
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)).tanh())
            }
            Activation::Sqrt => x.sqrt(),
            Activation::Reciprocal => 1.0 / x,
            Activation::Neg => -x,
            // the square (a written-out LayerNorm's variance) without a libm call
            Activation::Pow { exponent: 2.0 } => x * x,
            Activation::Pow { exponent } => x.powf(exponent),
        }
    }

    /// d act / dx at x (y = act(x) is given for the activations whose derivative uses it).
    /// At kinks the choice is PyTorch's: ReLU 0 at 0, Clip (hardtanh) 0 at both bounds,
    /// HardSigmoid 0 at its bounds, HardSwish `x/3 + 1/2` on the open (-3, 3), 0 at -3 and 1
    /// at 3 (torch 2.x's hardswish_backward).
    #[inline(always)]
    pub fn derivative(self, x: f32, y: f32) -> f32 {
        match self {
            Activation::Relu => f32::from(x > 0.0),
            Activation::Clip { min, max } => f32::from(x > min && x < max),
            Activation::LeakyRelu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            Activation::HardSigmoid { alpha, beta } => {
                let z = alpha * x + beta;
                if z > 0.0 && z < 1.0 { alpha } else { 0.0 }
            }
            Activation::HardSwish => {
                if x <= -3.0 {
                    0.0
                } else if x < 3.0 {
                    x / 3.0 + 0.5
                } else {
                    1.0
                }
            }
            Activation::Silu => {
                let s = sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            // 2/√π · e^(−x²)
            Activation::Erf => FRAC_2_SQRT_PI * (-x * x).exp(),
            // Φ(x) + x·φ(x)
            Activation::Gelu { tanh: false } => {
                0.5 * (1.0 + libm::erff(x * FRAC_1_SQRT_2))
                    + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
            }
            Activation::Gelu { tanh: true } => {
                let t = (SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x)).tanh();
                0.5 * (1.0 + t)
                    + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x)
            }
            // ½ / √x (infinite at 0, as PyTorch's)
            Activation::Sqrt => 0.5 / y,
            Activation::Reciprocal => -y * y,
            Activation::Neg => -1.0,
            Activation::Pow { exponent: 2.0 } => 2.0 * x,
            Activation::Pow { exponent } => exponent * x.powf(exponent - 1.0),
        }
    }
}

/// y = act(x), any shape.
pub fn forward(act: Activation, x: &Tensor) -> Tensor {
    let data = specialise!(act, a => par_map(x.data(), move |v| a.apply(v)));
    Tensor::new(x.shape().to_vec(), data).unwrap_or_else(|_| unreachable!("same length as x"))
}

/// d_x given x, y = act(x) and d_y (all the same shape). Callers (`Op::backward`) have checked
/// that d_y matches y; a mismatched x yields a gradient over the common prefix only.
pub fn backward(act: Activation, x: &Tensor, y: &Tensor, d_y: &Tensor) -> Tensor {
    // (any shape): d_x = d_y * act'(x)
    let d_x = specialise!(act, a => grad_loop(x.data(), y.data(), d_y.data(), move |xv, yv| a.derivative(xv, yv)));
    Tensor::new(d_y.shape().to_vec(), d_x).unwrap_or_else(|_| unreachable!("same length as d_y"))
}

/// `d_x[i] = d_y[i] * f(x[i], y[i])` in parallel chunks (length of d_y).
fn grad_loop(x: &[f32], y: &[f32], d_y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut d_x = vec![0.0; d_y.len()];
    d_x.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, dst)| {
        let start = ci * CHUNK;
        let end = start + dst.len();
        let xs = x.get(start..end).unwrap_or(&[]);
        let ys = y.get(start..end).unwrap_or(&[]);
        for (((o, &xv), &yv), &g) in dst.iter_mut().zip(xs).zip(ys).zip(&d_y[start..end]) {
            *o = g * f(xv, yv);
        }
    });
    d_x
}

/// (outer, len, inner) of a shape split around `axis`.
fn split_at_axis(axis: usize, shape: &[usize]) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Softmax along `axis` (numerically stable: the maximum is subtracted first).
pub fn softmax_forward(axis: usize, x: &Tensor) -> Result<Tensor, OpError> {
    softmax_forward_as(axis, x, false)
}

/// Log-softmax along `axis`: (x − max) − ln Σ exp(x − max), never through ln(softmax), so
/// that tiny probabilities keep their log.
pub fn log_softmax_forward(axis: usize, x: &Tensor) -> Result<Tensor, OpError> {
    softmax_forward_as(axis, x, true)
}

fn softmax_forward_as(axis: usize, x: &Tensor, log: bool) -> Result<Tensor, OpError> {
    check_axis(axis, x.shape())?;
    let (_outer, len, inner) = split_at_axis(axis, x.shape());
    let mut y = x.data().to_vec();
    if y.is_empty() {
        return Tensor::new(x.shape().to_vec(), y);
    }
    // (outer, len, inner): each block is independent
    y.par_chunks_mut(len * inner)
        .with_min_len(rows_per_task(len * inner))
        .for_each(|block| softmax_block(block, inner, log));
    Tensor::new(x.shape().to_vec(), y)
}

/// In-place softmax (or log-softmax) over the first axis of one `(len, inner)` block, walking
/// rows so that memory is read contiguously.
fn softmax_block(block: &mut [f32], inner: usize, log: bool) {
    // (inner): running maximum, then running sum of exponentials
    let mut max = vec![f32::NEG_INFINITY; inner];
    for row in block.chunks(inner) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v);
        }
    }
    let mut sum = vec![0.0f32; inner];
    if log {
        for row in block.chunks(inner) {
            for ((&v, &m), s) in row.iter().zip(&max).zip(sum.iter_mut()) {
                *s += (v - m).exp();
            }
        }
        // (inner): ln Σ exp(x) = max + ln Σ exp(x − max)
        let lse: Vec<f32> = max.iter().zip(&sum).map(|(&m, &s)| m + s.ln()).collect();
        for row in block.chunks_mut(inner) {
            for (v, &l) in row.iter_mut().zip(&lse) {
                *v -= l;
            }
        }
        return;
    }
    for row in block.chunks_mut(inner) {
        for ((v, &m), s) in row.iter_mut().zip(&max).zip(sum.iter_mut()) {
            *v = (*v - m).exp();
            *s += *v;
        }
    }
    for row in block.chunks_mut(inner) {
        for (v, &s) in row.iter_mut().zip(&sum) {
            *v /= s;
        }
    }
}

/// The reference: softmax of each line along `axis`, gathered one element at a time.
pub fn softmax_naive(axis: usize, x: &Tensor) -> Result<Tensor, OpError> {
    check_axis(axis, x.shape())?;
    let (outer, len, inner) = split_at_axis(axis, x.shape());
    let mut y = vec![0.0; x.numel()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let m = (0..len)
                .map(|k| x.data()[at(k)])
                .fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = (0..len).map(|k| (x.data()[at(k)] - m).exp()).sum();
            for k in 0..len {
                y[at(k)] = (x.data()[at(k)] - m).exp() / s;
            }
        }
    }
    Tensor::new(x.shape().to_vec(), y)
}

/// d_x of softmax along `axis` from its output y and d_y: y · (d_y − Σ_axis d_y · y).
pub fn softmax_backward(axis: usize, y: &Tensor, d_y: &Tensor) -> Result<Tensor, OpError> {
    softmax_backward_as(axis, y, d_y, false)
}

/// d_x of log-softmax along `axis` from its output y and d_y: d_y − exp(y) · Σ_axis d_y.
pub fn log_softmax_backward(axis: usize, y: &Tensor, d_y: &Tensor) -> Result<Tensor, OpError> {
    softmax_backward_as(axis, y, d_y, true)
}

fn softmax_backward_as(
    axis: usize,
    y: &Tensor,
    d_y: &Tensor,
    log: bool,
) -> Result<Tensor, OpError> {
    check_axis(axis, y.shape())?;
    if y.shape() != d_y.shape() {
        crate::op_bail!(
            "softmax gradient has shape {:?}, output has {:?}",
            d_y.shape(),
            y.shape()
        );
    }
    let (_outer, len, inner) = split_at_axis(axis, y.shape());
    let mut d_x = vec![0.0; y.numel()];
    if d_x.is_empty() {
        return Tensor::new(y.shape().to_vec(), d_x);
    }
    let block = len * inner;
    // (outer, len, inner)
    d_x.par_chunks_mut(block)
        .zip(y.data().par_chunks(block).zip(d_y.data().par_chunks(block)))
        .with_min_len(rows_per_task(block))
        .for_each(|(dx, (yb, gb))| {
            // (inner): Σ_k d_y · y along the axis (softmax) or Σ_k d_y (log-softmax)
            let mut dot = vec![0.0f32; inner];
            for (yr, gr) in yb.chunks(inner).zip(gb.chunks(inner)) {
                for ((d, &yv), &g) in dot.iter_mut().zip(yr).zip(gr) {
                    *d += if log { g } else { yv * g };
                }
            }
            for ((dr, yr), gr) in dx
                .chunks_mut(inner)
                .zip(yb.chunks(inner))
                .zip(gb.chunks(inner))
            {
                for (((o, &yv), &g), &d) in dr.iter_mut().zip(yr).zip(gr).zip(&dot) {
                    *o = if log { g - yv.exp() * d } else { yv * (g - d) };
                }
            }
        });
    Tensor::new(y.shape().to_vec(), d_x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    const ALL: [Activation; 16] = [
        Activation::Relu,
        Activation::Clip { min: 0.0, max: 6.0 },
        Activation::Clip {
            min: -0.5,
            max: 0.4,
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Activation::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
        },
        Activation::HardSwish,
        Activation::Silu,
        Activation::Erf,
        Activation::Gelu { tanh: false },
        Activation::Gelu { tanh: true },
        Activation::Neg,
        Activation::Pow { exponent: 2.0 },
        Activation::Pow { exponent: 3.0 },
    ];

    /// Inputs spread over [-4, 4] that avoid every kink (0, ±3, clip bounds, hard-sigmoid
    /// corners) by more than the finite-difference step.
    fn smooth_inputs(act: Activation) -> Tensor {
        let kinks: Vec<f32> = match act {
            Activation::Clip { min, max } => vec![min, max],
            Activation::HardSigmoid { alpha, beta } => vec![-beta / alpha, (1.0 - beta) / alpha],
            Activation::HardSwish => vec![-3.0, 3.0],
            _ => vec![0.0],
        };
        test_tensor(&[2, 3, 4, 5], 3).map(|v| {
            let mut x = v * 4.0;
            for &k in &kinks {
                if (x - k).abs() < 0.05 {
                    x = k + 0.05f32.copysign(x - k);
                }
            }
            x
        })
    }

    #[test]
    fn gradients_of_every_activation() {
        for act in ALL {
            let x = smooth_inputs(act);
            assert_op_gradients(&Op::Activation(act), &[x], &[true], Mode::Eval, 1e-2);
        }
    }

    /// The unary ops defined on positive numbers only (or with a pole at 0), on [0.5, 4.5].
    #[test]
    fn gradients_of_positive_domain_ops() {
        for act in [
            Activation::Sqrt,
            Activation::Reciprocal,
            Activation::Pow { exponent: 0.5 },
            Activation::Pow { exponent: -1.5 },
        ] {
            let x = test_tensor(&[2, 3, 4], 4).map(|v| 2.5 + 2.0 * v);
            assert_op_gradients(&Op::Activation(act), &[x], &[true], Mode::Eval, 1e-2);
        }
        assert_eq!(Activation::Sqrt.apply(4.0), 2.0);
        assert_eq!(Activation::Reciprocal.apply(4.0), 0.25);
        assert_eq!(Activation::Pow { exponent: 2.0 }.apply(-3.0), 9.0);
        assert_eq!(Activation::Neg.apply(2.0), -2.0);
    }

    #[test]
    fn values_match_pytorch() {
        let xs = [-4.0f32, -3.0, -1.5, 0.0, 1.0, 3.0, 5.0];
        let hs: Vec<f32> = xs.iter().map(|&x| Activation::HardSwish.apply(x)).collect();
        // torch.nn.functional.hardswish
        assert_eq!(hs, vec![0.0, 0.0, -0.375, 0.0, 0.6666667, 3.0, 5.0]);
        let dh: Vec<f32> = xs
            .iter()
            .map(|&x| Activation::HardSwish.derivative(x, 0.0))
            .collect();
        assert_eq!(dh, vec![0.0, 0.0, 0.0, 0.5, 0.8333334, 1.0, 1.0]);
        let relu6 = Activation::Clip { min: 0.0, max: 6.0 };
        assert_eq!(relu6.apply(7.0), 6.0);
        assert_eq!(relu6.derivative(6.0, 6.0), 0.0);
        assert_eq!(relu6.derivative(0.0, 0.0), 0.0);
        assert_eq!(relu6.derivative(3.0, 3.0), 1.0);
        assert_eq!(Activation::Relu.derivative(0.0, 0.0), 0.0);
        assert_eq!(Activation::LeakyRelu { alpha: 0.1 }.apply(-2.0), -0.2);
        assert_eq!(
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5
            }
            .apply(1.0),
            0.7
        );
        assert!((Activation::Silu.apply(1.0) - 0.7310586).abs() < 1e-6);
        // torch.nn.functional.gelu(x) and gelu(x, approximate="tanh"), torch.erf, at 1.0 and -2.0
        let close = |a: f32, b: f32| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        close(Activation::Gelu { tanh: false }.apply(1.0), 0.841_344_7);
        close(Activation::Gelu { tanh: false }.apply(-2.0), -0.045_500_26);
        close(Activation::Gelu { tanh: true }.apply(1.0), 0.841_191_97);
        close(Activation::Gelu { tanh: true }.apply(-2.0), -0.045_402_3);
        close(Activation::Erf.apply(1.0), 0.842_700_8);
        close(Activation::Erf.apply(-2.0), -0.995_322_3);
        assert_eq!(Activation::Sigmoid.apply(-200.0), 0.0);
        assert_eq!(Activation::Sigmoid.apply(200.0), 1.0);
    }

    #[test]
    fn softmax_matches_naive_on_every_axis() {
        let x = test_tensor(&[3, 4, 5], 5).map(|v| v * 30.0);
        for axis in 0..3 {
            let y = softmax_forward(axis, &x).unwrap();
            let r = softmax_naive(axis, &x).unwrap();
            for (a, b) in y.data().iter().zip(r.data()) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        assert!(softmax_forward(3, &x).is_err());
    }

    #[test]
    fn softmax_is_stable_for_large_inputs() {
        let x = Tensor::new(vec![1, 3], vec![1000.0, 1000.0, -1000.0]).unwrap();
        let y = softmax_forward(1, &x).unwrap();
        assert_eq!(y.data(), &[0.5, 0.5, 0.0]);
    }

    #[test]
    fn softmax_gradients() {
        for axis in 0..3 {
            let x = test_tensor(&[2, 3, 4], 9 + axis as u64);
            assert_op_gradients(&Op::Softmax { axis }, &[x], &[true], Mode::Eval, 1e-2);
            let x = test_tensor(&[2, 3, 4], 19 + axis as u64);
            assert_op_gradients(&Op::LogSoftmax { axis }, &[x], &[true], Mode::Eval, 1e-2);
        }
    }

    /// Log-softmax equals ln(softmax) where that is representable, and stays finite where the
    /// probability underflows.
    #[test]
    fn log_softmax_is_the_log_of_softmax() {
        let x = test_tensor(&[3, 5], 2).map(|v| v * 6.0);
        let (p, lp) = (
            softmax_forward(1, &x).unwrap(),
            log_softmax_forward(1, &x).unwrap(),
        );
        for (&p, &lp) in p.data().iter().zip(lp.data()) {
            assert!((p.ln() - lp).abs() < 1e-5, "{p} {lp}");
        }
        let far = Tensor::new(vec![1, 2], vec![0.0, -200.0]).unwrap();
        let lp = log_softmax_forward(1, &far).unwrap();
        assert_eq!(lp.data(), &[0.0, -200.0]);
    }

    #[test]
    fn softmax_backward_checks_shapes() {
        let y = test_tensor(&[2, 3], 1);
        assert!(softmax_backward(1, &y, &test_tensor(&[3, 2], 2)).is_err());
        assert!(softmax_backward(2, &y, &y).is_err());
    }
}
