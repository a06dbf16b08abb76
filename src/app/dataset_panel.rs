//! The dataset panel: a virtualised thumbnail grid (only the visible rows are decoded, on a
//! worker, and at most a few thousand thumbnails stay in memory), a class filter, and after
//! training the model's prediction and correctness for each image.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use image::RgbaImage;

use super::jobs::{Job, Reporter};
use super::photo::unit_tensor_to_rgba;
use super::widgets::{self, path_field, progress};
use crate::data::Dataset;
use crate::engine::Tensor;
use crate::models::scores::{probabilities, scores, top_k};
use crate::models::{self, Model};
use crate::train::data::{DataSpec, TrainData};

const THUMB: f32 = 72.0;
const MAX_THUMBS: usize = 3000;
const PREDICT_BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SplitChoice {
    #[default]
    Train,
    Val,
    Test,
}

enum LoadMsg {
    Data(Arc<TrainData>),
    Failed(String),
}

enum ThumbMsg {
    Thumb(SplitChoice, usize, RgbaImage),
}

enum PredictMsg {
    Progress(usize, usize),
    Done(SplitChoice, Vec<usize>),
    Failed(String),
}

#[derive(Default)]
pub struct DatasetPanel {
    data: Option<Arc<TrainData>>,
    split: SplitChoice,
    class_filter: Option<usize>,
    /// Item indices passing the filter, for (split, filter).
    visible: Option<(SplitChoice, Option<usize>, Vec<usize>)>,
    thumbs: HashMap<(SplitChoice, usize), egui::TextureHandle>,
    thumb_order: VecDeque<(SplitChoice, usize)>,
    thumb_job: Option<Job<ThumbMsg>>,
    requested: Vec<usize>,
    load_job: Option<Job<LoadMsg>>,
    predict_job: Option<Job<PredictMsg>>,
    predict_progress: Option<(usize, usize)>,
    /// Predicted class per item of a split.
    predictions: HashMap<SplitChoice, Vec<usize>>,
    folder: String,
    error: Option<String>,
    /// Set by the app when a trained model exists.
    pub model: Option<Arc<Model>>,
}

fn split_of(data: &TrainData, s: SplitChoice) -> Option<&Dataset> {
    match s {
        SplitChoice::Train => Some(&data.train),
        SplitChoice::Val => data.val.as_ref(),
        SplitChoice::Test => data.test.as_ref(),
    }
}

fn load_thumbs(
    data: Arc<TrainData>,
    split: SplitChoice,
    items: Vec<usize>,
    out: &Reporter<ThumbMsg>,
) {
    let Some(set) = split_of(&data, split) else {
        return;
    };
    for i in items {
        if out.is_cancelled() {
            return;
        }
        let img = set
            .load_raw(i)
            .ok()
            .and_then(|t| unit_tensor_to_rgba(&t))
            .unwrap_or_else(|| RgbaImage::from_pixel(8, 8, image::Rgba([90, 20, 20, 255])));
        out.send(ThumbMsg::Thumb(split, i, img));
    }
}

fn predict(
    model: Arc<Model>,
    data: Arc<TrainData>,
    split: SplitChoice,
    out: &Reporter<PredictMsg>,
) {
    let Some(set) = split_of(&data, split) else {
        return;
    };
    let n = set.len();
    let mut preds = Vec::with_capacity(n);
    for start in (0..n).step_by(PREDICT_BATCH) {
        if out.is_cancelled() {
            return;
        }
        let end = (start + PREDICT_BATCH).min(n);
        let mut xs = Vec::new();
        let mut shape = Vec::new();
        for i in start..end {
            match set.load(i) {
                Ok((x, _)) => {
                    shape = x.shape().to_vec();
                    xs.extend_from_slice(x.data());
                }
                Err(e) => return out.send(PredictMsg::Failed(e.to_string())),
            }
        }
        let mut full = vec![end - start];
        full.extend_from_slice(&shape);
        let batch = match Tensor::new(full, xs) {
            Ok(t) => t,
            Err(e) => return out.send(PredictMsg::Failed(e.to_string())),
        };
        let y = match scores(&model.graph, &batch) {
            Ok(y) => y,
            Err(e) => return out.send(PredictMsg::Failed(e)),
        };
        let per = y.len() / (end - start).max(1);
        for row in y.chunks(per.max(1)) {
            preds.push(top_k(&probabilities(row), 1).first().map_or(0, |&(c, _)| c));
        }
        out.send(PredictMsg::Progress(end, n));
    }
    out.send(PredictMsg::Done(split, preds));
}

