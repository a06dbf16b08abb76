//! The units view's two jobs, each on its own worker thread (`app::jobs`): feature
//! visualisation of a page of units, and the scan of a folder for their best patches. Both call
//! the microscope core as `convscope microscope` does, report progress after every step or
//! batch, stop on the job's cancel flag, and send their results as plain pictures so the UI
//! thread only has to upload textures.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbaImage;

use crate::app::jobs::Reporter;
use crate::explain::microscope::{
    ScanConfig, Source, UnitImage, UnitLayer, UnitScan, VisConfig, crop_patch, image_files,
    scan_folder, visualise_units,
};
use crate::explain::{Control, ExplainError, Progress};
use crate::models::Model;

/// Images of one unit asked for on its page ("more faces"), pushed apart by the diversity term.
pub const FACES: usize = 4;
/// The diversity weight for them: Lucid's range, where the faces differ visibly at 64 px
/// without losing their unit (`tests/microscope.rs` checks the term pushes images apart).
const FACES_DIVERSITY: f32 = 100.0;

/// Largest side of a patch kept for display: a dense layer's patches are whole images, and a
/// page holds 64 × 9 of them.
const PATCH_SIDE: u32 = 128;

/// What a worker reports.
pub enum Msg {
    Progress(Progress),
    /// Finished visualisations, a batch at a time.
    Vis(Vec<VisPicture>),
    Scan(Box<ScanDone>),
    Failed(String),
}

/// A finished folder scan of some units.
pub struct ScanDone {
    /// Each unit with its patches, best first (`None`: the file could not be read again).
    pub units: Vec<(UnitScan, Vec<Option<RgbaImage>>)>,
    pub images: usize,
    /// `(file, reason)` of the images that could not be read.
    pub skipped: Vec<(String, String)>,
}

/// One finished visualisation.
pub struct VisPicture {
    pub channel: usize,
    /// Which of the unit's faces (0 when one per unit).
    pub variant: usize,
    pub image: RgbaImage,
    /// The channel's spatial mean on it.
    pub activation: f32,
}

/// Which visualisations to make.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VisRequest {
    pub layer: String,
    pub steps: usize,
    pub size: usize,
    /// Images per unit: 1 for the grid's cells, [`FACES`] for a unit page's faces (with the
    /// diversity term).
    pub faces: usize,
}

/// Which folder to scan: `None` for the bundled photos.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScanRequest {
    pub layer: String,
    pub folder: Option<PathBuf>,
}

impl ScanRequest {
    /// The folder as the panel names it.
    pub fn source_name(&self) -> String {
        match &self.folder {
            Some(f) => f.display().to_string(),
            None => "the bundled photos".into(),
        }
    }
}

/// A failure worth a sentence (a cancelled job ends quietly).
fn report(result: Result<(), ExplainError>, out: &Reporter<Msg>) {
    match result {
        Ok(()) | Err(ExplainError::Cancelled) => {}
        Err(e) => out.send(Msg::Failed(e.to_string())),
    }
}

/// Visualises `channels` of the request's layer; images arrive a batch at a time.
pub fn visualise(model: Arc<Model>, req: VisRequest, channels: Vec<usize>, out: &Reporter<Msg>) {
    let result = (|| {
        let layer = UnitLayer::find(&model.graph, &req.layer)?;
        let config = VisConfig {
            size: req.size,
            steps: req.steps,
            per_unit: req.faces,
            diversity: if req.faces > 1 { FACES_DIVERSITY } else { 0.0 },
            ..VisConfig::default()
        };
        let progress = |p: Progress| out.send(Msg::Progress(p));
        let ctl = Control {
            progress: Some(&progress),
            cancel: Some(out.cancel_flag()),
        };
        let mut done = |images: Vec<UnitImage>| {
            let pictures = images
                .into_iter()
                .map(|i| VisPicture {
                    channel: i.channel,
                    variant: i.variant,
                    image: image::DynamicImage::ImageRgb8(i.image).to_rgba8(),
                    activation: i.activation,
                })
                .collect();
            out.send(Msg::Vis(pictures));
            Ok(())
        };
        visualise_units(
            &model.graph,
            &model.description.preprocess,
            &layer,
            &channels,
            &config,
            ctl,
            &mut done,
        )
    })();
    report(result, out);
}

/// Scans the request's folder (or the bundled photos) for the best patches of `channels`.
pub fn scan(model: Arc<Model>, req: ScanRequest, channels: Vec<usize>, out: &Reporter<Msg>) {
    let result = (|| {
        let layer = UnitLayer::find(&model.graph, &req.layer)?;
        let sources = match &req.folder {
            Some(dir) => image_files(dir)?,
            None => Source::bundled(),
        };
        let progress = |p: Progress| out.send(Msg::Progress(p));
        let ctl = Control {
            progress: Some(&progress),
            cancel: Some(out.cancel_flag()),
        };
        let preprocess = &model.description.preprocess;
        let scan = scan_folder(
            &model.graph,
            preprocess,
            &layer,
            &channels,
            &sources,
            &ScanConfig::default(),
            ctl,
        )?;
        let units = scan
            .units
            .into_iter()
            .map(|unit| {
                // a file that changed since the scan loses its patch, not the unit
                let patches = unit
                    .top
                    .iter()
                    .map(|hit| crop_patch(hit, preprocess).ok().map(shrink))
                    .collect();
                (unit, patches)
            })
            .collect();
        out.send(Msg::Scan(Box::new(ScanDone {
            units,
            images: scan.images,
            skipped: scan.skipped,
        })));
        Ok(())
    })();
    report(result, out);
}

/// A patch at most [`PATCH_SIDE`] on its longer side, as RGBA.
fn shrink(patch: image::RgbImage) -> RgbaImage {
    let (w, h) = patch.dimensions();
    let rgba = image::DynamicImage::ImageRgb8(patch);
    if w.max(h) <= PATCH_SIDE {
        return rgba.to_rgba8();
    }
    rgba.resize(
        PATCH_SIDE,
        PATCH_SIDE,
        image::imageops::FilterType::Triangle,
    )
    .to_rgba8()
}
