//! Feature visualisation of many units at once: one image per unit (or several, with the
//! diversity term), optimised together as one batch, so that each step is one forward and one
//! backward pass of the graph's prefix for the whole batch.
//!
//! Each image is the dream's (`explain::dream`): Lucid's decorrelated Fourier parameters, a
//! random view per image per step (pad, jitter, zoom, rotation in one resampling), Adam. The
//! objective of image b is the spatial mean of its unit's channel, `mean_{y,x} A[b, c_b, y, x]`
//! (for a dense layer, the output itself), minus `diversity · D` over the images of one unit
//! ([`super::diversity`]). Every image draws from its own random stream, seeded by the seed,
//! its channel and its variant, and Adam works element by element, so a unit's image is the
//! same whichever batch it is optimised in.
//!
//! A ReLU or ReLU6 layer is optimised through its input, the same channel before the clip, as
//! Lucid's `*_pre_relu` objectives do: where a unit is off everywhere (a random image often
//! starts there) the clipped value has no gradient and its image would never move (PyTorch's
//! loop in `tools/bench_microscope.py` leaves such a unit at 0). Raising the input raises the
//! unit; the activation reported is the layer's own.
//!
//! The prefix runs at the visualisation's size when the layer allows it (convolutions do), so
//! 32 units at 128 px cost 32 passes of a 128 px prefix; a layer behind a fixed-size op (a
//! dense layer, a transformer's reshape) is reached at the model's own input size instead, the
//! image resampled to it as the dream does.

use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::diversity::diversity;
use super::units::UnitLayer;
use crate::engine::graph::{ValueId, ValueKind};
use crate::engine::ops::Activation;
use crate::engine::optim::{Optimizer, OptimizerConfig};
use crate::engine::rng::mix64;
use crate::engine::{BackwardRequest, ForwardOptions, Graph, Keep, Op, Param, Tensor};
use crate::explain::dream::fourier::{self, FourierBasis};
use crate::explain::dream::input::ModelInput;
use crate::explain::dream::planes_to_image;
use crate::explain::dream::warp::{Sampler, View};
use crate::explain::gradient::standard_normal;
use crate::explain::{Control, ExplainError, ExplainResult};
use crate::models::{Layout, Preprocess};

/// What a batch of unit visualisations is asked for. The transforms' defaults are the dream's
/// (`DreamConfig::default()`).
#[derive(Clone, Debug, PartialEq)]
pub struct VisConfig {
    /// Side of each image in pixels.
    pub size: usize,
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f32,
    /// Images optimised together (one forward and backward pass per step for all of them).
    pub batch: usize,
    /// Images per unit; with more than one, `diversity` pushes them apart.
    pub per_unit: usize,
    /// Weight of Lucid's diversity term (0: off).
    pub diversity: f32,
    pub pad: usize,
    pub jitter: usize,
    pub scale: (f32, f32),
    pub rotation_degrees: f32,
    pub init_sd: f32,
    pub seed: u64,
}

impl Default for VisConfig {
    fn default() -> Self {
        Self {
            size: 128,
            steps: 256,
            lr: 0.05,
            batch: 32,
            per_unit: 1,
            diversity: 0.0,
            pad: 12,
            jitter: 8,
            scale: (0.95, 1.05),
            rotation_degrees: 10.0,
            init_sd: 0.01,
            seed: 0,
        }
    }
}

impl VisConfig {
    fn validate(&self) -> ExplainResult<()> {
        let bad = |m: &str| Err(ExplainError::invalid(m.to_string()));
        if !(8..=1024).contains(&self.size) {
            return bad("the visualisation size must be between 8 and 1024 pixels");
        }
        if self.steps == 0 || self.batch == 0 || self.per_unit == 0 {
            return bad("steps, batch and images per unit must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the learning rate must be a positive number");
        }
        if !(self.diversity.is_finite() && self.diversity >= 0.0) {
            return bad("the diversity weight must be a number of at least 0");
        }
        if !(self.scale.0 > 0.0 && self.scale.1 >= self.scale.0) {
            return bad("the zoom range must be positive and increasing");
        }
        Ok(())
    }
}

/// One finished visualisation.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitImage {
    pub channel: usize,
    /// Which of the unit's images (0 when there is one per unit).
    pub variant: usize,
    pub image: RgbImage,
    /// The channel's spatial mean on this image, untransformed (the layer's own value).
    pub activation: f32,
}

