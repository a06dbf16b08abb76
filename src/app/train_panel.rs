//! The training panel: data set, architecture and hyper-parameters; Start, Pause, Stop; live
//! loss and accuracy curves; the first-layer filters and the Grad-CAM of a fixed probe image as
//! they change, with a timeline to scrub back through them; the final metrics with a confusion
//! matrix whose cells open the misclassified images.
//!
//! The training thread (train::spawn) knows nothing of the window. A relay thread owned by this
//! panel turns its events into pictures (filter tiles, the probe's Grad-CAM from the weights in
//! each snapshot) off the UI thread and wakes the UI.

use std::path::PathBuf;
use std::sync::Arc;

use egui_plot::{Legend, Line, Plot, PlotPoints};
use image::RgbaImage;
use serde::{Deserialize, Serialize};

use super::jobs::{Job, Reporter};
use super::photo::unit_tensor_to_rgba;
use super::texture::Picture;
use super::widgets::{self, path_field, pick_file, pick_folder};
use crate::data::Confound;
use crate::engine::Tensor;
use crate::engine::optim::OptimizerConfig;
use crate::explain::cam::GradCamVariant;
use crate::explain::{Explainer, Target};
use crate::models::{Model, Weights};
use crate::render::colormap::Colormap;
use crate::render::filters::filter_tiles;
use crate::render::heatmap::overlay;
use crate::train::data::{DataSpec, TrainData};
use crate::train::events::{Control, EpochStats, TrainEvent, TrainSummary};
use crate::train::{self, TrainConfig};

