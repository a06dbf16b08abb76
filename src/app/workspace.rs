//! The model and photos the explain, layers and dream panels look at. Opening a model or photos
//! runs on a worker: the model is imported, every photo is prepared for it and classified, and
//! each result arrives on its own so that the list fills in as the work proceeds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::jobs::{Job, Reporter};
use super::photo::Photo;
use crate::engine::Tensor;
use crate::explain::activations::spatial_values;
use crate::models::bundled::{self, SAMPLE_IMAGES};
use crate::models::scores::{probabilities, scores, top_k};
use crate::models::summary::{NodeRow, rows};
use crate::models::{self, Model};

/// What model to open; persisted between runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ModelSpec {
    /// A bundled pretrained model (`efficientnet-lite0`).
    Pretrained(String),
    /// An `.onnx` file or a checkpoint directory.
    Path(PathBuf),
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Pretrained("efficientnet-lite0".into())
    }
}

/// Where a photo comes from; persisted between runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PhotoSpec {
    /// One of the sample photos compiled into the binary, by file name.
    Sample(String),
    File(PathBuf),
}

/// A model ready to run, with what the panels show about it.
#[derive(Clone)]
pub struct LoadedModel {
    /// `None` for a model that exists only in memory (trained in this session).
    pub spec: Option<ModelSpec>,
    pub name: String,
    pub model: Arc<Model>,
    pub rows: Vec<NodeRow>,
    /// Names of the layers on the image grid (the CAM layer choices), found once: following
    /// layouts through a large transformer takes longer than a frame.
    pub spatial_layers: Vec<String>,
}

impl LoadedModel {
    pub fn new(spec: Option<ModelSpec>, name: String, model: Model) -> Self {
        let rows = rows(&model.graph);
        let spatial_layers = spatial_values(&model.graph)
            .into_iter()
            .map(|v| model.graph.value(v).name.clone())
            .collect();
        Self {
            spec,
            name,
            model: Arc::new(model),
            rows,
            spatial_layers,
        }
    }

    /// The class name of output `i` (its index when the model has no labels).
    pub fn label(&self, i: usize) -> String {
        let labels = &self.model.description.labels;
        match labels.get(i) {
            Some(l) => l.clone(),
            None if labels.is_empty()
                && crate::models::bundled::outputs_per_example(&self.model.graph) == 1 =>
            {
                ["negative", "positive"]
                    .get(i)
                    .map_or(format!("class {i}"), |s| s.to_string())
            }
            None => format!("class {i}"),
        }
    }

    /// Number of classes the model scores (2 for a single logit).
    pub fn classes(&self) -> usize {
        match bundled::outputs_per_example(&self.model.graph) {
            1 => 2,
            k => k,
        }
    }
}

/// A photo with the model's top classes for it.
#[derive(Clone)]
pub struct PhotoSlot {
    pub spec: PhotoSpec,
    pub photo: Photo,
    /// `(class, probability)`, best first.
    pub top: Vec<(usize, f32)>,
}

enum Msg {
    Model(LoadedModel),
    Photo(PhotoSlot),
    ModelFailed(String),
    /// A photo that cannot be opened: reported once and dropped.
    PhotoFailed(PhotoSpec, String),
}

/// The model, the photos and the selection.
#[derive(Default)]
pub struct Workspace {
    pub model: Option<LoadedModel>,
    pub photos: Vec<PhotoSlot>,
    pub selected: usize,
    /// Bumped whenever the model or the photos change, so panels know to recompute.
    pub generation: u64,
    job: Option<Job<Msg>>,
    /// Photos the running job will (re)deliver, by spec.
    pending: Vec<PhotoSpec>,
}

fn load_spec(spec: &ModelSpec) -> Result<LoadedModel, String> {
    match spec {
        ModelSpec::Pretrained(name) => {
            let model = bundled::pretrained(name)
                .ok_or_else(|| format!("{name}: there is no bundled model of that name"))?
                .map_err(|e| format!("{name}: {e}"))?;
            Ok(LoadedModel::new(Some(spec.clone()), name.clone(), model))
        }
        ModelSpec::Path(path) => {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let model = if path.is_dir() {
                models::load_model(path).map_err(|e| e.to_string())?
            } else {
                bundled::open_onnx(path).map_err(|e| e.to_string())?.0
            };
            Ok(LoadedModel::new(Some(spec.clone()), name, model))
        }
    }
}

