//! `convscope dream --model M --target CLASS[:WEIGHT]... [--steps N] [--size S] [--seed S]
//! --out FILE.png [--json]`: activation maximisation of a weighted mix of classes.
//!
//! A class is an index or a label of the model ("leopard"); the weight defaults to 1. Every
//! `--every` steps (and after the last) the untransformed image is scored and reported; the
//! last report scores the saved 8-bit PNG through the model's own preprocessing, i.e. what
//! `convscope predict FILE.png` says.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::common::{find_layer, scores};
use super::resolve;
use super::{CliError, CliResult};
use crate::explain::Control;
use crate::explain::dream::{
    ClassScore, DeepDreamOptions, DreamConfig, DreamStep, DreamTarget, Dreamer, Parameterisation,
    deep_dream,
};
use crate::models::Model;
use crate::models::preprocess::{Image, image_to_tensor};
use crate::models::scores::{probabilities, top_k};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ParamArg {
    /// Decorrelated colour, 1/f-scaled Fourier spectrum (Lucid's default).
    Fourier,
    /// Plain pixels.
    Pixels,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScoreArg {
    /// Σ weight · logit (pre-softmax).
    Logit,
    /// Σ weight · log-probability: the probabilities settle in proportion to the weights.
    LogProb,
}

#[derive(Debug, Args)]
pub struct DreamArgs {
    /// An .onnx file, a checkpoint directory, or a bundled model (smile-cnn, efficientnet-lite0).
    #[arg(long)]
    pub model: String,
    /// CLASS[:WEIGHT]: a class index or label, optionally weighted (default 1); repeat or list
    /// several to mix classes, e.g. `--target leopard:0.5 --target 291:0.5`.
    #[arg(
        long,
        required_unless_present = "photo",
        num_args = 1..,
        value_name = "CLASS[:WEIGHT]"
    )]
    pub target: Vec<String>,
    /// Adam steps.
    #[arg(long, default_value_t = 256)]
    pub steps: usize,
    /// Side of the square image in pixels (default: the model's input height).
    #[arg(long)]
    pub size: Option<usize>,
    /// Seed of the dream (and of a freshly initialised bundled architecture).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the image (PNG).
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,
    /// One JSON object per reported step: {"step", "targets": [{"index", "label", "prob"}], ...}.
    #[arg(long)]
    pub json: bool,
    /// Report every this many steps (and after the last).
    #[arg(long, default_value_t = 10)]
    pub every: usize,
    /// Adam's learning rate (default: 0.05 for fourier, 0.01 for pixels).
    #[arg(long)]
    pub lr: Option<f32>,
    /// How the image is parameterised.
    #[arg(long, value_enum, default_value_t = ParamArg::Fourier)]
    pub param: ParamArg,
    /// What class targets maximise: the logit, or the log-probability (keeps every class of
    /// a mix).
    #[arg(long, value_enum, default_value_t = ScoreArg::Logit)]
    pub score: ScoreArg,
    /// Start from this image instead of noise (warm start).
    #[arg(long, value_name = "IMAGE")]
    pub init: Option<PathBuf>,
    /// DeepDream instead: amplify `--layer` in this photo, octave by octave (no --target).
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["target", "init"], requires = "layer")]
    pub photo: Option<PathBuf>,
    /// The layer (value name, as `summary` lists) whose activations DeepDream amplifies.
    #[arg(long, requires = "photo")]
    pub layer: Option<String>,
    /// DeepDream: number of octaves.
    #[arg(long, default_value_t = 4)]
    pub octaves: usize,
    /// DeepDream: gradient steps per octave.
    #[arg(long, default_value_t = 10)]
    pub octave_steps: usize,
    /// DeepDream: size ratio between octaves.
    #[arg(long, default_value_t = 1.4)]
    pub octave_scale: f32,
}

/// A parsed `CLASS[:WEIGHT]` whose class is resolved against the model's labels.
pub fn parse_target(spec: &str, labels: &[String], classes: usize) -> CliResult<DreamTarget> {
    let (class, weight) = match spec.rsplit_once(':') {
        Some((c, w)) => {
            let weight: f32 = w.trim().parse().map_err(|_| {
                CliError(format!(
                    "--target '{spec}': the weight '{w}' is not a number (expected CLASS[:WEIGHT], e.g. leopard:0.5)"
                ))
            })?;
            if !weight.is_finite() {
                return Err(CliError(format!(
                    "--target '{spec}': the weight must be a finite number"
                )));
            }
            (c.trim(), weight)
        }
        None => (spec.trim(), 1.0),
    };
    if class.is_empty() {
        return Err(CliError(format!(
            "--target '{spec}': no class given (expected CLASS[:WEIGHT], e.g. leopard:0.5)"
        )));
    }
    let index = resolve_class(class, labels, classes)
        .map_err(|e| CliError(format!("--target '{spec}': {e}")))?;
    Ok(DreamTarget::class(index, weight))
}

