//! `convscope activations --model M (IMAGE | --input-npy X.npy) --layer NAME --out FILE.npy`:
//! saves one value of the forward pass (a node output, an input or a parameter, by its graph
//! name) as float32 `.npy`, batch first.

use std::path::PathBuf;

use clap::Args;

use super::common::{Input, find_layer, image_input, npy_inputs, write_npy};
use super::resolve;
use super::{CliError, CliResult};
use crate::engine::tensor::fmt_shape;
use crate::engine::{ForwardOptions, Graph, Keep, Tensor, ValueId};

#[derive(Debug, Args)]
pub struct ActivationsArgs {
    /// An .onnx file, a checkpoint directory, or a bundled model (smile-cnn, efficientnet-lite0).
    #[arg(long)]
    pub model: String,
    /// Seed for initialising a bundled architecture (smile-cnn).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One image file, preprocessed by the model's preset.
    #[arg(required_unless_present = "input_npy", conflicts_with = "input_npy")]
    pub image: Option<PathBuf>,
    /// A preprocessed float32 tensor of the model's input shape, batch first.
    #[arg(long, value_name = "X.npy")]
    pub input_npy: Option<PathBuf>,
    /// The value to save (`convscope summary` lists the node names).
    #[arg(long)]
    pub layer: String,
    /// Output file (.npy, float32, batch first).
    #[arg(long, value_name = "FILE.npy")]
    pub out: PathBuf,
}

/// The value `id` for one input (batch 1).
fn activation(graph: &Graph, id: ValueId, input: &Input) -> CliResult<Tensor> {
    let opts = ForwardOptions {
        keep: Keep::Values(vec![id]),
        ..ForwardOptions::eval()
    };
    let pass = graph
        .forward(std::slice::from_ref(&input.tensor), &opts)
        .map_err(|e| CliError(format!("{}: {e}", input.name)))?;
    graph.lookup(&pass, id).cloned().ok_or_else(|| {
        CliError(format!(
            "'{}' was not kept by the forward pass",
            graph.value(id).name
        ))
    })
}

/// Stacks batch-1 tensors along dimension 0. Parameters (no batch dimension) are returned as is.
fn stack(parts: Vec<Tensor>) -> CliResult<Tensor> {
    let Some(first) = parts.first() else {
        return Err(CliError("there is no input".into()));
    };
    if parts.len() == 1 {
        return Ok(parts
            .into_iter()
            .next()
            .unwrap_or_else(|| Tensor::zeros(&[0])));
    }
    let item = first.shape().to_vec();
    if parts.iter().any(|t| t.rank() == 0) {
        // a rank-0 value has no batch dimension to stack the inputs' values along
        return Err(CliError(format!(
            "the value is a single number per run (rank 0), so the {} inputs' values cannot be \
             stacked along a batch dimension; ask for it one input at a time",
            parts.len()
        )));
    }
    let mut shape = item.clone();
    shape[0] = parts.iter().map(|t| t.shape()[0]).sum();
    let mut data = Vec::with_capacity(first.numel() * parts.len());
    for t in &parts {
        if t.shape()[1..] != item[1..] {
            return Err(CliError(format!(
                "activations of different shapes {} and {} cannot be stacked",
                fmt_shape(&item),
                fmt_shape(t.shape())
            )));
        }
        data.extend_from_slice(t.data());
    }
    Ok(Tensor::new(shape, data)?)
}

pub fn run(args: &ActivationsArgs) -> CliResult<()> {
    let source = resolve::resolve(&args.model, args.seed)?;
    let model = resolve::load(&source)?;
    let graph = &model.graph;
    let id = find_layer(graph, &args.layer)?;
    let inputs = match (&args.input_npy, &args.image) {
        (Some(npy), _) => npy_inputs(npy, graph)?,
        (None, Some(image)) => vec![image_input(image, &model)?],
        (None, None) => return Err(CliError("give an IMAGE or --input-npy X.npy".into())),
    };
    let is_param = matches!(
        graph.value(id).kind,
        crate::engine::graph::ValueKind::Param(_)
    );
    let parts = if is_param {
        // parameters do not depend on the input: one copy
        vec![activation(graph, id, &inputs[0])?]
    } else {
        inputs
            .iter()
            .map(|input| activation(graph, id, input))
            .collect::<CliResult<Vec<_>>>()?
    };
    let value = stack(parts).map_err(|e| CliError(format!("'{}': {}", args.layer, e.0)))?;
    write_npy(&args.out, value.shape(), value.data())?;
    eprintln!(
        "wrote {} {} to {}",
        args.layer,
        fmt_shape(value.shape()),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stacking_checks_shapes() {
        let a = Tensor::full(&[1, 2], 1.0);
        let b = Tensor::full(&[1, 2], 2.0);
        let s = stack(vec![a.clone(), b]).unwrap();
        assert_eq!(s.shape(), &[2, 2]);
        assert_eq!(s.data(), &[1.0, 1.0, 2.0, 2.0]);
        assert!(stack(vec![a, Tensor::full(&[1, 3], 0.0)]).is_err());
        assert!(stack(vec![]).is_err());
    }

    #[test]
    fn rank_0_values_of_several_inputs_are_refused_in_a_sentence() {
        let err = stack(vec![Tensor::scalar(1.0), Tensor::scalar(2.0)]);
        let Err(CliError(msg)) = err else {
            panic!("stacked rank-0 values");
        };
        assert!(msg.contains("rank 0") && msg.contains("2 inputs"), "{msg}");
        // one input's rank-0 value is written as it is
        let one = stack(vec![Tensor::scalar(3.0)]).map_err(|e| e.0);
        assert_eq!(one, Ok(Tensor::scalar(3.0)));
    }
}
