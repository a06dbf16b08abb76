//! The dream panel: pick classes, give each a weight with a slider, and watch the network
//! "hallucinate" an image that excites them. The dream runs on a worker that owns its
//! [`Dreamer`]; moving a slider sends the new weights and the optimisation continues from the
//! current image and optimiser state instead of restarting.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use image::RgbaImage;
use serde::{Deserialize, Serialize};

use super::export::{png_bytes, write_atomically};
use super::jobs::{Job, Reporter};
use super::texture::Picture;
use super::widgets::{self, path_field};
use super::workspace::{LoadedModel, Workspace};
use crate::explain::dream::{ClassScore, DreamConfig, DreamTarget, Dreamer, Parameterisation};
use crate::models::Model;

/// Least time between two preview images sent to the UI.
const PREVIEW_EVERY: Duration = Duration::from_millis(120);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DreamSettings {
    /// `(class, weight)` pairs.
    pub classes: Vec<(usize, f32)>,
    pub steps: usize,
    pub config: DreamConfig,
    pub save_path: String,
}

impl Default for DreamSettings {
    fn default() -> Self {
        Self {
            classes: vec![(288, 1.0)],
            steps: 256,
            // log-probabilities: a mix settles where the probabilities follow the weights,
            // where a plain logit sum lets the strongest class take over
            config: DreamConfig {
                size: 224,
                class_score: ClassScore::LogProbability,
                ..DreamConfig::default()
            },
            save_path: std::env::temp_dir()
                .join("convscope-dream.png")
                .display()
                .to_string(),
        }
    }
}

enum Cmd {
    Targets(Vec<DreamTarget>, usize),
    Pause(bool),
}

enum Msg {
    Frame {
        step: usize,
        image: RgbaImage,
        targets: Vec<(usize, f32)>,
        top5: Vec<(usize, f32)>,
        objective: f32,
    },
    Failed(String),
}

fn targets_of(classes: &[(usize, f32)]) -> Vec<DreamTarget> {
    classes
        .iter()
        .map(|&(c, w)| DreamTarget::class(c, w))
        .collect()
}

fn to_rgba(img: &image::RgbImage) -> RgbaImage {
    image::DynamicImage::ImageRgb8(img.clone()).to_rgba8()
}

fn dream(
    model: Arc<Model>,
    settings: DreamSettings,
    start: Option<image::RgbImage>,
    cmds: Receiver<Cmd>,
    out: &Reporter<Msg>,
) {
    let graph = &model.graph;
    let preprocess = &model.description.preprocess;
    let targets = targets_of(&settings.classes);
    let made = match &start {
        Some(img) => Dreamer::from_image(graph, preprocess, img, targets, settings.config.clone()),
        None => Dreamer::new(graph, preprocess, targets, settings.config.clone()),
    };
    let mut dreamer = match made {
        Ok(d) => d,
        Err(e) => return out.send(Msg::Failed(e.to_string())),
    };
    let mut budget = settings.steps;
    let mut paused = false;
    let mut last_sent: Option<Instant> = None;
    loop {
        if out.is_cancelled() {
            return;
        }
        let idle = paused || budget == 0;
        // block briefly when idle so that a finished dream costs no CPU
        let cmd = if idle {
            cmds.recv_timeout(Duration::from_millis(200)).ok()
        } else {
            cmds.try_recv().ok()
        };
        if let Some(cmd) = cmd {
            match cmd {
                Cmd::Targets(t, steps) => {
                    if let Err(e) = dreamer.set_targets(t) {
                        return out.send(Msg::Failed(e.to_string()));
                    }
                    budget = steps;
                }
                Cmd::Pause(p) => paused = p,
            }
            continue;
        }
        if idle {
            continue;
        }
        let s = match dreamer.step() {
            Ok(s) => s,
            Err(e) => return out.send(Msg::Failed(e.to_string())),
        };
        budget -= 1;
        let due = last_sent.is_none_or(|t| t.elapsed() >= PREVIEW_EVERY);
        if due || budget == 0 {
            last_sent = Some(Instant::now());
            out.send(Msg::Frame {
                step: s.step,
                image: to_rgba(&dreamer.image()),
                targets: s.targets,
                top5: s.top5,
                objective: s.objective,
            });
        }
    }
}

#[derive(Default)]
pub struct DreamPanel {
    job: Option<Job<Msg>>,
    cmds: Option<Sender<Cmd>>,
    paused: bool,
    pic: Picture,
    last: Option<RgbaImage>,
    pub step: usize,
    targets: Vec<(usize, f32)>,
    top5: Vec<(usize, f32)>,
    objective: Vec<[f64; 2]>,
    search: String,
    error: Option<String>,
    status: Option<String>,
    /// Frames received (tests watch the preview change).
    pub frames: usize,
}

