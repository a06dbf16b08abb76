//! Losses with fused, numerically stable gradients.
//!
//! Each loss returns `(loss, d_logits)`: the mean loss over the batch and its gradient with
//! respect to the logits, ready to seed `Graph::backward`. Fusing the final sigmoid/softmax
//! into the loss avoids `log(0)` and the cancellation of `sigmoid(x) - t` computed the long
//! way; both forms below stay finite for logits of any size.
//!
//! Reductions match PyTorch's default `reduction="mean"` (`BCEWithLogitsLoss`,
//! `CrossEntropyLoss` without class weights). Sums are accumulated in f64.

use super::error::OpError;
use super::tensor::Tensor;

/// `log(1 + exp(z))` for any z without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// `1 / (1 + exp(-z))` without overflow for large |z|.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Binary cross-entropy on logits, mean over all elements (one logit per example).
///
/// logits `[n]` or `[n, 1]` (any shape, in fact: every element is one example), `targets`
/// one value in [0, 1] per element. Per element:
/// `ℓ = max(x, 0) − x·t + log(1 + exp(−|x|))`, and `∂ℓ/∂x = sigmoid(x) − t`.
/// Returns (mean ℓ, d_logits shaped like `logits`).
pub fn bce_with_logits(logits: &Tensor, targets: &[f32]) -> Result<(f32, Tensor), OpError> {
    let n = logits.numel();
    if n == 0 {
        crate::op_bail!(
            "binary cross-entropy needs at least one logit, got shape {:?}",
            logits.shape()
        );
    }
    if targets.len() != n {
        crate::op_bail!(
            "binary cross-entropy: {} targets for logits of shape {:?} ({n} elements)",
            targets.len(),
            logits.shape()
        );
    }
    if let Some(t) = targets.iter().find(|t| !(0.0..=1.0).contains(*t)) {
        crate::op_bail!("binary cross-entropy targets must lie in [0, 1], got {t}");
    }
    let inv_n = 1.0 / n as f64;
    let mut total = 0.0f64;
    // (same shape as logits)
    let mut d_logits = Vec::with_capacity(n);
    for (&x, &t) in logits.data().iter().zip(targets) {
        let (x, t) = (x as f64, t as f64);
        // max(x,0) - x t + log(1 + exp(-|x|)) == softplus(x) - x t
        total += softplus(x) - x * t;
        d_logits.push(((sigmoid(x) - t) * inv_n) as f32);
    }
    let d = Tensor::new(logits.shape().to_vec(), d_logits)?;
    Ok(((total * inv_n) as f32, d))
}

