//! The explain panel: photos with their top-5, a method, a class and a layer, the heat map over
//! the photo with its deletion/insertion scores, the model-randomisation sanity check, export.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::export::save_explanation;
use super::jobs::{Job, Reporter};
use super::photo::Photo;
use super::texture::Picture;
use super::widgets::{self, choice_combo, class_picker, path_field, progress};
use super::workspace::{PhotoSpec, Workspace};
use crate::explain::faithfulness::{CurveOptions, randomise_top_layers, spearman, ssim};
use crate::explain::method::{Explanation, FaithfulnessScores, Method, MethodOptions};
use crate::explain::{Control, Explainer, Map, Progress, Target};
use crate::models::Model;
use crate::render::colormap::Colormap;
use crate::render::heatmap::{map_to_image, overlay};

/// What the panel remembers between runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExplainSettings {
    pub method: Method,
    pub target: Target,
    /// The CAM layer; `None` is the model's last spatial layer.
    pub layer: Option<String>,
    pub colormap: Colormap,
    pub alpha: f32,
    pub export_dir: String,
    /// Layers re-initialised by the sanity check, from the output.
    pub sanity_layers: usize,
}

impl Default for ExplainSettings {
    fn default() -> Self {
        Self {
            method: Method::GradCam,
            target: Target::Top,
            layer: None,
            colormap: Colormap::Jet,
            alpha: 0.5,
            export_dir: std::env::temp_dir()
                .join("convscope-export")
                .display()
                .to_string(),
            sanity_layers: 3,
        }
    }
}

/// What a map was computed for; a change starts a new computation.
#[derive(Clone, Debug, PartialEq)]
struct Request {
    generation: u64,
    photo: usize,
    method: Method,
    target: Target,
    layer: Option<String>,
}

enum Msg {
    Progress(Progress),
    Map(Box<Explanation>, f64),
    Scores(FaithfulnessScores),
    Failed(String),
}

enum SanityMsg {
    Done {
        after: Map,
        spearman: f32,
        ssim: f32,
        layers: Vec<String>,
    },
    Failed(String),
}

struct Shown {
    explanation: Explanation,
    seconds: f64,
    scores: Option<FaithfulnessScores>,
    /// Colormap and opacity the overlay was drawn with.
    drawn: Option<(Colormap, f32)>,
}

struct Sanity {
    before: Picture,
    after: Picture,
    spearman: f32,
    ssim: f32,
    layers: Vec<String>,
    method: Method,
}

#[derive(Default)]
pub struct ExplainPanel {
    search: String,
    open_path: String,
    job: Option<Job<Msg>>,
    progress: Option<Progress>,
    requested: Option<Request>,
    shown: Option<Shown>,
    error: Option<String>,
    photo_pic: Picture,
    overlay_pic: Picture,
    sanity_job: Option<Job<SanityMsg>>,
    sanity: Option<Sanity>,
    status: Option<String>,
}

fn run_explain(model: Arc<Model>, photo: Photo, req: Request, out: &Reporter<Msg>) {
    let t0 = Instant::now();
    let result = (|| {
        let explainer = Explainer::new(&model.graph).map_err(|e| e.to_string())?;
        let layer = match &req.layer {
            Some(name) => Some(explainer.value(name).map_err(|e| e.to_string())?),
            None => None,
        };
        let report = |p: Progress| out.send(Msg::Progress(p));
        let control = Control {
            progress: Some(&report),
            cancel: Some(out.cancel_flag()),
        };
        let e = explainer
            .explain(
                &photo.input,
                req.method,
                req.target,
                layer,
                &MethodOptions::default(),
                control,
            )
            .map_err(|e| format!("{}: {e}", photo.name))?;
        out.send(Msg::Map(Box::new(e.clone()), t0.elapsed().as_secs_f64()));
        let quiet = Control {
            progress: None,
            cancel: Some(out.cancel_flag()),
        };
        let scores = explainer
            .faithfulness_scores(&photo.input, &e, &CurveOptions::default(), quiet)
            .map_err(|e| format!("deletion/insertion scores: {e}"))?;
        out.send(Msg::Scores(scores));
        Ok::<(), String>(())
    })();
    if let Err(e) = result
        && !out.is_cancelled()
    {
        out.send(Msg::Failed(e));
    }
}

