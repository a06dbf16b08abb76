//! Batch normalisation over the channels of NCHW tensors.
//!
//! Any x of rank >= 2 is seen as `(n, c, s)` with `s` the product of the trailing dims, so
//! `[n, c, h, w]` (BatchNorm2d) and `[n, c]` (BatchNorm1d after Flatten) share one kernel.
//! Statistics: f32 lane sums per plane, merged across planes in f64 (see [`batch_stats`]).

use crate::engine::simd;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::lanes;
use super::shape::rows_per_task;

use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNormSpec {
    pub eps: f32,
    /// PyTorch convention: running = (1 - momentum) * running + momentum * batch.
    pub momentum: f32,
}

/// `(n, c, s)` of x, or an error naming its shape.
fn dims_ncs(x: &[usize]) -> Result<(usize, usize, usize), OpError> {
    match x {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => Err(OpError(format!(
            "batch norm expects x [n, c, h, w] or [n, c], got shape {x:?}"
        ))),
    }
}

/// x `[n, c, h, w]` (or `[n, c]`), params each `[c]` → same shape as x.
pub fn output_shape(x: &[usize], params: &[&[usize]]) -> Result<Vec<usize>, OpError> {
    let (_, c, _) = dims_ncs(x)?;
    const NAMES: [&str; 4] = ["gamma", "beta", "running_mean", "running_var"];
    if params.len() != NAMES.len() {
        crate::op_bail!("batch norm takes 4 parameters, got {}", params.len());
    }
    for (name, p) in NAMES.iter().zip(params) {
        if *p != [c] {
            crate::op_bail!("batch norm {name} has shape {p:?}, expected [{c}] for x {x:?}");
        }
    }
    Ok(x.to_vec())
}

/// Per-channel (mean, biased variance) of x `(n, c, s)`, in parallel over channels.
///
/// One read of x: each plane `(s)` is summed, then its squared deviations from its own (f32)
/// mean are summed while it is still in cache (vectorised lane sums, [`lanes`]); the planes
/// are merged in f64 in batch order, exactly: Σ (v − μ)² = Σ (v − a)² + 2d·Σ (v − a) + s·d² with
/// a the plane's shift and d = a − μ. No catastrophic cancellation, deterministic.
fn batch_stats(x: &[f32], n: usize, c: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
    let count = (n * s) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            // per plane: (Σ v, shift a, Σ (v − a)²)
            let planes: Vec<(f64, f64, f64)> = (0..n)
                .map(|i| {
                    let p = &x[(i * c + ch) * s..][..s];
                    let sum = lanes::sum(p) as f64;
                    let a = (sum / s as f64) as f32;
                    (sum, a as f64, lanes::sum_sq_dev(p, a) as f64)
                })
                .collect();
            let mean = planes.iter().map(|p| p.0).sum::<f64>() / count;
            let sq: f64 = planes
                .iter()
                .map(|&(sum, a, sq)| {
                    let d = a - mean;
                    sq + 2.0 * d * (sum - s as f64 * a) + s as f64 * d * d
                })
                .sum();
            (mean, (sq / count).max(0.0))
        })
        .unzip()
}

simd::kernel! {
    /// `dst = src * k + b`, compiled per instruction-set level.
    fn affine_plane(src: &[f32], dst: &mut [f32], k: f32, b: f32) {
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = v * k + b;
        }
    }
}

/// `y = x * scale[ch] + shift[ch]` over x `(n, c, s)`, in parallel over planes.
fn affine_per_channel(x: &[f32], c: usize, s: usize, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    if y.is_empty() {
        return y;
    }
    // (n * c, s)
    y.par_chunks_mut(s)
        .zip(x.par_chunks(s))
        .with_min_len(rows_per_task(s))
        .enumerate()
        .for_each(|(plane, (yp, xp))| {
            affine_plane(xp, yp, scale[plane % c], shift[plane % c]);
        });
    y
}

