//! The layer table of a graph: name, op, output shape, trainable parameters and MACs per node.
//! Shared by `convscope summary` and the window's layers panel.

use crate::engine::Graph;
use crate::engine::graph::ValueKind;

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    /// The node's name.
    pub name: String,
    /// The name of the value it produces (what `--layer` and the explain functions take).
    pub output: String,
    pub op: String,
    pub shape: Vec<usize>,
    /// Trainable scalars the node reads (buffers such as running statistics excluded).
    pub params: usize,
    pub macs: u64,
}

/// The rows of a graph, in execution order, at its declared input shape.
pub fn rows(graph: &Graph) -> Vec<NodeRow> {
    graph
        .nodes()
        .iter()
        .map(|node| {
            let shapes: Vec<&[usize]> = node
                .inputs
                .iter()
                .map(|&v| graph.value(v).shape.as_slice())
                .collect();
            let shape = graph.value(node.output).shape.clone();
            let params = node
                .inputs
                .iter()
                .filter_map(|&v| match graph.value(v).kind {
                    ValueKind::Param(p) => graph.params().get(p),
                    _ => None,
                })
                .filter(|p| p.trainable)
                .map(|p| p.tensor.numel())
                .sum();
            NodeRow {
                name: node.name.clone(),
                output: graph.value(node.output).name.clone(),
                op: node.op.kind_name().to_string(),
                macs: node.op.macs(&shapes, &shape),
                shape,
                params,
            }
        })
        .collect()
}