/// The prefix of the graph the images run through, and how an image reaches its input.
struct Prefix {
    graph: Graph,
    input: ModelInput,
    layer_id: ValueId,
    /// What the images maximise: the layer, or its input when the layer is a ReLU or a clip
    /// (see the module's comment).
    objective_id: ValueId,
}

impl Prefix {
    /// The graph up to `layer`, at `size` when its shapes allow, else at the model's size.
    fn new(
        graph: &Graph,
        preprocess: &Preprocess,
        layer: &UnitLayer,
        size: usize,
    ) -> ExplainResult<Self> {
        let declared = graph
            .inputs()
            .first()
            .map(|&v| graph.value(v).shape.clone())
            .ok_or_else(|| ExplainError::invalid("the model has no input"))?;
        let at = |side: [usize; 2]| -> Vec<usize> {
            let mut s = declared.clone();
            s[0] = 1;
            match preprocess.layout {
                Layout::Nchw if s.len() == 4 => [s[2], s[3]] = side,
                Layout::Nhwc if s.len() == 4 => [s[1], s[2]] = side,
                _ => {}
            }
            s
        };
        let sized = graph.subgraph(&[layer.value], Some(&at([size, size])));
        let (sub, side) = match sized {
            Ok(g) => (g, [size, size]),
            Err(_) => (
                graph.subgraph(&[layer.value], Some(&at(preprocess.size)))?,
                preprocess.size,
            ),
        };
        let mut preset = preprocess.clone();
        preset.size = side;
        let input_id = sub.inputs()[0];
        let input = ModelInput::new(&preset, &sub.value(input_id).shape)?;
        let layer_id = sub.value_id(&layer.name).ok_or_else(|| {
            ExplainError::invalid(format!("internal: '{}' left the prefix", layer.name))
        })?;
        let objective_id = match sub.producer(layer_id) {
            Some(node)
                if matches!(
                    node.op,
                    Op::Activation(Activation::Relu | Activation::Clip { .. })
                ) && node.inputs.first().is_some_and(|&v| {
                    sub.value(v).shape == sub.value(layer_id).shape
                        && !matches!(sub.value(v).kind, ValueKind::Param(_))
                }) =>
            {
                node.inputs[0]
            }
            _ => layer_id,
        };
        Ok(Self {
            graph: sub,
            input,
            layer_id,
            objective_id,
        })
    }
}

/// One image being optimised.
struct Item {
    channel: usize,
    variant: usize,
    rng: ChaCha8Rng,
}

/// What a step keeps of an image between the forward and the backward pass.
struct Viewed {
    rgb: Vec<f32>,
    sampler: Sampler,
}

/// Visualises `channels` of `layer`, `config.batch` images at a time; `done` gets each batch's
/// images as they finish (so a 2,048-channel layer is never in memory at once). Progress counts
/// steps over all batches.
pub fn visualise_units(
    graph: &Graph,
    preprocess: &Preprocess,
    layer: &UnitLayer,
    channels: &[usize],
    config: &VisConfig,
    ctl: Control,
    done: &mut dyn FnMut(Vec<UnitImage>) -> ExplainResult<()>,
) -> ExplainResult<()> {
    config.validate()?;
    if let Some(&c) = channels.iter().find(|&&c| c >= layer.channels) {
        return Err(ExplainError::invalid(format!(
            "channel {c} is out of range: layer '{}' has {} channels",
            layer.name, layer.channels
        )));
    }
    let prefix = Prefix::new(graph, preprocess, layer, config.size)?;
    let objective = prefix.graph.value(prefix.objective_id).name.clone();
    let fast = prefix
        .graph
        .inference(&[layer.name.as_str(), objective.as_str()])?;
    let basis = FourierBasis::new(config.size, config.size);
    let all: Vec<(usize, usize)> = channels
        .iter()
        .flat_map(|&c| (0..config.per_unit).map(move |v| (c, v)))
        .collect();
    // keep a unit's images in one batch, so that the diversity term sees them together
    let per_batch = (config.batch / config.per_unit).max(1) * config.per_unit;
    let per_batch = per_batch.min(prefix.graph.max_batch()).max(1);
    let batches = all.len().div_ceil(per_batch);
    for (b, chunk) in all.chunks(per_batch).enumerate() {
        let images = run_batch(
            &fast,
            &prefix,
            &basis,
            chunk,
            config,
            &ctl,
            b * config.steps,
            batches * config.steps,
        )?;
        done(images)?;
    }
    Ok(())
}

