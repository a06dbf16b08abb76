//! The part of a graph that some values depend on, optionally at another input size: the
//! microscope runs a model only as far as the layer it probes (EfficientNet-Lite0 up to a mid
//! block is a third of the network), and at the size its pictures are made at.

use super::{Graph, GraphDef, InputDef, NodeDef, ValueId, ValueKind};
use crate::engine::error::{GraphError, GraphResult};

impl Graph {
    /// A graph of the nodes that `outputs` depend on, with `outputs` as its outputs. Its inputs
    /// are this graph's inputs; `input_shape` (when given) replaces the declared shape of the
    /// first, so that a fully convolutional prefix can run at another size (shapes are checked
    /// again, and a node that cannot take the new size is an error naming it). Parameters are
    /// copied.
    pub fn subgraph(
        &self,
        outputs: &[ValueId],
        input_shape: Option<&[usize]>,
    ) -> GraphResult<Graph> {
        if outputs.is_empty() {
            return Err(GraphError::Other(
                "a subgraph needs at least one output".into(),
            ));
        }
        let mut needed = vec![false; self.values.len()];
        for &o in outputs {
            let slot = needed
                .get_mut(o)
                .ok_or_else(|| GraphError::Other(format!("value {o} is not in the graph")))?;
            *slot = true;
        }
        for node in self.nodes.iter().rev() {
            if needed[node.output] {
                for &i in &node.inputs {
                    needed[i] = true;
                }
            }
        }
        let name = |v: ValueId| self.values[v].name.clone();
        let nodes = self
            .nodes
            .iter()
            .filter(|n| needed[n.output])
            .map(|n| NodeDef {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs: n.inputs.iter().map(|&v| name(v)).collect(),
                output: name(n.output),
            })
            .collect();
        let params = self
            .values
            .iter()
            .enumerate()
            .filter_map(|(v, info)| match info.kind {
                ValueKind::Param(p) if needed[v] => Some(self.params[p].clone()),
                _ => None,
            })
            .collect();
        let inputs = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| InputDef {
                name: name(v),
                shape: match input_shape {
                    Some(shape) if i == 0 => shape.to_vec(),
                    _ => self.values[v].shape.clone(),
                },
            })
            .collect();
        let mut sub = Graph::from_def(GraphDef {
            inputs,
            params,
            nodes,
            outputs: outputs.iter().map(|&v| name(v)).collect(),
        })?;
        sub.inference_only = self.inference_only;
        Ok(sub)
    }
}