/// (y, mean used, inv_std used, new running (mean, var) when training).
pub type BatchNormOutput = (Tensor, Vec<f32>, Vec<f32>, Option<(Tensor, Tensor)>);

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
) -> Result<BatchNormOutput, OpError> {
    output_shape(
        x.shape(),
        &[
            gamma.shape(),
            beta.shape(),
            running_mean.shape(),
            running_var.shape(),
        ],
    )?;
    let (n, c, s) = dims_ncs(x.shape())?;
    let eps = spec.eps as f64;
    let (mean, inv_std, running) = if training {
        let count = n * s;
        if count < 2 {
            crate::op_bail!(
                "batch norm in training needs more than one value per channel, x has shape {:?}",
                x.shape()
            );
        }
        let (mean, var) = batch_stats(x.data(), n, c, s);
        let m = spec.momentum as f64;
        let unbias = count as f64 / (count - 1) as f64;
        let rm: Vec<f32> = (0..c)
            .map(|ch| ((1.0 - m) * running_mean.data()[ch] as f64 + m * mean[ch]) as f32)
            .collect();
        let rv: Vec<f32> = (0..c)
            .map(|ch| ((1.0 - m) * running_var.data()[ch] as f64 + m * var[ch] * unbias) as f32)
            .collect();
        let inv_std: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v + eps).sqrt()) as f32)
            .collect();
        let mean: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
        (
            mean,
            inv_std,
            Some((Tensor::new(vec![c], rm)?, Tensor::new(vec![c], rv)?)),
        )
    } else {
        let inv_std: Vec<f32> = running_var
            .data()
            .iter()
            .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
            .collect();
        (running_mean.data().to_vec(), inv_std, None)
    };
    // y = (x - mean) * inv_std * gamma + beta = x * scale + shift
    let scale: Vec<f32> = (0..c).map(|ch| inv_std[ch] * gamma.data()[ch]).collect();
    let shift: Vec<f32> = (0..c)
        .map(|ch| beta.data()[ch] - mean[ch] * scale[ch])
        .collect();
    let y = Tensor::new(
        x.shape().to_vec(),
        affine_per_channel(x.data(), c, s, &scale, &shift),
    )?;
    Ok((y, mean, inv_std, running))
}

/// Per-channel (Σ d_y, Σ d_y * x̂) with x̂ = (x - mean) * inv_std: vectorised lane sums per
/// plane, planes added in f64 in batch order (deterministic), parallel over channels.
fn grad_sums(
    x: &[f32],
    d_y: &[f32],
    n: usize,
    c: usize,
    s: usize,
    mean: &[f32],
    inv_std: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sg, mut sgx) = (0.0f64, 0.0f64);
            for i in 0..n {
                let r = (i * c + ch) * s..(i * c + ch + 1) * s;
                let (g, gx) = lanes::sum_and_dot_dev(&d_y[r.clone()], &x[r], mean[ch]);
                sg += g as f64;
                sgx += gx as f64;
            }
            (sg, sgx * inv_std[ch] as f64)
        })
        .unzip()
}

simd::kernel! {
    /// Training d_x of one plane, in d_y's place: `g = a·g + b·(x − mu) + c0` (the batch-statistics gradient
    /// with its per-channel coefficients folded), compiled per instruction-set level.
    fn train_dx_plane(x: &[f32], g: &mut [f32], a: f32, b: f32, mu: f32, c0: f32) {
        // in place: each element of d_y becomes the same element of d_x
        for (o, &xv) in g.iter_mut().zip(x) {
            *o = a * *o + b * (xv - mu) + c0;
        }
    }
}

simd::kernel! {
    /// `v = v * k + b` in place (the expression of [`affine_plane`]), per instruction-set level.
    fn affine_plane_in_place(v: &mut [f32], k: f32, b: f32) {
        for o in v.iter_mut() {
            *o = *o * k + b;
        }
    }
}

