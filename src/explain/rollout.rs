//! Attention rollout (Abnar & Zuidema 2020): how much each patch token flows into the class
//! token through every attention layer of a vision transformer, with no gradient.
//!
//! Per attention layer `l`, the attention matrices `[heads, T, T]` (softmax outputs, read from
//! the graph) are fused over the heads (mean), the residual connection is accounted for as
//! `Â = (A + I) / 2` with rows re-normalised, and the layers are chained: `R = Â_L · … · Â_1`.
//! The map is the class token's row of `R` over the patch tokens, put on the patch grid
//! through the token layout ([`super::layout`]); a model without a class token (tokens pooled)
//! gets the mean of the rows of its patch tokens. Class-agnostic, as in the paper.
//!
//! It needs attention over the whole token sequence (ViT, DeiT): windowed attention (Swin,
//! MaxViT's blocks) is refused with a sentence naming why.

use std::sync::Arc;

use super::Map;
use super::layout::{NO_PIXEL, PixelLayout};
use super::target::Explainer;
use super::{ExplainError, ExplainResult, single_image_dims};
use crate::engine::graph::ValueId;
use crate::engine::{Keep, Op, Tensor};

/// A rollout's result.
#[derive(Clone, Debug)]
pub struct RolloutResult {
    /// The attention softmaxes chained, in graph order.
    pub layers: Vec<ValueId>,
    /// The class token's share of each patch token `[gh, gw]` (rows of `R` sum to 1).
    pub raw: Map,
    /// `raw` upsampled to the input and scaled to [0, 1].
    pub map: Map,
}

/// The attention softmaxes of a graph and the token rows they attend over.
pub(super) struct Attention {
    layers: Vec<ValueId>,
    /// The patch grid `(h, w)` of the token sequence.
    grid: (usize, usize),
    /// Per token, its pixel on the grid ([`NO_PIXEL`] for a class token); as many as the
    /// attention matrices have rows.
    rows: Arc<[u32]>,
}

impl Explainer<'_> {
    /// The softmaxes `[.., T, T]` over the last axis whose `T` is the length of a token
    /// sequence on the image grid, and that sequence's layout.
    pub(super) fn attention_layers(&self) -> ExplainResult<Attention> {
        let g = self.graph;
        let softmaxes: Vec<(usize, ValueId, usize)> = g
            .nodes()
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let s = &g.value(n.output).shape;
                let r = s.len();
                let last_axis = matches!(n.op, Op::Softmax { axis } if axis + 1 == r);
                (last_axis && r >= 3 && s[r - 1] == s[r - 2]).then_some((i, n.output, s[r - 1]))
            })
            .collect();
        let Some(&(first, _, _)) = softmaxes.first() else {
            return Err(ExplainError::invalid(
                "attention rollout needs a transformer: this model has no attention softmax",
            ));
        };
        // the token rows entering the first attention: the last channel-last value before it
        let (grid, rows) = g.nodes()[..first]
            .iter()
            .rev()
            .find_map(|n| match self.layout(n.output) {
                Some(PixelLayout::ChannelLast { h, w, rows }) => Some(((h, w), rows)),
                _ => None,
            })
            .ok_or_else(|| {
                ExplainError::invalid(
                    "attention rollout found no token sequence on the image grid before the first attention",
                )
            })?;
        let tokens = rows.len();
        let layers: Vec<ValueId> = softmaxes
            .iter()
            .filter(|&&(_, _, t)| t == tokens)
            .map(|&(_, v, _)| v)
            .collect();
        if layers.is_empty() {
            let t = softmaxes[0].2;
            return Err(ExplainError::invalid(format!(
                "attention rollout needs attention over all {tokens} tokens; this model attends \
                 within windows of {t} tokens (Swin-style), which rollout does not chain"
            )));
        }
        Ok(Attention { layers, grid, rows })
    }

    /// Attention rollout of one image `x` `[1, c, h, w]`.
    pub fn attention_rollout(&self, x: &Tensor) -> ExplainResult<RolloutResult> {
        let [_, h, w] = single_image_dims(x)?;
        let att = self.attention_layers()?;
        let (t, rows, (gh, gw)) = (att.rows.len(), &att.rows, att.grid);
        let scored = self.run(x, Keep::Values(att.layers.clone()))?;
        // R = I, then R ← Â_l · R layer by layer (f64: dozens of chained products)
        let mut r = identity(t);
        for &v in &att.layers {
            let a = self
                .graph
                .lookup(&scored.pass, v)
                .ok_or_else(|| ExplainError::invalid("the forward pass lost an attention layer"))?;
            let fused = fuse_heads(a.data(), t)?;
            r = matmul(&fused, &r, t);
        }
        // the class token: the first row without a pixel; else every patch row's mean
        let patch_rows: Vec<usize> = (0..t).filter(|&i| rows[i] != NO_PIXEL).collect();
        let from: Vec<usize> = match (0..t).find(|&i| rows[i] == NO_PIXEL) {
            Some(cls) => vec![cls],
            None => patch_rows.clone(),
        };
        let mut grid = vec![0.0f32; gh * gw];
        for &j in &patch_rows {
            let share: f64 = from.iter().map(|&i| r[i * t + j]).sum::<f64>() / from.len() as f64;
            grid[rows[j] as usize] += share as f32;
        }
        let raw = Map::new(gh, gw, grid)?;
        Ok(RolloutResult {
            layers: att.layers,
            map: raw.resize_bilinear(h, w).normalised(),
            raw,
        })
    }
}

