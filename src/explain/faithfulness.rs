//! Is a map faithful to the model?
//!
//! - Deletion and insertion curves (RISE, Petsiuk et al. 2018): pixels are taken in the map's
//!   order (largest first). Deletion replaces them, step by step, with a fill (zero or the
//!   image's per-channel mean) in the original; insertion copies them into a blurred version.
//!   The curve is the target class probability after each of `steps` equal steps (steps + 1
//!   points including the start); its area (trapezoid over [0, 1]) is small for a good
//!   deletion map and large for a good insertion map.
//! - The model-randomisation sanity check (Adebayo et al. 2018): re-initialise the top `k`
//!   parameterised layers (Conv2d / Gemm weights and biases, with the engine's PyTorch-default
//!   initialiser) and compare the method's maps before and after by Spearman rank correlation
//!   and SSIM. A method that explains the model changes (low similarity).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Map;
use super::target::{Explainer, ResolvedTarget, Target};
use super::util::{batch_of, gaussian_blur};
use super::{Control, ExplainError, ExplainResult, single_image_dims};
use crate::engine::graph::ValueKind;
use crate::engine::{Graph, Op, Tensor, init};

#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum DeletionFill {
    /// 0 in the model's input space (the mean colour for mean/std-normalised inputs).
    #[default]
    Zero,
    /// The image's own per-channel mean.
    Mean,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CurveOptions {
    pub steps: usize,
    /// Images per forward pass.
    pub batch: usize,
    pub deletion_fill: DeletionFill,
    /// Blur of the insertion start image, standard deviation in pixels.
    pub blur_sigma: f32,
}

impl Default for CurveOptions {
    fn default() -> Self {
        Self {
            steps: 16,
            batch: 8,
            deletion_fill: DeletionFill::Zero,
            blur_sigma: 5.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Fraction of pixels deleted or inserted at each point, 0..=1.
    pub fractions: Vec<f32>,
    /// Target class probability at each point.
    pub probabilities: Vec<f32>,
    /// Area under the curve (trapezoid over the fractions).
    pub auc: f32,
    pub target: ResolvedTarget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CurveKind {
    Deletion,
    Insertion,
}

impl Explainer<'_> {
    pub fn deletion_curve(
        &self,
        x: &Tensor,
        target: Target,
        map: &Map,
        opts: &CurveOptions,
        ctl: Control,
    ) -> ExplainResult<Curve> {
        self.curve(x, target, map, opts, CurveKind::Deletion, ctl)
    }

    pub fn insertion_curve(
        &self,
        x: &Tensor,
        target: Target,
        map: &Map,
        opts: &CurveOptions,
        ctl: Control,
    ) -> ExplainResult<Curve> {
        self.curve(x, target, map, opts, CurveKind::Insertion, ctl)
    }

    fn curve(
        &self,
        x: &Tensor,
        target: Target,
        map: &Map,
        opts: &CurveOptions,
        kind: CurveKind,
        ctl: Control,
    ) -> ExplainResult<Curve> {
        let chw = single_image_dims(x)?;
        let [c, h, w] = chw;
        let batch = self.batch_size(opts.batch)?;
        if (map.height(), map.width()) != (h, w) {
            return Err(ExplainError::invalid(format!(
                "the map is {}x{} but the input is {h}x{w}",
                map.height(),
                map.width()
            )));
        }
        if opts.steps == 0 {
            return Err(ExplainError::invalid("a curve needs at least one step"));
        }
        let t = self.resolve(x, target)?;
        let plane = h * w;
        // Where pixels come from (`source`) and what they are put into (`start`), (c, h, w).
        let (start, source): (Vec<f32>, Vec<f32>) = match kind {
            CurveKind::Deletion => {
                let fill: Vec<f32> = match opts.deletion_fill {
                    DeletionFill::Zero => vec![0.0; c * plane],
                    DeletionFill::Mean => x
                        .data()
                        .chunks_exact(plane)
                        .flat_map(|p| {
                            let m = p.iter().sum::<f32>() / plane as f32;
                            std::iter::repeat_n(m, plane)
                        })
                        .collect(),
                };
                (x.data().to_vec(), fill)
            }
            CurveKind::Insertion => (
                gaussian_blur(x.data(), h, w, opts.blur_sigma),
                x.data().to_vec(),
            ),
        };
        let order = descending_order(map.data());
        let counts: Vec<usize> = (0..=opts.steps)
            .map(|s| ((s as f64 * plane as f64 / opts.steps as f64).round() as usize).min(plane))
            .collect();
        let mut probabilities = Vec::with_capacity(counts.len());
        let total = counts.len().div_ceil(batch);
        for (b, group) in counts.chunks(batch).enumerate() {
            ctl.step(b, total)?;
            let images = batch_of(chw, group.len(), |i, out| {
                out.copy_from_slice(&start);
                for &p in &order[..group[i]] {
                    for ch in 0..c {
                        out[ch * plane + p] = source[ch * plane + p];
                    }
                }
            })?;
            probabilities.extend(self.probabilities(&images, &t)?);
        }
        ctl.step(total, total)?;
        let fractions: Vec<f32> = counts.iter().map(|&k| k as f32 / plane as f32).collect();
        Ok(Curve {
            auc: trapezoid(&fractions, &probabilities),
            fractions,
            probabilities,
            target: t,
        })
    }
}

/// Pixel indices by decreasing value (ties in index order; NaN last).
fn descending_order(v: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let key = |i: usize| {
        if v[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            v[i]
        }
    };
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    idx
}

/// Area under y(x) by the trapezoid rule.
pub fn trapezoid(x: &[f32], y: &[f32]) -> f32 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(xs, ys)| (xs[1] - xs[0]) * (ys[0] + ys[1]) * 0.5)
        .sum()
}