fn open_photo(spec: &PhotoSpec, model: &Model) -> Result<Photo, String> {
    let preset = &model.description.preprocess;
    match spec {
        PhotoSpec::Sample(name) => {
            let bytes = SAMPLE_IMAGES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| *b)
                .ok_or_else(|| format!("{name}: no bundled sample photo has that name"))?;
            Photo::from_bytes(name, bytes, preset)
        }
        PhotoSpec::File(path) => Photo::open(path, preset),
    }
}

/// The model's `k` best classes for a prepared input `[1, ...]`.
pub fn classify(model: &Model, input: &Tensor, k: usize) -> Result<Vec<(usize, f32)>, String> {
    Ok(top_k(&probabilities(&scores(&model.graph, input)?), k))
}

/// Is this path a model (an .onnx file or a checkpoint directory) rather than a photo?
pub fn is_model_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        || (path.is_dir() && path.join("model.ron").is_file())
}

fn run(model: Result<LoadedModel, ModelSpec>, photos: Vec<PhotoSpec>, out: &Reporter<Msg>) {
    let loaded = match model {
        Ok(m) => m,
        Err(spec) => match load_spec(&spec) {
            Ok(m) => {
                out.send(Msg::Model(m.clone()));
                m
            }
            Err(e) => return out.send(Msg::ModelFailed(e)),
        },
    };
    for spec in photos {
        if out.is_cancelled() {
            return;
        }
        let slot = open_photo(&spec, &loaded.model).and_then(|photo| {
            let top = classify(&loaded.model, &photo.input, 5)
                .map_err(|e| format!("{}: {e}", photo.name))?;
            Ok(PhotoSlot {
                spec: spec.clone(),
                photo,
                top,
            })
        });
        out.send(match slot {
            Ok(s) => Msg::Photo(s),
            Err(e) => Msg::PhotoFailed(spec, e),
        });
    }
}

impl Workspace {
    /// The selected photo.
    pub fn photo(&self) -> Option<&PhotoSlot> {
        self.photos.get(self.selected)
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_some()
    }

    /// Opens a model (and re-prepares every photo for it).
    pub fn open_model(&mut self, ctx: &egui::Context, spec: ModelSpec) -> Result<(), String> {
        let mut photos: Vec<PhotoSpec> = self.photos.iter().map(|p| p.spec.clone()).collect();
        photos.extend(
            self.pending
                .drain(..)
                .filter(|s| !self.photos.iter().any(|p| &p.spec == s)),
        );
        self.start(ctx, Err(spec), photos)
    }

    /// Uses a model that exists only in memory (e.g. just trained).
    pub fn use_model(&mut self, ctx: &egui::Context, loaded: LoadedModel) -> Result<(), String> {
        let photos: Vec<PhotoSpec> = self.photos.iter().map(|p| p.spec.clone()).collect();
        self.model = Some(loaded.clone());
        self.generation += 1;
        self.start(ctx, Ok(loaded), photos)
    }

    /// Uses `preprocess` for the open model from now on and prepares every photo again.
    pub fn set_preprocess(
        &mut self,
        ctx: &egui::Context,
        preprocess: crate::models::Preprocess,
    ) -> Result<(), String> {
        if self.job.is_some() {
            return Err("the model or photos are still opening; apply the preprocessing when they are ready".into());
        }
        crate::models::preprocess::validate(&preprocess).map_err(|e| e.to_string())?;
        // taken out of the workspace so that the model is cloned only if a worker still holds it
        let Some(mut loaded) = self.model.take() else {
            return Err("no model is open".into());
        };
        Arc::make_mut(&mut loaded.model).description.preprocess = preprocess;
        self.use_model(ctx, loaded)
    }