fn identity(t: usize) -> Vec<f64> {
    let mut m = vec![0.0; t * t];
    for i in 0..t {
        m[i * t + i] = 1.0;
    }
    m
}

/// One layer's attention `[.., T, T]` (heads, and a batch of one) as `Â = (mean_h A + I) / 2`
/// with rows re-normalised: `[T, T]`.
fn fuse_heads(a: &[f32], t: usize) -> ExplainResult<Vec<f64>> {
    let per = t * t;
    if a.is_empty() || !a.len().is_multiple_of(per) {
        return Err(ExplainError::invalid(format!(
            "an attention layer of {} values is not a stack of {t}x{t} matrices",
            a.len()
        )));
    }
    let heads = a.len() / per;
    let mut m = vec![0.0f64; per];
    for head in a.chunks_exact(per) {
        for (s, &v) in m.iter_mut().zip(head) {
            *s += v as f64;
        }
    }
    for (i, row) in m.chunks_exact_mut(t).enumerate() {
        for v in row.iter_mut() {
            *v /= heads as f64;
        }
        row[i] += 1.0;
        let sum: f64 = row.iter().sum();
        if sum > 0.0 {
            for v in row.iter_mut() {
                *v /= sum;
            }
        }
    }
    Ok(m)
}

/// `a · b` of two `[t, t]` matrices.
fn matmul(a: &[f64], b: &[f64], t: usize) -> Vec<f64> {
    let mut out = vec![0.0; t * t];
    for (out_row, a_row) in out.chunks_exact_mut(t).zip(a.chunks_exact(t)) {
        for (&aik, b_row) in a_row.iter().zip(b.chunks_exact(t)) {
            for (o, &bkj) in out_row.iter_mut().zip(b_row) {
                *o += aik * bkj;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Two heads averaged, the identity added, rows re-normalised; chaining multiplies.
    #[test]
    fn fusing_heads_and_chaining() {
        // head 0 attends to token 1 only, head 1 to token 0 only (2 tokens)
        let a = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0];
        let m = fuse_heads(&a, 2).unwrap();
        assert_eq!(m, vec![0.75, 0.25, 0.25, 0.75]);
        let r = matmul(&m, &m, 2);
        assert!((r[0] - 0.625).abs() < 1e-12 && (r[1] - 0.375).abs() < 1e-12);
        assert!(fuse_heads(&a[..7], 2).is_err());
    }
}
