//! The loop itself: [`fit`] trains a model on [`TrainData`] and reports through a callback;
//! [`evaluate`] runs a model over a data set in evaluation mode and computes the metrics.

use std::time::Instant;

use super::config::TrainConfig;
use super::data::TrainData;
use super::events::{Control, EpochStats, StopReason, TrainEvent, TrainSummary};
use super::metrics::{ClassMetrics, evaluate_predictions};
use super::state;
use super::{TrainError, TrainResult};
use crate::data::{Augment, Dataset, Loader, LoaderOptions, Skipped};
use crate::engine::loss::{bce_with_logits, softmax_cross_entropy};
use crate::engine::optim::Optimizer;
use crate::engine::{BackwardRequest, ForwardOptions, Graph, Keep, Op, Tensor, ValueId};
use crate::models::Model;

/// What the model's output is and which loss fits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// One logit per example `[n, 1]`: BCE-with-logits, classes (negative, positive).
    Binary,
    /// `k` logits per example `[n, k]`: softmax cross-entropy.
    Softmax(usize),
}

impl Head {
    /// The head of `graph`'s first output, checked against the data's class count.
    pub fn of(graph: &Graph, n_classes: usize) -> TrainResult<Head> {
        let &out = graph
            .outputs()
            .first()
            .ok_or_else(|| TrainError::invalid("the model has no output"))?;
        let shape = &graph.value(out).shape;
        let head = match shape.as_slice() {
            [_, 1] => Head::Binary,
            [_, k] if *k >= 2 => Head::Softmax(*k),
            s => {
                return Err(TrainError::invalid(format!(
                    "the model's output '{}' has shape {s:?}; training needs logits [n, 1] or [n, classes]",
                    graph.value(out).name
                )));
            }
        };
        let k = head.classes();
        if k != n_classes {
            let what = match head {
                Head::Binary => "a single logit (2 classes)".to_string(),
                Head::Softmax(k) => format!("{k} outputs"),
            };
            return Err(TrainError::invalid(format!(
                "the model has {what} but the data has {n_classes} classes"
            )));
        }
        Ok(head)
    }

    pub fn classes(self) -> usize {
        match self {
            Head::Binary => 2,
            Head::Softmax(k) => k,
        }
    }

    /// (mean loss, d_logits, correct predictions) of a batch of logits.
    fn loss(self, logits: &Tensor, labels: &[usize]) -> TrainResult<(f32, Tensor, usize)> {
        let (loss, d) = match self {
            Head::Binary => {
                let targets: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
                bce_with_logits(logits, &targets)
            }
            Head::Softmax(_) => softmax_cross_entropy(logits, labels),
        }
        .map_err(TrainError::failed)?;
        let probs = self.probabilities(logits);
        let correct = count_correct(&probs, labels, self.classes());
        Ok((loss, d, correct))
    }

    /// Class probabilities `[n, k]` flat (sigmoid → (1 − p, p) for a single logit), by the
    /// same functions as `convscope predict` ([`crate::models::scores`]).
    fn probabilities(self, logits: &Tensor) -> Vec<f32> {
        use crate::models::scores;
        match self {
            Head::Binary => logits
                .data()
                .iter()
                .flat_map(|&z| scores::probabilities(&[z]))
                .collect(),
            // logits, never a distribution already: always softmaxed
            Head::Softmax(k) => logits
                .data()
                .chunks_exact(k)
                .flat_map(scores::softmax)
                .collect(),
        }
    }
}

fn count_correct(probs: &[f32], labels: &[usize], k: usize) -> usize {
    probs
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, l)| {
            let arg = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            arg == **l
        })
        .count()
}

fn output_id(graph: &Graph) -> TrainResult<ValueId> {
    graph
        .outputs()
        .first()
        .copied()
        .ok_or_else(|| TrainError::invalid("the model has no output"))
}

