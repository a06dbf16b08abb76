//! Class probabilities from a model's raw outputs, and the top classes. Shared by the
//! command line and the window.

use crate::engine::{ForwardOptions, Graph, Keep, Tensor};

/// The first output of one evaluation-mode forward pass, flattened: `[n · scores]` for an
/// input batch of n.
/// Runs on the graph's inference rewrite (batch norms folded, activations fused; built once and
/// cached on the graph).
pub fn scores(graph: &Graph, input: &Tensor) -> Result<Vec<f32>, String> {
    let graph = graph.inference(&[]).map_err(|e| e.to_string())?;
    let out = *graph.outputs().first().ok_or("the model has no output")?;
    let opts = ForwardOptions {
        keep: Keep::Outputs,
        ..ForwardOptions::eval()
    };
    let pass = graph
        .forward(std::slice::from_ref(input), &opts)
        .map_err(|e| e.to_string())?;
    let y = graph
        .lookup(&pass, out)
        .ok_or("the forward pass lost its output")?;
    Ok(y.data().to_vec())
}

/// Softmax with the maximum subtracted (stable).
pub fn softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = z.iter().map(|&v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&v| (v / s) as f32).collect()
}

/// Outputs that already are a probability distribution (a softmax inside the model, as Keras
/// exports have): every value in [0, 1] and a sum within 1e-3 of 1.
fn is_distribution(z: &[f32]) -> bool {
    z.len() > 1
        && z.iter().all(|v| (0.0..=1.0).contains(v))
        && (z.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-3
}

/// Class probabilities from raw outputs: a single logit is a binary classifier (sigmoid; class 1
/// is the logit, class 0 its complement), distributions are kept, anything else is softmaxed.
pub fn probabilities(z: &[f32]) -> Vec<f32> {
    match z {
        [logit] => {
            let p1 = 1.0 / (1.0 + (-logit).exp());
            vec![1.0 - p1, p1]
        }
        _ if is_distribution(z) => z.to_vec(),
        _ => softmax(z),
    }
}

/// The `k` most probable classes, best first (ties: lower index first).
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| (i, probs[i])).collect()
}
