//! The objective of one dream step: one forward pass (and, for a step, one backward pass)
//! of `J = Σ weight · value` over the bound targets, and the scores the report shows.

use super::{
    BackwardRequest, Bound, ClassScore, DreamStep, ExplainError, ExplainResult, Explainer,
    ForwardOptions, Graph, Keep, Tensor, ValueId,
};

/// Softmax of the logits (or the two probabilities of a single logit).
pub(super) fn class_probabilities(logits: &[f32]) -> Vec<f32> {
    if let [l] = logits {
        let p1 = 1.0 / (1.0 + (-l).exp());
        return vec![1.0 - p1, p1];
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| (v / sum) as f32).collect()
}

pub(super) fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// ln(1 + e^v), stable for large |v|.
pub(super) fn softplus(v: f32) -> f32 {
    v.max(0.0) + (-v.abs()).exp().ln_1p()
}

pub(super) fn log_sum_exp(v: &[f32]) -> f32 {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + v
        .iter()
        .map(|&x| f64::from(x - max).exp())
        .sum::<f64>()
        .ln() as f32
}

/// One forward pass of `x` `[1, ..]`: the report and, with `grad`, dJ/dx for
/// `J = Σ weight · value`. Runs on the inference rewrite of the graph (batch norms folded,
/// activations fused into their convolutions; cached on the graph) keeping the targets'
/// layers: the unfused graph with every value kept spent a third of a dream step on separate
/// batch-norm and clip passes and their gradients (EfficientNet-Lite0 at AVX2).
pub(super) fn forward_objective(
    explainer: &Explainer,
    targets: &[(Bound, f32)],
    class_score: ClassScore,
    x: &Tensor,
    grad: bool,
) -> ExplainResult<(DreamStep, Option<Tensor>)> {
    let head = &explainer.head;
    let layers: Vec<ValueId> = targets
        .iter()
        .filter_map(|(b, _)| match b {
            Bound::Channel { value, .. } | Bound::Layer { value } => Some(*value),
            Bound::Class(_) => None,
        })
        .collect();
    let fast = explainer.fast_graph(&layers)?;
    let graph: &Graph = &fast;
    let fast_head = explainer.fast_id(graph, head.value)?;
    let mut keep = layers
        .iter()
        .map(|&v| explainer.fast_id(graph, v))
        .collect::<ExplainResult<Vec<_>>>()?;
    keep.push(fast_head);
    let opts = if grad {
        ForwardOptions::eval_for_backward_keeping(keep)
    } else {
        ForwardOptions {
            keep: Keep::Values(keep),
            ..ForwardOptions::eval()
        }
    };
    let pass = graph.forward(std::slice::from_ref(x), &opts)?;
    let logits_t = pass
        .get(fast_head)
        .ok_or_else(|| ExplainError::invalid("the forward pass lost the logits"))?;
    let logits = logits_t.data();
    let probs = class_probabilities(logits);
    let mut seeds: Vec<(ValueId, Tensor)> = Vec::new();
    let mut values = Vec::with_capacity(targets.len());
    let mut report_targets = Vec::new();
    let mut objective = 0.0f32;
    for (bound, weight) in targets {
        let value = match bound {
            Bound::Class(t) => {
                report_targets.push((t.class, probs.get(t.class).copied().unwrap_or(0.0)));
                let score = head.score(t, logits);
                if grad {
                    let mut seed = head.seed(t, logits_t.shape())?.map(|v| v * weight);
                    if class_score == ClassScore::LogProbability {
                        // d log p / d logits = onehot − softmax; for one logit
                        // d log σ(s l) / d l = s (1 − σ(s l))
                        match logits {
                            [_] => seed.data_mut()[0] *= 1.0 - sigmoid(score),
                            _ => seed
                                .data_mut()
                                .iter_mut()
                                .zip(&probs)
                                .for_each(|(g, p)| *g -= weight * p),
                        }
                    }
                    seeds.push((fast_head, seed));
                }
                match (class_score, logits) {
                    (ClassScore::Logit, _) => score,
                    (ClassScore::LogProbability, [_]) => -softplus(-score),
                    (ClassScore::LogProbability, _) => score - log_sum_exp(logits),
                }
            }
            Bound::Channel { value, channel } => {
                let id = explainer.fast_id(graph, *value)?;
                let a = lookup(graph, &pass, id)?;
                let plane = a.numel() / a.shape()[1].max(1);
                let slice = &a.data()[channel * plane..(channel + 1) * plane];
                if grad {
                    let mut seed = Tensor::try_zeros(a.shape())?;
                    seed.data_mut()[channel * plane..(channel + 1) * plane]
                        .iter_mut()
                        .for_each(|v| *v = weight / plane as f32);
                    seeds.push((id, seed));
                }
                slice.iter().sum::<f32>() / plane as f32
            }
            Bound::Layer { value } => {
                let id = explainer.fast_id(graph, *value)?;
                let a = lookup(graph, &pass, id)?;
                let n = a.numel().max(1) as f32;
                if grad {
                    seeds.push((id, a.map(|v| weight * 2.0 * v / n)));
                }
                a.data().iter().map(|v| v * v).sum::<f32>() / n
            }
        };
        objective += weight * value;
        values.push(value);
    }
    let dx = if grad {
        let input = graph.inputs()[0];
        let req = BackwardRequest {
            seeds,
            param_grads: false,
            value_grads: vec![input],
        };
        let mut grads = graph.backward(&pass, &req)?;
        Some(match grads.values.remove(&input) {
            Some(g) => g,
            None => Tensor::try_zeros(x.shape())?,
        })
    } else {
        None
    };
    let report = DreamStep {
        step: 0,
        objective,
        values,
        targets: report_targets,
        top5: crate::models::scores::top_k(&probs, 5),
    };
    Ok((report, dx))
}

pub(super) fn lookup<'a>(
    graph: &'a Graph,
    pass: &'a crate::engine::ForwardPass,
    value: ValueId,
) -> ExplainResult<&'a Tensor> {
    let t = graph.lookup(pass, value).ok_or_else(|| {
        ExplainError::invalid(format!(
            "the forward pass did not keep '{}'",
            graph.value(value).name
        ))
    })?;
    if t.rank() < 2 || t.shape()[0] != 1 {
        return Err(ExplainError::invalid(format!(
            "layer '{}' has shape {:?}; a dream objective needs batch 1 and a channel axis",
            graph.value(value).name,
            t.shape()
        )));
    }
    Ok(t)
}
