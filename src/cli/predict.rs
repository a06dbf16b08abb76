//! `convscope predict --model M (IMAGE... | --input-npy X.npy) [--top K] [--json]`: class
//! scores per input. Images go through the model's preprocessing preset; `--input-npy` takes an
//! already preprocessed float32 tensor in the model's own layout, batch first (N lines out).
//! A bad image is reported (naming the file) and skipped; the exit code is non-zero at the end.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::common::{Input, finish_inputs, image_input, npy_inputs, scores};
use super::resolve;
use super::{CliError, CliResult};
use crate::models::scores::{probabilities, top_k};

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// An .onnx file, a checkpoint directory, or a bundled model (smile-cnn, efficientnet-lite0).
    #[arg(long)]
    pub model: String,
    /// Seed for initialising a bundled architecture (smile-cnn).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image files (PNG, JPEG, ...), preprocessed by the model's preset.
    #[arg(required_unless_present = "input_npy", conflicts_with = "input_npy")]
    pub images: Vec<PathBuf>,
    /// A preprocessed float32 tensor of the model's input shape, batch first.
    #[arg(long, value_name = "X.npy")]
    pub input_npy: Option<PathBuf>,
    /// How many classes to list per input.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// One JSON object per input and line: input, top classes, raw outputs ("logits").
    #[arg(long)]
    pub json: bool,
    /// Save the preprocessing preset and labels in use beside an .onnx model
    /// (`x.onnx` → `x.preset.ron`) for editing.
    #[arg(long)]
    pub write_preset: bool,
}

fn label(labels: &[String], i: usize) -> Option<&str> {
    labels.get(i).map(String::as_str)
}

fn report(input: &Input, logits: &[f32], labels: &[String], k: usize, as_json: bool) {
    let top = top_k(&probabilities(logits), k);
    if as_json {
        let top: Vec<_> = top
            .iter()
            .map(|&(i, p)| json!({"index": i, "label": label(labels, i), "prob": p}))
            .collect();
        println!(
            "{}",
            json!({"input": input.name, "top": top, "logits": logits})
        );
        return;
    }
    println!("{}", input.name);
    for (rank, (i, p)) in top.iter().enumerate() {
        let name = label(labels, *i).unwrap_or("");
        println!("  {:>2}. {:>6.2}%  {i:>5}  {name}", rank + 1, p * 100.0);
    }
}

pub fn run(args: &PredictArgs) -> CliResult<()> {
    let source = resolve::resolve(&args.model, args.seed)?;
    let model = resolve::load(&source)?;
    if args.write_preset {
        let path = resolve::write_preset(&source, &model)?;
        eprintln!("wrote {}", path.display());
    }
    let labels = &model.description.labels;
    let k = args.top.max(1);
    let mut failed = Vec::new();
    let predict = |input: &Input| -> CliResult<()> {
        let logits = scores(&model.graph, &input.tensor)
            .map_err(|e| CliError(format!("{}: {e}", input.name)))?;
        report(input, &logits, labels, k, args.json);
        Ok(())
    };
    if let Some(npy) = &args.input_npy {
        for input in npy_inputs(npy, &model.graph)? {
            predict(&input)?;
        }
        return Ok(());
    }
    for path in &args.images {
        match image_input(path, &model).and_then(|input| predict(&input)) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("convscope: {e}");
                failed.push(path.display().to_string());
            }
        }
    }
    finish_inputs(&source, &failed, args.images.len(), "classified")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_by_output_kind() {
        let p = probabilities(&[0.0]);
        assert_eq!(p, vec![0.5, 0.5]);
        let p = probabilities(&[2.0]);
        assert!((p[1] - 0.880_797).abs() < 1e-6 && (p[0] + p[1] - 1.0).abs() < 1e-6);
        assert_eq!(probabilities(&[0.25, 0.75]), vec![0.25, 0.75]);
        let p = probabilities(&[1.0, 2.0, 3.0]);
        assert!((p[2] - 0.665_240_9).abs() < 1e-6);
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(
            top_k(&[0.1, 0.4, 0.4, 0.1], 3),
            vec![(1, 0.4), (2, 0.4), (0, 0.1)]
        );
        assert_eq!(top_k(&[1.0], 5).len(), 1);
    }
}