/// A class index or label → index.
fn resolve_class(class: &str, labels: &[String], classes: usize) -> Result<usize, String> {
    if let Ok(i) = class.parse::<usize>() {
        if i >= classes {
            return Err(format!(
                "class {i} is out of range: the model has {classes} classes"
            ));
        }
        return Ok(i);
    }
    let matches: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i].eq_ignore_ascii_case(class))
        .collect();
    match matches.as_slice() {
        [i] => Ok(*i),
        [] => {
            let near: Vec<String> = labels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.to_lowercase().contains(&class.to_lowercase()))
                .take(5)
                .map(|(i, l)| format!("{i} {l}"))
                .collect();
            Err(if labels.is_empty() {
                format!("the model has no class labels, so '{class}' must be a class index")
            } else if near.is_empty() {
                format!("the model has no class named '{class}'")
            } else {
                format!(
                    "the model has no class named '{class}' (similar: {})",
                    near.join(", ")
                )
            })
        }
        many => Err(format!(
            "'{class}' names several classes ({}); give the index",
            many.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn label(labels: &[String], i: usize) -> Option<&str> {
    labels.get(i).map(String::as_str)
}

fn report(s: &DreamStep, labels: &[String], as_json: bool, seconds: f64) {
    if as_json {
        let targets: Vec<_> = s
            .targets
            .iter()
            .map(|&(i, p)| json!({"index": i, "label": label(labels, i), "prob": p}))
            .collect();
        let top: Vec<_> = s
            .top5
            .iter()
            .map(|&(i, p)| json!({"index": i, "label": label(labels, i), "prob": p}))
            .collect();
        println!(
            "{}",
            json!({"step": s.step, "targets": targets, "objective": s.objective, "top": top, "seconds": seconds})
        );
        return;
    }
    let targets: Vec<String> = s
        .targets
        .iter()
        .map(|&(i, p)| format!("{} {:.3}", label(labels, i).unwrap_or(&i.to_string()), p))
        .collect();
    println!(
        "step {:>4} ({seconds:>6.1} s): {}",
        s.step,
        targets.join(", ")
    );
}

/// Makes sure `out` can be written before spending minutes on the dream.
fn check_writable(out: &Path) -> CliResult<()> {
    let is_png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(CliError(format!(
            "{}: the output must be a .png file",
            out.display()
        )));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(out)
        .map(|_| ())
        .map_err(|e| CliError(format!("{}: cannot write the output ({e})", out.display())))
}

/// Scores of the saved 8-bit image through the model's preprocessing, as a report.
fn score_saved(model: &Model, img: &image::RgbImage, last: &DreamStep) -> CliResult<DreamStep> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let hw = w * h;
    let mut planes = vec![0.0f32; 3 * hw]; // (3, h, w) in [0, 1]
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            planes[c * hw + i] = f32::from(px.0[c]) / 255.0;
        }
    }
    let image = Image::from_unit_planes(planes, 3, h, w);
    let x = image_to_tensor(&image, &model.description.preprocess)?;
    let probs = probabilities(&scores(&model.graph, &x)?);
    Ok(DreamStep {
        targets: last
            .targets
            .iter()
            .map(|&(i, _)| (i, probs.get(i).copied().unwrap_or(0.0)))
            .collect(),
        top5: top_k(&probs, 5),
        ..last.clone()
    })
}

pub fn run(args: &DreamArgs) -> CliResult<()> {
    let source = resolve::resolve(&args.model, args.seed)?;
    let model = resolve::load(&source)?;
    if let Some(photo) = &args.photo {
        return guarded(&args.out, || run_deep_dream(args, &model, photo));
    }
    let labels = &model.description.labels;
    let classes = match crate::explain::ScoreHead::find(&model.graph)?.classes() {
        0 => 1,
        n => n,
    };
    let targets = args
        .target
        .iter()
        .map(|t| parse_target(t, labels, classes))
        .collect::<CliResult<Vec<_>>>()?;
    if args.steps == 0 || args.every == 0 {
        return Err(CliError("--steps and --every must be at least 1".into()));
    }
    guarded(&args.out, || dream(args, &model, targets))
}

/// Checks that `out` can be written, runs `f`, and removes the empty file the check made if
/// `f` fails.
fn guarded(out: &Path, f: impl FnOnce() -> CliResult<()>) -> CliResult<()> {
    let existed = out.exists();
    check_writable(out)?;
    let result = f();
    if result.is_err() && !existed {
        let _ = std::fs::remove_file(out);
    }
    result
}

