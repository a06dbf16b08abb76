//! The units view of the Layers panel (issue 16, the window side of `explain::microscope`):
//! a paged grid with one cell per unit (channel) of the selected layer, each showing the
//! unit's feature visualisation and its best patch from a folder, and a unit page with the
//! details. The work runs as jobs (`work`: a page's visualisations, a folder's scan, a unit's
//! faces), their results are cached per model, layer, folder and settings (`cache`), and the
//! drawing lives in `grid` and `unit_page` (a job's controls in `buttons`).

mod buttons;
mod cache;
mod grid;
mod unit_page;
mod work;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::jobs::Job;
use super::workspace::Workspace;
use crate::explain::Progress;
use crate::explain::microscope::UnitLayer;
use crate::models::Model;
use cache::Cache;
pub use unit_page::PhotoMaps;
use unit_page::UnitPage;
use work::{FACES, Msg, ScanRequest, VisRequest};

/// Units per page: a page is what one "Visualise this page" computes and the grid draws, so a
/// 2,048-channel layer is never all computed or drawn at once.
pub const PAGE: usize = 64;

/// The units view's settings, persisted with the Layers panel's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnitsSettings {
    /// The units view is shown instead of the activation grid.
    pub show: bool,
    /// Optimisation steps per visualisation. With `size` 64, a page of 64 units of
    /// EfficientNet-Lite0's `/_blocks.6/_swish/Clip_output_0` takes ~24 s on 2 cores (release);
    /// size 96 at 128 steps took ~54 s, too long to wait for in a window.
    pub steps: usize,
    /// Side of each visualisation in pixels.
    pub size: usize,
    /// The folder to find top patches in; empty: the bundled photos.
    pub folder: String,
}

impl Default for UnitsSettings {
    fn default() -> Self {
        Self {
            show: false,
            steps: 128,
            size: 64,
            folder: String::new(),
        }
    }
}

impl UnitsSettings {
    fn vis_request(&self, layer: &str) -> VisRequest {
        VisRequest {
            layer: layer.to_string(),
            steps: self.steps,
            size: self.size,
            faces: 1,
        }
    }

    /// A unit page's faces: the grid's settings, [`FACES`] images pushed apart.
    fn faces_request(&self, layer: &str) -> VisRequest {
        VisRequest {
            faces: FACES,
            ..self.vis_request(layer)
        }
    }

    fn scan_request(&self, layer: &str) -> ScanRequest {
        let folder = self.folder.trim();
        ScanRequest {
            layer: layer.to_string(),
            folder: (!folder.is_empty()).then(|| PathBuf::from(folder)),
        }
    }
}

/// A running job and what it was asked for (its results are cached under `req` even if the
/// person has moved on to another layer or page meanwhile).
struct Running<R> {
    job: Job<Msg>,
    req: R,
    progress: Progress,
}

impl<R> Running<R> {
    fn new(job: Job<Msg>, req: R, total: usize) -> Self {
        Self {
            job,
            req,
            progress: Progress { done: 0, total },
        }
    }
}

#[derive(Default)]
pub struct UnitsView {
    /// The layer the view shows, and its units (or why it has none).
    layer: Option<(String, Result<UnitLayer, String>)>,
    page: usize,
    cache: Cache,
    vis_job: Option<Running<VisRequest>>,
    scan_job: Option<Running<ScanRequest>>,
    /// A unit page's faces being made, and for which unit.
    faces_job: Option<Running<(VisRequest, usize)>>,
    /// The last failure of a job, one sentence.
    error: Option<String>,
    unit: Option<UnitPage>,
    /// Start both jobs once a model and layer are there (CONVSCOPE_AUTOSTART=units).
    pub autostart: bool,
    /// Open this unit's page once its results are in, and make its faces (CONVSCOPE_UNIT).
    pub open_when_ready: Option<usize>,
}

impl UnitsView {
    pub fn is_busy(&self) -> bool {
        self.vis_job.is_some() || self.scan_job.is_some() || self.faces_job.is_some()
    }

    /// How many faces of `channel` the cache holds for `settings` and the current layer.
    pub fn faces(&self, settings: &UnitsSettings, channel: usize) -> usize {
        match &self.layer {
            Some((layer, _)) => self
                .cache
                .face_count(&settings.faces_request(layer), channel),
            None => 0,
        }
    }

    /// The unit whose page is open.
    pub fn open_unit(&self) -> Option<usize> {
        self.unit.as_ref().map(|u| u.channel)
    }