impl DatasetPanel {
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }

    /// Shows a data set (the training panel's, or one opened here).
    pub fn set_data(&mut self, data: Arc<TrainData>) {
        self.data = Some(data);
        self.visible = None;
        self.thumbs.clear();
        self.thumb_order.clear();
        self.predictions.clear();
        self.thumb_job = None;
        self.class_filter = None;
    }

    pub fn thumbnails_loaded(&self) -> usize {
        self.thumbs.len()
    }

    /// Opens an image folder for browsing (thumbnails at 96x96).
    pub fn open_folder(&mut self, ctx: &egui::Context, root: std::path::PathBuf) {
        let spec = DataSpec::Folder {
            root,
            val_fraction: 0.0,
            test_fraction: 0.0,
            seed: 0,
        };
        self.load(ctx, spec);
    }

    pub fn load(&mut self, ctx: &egui::Context, spec: DataSpec) {
        let preset = models::Preprocess::unit().with_size([96, 96]);
        let job = Job::spawn("dataset", ctx, move |out| {
            out.send(match spec.build(&[1, 3, 96, 96], &preset) {
                Ok(d) => LoadMsg::Data(Arc::new(d)),
                Err(e) => LoadMsg::Failed(e.to_string()),
            })
        });
        match job {
            Ok(j) => self.load_job = Some(j),
            Err(e) => self.error = Some(e),
        }
    }

    pub fn logic(&mut self, ctx: &egui::Context) {
        if let Some(job) = &mut self.load_job {
            let msgs = job.drain(ctx);
            if job.is_finished() {
                self.load_job = None;
            }
            for m in msgs {
                match m {
                    LoadMsg::Data(d) => {
                        self.set_data(d);
                        self.error = None;
                    }
                    LoadMsg::Failed(e) => self.error = Some(e),
                }
            }
        }
        if let Some(job) = &mut self.thumb_job {
            for ThumbMsg::Thumb(split, i, img) in job.drain(ctx) {
                let tex = ctx.load_texture(
                    format!("thumb-{i}"),
                    super::texture::color_image(&img),
                    egui::TextureOptions::LINEAR,
                );
                self.thumbs.insert((split, i), tex);
                self.thumb_order.push_back((split, i));
                while self.thumb_order.len() > MAX_THUMBS {
                    if let Some(old) = self.thumb_order.pop_front() {
                        self.thumbs.remove(&old);
                    }
                }
            }
            if job.is_finished() {
                self.thumb_job = None;
                self.requested.clear();
            }
        }
        if let Some(job) = &mut self.predict_job {
            for m in job.drain(ctx) {
                match m {
                    PredictMsg::Progress(d, n) => self.predict_progress = Some((d, n)),
                    PredictMsg::Done(split, p) => {
                        self.predictions.insert(split, p);
                        self.predict_progress = None;
                    }
                    PredictMsg::Failed(e) => self.error = Some(e),
                }
            }
            if job.is_finished() {
                self.predict_job = None;
            }
        }
    }

    fn visible_items(&mut self) -> &[usize] {
        let key = (self.split, self.class_filter);
        let stale = self
            .visible
            .as_ref()
            .is_none_or(|(s, f, _)| (*s, *f) != key);
        if stale {
            let items = match self.data.as_ref().and_then(|d| split_of(d, self.split)) {
                Some(set) => (0..set.len())
                    .filter(|&i| self.class_filter.is_none_or(|c| set.label(i) == Some(c)))
                    .collect(),
                None => Vec::new(),
            };
            self.visible = Some((key.0, key.1, items));
        }
        self.visible.as_ref().map_or(&[], |v| v.2.as_slice())
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            path_field(ui, "Image folder:", &mut self.folder);
            if ui.button("Open folder").clicked() && !self.folder.trim().is_empty() {
                let root = std::path::PathBuf::from(self.folder.trim());
                self.open_folder(ui.ctx(), root);
            }
            if self.load_job.is_some() {
                widgets::busy(ui);
                ui.label("scanning…");
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let Some(data) = self.data.clone() else {
            ui.label("Start a training run (its data set appears here) or open an image folder.");
            return;
        };
        ui.horizontal(|ui| {
            ui.label("Split:");
            let sizes = [
                Some(data.train.len()),
                data.val.as_ref().map(Dataset::len),
                data.test.as_ref().map(Dataset::len),
            ];
            for (s, name, len) in [
                (SplitChoice::Train, "train", sizes[0]),
                (SplitChoice::Val, "validation", sizes[1]),
                (SplitChoice::Test, "test", sizes[2]),
            ] {
                if let Some(len) = len {
                    ui.selectable_value(&mut self.split, s, format!("{name} ({len})"));
                }
            }
            ui.separator();
            ui.label("Class:");
            ui.selectable_value(&mut self.class_filter, None, "all");
            for (i, c) in data.classes.iter().enumerate().take(20) {
                ui.selectable_value(&mut self.class_filter, Some(i), c);
            }
        });
        if let Some(model) = self.model.clone() {
            ui.horizontal(|ui| {
                let busy = self.predict_job.is_some();
                if ui
                    .add_enabled(!busy, egui::Button::new("Predict with the trained model"))
                    .clicked()
                {
                    let (d, split) = (data.clone(), self.split);
                    match Job::spawn("dataset-predict", ui.ctx(), move |out| {
                        predict(model, d, split, out)
                    }) {
                        Ok(j) => self.predict_job = Some(j),
                        Err(e) => self.error = Some(e),
                    }
                }
                if let Some((d, n)) = self.predict_progress {
                    progress(ui, "predicting", d, n);
                }
                if let Some(p) = self.predictions.get(&self.split)
                    && let Some(set) = split_of(&data, self.split)
                {
                    let right = (0..p.len()).filter(|&i| set.label(i) == Some(p[i])).count();
                    ui.label(format!(
                        "{right} of {} correct ({:.1} %)",
                        p.len(),
                        100.0 * right as f64 / p.len().max(1) as f64
                    ));
                }
            });
        }
        let split = self.split;
        let items: Vec<usize> = self.visible_items().to_vec();
        ui.weak(format!("{} images", items.len()));
        let cols = ((ui.available_width() / (THUMB + 8.0)).floor() as usize).max(1);
        let rows = items.len().div_ceil(cols);
        let mut missing = Vec::new();
        let preds = self.predictions.get(&split).cloned();
        let set = split_of(&data, split);
        egui::ScrollArea::vertical().id_salt("thumbs").show_rows(
            ui,
            THUMB + 22.0,
            rows,
            |ui, range| {
                for r in range {
                    ui.horizontal(|ui| {
                        for &i in items.iter().skip(r * cols).take(cols) {
                            ui.vertical(|ui| {
                                ui.set_width(THUMB + 4.0);
                                match self.thumbs.get(&(split, i)) {
                                    Some(t) => {
                                        let sized = egui::load::SizedTexture::new(
                                            t.id(),
                                            egui::vec2(THUMB, THUMB),
                                        );
                                        ui.add(egui::Image::new(sized));
                                    }
                                    None => {
                                        // a still placeholder: a spinner per cell
                                        // would repaint the window every frame
                                        let (rect, _) = ui.allocate_exact_size(
                                            egui::vec2(THUMB, THUMB),
                                            egui::Sense::hover(),
                                        );
                                        ui.painter().rect_filled(
                                            rect,
                                            4.0,
                                            ui.visuals().faint_bg_color,
                                        );
                                        missing.push(i);
                                    }
                                }
                                let truth = set.and_then(|s| s.label(i));
                                let name = |c: Option<usize>| {
                                    c.and_then(|c| data.classes.get(c))
                                        .cloned()
                                        .unwrap_or_default()
                                };
                                match preds.as_ref().and_then(|p| p.get(i).copied()) {
                                    Some(p) => {
                                        let ok = Some(p) == truth;
                                        let colour = if ok {
                                            egui::Color32::from_rgb(90, 200, 90)
                                        } else {
                                            egui::Color32::from_rgb(230, 80, 80)
                                        };
                                        ui.colored_label(
                                            colour,
                                            format!(
                                                "{} {}",
                                                if ok { "right:" } else { "wrong:" },
                                                name(Some(p))
                                            ),
                                        );
                                    }
                                    None => {
                                        ui.small(name(truth));
                                    }
                                }
                            });
                        }
                    });
                }
            },
        );
        if !missing.is_empty() && self.thumb_job.is_none() && missing != self.requested {
            self.requested = missing.clone();
            match Job::spawn("thumbnails", ui.ctx(), move |out| {
                load_thumbs(data, split, missing, out)
            }) {
                Ok(j) => self.thumb_job = Some(j),
                Err(e) => self.error = Some(e),
            }
        }
    }
}
