//! Parameter initialisers (Kaiming, Xavier) drawing from an explicit seeded RNG.
//!
//! Formulas follow `torch.nn.init`: fans are computed as PyTorch's
//! `_calculate_fan_in_and_fan_out` (weight `[out, in, k...]`: fan_in = in·Πk,
//! fan_out = out·Πk), gains as `calculate_gain`. The random stream is ours (ChaCha8), so values
//! differ from PyTorch's for the same seed; the distributions are the same.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::OpError;
use super::tensor::{Tensor, checked_numel};

/// The RNG every initialiser takes: deterministic for a seed on every platform.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The non-linearity that follows a layer, for `calculate_gain`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    Linear,
    Sigmoid,
    Tanh,
    Relu,
    /// Leaky ReLU with this negative slope.
    LeakyRelu(f32),
}

/// PyTorch's `calculate_gain`.
pub fn gain(nl: Nonlinearity) -> f32 {
    match nl {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => 2f32.sqrt(),
        Nonlinearity::LeakyRelu(a) => (2.0 / (1.0 + a * a)).sqrt(),
    }
}

/// Which fan Kaiming scales by: `FanIn` preserves forward variance, `FanOut` backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    FanIn,
    FanOut,
}

/// (fan_in, fan_out) of a weight shape `[out, in, k...]`; needs at least 2 dimensions.
pub fn fans(shape: &[usize]) -> Result<(usize, usize), OpError> {
    if shape.len() < 2 {
        crate::op_bail!(
            "fan in and fan out need a weight with at least 2 dimensions, got shape {shape:?}"
        );
    }
    let receptive: usize = shape[2..].iter().product();
    let (fan_in, fan_out) = (shape[1] * receptive, shape[0] * receptive);
    if fan_in == 0 || fan_out == 0 {
        crate::op_bail!("weight shape {shape:?} has a zero fan");
    }
    Ok((fan_in, fan_out))
}

fn numel(shape: &[usize]) -> Result<usize, OpError> {
    checked_numel(shape).ok_or_else(|| OpError::new(format!("shape {shape:?} is too large")))
}

/// U(lo, hi) of a shape.
pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut ChaCha8Rng) -> Result<Tensor, OpError> {
    let n = numel(shape)?;
    let data = (0..n)
        .map(|_| lo + (hi - lo) * rng.random::<f32>())
        .collect();
    Tensor::new(shape.to_vec(), data)
}

/// N(mean, std²) of a shape.
pub fn normal(
    shape: &[usize],
    mean: f32,
    std: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor, OpError> {
    let n = numel(shape)?;
    let mut data = Vec::with_capacity(n);
    while data.len() < n {
        let (a, b) = super::rng::normal_pair(rng);
        data.push(mean + std * a as f32);
        if data.len() < n {
            data.push(mean + std * b as f32);
        }
    }
    Tensor::new(shape.to_vec(), data)
}

fn kaiming_std(shape: &[usize], mode: FanMode, nl: Nonlinearity) -> Result<f32, OpError> {
    let (fan_in, fan_out) = fans(shape)?;
    let fan = match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    };
    Ok(gain(nl) / (fan as f32).sqrt())
}