/// Returns gradients for the five inputs `[d_x, grad_gamma, grad_beta, None, None]`; d_x is
/// computed in `d_y`'s buffer (it is read element by element just before it is overwritten).
/// Training differentiates through the batch statistics:
/// `d_x = gamma * inv_std / m * (m * d_y - Σ d_y - x̂ * Σ d_y x̂)` with m = n * s;
/// evaluation treats the op as the affine map `d_x = d_y * gamma * inv_std`. The spec is not
/// read: eps is already inside the saved `inv_std`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    _spec: &BatchNormSpec,
    x: &Tensor,
    gamma: &Tensor,
    mean: &[f32],
    inv_std: &[f32],
    mut d_y: Tensor,
    needs: &[bool],
    training: bool,
) -> Result<Vec<Option<Tensor>>, OpError> {
    let (n, c, s) = dims_ncs(x.shape())?;
    if gamma.shape() != [c] || mean.len() != c || inv_std.len() != c {
        crate::op_bail!(
            "batch norm backward: gamma {:?}, {} means and {} inv_stds for x {:?}",
            gamma.shape(),
            mean.len(),
            inv_std.len(),
            x.shape()
        );
    }
    if d_y.shape() != x.shape() {
        crate::op_bail!(
            "batch norm gradient has shape {:?}, x has {:?}",
            d_y.shape(),
            x.shape()
        );
    }
    let need = |i: usize| needs.get(i).copied().unwrap_or(false);
    let need_sums = need(1) || need(2) || (need(0) && training);
    let (sum_g, sum_gx) = if need_sums {
        grad_sums(x.data(), d_y.data(), n, c, s, mean, inv_std)
    } else {
        (Vec::new(), Vec::new())
    };
    let d_x = if need(0) {
        let g = gamma.data();
        // (n, c, s)
        let data = d_y.data_mut();
        if data.is_empty() || s == 0 {
            // nothing to transform
        } else if training {
            let m = (n * s) as f64;
            data.par_chunks_mut(s)
                .with_min_len(rows_per_task(s))
                .enumerate()
                .for_each(|(plane, dst)| {
                    let ch = plane % c;
                    // k·(m·gy − Σg − x̂·Σgx̂) with k = γ·is/m and x̂ = (x − μ)·is
                    let is = inv_std[ch] as f64;
                    let k = g[ch] as f64 * is / m;
                    let a = (k * m) as f32;
                    let b = (-k * is * sum_gx[ch]) as f32;
                    let c0 = (-k * sum_g[ch]) as f32;
                    let xs = &x.data()[plane * s..(plane + 1) * s];
                    train_dx_plane(xs, dst, a, b, mean[ch], c0);
                });
        } else {
            // d_y · γ · inv_std per channel (+ 0.0, the shift of the affine map it was)
            data.par_chunks_mut(s)
                .with_min_len(rows_per_task(s))
                .enumerate()
                .for_each(|(plane, dst)| {
                    let ch = plane % c;
                    affine_plane_in_place(dst, g[ch] * inv_std[ch], 0.0);
                });
        }
        Some(d_y)
    } else {
        None
    };
    let to_param = |v: &[f64]| Tensor::new(vec![c], v.iter().map(|&a| a as f32).collect());
    let grad_gamma = if need(1) {
        Some(to_param(&sum_gx)?)
    } else {
        None
    };
    let grad_beta = if need(2) {
        Some(to_param(&sum_g)?)
    } else {
        None
    };
    Ok(vec![d_x, grad_gamma, grad_beta, None, None])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{ForwardCtx, Mode, Op};

    fn spec() -> BatchNormSpec {
        BatchNormSpec {
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn inputs(x_shape: &[usize]) -> Vec<Tensor> {
        let c = x_shape[1];
        vec![
            test_tensor(x_shape, 1).map(|v| 2.0 * v + 0.3),
            test_tensor(&[c], 2).map(|v| v + 1.5),
            test_tensor(&[c], 3),
            test_tensor(&[c], 4).map(|v| 0.2 * v),
            test_tensor(&[c], 5).map(|v| 0.5 * v + 1.0),
        ]
    }

    #[test]
    fn gradients_train_and_eval_4d_and_2d() {
        let op = Op::BatchNorm2d(spec());
        for shape in [&[3usize, 2, 3, 4][..], &[6, 5][..]] {
            for mode in [Mode::Train, Mode::Eval] {
                assert_op_gradients(&op, &inputs(shape), &[true, true, true], mode, 1e-2);
            }
        }
    }

    /// Per-channel mean and biased variance by the textbook f64 two-pass definition.
    fn stats_f64(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
        let (n, c, s) = dims_ncs(x.shape()).unwrap();
        let vals = |ch: usize| {
            (0..n).flat_map(move |i| (0..s).map(move |j| x.data()[(i * c + ch) * s + j] as f64))
        };
        (0..c)
            .map(|ch| {
                let mean = vals(ch).sum::<f64>() / (n * s) as f64;
                let var = vals(ch).map(|v| (v - mean).powi(2)).sum::<f64>() / (n * s) as f64;
                (mean, var)
            })
            .unzip()
    }

    /// The lane-sum statistics against f64 two-pass sums, including a large offset (where a
    /// one-pass Σx² − (Σx)²/m formula would cancel catastrophically) and odd plane sizes.
    /// At every instruction-set level of this CPU.
    #[test]
    fn batch_stats_match_f64_two_pass() {
        simd::for_each_level(2, |_| batch_stats_match_f64_two_pass_here());
    }

    fn batch_stats_match_f64_two_pass_here() {
        for (shape, offset) in [
            (&[4usize, 3, 17, 13][..], 0.0f32),
            (&[3, 2, 64, 64][..], 1000.0),
            (&[7, 5][..], -3.0),
        ] {
            let x = test_tensor(shape, 9).map(|v| v + offset);
            let (n, c, s) = dims_ncs(x.shape()).unwrap();
            let (mean, var) = batch_stats(x.data(), n, c, s);
            let (want_mean, want_var) = stats_f64(&x);
            for ch in 0..c {
                let tol_m = 1e-6 * (1.0 + offset.abs() as f64);
                assert!(
                    (mean[ch] - want_mean[ch]).abs() <= tol_m,
                    "{shape:?} mean {ch}"
                );
                assert!(
                    (var[ch] - want_var[ch]).abs() <= 1e-4 * want_var[ch] + 1e-7,
                    "{shape:?} var {ch}: {} vs {}",
                    var[ch],
                    want_var[ch]
                );
            }
        }
    }

    /// The folded f32 training d_x against the textbook formula evaluated in f64.
    /// At every instruction-set level of this CPU.
    #[test]
    fn training_d_x_matches_f64_formula() {
        simd::for_each_level(2, |_| training_d_x_matches_f64_formula_here());
    }

    fn training_d_x_matches_f64_formula_here() {
        let ins = inputs(&[3, 4, 9, 7]);
        let (x, gamma) = (&ins[0], &ins[1]);
        let (_, mean, inv_std, _) =
            forward(&spec(), x, gamma, &ins[2], &ins[3], &ins[4], true).unwrap();
        let dy = test_tensor(x.shape(), 21);
        let got = backward(
            &spec(),
            x,
            gamma,
            &mean,
            &inv_std,
            dy.clone(),
            &[true; 5],
            true,
        )
        .unwrap();
        let d_x = got[0].as_ref().unwrap();
        let (n, c, s) = dims_ncs(x.shape()).unwrap();
        let m = (n * s) as f64;
        for ch in 0..c {
            let idx: Vec<usize> = (0..n)
                .flat_map(|i| (0..s).map(move |j| (i * c + ch) * s + j))
                .collect();
            let (mu, is) = (mean[ch] as f64, inv_std[ch] as f64);
            let xhat = |i: usize| (x.data()[i] as f64 - mu) * is;
            let sg: f64 = idx.iter().map(|&i| dy.data()[i] as f64).sum();
            let sgx: f64 = idx.iter().map(|&i| dy.data()[i] as f64 * xhat(i)).sum();
            let k = gamma.data()[ch] as f64 * is / m;
            for &i in &idx {
                let want = k * (m * dy.data()[i] as f64 - sg - xhat(i) * sgx);
                let diff = (d_x.data()[i] as f64 - want).abs();
                assert!(
                    diff <= 1e-5 * (1.0 + want.abs()),
                    "ch {ch} elem {i}: {diff}"
                );
            }
        }
    }

    #[test]
    fn running_update_matches_pytorch() {
        // torch: bn = BatchNorm2d(1, momentum=0.1); x = [[1, 2], [3, 6]] as [2, 1, 2, 1]
        // batch mean 3, biased var 3.5, unbiased var 14/3
        // running_mean = 0.9 * 0.5 + 0.1 * 3 = 0.75; running_var = 0.9 * 2 + 0.1 * 14/3
        let x = t(&[2, 1, 2, 1], &[1.0, 2.0, 3.0, 6.0]);
        let (y, mean, inv_std, running) = forward(
            &spec(),
            &x,
            &t(&[1], &[2.0]),
            &t(&[1], &[1.0]),
            &t(&[1], &[0.5]),
            &t(&[1], &[2.0]),
            true,
        )
        .unwrap();
        let (rm, rv) = running.unwrap();
        assert!((rm.data()[0] - 0.75).abs() < 1e-6);
        assert!((rv.data()[0] - (1.8 + 0.1 * 14.0 / 3.0)).abs() < 1e-6);
        assert_eq!(mean, vec![3.0]);
        assert!((inv_std[0] - 1.0 / (3.5f32 + 1e-5).sqrt()).abs() < 1e-6);
        let want: Vec<f32> = [1.0f32, 2.0, 3.0, 6.0]
            .iter()
            .map(|v| (v - 3.0) / (3.5f32 + 1e-5).sqrt() * 2.0 + 1.0)
            .collect();
        for (a, b) in y.data().iter().zip(&want) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    /// At every instruction-set level of this CPU.
    #[test]
    fn eval_uses_running_stats() {
        simd::for_each_level(2, |_| eval_uses_running_stats_here());
    }

    fn eval_uses_running_stats_here() {
        let x = t(&[1, 2], &[1.0, 4.0]);
        let (y, _, _, running) = forward(
            &BatchNormSpec {
                eps: 0.0,
                momentum: 0.1,
            },
            &x,
            &t(&[2], &[1.0, 3.0]),
            &t(&[2], &[0.0, 1.0]),
            &t(&[2], &[1.0, 2.0]),
            &t(&[2], &[4.0, 1.0]),
            false,
        )
        .unwrap();
        assert!(running.is_none());
        assert_eq!(y.data(), &[0.0, 7.0]);
    }

    #[test]
    fn shape_errors() {
        let op = Op::BatchNorm2d(spec());
        let mut bad = inputs(&[2, 3, 2, 2]);
        bad[1] = test_tensor(&[4], 1);
        let refs: Vec<&Tensor> = bad.iter().collect();
        assert!(
            op.forward(
                &refs,
                ForwardCtx {
                    mode: Mode::Eval,
                    seed: 0
                }
            )
            .is_err()
        );
        assert!(output_shape(&[3], &[&[3], &[3], &[3], &[3]]).is_err());
        assert!(output_shape(&[2, 3], &[&[3], &[3], &[3]]).is_err());
        // one value per channel cannot train
        let one = inputs(&[1, 3]);
        assert!(forward(&spec(), &one[0], &one[1], &one[2], &one[3], &one[4], true).is_err());
        let x = test_tensor(&[2, 3], 1);
        let g = test_tensor(&[3], 1);
        assert!(
            backward(
                &spec(),
                &x,
                &g,
                &[0.0; 2],
                &[1.0; 3],
                x.clone(),
                &[true; 5],
                true
            )
            .is_err()
        );
        assert!(
            backward(
                &spec(),
                &x,
                &g,
                &[0.0; 3],
                &[1.0; 3],
                g.clone(),
                &[true; 5],
                true
            )
            .is_err()
        );
    }
}
