//! Lucid's diversity objective (`objectives.diversity`): for a group of images of one unit,
//! the mean over images of the summed cosine similarity of their layer's Gram matrices with the
//! other images' ones. Subtracted from the objective (times a weight), it pushes a unit's images
//! apart in style, so that a unit with several faces shows more than one.
//!
//! With `A_i` the layer activations of image i as `(c, hw)`, `G_i = A_i A_iᵀ`,
//! `N_i = G_i / ‖G_i‖` and `S = Σ_i N_i`:
//! `D = (1/n) Σ_i Σ_{j≠i} ⟨N_i, N_j⟩ = (‖S‖² − n) / n`,
//! `∂D/∂N_i = 2 (S − N_i) / n`, `∂D/∂G_i = (g − ⟨g, N_i⟩ N_i) / ‖G_i‖` for that `g`, and
//! `∂D/∂A_i = 2 (∂D/∂G_i) A_i` (the Gram gradient is symmetric).

/// `‖G‖` below this counts as zero (an image whose activations vanish has no style to compare).
const EPS: f64 = 1e-10;

/// `D` and `∂D/∂A_i` for the images of one group; `acts[i]` is image i's activations `(c, hw)`.
pub fn diversity(acts: &[&[f32]], c: usize, hw: usize) -> (f32, Vec<Vec<f32>>) {
    let n = acts.len();
    if n < 2 {
        return (0.0, acts.iter().map(|a| vec![0.0; a.len()]).collect());
    }
    let grams: Vec<Vec<f64>> = acts.iter().map(|a| gram(a, c, hw)).collect();
    let norms: Vec<f64> = grams
        .iter()
        .map(|g| g.iter().map(|v| v * v).sum::<f64>().sqrt().max(EPS))
        .collect();
    let normed: Vec<Vec<f64>> = grams
        .iter()
        .zip(&norms)
        .map(|(g, &z)| g.iter().map(|v| v / z).collect())
        .collect();
    let mut sum = vec![0.0f64; c * c];
    for m in &normed {
        for (s, v) in sum.iter_mut().zip(m) {
            *s += v;
        }
    }
    let self_dots: f64 = normed
        .iter()
        .map(|m| m.iter().map(|v| v * v).sum::<f64>())
        .sum();
    let value = (sum.iter().map(|v| v * v).sum::<f64>() - self_dots) / n as f64;
    let grads = acts
        .iter()
        .zip(normed.iter().zip(&norms))
        .map(|(a, (m, &z))| {
            // g = ∂D/∂N_i, then ∂D/∂G_i through the normalisation
            let g: Vec<f64> = sum
                .iter()
                .zip(m)
                .map(|(s, v)| 2.0 * (s - v) / n as f64)
                .collect();
            let along: f64 = g.iter().zip(m).map(|(a, b)| a * b).sum();
            let d_gram: Vec<f64> = g
                .iter()
                .zip(m)
                .map(|(gv, mv)| (gv - along * mv) / z)
                .collect();
            // ∂D/∂A = 2 · d_gram · A  (c × c times c × hw)
            let mut d_a = vec![0.0f32; c * hw];
            for r in 0..c {
                let row = &mut d_a[r * hw..(r + 1) * hw];
                for k in 0..c {
                    let w = 2.0 * d_gram[r * c + k];
                    if w == 0.0 {
                        continue;
                    }
                    let w = w as f32;
                    for (d, &x) in row.iter_mut().zip(&a[k * hw..(k + 1) * hw]) {
                        *d += w * x;
                    }
                }
            }
            d_a
        })
        .collect();
    (value as f32, grads)
}

/// `A Aᵀ` of activations `(c, hw)`, in f64: `(c, c)`.
fn gram(a: &[f32], c: usize, hw: usize) -> Vec<f64> {
    let mut g = vec![0.0f64; c * c];
    for i in 0..c {
        let ai = &a[i * hw..(i + 1) * hw];
        for j in i..c {
            let aj = &a[j * hw..(j + 1) * hw];
            let dot: f64 = ai
                .iter()
                .zip(aj)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            g[i * c + j] = dot;
            g[j * c + i] = dot;
        }
    }
    g
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::rng::SplitMix64;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..n).map(|_| r.next_f32() * 2.0 - 0.5).collect()
    }

    /// Central differences in f64 through the f32 inputs: the analytic gradient agrees within
    /// 2e-3 relative to the largest component (f32 activations, step 1e-3).
    #[test]
    fn gradient_matches_finite_differences() {
        let (c, hw, n) = (3, 5, 3);
        let data: Vec<Vec<f32>> = (0..n).map(|i| random(c * hw, 7 + i as u64)).collect();
        let refs: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let (value, grads) = diversity(&refs, c, hw);
        assert!(value.is_finite());
        let h = 1e-3f32;
        let mut worst = 0.0f64;
        let mut largest = 0.0f64;
        for i in 0..n {
            for k in 0..c * hw {
                let mut plus = data.clone();
                plus[i][k] += h;
                let mut minus = data.clone();
                minus[i][k] -= h;
                let f = |d: &Vec<Vec<f32>>| {
                    let r: Vec<&[f32]> = d.iter().map(Vec::as_slice).collect();
                    f64::from(diversity(&r, c, hw).0)
                };
                let numeric = (f(&plus) - f(&minus)) / (2.0 * f64::from(h));
                let analytic = f64::from(grads[i][k]);
                worst = worst.max((numeric - analytic).abs());
                largest = largest.max(analytic.abs());
            }
        }
        assert!(largest > 1e-3, "the test data gives no gradient");
        assert!(
            worst <= 2e-3 * largest,
            "worst {worst} against largest {largest}"
        );
    }

    #[test]
    fn identical_images_are_maximally_similar_and_one_image_has_no_term() {
        let a = random(12, 3);
        let (value, _) = diversity(&[&a, &a], 3, 4);
        // two identical normalised Grams: ⟨N, N⟩ = 1 each way, over n = 2
        assert!((value - 1.0).abs() < 1e-5, "{value}");
        let (one, grads) = diversity(&[&a], 3, 4);
        assert_eq!(one, 0.0);
        assert!(grads[0].iter().all(|&g| g == 0.0));
    }
}