/// Kaiming (He) uniform: U(−b, b) with b = gain·√(3 / fan).
pub fn kaiming_uniform(
    shape: &[usize],
    mode: FanMode,
    nl: Nonlinearity,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor, OpError> {
    let bound = 3f32.sqrt() * kaiming_std(shape, mode, nl)?;
    uniform(shape, -bound, bound, rng)
}

/// Kaiming (He) normal: N(0, (gain / √fan)²).
pub fn kaiming_normal(
    shape: &[usize],
    mode: FanMode,
    nl: Nonlinearity,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor, OpError> {
    let std = kaiming_std(shape, mode, nl)?;
    normal(shape, 0.0, std, rng)
}

/// Xavier (Glorot) uniform: U(−b, b) with b = gain·√(6 / (fan_in + fan_out)).
pub fn xavier_uniform(shape: &[usize], gain: f32, rng: &mut ChaCha8Rng) -> Result<Tensor, OpError> {
    let (fan_in, fan_out) = fans(shape)?;
    let bound = gain * (6.0 / (fan_in + fan_out) as f32).sqrt();
    uniform(shape, -bound, bound, rng)
}

/// Xavier (Glorot) normal: N(0, gain²·2 / (fan_in + fan_out)).
pub fn xavier_normal(shape: &[usize], gain: f32, rng: &mut ChaCha8Rng) -> Result<Tensor, OpError> {
    let (fan_in, fan_out) = fans(shape)?;
    let std = gain * (2.0 / (fan_in + fan_out) as f32).sqrt();
    normal(shape, 0.0, std, rng)
}

/// PyTorch's default `Conv2d`/`Linear` weight init: `kaiming_uniform_(a=√5)`, which works out
/// to U(−1/√fan_in, 1/√fan_in).
pub fn torch_default_weight(shape: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor, OpError> {
    kaiming_uniform(
        shape,
        FanMode::FanIn,
        Nonlinearity::LeakyRelu(5f32.sqrt()),
        rng,
    )
}

/// PyTorch's default bias init for a layer whose weight has shape `weight_shape`:
/// U(−1/√fan_in, 1/√fan_in), `[out]`.
pub fn torch_default_bias(weight_shape: &[usize], rng: &mut ChaCha8Rng) -> Result<Tensor, OpError> {
    let (fan_in, _) = fans(weight_shape)?;
    let bound = 1.0 / (fan_in as f32).sqrt();
    uniform(&weight_shape[..1], -bound, bound, rng)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mean_std(t: &Tensor) -> (f64, f64) {
        let n = t.numel() as f64;
        let mean = t.data().iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = t
            .data()
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    /// Checks mean ≈ 0 and std ≈ `want_std` within 2 % (n = 2^18 gives ~0.3 % sampling error).
    fn assert_stats(t: &Tensor, want_std: f64) {
        let (mean, std) = mean_std(t);
        assert!(mean.abs() < 0.02 * want_std, "mean {mean} (std {want_std})");
        assert!(
            (std / want_std - 1.0).abs() < 0.02,
            "std {std} want {want_std}"
        );
    }

    const SHAPE: [usize; 4] = [256, 64, 4, 4]; // fan_in 1024, fan_out 4096, 2^18 elements

    #[test]
    fn fans_follow_pytorch() {
        assert_eq!(fans(&[16, 3, 5, 5]).unwrap(), (75, 400));
        assert_eq!(fans(&[128, 8192]).unwrap(), (8192, 128));
        assert!(fans(&[16]).is_err());
        assert!(fans(&[0, 3]).is_err());
    }

    #[test]
    fn gains_follow_pytorch() {
        assert!((gain(Nonlinearity::Relu) - std::f32::consts::SQRT_2).abs() < 1e-6);
        assert!((gain(Nonlinearity::LeakyRelu(0.01)) - 1.414_142_4).abs() < 1e-6);
        assert!((gain(Nonlinearity::Tanh) - 5.0 / 3.0).abs() < 1e-7);
    }

    #[test]
    fn kaiming_statistics_match_the_formulas() {
        let mut r = rng(1);
        let relu = Nonlinearity::Relu;
        let want_in = (2.0f64 / 1024.0).sqrt();
        assert_stats(
            &kaiming_normal(&SHAPE, FanMode::FanIn, relu, &mut r).unwrap(),
            want_in,
        );
        assert_stats(
            &kaiming_uniform(&SHAPE, FanMode::FanIn, relu, &mut r).unwrap(),
            want_in,
        );
        let want_out = (2.0f64 / 4096.0).sqrt();
        assert_stats(
            &kaiming_normal(&SHAPE, FanMode::FanOut, relu, &mut r).unwrap(),
            want_out,
        );
        let leaky = Nonlinearity::LeakyRelu(0.2);
        let want = (2.0f64 / 1.04).sqrt() / 32.0;
        assert_stats(
            &kaiming_uniform(&SHAPE, FanMode::FanIn, leaky, &mut r).unwrap(),
            want,
        );
    }

    #[test]
    fn xavier_statistics_match_the_formulas() {
        let mut r = rng(2);
        let want = (2.0f64 / (1024.0 + 4096.0)).sqrt();
        assert_stats(&xavier_normal(&SHAPE, 1.0, &mut r).unwrap(), want);
        assert_stats(&xavier_uniform(&SHAPE, 1.0, &mut r).unwrap(), want);
        assert_stats(&xavier_uniform(&SHAPE, 2.0, &mut r).unwrap(), 2.0 * want);
    }

    #[test]
    fn torch_default_is_uniform_in_one_over_sqrt_fan_in() {
        let mut r = rng(3);
        let w = torch_default_weight(&SHAPE, &mut r).unwrap();
        let bound = 1.0 / 32.0f32;
        assert!(w.max_abs() <= bound);
        assert!(w.max_abs() > 0.99 * bound);
        assert_stats(&w, bound as f64 / 3f64.sqrt());
        let b = torch_default_bias(&[128, 8192], &mut r).unwrap();
        assert_eq!(b.shape(), &[128]);
        assert!(b.max_abs() <= 1.0 / 8192f32.sqrt());
    }

    #[test]
    fn normal_has_unit_variance_and_no_outliers_beyond_reason() {
        let t = normal(&[1 << 18], 0.0, 1.0, &mut rng(4)).unwrap();
        assert_stats(&t, 1.0);
        assert!(!t.has_non_finite() && t.max_abs() < 7.0);
        let odd = normal(&[3], 5.0, 0.0, &mut rng(4)).unwrap();
        assert_eq!(odd.data(), &[5.0, 5.0, 5.0]);
    }

    #[test]
    fn same_seed_same_values_other_seed_other_values() {
        let a = kaiming_normal(
            &[8, 4, 3, 3],
            FanMode::FanIn,
            Nonlinearity::Relu,
            &mut rng(9),
        )
        .unwrap();
        let b = kaiming_normal(
            &[8, 4, 3, 3],
            FanMode::FanIn,
            Nonlinearity::Relu,
            &mut rng(9),
        )
        .unwrap();
        let c = kaiming_normal(
            &[8, 4, 3, 3],
            FanMode::FanIn,
            Nonlinearity::Relu,
            &mut rng(10),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