fn run_sanity(
    model: Arc<Model>,
    photo: Photo,
    e: Explanation,
    k: usize,
    out: &Reporter<SanityMsg>,
) {
    let result = (|| {
        let (random, layers) =
            randomise_top_layers(&model.graph, k, 0).map_err(|e| e.to_string())?;
        let explainer = Explainer::new(&random).map_err(|e| e.to_string())?;
        let layer = match &e.layer {
            Some(name) => Some(explainer.value(name).map_err(|e| e.to_string())?),
            None => None,
        };
        let control = Control {
            progress: None,
            cancel: Some(out.cancel_flag()),
        };
        // The same class as the original map: the question is whether the map depends on
        // the weights, not on which class the broken model now prefers.
        let after = explainer
            .explain(
                &photo.input,
                e.method,
                Target::Class(e.target.class),
                layer,
                &MethodOptions::default(),
                control,
            )
            .map_err(|e| e.to_string())?
            .map;
        let rho = spearman(&e.map, &after).map_err(|e| e.to_string())?;
        let s = ssim(&e.map.normalised(), &after.normalised()).map_err(|e| e.to_string())?;
        Ok::<_, String>(SanityMsg::Done {
            after,
            spearman: rho,
            ssim: s,
            layers,
        })
    })();
    out.send(result.unwrap_or_else(SanityMsg::Failed));
}

impl ExplainPanel {
    /// The heat map shown, if any (for tests and export).
    pub fn explanation(&self) -> Option<&Explanation> {
        self.shown.as_ref().map(|s| &s.explanation)
    }

    pub fn scores(&self) -> Option<FaithfulnessScores> {
        self.shown.as_ref().and_then(|s| s.scores)
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_some() || self.sanity_job.is_some()
    }

    /// Starts or finishes work without drawing (App::logic).
    pub fn logic(&mut self, ctx: &egui::Context, ws: &Workspace, settings: &ExplainSettings) {
        if let Some(job) = &mut self.job {
            for msg in job.drain(ctx) {
                match msg {
                    Msg::Progress(p) => self.progress = Some(p),
                    Msg::Map(e, seconds) => {
                        self.shown = Some(Shown {
                            explanation: *e,
                            seconds,
                            scores: None,
                            drawn: None,
                        });
                        self.error = None;
                        self.progress = None;
                    }
                    Msg::Scores(s) => {
                        if let Some(shown) = &mut self.shown {
                            shown.scores = Some(s);
                        }
                    }
                    Msg::Failed(e) => self.error = Some(e),
                }
            }
            if job.is_finished() {
                if job.panicked() {
                    self.error = Some("the explanation stopped on an internal error".into());
                }
                self.job = None;
                self.progress = None;
            }
        }
        if let Some(job) = &mut self.sanity_job {
            for msg in job.drain(ctx) {
                match msg {
                    SanityMsg::Done {
                        after,
                        spearman,
                        ssim,
                        layers,
                    } => {
                        let mut s = Sanity {
                            before: Picture::default(),
                            after: Picture::default(),
                            spearman,
                            ssim,
                            layers,
                            method: settings.method,
                        };
                        if let Some(shown) = &self.shown {
                            s.before.set(
                                ctx,
                                "sanity-before",
                                &map_to_image(&shown.explanation.map, settings.colormap),
                                false,
                            );
                        }
                        s.after.set(
                            ctx,
                            "sanity-after",
                            &map_to_image(&after, settings.colormap),
                            false,
                        );
                        self.sanity = Some(s);
                    }
                    SanityMsg::Failed(e) => self.error = Some(format!("sanity check: {e}")),
                }
            }
            if job.is_finished() {
                self.sanity_job = None;
            }
        }
        self.request_if_needed(ctx, ws, settings);
    }