    /// Opens a unit's page (and turns to the page of the grid that holds it).
    pub fn show_unit(&mut self, channel: usize) {
        self.page = channel / PAGE;
        self.unit = Some(UnitPage::new(channel));
    }

    /// `(visualisations, scanned units)` held in the cache for `settings` and the current layer.
    pub fn results(&self, settings: &UnitsSettings) -> (usize, usize) {
        let Some((layer, _)) = &self.layer else {
            return (0, 0);
        };
        let vis = self
            .cache
            .vis(&settings.vis_request(layer))
            .map_or(0, |v| v.len());
        let scanned = self
            .cache
            .scan(&settings.scan_request(layer))
            .map_or(0, |s| s.units.len());
        (vis, scanned)
    }

    /// The last job failure shown in the panel.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The channels of the current page.
    fn page_channels(&self) -> Vec<usize> {
        match &self.layer {
            Some((_, Ok(l))) => {
                let first = (self.page * PAGE).min(l.channels.saturating_sub(1));
                (first..(first + PAGE).min(l.channels)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Follows the open model and the selected layer, takes what the jobs sent, and starts
    /// work asked for at launch.
    pub fn logic(
        &mut self,
        ctx: &egui::Context,
        ws: &Workspace,
        layer: Option<&str>,
        settings: &UnitsSettings,
    ) {
        let Some(model) = ws.model.as_ref().map(|m| m.model.clone()) else {
            return;
        };
        let before = self.cache.model_is(&model);
        self.cache.follow(&model);
        if !before {
            // another model: its units differ, and the old model's jobs are of no use
            self.vis_job = None;
            self.scan_job = None;
            self.faces_job = None;
            self.unit = None;
            self.layer = None;
            self.error = None;
        }
        if self.layer.as_ref().map(|(name, _)| name.as_str()) != layer {
            self.layer = layer.map(|name| {
                let units = UnitLayer::find(&model.graph, name).map_err(|e| e.to_string());
                (name.to_string(), units)
            });
            self.unit = None;
            self.page = self.open_when_ready.map_or(0, |k| k / PAGE);
        }
        self.drain(ctx);
        if !settings.show {
            return;
        }
        if self.autostart && matches!(self.layer, Some((_, Ok(_)))) {
            self.autostart = false;
            self.start_vis(ctx, &model, settings);
            self.start_scan(ctx, &model, settings);
        }
        if let (Some(k), Some((name, Ok(_)))) = (self.open_when_ready, &self.layer) {
            let vis = self.cache.vis(&settings.vis_request(name));
            let scan = self.cache.scan(&settings.scan_request(name));
            let vis_ready = vis.is_some_and(|v| v.contains_key(&k)) || self.vis_job.is_none();
            let scan_ready =
                scan.is_some_and(|s| s.units.contains_key(&k)) || self.scan_job.is_none();
            if vis_ready && scan_ready {
                self.open_when_ready = None;
                self.show_unit(k);
                self.start_faces(ctx, &model, settings, k);
            }
        }
    }

    /// Takes the jobs' messages into the cache.
    fn drain(&mut self, ctx: &egui::Context) {
        let (cache, error) = (&mut self.cache, &mut self.error);
        drain_job(
            &mut self.vis_job,
            ctx,
            "visualisation",
            error,
            |req, msg| {
                if let Msg::Vis(images) = msg {
                    cache.add_vis(req, images);
                }
            },
        );
        drain_job(
            &mut self.scan_job,
            ctx,
            "patch search",
            error,
            |req, msg| {
                if let Msg::Scan(done) = msg {
                    cache.add_scan(req, *done);
                }
            },
        );
        drain_job(&mut self.faces_job, ctx, "faces", error, |(req, _), msg| {
            if let Msg::Vis(images) = msg {
                cache.add_vis(req, images);
            }
        });
    }

    /// Visualises the page's units that the cache does not hold for these settings.
    fn start_vis(&mut self, ctx: &egui::Context, model: &Arc<Model>, settings: &UnitsSettings) {
        let Some((name, Ok(_))) = &self.layer else {
            return;
        };
        let req = settings.vis_request(name);
        let channels = self.cache.missing_vis(&req, &self.page_channels());
        if channels.is_empty() {
            return;
        }
        let (m, r, total) = (model.clone(), req.clone(), channels.len() * settings.steps);
        match Job::spawn("units-visualise", ctx, move |out| {
            work::visualise(m, r, channels, out)
        }) {
            Ok(job) => {
                self.vis_job = Some(Running::new(job, req, total));
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Makes [`FACES`] images of one unit, pushed apart by the diversity term, unless held.
    fn start_faces(
        &mut self,
        ctx: &egui::Context,
        model: &Arc<Model>,
        settings: &UnitsSettings,
        channel: usize,
    ) {
        let Some((name, Ok(_))) = &self.layer else {
            return;
        };
        let req = settings.faces_request(name);
        if self.cache.face_count(&req, channel) > 0 {
            return;
        }
        if let Some(run) = &self.faces_job {
            if run.req.1 == channel {
                return;
            }
            // another unit's faces: the person has moved on
            run.job.cancel();
        }
        let (m, r) = (model.clone(), req.clone());
        match Job::spawn("units-faces", ctx, move |out| {
            work::visualise(m, r, vec![channel], out)
        }) {
            Ok(job) => {
                self.faces_job = Some(Running::new(job, (req, channel), settings.steps));
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Finds the best patches of the page's units that the cache does not hold for the folder.
    fn start_scan(&mut self, ctx: &egui::Context, model: &Arc<Model>, settings: &UnitsSettings) {
        let Some((name, Ok(_))) = &self.layer else {
            return;
        };
        let req = settings.scan_request(name);
        let channels = self.cache.missing_scan(&req, &self.page_channels());
        if channels.is_empty() {
            return;
        }
        let (m, r) = (model.clone(), req.clone());
        match Job::spawn("units-scan", ctx, move |out| {
            work::scan(m, r, channels, out)
        }) {
            Ok(job) => {
                self.scan_job = Some(Running::new(job, req, 0));
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// Takes a running job's messages: progress into `run.progress`, failures into `error`,
/// results to `take` with the request they answer; clears the slot once the job has ended.
fn drain_job<R>(
    slot: &mut Option<Running<R>>,
    ctx: &egui::Context,
    what: &str,
    error: &mut Option<String>,
    mut take: impl FnMut(&R, Msg),
) {
    let Some(run) = slot else {
        return;
    };
    for msg in run.job.drain(ctx) {
        match msg {
            Msg::Progress(p) => run.progress = p,
            Msg::Failed(e) => *error = Some(e),
            other => take(&run.req, other),
        }
    }
    if run.job.is_finished() {
        if run.job.panicked() {
            *error = Some(format!("the {what} stopped on an internal error"));
        }
        *slot = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_folder_field_means_the_bundled_photos() {
        let mut s = UnitsSettings::default();
        assert_eq!(s.scan_request("l").folder, None);
        assert_eq!(s.scan_request("l").source_name(), "the bundled photos");
        s.folder = "  /data/birds ".into();
        assert_eq!(
            s.scan_request("l").folder,
            Some(PathBuf::from("/data/birds"))
        );
    }

    #[test]
    fn the_cache_keeps_results_per_layer_and_settings() {
        let mut cache = Cache::default();
        let s = UnitsSettings::default();
        let req = s.vis_request("a");
        let picture = |channel, variant| work::VisPicture {
            channel,
            variant,
            image: image::RgbaImage::new(2, 2),
            activation: 0.5,
        };
        cache.add_vis(&req, vec![picture(1, 0)]);
        assert_eq!(cache.missing_vis(&req, &[0, 1, 2]), vec![0, 2]);
        // other steps, or another layer, are other results
        let fewer = UnitsSettings {
            steps: 8,
            ..s.clone()
        };
        assert_eq!(cache.missing_vis(&fewer.vis_request("a"), &[1]), vec![1]);
        assert_eq!(cache.missing_vis(&s.vis_request("b"), &[1]), vec![1]);
        assert_eq!(cache.missing_scan(&s.scan_request("a"), &[1]), vec![1]);
        // a unit's faces are kept apart from the grid's images, all of them, in order
        let faces = s.faces_request("a");
        cache.add_vis(&faces, vec![picture(1, 2), picture(1, 0), picture(1, 1)]);
        assert_eq!(cache.face_count(&faces, 1), 3);
        let held = cache.unit_mut(&req, &faces, &s.scan_request("a"), 1);
        let order: Vec<usize> = held.faces.iter().map(|f| f.variant).collect();
        assert_eq!(order, vec![0, 1, 2]);
        assert!(held.vis.is_some() && held.scan.is_none());
        assert_eq!(cache.face_count(&faces, 0), 0);
        assert_eq!(cache.missing_vis(&req, &[0, 1]), vec![0]);
    }
}
