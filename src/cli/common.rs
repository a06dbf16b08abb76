//! What several subcommands share: finding a layer by name (with close names suggested),
//! reading inputs (images through the model's preset, preprocessed `.npy` batches), writing
//! `.npy`, and the report helpers (skipped files, failed inputs, the metrics' JSON line).
//! Subcommands import this module, never each other.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use ndarray::{ArrayD, Axis};
use serde_json::json;

use super::resolve;
use super::{CliError, CliResult};
use crate::data::Skipped;
use crate::engine::tensor::fmt_shape;
use crate::engine::{Graph, Tensor, ValueId};
use crate::explain::Progress;
use crate::models::Model;
use crate::models::preprocess::load_image;
use crate::train;

/// How many similar names an unknown `--layer` message suggests.
const SUGGESTIONS: usize = 5;

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The graph's value names closest to `name`: names containing it first, then by edit distance.
pub fn close_names(graph: &Graph, name: &str, n: usize) -> Vec<String> {
    let lower = name.to_lowercase();
    let mut scored: Vec<(bool, usize, &str)> = graph
        .values()
        .iter()
        .map(|v| {
            let contains = !lower.is_empty() && v.name.to_lowercase().contains(&lower);
            (
                !contains,
                edit_distance(&lower, &v.name.to_lowercase()),
                v.name.as_str(),
            )
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(n)
        .map(|(_, _, s)| s.to_string())
        .collect()
}

/// The value called `name`, or an error suggesting close names.
pub fn find_layer(graph: &Graph, name: &str) -> CliResult<ValueId> {
    graph.layer_value(name).ok_or_else(|| {
        CliError(format!(
            "the model has no layer or value named '{name}'; close names: {}",
            close_names(graph, name, SUGGESTIONS).join(", ")
        ))
    })
}

/// One input for the model: a display name and a tensor with batch 1.
#[derive(Debug)]
pub struct Input {
    pub name: String,
    pub tensor: Tensor,
}

/// Reads a float32 `.npy` whose shape is the model's input shape with any batch size, and splits
/// it into single examples named `X.npy[i]`.
pub fn npy_inputs(path: &Path, graph: &Graph) -> CliResult<Vec<Input>> {
    let array: ArrayD<f32> = ndarray_npy::read_npy(path).map_err(|e| {
        CliError(format!(
            "{}: cannot read a float32 .npy tensor ({e})",
            path.display()
        ))
    })?;
    let want = graph.input_shape();
    let ok = array.ndim() == want.len() && array.shape()[1..] == want[1..] && array.shape()[0] > 0;
    if !ok {
        let dims: Vec<String> = std::iter::once("N".to_string())
            .chain(want.iter().skip(1).map(|d| d.to_string()))
            .collect();
        return Err(CliError(format!(
            "{}: the tensor has shape {}, the model takes [{}]",
            path.display(),
            fmt_shape(array.shape()),
            dims.join(", ")
        )));
    }
    Ok(array
        .axis_iter(Axis(0))
        .enumerate()
        .map(|(i, item)| Input {
            name: format!("{}[{i}]", path.display()),
            tensor: Tensor::from_array(item.insert_axis(Axis(0)).to_owned()),
        })
        .collect())
}

/// Decodes and preprocesses one image, checking the result against the model's input shape.
pub fn image_input(path: &Path, model: &Model) -> CliResult<Input> {
    let tensor = load_image(path, &model.description.preprocess)?;
    let want = model.graph.input_shape();
    if tensor.shape()[1..] != want[1..] {
        return Err(CliError(format!(
            "{}: preprocessing made {} but the model takes {}; fix the preset (--write-preset writes it for editing)",
            path.display(),
            fmt_shape(tensor.shape()),
            fmt_shape(want)
        )));
    }
    Ok(Input {
        name: path.display().to_string(),
        tensor,
    })
}

/// Writes float32 `data` of `shape` as `.npy`, atomically ([`crate::io::write_npy`]); the error
/// names the file.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> CliResult<()> {
    crate::io::write_npy(path, shape, data).map_err(CliError)
}

/// The first output of one forward pass, flattened per example: `[scores]`.
pub fn scores(graph: &Graph, input: &Tensor) -> CliResult<Vec<f32>> {
    crate::models::scores::scores(graph, input).map_err(CliError)
}

/// The end of a command over many inputs: `Ok` when all went well, else one error naming how
/// many inputs failed and which (each was already reported on its own as it failed).
pub fn finish_inputs(
    source: &resolve::ModelSource,
    failed: &[String],
    total: usize,
    what: &str,
) -> CliResult<()> {
    if failed.is_empty() {
        return Ok(());
    }
    Err(CliError(format!(
        "{} of {total} inputs could not be {what} by {} ({})",
        failed.len(),
        resolve::display_name(source),
        failed.join(", ")
    )))
}

/// Files left out, printed once on stderr.
pub fn report_skipped(skipped: &[Skipped]) {
    if skipped.is_empty() {
        return;
    }
    eprintln!(
        "convscope: skipped {} unreadable or non-image files:",
        skipped.len()
    );
    for s in skipped {
        eprintln!("  {}: {}", s.name, s.reason);
    }
}

/// The final JSON line (DESIGN.md): test metrics, precision/recall/F1 of the positive class.
pub fn metrics_json(m: &train::ClassMetrics, loss: Option<f32>) -> serde_json::Value {
    let (p, r, f) = m.headline();
    json!({
        "test_acc": m.accuracy,
        "precision": p,
        "recall": r,
        "f1": f,
        "macro_f1": m.macro_f1,
        "auc": m.auc,
        "confusion": m.confusion,
        "test_loss": loss,
        "n": m.n,
    })
}

/// The progress bar: visible only in text mode on a terminal.
pub fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// A library job's progress (`Control::progress`) shown on `pb`.
pub fn show_progress(pb: &ProgressBar) -> impl Fn(Progress) + '_ {
    move |p: Progress| {
        pb.set_length(p.total as u64);
        pb.set_position(p.done as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