/// Optimises one batch of `(channel, variant)` images.
#[allow(clippy::too_many_arguments)]
fn run_batch(
    graph: &Graph,
    prefix: &Prefix,
    basis: &FourierBasis,
    chunk: &[(usize, usize)],
    config: &VisConfig,
    ctl: &Control,
    steps_before: usize,
    steps_total: usize,
) -> ExplainResult<Vec<UnitImage>> {
    let n = basis.param_len();
    let mut items: Vec<Item> = chunk
        .iter()
        .map(|&(channel, variant)| Item {
            channel,
            variant,
            rng: ChaCha8Rng::seed_from_u64(mix64(
                config.seed ^ mix64(channel as u64 + 1) ^ mix64((variant as u64 + 1) << 32),
            )),
        })
        .collect();
    let mut init = Vec::with_capacity(n * items.len());
    for item in &mut items {
        init.extend((0..n).map(|_| config.init_sd * standard_normal(&mut item.rng)));
    }
    let mut params = vec![Param {
        name: "microscope.images".into(),
        tensor: Tensor::new(vec![init.len()], init)?,
        trainable: true,
    }];
    let mut optimizer = Optimizer::new(OptimizerConfig::adam(config.lr))?;
    let s = config.size;
    let hw = s * s;
    let out = prefix.input.size;
    for step in 0..config.steps {
        let p = params[0].tensor.data();
        let viewed: Vec<(Viewed, Tensor)> = items
            .par_iter_mut()
            .enumerate()
            .map(|(i, item)| {
                let rgb = fourier::to_rgb(&basis.planes(&p[i * n..(i + 1) * n]), hw);
                let view = View::random(
                    s,
                    config.pad,
                    config.jitter,
                    config.scale,
                    config.rotation_degrees,
                    &mut item.rng,
                );
                let sampler = Sampler::new(&view, [s, s], out, 0.5, false);
                let x = prefix.input.tensor(&sampler.apply(&rgb))?;
                Ok((Viewed { rgb, sampler }, x))
            })
            .collect::<ExplainResult<_>>()?;
        let x = stack(viewed.iter().map(|(_, x)| x))?;
        let seed_fn = |a: &Tensor| seeds(a, &items, config.diversity);
        let dx = forward_backward(graph, prefix, &x, seed_fn)?;
        let per_item = dx.numel() / items.len();
        let item_shape: Vec<usize> = std::iter::once(1)
            .chain(dx.shape()[1..].iter().copied())
            .collect();
        let grads: Vec<Vec<f32>> = viewed
            .par_iter()
            .enumerate()
            .map(|(i, (v, _))| {
                let d = Tensor::new(
                    item_shape.clone(),
                    dx.data()[i * per_item..(i + 1) * per_item].to_vec(),
                )?;
                let d_rgb = v.sampler.adjoint(&prefix.input.adjoint(&d));
                let descent: Vec<f32> = d_rgb.iter().map(|g| -g).collect();
                Ok(basis.planes_adjoint(&fourier::to_rgb_adjoint(&v.rgb, &descent, hw)))
            })
            .collect::<ExplainResult<_>>()?;
        let flat: Vec<f32> = grads.into_iter().flatten().collect();
        optimizer.step(&mut params, &[Some(Tensor::new(vec![flat.len()], flat)?)])?;
        ctl.step(steps_before + step + 1, steps_total)?;
    }
    // the untransformed images and their activations
    let p = params[0].tensor.data();
    let whole = Sampler::new(&View::whole(s, s), [s, s], out, 0.5, false);
    let rgbs: Vec<Vec<f32>> = (0..items.len())
        .into_par_iter()
        .map(|i| fourier::to_rgb(&basis.planes(&p[i * n..(i + 1) * n]), hw))
        .collect();
    let xs = rgbs
        .iter()
        .map(|rgb| prefix.input.tensor(&whole.apply(rgb)))
        .collect::<ExplainResult<Vec<_>>>()?;
    let x = stack(xs.iter())?;
    let pass = graph.forward(
        std::slice::from_ref(&x),
        &ForwardOptions {
            keep: Keep::Outputs,
            ..ForwardOptions::eval()
        },
    )?;
    let layer_id = fast_id(graph, prefix, prefix.layer_id)?;
    let a = pass
        .get(layer_id)
        .ok_or_else(|| ExplainError::invalid("the forward pass lost the layer"))?;
    let (c, plane) = channel_dims(a)?;
    Ok(items
        .iter()
        .zip(&rgbs)
        .enumerate()
        .map(|(i, (item, rgb))| {
            let values =
                &a.data()[(i * c + item.channel) * plane..(i * c + item.channel + 1) * plane];
            UnitImage {
                channel: item.channel,
                variant: item.variant,
                image: planes_to_image(rgb, s, s),
                activation: (values.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64)
                    as f32,
            }
        })
        .collect())
}

