//! Finite-difference checks of op backward passes, shared by unit and integration tests.
//!
//! The scalar checked is `L = Σ y ⊙ r` with a fixed pseudo-random `r`, so every output element
//! contributes with its own weight. Numeric derivatives are central differences computed in
//! f64 from f32 forward passes.

use super::ops::{ForwardCtx, Mode, Op};
use super::tensor::Tensor;

/// Deterministic pseudo-random numbers in [-1, 1) (SplitMix64), for test data only.
pub fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = super::rng::SplitMix64::new(seed.wrapping_add(super::rng::GOLDEN));
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

/// A tensor of [`test_values`].
pub fn test_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), test_values(n, seed))
        .unwrap_or_else(|e| unreachable!("test_tensor: {e}"))
}

/// Outcome for one checked input.
#[derive(Debug, Clone)]
pub struct GradCheck {
    pub input: usize,
    /// max |analytic - numeric| / max(max |numeric|, 1e-3) over the sampled elements.
    pub rel_error: f64,
    pub checked: usize,
}

fn projected_loss(op: &Op, inputs: &[Tensor], r: &[f32], ctx: ForwardCtx) -> Result<f64, String> {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let out = op.forward(&refs, ctx).map_err(|e| e.to_string())?;
    Ok(out
        .y
        .data()
        .iter()
        .zip(r)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum())
}

/// Compares `op.backward` with central differences for each input `i` with `check[i]`.
/// At most `max_elems` elements per input are perturbed (spread evenly).
pub fn check_op(
    op: &Op,
    inputs: &[Tensor],
    check: &[bool],
    mode: Mode,
    eps: f32,
    max_elems: usize,
) -> Result<Vec<GradCheck>, String> {
    let ctx = ForwardCtx { mode, seed: 7 };
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let out = op.forward(&refs, ctx).map_err(|e| e.to_string())?;
    let r = test_tensor(out.y.shape(), 12345);
    let needs: Vec<bool> = (0..inputs.len())
        .map(|i| check.get(i).copied().unwrap_or(false))
        .collect();
    let analytic = op
        .backward(&refs, &out.y, &out.saved, &r, &needs, mode)
        .map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for (i, &want) in needs.iter().enumerate() {
        if !want {
            continue;
        }
        let a = analytic
            .get(i)
            .and_then(|g| g.as_ref())
            .ok_or_else(|| format!("backward returned no gradient for input {i}"))?;
        if a.shape() != inputs[i].shape() {
            return Err(format!(
                "gradient of input {i} has shape {:?}, input has {:?}",
                a.shape(),
                inputs[i].shape()
            ));
        }
        let n = inputs[i].numel();
        let step = (n / max_elems.max(1)).max(1);
        let mut max_diff = 0.0f64;
        let mut max_num = 0.0f64;
        let mut checked = 0;
        let mut work: Vec<Tensor> = inputs.to_vec();
        for e in (0..n).step_by(step) {
            let orig = work[i].data()[e];
            work[i].data_mut()[e] = orig + eps;
            let lp = projected_loss(op, &work, r.data(), ctx)?;
            work[i].data_mut()[e] = orig - eps;
            let lm = projected_loss(op, &work, r.data(), ctx)?;
            work[i].data_mut()[e] = orig;
            let numeric = (lp - lm) / (2.0 * eps as f64);
            max_diff = max_diff.max((numeric - a.data()[e] as f64).abs());
            max_num = max_num.max(numeric.abs());
            checked += 1;
        }
        results.push(GradCheck {
            input: i,
            rel_error: max_diff / max_num.max(1e-3),
            checked,
        });
    }
    Ok(results)
}

/// Panics with a readable report when any checked input's error exceeds `tol` (tests only).
pub fn assert_op_gradients(op: &Op, inputs: &[Tensor], check: &[bool], mode: Mode, tol: f64) {
    match check_op(op, inputs, check, mode, 1e-2, 200) {
        Ok(results) => {
            for r in results {
                assert!(
                    r.rel_error <= tol,
                    "{op:?}: gradient of input {} off by {:.3e} (relative, {} elements checked, tolerance {tol:.0e})",
                    r.input,
                    r.rel_error,
                    r.checked
                );
            }
        }
        Err(e) => panic!("{op:?}: {e}"),
    }
}
