//! `convscope explain --model M --method METHOD [--layer NAME] [--target CLASS]
//! (IMAGE... | DIR | --input-npy X.npy) --out DIR [--raw] [--colormap NAME] [--alpha A] [--json]
//! [--threads N]`.
//!
//! For every input it writes `DIR/<stem>.<method>.png` (the map over the photo the model saw),
//! `DIR/<stem>.<method>.npy` (float32 `[H, W]` in [0, 1] at the model's input resolution), with
//! `--raw` also `DIR/<stem>.<method>.raw.npy` (see [`crate::explain::method`]), and reports the
//! target, its probability and the deletion / insertion areas (one JSON line with `--json`).
//!
//! A directory argument stands for the files directly inside it (sub-directories are skipped).
//! Inputs are streamed: each worker decodes one image, explains it, writes its files and drops
//! everything before taking the next, so memory does not grow with the number of images. With
//! more inputs than threads each worker runs on its own single-thread pool (one image per core);
//! otherwise the threads are shared out and the engine's ops run in parallel inside an image.
//! A bad input is reported (naming it) and the others are still processed; the exit code is
//! non-zero at the end if anything failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{Args, ValueEnum};
use serde_json::json;

use super::common::{find_layer, finish_inputs, npy_inputs, progress_bar, write_npy};
use super::resolve;
use super::{CliError, CliResult};
use crate::engine::Tensor;
use crate::engine::tensor::fmt_shape;
use crate::explain::faithfulness::CurveOptions;
use crate::explain::{Control, Explainer, Explanation, Method, MethodOptions, Target};
use crate::models::Model;
use crate::models::description::{Channels, Layout, Preprocess};
use crate::models::preprocess::{Image, fit, image_to_tensor};
use crate::render::{Colormap, overlay, save_png};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// An .onnx file, a checkpoint directory, or a bundled model (smile-cnn, efficientnet-lite0).
    #[arg(long)]
    pub model: String,
    /// Seed for initialising a bundled architecture (smile-cnn).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// saliency, smoothgrad, integrated-gradients, gradient-x-input, guided-backprop, gradcam,
    /// gradcam++, scorecam, occlusion or attention-rollout (vision transformers).
    #[arg(long)]
    pub method: String,
    /// The layer of a CAM method (default: the last spatial layer; `convscope summary` lists
    /// the names).
    #[arg(long)]
    pub layer: Option<String>,
    /// The class to explain: an index or a label (default: the top class). For a single-logit
    /// model, 1 explains the logit and 0 its negation.
    #[arg(long)]
    pub target: Option<String>,
    /// Image files or directories of images, preprocessed by the model's preset.
    #[arg(required_unless_present = "input_npy", conflicts_with = "input_npy")]
    pub inputs: Vec<PathBuf>,
    /// A preprocessed float32 tensor of the model's input shape, batch first (one result per
    /// item).
    #[arg(long, value_name = "X.npy")]
    pub input_npy: Option<PathBuf>,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the un-normalised map as <stem>.<method>.raw.npy.
    #[arg(long)]
    pub raw: bool,
    /// Colormap of the overlay: viridis, inferno, magma, turbo, jet, gray or bluered.
    #[arg(long, default_value = "jet")]
    pub colormap: String,
    /// Opacity of the map over the photo, 0..=1.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// One JSON object per input and line (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Worker threads (default: RAYON_NUM_THREADS, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How threads are used when there are more inputs than threads (for measurements):
    /// one image per thread, or all threads inside each image.
    #[arg(long, value_enum, default_value_t = Split::Images, hide = true)]
    pub split: Split,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Split {
    Images,
    Ops,
}

/// One unit of work: an image file or one item of the `--input-npy` batch.
#[derive(Debug)]
enum Job {
    File(PathBuf),
    Npy { name: String, tensor: Tensor },
}

impl Job {
    fn name(&self) -> String {
        match self {
            Job::File(p) => p.display().to_string(),
            Job::Npy { name, .. } => name.clone(),
        }
    }
}

/// Everything one explanation needs, shared read-only by the workers.
struct Setup<'a> {
    model: &'a Model,
    explainer: Explainer<'a>,
    method: Method,
    target: Target,
    layer: Option<crate::engine::ValueId>,
    opts: MethodOptions,
    curves: CurveOptions,
    colormap: Colormap,
    alpha: f32,
    out: &'a Path,
    raw: bool,
}