/// The id in the (possibly fused) graph that runs of the prefix's value `id`.
fn fast_id(graph: &Graph, prefix: &Prefix, id: ValueId) -> ExplainResult<ValueId> {
    let name = &prefix.graph.value(id).name;
    graph
        .value_id(name)
        .ok_or_else(|| ExplainError::invalid(format!("internal: '{name}' was fused away")))
}

/// `(channels, positions per channel)` of a layer value `[n, c, h, w]` or `[n, c]`.
fn channel_dims(a: &Tensor) -> ExplainResult<(usize, usize)> {
    match a.shape() {
        [_, c, h, w] => Ok((*c, h * w)),
        [_, c] => Ok((*c, 1)),
        s => Err(ExplainError::invalid(format!("the layer gave shape {s:?}"))),
    }
}

/// dJ/dA for the batch: `1/hw` on each image's own channel, minus the diversity gradient of
/// each unit's images.
fn seeds(a: &Tensor, items: &[Item], weight: f32) -> ExplainResult<Tensor> {
    let (c, plane) = channel_dims(a)?;
    let mut seed = Tensor::try_zeros(a.shape())?;
    let per = 1.0 / plane as f32;
    for (i, item) in items.iter().enumerate() {
        let at = (i * c + item.channel) * plane;
        seed.data_mut()[at..at + plane]
            .iter_mut()
            .for_each(|g| *g = per);
    }
    if weight > 0.0 {
        let mut start = 0;
        while start < items.len() {
            let end = start
                + items[start..]
                    .iter()
                    .take_while(|it| it.channel == items[start].channel)
                    .count();
            if end - start > 1 {
                let acts: Vec<&[f32]> = (start..end)
                    .map(|i| &a.data()[i * c * plane..(i + 1) * c * plane])
                    .collect();
                let (_, grads) = diversity(&acts, c, plane);
                for (k, g) in grads.iter().enumerate() {
                    let at = (start + k) * c * plane;
                    for (s, d) in seed.data_mut()[at..at + c * plane].iter_mut().zip(g) {
                        *s -= weight * d;
                    }
                }
            }
            start = end;
        }
    }
    Ok(seed)
}

/// One forward pass keeping the objective's value and one backward pass from
/// `seed_of(value)` to the input: dJ/dx `[n, ..]`.
fn forward_backward(
    graph: &Graph,
    prefix: &Prefix,
    x: &Tensor,
    seed_of: impl Fn(&Tensor) -> ExplainResult<Tensor>,
) -> ExplainResult<Tensor> {
    let layer = fast_id(graph, prefix, prefix.objective_id)?;
    let input = graph.inputs()[0];
    let pass = graph.forward(
        std::slice::from_ref(x),
        &ForwardOptions::eval_for_backward_keeping(vec![layer]),
    )?;
    let a = pass
        .get(layer)
        .ok_or_else(|| ExplainError::invalid("the forward pass lost the layer"))?;
    let seed = seed_of(a)?;
    let req = BackwardRequest {
        seeds: vec![(layer, seed)],
        param_grads: false,
        value_grads: vec![input],
    };
    let mut grads = graph.backward(&pass, &req)?;
    grads
        .values
        .remove(&input)
        .ok_or_else(|| ExplainError::invalid("no gradient reached the input"))
}

/// Batch-1 tensors `[1, ..]` stacked into `[n, ..]`.
pub(super) fn stack<'a>(items: impl Iterator<Item = &'a Tensor>) -> ExplainResult<Tensor> {
    let items: Vec<&Tensor> = items.collect();
    let first = items
        .first()
        .ok_or_else(|| ExplainError::invalid("nothing to stack"))?;
    let mut shape = first.shape().to_vec();
    shape[0] = items.len();
    let mut data = Vec::with_capacity(first.numel() * items.len());
    for t in &items {
        data.extend_from_slice(t.data());
    }
    Ok(Tensor::new(shape, data)?)
}
