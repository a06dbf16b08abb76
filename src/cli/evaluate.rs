//! `convscope evaluate --model M --data DIR|synthetic-smiles [--json]`: accuracy, precision,
//! recall, F1 (positive class for two classes), macro F1, ROC AUC and the confusion matrix of
//! a model on a folder (its `test/` split when it has one, else every image).

use clap::Args;
use serde_json::json;

use super::common::{metrics_json, report_skipped};
use super::resolve;
use super::{CliError, CliResult};
use crate::data::{Dataset, SyntheticFaces};
use crate::train::data::{evaluation_folder, preprocess_for};
use crate::train::{Head, evaluate};

/// Misclassified examples listed in the output at most.
const MAX_LISTED: usize = 20;

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// A checkpoint directory or a bundled model name (smile-cnn).
    #[arg(long)]
    pub model: String,
    /// An image folder (one sub-folder per class) or `synthetic-smiles`.
    #[arg(long)]
    pub data: String,
    /// Seed of a bundled model's weights and of synthetic faces.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of synthetic faces.
    #[arg(long, default_value_t = 1000)]
    pub test_size: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Worker threads (default: RAYON_NUM_THREADS, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// One JSON object on one line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &EvaluateArgs) -> CliResult<()> {
    if let Some(t) = args.threads {
        if t == 0 {
            return Err(CliError("--threads must be at least 1".into()));
        }
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    let source = resolve::resolve(&args.model, args.seed)?;
    let model = resolve::load(&source)?;
    let input = model.graph.input_shape().to_vec();
    let pre = &model.description.preprocess;
    let (dataset, classes, skipped) = if args.data == "synthetic-smiles" {
        let faces = SyntheticFaces::new(args.seed ^ 0x5EED_0000_0000_0002, args.test_size)
            .with_preprocess(preprocess_for(&input, pre).map_err(|e| CliError(e.to_string()))?)
            .map_err(|e| CliError(e.to_string()))?;
        let d = Dataset::Synthetic(faces);
        let classes = d.classes();
        (d, classes, Vec::new())
    } else {
        evaluation_folder(std::path::Path::new(&args.data), &input, pre)
            .map_err(|e| CliError(e.to_string()))?
    };
    report_skipped(&skipped);
    if dataset.is_empty() {
        return Err(CliError(format!("{}: no images to evaluate", args.data)));
    }
    let labels = &model.description.labels;
    if !labels.is_empty() && labels != &classes && labels.len() == classes.len() {
        eprintln!(
            "convscope: note: the model's labels {labels:?} differ from the data's classes {classes:?}; matching them by position"
        );
    }
    let head = Head::of(&model.graph, classes.len()).map_err(|e| {
        CliError(format!(
            "{}: {e} ({})",
            resolve::display_name(&source),
            classes.join(", ")
        ))
    })?;
    let (loss, m, more_skipped) =
        evaluate(&model.graph, &dataset, args.batch, head).map_err(|e| CliError(e.to_string()))?;
    report_skipped(&more_skipped);
    let listed: Vec<_> = m
        .misclassified
        .iter()
        .take(MAX_LISTED)
        .map(|x| {
            json!({
                "index": x.index,
                "item": dataset.item_name(x.index),
                "predicted": classes.get(x.predicted),
                "truth": classes.get(x.truth),
                "score": x.score,
            })
        })
        .collect();
    if args.json {
        let mut v = metrics_json(&m, Some(loss));
        v["classes"] = json!(classes);
        v["misclassified"] = json!(listed);
        println!("{v}");
        return Ok(());
    }
    let (p, r, f) = m.headline();
    println!(
        "{} on {} ({} images): accuracy {:.4}, precision {p:.4}, recall {r:.4}, F1 {f:.4}, macro F1 {:.4}{}, loss {loss:.4}",
        resolve::display_name(&source),
        args.data,
        m.n,
        m.accuracy,
        m.macro_f1,
        m.auc.map_or(String::new(), |a| format!(", AUC {a:.4}"))
    );
    println!("classes: {}", classes.join(", "));
    println!(
        "confusion (rows: true, columns: predicted): {:?}",
        m.confusion
    );
    for x in &listed {
        println!(
            "misclassified: {} (true {}, predicted {}, score {:.3})",
            x["item"], x["truth"], x["predicted"], x["score"]
        );
    }
    Ok(())
}
