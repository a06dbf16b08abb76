//! The layers panel: the model summary as a table; a click on a layer shows its activation grid
//! for the current photo; a click on a channel enlarges it with its gradient-weighted importance
//! (the Grad-CAM weight α_k, the spatial mean of ∂score/∂A_k) for the chosen class. A toggle
//! swaps the activation grid for the units view (`app::microscope`): what each channel of the
//! layer responds to.

use std::sync::Arc;

use image::RgbaImage;
use serde::{Deserialize, Serialize};

use super::jobs::{Job, Reporter};
use super::microscope::{PhotoMaps, UnitsSettings, UnitsView};
use super::photo::Photo;
use super::texture::Picture;
use super::widgets::{self, choice_combo, class_picker};
use super::workspace::Workspace;
use crate::explain::activations::{Normalisation, channel_maps};
use crate::explain::cam::GradCamVariant;
use crate::explain::{Explainer, Map, Target};
use crate::models::Model;
use crate::render::colormap::Colormap;
use crate::render::grid::{GridOptions, channel_grid};
use crate::render::heatmap::map_to_image;

/// Channels drawn per page of the grid (a 1280-channel layer is 5 pages).
const PAGE: usize = 256;
const CELL: u32 = 56;
const GAP: u32 = 2;

/// Op families that can be hidden from the table.
const KINDS: [(&str, &[&str]); 4] = [
    ("batch norm", &["BatchNorm2d", "LayerNorm"]),
    (
        "activations",
        &[
            "Relu",
            "Relu6",
            "Clip",
            "LeakyRelu",
            "Sigmoid",
            "Tanh",
            "HardSigmoid",
            "HardSwish",
            "Silu",
            "Erf",
            "Gelu",
            "Softmax",
        ],
    ),
    (
        "shape ops",
        &[
            "Flatten",
            "Reshape",
            "Transpose",
            "Pad",
            "Identity",
            "Dropout",
            "Concat",
            "Slice",
            "RepeatBatch",
        ],
    ),
    ("arithmetic", &["Add", "Mul", "Sub", "Div"]),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LayersSettings {
    pub normalisation: Normalisation,
    /// Families from [`KINDS`] hidden from the table.
    pub hidden: Vec<String>,
    pub colormap: Colormap,
    /// The units view and its work's settings.
    pub units: UnitsSettings,
}

impl Default for LayersSettings {
    fn default() -> Self {
        Self {
            normalisation: Normalisation::PerMap,
            hidden: vec!["batch norm".into(), "activations".into()],
            colormap: Colormap::Viridis,
            units: UnitsSettings::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Request {
    generation: u64,
    photo: usize,
    layer: String,
    page: usize,
    normalisation: Normalisation,
    target: Target,
    colormap: Colormap,
}

/// A computed layer view.
struct Computed {
    /// The layer and photo it shows (a new request's result may still be on its way).
    layer: String,
    photo: usize,
    shape: Vec<usize>,
    grid: Option<RgbaImage>,
    /// Maps of this page, in [0, 1].
    maps: Vec<Map>,
    /// Grad-CAM weight per channel of the whole layer (None for non-spatial layers).
    weights: Option<Vec<f32>>,
    /// Mean activation per channel.
    means: Vec<f32>,
    /// First channel index of this page.
    first: usize,
    /// For non-spatial layers: the largest values `(index, value)`.
    top_values: Vec<(usize, f32)>,
    class: Option<usize>,
}

enum Msg {
    Done(Box<Computed>),
    Failed(String),
}

#[derive(Default)]
pub struct LayersPanel {
    selected: Option<String>,
    page: usize,
    target: Target,
    search: String,
    requested: Option<Request>,
    job: Option<Job<Msg>>,
    computed: Option<Computed>,
    grid_pic: Picture,
    channel: Option<usize>,
    channel_pic: Picture,
    error: Option<String>,
    /// Bumped with every computed view (the unit page redraws its photo map when it changes).
    serial: u64,
    units: UnitsView,
}

fn compute(model: Arc<Model>, photo: Photo, req: Request, out: &Reporter<Msg>) {
    let result = (|| {
        let ex = Explainer::new(&model.graph).map_err(|e| e.to_string())?;
        let id = ex.value(&req.layer).map_err(|e| e.to_string())?;
        let acts = ex
            .activations(&photo.input, &[id])
            .map_err(|e| e.to_string())?;
        let a = acts
            .into_iter()
            .next()
            .ok_or("the layer produced nothing")?;
        let shape = a.shape().to_vec();
        // a layer on the image grid, read as channel planes [1, c, h, w] (token and
        // channel-last layers included)
        let layout = ex.layout(id);
        let planes = match layout {
            Some(l) => Some(l.to_planes(&a).map_err(|e| e.to_string())?),
            None => None,
        };
        let Some(a) = planes else {
            let mut top: Vec<(usize, f32)> = a.data().iter().copied().enumerate().collect();
            top.sort_by(|x, y| y.1.total_cmp(&x.1));
            top.truncate(20);
            return Ok(Computed {
                layer: req.layer.clone(),
                photo: req.photo,
                shape,
                grid: None,
                maps: Vec::new(),
                weights: None,
                means: Vec::new(),
                first: 0,
                top_values: top,
                class: None,
            });
        };
        let [_, c, ph, pw] = a.dims4().map_err(|e| e.to_string())?;
        let plane = ph * pw;
        let means: Vec<f32> = (0..c)
            .map(|k| a.data()[k * plane..(k + 1) * plane].iter().sum::<f32>() / plane.max(1) as f32)
            .collect();
        let first = (req.page * PAGE).min(c.saturating_sub(1));
        let picked: Vec<usize> = (first..(first + PAGE).min(c)).collect();
        let maps =
            channel_maps(&a, 0, Some(&picked), req.normalisation).map_err(|e| e.to_string())?;
        let opts = GridOptions {
            columns: Some(16.min(picked.len().max(1))),
            cell: CELL,
            gap: GAP,
            colormap: req.colormap,
            labels: true,
        };
        let grid = channel_grid(&maps, &picked, &opts);
        if out.is_cancelled() {
            return Err(String::new());
        }
        // importance of each channel for the class: one backward pass to this layer
        let cam = ex
            .grad_cam(&photo.input, req.target, Some(id), GradCamVariant::GradCam)
            .map_err(|e| e.to_string())?;
        Ok(Computed {
            layer: req.layer.clone(),
            photo: req.photo,
            shape,
            grid: Some(grid),
            maps,
            weights: Some(cam.weights),
            means,
            first,
            top_values: Vec::new(),
            class: Some(cam.target.class),
        })
    })();
    match result {
        Ok(c) => out.send(Msg::Done(Box::new(c))),
        Err(e) if e.is_empty() => {}
        Err(e) => out.send(Msg::Failed(e)),
    }
}

impl LayersPanel {
    pub fn selected_layer(&self) -> Option<&str> {
        self.selected.as_deref()
    }

    pub fn select_layer(&mut self, name: &str) {
        self.selected = Some(name.to_string());
        self.page = 0;
        self.channel = None;
    }

    pub fn select_channel(&mut self, channel: usize) {
        self.channel = Some(channel);
        self.channel_pic.clear();
    }

    /// Whether an activation grid is on screen (for tests).
    pub fn has_grid(&self) -> bool {
        self.computed.as_ref().is_some_and(|c| c.grid.is_some()) && self.grid_pic.is_set()
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_some()
    }

    pub fn units(&self) -> &UnitsView {
        &self.units
    }

    pub fn units_mut(&mut self) -> &mut UnitsView {
        &mut self.units
    }

    pub fn logic(&mut self, ctx: &egui::Context, ws: &Workspace, settings: &LayersSettings) {
        self.units
            .logic(ctx, ws, self.selected.as_deref(), &settings.units);
        if settings.units.show
            && let Some(k) = self.units.open_unit()
        {
            // the unit page shows the photo's map of its channel: compute that channel's page
            self.page = k / PAGE;
        }
        if let Some(job) = &mut self.job {
            for msg in job.drain(ctx) {
                match msg {
                    Msg::Done(c) => {
                        match &c.grid {
                            Some(g) => self.grid_pic.set(ctx, "layer-grid", g, true),
                            None => self.grid_pic.clear(),
                        }
                        self.channel_pic.clear();
                        self.computed = Some(*c);
                        self.serial += 1;
                        self.error = None;
                    }
                    Msg::Failed(e) => self.error = Some(e),
                }
            }
            if job.is_finished() {
                if job.panicked() {
                    self.error = Some("the layer view stopped on an internal error".into());
                }
                self.job = None;
            }
        }
        let (Some(model), Some(slot), Some(layer)) = (&ws.model, ws.photo(), &self.selected) else {
            return;
        };
        let req = Request {
            generation: ws.generation,
            photo: ws.selected,
            layer: layer.clone(),
            page: self.page,
            normalisation: settings.normalisation,
            target: self.target,
            colormap: settings.colormap,
        };
        if self.requested.as_ref() == Some(&req) {
            return;
        }
        self.requested = Some(req.clone());
        let (model, photo) = (model.model.clone(), slot.photo.clone());
        match Job::spawn("layer", ctx, move |out| compute(model, photo, req, out)) {
            Ok(job) => self.job = Some(job),
            Err(e) => self.error = Some(e),
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, ws: &Workspace, settings: &mut LayersSettings) {
        let Some(model) = &ws.model else {
            ui.label("Loading the model…");
            return;
        };
        egui::Panel::left("layers-table")
            .resizable(true)
            .default_size(520.0)
            .show(ui, |ui| {
                ui.heading(format!("{} — {} nodes", model.name, model.rows.len()));
                ui.horizontal_wrapped(|ui| {
                    ui.label("Show:");
                    for (kind, _) in KINDS {
                        let mut shown = !settings.hidden.iter().any(|h| h == kind);
                        if ui.checkbox(&mut shown, kind).changed() {
                            settings.hidden.retain(|h| h != kind);
                            if !shown {
                                settings.hidden.push(kind.to_string());
                            }
                        }
                    }
                });
                let hidden_ops: Vec<&str> = KINDS
                    .iter()
                    .filter(|(k, _)| settings.hidden.iter().any(|h| h == k))
                    .flat_map(|(_, ops)| ops.iter().copied())
                    .collect();
                let rows: Vec<&crate::models::summary::NodeRow> = model
                    .rows
                    .iter()
                    .filter(|r| !hidden_ops.contains(&r.op.as_str()))
                    .collect();
                let total: usize = model.rows.iter().map(|r| r.params).sum();
                ui.weak(format!(
                    "{} of {} layers shown · {} trainable parameters",
                    rows.len(),
                    model.rows.len(),
                    total
                ));
                ui.separator();
                let row_h = 20.0;
                let mut clicked = None;
                egui::ScrollArea::vertical()
                    .id_salt("layers-rows")
                    .show_rows(ui, row_h, rows.len(), |ui, range| {
                        egui::Grid::new("layers-grid")
                            .num_columns(4)
                            .striped(true)
                            .min_row_height(row_h)
                            .show(ui, |ui| {
                                for r in &rows[range] {
                                    let sel = self.selected.as_deref() == Some(r.output.as_str());
                                    let resp = ui
                                        .selectable_label(sel, &r.name)
                                        .on_hover_text(format!("output: {}", r.output));
                                    if resp.clicked() {
                                        clicked = Some(r.output.clone());
                                    }
                                    ui.label(&r.op);
                                    ui.label(format!("{:?}", r.shape));
                                    ui.label(if r.params > 0 {
                                        r.params.to_string()
                                    } else {
                                        String::new()
                                    });
                                    ui.end_row();
                                }
                            });
                    });
                if let Some(name) = clicked {
                    self.select_layer(&name);
                }
            });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("layer-view")
                .show(ui, |ui| self.view(ui, ws, settings));
        });
    }

    fn view(&mut self, ui: &mut egui::Ui, ws: &Workspace, settings: &mut LayersSettings) {
        let (Some(model), Some(slot)) = (&ws.model, ws.photo()) else {
            ui.label("Open a photo to see what each layer makes of it.");
            return;
        };
        let Some(layer) = self.selected.clone() else {
            ui.label(format!(
                "Click a layer on the left to see its activations for {}.",
                slot.photo.name
            ));
            return;
        };
        ui.horizontal(|ui| {
            ui.heading(&layer);
            if self.job.is_some() {
                widgets::busy(ui);
            }
        });
        ui.horizontal(|ui| {
            ui.selectable_value(&mut settings.units.show, false, "Activations")
                .on_hover_text("the layer's channels for the current photo");
            ui.selectable_value(&mut settings.units.show, true, "Units")
                .on_hover_text(
                    "what each channel responds to: its feature visualisation and best patches",
                );
        });
        if settings.units.show {
            // the photo's maps only once they are this layer's and this photo's
            let computed = self
                .computed
                .as_ref()
                .filter(|c| c.layer == layer && c.photo == ws.selected);
            let maps = PhotoMaps {
                photo: &slot.photo.name,
                first: computed.map_or(0, |c| c.first),
                maps: computed.map_or(&[][..], |c| c.maps.as_slice()),
                serial: self.serial,
                colormap: settings.colormap,
                dense: computed.is_some_and(|c| c.grid.is_none()),
            };
            self.units.ui(ui, ws, &mut settings.units, &maps);
            return;
        }
        ui.horizontal(|ui| {
            ui.label("Normalise:");
            ui.selectable_value(
                &mut settings.normalisation,
                Normalisation::PerMap,
                "per map",
            );
            ui.selectable_value(
                &mut settings.normalisation,
                Normalisation::PerLayer,
                "per layer",
            );
            choice_combo(
                ui,
                "colours",
                &mut settings.colormap,
                &Colormap::ALL,
                Colormap::name,
            );
        });
        egui::CollapsingHeader::new("Class for channel importance").show(ui, |ui| {
            class_picker(ui, model, &slot.top, &mut self.target, &mut self.search);
        });
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let Some(c) = &self.computed else {
            return;
        };
        ui.label(format!(
            "output shape {:?} for {}",
            c.shape, slot.photo.name
        ));
        if c.grid.is_none() {
            ui.label("Not a spatial layer: its largest values");
            egui::Grid::new("top-values").striped(true).show(ui, |ui| {
                for &(i, v) in &c.top_values {
                    ui.label(format!("{i}"));
                    ui.label(model.label(i));
                    ui.label(format!("{v:.4}"));
                    ui.end_row();
                }
            });
            return;
        }
        let channels = c.shape[1];
        if channels > PAGE {
            ui.horizontal(|ui| {
                let pages = channels.div_ceil(PAGE);
                for p in 0..pages {
                    let text = format!("{}–{}", p * PAGE, ((p + 1) * PAGE).min(channels) - 1);
                    if ui.selectable_label(self.page == p, text).clicked() {
                        self.page = p;
                    }
                }
            });
        }
        // the channel detail first, so the grid below can take the rest of the width
        if let Some(k) = self
            .channel
            .filter(|&k| k >= c.first && k - c.first < c.maps.len())
        {
            if !self.channel_pic.is_set() {
                self.channel_pic.set(
                    ui.ctx(),
                    "layer-channel",
                    &map_to_image(&c.maps[k - c.first], settings.colormap),
                    true,
                );
            }
            ui.horizontal(|ui| {
                self.channel_pic.show(ui, egui::vec2(200.0, 200.0));
                ui.vertical(|ui| {
                    ui.heading(format!("channel {k}"));
                    ui.label(format!(
                        "mean activation {:.4}",
                        c.means.get(k).copied().unwrap_or(0.0)
                    ));
                    if let (Some(w), Some(class)) = (&c.weights, c.class) {
                        let wk = w.get(k).copied().unwrap_or(0.0);
                        let rank = 1 + w.iter().filter(|&&x| x > wk).count();
                        ui.label(format!(
                            "importance for “{}”: α = {wk:.5}",
                            model.label(class)
                        ));
                        ui.label(format!(
                            "contribution α·mean = {:.5} · rank {rank} of {}",
                            wk * c.means.get(k).copied().unwrap_or(0.0),
                            w.len()
                        ));
                    }
                });
            });
            ui.separator();
        }
        let [gw, _] = self.grid_pic.size();
        let width = ui.available_width().min(gw as f32 * 1.5);
        if let Some(resp) = self.grid_pic.show(ui, egui::vec2(width, 10_000.0)) {
            let resp = resp.on_hover_text("Click a channel to enlarge it");
            if resp.clicked()
                && let Some(pos) = resp.interact_pointer_pos()
            {
                let scale = resp.rect.width() / gw.max(1) as f32;
                let px = (pos - resp.rect.min) / scale;
                let step = (CELL + GAP) as f32;
                let col = ((px.x - GAP as f32) / step).floor();
                let row = ((px.y - GAP as f32) / step).floor();
                let cols = 16.min(c.maps.len().max(1)) as f32;
                if col >= 0.0 && row >= 0.0 && col < cols {
                    let i = (row * cols + col) as usize;
                    if i < c.maps.len() {
                        self.select_channel(c.first + i);
                    }
                }
            }
        }
    }
}
