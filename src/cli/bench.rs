//! `convscope bench --model M [--runs N] [--threads T] [--batch B] [--train-batch B] [--json]`:
//! median wall-clock times of a forward pass, of a forward pass plus the backward pass to the
//! input (the cost of one saliency map: seed ones at every output, no parameter gradients),
//! and optionally of one training step (forward in training mode, loss, backward with
//! parameter gradients, Adam update). The forward and forward+backward measurements run on the
//! model's inference rewrite (`Graph::inference`), which is what predict and explain run.

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::resolve;
use super::{CliError, CliResult};
use crate::engine::graph::ValueKind;
use crate::engine::loss::{bce_with_logits, softmax_cross_entropy};
use crate::engine::ops::{ForwardCtx, Mode, OpOutput};
use crate::engine::optim::{Optimizer, OptimizerConfig};
use crate::engine::{BackwardRequest, ForwardOptions, Graph, Tensor, init};

/// Untimed runs before measuring (page faults, caches, thread pool start-up).
const WARMUP: usize = 3;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// An .onnx file, a checkpoint directory or a bundled model name (smile-cnn, efficientnet-lite0).
    #[arg(long)]
    pub model: String,
    /// Seed for a bundled model's weights and for the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Timed runs per measurement (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Worker threads (default: RAYON_NUM_THREADS, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Batch size of the forward and forward+backward measurements.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Also time one training step (Adam) at this batch size.
    #[arg(long)]
    pub train_batch: Option<usize>,
    /// One JSON object on one line.
    #[arg(long)]
    pub json: bool,
    /// Also print the median time per op kind of a training-mode forward and of its backward
    /// (parameter gradients, no input gradient) at the training batch (default: --batch), and of
    /// the inference graph's forward and backward to the input at --batch.
    #[arg(long)]
    pub profile: bool,
}

/// Median of the samples (mean of the middle two for even counts); 0 for none.
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

/// Runs `f` `WARMUP + runs` times and returns the median of the timed runs in milliseconds.
fn time_ms(runs: usize, mut f: impl FnMut(usize) -> CliResult<()>) -> CliResult<f64> {
    for i in 0..WARMUP {
        f(i)?;
    }
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let start = Instant::now();
        f(WARMUP + i)?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut samples))
}

/// Uniform [0, 1) inputs of the graph's declared shapes with batch `batch`.
fn random_inputs(graph: &Graph, batch: usize, seed: u64) -> CliResult<Vec<Tensor>> {
    let mut rng = init::rng(seed);
    graph
        .inputs()
        .iter()
        .map(|&id| {
            let mut shape = graph.value(id).shape.clone();
            shape[0] = batch;
            Ok(init::uniform(&shape, 0.0, 1.0, &mut rng)?)
        })
        .collect()
}

fn forward_ms(graph: &Graph, inputs: &[Tensor], runs: usize) -> CliResult<f64> {
    let opts = ForwardOptions::eval();
    time_ms(runs, |_| {
        graph.forward(inputs, &opts)?;
        Ok(())
    })
}

fn forward_backward_ms(graph: &Graph, inputs: &[Tensor], runs: usize) -> CliResult<f64> {
    let opts = ForwardOptions::eval_for_backward_keeping(Vec::new());
    time_ms(runs, |_| {
        let pass = graph.forward(inputs, &opts)?;
        let mut seeds = Vec::new();
        for &out in graph.outputs() {
            let y = graph.lookup(&pass, out).ok_or_else(|| {
                CliError(format!(
                    "output '{}' was not computed",
                    graph.value(out).name
                ))
            })?;
            seeds.push((out, Tensor::full(y.shape(), 1.0)));
        }
        let request = BackwardRequest {
            seeds,
            param_grads: false,
            value_grads: graph.inputs().to_vec(),
        };
        graph.backward(&pass, &request)?;
        Ok(())
    })
}

/// The loss of random targets for the model's first output: binary cross-entropy for one logit
/// per example, softmax cross-entropy for `[n, classes]`.
fn random_target_loss(logits: &Tensor, batch: usize, step: u64) -> CliResult<(f32, Tensor)> {
    let mut rng = init::rng(step);
    if logits.numel() == batch {
        let targets: Vec<f32> = init::uniform(&[batch], 0.0, 1.0, &mut rng)?
            .data()
            .iter()
            .map(|&u| if u < 0.5 { 0.0 } else { 1.0 })
            .collect();
        return Ok(bce_with_logits(logits, &targets)?);
    }
    match logits.shape() {
        &[n, k] if n == batch => {
            let targets: Vec<usize> = init::uniform(&[n], 0.0, k as f32, &mut rng)?
                .data()
                .iter()
                .map(|&u| (u as usize).min(k - 1))
                .collect();
            Ok(softmax_cross_entropy(logits, &targets)?)
        }
        s => Err(CliError(format!(
            "cannot time a training step: the output has shape {s:?}, expected [{batch}] logits or [{batch}, classes]"
        ))),
    }
}

