//! The training panel: data set, architecture and hyper-parameters; Start, Pause, Stop; live
//! loss and accuracy curves; the first-layer filters and the Grad-CAM of a fixed probe image as
//! they change, with a timeline to scrub back through them; the final metrics with a confusion
//! matrix whose cells open the misclassified images.
//!
//! The training thread (train::spawn) knows nothing of the window. A relay thread owned by this
//! panel turns its events into pictures (filter tiles, the probe's Grad-CAM from the weights in
//! each snapshot) off the UI thread and wakes the UI.

mod relay;
mod settings;
mod view;

pub use settings::{DataChoice, TrainSettings};

use std::sync::Arc;

use self::relay::{RunMsg, SnapshotView, log_epoch, relay};
use super::jobs::Job;
use super::texture::Picture;
use crate::models::Model;
use crate::train::data::TrainData;
use crate::train::events::{Control, EpochStats, TrainEvent, TrainSummary};

/// Snapshots kept for the timeline (older ones are thinned out, every other one dropped).
const MAX_SNAPSHOTS: usize = 600;

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
}