/// What was written for one input.
struct Done {
    explanation: Explanation,
    deletion_auc: f32,
    insertion_auc: f32,
    png: PathBuf,
    npy: PathBuf,
    raw: Option<PathBuf>,
}

pub fn run(args: &ExplainArgs) -> CliResult<()> {
    let method = Method::from_name(&args.method).ok_or_else(|| {
        CliError(format!(
            "unknown method '{}'; choose one of: {}",
            args.method,
            Method::names()
        ))
    })?;
    let colormap = Colormap::from_name(&args.colormap).ok_or_else(|| {
        let names: Vec<&str> = Colormap::ALL.iter().map(|c| c.name()).collect();
        CliError(format!(
            "unknown colormap '{}'; choose one of: {}",
            args.colormap,
            names.join(", ")
        ))
    })?;
    if !(0.0..=1.0).contains(&args.alpha) {
        return Err(CliError(format!("--alpha {} is outside 0..=1", args.alpha)));
    }
    let threads = match args.threads {
        Some(0) => return Err(CliError("--threads must be at least 1".into())),
        Some(t) => t,
        None => rayon::current_num_threads(),
    };
    let source = resolve::resolve(&args.model, args.seed)?;
    let model = resolve::load(&source)?;
    let name = resolve::display_name(&source);
    if model.description.preprocess.layout == Layout::Nhwc {
        return Err(CliError(format!(
            "{name}: takes NHWC input {}; explain works on NCHW models",
            fmt_shape(model.graph.input_shape())
        )));
    }
    let explainer = Explainer::new(&model.graph).map_err(|e| CliError(format!("{name}: {e}")))?;
    let layer = match &args.layer {
        Some(l) if !method.uses_layer() => {
            return Err(CliError(format!(
                "--layer {l}: {} does not use a layer (only gradcam, gradcam++ and scorecam do)",
                method.name()
            )));
        }
        Some(l) => Some(find_layer(&model.graph, l).map_err(|e| CliError(format!("{name}: {e}")))?),
        None => None,
    };
    let layer = explainer
        .method_layer(method, layer)
        .map_err(|e| CliError(format!("{name}: {e}")))?;
    let target = match &args.target {
        Some(t) => parse_target(t, &model.description.labels, explainer.head.classes())
            .map_err(|e| CliError(format!("{name}: {e}")))?,
        None => Target::Top,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| {
        CliError(format!(
            "{}: cannot create the output directory ({e})",
            args.out.display()
        ))
    })?;

    let mut failed: Vec<String> = Vec::new();
    let jobs = match &args.input_npy {
        Some(npy) => npy_jobs(npy, &model)?,
        None => file_jobs(&args.inputs, &mut failed),
    };
    check_unique_stems(&jobs, &args.input_npy)?;
    let setup = Setup {
        model: &model,
        explainer,
        method,
        target,
        layer,
        opts: MethodOptions::default(),
        curves: CurveOptions::default(),
        colormap,
        alpha: args.alpha,
        out: &args.out,
        raw: args.raw,
    };
    let total = jobs.len() + failed.len();
    let progress = progress_bar(args.json);
    progress.set_length(jobs.len() as u64);
    progress.set_prefix("explain");
    progress.set_message("images");
    let failures = Mutex::new(Vec::new());
    let single = args.input_npy.as_ref().is_some_and(|_| jobs.len() == 1);
    let each = |job: &Job| {
        let stem = stem_of(job, single);
        match explain_one(&setup, job, &stem) {
            Ok(done) => {
                let line = report(&setup, job, &done, args.json);
                progress.suspend(|| {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                });
            }
            Err(e) => {
                progress.suspend(|| eprintln!("convscope: {e}"));
                if let Ok(mut f) = failures.lock() {
                    f.push(job.name());
                }
            }
        }
        progress.inc(1);
    };
    run_workers(&jobs, threads, args.split, &each)?;
    progress.finish_and_clear();
    failed.extend(failures.into_inner().unwrap_or_default());
    finish_inputs(&source, &failed, total, "explained")
}

