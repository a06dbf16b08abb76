//! `convscope microscope --model M --layer L [--data DIR] [--channels A..B] [--steps N]
//! [--size S] --out DIR [--json]`: every chosen unit of a layer, probed. Writes into DIR
//! - `units/unit_0007.png` (a unit's feature visualisation; `unit_0007_v1.png`, ... with
//!   `--per-unit`),
//! - `patches/unit_0007_top1.png` ... `_top9.png` (its best patches from the folder, cropped to
//!   the receptive field of the strongest position),
//! - `contact_sheet.png` (a row per unit: visualisation, then patches; past 64 units one sheet
//!   per 64, `contact_sheet_2.png`, ...),
//! - `index.json` (per unit: its images and activations, the top images with scores and crop
//!   boxes, the histogram of per-image peaks) and `index.html` (the same as one self-contained
//!   page, the images embedded, to open or share; past 128 units the page links the PNG files
//!   instead, so that it stays small, and the folder is what to share).
//!
//! Without `--data` the patches come from the bundled photos. Units are visualised `--batch` at
//! a time and written as each batch finishes, so a 2,048-channel layer is never all in memory;
//! the folder is streamed once. `--json` prints a line per unit and a summary line.

mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use super::common::{find_layer, progress_bar, show_progress};
use super::resolve;
use super::{CliError, CliResult};
use crate::explain::Control;
use crate::explain::microscope::{
    ScanConfig, ScanReport, Source, UnitImage, UnitLayer, VisConfig, crop_patch, image_files,
    parse_channels, scan_folder, visualise_units,
};
use crate::models::Model;
use crate::render::save_png;

/// Units visualised when `--channels` is not given (a 2,048-channel layer at 256 steps would
/// take an hour on a laptop; `--channels all` asks for every unit).
const DEFAULT_UNITS: usize = 32;

#[derive(Debug, Args)]
pub struct MicroscopeArgs {
    /// An .onnx file, a checkpoint directory, or a bundled model (smile-cnn, efficientnet-lite0).
    #[arg(long)]
    pub model: String,
    /// The layer whose units to probe (`convscope summary` lists the names).
    #[arg(long)]
    pub layer: String,
    /// Images to find each unit's best patches in (any folder, searched recursively); default:
    /// the bundled photos.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Units: `0..32` (end excluded), `0..=31`, `5`, `all`, or a comma list; default the first 32.
    #[arg(long)]
    pub channels: Option<String>,
    /// Optimisation steps per visualisation.
    #[arg(long, default_value_t = 256)]
    pub steps: usize,
    /// Side of each visualisation in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Visualisations optimised together (one forward and backward pass per step for all).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Visualisations per unit, pushed apart by `--diversity`.
    #[arg(long, default_value_t = 1)]
    pub per_unit: usize,
    /// Weight of Lucid's diversity term between a unit's visualisations.
    #[arg(long, default_value_t = 0.0)]
    pub diversity: f32,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// Images per forward pass of the folder scan.
    #[arg(long, default_value_t = 16)]
    pub scan_batch: usize,
    /// Best patches kept per unit.
    #[arg(long, default_value_t = 9)]
    pub top: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the folder scan (visualisations only).
    #[arg(long)]
    pub no_patches: bool,
    /// Skip the visualisations (patches only).
    #[arg(long)]
    pub no_vis: bool,
    /// Output folder (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// One JSON line per unit and a summary line on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Everything the report needs about one unit.
pub(crate) struct UnitResult {
    pub channel: usize,
    /// `(file under DIR, activation)` of each visualisation.
    pub images: Vec<(String, f32)>,
    /// Files under DIR of the patches, best first (beside the scan's hits).
    pub patches: Vec<String>,
}

pub fn run(args: &MicroscopeArgs) -> CliResult<()> {
    let source = resolve::resolve(&args.model, args.seed)?;
    let model = resolve::load(&source)?;
    find_layer(&model.graph, &args.layer)?;
    let layer = UnitLayer::find(&model.graph, &args.layer)?;
    let channels = match &args.channels {
        Some(spec) => parse_channels(spec, layer.channels)
            .map_err(|e| CliError(format!("--channels: {e}")))?,
        None => (0..layer.channels.min(DEFAULT_UNITS)).collect(),
    };
    if args.no_patches && args.no_vis {
        return Err(CliError(
            "--no-patches and --no-vis together leave nothing to do".into(),
        ));
    }
    let sources = match (&args.data, args.no_patches) {
        (_, true) => Vec::new(),
        (Some(dir), false) => image_files(dir)?,
        (None, false) => Source::bundled(),
    };
    for sub in ["", "units", "patches"] {
        let dir = args.out.join(sub);
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError(format!("{}: cannot create the folder ({e})", dir.display())))?;
    }
    let mut results: Vec<UnitResult> = channels
        .iter()
        .map(|&channel| UnitResult {
            channel,
            images: Vec::new(),
            patches: Vec::new(),
        })
        .collect();