/// A copy of `graph` whose top `k` parameterised layers (Conv2d and Gemm nodes, counted from
/// the output) have freshly initialised weights and biases. Returns the graph and the names of
/// the re-initialised nodes, output side first.
pub fn randomise_top_layers(
    graph: &Graph,
    k: usize,
    seed: u64,
) -> ExplainResult<(Graph, Vec<String>)> {
    let mut out = graph.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut names = Vec::new();
    let layers: Vec<(String, Vec<usize>)> = graph
        .nodes()
        .iter()
        .rev()
        .filter(|n| matches!(n.op, Op::Conv2d(_) | Op::Gemm(_)))
        .filter_map(|n| {
            let params: Vec<usize> = n.inputs[1..]
                .iter()
                .filter_map(|&v| match graph.value(v).kind {
                    ValueKind::Param(p) => Some(p),
                    _ => None,
                })
                .collect();
            (!params.is_empty()).then(|| (n.name.clone(), params))
        })
        .take(k)
        .collect();
    for (name, params) in layers {
        let weight_shape = out.params()[params[0]].tensor.shape().to_vec();
        for (i, &p) in params.iter().enumerate() {
            let fresh = if i == 0 {
                init::torch_default_weight(&weight_shape, &mut rng)?
            } else {
                let shape = out.params()[p].tensor.shape().to_vec();
                init::torch_default_bias(&weight_shape, &mut rng)?.reshaped(shape)?
            };
            out.params_mut()[p].tensor = fresh;
        }
        names.push(name);
    }
    Ok((out, names))
}

/// Similarity of a method's maps before and after randomisation.
#[derive(Clone, Debug, PartialEq)]
pub struct SanityReport {
    pub randomised: Vec<String>,
    /// Spearman rank correlation of the two maps.
    pub spearman: f32,
    /// Mean SSIM of the two maps, each scaled to [0, 1].
    pub ssim: f32,
}

/// Runs `method` on the model and on a copy with its top `k` layers re-initialised, and
/// compares the maps (same resolution).
pub fn model_randomisation_check(
    graph: &Graph,
    k: usize,
    seed: u64,
    method: impl Fn(&Explainer) -> ExplainResult<Map>,
) -> ExplainResult<SanityReport> {
    let before = method(&Explainer::new(graph)?)?;
    let (random, randomised) = randomise_top_layers(graph, k, seed)?;
    let after = method(&Explainer::new(&random)?)?;
    Ok(SanityReport {
        randomised,
        spearman: spearman(&before, &after)?,
        ssim: ssim(&before.normalised(), &after.normalised())?,
    })
}

fn same_size(a: &Map, b: &Map) -> ExplainResult<()> {
    if (a.height(), a.width()) != (b.height(), b.width()) {
        return Err(ExplainError::invalid(format!(
            "maps of different sizes {}x{} and {}x{}",
            a.height(),
            a.width(),
            b.height(),
            b.width()
        )));
    }
    Ok(())
}

/// Ranks 1..=n with ties given their average rank.
fn ranks(v: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Spearman rank correlation of two maps of the same size (0 when one is constant).
pub fn spearman(a: &Map, b: &Map) -> ExplainResult<f32> {
    same_size(a, b)?;
    Ok(pearson(&ranks(a.data()), &ranks(b.data())) as f32)
}

/// Mean structural similarity of two maps in [0, 1] (data range 1): 7x7 uniform windows over
/// the valid region, sample covariances, C1 = 0.01², C2 = 0.03² (scikit-image's defaults).
pub fn ssim(a: &Map, b: &Map) -> ExplainResult<f32> {
    same_size(a, b)?;
    let (h, w) = (a.height(), a.width());
    let win = 7.min(h).min(w);
    if win < 2 {
        return Err(ExplainError::invalid("SSIM needs maps of at least 2x2"));
    }
    let (c1, c2) = (1e-4f64, 9e-4f64);
    let n = (win * win) as f64;
    let cov_norm = n / (n - 1.0);
    let mut total = 0.0;
    let mut windows = 0usize;
    for y0 in 0..=h - win {
        for x0 in 0..=w - win {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
            for y in y0..y0 + win {
                for x in x0..x0 + win {
                    let (p, q) = (a.get(y, x) as f64, b.get(y, x) as f64);
                    sa += p;
                    sb += q;
                    saa += p * p;
                    sbb += q * q;
                    sab += p * q;
                }
            }
            let (ma, mb) = (sa / n, sb / n);
            let va = cov_norm * (saa / n - ma * ma);
            let vb = cov_norm * (sbb / n - mb * mb);
            let vab = cov_norm * (sab / n - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * vab + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            windows += 1;
        }
    }
    Ok((total / windows as f64) as f32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spearman_and_ssim_extremes() {
        let a = Map::new(8, 8, (0..64).map(|i| (i * 7 % 13) as f32).collect()).unwrap();
        let rev = Map::new(8, 8, a.data().iter().map(|v| -v).collect()).unwrap();
        assert!((spearman(&a, &a).unwrap() - 1.0).abs() < 1e-6);
        assert!((spearman(&a, &rev).unwrap() + 1.0).abs() < 1e-6);
        let n = a.normalised();
        assert!((ssim(&n, &n).unwrap() - 1.0).abs() < 1e-6);
        assert!(ssim(&n, &rev.normalised()).unwrap() < 0.0);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn trapezoid_area() {
        assert!((trapezoid(&[0.0, 0.5, 1.0], &[1.0, 1.0, 0.0]) - 0.75).abs() < 1e-6);
        assert_eq!(descending_order(&[0.1, 0.9, 0.5, 0.9]), vec![1, 3, 2, 0]);
    }
}
