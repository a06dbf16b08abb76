//! The CAM family: class activation maps at a layer on the image grid, read as channel planes
//! `[1, k, h, w]` ([`super::layout`]: NCHW maps, channel-last maps, patch tokens).
//!
//! - Grad-CAM: ReLU(Σ_k α_k A_k), α_k the spatial mean of ∂y_c/∂A_k.
//! - Grad-CAM++ (closed form with the exp-free higher-order terms, as pytorch-grad-cam):
//!   a = g² / (2 g² + s_k g³ + 1e-7) with s_k = Σ_ij A_k (0 where g = 0),
//!   w_k = Σ_ij a · ReLU(g), map = ReLU(Σ_k w_k A_k).
//! - Score-CAM: w_k = p_c(x ∘ M_k) − p_c(0), M_k the channel upsampled to the input and scaled
//!   to [0, 1], p_c the class probability; map = ReLU(Σ_k w_k A_k). Batched, at most `batch`
//!   masked images alive at a time; `max_channels` keeps the channels of largest mean
//!   activation.
//!
//! The raw map stays at the layer's resolution; `map` is its bilinear upsampling to the input
//! (half-pixel centres) scaled by (g − min)/(max − min).

use super::Map;
use super::layout::PixelLayout;
use super::target::{Explainer, ResolvedTarget, Target};
use super::util::batch_of;
use super::{Control, ExplainError, ExplainResult, single_image_dims};
use crate::engine::graph::ValueId;
use crate::engine::{Keep, Op, Tensor};

#[derive(Clone, Debug)]
pub struct CamResult {
    pub layer: ValueId,
    /// ReLU(Σ_k w_k A_k) at the layer's resolution `[h, w]`.
    pub raw: Map,
    /// One weight per channel `[k]`.
    pub weights: Vec<f32>,
    /// `raw` upsampled to the input and scaled to [0, 1].
    pub map: Map,
    pub target: ResolvedTarget,
}