    let started = Instant::now();
    let scan = if sources.is_empty() {
        None
    } else {
        Some(scan(args, &model, &layer, &channels, &sources)?)
    };
    let scan_seconds = started.elapsed().as_secs_f64();
    if let Some(scan) = &scan {
        for (path, reason) in &scan.skipped {
            eprintln!("convscope: skipped {path}: {reason}");
        }
        write_patches(args, &model, scan, &mut results)?;
    }

    let started = Instant::now();
    if !args.no_vis {
        visualise(args, &model, &layer, &channels, &mut results)?;
    }
    let visualise_seconds = started.elapsed().as_secs_f64();

    let summary = report::Summary {
        model: resolve::display_name(&source),
        layer: &layer,
        args,
        scan: scan.as_ref(),
        units: &results,
        visualise_seconds,
        scan_seconds,
    };
    report::write_all(&args.out, &summary)?;
    report::print(&summary, args.json);
    Ok(())
}

/// The folder scan, with a progress bar on a terminal.
fn scan(
    args: &MicroscopeArgs,
    model: &Model,
    layer: &UnitLayer,
    channels: &[usize],
    sources: &[Source],
) -> CliResult<ScanReport> {
    let pb = progress_bar(args.json);
    pb.set_prefix("scan");
    let report = show_progress(&pb);
    let config = ScanConfig {
        batch: args.scan_batch,
        top: args.top,
        ..ScanConfig::default()
    };
    let ctl = Control {
        progress: Some(&report),
        cancel: None,
    };
    let scan = scan_folder(
        &model.graph,
        &model.description.preprocess,
        layer,
        channels,
        sources,
        &config,
        ctl,
    );
    pb.finish_and_clear();
    Ok(scan?)
}

/// Crops and saves every unit's best patches; a patch that cannot be re-read is skipped with a
/// sentence (its image was readable during the scan, so this means the file changed since).
fn write_patches(
    args: &MicroscopeArgs,
    model: &Model,
    scan: &ScanReport,
    results: &mut [UnitResult],
) -> CliResult<()> {
    for (unit, result) in scan.units.iter().zip(results.iter_mut()) {
        for (rank, hit) in unit.top.iter().enumerate() {
            let name = format!("patches/unit_{:04}_top{}.png", unit.channel, rank + 1);
            match crop_patch(hit, &model.description.preprocess) {
                Ok(patch) => {
                    save(&patch, &args.out.join(&name))?;
                    result.patches.push(name);
                }
                Err(e) => {
                    eprintln!("convscope: skipped a patch of unit {}: {e}", unit.channel);
                    result.patches.push(String::new());
                }
            }
        }
    }
    Ok(())
}

/// The visualisations, written batch by batch as they finish.
fn visualise(
    args: &MicroscopeArgs,
    model: &Model,
    layer: &UnitLayer,
    channels: &[usize],
    results: &mut [UnitResult],
) -> CliResult<()> {
    let config = VisConfig {
        size: args.size,
        steps: args.steps,
        lr: args.lr,
        batch: args.batch,
        per_unit: args.per_unit,
        diversity: args.diversity,
        seed: args.seed,
        ..VisConfig::default()
    };
    let pb = progress_bar(args.json);
    pb.set_prefix("visualise");
    let report = show_progress(&pb);
    let ctl = Control {
        progress: Some(&report),
        cancel: None,
    };
    let mut write_error: Option<CliError> = None;
    let mut done = |images: Vec<UnitImage>| {
        for image in images {
            let name = match image.variant {
                0 => format!("units/unit_{:04}.png", image.channel),
                v => format!("units/unit_{:04}_v{v}.png", image.channel),
            };
            if let Err(e) = save(&image.image, &args.out.join(&name)) {
                write_error.get_or_insert(e);
                return Err(crate::explain::ExplainError::Cancelled);
            }
            if let Some(r) = results.iter_mut().find(|r| r.channel == image.channel) {
                r.images.push((name, image.activation));
            }
        }
        Ok(())
    };
    let outcome = visualise_units(
        &model.graph,
        &model.description.preprocess,
        layer,
        channels,
        &config,
        ctl,
        &mut done,
    );
    pb.finish_and_clear();
    match (outcome, write_error) {
        (_, Some(e)) => Err(e),
        (r, None) => Ok(r?),
    }
}

fn save(image: &image::RgbImage, path: &Path) -> CliResult<()> {
    save_png(image, path).map_err(|e| CliError(e.to_string()))
}