/// Loss and metrics of `model` over `dataset` in evaluation mode (sequential batches).
pub fn evaluate(
    graph: &Graph,
    dataset: &Dataset,
    batch_size: usize,
    head: Head,
) -> TrainResult<(f32, ClassMetrics, Vec<Skipped>)> {
    let loader = Loader::new(
        dataset.clone(),
        LoaderOptions {
            batch_size: batch_size.max(1),
            shuffle: false,
            ..LoaderOptions::default()
        },
    )
    .map_err(TrainError::failed)?;
    let out = output_id(graph)?;
    let k = head.classes();
    let (mut labels, mut probs, mut indices) = (Vec::new(), Vec::new(), Vec::new());
    let mut loss_sum = 0.0f64;
    for batch in loader.epoch(0) {
        let batch = batch.map_err(TrainError::failed)?;
        let pass = graph
            .forward(std::slice::from_ref(&batch.x), &ForwardOptions::eval())
            .map_err(TrainError::failed)?;
        let logits = graph
            .lookup(&pass, out)
            .ok_or_else(|| TrainError::failed("the forward pass lost the model's output"))?;
        let (loss, _, _) = head.loss(logits, &batch.labels)?;
        loss_sum += loss as f64 * batch.labels.len() as f64;
        probs.extend(head.probabilities(logits));
        labels.extend_from_slice(&batch.labels);
        indices.extend_from_slice(&batch.indices);
    }
    let n = labels.len();
    let mean_loss = if n == 0 {
        0.0
    } else {
        (loss_sum / n as f64) as f32
    };
    let metrics = evaluate_predictions(&labels, &probs, k, &indices);
    Ok((mean_loss, metrics, loader.skipped()))
}

/// True when any parameter (trainable or buffer) holds NaN or infinity.
fn params_non_finite(graph: &Graph) -> Option<String> {
    graph
        .params()
        .iter()
        .find(|p| p.tensor.has_non_finite())
        .map(|p| p.name.clone())
}

/// A copy of the first convolution's weights `[c_out, c_in, kh, kw]`.
pub fn first_filters(graph: &Graph) -> Option<Tensor> {
    let node = graph
        .nodes()
        .iter()
        .find(|n| matches!(n.op, Op::Conv2d(_)))?;
    let &w = node.inputs.get(1)?;
    let pass_free = match graph.value(w).kind {
        crate::engine::graph::ValueKind::Param(p) => graph.params().get(p),
        _ => None,
    };
    pass_free.map(|p| p.tensor.clone())
}

/// The requested values of the probe image in evaluation mode.
fn probe_activations(graph: &Graph, cfg: &TrainConfig) -> Vec<(String, Tensor)> {
    let Some(probe) = &cfg.probe else {
        return Vec::new();
    };
    let ids: Vec<(String, ValueId)> = cfg
        .probe_layers
        .iter()
        .filter_map(|name| graph.value_id(name).map(|id| (name.clone(), id)))
        .collect();
    let opts = ForwardOptions {
        keep: Keep::Values(ids.iter().map(|(_, id)| *id).collect()),
        ..ForwardOptions::eval()
    };
    let Ok(pass) = graph.forward(std::slice::from_ref(probe), &opts) else {
        return Vec::new();
    };
    ids.into_iter()
        .filter_map(|(name, id)| graph.lookup(&pass, id).map(|t| (name, t.clone())))
        .collect()
}

/// Mutable state of one run.
struct Run<'a> {
    model: &'a mut Model,
    cfg: &'a TrainConfig,
    head: Head,
    optimizer: Optimizer,
    emit: &'a mut dyn FnMut(TrainEvent),
    step: u64,
    last_snapshot: Option<Instant>,
    /// Epochs done at the last checkpoint written.
    last_checkpoint: Option<usize>,
    best_val: Option<(f32, usize)>,
    bad_epochs: usize,
}