fn train_step_ms(graph: &Graph, batch: usize, runs: usize, seed: u64) -> CliResult<f64> {
    let mut graph = graph.clone();
    let inputs = random_inputs(&graph, batch, seed)?;
    let out = *graph
        .outputs()
        .first()
        .ok_or_else(|| CliError("cannot time a training step: the model has no output".into()))?;
    let mut optimizer = Optimizer::new(OptimizerConfig::adam(1e-3))?;
    time_ms(runs, |step| {
        let step = seed.wrapping_add(step as u64);
        let mut pass = graph.forward(&inputs, &ForwardOptions::train(step))?;
        let logits = graph
            .lookup(&pass, out)
            .ok_or_else(|| CliError("the training pass lost its output".into()))?;
        let (_, d_logits) = random_target_loss(logits, batch, step)?;
        let request = BackwardRequest {
            seeds: vec![(out, d_logits)],
            param_grads: true,
            value_grads: vec![],
        };
        let grads = graph.backward(&pass, &request)?;
        optimizer.step(graph.params_mut(), &grads.params)?;
        graph.apply_running_stats(&mut pass);
        Ok(())
    })
}

/// Milliseconds spent per op kind: (forward, backward), summed over the graph's nodes.
type OpTimes = BTreeMap<&'static str, (f64, f64)>;

/// Median per-op-kind times of `runs` node-by-node passes: each node's forward in `mode`, then
/// each node's backward (in reverse order) with a ones gradient at its output. In training mode
/// backward computes the gradients a training step needs (trainable parameters and values
/// computed from them); in evaluation mode those of a saliency map (values computed from the
/// input).
fn profile_ops(
    graph: &Graph,
    batch: usize,
    runs: usize,
    seed: u64,
    mode: Mode,
) -> CliResult<OpTimes> {
    let train = mode == Mode::Train;
    let inputs = random_inputs(graph, batch, seed)?;
    let mut samples: BTreeMap<&'static str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for run in 0..WARMUP + runs {
        let mut fwd: OpTimes = BTreeMap::new();
        let mut values: Vec<Option<Tensor>> = vec![None; graph.values().len()];
        // value depends on a parameter (training) or on the input (evaluation)
        let mut grad_flows = vec![false; graph.values().len()];
        for (&id, t) in graph.inputs().iter().zip(&inputs) {
            values[id] = Some(t.clone());
            grad_flows[id] = !train;
        }
        let mut outs: Vec<OpOutput> = Vec::with_capacity(graph.nodes().len());
        for (n, node) in graph.nodes().iter().enumerate() {
            let ins = node_inputs(graph, &values, &node.inputs)?;
            let ctx = ForwardCtx {
                mode,
                seed: seed ^ n as u64,
            };
            let start = Instant::now();
            let out = node
                .op
                .forward(&ins, ctx)
                .map_err(|e| CliError(e.to_string()))?;
            fwd.entry(node.op.kind_name()).or_default().0 += start.elapsed().as_secs_f64() * 1e3;
            grad_flows[node.output] = node.inputs.iter().any(|&v| {
                grad_flows[v]
                    || (train
                        && matches!(graph.value(v).kind, ValueKind::Param(p) if graph.params()[p].trainable))
            });
            values[node.output] = Some(out.y.clone());
            outs.push(out);
        }
        for (node, out) in graph.nodes().iter().zip(&outs).rev() {
            let ins = node_inputs(graph, &values, &node.inputs)?;
            let needs: Vec<bool> = node
                .inputs
                .iter()
                .map(|&v| match graph.value(v).kind {
                    ValueKind::Param(p) => train && graph.params()[p].trainable,
                    _ => grad_flows[v],
                })
                .collect();
            if !train && !needs.iter().any(|&b| b) {
                continue; // nothing upstream needs a gradient (the node is skipped by backward)
            }
            let d_y = Tensor::full(out.y.shape(), 1.0);
            let start = Instant::now();
            node.op
                .backward(&ins, &out.y, &out.saved, &d_y, &needs, mode)
                .map_err(|e| CliError(e.to_string()))?;
            fwd.entry(node.op.kind_name()).or_default().1 += start.elapsed().as_secs_f64() * 1e3;
        }
        if run >= WARMUP {
            for (kind, (f, b)) in fwd {
                let e = samples.entry(kind).or_default();
                e.0.push(f);
                e.1.push(b);
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|(k, (mut f, mut b))| (k, (median(&mut f), median(&mut b))))
        .collect())
}