    fn request_if_needed(
        &mut self,
        ctx: &egui::Context,
        ws: &Workspace,
        settings: &ExplainSettings,
    ) {
        let (Some(model), Some(slot)) = (&ws.model, ws.photo()) else {
            return;
        };
        let req = Request {
            generation: ws.generation,
            photo: ws.selected,
            method: settings.method,
            target: settings.target,
            layer: settings
                .layer
                .clone()
                .filter(|_| settings.method.uses_layer()),
        };
        if self.requested.as_ref() == Some(&req) {
            return;
        }
        if let Some(old) = self.job.take() {
            old.cancel();
        }
        self.photo_pic
            .set(ctx, "explain-photo", &slot.photo.view, false);
        self.sanity = None;
        self.requested = Some(req.clone());
        let (model, photo) = (model.model.clone(), slot.photo.clone());
        match Job::spawn("explain", ctx, move |out| {
            run_explain(model, photo, req, out)
        }) {
            Ok(job) => self.job = Some(job),
            Err(e) => self.error = Some(e),
        }
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ws: &mut Workspace,
        settings: &mut ExplainSettings,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        egui::Panel::left("explain-controls")
            .resizable(true)
            .default_size(310.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    errors.extend(self.controls(ui, ws, settings));
                });
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("explain-view")
                .show(ui, |ui| self.view(ui, ws, settings));
        });
        errors
    }

    fn controls(
        &mut self,
        ui: &mut egui::Ui,
        ws: &mut Workspace,
        settings: &mut ExplainSettings,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        ui.heading("Photos");
        let mut clicked = None;
        for (i, slot) in ws.photos.iter().enumerate() {
            let top = slot.top.first().map(|&(c, p)| {
                let label = ws
                    .model
                    .as_ref()
                    .map_or(format!("class {c}"), |m| m.label(c));
                format!("{label} {:.0} %", 100.0 * p)
            });
            let text = format!("{} — {}", slot.photo.name, top.unwrap_or_default());
            if ui.selectable_label(i == ws.selected, text).clicked() {
                clicked = Some(i);
            }
        }
        if let Some(i) = clicked {
            ws.selected = i;
        }
        if ws.is_busy() {
            ui.horizontal(|ui| {
                widgets::busy(ui);
                ui.label("opening…");
            });
        }
        ui.horizontal(|ui| {
            if ui
                .button("Open…")
                .on_hover_text("Open photos or a model (.onnx, checkpoint folder)")
                .clicked()
                && let Some(p) = super::widgets::pick_file(&[(
                    "Images and models",
                    &[
                        "png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff", "onnx",
                    ],
                )])
            {
                errors.extend(ws.open_paths(ui.ctx(), vec![p]));
            }
            if ui
                .add_enabled(!ws.photos.is_empty(), egui::Button::new("Remove"))
                .clicked()
            {
                ws.remove_selected();
            }
        });
        let field = path_field(ui, "Path:", &mut self.open_path);
        let typed_enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if (ui.button("Open path").clicked() || typed_enter) && !self.open_path.trim().is_empty() {
            let p = std::path::PathBuf::from(self.open_path.trim());
            if p.exists() {
                errors.extend(ws.open_paths(ui.ctx(), vec![p]));
            } else {
                errors.push(format!("{}: no such file or folder", p.display()));
            }
        }
        ui.weak("…or drop photos or a model anywhere in the window.");
        ui.separator();

        ui.heading("Method");
        choice_combo(
            ui,
            "method",
            &mut settings.method,
            &Method::ALL,
            Method::label,
        );
        if settings.method.fails_sanity_check() {
            ui.colored_label(
                egui::Color32::from_rgb(230, 160, 60),
                "Guided backprop fails the model-randomisation sanity check: its maps look the same for a random network.",
            );
        }
        if let Some(model) = &ws.model {
            ui.add_enabled_ui(settings.method.uses_layer(), |ui| {
                let names = &model.spatial_layers;
                let current = settings
                    .layer
                    .clone()
                    .unwrap_or_else(|| "last spatial layer (default)".into());
                egui::ComboBox::from_label("layer")
                    .selected_text(current)
                    .height(300.0)
                    .show_ui(ui, |ui| {
                        ui.selectable_value(
                            &mut settings.layer,
                            None,
                            "last spatial layer (default)",
                        );
                        for n in names {
                            ui.selectable_value(&mut settings.layer, Some(n.clone()), n);
                        }
                    });
            });
            ui.separator();
            ui.heading("Class");
            let top = ws.photo().map(|s| s.top.clone()).unwrap_or_default();
            class_picker(ui, model, &top, &mut settings.target, &mut self.search);
        }
        ui.separator();
        ui.heading("Display");
        choice_combo(
            ui,
            "colormap",
            &mut settings.colormap,
            &Colormap::ALL,
            Colormap::name,
        );
        ui.add(egui::Slider::new(&mut settings.alpha, 0.0..=1.0).text("overlay opacity"));
        ui.separator();
        ui.heading("Sanity check");
        ui.add(
            egui::Slider::new(&mut settings.sanity_layers, 1..=10)
                .text("top layers re-initialised"),
        );
        let can_check = self.shown.is_some() && self.sanity_job.is_none();
        if ui
            .add_enabled(can_check, egui::Button::new("Run sanity check"))
            .clicked()
        {
            self.start_sanity(ui.ctx(), ws, settings);
        }
        if self.sanity_job.is_some() {
            ui.horizontal(|ui| {
                widgets::busy(ui);
                ui.label("re-running on a randomised copy…");
            });
        }
        ui.separator();
        ui.heading("Export");
        path_field(ui, "Folder:", &mut settings.export_dir);
        if ui
            .add_enabled(self.shown.is_some(), egui::Button::new("Export PNG + .npy"))
            .clicked()
        {
            match self.export(ws, settings) {
                Ok(msg) => self.status = Some(msg),
                Err(e) => errors.push(e),
            }
        }
        if let Some(s) = &self.status {
            ui.weak(s);
        }
        errors
    }

    fn start_sanity(&mut self, ctx: &egui::Context, ws: &Workspace, settings: &ExplainSettings) {
        let (Some(model), Some(slot), Some(shown)) = (&ws.model, ws.photo(), &self.shown) else {
            return;
        };
        let (model, photo, e, k) = (
            model.model.clone(),
            slot.photo.clone(),
            shown.explanation.clone(),
            settings.sanity_layers,
        );
        match Job::spawn("sanity", ctx, move |out| {
            run_sanity(model, photo, e, k, out)
        }) {
            Ok(job) => self.sanity_job = Some(job),
            Err(e) => self.error = Some(e),
        }
    }

    fn export(&self, ws: &Workspace, settings: &ExplainSettings) -> Result<String, String> {
        let (Some(shown), Some(slot)) = (&self.shown, ws.photo()) else {
            return Err("there is no heat map to export yet".into());
        };
        let e = &shown.explanation;
        let img = overlay(&slot.photo.view, &e.map, settings.colormap, settings.alpha);
        let stem = std::path::Path::new(&slot.photo.name)
            .file_stem()
            .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
        let dir = std::path::PathBuf::from(settings.export_dir.trim());
        let (png, npy) = save_explanation(&dir, &stem, e.method.name(), &img, &e.map)?;
        Ok(format!("saved {} and {}", png.display(), npy.display()))
    }

    fn view(&mut self, ui: &mut egui::Ui, ws: &Workspace, settings: &ExplainSettings) {
        let Some(model) = &ws.model else {
            ui.label("Loading the model…");
            return;
        };
        let Some(slot) = ws.photo() else {
            ui.label("Drop a photo into the window, or open one on the left.");
            return;
        };
        if self.job.is_some() {
            let cancel = ui
                .horizontal(|ui| {
                    match self.progress {
                        Some(p) => progress(ui, settings.method.label(), p.done, p.total),
                        None => {
                            widgets::busy(ui);
                            ui.label(format!("computing {}…", settings.method.label()));
                        }
                    }
                    ui.button("Cancel").clicked()
                })
                .inner;
            if cancel {
                // the worker stops at its next check; the map shown stays until a new request
                if let Some(job) = self.job.take() {
                    job.cancel();
                }
                self.progress = None;
                self.status = Some(format!("{} cancelled", settings.method.label()));
            }
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        // redraw the overlay when the map, the colormap or the opacity changed
        if let Some(shown) = &mut self.shown {
            let want = (settings.colormap, settings.alpha);
            if shown.drawn != Some(want) {
                let img = overlay(
                    &slot.photo.view,
                    &shown.explanation.map,
                    settings.colormap,
                    settings.alpha,
                );
                self.overlay_pic
                    .set(ui.ctx(), "explain-overlay", &img, false);
                shown.drawn = Some(want);
            }
        }
        if !self.photo_pic.is_set() {
            self.photo_pic
                .set(ui.ctx(), "explain-photo", &slot.photo.view, false);
        }
        match &self.shown {
            Some(shown) => {
                let e = &shown.explanation;
                ui.heading(format!(
                    "{} — {} for “{}” ({:.1} %)",
                    slot.photo.name,
                    e.method.label(),
                    model.label(e.target.class),
                    100.0 * e.probability
                ));
                if let Some(layer) = &e.layer {
                    ui.label(format!("layer: {layer}"));
                }
            }
            None => {
                ui.heading(&slot.photo.name);
            }
        }
        let side = ((ui.available_width() - 16.0) / 2.0).clamp(120.0, 520.0);
        ui.horizontal(|ui| {
            ui.vertical(|ui| {
                ui.label("What the network sees");
                self.photo_pic.show(ui, egui::vec2(side, side));
            });
            ui.vertical(|ui| {
                ui.label("Heat map");
                if self.shown.is_some() {
                    self.overlay_pic.show(ui, egui::vec2(side, side));
                } else {
                    ui.allocate_space(egui::vec2(side, side));
                }
            });
        });
        if let Some(shown) = &self.shown {
            ui.horizontal_wrapped(|ui| {
                match shown.scores {
                    Some(s) => {
                        ui.label(format!(
                            "Deletion AUC {:.3} (lower is better)",
                            s.deletion_auc
                        ));
                        ui.separator();
                        ui.label(format!(
                            "Insertion AUC {:.3} (higher is better)",
                            s.insertion_auc
                        ));
                    }
                    None => {
                        widgets::busy(ui);
                        ui.label("scoring the map (deletion / insertion)…");
                    }
                }
                ui.separator();
                ui.weak(format!("computed in {:.2} s", shown.seconds));
            });
        }
        ui.separator();
        ui.label("Top-5");
        egui::Grid::new("top5").striped(true).show(ui, |ui| {
            for &(c, p) in &slot.top {
                ui.label(format!("{:.1} %", 100.0 * p));
                ui.label(model.label(c));
                ui.end_row();
            }
        });
        if let Some(s) = &self.sanity {
            ui.separator();
            ui.heading(format!(
                "Sanity check: {} after re-initialising {} layers",
                s.method.label(),
                s.layers.len()
            ));
            ui.label(format!(
                "Spearman rank correlation {:.3}, SSIM {:.3}. A map that explains the model should change (low values) when its weights are randomised.",
                s.spearman, s.ssim
            ));
            ui.weak(format!("re-initialised: {}", s.layers.join(", ")));
            let small = egui::vec2(side * 0.7, side * 0.7);
            ui.horizontal(|ui| {
                ui.vertical(|ui| {
                    ui.label("trained model");
                    s.before.show(ui, small);
                });
                ui.vertical(|ui| {
                    ui.label("randomised model");
                    s.after.show(ui, small);
                });
            });
        }
    }

    /// Photos of a folder data set can be sent here from the dataset panel.
    pub fn add_file(
        ws: &mut Workspace,
        ctx: &egui::Context,
        path: std::path::PathBuf,
    ) -> Result<(), String> {
        ws.add_photos(ctx, vec![PhotoSpec::File(path)])
    }
}
