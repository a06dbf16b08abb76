//! `convscope summary --model M [--json]`: the layer table of a model.

use clap::Args;
use serde_json::json;

use super::CliResult;
use super::resolve::{self, ModelSource};
use crate::engine::Graph;
use crate::engine::tensor::fmt_shape;

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// An .onnx file, a checkpoint directory, or a bundled model (smile-cnn, efficientnet-lite0).
    #[arg(long)]
    pub model: String,
    /// Seed for initialising a bundled model.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object per line: one per node, then the totals.
    #[arg(long)]
    pub json: bool,
    /// Save the preprocessing preset and labels in use beside an .onnx model
    /// (`x.onnx` → `x.preset.ron`) for editing.
    #[arg(long)]
    pub write_preset: bool,
}

pub use crate::models::summary::{NodeRow, rows};

pub fn run(args: &SummaryArgs) -> CliResult<()> {
    let source = resolve::resolve(&args.model, args.seed)?;
    let (model, origin) = resolve::load_with_origin(&source)?;
    if args.write_preset {
        let path = resolve::write_preset(&source, &model)?;
        eprintln!("wrote {}", path.display());
    }
    let graph = &model.graph;
    let pre = &model.description.preprocess;
    let rows = rows(graph);
    let total_macs: u64 = rows.iter().map(|r| r.macs).sum();
    let trainable = graph.trainable_count();
    let buffers: usize = graph
        .params()
        .iter()
        .filter(|p| !p.trainable)
        .map(|p| p.tensor.numel())
        .sum();
    if args.json {
        for r in &rows {
            let line = json!({"node": r.name, "op": r.op, "shape": r.shape, "params": r.params, "macs": r.macs});
            println!("{line}");
        }
        let total = json!({
            "model": resolve::display_name(&source),
            "input_shape": graph.input_shape(),
            "nodes": rows.len(),
            "params": trainable,
            "buffers": buffers,
            "macs": total_macs,
            "preprocess": pre,
            "preset": origin.to_string(),
            "classes": model.description.labels.len(),
        });
        println!("{total}");
        return Ok(());
    }
    print_table(&source, graph, &rows);
    println!(
        "total: {} nodes, {trainable} trainable parameters, {buffers} buffer values, {total_macs} MACs",
        rows.len()
    );
    println!(
        "preprocessing ({origin}): {}x{} {:?} {:?}, x*{} then mean {:?} std {:?}, {:?} {:?}; {} class labels",
        pre.size[0],
        pre.size[1],
        pre.resize,
        pre.filter,
        pre.scale,
        pre.mean,
        pre.std,
        pre.channels,
        pre.layout,
        model.description.labels.len()
    );
    Ok(())
}

fn print_table(source: &ModelSource, graph: &Graph, rows: &[NodeRow]) {
    println!(
        "model {} (input {})",
        resolve::display_name(source),
        fmt_shape(graph.input_shape())
    );
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let op_w = rows.iter().map(|r| r.op.len()).max().unwrap_or(2).max(2);
    let shape_w = rows
        .iter()
        .map(|r| fmt_shape(&r.shape).len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<name_w$}  {:<op_w$}  {:<shape_w$}  {:>10}  {:>12}",
        "node", "op", "shape", "params", "MACs"
    );
    for r in rows {
        println!(
            "{:<name_w$}  {:<op_w$}  {:<shape_w$}  {:>10}  {:>12}",
            r.name,
            r.op,
            fmt_shape(&r.shape),
            r.params,
            r.macs
        );
    }
}