    /// Adds photos (classified by the current model, or by the one being opened).
    pub fn add_photos(&mut self, ctx: &egui::Context, specs: Vec<PhotoSpec>) -> Result<(), String> {
        match (&self.model, self.job.is_some()) {
            (Some(m), false) => self.start(ctx, Ok(m.clone()), specs),
            _ => {
                // a model is still loading: photos join when it is ready
                self.pending.extend(specs);
                Ok(())
            }
        }
    }

    fn start(
        &mut self,
        ctx: &egui::Context,
        model: Result<LoadedModel, ModelSpec>,
        photos: Vec<PhotoSpec>,
    ) -> Result<(), String> {
        self.pending = photos.clone();
        self.job = Some(Job::spawn("open", ctx, move |out| run(model, photos, out))?);
        Ok(())
    }

    /// Takes what the worker delivered; returns error messages for the window.
    pub fn poll(&mut self, ctx: &egui::Context) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(job) = &mut self.job else {
            return errors;
        };
        for msg in job.drain(ctx) {
            match msg {
                Msg::Model(m) => {
                    self.model = Some(m);
                    self.photos.clear();
                    self.selected = 0;
                    self.generation += 1;
                }
                Msg::Photo(slot) => {
                    self.pending.retain(|s| s != &slot.spec);
                    match self.photos.iter_mut().position(|p| p.spec == slot.spec) {
                        Some(i) => self.photos[i] = slot,
                        None => self.photos.push(slot),
                    }
                    self.generation += 1;
                }
                Msg::ModelFailed(e) => errors.push(e),
                Msg::PhotoFailed(spec, e) => {
                    self.pending.retain(|s| s != &spec);
                    errors.push(e);
                }
            }
        }
        if job.is_finished() {
            if job.panicked() {
                errors.push("opening the model or photos stopped on an internal error".into());
            }
            self.job = None;
            let left = std::mem::take(&mut self.pending);
            if !left.is_empty() && self.model.is_some() {
                // photos dropped in while the model was loading
                let left: Vec<PhotoSpec> = left
                    .into_iter()
                    .filter(|s| !self.photos.iter().any(|p| &p.spec == s))
                    .collect();
                if !left.is_empty()
                    && let Err(e) = self.add_photos(ctx, left)
                {
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// Opens dropped or typed paths: models and photos, in any mix.
    pub fn open_paths(&mut self, ctx: &egui::Context, paths: Vec<PathBuf>) -> Vec<String> {
        let mut errors = Vec::new();
        let (models, photos): (Vec<PathBuf>, Vec<PathBuf>) =
            paths.into_iter().partition(|p| is_model_path(p));
        let mut photo_specs = Vec::new();
        for p in photos {
            if p.is_dir() {
                match std::fs::read_dir(&p) {
                    Ok(rd) => {
                        let mut files: Vec<PathBuf> = rd
                            .flatten()
                            .map(|e| e.path())
                            .filter(|f| f.is_file())
                            .collect();
                        files.sort();
                        photo_specs.extend(files.into_iter().map(PhotoSpec::File));
                    }
                    Err(e) => errors.push(format!("{}: cannot list the folder: {e}", p.display())),
                }
            } else {
                photo_specs.push(PhotoSpec::File(p));
            }
        }
        let result = match models.into_iter().last() {
            Some(m) => {
                self.pending.extend(photo_specs);
                self.open_model(ctx, ModelSpec::Path(m))
            }
            None if photo_specs.is_empty() => Ok(()),
            None => self.add_photos(ctx, photo_specs),
        };
        if let Err(e) = result {
            errors.push(e);
        }
        errors
    }

    /// What to open on start-up: the last session's model and photos, else the bundled ones.
    pub fn restore(
        &mut self,
        ctx: &egui::Context,
        model: ModelSpec,
        photos: Vec<PhotoSpec>,
    ) -> Result<(), String> {
        let photos = if photos.is_empty() {
            vec![PhotoSpec::Sample(SAMPLE_IMAGES[0].0.to_string())]
        } else {
            photos
        };
        self.pending = photos;
        self.open_model(ctx, model)
    }

    /// Removes the selected photo.
    pub fn remove_selected(&mut self) {
        if self.selected < self.photos.len() {
            self.photos.remove(self.selected);
            self.selected = self.selected.min(self.photos.len().saturating_sub(1));
            self.generation += 1;
        }
    }
}