/// Snapshots kept for the timeline (older ones are thinned out, every other one dropped).
const MAX_SNAPSHOTS: usize = 600;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataChoice {
    BuiltInFaces,
    Folder,
    Mnist,
    Cifar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfoundChoice {
    None,
    HeadTilt,
    Background,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchChoice {
    SmileCnn,
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerChoice {
    Adam,
    AdamW,
    Sgd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    pub data: DataChoice,
    pub confound: ConfoundChoice,
    pub correlation: f32,
    pub train_size: usize,
    pub val_size: usize,
    pub test_size: usize,
    pub folder: String,
    pub mnist_images: String,
    pub mnist_labels: String,
    pub mnist_test_images: String,
    pub mnist_test_labels: String,
    pub cifar_dir: String,
    pub arch: ArchChoice,
    pub arch_file: String,
    pub optimizer: OptimizerChoice,
    pub lr: f32,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    pub hflip: bool,
    pub patience: usize,
    pub checkpoint_dir: String,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            data: DataChoice::BuiltInFaces,
            confound: ConfoundChoice::None,
            correlation: 0.9,
            train_size: 3000,
            val_size: 500,
            test_size: 500,
            folder: String::new(),
            mnist_images: String::new(),
            mnist_labels: String::new(),
            mnist_test_images: String::new(),
            mnist_test_labels: String::new(),
            cifar_dir: String::new(),
            arch: ArchChoice::SmileCnn,
            arch_file: String::new(),
            optimizer: OptimizerChoice::Adam,
            lr: 1e-3,
            batch: 32,
            epochs: 3,
            seed: 0,
            hflip: false,
            patience: 0,
            checkpoint_dir: String::new(),
        }
    }
}

impl TrainSettings {
    fn data_spec(&self) -> Result<DataSpec, String> {
        let path = |s: &str, what: &str| -> Result<PathBuf, String> {
            let s = s.trim();
            if s.is_empty() {
                return Err(format!("choose the {what} first"));
            }
            Ok(PathBuf::from(s))
        };
        Ok(match self.data {
            DataChoice::BuiltInFaces => DataSpec::Synthetic {
                seed: self.seed,
                train: self.train_size,
                val: self.val_size,
                test: self.test_size,
                confound: match self.confound {
                    ConfoundChoice::None => Confound::None,
                    ConfoundChoice::HeadTilt => Confound::HeadTilt {
                        correlation: self.correlation,
                    },
                    ConfoundChoice::Background => Confound::BackgroundBrightness {
                        correlation: self.correlation,
                    },
                },
            },
            DataChoice::Folder => DataSpec::Folder {
                root: path(&self.folder, "image folder")?,
                val_fraction: 0.1,
                test_fraction: 0.1,
                seed: self.seed,
            },
            DataChoice::Mnist => {
                let test = if self.mnist_test_images.trim().is_empty() {
                    None
                } else {
                    Some((
                        path(&self.mnist_test_images, "test images file")?,
                        path(&self.mnist_test_labels, "test labels file")?,
                    ))
                };
                DataSpec::Idx {
                    train_images: path(&self.mnist_images, "IDX images file")?,
                    train_labels: path(&self.mnist_labels, "IDX labels file")?,
                    test,
                }
            }
            DataChoice::Cifar => DataSpec::Cifar {
                dir: path(&self.cifar_dir, "CIFAR-10 folder")?,
            },
        })
    }

    fn optimizer(&self) -> OptimizerConfig {
        match self.optimizer {
            OptimizerChoice::Adam => OptimizerConfig::adam(self.lr),
            OptimizerChoice::AdamW => OptimizerConfig::adamw(self.lr, 1e-2),
            OptimizerChoice::Sgd => OptimizerConfig::sgd_momentum(self.lr, 0.9),
        }
    }
}

/// One moment of the run as pictures.
struct SnapshotView {
    epoch: usize,
    batch: usize,
    filters: Option<RgbaImage>,
    cam: Option<RgbaImage>,
}

enum RunMsg {
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

/// Curves as `[x, y]` points; x in epochs (batch b of epoch e is e − 1 + b/batches).
#[derive(Default)]
pub struct Curves {
    pub batch_loss: Vec<[f64; 2]>,
    pub batch_acc: Vec<[f64; 2]>,
    pub epochs: Vec<EpochStats>,
}

/// What a finished run leaves.
pub struct Finished {
    pub summary: Option<TrainSummary>,
    pub model: Option<Model>,
}

#[derive(Default)]
pub struct TrainPanel {
    job: Option<Job<RunMsg>>,
    control: Option<Control>,
    /// Where the relay leaves the run's control once training has started.
    pending_control: Option<Arc<std::sync::Mutex<Option<Control>>>>,
    pub curves: Curves,
    classes: Vec<String>,
    data: Option<Arc<TrainData>>,
    snapshots: Vec<SnapshotView>,
    /// Timeline position; `None` follows the newest snapshot.
    scrub: Option<usize>,
    shown: Option<usize>,
    filters_pic: Picture,
    cam_pic: Picture,
    probe_pic: Picture,
    progress: Option<(usize, usize, usize, f64)>,
    status: String,
    error: Option<String>,
    pub finished: Option<Finished>,
    cell: Option<(usize, usize)>,
    cell_pics: Vec<(Picture, String)>,
    /// A trained model handed to the explain panel.
    pub send_to_explain: Option<Model>,
    /// The run's data, once prepared, for the dataset panel.
    prepared: Option<Arc<TrainData>>,
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

/// What `train::arch::model_and_data` reads for the chosen architecture.
fn arch_spec(settings: &TrainSettings) -> Result<&str, String> {
    match settings.arch {
        ArchChoice::SmileCnn => Ok("smile-cnn"),
        ArchChoice::File => {
            let f = settings.arch_file.trim();
            if f.is_empty() {
                return Err("choose a model description (.ron) or checkpoint folder first".into());
            }
            Ok(f)
        }
    }
}

/// The relay: prepares the data, starts training, turns events into pictures, and returns the
/// model at the end.
fn relay(
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

impl TrainPanel {
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// The data set of a run that just started (once).
    pub fn take_prepared_data(&mut self) -> Option<Arc<TrainData>> {
        self.prepared.take()
    }

    /// Whether the first snapshot's filters differ from the last one's.
    pub fn filters_changed(&self) -> bool {
        match (self.snapshots.first(), self.snapshots.last()) {
            (Some(a), Some(b)) => {
                a.filters.is_some() && b.filters.is_some() && a.filters != b.filters
            }
            _ => false,
        }
    }

    pub fn snapshot_count(&self) -> usize {
        self.snapshots.len()
    }

    /// Starts a run with `settings`.
    pub fn start(&mut self, ctx: &egui::Context, settings: &TrainSettings) {
        if self.job.is_some() {
            return;
        }
        *self = TrainPanel {
            send_to_explain: self.send_to_explain.take(),
            ..TrainPanel::default()
        };
        self.status = "preparing the data…".into();
        let slot = Arc::new(std::sync::Mutex::new(None));
        let relay_slot = slot.clone();
        let s = settings.clone();
        match Job::spawn("train-relay", ctx, move |out| relay(s, out, relay_slot)) {
            Ok(job) => {
                self.job = Some(job);
                self.pending_control = Some(slot);
            }
            Err(e) => self.error = Some(e),
        }
    }

    pub fn logic(&mut self, ctx: &egui::Context) {
        if self.control.is_none()
            && let Some(slot) = &self.pending_control
            && let Ok(mut c) = slot.lock()
        {
            self.control = c.take();
        }
        let Some(job) = &mut self.job else {
            return;
        };
        let msgs = job.drain(ctx);
        let finished = job.is_finished();
        let panicked = job.panicked();
        for m in msgs {
            self.handle(ctx, m);
        }
        if finished {
            if panicked {
                self.error = Some("training stopped on an internal error".into());
            }
            self.job = None;
            self.control = None;
            self.pending_control = None;
        }
    }

    fn handle(&mut self, ctx: &egui::Context, m: RunMsg) {
        match m {
            RunMsg::Prepared {
                classes,
                data,
                probe,
            } => {
                self.classes = classes;
                self.prepared = Some(data.clone());
                self.data = Some(data);
                if let Some(p) = probe {
                    self.probe_pic.set(ctx, "train-probe", &p, true);
                }
                self.status = "training…".into();
            }
            RunMsg::Event(e) => match e {
                TrainEvent::Started {
                    train_len,
                    val_len,
                    test_len,
                    ..
                } => {
                    self.status = format!(
                        "training on {train_len} images ({val_len} validation, {test_len} test)"
                    );
                }
                TrainEvent::BatchDone {
                    epoch,
                    batch,
                    batches,
                    loss,
                    acc,
                    images_per_s,
                    ..
                } => {
                    let x = (epoch - 1) as f64 + batch as f64 / batches.max(1) as f64;
                    self.curves.batch_loss.push([x, f64::from(loss)]);
                    self.curves.batch_acc.push([x, acc]);
                    self.progress = Some((epoch, batch, batches, images_per_s));
                }
                TrainEvent::EpochDone(s) => {
                    if let Some(path) = std::env::var_os("CONVSCOPE_TRAIN_LOG") {
                        log_epoch(std::path::Path::new(&path), &s, self.progress);
                    }
                    self.curves.epochs.push(s);
                }
                TrainEvent::Checkpoint { path, epochs_done } => {
                    self.status =
                        format!("checkpoint after epoch {epochs_done} in {}", path.display());
                }
                TrainEvent::Done(summary) => {
                    self.status = format!("finished: {:?}", summary.stop);
                    self.finished = Some(Finished {
                        summary: Some(*summary),
                        model: None,
                    });
                }
                TrainEvent::Failed(msg) => {
                    self.error = Some(msg);
                    self.finished.get_or_insert(Finished {
                        summary: None,
                        model: None,
                    });
                }
                TrainEvent::Snapshot { .. } => {}
            },
            RunMsg::Snapshot(s) => {
                if self.snapshots.len() >= MAX_SNAPSHOTS {
                    // keep the whole run visible: drop every other old snapshot
                    let mut i = 0;
                    self.snapshots.retain(|_| {
                        i += 1;
                        i % 2 == 0
                    });
                    self.scrub = None;
                }
                self.snapshots.push(s);
            }
            RunMsg::Finished(result) => match result {
                Ok(model) => {
                    self.finished
                        .get_or_insert(Finished {
                            summary: None,
                            model: None,
                        })
                        .model = Some(*model);
                }
                Err(e) => self.error = Some(e),
            },
            RunMsg::Failed(e) => {
                self.error = Some(e);
                self.status = "not started".into();
            }
        }
    }

    fn show_snapshot(&mut self, ctx: &egui::Context) {
        let want = self.scrub.or(self.snapshots.len().checked_sub(1));
        if want == self.shown {
            return;
        }
        self.shown = want;
        if let Some(s) = want.and_then(|i| self.snapshots.get(i)) {
            if let Some(f) = &s.filters {
                self.filters_pic.set(ctx, "train-filters", f, true);
            }
            if let Some(c) = &s.cam {
                self.cam_pic.set(ctx, "train-cam", c, true);
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, settings: &mut TrainSettings) {
        egui::Panel::left("train-settings")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.settings_ui(ui, settings));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("train-view")
                .show(ui, |ui| self.view(ui));
        });
    }

    fn settings_ui(&mut self, ui: &mut egui::Ui, s: &mut TrainSettings) {
        let running = self.job.is_some();
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!running, egui::Button::new("Start"))
                .clicked()
            {
                self.start(ui.ctx(), s);
            }
            let paused = self.control.as_ref().is_some_and(|c| c.is_paused());
            let label = if paused { "Resume" } else { "Pause" };
            if ui
                .add_enabled(self.control.is_some(), egui::Button::new(label))
                .clicked()
                && let Some(c) = &self.control
            {
                if paused { c.resume() } else { c.pause() }
            }
            if ui
                .add_enabled(self.control.is_some(), egui::Button::new("Stop"))
                .clicked()
                && let Some(c) = &self.control
            {
                c.stop();
            }
        });
        ui.add_enabled_ui(!running, |ui| {
            ui.heading("Data");
            ui.selectable_value(
                &mut s.data,
                DataChoice::BuiltInFaces,
                "Built-in faces (smiling / frowning)",
            );
            ui.selectable_value(
                &mut s.data,
                DataChoice::Folder,
                "Image folder (one sub-folder per class)",
            );
            ui.selectable_value(
                &mut s.data,
                DataChoice::Mnist,
                "MNIST / Fashion-MNIST IDX files",
            );
            ui.selectable_value(&mut s.data, DataChoice::Cifar, "CIFAR-10 binary folder");
            match s.data {
                DataChoice::BuiltInFaces => {
                    ui.label("Confound (planted in training and validation faces):");
                    ui.horizontal(|ui| {
                        ui.selectable_value(&mut s.confound, ConfoundChoice::None, "none");
                        ui.selectable_value(&mut s.confound, ConfoundChoice::HeadTilt, "head tilt");
                        ui.selectable_value(
                            &mut s.confound,
                            ConfoundChoice::Background,
                            "background",
                        );
                    });
                    if s.confound != ConfoundChoice::None {
                        ui.add(
                            egui::Slider::new(&mut s.correlation, 0.0..=1.0)
                                .text("correlation with the label"),
                        );
                    }
                    ui.add(
                        egui::Slider::new(&mut s.train_size, 200..=20_000)
                            .logarithmic(true)
                            .text("training faces"),
                    );
                    ui.add(egui::Slider::new(&mut s.val_size, 0..=5_000).text("validation faces"));
                    ui.add(egui::Slider::new(&mut s.test_size, 0..=5_000).text("test faces"));
                }
                DataChoice::Folder => {
                    path_field(ui, "Folder:", &mut s.folder);
                    if ui.button("Browse…").clicked()
                        && let Some(p) = pick_folder()
                    {
                        s.folder = p.display().to_string();
                    }
                }
                DataChoice::Mnist => {
                    path_field(ui, "Train images:", &mut s.mnist_images);
                    path_field(ui, "Train labels:", &mut s.mnist_labels);
                    path_field(ui, "Test images:", &mut s.mnist_test_images);
                    path_field(ui, "Test labels:", &mut s.mnist_test_labels);
                }
                DataChoice::Cifar => {
                    path_field(ui, "Folder:", &mut s.cifar_dir);
                }
            }
            ui.separator();
            ui.heading("Architecture");
            ui.selectable_value(&mut s.arch, ArchChoice::SmileCnn, "The book's smile CNN");
            ui.selectable_value(
                &mut s.arch,
                ArchChoice::File,
                "A RON description or checkpoint",
            );
            if s.arch == ArchChoice::File {
                path_field(ui, "Model:", &mut s.arch_file);
                if ui.button("Browse…").clicked()
                    && let Some(p) = pick_file(&[("Model description", &["ron"])])
                {
                    s.arch_file = p.display().to_string();
                }
            }
            ui.separator();
            ui.heading("Hyper-parameters");
            egui::ComboBox::from_label("optimiser")
                .selected_text(format!("{:?}", s.optimizer))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut s.optimizer, OptimizerChoice::Adam, "Adam");
                    ui.selectable_value(&mut s.optimizer, OptimizerChoice::AdamW, "AdamW");
                    ui.selectable_value(
                        &mut s.optimizer,
                        OptimizerChoice::Sgd,
                        "SGD (momentum 0.9)",
                    );
                });
            ui.add(
                egui::Slider::new(&mut s.lr, 1e-5..=1e-1)
                    .logarithmic(true)
                    .text("learning rate"),
            );
            ui.add(
                egui::Slider::new(&mut s.batch, 1..=256)
                    .logarithmic(true)
                    .text("batch"),
            );
            ui.add(egui::Slider::new(&mut s.epochs, 1..=100).text("epochs"));
            ui.add(
                egui::Slider::new(&mut s.patience, 0..=20).text("early-stopping patience (0: off)"),
            );
            ui.horizontal(|ui| {
                let l = ui.label("seed");
                ui.add(egui::DragValue::new(&mut s.seed)).labelled_by(l.id);
            });
            ui.checkbox(&mut s.hflip, "random horizontal flips");
            path_field(ui, "Checkpoints:", &mut s.checkpoint_dir);
            ui.weak("(empty: no checkpoints)");
        });
    }

    fn view(&mut self, ui: &mut egui::Ui) {
        self.show_snapshot(ui.ctx());
        ui.horizontal(|ui| {
            if self.job.is_some() {
                widgets::busy(ui);
            }
            ui.label(&self.status);
        });
        if let Some((epoch, batch, batches, ips)) = self.progress {
            ui.add(
                egui::ProgressBar::new(batch as f32 / batches.max(1) as f32)
                    .text(format!(
                        "epoch {epoch}, batch {batch}/{batches}, {ips:.0} images/s"
                    ))
                    .desired_width(420.0),
            );
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if self.curves.batch_loss.is_empty() && self.snapshots.is_empty() {
            ui.label("Press Start to train the smile CNN on the built-in faces: the curves, filters and the probe's Grad-CAM appear here as it learns.");
        }
        let width = ui.available_width();
        ui.horizontal(|ui| {
            let w = (width / 2.0 - 12.0).max(200.0);
            ui.vertical(|ui| {
                ui.set_width(w);
                ui.label("Loss");
                let c = &self.curves;
                Plot::new("loss")
                    .height(200.0)
                    .legend(Legend::default())
                    .x_axis_label("epoch")
                    .show(ui, |p| {
                        p.line(Line::new(
                            "train (batch)",
                            PlotPoints::from(c.batch_loss.clone()),
                        ));
                        let tr: Vec<[f64; 2]> = c
                            .epochs
                            .iter()
                            .map(|e| [e.epoch as f64, f64::from(e.train_loss)])
                            .collect();
                        p.line(Line::new("train (epoch)", PlotPoints::from(tr)).width(2.5));
                        let va: Vec<[f64; 2]> = c
                            .epochs
                            .iter()
                            .filter_map(|e| e.val_loss.map(|v| [e.epoch as f64, f64::from(v)]))
                            .collect();
                        p.line(Line::new("validation (epoch)", PlotPoints::from(va)).width(2.5));
                    });
            });
            ui.vertical(|ui| {
                ui.set_width(w);
                ui.label("Accuracy");
                let c = &self.curves;
                Plot::new("accuracy")
                    .height(200.0)
                    .legend(Legend::default())
                    .x_axis_label("epoch")
                    .include_y(0.0)
                    .include_y(1.0)
                    .show(ui, |p| {
                        p.line(Line::new(
                            "train (batch)",
                            PlotPoints::from(c.batch_acc.clone()),
                        ));
                        let tr: Vec<[f64; 2]> = c
                            .epochs
                            .iter()
                            .map(|e| [e.epoch as f64, e.train_acc])
                            .collect();
                        p.line(Line::new("train (epoch)", PlotPoints::from(tr)).width(2.5));
                        let va: Vec<[f64; 2]> = c
                            .epochs
                            .iter()
                            .filter_map(|e| e.val_acc.map(|v| [e.epoch as f64, v]))
                            .collect();
                        p.line(Line::new("validation (epoch)", PlotPoints::from(va)).width(2.5));
                    });
            });
        });
        if !self.snapshots.is_empty() {
            ui.separator();
            let n = self.snapshots.len();
            let mut pos = self.scrub.unwrap_or(n - 1);
            ui.horizontal(|ui| {
                ui.label("Timeline");
                let resp = ui.add(egui::Slider::new(&mut pos, 0..=n - 1).show_value(false));
                if resp.changed() {
                    self.scrub = if pos + 1 >= n { None } else { Some(pos) };
                }
                if let Some(s) = self.snapshots.get(pos) {
                    ui.label(format!("epoch {}, batch {}", s.epoch, s.batch));
                }
                if self.scrub.is_some() && ui.button("Live").clicked() {
                    self.scrub = None;
                }
            });
            self.show_snapshot(ui.ctx());
            ui.horizontal(|ui| {
                ui.vertical(|ui| {
                    ui.label("First-layer filters");
                    self.filters_pic.show(ui, egui::vec2(360.0, 200.0));
                });
                ui.vertical(|ui| {
                    ui.label("Probe image");
                    self.probe_pic.show(ui, egui::vec2(160.0, 160.0));
                });
                ui.vertical(|ui| {
                    ui.label("Its Grad-CAM (top class)");
                    self.cam_pic.show(ui, egui::vec2(160.0, 160.0));
                });
            });
        }
        self.results(ui);
    }

    fn results(&mut self, ui: &mut egui::Ui) {
        let Some(fin) = &self.finished else {
            return;
        };
        ui.separator();
        if let Some(m) = fin.summary.as_ref().and_then(|s| s.test.as_ref()) {
            ui.heading(format!(
                "Test accuracy {:.3} · macro precision {:.3} · recall {:.3} · F1 {:.3}{}",
                m.accuracy,
                m.macro_precision,
                m.macro_recall,
                m.macro_f1,
                m.auc
                    .map_or(String::new(), |a| format!(" · ROC AUC {a:.3}"))
            ));
            ui.label("Confusion matrix (rows: truth, columns: prediction). Click a cell to see its images.");
            let mut clicked = None;
            egui::Grid::new("confusion").striped(true).show(ui, |ui| {
                ui.label("");
                for name in &self.classes {
                    ui.label(name);
                }
                ui.end_row();
                for (t, row) in m.confusion.iter().enumerate() {
                    ui.label(self.classes.get(t).map_or("?", String::as_str));
                    for (p, &count) in row.iter().enumerate() {
                        let text = egui::RichText::new(count.to_string()).strong();
                        let sel = self.cell == Some((t, p));
                        if ui.selectable_label(sel, text).clicked() {
                            clicked = Some((t, p));
                        }
                    }
                    ui.end_row();
                }
            });
            if let Some(cell) = clicked {
                self.open_cell(ui.ctx(), cell);
            }
        }
        if let Some((t, p)) = self.cell {
            let name = |i: usize| {
                self.classes
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("class {i}"))
            };
            ui.label(format!(
                "truth “{}”, predicted “{}”: {} shown",
                name(t),
                name(p),
                self.cell_pics.len()
            ));
            ui.horizontal_wrapped(|ui| {
                for (pic, caption) in &self.cell_pics {
                    ui.vertical(|ui| {
                        pic.show(ui, egui::vec2(96.0, 96.0));
                        ui.weak(caption);
                    });
                }
            });
        }
        let has_model = self.finished.as_ref().is_some_and(|f| f.model.is_some());
        if has_model
            && ui
                .button("Explain this model")
                .on_hover_text("Open the trained model in the explain panel")
                .clicked()
            && let Some(f) = &mut self.finished
        {
            self.send_to_explain = f.model.clone();
        }
    }

    /// Loads up to 24 images of a confusion cell (misclassified ones from the metrics; for a
    /// diagonal cell, correctly classified test images are not listed by the metrics).
    fn open_cell(&mut self, ctx: &egui::Context, cell: (usize, usize)) {
        self.cell = Some(cell);
        self.cell_pics.clear();
        let (Some(fin), Some(data)) = (&self.finished, &self.data) else {
            return;
        };
        let (Some(m), Some(test)) = (
            fin.summary.as_ref().and_then(|s| s.test.as_ref()),
            data.test.as_ref(),
        ) else {
            return;
        };
        for mc in m
            .misclassified
            .iter()
            .filter(|x| (x.truth, x.predicted) == cell)
            .take(24)
        {
            if let Some(img) = test
                .load_raw(mc.index)
                .ok()
                .and_then(|t| unit_tensor_to_rgba(&t))
            {
                let mut pic = Picture::default();
                pic.set(ctx, &format!("cell-{}", mc.index), &img, true);
                self.cell_pics
                    .push((pic, format!("#{} ({:.0} %)", mc.index, 100.0 * mc.score)));
            }
        }
    }
}

/// Appends one JSON line per finished epoch to `path` (`CONVSCOPE_TRAIN_LOG`, for
/// tools/bench_frames.sh: the window's training speed beside `convscope train`'s). A benchmark
/// aid: a failed write is reported on stderr and changes nothing else.
fn log_epoch(path: &std::path::Path, s: &EpochStats, progress: Option<(usize, usize, usize, f64)>) {
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