/// Runs `each` over `jobs` on `threads` threads. With more jobs than threads and
/// [`Split::Images`], each of `threads` workers owns a one-thread rayon pool and pulls the
/// next job when done (exactly one image in flight per worker: memory is flat, no nested
/// work-stealing of other images); otherwise the jobs run one after another on a pool of
/// `threads` threads, parallel inside the engine's ops.
fn run_workers(
    jobs: &[Job],
    threads: usize,
    split: Split,
    each: &(dyn Fn(&Job) + Sync),
) -> CliResult<()> {
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| CliError(format!("cannot start {n} worker threads: {e}")))
    };
    if split == Split::Ops || threads == 1 || jobs.len() < threads {
        pool(threads)?.install(|| jobs.iter().for_each(each));
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let pools = (0..threads)
        .map(|_| pool(1))
        .collect::<CliResult<Vec<_>>>()?;
    std::thread::scope(|s| {
        for p in &pools {
            let next = &next;
            s.spawn(move || {
                p.install(|| {
                    while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        each(job);
                    }
                })
            });
        }
    });
    Ok(())
}

/// `--target`: an index below `classes`, or a label (case-insensitive, unambiguous).
fn parse_target(spec: &str, labels: &[String], classes: usize) -> CliResult<Target> {
    if let Ok(i) = spec.parse::<usize>() {
        if i >= classes {
            return Err(CliError(format!(
                "class {i} is out of range: the model has {classes} classes (0 to {})",
                classes - 1
            )));
        }
        return Ok(Target::Class(i));
    }
    let hits: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i].eq_ignore_ascii_case(spec))
        .collect();
    match hits.as_slice() {
        [i] if *i < classes => Ok(Target::Class(*i)),
        [] => {
            let lower = spec.to_lowercase();
            let close: Vec<String> = labels
                .iter()
                .enumerate()
                .filter(|(_, l)| !lower.is_empty() && l.to_lowercase().contains(&lower))
                .take(5)
                .map(|(i, l)| format!("{i} {l}"))
                .collect();
            let hint = if close.is_empty() {
                String::new()
            } else {
                format!("; close labels: {}", close.join(", "))
            };
            Err(CliError(format!(
                "the model has no class named '{spec}' (give an index 0 to {} or a label){hint}",
                classes.saturating_sub(1)
            )))
        }
        many => {
            let idx: Vec<String> = many.iter().map(|i| i.to_string()).collect();
            Err(CliError(format!(
                "the label '{spec}' names several classes ({}); give the index",
                idx.join(", ")
            )))
        }
    }
}

/// The files of the arguments: files as given, directories as the files directly inside
/// them (sorted). An unreadable directory or a missing path is recorded in `failed`.
fn file_jobs(args: &[PathBuf], failed: &mut Vec<String>) -> Vec<Job> {
    let mut jobs = Vec::new();
    for path in args {
        if !path.is_dir() {
            jobs.push(Job::File(path.clone()));
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                if files.is_empty() {
                    eprintln!(
                        "convscope: {}: the directory holds no files",
                        path.display()
                    );
                    failed.push(path.display().to_string());
                }
                jobs.extend(files.into_iter().map(Job::File));
            }
            Err(e) => {
                eprintln!(
                    "convscope: {}: cannot list the directory ({e})",
                    path.display()
                );
                failed.push(path.display().to_string());
            }
        }
    }
    jobs
}

fn npy_jobs(npy: &Path, model: &Model) -> CliResult<Vec<Job>> {
    Ok(npy_inputs(npy, &model.graph)?
        .into_iter()
        .map(|i| Job::Npy {
            name: i.name,
            tensor: i.tensor,
        })
        .collect())
}

/// The output file stem of a job: the file stem, or for item `i` of `X.npy` `X` (a batch of
/// one) or `X_i`.
fn stem_of(job: &Job, single_npy: bool) -> String {
    match job {
        Job::File(p) => file_stem(p),
        Job::Npy { name, .. } => {
            // name is "path/X.npy[i]"
            let (path, index) = name
                .rsplit_once('[')
                .map(|(p, i)| (p, i.trim_end_matches(']')))
                .unwrap_or((name.as_str(), "0"));
            let stem = file_stem(Path::new(path));
            if single_npy {
                stem
            } else {
                format!("{stem}_{index}")
            }
        }
    }
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into())
}

