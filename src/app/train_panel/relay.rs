//! The relay thread between the trainer and the window: it prepares the data, starts
//! `train::spawn`, and turns its events into pictures (filter tiles, the probe's Grad-CAM from
//! each snapshot's weights) off the UI thread; plus the benchmark's per-epoch log.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbaImage;

use super::settings::{TrainSettings, arch_spec};
use crate::app::jobs::Reporter;
use crate::app::photo::unit_tensor_to_rgba;
use crate::engine::Tensor;
use crate::explain::cam::GradCamVariant;
use crate::explain::{Explainer, Target};
use crate::models::{Model, Weights};
use crate::render::colormap::Colormap;
use crate::render::filters::filter_tiles;
use crate::render::heatmap::overlay;
use crate::train::data::TrainData;
use crate::train::events::{Control, EpochStats, TrainEvent};
use crate::train::{self, TrainConfig};

/// One moment of the run as pictures.
pub(super) struct SnapshotView {
    pub(super) epoch: usize,
    pub(super) batch: usize,
    pub(super) filters: Option<RgbaImage>,
    pub(super) cam: Option<RgbaImage>,
}

pub(super) enum RunMsg {
    Prepared {
        classes: Vec<String>,
        data: Arc<TrainData>,
        probe: Option<RgbaImage>,
    },
    Event(TrainEvent),
    Snapshot(SnapshotView),
    Finished(Result<Box<Model>, String>),
    Failed(String),
}

/// The first test (else validation, else training) image: the model's input `[1, c, h, w]`
/// and its picture.
fn probe_of(data: &TrainData) -> Option<(Tensor, RgbaImage)> {
    let set = data
        .test
        .as_ref()
        .or(data.val.as_ref())
        .unwrap_or(&data.train);
    let raw = set.load_raw(0).ok()?;
    let img = unit_tensor_to_rgba(&raw)?;
    let (x, _) = set.load(0).ok()?;
    let mut shape = vec![1];
    shape.extend_from_slice(x.shape());
    Some((x.reshaped(shape).ok()?, img))
}

/// The probe's Grad-CAM with the snapshot's weights, over the probe picture.
fn probe_cam(
    template: &mut Model,
    weights: &Weights,
    probe: &Tensor,
    picture: &RgbaImage,
) -> Option<RgbaImage> {
    for p in template.graph.params_mut() {
        if let Some(w) = weights.get(&p.name) {
            p.tensor = w.clone();
        }
    }
    let ex = Explainer::new(&template.graph).ok()?;
    let cam = ex
        .grad_cam(probe, Target::Top, None, GradCamVariant::GradCam)
        .ok()?;
    Some(overlay(picture, &cam.map, Colormap::Jet, 0.5))
}

/// The relay: prepares the data, starts training, turns events into pictures, and returns the
/// model at the end.
pub(super) fn relay(
    settings: TrainSettings,
    out: &Reporter<RunMsg>,
    control_slot: Arc<std::sync::Mutex<Option<Control>>>,
) {
    let fail = |e: String| out.send(RunMsg::Failed(e));
    let spec = match settings.data_spec() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // The same model and data as `convscope train` builds (the smile CNN's head sized to the
    // data's classes).
    let arch = match arch_spec(&settings) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let (mut model, data) = match train::arch::model_and_data(arch, settings.seed, &spec) {
        Ok(md) => md,
        Err(e) => return fail(e.to_string()),
    };
    model.description.labels = data.classes.clone();
    let probe = probe_of(&data);
    let shared = Arc::new(data.clone());
    out.send(RunMsg::Prepared {
        classes: data.classes.clone(),
        data: shared,
        probe: probe.as_ref().map(|p| p.1.clone()),
    });
    let cfg = TrainConfig {
        optimizer: settings.optimizer(),
        batch_size: settings.batch,
        epochs: settings.epochs,
        seed: settings.seed,
        patience: (settings.patience > 0).then_some(settings.patience),
        hflip: settings.hflip,
        checkpoint_dir: (!settings.checkpoint_dir.trim().is_empty())
            .then(|| PathBuf::from(settings.checkpoint_dir.trim())),
        snapshot_interval_ms: 200,
        snapshot_weights: probe.is_some(),
        probe: probe.as_ref().map(|p| p.0.clone()),
        ..TrainConfig::default()
    };
    let mut template = model.clone();
    let handle = match train::spawn(model, data, cfg, None) {
        Ok(h) => h,
        Err(e) => return fail(e.to_string()),
    };
    if let Ok(mut slot) = control_slot.lock() {
        *slot = Some(handle.control.clone());
    }
    for event in handle.events.iter() {
        match event {
            TrainEvent::Snapshot {
                epoch,
                batch,
                filters,
                weights,
                ..
            } => {
                let filters = filters.as_ref().and_then(|f| filter_tiles(f, 8, 8));
                let cam = match (&probe, &weights) {
                    (Some((x, pic)), Some(w)) => probe_cam(&mut template, w, x, pic),
                    _ => None,
                };
                out.send(RunMsg::Snapshot(SnapshotView {
                    epoch,
                    batch,
                    filters,
                    cam,
                }));
            }
            other => out.send(RunMsg::Event(other)),
        }
    }
    out.send(RunMsg::Finished(
        handle.join().map(Box::new).map_err(|e| e.to_string()),
    ));
}

/// Appends one JSON line per finished epoch to `path` (`CONVSCOPE_TRAIN_LOG`, for
/// tools/bench_frames.sh: the window's training speed beside `convscope train`'s). A benchmark
/// aid: a failed write is reported on stderr and changes nothing else.
pub(super) fn log_epoch(
    path: &std::path::Path,
    s: &EpochStats,
    progress: Option<(usize, usize, usize, f64)>,
) {
    use std::io::Write;
    let line = serde_json::json!({
        "epoch": s.epoch,
        "seconds": s.seconds,
        "images_per_s": progress.map(|p| p.3),
    });
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        eprintln!("convscope: cannot append to {}: {e}", path.display());
    }
}