impl Run<'_> {
    fn snapshot(&mut self, epoch: usize, batch: usize, force: bool) {
        let due = self
            .last_snapshot
            .is_none_or(|t| t.elapsed().as_millis() >= u128::from(self.cfg.snapshot_interval_ms));
        if !(force || due) {
            return;
        }
        self.last_snapshot = Some(Instant::now());
        let filters = first_filters(&self.model.graph);
        let activations = probe_activations(&self.model.graph, self.cfg);
        let weights = self
            .cfg
            .snapshot_weights
            .then(|| crate::models::description::weights_of(&self.model.graph));
        (self.emit)(TrainEvent::Snapshot {
            epoch,
            batch,
            filters,
            activations,
            weights,
        });
    }

    /// Writes the checkpoint (never from non-finite parameters).
    fn checkpoint(&mut self, epochs_done: usize) -> TrainResult<()> {
        let Some(dir) = self.cfg.checkpoint_dir.clone() else {
            return Ok(());
        };
        if let Some(name) = params_non_finite(&self.model.graph) {
            return Err(self.diverged(format!("parameter '{name}' is NaN or infinite")));
        }
        let st = state::TrainState {
            epochs_done,
            best_val_loss: self.best_val.map(|b| b.0),
            best_epoch: self.best_val.map(|b| b.1),
            bad_epochs: self.bad_epochs,
            config: self.cfg.clone(),
            weights_digest: String::new(),
        };
        state::save(&dir, self.model, st).map_err(TrainError::failed)?;
        self.last_checkpoint = Some(epochs_done);
        (self.emit)(TrainEvent::Checkpoint {
            path: dir,
            epochs_done,
        });
        Ok(())
    }

    fn diverged(&self, what: String) -> TrainError {
        let kept = match (&self.cfg.checkpoint_dir, self.last_checkpoint) {
            (Some(dir), Some(e)) => format!(
                "; the last good checkpoint {} (after {e} complete epochs) is kept",
                dir.display()
            ),
            (Some(dir), None) => format!("; no checkpoint was written to {}", dir.display()),
            _ => String::new(),
        };
        TrainError::Diverged(format!(
            "training diverged at step {}: {what} (try a smaller learning rate){kept}",
            self.step + 1
        ))
    }

    /// One optimisation step; returns (loss, correct).
    fn train_batch(&mut self, x: &Tensor, labels: &[usize]) -> TrainResult<(f32, usize)> {
        let graph = &mut self.model.graph;
        let out = output_id(graph)?;
        let seed = self.cfg.seed ^ self.step.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let mut pass = graph
            .forward(std::slice::from_ref(x), &ForwardOptions::train(seed))
            .map_err(TrainError::failed)?;
        let logits = graph
            .lookup(&pass, out)
            .ok_or_else(|| TrainError::failed("the forward pass lost the model's output"))?;
        let (loss, mut d_logits, correct) = self.head.loss(logits, labels)?;
        if self.cfg.inject_nan_at_step == Some(self.step) {
            d_logits.data_mut()[0] = f32::NAN;
        }
        if !loss.is_finite() {
            return Err(self.diverged(format!("the loss is {loss} (NaN or infinite)")));
        }
        if loss > self.cfg.divergence_loss {
            return Err(self.diverged(format!(
                "the loss {loss:.3e} exceeds {:.0e}",
                self.cfg.divergence_loss
            )));
        }
        let request = BackwardRequest {
            seeds: vec![(out, d_logits)],
            param_grads: true,
            value_grads: vec![],
        };
        let graph = &mut self.model.graph;
        let grads = graph
            .backward(&pass, &request)
            .map_err(TrainError::failed)?;
        if let Some(p) = grads
            .params
            .iter()
            .position(|g| g.as_ref().is_some_and(Tensor::has_non_finite))
        {
            let name = graph.params()[p].name.clone();
            return Err(self.diverged(format!("the gradient of '{name}' is NaN or infinite")));
        }
        self.optimizer
            .step(graph.params_mut(), &grads.params)
            .map_err(TrainError::failed)?;
        graph.apply_running_stats(&mut pass);
        if let Some(name) = params_non_finite(graph) {
            return Err(self.diverged(format!("parameter '{name}' became NaN or infinite")));
        }
        self.step += 1;
        Ok((loss, correct))
    }

    /// Early stopping bookkeeping; true when training should stop.
    fn should_stop_early(&mut self, epoch: usize, val_loss: f32) -> bool {
        let improved = self
            .best_val
            .is_none_or(|(best, _)| val_loss < best - self.cfg.min_delta);
        if improved {
            self.best_val = Some((val_loss, epoch));
            self.bad_epochs = 0;
            return false;
        }
        self.bad_epochs += 1;
        self.cfg.patience.is_some_and(|p| self.bad_epochs >= p)
    }
}