/// Two inputs with the same stem would overwrite each other's outputs: refuse up front.
fn check_unique_stems(jobs: &[Job], npy: &Option<PathBuf>) -> CliResult<()> {
    if npy.is_some() {
        return Ok(());
    }
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for job in jobs {
        let stem = stem_of(job, false);
        if let Some(first) = seen.insert(stem.clone(), job.name()) {
            return Err(CliError(format!(
                "{first} and {} share the name '{stem}', so their outputs would overwrite each other; explain them into different --out directories",
                job.name()
            )));
        }
    }
    Ok(())
}

/// The model input and the photo it shows (`[1, c, h, w]` and RGBA at the input's size).
fn load(job: &Job, model: &Model) -> CliResult<(Tensor, image::RgbaImage)> {
    let preset = &model.description.preprocess;
    match job {
        Job::File(path) => {
            let named = |e: &dyn std::fmt::Display| {
                let msg = e.to_string();
                let shown = path.display().to_string();
                CliError(if msg.contains(&shown) {
                    msg
                } else {
                    format!("{shown}: {msg}")
                })
            };
            let img = Image::open(path).map_err(|e| named(&e))?;
            let tensor = image_to_tensor(&img, preset).map_err(|e| named(&e))?;
            let want = model.graph.input_shape();
            if tensor.shape()[1..] != want[1..] {
                return Err(CliError(format!(
                    "{}: preprocessing made {} but the model takes {}; fix the preset (predict --write-preset writes it for editing)",
                    path.display(),
                    fmt_shape(tensor.shape()),
                    fmt_shape(want)
                )));
            }
            let fitted = fit(&img, preset);
            let photo = rgba(
                &fitted.values(),
                fitted.channels,
                fitted.height,
                fitted.width,
            );
            Ok((tensor, photo))
        }
        Job::Npy { tensor, .. } => {
            let photo = photo_from_input(tensor, preset);
            Ok((tensor.clone(), photo))
        }
    }
}

/// Planes `(c, h, w)` on the 0..=255 scale (1 or 3 channels) as an opaque RGBA image.
fn rgba(planes: &[f32], c: usize, h: usize, w: usize) -> image::RgbaImage {
    let hw = h * w;
    image::RgbaImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        let v = |ch: usize| {
            let ch = if c >= 3 { ch } else { 0 };
            planes
                .get(ch * hw + i)
                .map_or(0, |v| v.round().clamp(0.0, 255.0) as u8)
        };
        image::Rgba([v(0), v(1), v(2), 255])
    })
}

/// The photo behind a preprocessed NCHW input `[1, c, h, w]`: the preset's normalisation
/// undone, `(x · std + mean) / scale`, channels back in RGB order.
fn photo_from_input(x: &Tensor, preset: &Preprocess) -> image::RgbaImage {
    let (c, h, w) = match x.shape() {
        &[_, c, h, w] => (c, h, w),
        _ => (1, 1, 1),
    };
    let hw = h * w;
    let scale = if preset.scale != 0.0 {
        preset.scale
    } else {
        1.0
    };
    let mut planes = vec![0.0f32; c * hw]; // (c, h, w), RGB order, 0..=255
    for ch in 0..c {
        let src = match preset.channels {
            Channels::Bgr if c == 3 => 2 - ch,
            _ => ch,
        };
        let (m, s) = (preset.mean[src.min(2)], preset.std[src.min(2)]);
        for (d, &v) in planes[ch * hw..(ch + 1) * hw]
            .iter_mut()
            .zip(&x.data()[src * hw..(src + 1) * hw])
        {
            *d = (v * s + m) / scale;
        }
    }
    rgba(&planes, c, h, w)
}