impl DreamPanel {
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Starts a dream; `warm` continues from the current image.
    pub fn start(
        &mut self,
        ctx: &egui::Context,
        model: &LoadedModel,
        settings: &DreamSettings,
        warm: bool,
    ) {
        if settings.classes.is_empty() {
            self.error = Some("add at least one class to dream of".into());
            return;
        }
        let start = if warm {
            self.last
                .as_ref()
                .map(|i| image::DynamicImage::ImageRgba8(i.clone()).to_rgb8())
        } else {
            None
        };
        let (tx, rx) = channel();
        let (m, s) = (model.model.clone(), settings.clone());
        match Job::spawn("dream", ctx, move |out| dream(m, s, start, rx, out)) {
            Ok(j) => {
                self.job = Some(j);
                self.cmds = Some(tx);
                self.paused = false;
                self.error = None;
                if !warm {
                    self.objective.clear();
                }
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// New weights for a running dream: it continues from where it is.
    pub fn retarget(&mut self, settings: &DreamSettings) {
        if let Some(tx) = &self.cmds {
            let _ = tx.send(Cmd::Targets(targets_of(&settings.classes), settings.steps));
        }
    }

    pub fn logic(&mut self, ctx: &egui::Context) {
        let Some(job) = &mut self.job else {
            return;
        };
        for m in job.drain(ctx) {
            match m {
                Msg::Frame {
                    step,
                    image,
                    targets,
                    top5,
                    objective,
                } => {
                    self.pic.set(ctx, "dream", &image, false);
                    self.last = Some(image);
                    self.step = step;
                    self.targets = targets;
                    self.top5 = top5;
                    self.objective.push([step as f64, f64::from(objective)]);
                    self.frames += 1;
                }
                Msg::Failed(e) => self.error = Some(e),
            }
        }
        if job.is_finished() {
            if job.panicked() {
                self.error = Some("the dream stopped on an internal error".into());
            }
            self.job = None;
            self.cmds = None;
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, ws: &Workspace, settings: &mut DreamSettings) {
        let Some(model) = ws.model.clone() else {
            ui.label("Loading the model…");
            return;
        };
        let mut retarget = false;
        egui::Panel::left("dream-controls")
            .resizable(true)
            .default_size(320.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    ui.heading("Classes and weights");
                    let mut remove = None;
                    for (i, (c, w)) in settings.classes.iter_mut().enumerate() {
                        ui.horizontal(|ui| {
                            let resp =
                                ui.add(egui::Slider::new(w, 0.0..=1.0).text(model.label(*c)));
                            if resp.changed() {
                                retarget = true;
                            }
                            if ui
                                .small_button("remove")
                                .on_hover_text(format!("remove {}", model.label(*c)))
                                .clicked()
                            {
                                remove = Some(i);
                            }
                        });
                    }
                    if let Some(i) = remove {
                        settings.classes.remove(i);
                        retarget = true;
                    }
                    ui.horizontal(|ui| {
                        let l = ui.label("Add class:");
                        ui.add(egui::TextEdit::singleline(&mut self.search).desired_width(150.0))
                            .labelled_by(l.id);
                    });
                    let needle = self.search.trim().to_lowercase();
                    if !needle.is_empty() {
                        egui::ScrollArea::vertical()
                            .id_salt("dream-search")
                            .max_height(150.0)
                            .show(ui, |ui| {
                                let mut shown = 0;
                                for c in 0..model.classes() {
                                    let label = model.label(c);
                                    if label.to_lowercase().contains(&needle)
                                        || c.to_string() == needle
                                    {
                                        if ui.button(format!("+ {c}: {label}")).clicked()
                                            && !settings.classes.iter().any(|x| x.0 == c)
                                        {
                                            settings.classes.push((c, 0.5));
                                            retarget = true;
                                        }
                                        shown += 1;
                                        if shown >= 40 {
                                            break;
                                        }
                                    }
                                }
                            });
                    }
                    ui.separator();
                    ui.add(
                        egui::Slider::new(&mut settings.steps, 16..=1024)
                            .logarithmic(true)
                            .text("steps"),
                    );
                    egui::CollapsingHeader::new("Image and regularisers").show(ui, |ui| {
                        let c = &mut settings.config;
                        ui.horizontal(|ui| {
                            ui.label("score:");
                            ui.selectable_value(
                                &mut c.class_score,
                                ClassScore::LogProbability,
                                "log-probability (mixes)",
                            );
                            ui.selectable_value(&mut c.class_score, ClassScore::Logit, "logit");
                        });
                        ui.horizontal(|ui| {
                            ui.selectable_value(
                                &mut c.parameterisation,
                                Parameterisation::Fourier,
                                "Fourier (decorrelated)",
                            );
                            ui.selectable_value(
                                &mut c.parameterisation,
                                Parameterisation::Pixels,
                                "pixels",
                            );
                        });
                        ui.add(egui::Slider::new(&mut c.size, 64..=320).text("size"));
                        ui.add(
                            egui::Slider::new(&mut c.lr, 0.001..=0.5)
                                .logarithmic(true)
                                .text("learning rate"),
                        );
                        ui.add(egui::Slider::new(&mut c.jitter, 0..=32).text("jitter (px)"));
                        ui.add(
                            egui::Slider::new(&mut c.rotation_degrees, 0.0..=45.0)
                                .text("rotation (°)"),
                        );
                        ui.add(egui::Slider::new(&mut c.scale.1, 1.0..=1.5).text("max zoom"));
                        ui.add(
                            egui::Slider::new(&mut c.tv_weight, 0.0..=1.0).text("total variation"),
                        );
                        ui.add(egui::Slider::new(&mut c.l2_weight, 0.0..=1.0).text("L2"));
                        ui.add(egui::Slider::new(&mut c.blur_weight, 0.0..=1.0).text("blur"));
                        ui.horizontal(|ui| {
                            let l = ui.label("seed");
                            ui.add(egui::DragValue::new(&mut c.seed)).labelled_by(l.id);
                        });
                        c.scale.0 = c.scale.0.min(c.scale.1);
                    });
                    ui.separator();
                    ui.horizontal(|ui| {
                        if ui.button("Dream from noise").clicked() {
                            self.job = None;
                            self.start(ui.ctx(), &model, settings, false);
                        }
                        if ui
                            .add_enabled(
                                self.last.is_some() && self.job.is_none(),
                                egui::Button::new("Continue"),
                            )
                            .clicked()
                        {
                            self.start(ui.ctx(), &model, settings, true);
                        }
                        if let Some(tx) = &self.cmds {
                            let label = if self.paused { "Resume" } else { "Pause" };
                            if ui.button(label).clicked() {
                                self.paused = !self.paused;
                                let _ = tx.send(Cmd::Pause(self.paused));
                            }
                            if ui.button("Stop").clicked() {
                                self.job = None;
                                self.cmds = None;
                            }
                        }
                    });
                    ui.separator();
                    path_field(ui, "Save as:", &mut settings.save_path);
                    if ui
                        .add_enabled(self.last.is_some(), egui::Button::new("Save PNG"))
                        .clicked()
                    {
                        let path = std::path::PathBuf::from(settings.save_path.trim());
                        let result = self
                            .last
                            .as_ref()
                            .ok_or_else(|| "nothing to save yet".to_string())
                            .and_then(png_bytes)
                            .and_then(|b| write_atomically(&path, &b));
                        match result {
                            Ok(()) => self.status = Some(format!("saved {}", path.display())),
                            Err(e) => self.error = Some(e),
                        }
                    }
                    if let Some(s) = &self.status {
                        ui.weak(s);
                    }
                });
            });
        if retarget {
            if self.job.is_some() {
                self.retarget(settings);
            } else if self.last.is_some() {
                self.start(ui.ctx(), &model, settings, true);
            }
        }
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                if self.job.is_some() && !self.paused {
                    widgets::busy(ui);
                }
                ui.label(format!("step {}", self.step));
            });
            if let Some(e) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            if !self.pic.is_set() {
                ui.label("Press “Dream from noise”: the image is optimised so that the chosen classes score high. Move a slider while it runs to mix the classes.");
                return;
            }
            let side = ui.available_width().min(ui.available_height() - 160.0).clamp(160.0, 640.0);
            ui.horizontal(|ui| {
                self.pic.show(ui, egui::vec2(side, side));
                ui.vertical(|ui| {
                    ui.heading("Targets");
                    for &(c, p) in &self.targets {
                        ui.label(format!("{:>5.1} %  {}", 100.0 * p, model.label(c)));
                    }
                    ui.separator();
                    ui.heading("Top-5");
                    for &(c, p) in &self.top5 {
                        ui.label(format!("{:>5.1} %  {}", 100.0 * p, model.label(c)));
                    }
                    egui_plot::Plot::new("dream-objective").height(140.0).width(260.0).show(ui, |p| {
                        p.line(egui_plot::Line::new("objective", egui_plot::PlotPoints::from(self.objective.clone())));
                    });
                });
            });
        });
    }
}