impl CamResult {
    /// The map of channel weights over activations `a` (`(k, lh, lw)`, batch item 0), upsampled
    /// to the input's `[h, w]`: the last step of every CAM method.
    fn from_weights(
        layer: ValueId,
        a: &[f32],
        weights: Vec<f32>,
        [lh, lw]: [usize; 2],
        [h, w]: [usize; 2],
        target: ResolvedTarget,
    ) -> ExplainResult<Self> {
        let raw = weighted_relu_sum(a, &weights, lh, lw)?;
        Ok(CamResult {
            layer,
            map: raw.resize_bilinear(h, w).normalised(),
            raw,
            weights,
            target,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GradCamVariant {
    #[default]
    GradCam,
    GradCamPlusPlus,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScoreCamOptions {
    /// Keep only this many channels (largest mean activation); `None` uses all.
    pub max_channels: Option<usize>,
    /// Masked images per forward pass.
    pub batch: usize,
}

impl Default for ScoreCamOptions {
    fn default() -> Self {
        Self {
            max_channels: None,
            batch: 16,
        }
    }
}

impl Explainer<'_> {
    /// The default CAM layer. In a transformer (a graph with attention softmaxes), the output
    /// of the last LayerNorm before the last attention softmax that lies on the image grid:
    /// the last block's first norm, where the gradient still reaches every token (after the
    /// last attention only the class token or the pooled tokens matter), as pytorch-grad-cam
    /// recommends for ViT and Swin. Otherwise the input of the first global pooling / flatten /
    /// reshape that consumes a 4-D value, else the last 4-D node output with more than one
    /// pixel.
    pub fn default_cam_layer(&self) -> ExplainResult<ValueId> {
        let g = self.graph;
        let last_softmax = g.nodes().iter().rposition(|n| {
            matches!(n.op, Op::Softmax { .. }) && g.value(n.output).shape.len() >= 3
        });
        if let Some(last) = last_softmax {
            let norm = g.nodes()[..last].iter().rev().find(|n| {
                matches!(n.op, Op::LayerNorm { .. })
                    && matches!(self.layout(n.output), Some(PixelLayout::ChannelLast { .. }))
            });
            if let Some(norm) = norm {
                return Ok(norm.output);
            }
        }
        for node in g.nodes() {
            let consumes_map = matches!(
                node.op,
                Op::GlobalAvgPool | Op::Flatten { .. } | Op::Reshape { .. }
            );
            if consumes_map && g.value(node.inputs[0]).shape.len() == 4 {
                return Ok(node.inputs[0]);
            }
        }
        g.nodes()
            .iter()
            .rev()
            .map(|n| n.output)
            .find(|&v| {
                let s = &g.value(v).shape;
                s.len() == 4 && s[2] * s[3] > 1
            })
            .ok_or_else(|| ExplainError::invalid("the model has no 4-D layer for a CAM"))
    }

    /// The CAM layer (default: [`Self::default_cam_layer`]) and how it lies on the grid.
    fn cam_layer(&self, layer: Option<ValueId>) -> ExplainResult<(ValueId, PixelLayout)> {
        let layer = match layer {
            Some(l) => l,
            None => self.default_cam_layer()?,
        };
        let info = self
            .graph
            .values()
            .get(layer)
            .ok_or_else(|| ExplainError::invalid(format!("unknown value id {layer}")))?;
        let layout = self.layout(layer).ok_or_else(|| {
            ExplainError::invalid(format!(
                "a CAM needs a layer on the image grid (a 4-D map [n, k, h, w], a channels-last \
                 map or patch tokens); '{}' has shape {:?} and is not one",
                info.name, info.shape
            ))
        })?;
        Ok((layer, layout))
    }

    /// Grad-CAM or Grad-CAM++ of one image at `layer` (default: [`Self::default_cam_layer`]).
    pub fn grad_cam(
        &self,
        x: &Tensor,
        target: Target,
        layer: Option<ValueId>,
        variant: GradCamVariant,
    ) -> ExplainResult<CamResult> {
        let [_, h, w] = single_image_dims(x)?;
        let (layer, layout) = self.cam_layer(layer)?;
        let (scored, grads, t) = self.forward_backward(x, Some(target), None, &[layer])?;
        let a = self
            .graph
            .lookup(&scored.pass, layer)
            .ok_or_else(|| ExplainError::invalid("the forward pass lost the CAM layer"))?;
        let a = layout.to_planes(a)?; // [1, k, lh, lw]
        let g = match grads.values.get(&layer) {
            Some(g) => layout.to_planes(g)?,
            // The score does not depend on this layer: all gradients are zero.
            None => Tensor::zeros(a.shape()),
        };
        let [_, k, lh, lw] = a.dims4()?;
        let plane = lh * lw;
        let weights: Vec<f32> = (0..k)
            .map(|ch| {
                let ga = &g.data()[ch * plane..(ch + 1) * plane];
                let aa = &a.data()[ch * plane..(ch + 1) * plane];
                match variant {
                    GradCamVariant::GradCam => mean(ga),
                    GradCamVariant::GradCamPlusPlus => plus_plus_weight(aa, ga),
                }
            })
            .collect();
        CamResult::from_weights(layer, a.data(), weights, [lh, lw], [h, w], t)
    }

    /// Score-CAM of one image at `layer`. Needs `k / batch` forward passes (k the channels
    /// kept); the progress unit is one batch.
    pub fn score_cam(
        &self,
        x: &Tensor,
        target: Target,
        layer: Option<ValueId>,
        opts: &ScoreCamOptions,
        ctl: Control,
    ) -> ExplainResult<CamResult> {
        let chw = single_image_dims(x)?;
        let [c, h, w] = chw;
        let batch = self.batch_size(opts.batch)?;
        let (layer, layout) = self.cam_layer(layer)?;
        let scored = self.run(x, Keep::Values(vec![layer]))?;
        let t = self
            .head
            .resolve(target, scored.item(0, self.head.logits))?;
        let a = self
            .graph
            .lookup(&scored.pass, layer)
            .ok_or_else(|| ExplainError::invalid("the forward pass lost the CAM layer"))?;
        let a = layout.to_planes(a)?; // [1, k, lh, lw]
        let [_, k, lh, lw] = a.dims4()?;
        let plane = lh * lw;
        let channels = strongest_channels(a.data(), k, plane, opts.max_channels);
        let zeros = Tensor::zeros(&[1, c, h, w]);
        let base = self.probabilities(&zeros, &t)?[0];

        let mut weights = vec![0.0f32; k];
        let total = channels.len().div_ceil(batch);
        for (b, group) in channels.chunks(batch).enumerate() {
            ctl.step(b, total)?;
            // Channels with a flat activation give no mask; they keep weight 0.
            let masks: Vec<(usize, Map)> = group
                .iter()
                .filter_map(|&ch| {
                    let m = Map::new(lh, lw, a.data()[ch * plane..(ch + 1) * plane].to_vec())
                        .ok()?
                        .resize_bilinear(h, w);
                    let (lo, hi) = m.min_max();
                    (hi > lo).then(|| (ch, m.normalised()))
                })
                .collect();
            if masks.is_empty() {
                continue;
            }
            let masked = batch_of(chw, masks.len(), |i, out| {
                let m = masks[i].1.data();
                for (o, xc) in out
                    .chunks_exact_mut(h * w)
                    .zip(x.data().chunks_exact(h * w))
                {
                    for ((o, &xv), &mv) in o.iter_mut().zip(xc).zip(m) {
                        *o = xv * mv;
                    }
                }
            })?; // (masks, c, h, w)
            let probs = self.probabilities(&masked, &t)?;
            for ((ch, _), p) in masks.iter().zip(probs) {
                weights[*ch] = p - base;
            }
        }
        ctl.step(total, total)?;
        CamResult::from_weights(layer, a.data(), weights, [lh, lw], [h, w], t)
    }
}

fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}

/// Grad-CAM++ weight of one channel (activation `a`, gradient `g`, both `(h, w)`), in f64.
fn plus_plus_weight(a: &[f32], g: &[f32]) -> f32 {
    let s: f64 = a.iter().map(|&v| v as f64).sum();
    let w: f64 = g
        .iter()
        .map(|&gv| {
            let gv = gv as f64;
            if gv == 0.0 {
                return 0.0;
            }
            let g2 = gv * gv;
            let alpha = g2 / (2.0 * g2 + s * g2 * gv + 1e-7);
            alpha * gv.max(0.0)
        })
        .sum();
    w as f32
}

/// ReLU(Σ_k w_k A_k) for activations `(k, h, w)` (batch item 0).
fn weighted_relu_sum(a: &[f32], weights: &[f32], h: usize, w: usize) -> ExplainResult<Map> {
    let plane = h * w;
    let mut acc = vec![0.0f64; plane]; // (h, w)
    for (ch, &wk) in weights.iter().enumerate() {
        if wk == 0.0 {
            continue;
        }
        for (s, &v) in acc.iter_mut().zip(&a[ch * plane..(ch + 1) * plane]) {
            *s += wk as f64 * v as f64;
        }
    }
    Ok(Map::new(
        h,
        w,
        acc.into_iter().map(|v| v.max(0.0) as f32).collect(),
    )?)
}

/// Indices of the `max` channels with the largest mean activation (all when `None`), in
/// channel order.
fn strongest_channels(a: &[f32], k: usize, plane: usize, max: Option<usize>) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..k).collect();
    if let Some(m) = max.filter(|&m| m < k) {
        let means: Vec<f32> = (0..k)
            .map(|ch| mean(&a[ch * plane..(ch + 1) * plane]))
            .collect();
        idx.sort_by(|&i, &j| means[j].total_cmp(&means[i]));
        idx.truncate(m);
        idx.sort_unstable();
    }
    idx
}