/// Softmax cross-entropy with class indices, mean over the batch.
///
/// logits `[n, k]`, `targets` one class index in `0..k` per row. Per row:
/// `ℓ = logsumexp(x) − x[target]`, `∂ℓ/∂x = softmax(x) − onehot(target)`.
/// Returns (mean ℓ, d_logits `[n, k]`).
pub fn softmax_cross_entropy(logits: &Tensor, targets: &[usize]) -> Result<(f32, Tensor), OpError> {
    let [n, k] = match logits.shape() {
        &[n, k] if n > 0 && k > 0 => [n, k],
        s => crate::op_bail!(
            "softmax cross-entropy needs logits [n, classes] with n, classes > 0, got shape {s:?}"
        ),
    };
    if targets.len() != n {
        crate::op_bail!(
            "softmax cross-entropy: {} targets for a batch of {n} (logits shape {:?})",
            targets.len(),
            logits.shape()
        );
    }
    if let Some(&t) = targets.iter().find(|&&t| t >= k) {
        crate::op_bail!("softmax cross-entropy: class index {t} is out of range for {k} classes");
    }
    let inv_n = 1.0 / n as f64;
    let mut total = 0.0f64;
    // (n, k)
    let mut d_logits = vec![0.0f32; n * k];
    for ((row, d_row), &t) in logits
        .data()
        .chunks_exact(k)
        .zip(d_logits.chunks_exact_mut(k))
        .zip(targets)
    {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum_exp: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let log_sum_exp = max + sum_exp.ln();
        total += log_sum_exp - row[t] as f64;
        for (d, &v) in d_row.iter_mut().zip(row) {
            *d = (((v as f64 - log_sum_exp).exp()) * inv_n) as f32;
        }
        d_row[t] -= inv_n as f32;
    }
    let d = Tensor::new(vec![n, k], d_logits)?;
    Ok(((total * inv_n) as f32, d))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::test_tensor;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
    }

    /// Central differences of `f` at every element of `x`, in f64 around f32 inputs.
    fn numeric_grad(x: &Tensor, f: impl Fn(&Tensor) -> f32) -> Vec<f64> {
        let eps = 1e-2f32;
        (0..x.numel())
            .map(|i| {
                let mut plus = x.clone();
                plus.data_mut()[i] += eps;
                let mut minus = x.clone();
                minus.data_mut()[i] -= eps;
                (f(&plus) as f64 - f(&minus) as f64) / (2.0 * eps as f64)
            })
            .collect()
    }

    #[test]
    fn bce_matches_the_textbook_formula() {
        let x = t(&[3, 1], &[0.5, -1.0, 2.0]);
        let targets = [1.0, 0.0, 0.25];
        let (loss, d) = bce_with_logits(&x, &targets).unwrap();
        let mut want = 0.0f64;
        for (&x, &t) in x.data().iter().zip(&targets) {
            let p = 1.0 / (1.0 + (-(x as f64)).exp());
            want += -(t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln());
        }
        assert!(
            (loss as f64 - want / 3.0).abs() < 1e-6,
            "{loss} vs {}",
            want / 3.0
        );
        assert_eq!(d.shape(), &[3, 1]);
        let p0 = 1.0 / (1.0 + (-0.5f64).exp());
        assert!((d.data()[0] as f64 - (p0 - 1.0) / 3.0).abs() < 1e-7);
    }

    #[test]
    fn bce_gradient_matches_finite_differences() {
        let x = test_tensor(&[8, 1], 3).map(|v| v * 4.0);
        let targets: Vec<f32> = (0..8).map(|i| (i % 2) as f32).collect();
        let (_, d) = bce_with_logits(&x, &targets).unwrap();
        let num = numeric_grad(&x, |x| bce_with_logits(x, &targets).unwrap().0);
        for (a, n) in d.data().iter().zip(&num) {
            assert!((*a as f64 - n).abs() < 1e-4, "analytic {a} numeric {n}");
        }
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        let x = test_tensor(&[4, 5], 7).map(|v| v * 3.0);
        let targets = [0, 4, 2, 2];
        let (_, d) = softmax_cross_entropy(&x, &targets).unwrap();
        let num = numeric_grad(&x, |x| softmax_cross_entropy(x, &targets).unwrap().0);
        for (a, n) in d.data().iter().zip(&num) {
            assert!((*a as f64 - n).abs() < 1e-4, "analytic {a} numeric {n}");
        }
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_k() {
        let x = Tensor::zeros(&[2, 10]);
        let (loss, d) = softmax_cross_entropy(&x, &[3, 9]).unwrap();
        assert!((loss - 10f32.ln()).abs() < 1e-6);
        // each row of the gradient sums to zero
        for row in d.data().chunks(10) {
            assert!(row.iter().sum::<f32>().abs() < 1e-7);
        }
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let x = t(&[4], &[1e4, -1e4, 1e4, -1e4]);
        let (loss, d) = bce_with_logits(&x, &[1.0, 0.0, 0.0, 1.0]).unwrap();
        assert!(loss.is_finite() && !d.has_non_finite());
        // two confident-correct (loss 0) and two confident-wrong (loss 1e4 each)
        assert!((loss - 5e3).abs() < 1e-2, "{loss}");
        assert_eq!(d.data(), &[0.0, 0.0, 0.25, -0.25]);

        let x = t(&[2, 3], &[1e4, -1e4, 0.0, -1e4, 1e4, 1e4]);
        let (loss, d) = softmax_cross_entropy(&x, &[0, 0]).unwrap();
        assert!(loss.is_finite() && !d.has_non_finite());
        // row 0: loss 0; row 1: logsumexp = 1e4 + ln 2, minus -1e4
        assert!((loss - (2e4 + 2f32.ln()) / 2.0).abs() < 1e-2, "{loss}");
    }

    #[test]
    fn bad_shapes_and_targets_are_errors() {
        let x = Tensor::zeros(&[3, 1]);
        assert!(bce_with_logits(&x, &[1.0, 0.0]).is_err());
        assert!(bce_with_logits(&x, &[1.0, 0.0, 2.0]).is_err());
        assert!(bce_with_logits(&Tensor::zeros(&[0]), &[]).is_err());
        let x = Tensor::zeros(&[2, 3]);
        assert!(softmax_cross_entropy(&x, &[0]).is_err());
        assert!(softmax_cross_entropy(&x, &[0, 3]).is_err());
        assert!(softmax_cross_entropy(&Tensor::zeros(&[6]), &[0]).is_err());
    }
}