/// The tensors of `ids`: parameters from the graph, the rest from `values`.
fn node_inputs<'a>(
    graph: &'a Graph,
    values: &'a [Option<Tensor>],
    ids: &[usize],
) -> CliResult<Vec<&'a Tensor>> {
    ids.iter()
        .map(|&v| match graph.value(v).kind {
            ValueKind::Param(p) => Ok(&graph.params()[p].tensor),
            _ => values[v].as_ref().ok_or_else(|| {
                CliError(format!("value '{}' was not computed", graph.value(v).name))
            }),
        })
        .collect()
}

fn print_op_times(times: &OpTimes) {
    println!("{:<20} {:>10} {:>10}", "op", "forward", "backward");
    for (kind, (f, bw)) in times {
        println!("{kind:<20} {f:>10.3} {bw:>10.3}");
    }
}

fn positive(name: &str, v: usize) -> CliResult<()> {
    if v == 0 {
        return Err(CliError(format!("--{name} must be at least 1")));
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> CliResult<()> {
    positive("runs", args.runs)?;
    positive("batch", args.batch)?;
    if let Some(b) = args.train_batch {
        positive("train-batch", b)?;
    }
    if let Some(t) = args.threads {
        positive("threads", t)?;
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| CliError(format!("cannot start {t} worker threads: {e}")))?;
    }
    let source = resolve::resolve(&args.model, args.seed)?;
    let model = resolve::load(&source)?;
    let graph = &model.graph;
    let fast = graph.inference(&[])?;
    let inputs = random_inputs(graph, args.batch, args.seed)?;
    let fwd = forward_ms(&fast, &inputs, args.runs)?;
    let fwd_bwd = forward_backward_ms(&fast, &inputs, args.runs)?;
    let train = match args.train_batch {
        Some(b) => Some((b, train_step_ms(graph, b, args.runs, args.seed)?)),
        None => None,
    };
    let profile = if args.profile {
        let b = args.train_batch.unwrap_or(args.batch);
        let train = profile_ops(graph, b, args.runs, args.seed, Mode::Train)?;
        let eval = profile_ops(&fast, args.batch, args.runs, args.seed, Mode::Eval)?;
        Some((b, train, eval))
    } else {
        None
    };
    let threads = rayon::current_num_threads();
    let name = resolve::display_name(&source);
    if args.json {
        let mut line = json!({
            "model": name,
            "threads": threads,
            "simd": crate::engine::simd::level().name(),
            "runs": args.runs,
            "batch": args.batch,
            "forward_ms": fwd,
            "forward_backward_ms": fwd_bwd,
        });
        if let (Some((b, ms)), Some(obj)) = (train, line.as_object_mut()) {
            obj.insert("train_batch".into(), json!(b));
            obj.insert("train_step_ms".into(), json!(ms));
            obj.insert("train_images_per_s".into(), json!(b as f64 / (ms / 1e3)));
        }
        if let (Some((b, times, eval)), Some(obj)) = (&profile, line.as_object_mut()) {
            obj.insert("profile_batch".into(), json!(b));
            let per_op = |times: &OpTimes| -> serde_json::Value {
                times
                    .iter()
                    .map(|(k, (f, bw))| {
                        (k.to_string(), json!({"forward_ms": f, "backward_ms": bw}))
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            obj.insert("profile".into(), per_op(times));
            obj.insert("profile_inference".into(), per_op(eval));
        }
        println!("{line}");
    } else {
        println!(
            "{name}: {threads} threads, {} kernels, batch {}, median of {} runs: forward {fwd:.3} ms, forward+backward to input {fwd_bwd:.3} ms",
            crate::engine::simd::level(),
            args.batch,
            args.runs
        );
        if let Some((b, ms)) = train {
            println!(
                "training step (batch {b}, Adam): {ms:.3} ms, {:.1} images/s",
                b as f64 / (ms / 1e3)
            );
        }
        if let Some((b, times, eval)) = &profile {
            println!("per op kind (batch {b}, training mode, medians in ms):");
            print_op_times(times);
            println!(
                "per op kind (batch {}, inference graph, backward to the input, medians in ms):",
                args.batch
            );
            print_op_times(eval);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn random_targets_pick_the_loss_by_output_shape() {
        let (_, d) = random_target_loss(&Tensor::zeros(&[4, 1]), 4, 0).unwrap();
        assert_eq!(d.shape(), &[4, 1]);
        // BCE at logit 0: gradient ±0.5/n
        assert!(d.data().iter().all(|v| (v.abs() - 0.125).abs() < 1e-7));
        let (loss, d) = random_target_loss(&Tensor::zeros(&[2, 10]), 2, 0).unwrap();
        assert_eq!(d.shape(), &[2, 10]);
        assert!((loss - 10f32.ln()).abs() < 1e-6);
        assert!(random_target_loss(&Tensor::zeros(&[2, 3, 4]), 2, 0).is_err());
    }
}