fn explain_one(s: &Setup, job: &Job, stem: &str) -> CliResult<Done> {
    let name = job.name();
    let named = |e: &dyn std::fmt::Display| CliError(format!("{name}: {e}"));
    let (x, photo) = load(job, s.model)?; // x: (1, c, h, w)
    let e = s
        .explainer
        .explain(&x, s.method, s.target, s.layer, &s.opts, Control::default())
        .map_err(|e| named(&e))?;
    let scores = s
        .explainer
        .faithfulness_scores(&x, &e, &s.curves, Control::default())
        .map_err(|e| named(&e))?;
    let (png, npy) = crate::io::explanation_paths(s.out, stem, s.method.name());
    save_png(&overlay(&photo, &e.map, s.colormap, s.alpha), &png).map_err(|e| named(&e))?;
    write_npy(&npy, &[e.map.height(), e.map.width()], e.map.data())?;
    let raw = if s.raw {
        let path = s.out.join(format!("{stem}.{}.raw.npy", s.method.name()));
        write_npy(&path, e.raw.shape(), e.raw.data())?;
        Some(path)
    } else {
        None
    };
    Ok(Done {
        explanation: e,
        deletion_auc: scores.deletion_auc,
        insertion_auc: scores.insertion_auc,
        png,
        npy,
        raw,
    })
}

/// The line printed for one input: JSON, or a short human summary.
fn report(s: &Setup, job: &Job, d: &Done, as_json: bool) -> String {
    let e = &d.explanation;
    let label = s
        .model
        .description
        .labels
        .get(e.target.class)
        .map(String::as_str);
    let show = |p: &Path| p.display().to_string();
    if as_json {
        return json!({
            "input": job.name(),
            "method": e.method.name(),
            "target": e.target.class,
            "label": label,
            "probability": e.probability,
            "layer": e.layer,
            "deletion_auc": d.deletion_auc,
            "insertion_auc": d.insertion_auc,
            "png": show(&d.png),
            "npy": show(&d.npy),
            "raw": d.raw.as_deref().map(show),
        })
        .to_string();
    }
    let label = label.map(|l| format!(" ({l})")).unwrap_or_default();
    let layer = e
        .layer
        .as_deref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    format!(
        "{}: {}{layer} for class {}{label}, p = {:.3}; deletion area {:.3}, insertion area {:.3} -> {}",
        job.name(),
        e.method.label(),
        e.target.class,
        e.probability,
        d.deletion_auc,
        d.insertion_auc,
        show(&d.png)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn targets_by_index_and_label() {
        let labels: Vec<String> = ["cat", "dog", "crane", "crane"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(parse_target("1", &labels, 4).unwrap(), Target::Class(1));
        assert_eq!(parse_target("DOG", &labels, 4).unwrap(), Target::Class(1));
        let e = parse_target("4", &labels, 4).unwrap_err().0;
        assert!(
            e.contains("class 4 is out of range") && e.contains("0 to 3"),
            "{e}"
        );
        let e = parse_target("do", &labels, 4).unwrap_err().0;
        assert!(
            e.contains("no class named 'do'") && e.contains("1 dog"),
            "{e}"
        );
        let e = parse_target("crane", &labels, 4).unwrap_err().0;
        assert!(e.contains("several classes (2, 3)"), "{e}");
    }

    #[test]
    fn stems() {
        let t = Tensor::zeros(&[1, 1, 1, 1]);
        let job = Job::Npy {
            name: "dir/x.npy[3]".into(),
            tensor: t,
        };
        assert_eq!(stem_of(&job, false), "x_3");
        assert_eq!(stem_of(&job, true), "x");
        assert_eq!(stem_of(&Job::File("a/b.c.png".into()), false), "b.c");
        let dup = vec![Job::File("a/x.png".into()), Job::File("b/x.jpg".into())];
        let e = check_unique_stems(&dup, &None).unwrap_err().0;
        assert!(e.contains("a/x.png and b/x.jpg share the name 'x'"), "{e}");
    }

    #[test]
    fn photo_round_trip() {
        let preset = Preprocess::imagenet();
        // One pixel, RGB (10, 128, 250) normalised as the preset does.
        let rgb = [10.0f32, 128.0, 250.0];
        let data: Vec<f32> = (0..3)
            .map(|c| (rgb[c] * preset.scale - preset.mean[c]) / preset.std[c])
            .collect();
        let x = Tensor::new(vec![1, 3, 1, 1], data).unwrap();
        assert_eq!(
            photo_from_input(&x, &preset).get_pixel(0, 0).0,
            [10, 128, 250, 255]
        );
    }
}