/// Trains `model` in place. Events go to `emit` as they happen; `control` is checked between
/// batches. Returns the summary (also when stopped) or the error that ended the run.
pub fn fit(
    model: &mut Model,
    data: &TrainData,
    cfg: &TrainConfig,
    control: &Control,
    emit: &mut dyn FnMut(TrainEvent),
) -> TrainResult<TrainSummary> {
    cfg.validate()?;
    let head = Head::of(&model.graph, data.classes.len())?;
    let loader = Loader::new(
        data.train.clone(),
        LoaderOptions {
            batch_size: cfg.batch_size,
            shuffle: true,
            seed: cfg.seed,
            augment: Augment {
                hflip: cfg.hflip,
                ..Augment::default()
            },
            cache_bytes: cfg.cache_bytes,
            ..LoaderOptions::default()
        },
    )
    .map_err(|e| TrainError::invalid(format!("training set: {e}")))?;
    let batches = loader.batches_per_epoch();
    let optimizer = Optimizer::new(cfg.optimizer.clone()).map_err(TrainError::failed)?;
    emit(TrainEvent::Started {
        epochs: cfg.epochs,
        batches_per_epoch: batches,
        train_len: data.train.len(),
        val_len: data.val.as_ref().map_or(0, Dataset::len),
        test_len: data.test.as_ref().map_or(0, Dataset::len),
    });
    let mut run = Run {
        model,
        cfg,
        head,
        optimizer,
        emit,
        step: (cfg.start_epoch * batches) as u64,
        last_snapshot: None,
        last_checkpoint: None,
        best_val: None,
        bad_epochs: 0,
    };
    let mut history = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut stop = StopReason::Completed;
    'epochs: for epoch in (cfg.start_epoch + 1)..=(cfg.start_epoch + cfg.epochs) {
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (b, batch) in loader.epoch(epoch as u64).enumerate() {
            if control.wait_if_paused() {
                stop = StopReason::Stopped;
                break 'epochs;
            }
            let batch = batch.map_err(TrainError::failed)?;
            let n = batch.labels.len();
            let (loss, right) = run.train_batch(&batch.x, &batch.labels)?;
            loss_sum += loss as f64 * n as f64;
            correct += right;
            seen += n;
            (run.emit)(TrainEvent::BatchDone {
                epoch,
                batch: b + 1,
                batches,
                loss,
                acc: right as f64 / n.max(1) as f64,
                lr: run.optimizer.lr(),
                images_per_s: seen as f64 / start.elapsed().as_secs_f64().max(1e-9),
            });
            run.snapshot(epoch, b + 1, false);
            if cfg
                .checkpoint_every_batches
                .is_some_and(|k| (b + 1) % k == 0)
            {
                run.checkpoint(epoch - 1)?;
            }
        }
        merge_skipped(&mut skipped, loader.skipped());
        let (val_loss, val_acc) = match &data.val {
            Some(val) => {
                let (l, m, s) = evaluate(&run.model.graph, val, cfg.batch_size, head)?;
                merge_skipped(&mut skipped, s);
                (Some(l), Some(m.accuracy))
            }
            None => (None, None),
        };
        let stats = EpochStats {
            epoch,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_acc,
            seconds: start.elapsed().as_secs_f64(),
        };
        history.push(stats.clone());
        (run.emit)(TrainEvent::EpochDone(stats));
        run.snapshot(epoch, batches, true);
        let early = val_loss.is_some_and(|l| run.should_stop_early(epoch, l));
        run.checkpoint(epoch)?;
        if early {
            let best_epoch = run.best_val.map_or(epoch, |b| b.1);
            stop = StopReason::EarlyStopped { best_epoch };
            break;
        }
    }
    let (test_loss, test) = match (&data.test, &stop) {
        (Some(test), StopReason::Completed | StopReason::EarlyStopped { .. }) => {
            let (l, m, s) = evaluate(&run.model.graph, test, cfg.batch_size, head)?;
            merge_skipped(&mut skipped, s);
            (Some(l), Some(m))
        }
        _ => (None, None),
    };
    Ok(TrainSummary {
        history,
        stop,
        best_val_loss: run.best_val.map(|b| b.0),
        test,
        test_loss,
        skipped,
    })
}

fn merge_skipped(into: &mut Vec<Skipped>, more: Vec<Skipped>) {
    for s in more {
        if !into.iter().any(|k| k.name == s.name) {
            into.push(s);
        }
    }
}
