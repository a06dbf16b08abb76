//! DeepDream: a layer's activations amplified in a photo, octave by octave, with tiled
//! gradients.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{
    Bound, ClassScore, Control, ExplainError, ExplainResult, Explainer, Filter, Graph, ModelInput,
    Preprocess, Sampler, View, forward_objective, image_planes, planes_to_image, resize_f32,
};

/// How [`deep_dream`] runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeepDreamOptions {
    /// Number of scales, the smallest first; each is `octave_scale` times the previous.
    pub octaves: usize,
    pub steps_per_octave: usize,
    pub octave_scale: f32,
    /// Step size: each step moves pixels by `lr · g / mean |g|` (pixels in [0, 1]).
    pub lr: f32,
    /// Seed of the random roll applied before tiling.
    pub seed: u64,
}

impl Default for DeepDreamOptions {
    fn default() -> Self {
        Self {
            octaves: 4,
            steps_per_octave: 10,
            octave_scale: 1.4,
            lr: 0.01,
            seed: 0,
        }
    }
}

/// DeepDream (Mordvintsev et al. 2015): gradient ascent on the mean squared activation of
/// `layer`, starting from `photo`, at `octaves` scales from the smallest up; the detail dreamt
/// at one scale is carried up to the next. The model sees the image in tiles of its input size
/// after a random circular roll (so tile seams move), or stretched when the image is smaller.
/// Progress counts steps.
pub fn deep_dream(
    graph: &Graph,
    preprocess: &Preprocess,
    photo: &image::RgbImage,
    layer: &str,
    opts: &DeepDreamOptions,
    ctl: Control,
) -> ExplainResult<image::RgbImage> {
    let scale_ok = opts.octave_scale.is_finite() && opts.octave_scale >= 1.0;
    let lr_ok = opts.lr.is_finite() && opts.lr > 0.0;
    if opts.octaves == 0 || !scale_ok || !lr_ok {
        return Err(ExplainError::invalid(format!(
            "DeepDream needs at least one octave, an octave scale >= 1 and a positive step (got {}, {}, {})",
            opts.octaves, opts.octave_scale, opts.lr
        )));
    }
    let explainer = Explainer::new(graph)?;
    let input = ModelInput::new(preprocess, graph.input_shape())?;
    let value = explainer.value(layer)?;
    let targets = [(Bound::Layer { value }, 1.0f32)];
    let (h0, w0) = (photo.height() as usize, photo.width() as usize);
    if h0 == 0 || w0 == 0 {
        return Err(ExplainError::invalid("the photo is empty"));
    }
    let photo = image_planes(photo); // (3, h0, w0)
    let sizes: Vec<(usize, usize)> = (0..opts.octaves)
        .rev()
        .map(|o| {
            let f = opts.octave_scale.powi(o as i32);
            let sz = |n: usize| ((n as f32 / f).round() as usize).max(1);
            (sz(h0), sz(w0))
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let total = opts.octaves * opts.steps_per_octave;
    let (mut detail, mut prev) = (vec![0.0f32; 3 * sizes[0].0 * sizes[0].1], sizes[0]);
    let mut img = Vec::new();
    for (o, &(h, w)) in sizes.iter().enumerate() {
        let base = resize_f32(Filter::Bilinear, &photo, [3, h0, w0], [h, w]);
        let detail_here = resize_f32(Filter::Bilinear, &detail, [3, prev.0, prev.1], [h, w]);
        img = base.iter().zip(&detail_here).map(|(a, b)| a + b).collect();
        for step in 0..opts.steps_per_octave {
            ctl.step(o * opts.steps_per_octave + step, total)?;
            let g = tiled_gradient(&explainer, &input, &targets, &img, [h, w], &mut rng)?;
            let mean_abs = g.iter().map(|v| v.abs()).sum::<f32>() / g.len() as f32;
            let k = opts.lr / (mean_abs + 1e-12);
            for (p, g) in img.iter_mut().zip(&g) {
                *p = (*p + k * g).clamp(0.0, 1.0);
            }
        }
        detail = img.iter().zip(&base).map(|(a, b)| a - b).collect();
        prev = (h, w);
    }
    ctl.step(total, total)?;
    let (h, w) = prev;
    Ok(planes_to_image(&img, h, w))
}

/// dJ/d image `(3, h, w)` summed over tiles of the model's input size that cover the image
/// after a random roll (or one stretched view along an axis shorter than the model's input).
pub(super) fn tiled_gradient(
    explainer: &Explainer,
    input: &ModelInput,
    targets: &[(Bound, f32)],
    img: &[f32],
    [h, w]: [usize; 2],
    rng: &mut ChaCha8Rng,
) -> ExplainResult<Vec<f32>> {
    use rand::RngExt;
    let [mh, mw] = input.size;
    // (centre, extent) of the tiles along one axis of length n for a model side m
    let mut axis = |n: usize, m: usize| -> Vec<(f32, f32)> {
        if n <= m {
            return vec![(n as f32 / 2.0, n as f32)];
        }
        let roll = rng.random_range(0..m);
        (0..n.div_ceil(m))
            .map(|k| ((roll + k * m) as f32 + m as f32 / 2.0, m as f32))
            .collect()
    };
    let (rows, cols) = (axis(h, mh), axis(w, mw));
    let mut g = vec![0.0f32; img.len()];
    for &(cy, ey) in &rows {
        for &(cx, ex) in &cols {
            let view = View {
                center: [cy, cx],
                extent: [ey, ex],
                angle: 0.0,
            };
            let sampler = Sampler::new(&view, [h, w], [mh, mw], 0.5, true);
            let x = input.tensor(&sampler.apply(img))?;
            let (_, dx) = forward_objective(explainer, targets, ClassScore::Logit, &x, true)?;
            if let Some(dx) = dx {
                let d = sampler.adjoint(&input.adjoint(&dx));
                g.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            }
        }
    }
    Ok(g)
}