fn run_deep_dream(args: &DreamArgs, model: &Model, photo: &Path) -> CliResult<()> {
    let layer = args.layer.as_deref().unwrap_or_default();
    find_layer(&model.graph, layer)?;
    let start = image::open(photo)
        .map_err(|e| CliError(format!("{}: cannot read the image ({e})", photo.display())))?
        .to_rgb8();
    let opts = DeepDreamOptions {
        octaves: args.octaves,
        steps_per_octave: args.octave_steps,
        octave_scale: args.octave_scale,
        lr: args.lr.unwrap_or(DeepDreamOptions::default().lr),
        seed: args.seed,
    };
    let started = Instant::now();
    let img = deep_dream(
        &model.graph,
        &model.description.preprocess,
        &start,
        layer,
        &opts,
        Control::default(),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    crate::render::save_png(&img, &args.out).map_err(|e| CliError(e.to_string()))?;
    if args.json {
        println!(
            "{}",
            json!({"photo": photo.display().to_string(), "layer": layer, "octaves": opts.octaves,
                   "steps_per_octave": opts.steps_per_octave, "seconds": seconds,
                   "out": args.out.display().to_string()})
        );
    } else {
        println!(
            "wrote {} (DeepDream of '{layer}', {} octaves x {} steps in {seconds:.1} s)",
            args.out.display(),
            opts.octaves,
            opts.steps_per_octave
        );
    }
    Ok(())
}

fn dream(args: &DreamArgs, model: &Model, targets: Vec<DreamTarget>) -> CliResult<()> {
    let labels = &model.description.labels;
    let parameterisation = match args.param {
        ParamArg::Fourier => Parameterisation::Fourier,
        ParamArg::Pixels => Parameterisation::Pixels,
    };
    let config = DreamConfig {
        size: args.size.unwrap_or(model.description.preprocess.size[0]),
        lr: args.lr.unwrap_or(match parameterisation {
            Parameterisation::Fourier => 0.05,
            Parameterisation::Pixels => 0.01,
        }),
        parameterisation,
        class_score: match args.score {
            ScoreArg::Logit => ClassScore::Logit,
            ScoreArg::LogProb => ClassScore::LogProbability,
        },
        seed: args.seed,
        ..DreamConfig::default()
    };
    let preprocess = &model.description.preprocess;
    let mut dreamer = match &args.init {
        Some(path) => {
            let start = image::open(path)
                .map_err(|e| CliError(format!("{}: cannot read the image ({e})", path.display())))?
                .to_rgb8();
            Dreamer::from_image(&model.graph, preprocess, &start, targets, config)?
        }
        None => Dreamer::new(&model.graph, preprocess, targets, config)?,
    };
    let started = Instant::now();
    let mut last = None;
    for step in 1..=args.steps {
        dreamer.step()?;
        if step % args.every == 0 && step != args.steps {
            report(
                &dreamer.evaluate()?,
                labels,
                args.json,
                started.elapsed().as_secs_f64(),
            );
        }
        if step == args.steps {
            last = Some(dreamer.evaluate()?);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let img = dreamer.image();
    crate::render::save_png(&img, &args.out).map_err(|e| CliError(e.to_string()))?;
    let last = last.ok_or_else(|| CliError("the dream took no step".into()))?;
    let saved = score_saved(model, &img, &last)?;
    report(&saved, labels, args.json, seconds);
    if !args.json {
        let top: Vec<String> = saved
            .top5
            .iter()
            .map(|&(i, p)| format!("{} {p:.3}", label(labels, i).unwrap_or(&i.to_string())))
            .collect();
        println!(
            "wrote {} ({} steps in {seconds:.1} s); top-5 of the saved image: {}",
            args.out.display(),
            args.steps,
            top.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_index_label_and_weight() {
        let labels: Vec<String> = ["cat", "leopard", "crane", "crane", "snow leopard"]
            .map(String::from)
            .to_vec();
        let t = parse_target("leopard:0.5", &labels, 5).unwrap();
        assert_eq!(t, DreamTarget::class(1, 0.5));
        assert_eq!(
            parse_target("Snow Leopard", &labels, 5).unwrap(),
            DreamTarget::class(4, 1.0)
        );
        assert_eq!(
            parse_target("0:-1", &labels, 5).unwrap(),
            DreamTarget::class(0, -1.0)
        );
        let e = parse_target("leopard:abc", &labels, 5).unwrap_err().0;
        assert!(e.contains("'abc' is not a number"), "{e}");
        let e = parse_target("leo", &labels, 5).unwrap_err().0;
        assert!(
            e.contains("no class named 'leo'") && e.contains("1 leopard"),
            "{e}"
        );
        let e = parse_target("crane", &labels, 5).unwrap_err().0;
        assert!(e.contains("several classes (2, 3)"), "{e}");
        let e = parse_target("7", &labels, 5).unwrap_err().0;
        assert!(e.contains("out of range"), "{e}");
        let e = parse_target(":1", &labels, 5).unwrap_err().0;
        assert!(e.contains("no class given"), "{e}");
        let e = parse_target("cat:inf", &labels, 5).unwrap_err().0;
        assert!(e.contains("finite"), "{e}");
    }
}
