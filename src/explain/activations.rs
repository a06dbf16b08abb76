//! Activations of any value for an input, and their channels as maps for grids.

use super::Map;
use super::layout::Layouts;
use super::target::Explainer;
use super::{ExplainError, ExplainResult};
use crate::engine::graph::ValueId;
use crate::engine::{Graph, Keep, Tensor};

/// How channel maps are scaled to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Normalisation {
    /// Each channel by its own min and max: shows every channel's pattern.
    #[default]
    PerMap,
    /// All channels by the layer's min and max: shows which channels are strong.
    PerLayer,
}

/// The node outputs on the image grid (4-D maps, channel-last maps, patch tokens; see
/// [`super::layout`]), in topological order (the layer browser's list and the CAM layer
/// candidates).
pub fn spatial_values(graph: &Graph) -> Vec<ValueId> {
    Layouts::of(graph).spatial_values(graph)
}

impl Explainer<'_> {
    /// The values `ids` for input `x` (one forward pass keeping only them).
    pub fn activations(&self, x: &Tensor, ids: &[ValueId]) -> ExplainResult<Vec<Tensor>> {
        let scored = self.run(x, Keep::Values(ids.to_vec()))?;
        ids.iter()
            .map(|&v| {
                self.graph.lookup(&scored.pass, v).cloned().ok_or_else(|| {
                    ExplainError::invalid(format!("value id {v} is not in the graph"))
                })
            })
            .collect()
    }
}

/// Channels of batch item `item` of a 4-D activation `[n, c, h, w]` as maps in [0, 1];
/// `channels` picks some (all when `None`).
pub fn channel_maps(
    t: &Tensor,
    item: usize,
    channels: Option<&[usize]>,
    norm: Normalisation,
) -> ExplainResult<Vec<Map>> {
    let [n, c, h, w] = t.dims4()?;
    if item >= n {
        return Err(ExplainError::invalid(format!(
            "batch item {item} does not exist in an activation of shape {:?}",
            t.shape()
        )));
    }
    let all: Vec<usize> = (0..c).collect();
    let picked = channels.unwrap_or(&all);
    if let Some(&bad) = picked.iter().find(|&&ch| ch >= c) {
        return Err(ExplainError::invalid(format!(
            "channel {bad} does not exist in an activation with {c} channels"
        )));
    }
    let plane = h * w;
    let base = item * c * plane;
    let maps: Vec<Map> = picked
        .iter()
        .map(|&ch| {
            Map::new(
                h,
                w,
                t.data()[base + ch * plane..base + (ch + 1) * plane].to_vec(),
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(match norm {
        Normalisation::PerMap => maps.iter().map(Map::normalised).collect(),
        Normalisation::PerLayer => {
            let item_data = &t.data()[base..base + c * plane];
            let whole = Map::new(1, item_data.len(), item_data.to_vec())?;
            let (lo, hi) = whole.min_max();
            let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
            maps.into_iter()
                .map(|m| m.map_values(|v| (v - lo) * scale))
                .collect()
        }
    })
}

/// The `k` channels of item `item` with the largest mean activation, strongest first.
pub fn top_channels(t: &Tensor, item: usize, k: usize) -> ExplainResult<Vec<usize>> {
    let [n, c, h, w] = t.dims4()?;
    if item >= n {
        return Err(ExplainError::invalid(format!(
            "batch item {item} does not exist in an activation of shape {:?}",
            t.shape()
        )));
    }
    let plane = h * w;
    let base = item * c * plane;
    let means: Vec<f32> = (0..c)
        .map(|ch| {
            t.data()[base + ch * plane..base + (ch + 1) * plane]
                .iter()
                .sum::<f32>()
                / plane as f32
        })
        .collect();
    let mut idx: Vec<usize> = (0..c).collect();
    idx.sort_by(|&a, &b| means[b].total_cmp(&means[a]));
    idx.truncate(k);
    Ok(idx)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn per_map_and_per_layer() {
        // (1, 2, 1, 2): channel 0 = [0, 1], channel 1 = [2, 4]
        let t = Tensor::new(vec![1, 2, 1, 2], vec![0.0, 1.0, 2.0, 4.0]).unwrap();
        let per_map = channel_maps(&t, 0, None, Normalisation::PerMap).unwrap();
        assert_eq!(per_map[1].data(), vec![0.0, 1.0]);
        let per_layer = channel_maps(&t, 0, Some(&[1]), Normalisation::PerLayer).unwrap();
        assert_eq!(per_layer[0].data(), vec![0.5, 1.0]);
        assert_eq!(top_channels(&t, 0, 1).unwrap(), vec![1]);
        assert!(channel_maps(&t, 0, Some(&[2]), Normalisation::PerMap).is_err());
    }
}
