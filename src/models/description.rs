//! The RON model description (`model.ron`): the graph by names, the parameter names and shapes,
//! the preprocessing preset and the class labels. Weights live beside it (safetensors) and are
//! matched by name; [`ModelDescription::build`] refuses any mismatch, naming the tensor.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::ModelError;
use crate::engine::graph::{InputDef, NodeDef};
use crate::engine::tensor::fmt_shape;
use crate::engine::{Graph, GraphDef, Param, Tensor};

/// Tensors by parameter name.
pub type Weights = HashMap<String, Tensor>;

/// One parameter or buffer of the model: its name (the safetensors key), shape and whether an
/// optimiser may change it (false for batch norm running statistics).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamDesc {
    pub name: String,
    pub shape: Vec<usize>,
    #[serde(default = "default_trainable")]
    pub trainable: bool,
}

fn default_trainable() -> bool {
    true
}

pub use crate::data::preprocess::{Channels, Filter, Layout, Preprocess, Resize};

/// Everything about a model except its weights. Serialised as `model.ron`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDescription {
    pub name: String,
    pub inputs: Vec<InputDef>,
    pub params: Vec<ParamDesc>,
    pub nodes: Vec<NodeDef>,
    pub outputs: Vec<String>,
    pub preprocess: Preprocess,
    /// Class names, in output order (for a single-logit model: the negative, then the positive
    /// class).
    #[serde(default)]
    pub labels: Vec<String>,
}

impl ModelDescription {
    /// Pretty RON text for `model.ron`.
    pub fn to_ron(&self) -> Result<String, ModelError> {
        let config = ron::ser::PrettyConfig::new()
            .depth_limit(4)
            .struct_names(true);
        ron::ser::to_string_pretty(self, config)
            .map_err(|e| ModelError::Other(format!("cannot write the model description: {e}")))
    }

    /// Parses RON text; the error message gives the line and column.
    pub fn from_ron(text: &str) -> Result<Self, String> {
        ron::from_str(text).map_err(|e| e.to_string())
    }

    /// Describes an existing graph (e.g. after training) so that it can be saved.
    pub fn from_graph(
        name: &str,
        graph: &Graph,
        preprocess: Preprocess,
        labels: Vec<String>,
    ) -> Self {
        let value_name = |id: usize| graph.value(id).name.clone();
        Self {
            name: name.to_string(),
            inputs: graph
                .inputs()
                .iter()
                .map(|&id| InputDef {
                    name: value_name(id),
                    shape: graph.value(id).shape.clone(),
                })
                .collect(),
            params: graph
                .params()
                .iter()
                .map(|p| ParamDesc {
                    name: p.name.clone(),
                    shape: p.tensor.shape().to_vec(),
                    trainable: p.trainable,
                })
                .collect(),
            nodes: graph
                .nodes()
                .iter()
                .map(|n| NodeDef {
                    name: n.name.clone(),
                    op: n.op.clone(),
                    inputs: n.inputs.iter().map(|&v| value_name(v)).collect(),
                    output: value_name(n.output),
                })
                .collect(),
            outputs: graph.outputs().iter().map(|&v| value_name(v)).collect(),
            preprocess,
            labels,
        }
    }

    /// Checks that `weights` holds exactly the described parameters with the described shapes.
    pub fn check_weights(&self, weights: &Weights) -> Result<(), ModelError> {
        let mut seen = HashSet::new();
        for p in &self.params {
            if !seen.insert(p.name.as_str()) {
                return Err(ModelError::weight(&p.name, "is described more than once"));
            }
            let Some(t) = weights.get(&p.name) else {
                return Err(ModelError::weight(&p.name, "is missing from the weights"));
            };
            if t.shape() != p.shape.as_slice() {
                return Err(ModelError::weight(
                    &p.name,
                    format!(
                        "has shape {} in the weights but {} in the description",
                        fmt_shape(t.shape()),
                        fmt_shape(&p.shape)
                    ),
                ));
            }
        }
        let mut extra: Vec<&String> = weights
            .keys()
            .filter(|k| !seen.contains(k.as_str()))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(ModelError::weight(
                name,
                "is in the weights but not in the model description",
            ));
        }
        Ok(())
    }

    /// The graph definition with the weights moved in, after [`Self::check_weights`].
    pub fn graph_def(&self, mut weights: Weights) -> Result<GraphDef, ModelError> {
        self.check_weights(&weights)?;
        let mut params = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let tensor = weights
                .remove(&p.name)
                .ok_or_else(|| ModelError::weight(&p.name, "is missing from the weights"))?;
            params.push(Param {
                name: p.name.clone(),
                tensor,
                trainable: p.trainable,
            });
        }
        Ok(GraphDef {
            inputs: self.inputs.clone(),
            params,
            nodes: self.nodes.clone(),
            outputs: self.outputs.clone(),
        })
    }

    /// Validates description and weights together and builds the graph (shape inference
    /// included).
    pub fn build(&self, weights: Weights) -> Result<Graph, ModelError> {
        Ok(Graph::from_def(self.graph_def(weights)?)?)
    }

    /// Number of trainable scalars described.
    pub fn trainable_count(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}

/// The weights of a graph by name (copies).
pub fn weights_of(graph: &Graph) -> Weights {
    graph
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.tensor.clone()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::Op;
    use crate::engine::ops::{Activation, Conv2dSpec, GemmSpec, Padding2d};

    fn tiny() -> ModelDescription {
        ModelDescription {
            name: "tiny".into(),
            inputs: vec![InputDef {
                name: "input".into(),
                shape: vec![1, 4],
            }],
            params: vec![
                ParamDesc {
                    name: "fc.weight".into(),
                    shape: vec![2, 4],
                    trainable: true,
                },
                ParamDesc {
                    name: "fc.bias".into(),
                    shape: vec![2],
                    trainable: true,
                },
            ],
            nodes: vec![
                NodeDef {
                    name: "act".into(),
                    op: Op::Activation(Activation::Relu),
                    inputs: vec!["fc".into()],
                    output: "act".into(),
                },
                NodeDef {
                    name: "fc".into(),
                    op: Op::Gemm(GemmSpec::linear()),
                    inputs: vec!["input".into(), "fc.weight".into(), "fc.bias".into()],
                    output: "fc".into(),
                },
            ],
            outputs: vec!["act".into()],
            preprocess: Preprocess::unit(),
            labels: vec!["a".into(), "b".into()],
        }
    }

    fn tiny_weights() -> Weights {
        Weights::from([
            ("fc.weight".to_string(), Tensor::full(&[2, 4], 0.5)),
            ("fc.bias".to_string(), Tensor::full(&[2], -0.25)),
        ])
    }

    #[test]
    fn ron_round_trip_is_exact() {
        let mut d = tiny();
        d.nodes.push(NodeDef {
            name: "conv".into(),
            op: Op::Conv2d(Conv2dSpec {
                stride: [2, 1],
                padding: Padding2d {
                    top: 1,
                    left: 0,
                    bottom: 2,
                    right: 3,
                },
                dilation: [1, 1],
                groups: 1,
            }),
            inputs: vec!["input".into()],
            output: "conv".into(),
        });
        d.preprocess = Preprocess::imagenet();
        let text = d.to_ron().unwrap();
        let back = ModelDescription::from_ron(&text).unwrap();
        assert_eq!(back, d);
        // f32 fields survive exactly
        assert_eq!(back.preprocess.scale.to_bits(), (1.0f32 / 255.0).to_bits());
    }

    #[test]
    fn malformed_ron_reports_a_position() {
        let err =
            ModelDescription::from_ron("ModelDescription(name: \"x\", inputs: [").unwrap_err();
        assert!(err.contains("1:"), "{err}");
    }

    #[test]
    fn weights_must_match_exactly() {
        let d = tiny();
        assert!(d.check_weights(&tiny_weights()).is_ok());

        let mut missing = tiny_weights();
        missing.remove("fc.bias");
        let e = d.check_weights(&missing).unwrap_err().to_string();
        assert!(e.contains("'fc.bias'") && e.contains("missing"), "{e}");

        let mut wrong = tiny_weights();
        wrong.insert("fc.weight".into(), Tensor::zeros(&[4, 2]));
        let e = d.check_weights(&wrong).unwrap_err().to_string();
        assert!(
            e.contains("'fc.weight'") && e.contains("[4, 2]") && e.contains("[2, 4]"),
            "{e}"
        );

        let mut extra = tiny_weights();
        extra.insert("fc2.weight".into(), Tensor::zeros(&[1]));
        let e = d.check_weights(&extra).unwrap_err().to_string();
        assert!(
            e.contains("'fc2.weight'") && e.contains("not in the model"),
            "{e}"
        );

        let mut dup = tiny();
        dup.params.push(dup.params[0].clone());
        let e = dup.check_weights(&tiny_weights()).unwrap_err().to_string();
        assert!(e.contains("more than once"), "{e}");
    }

    #[test]
    fn graph_def_moves_params_in_description_order() {
        let def = tiny().graph_def(tiny_weights()).unwrap();
        let names: Vec<&str> = def.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["fc.weight", "fc.bias"]);
        assert_eq!(def.params[1].tensor.data(), &[-0.25, -0.25]);
        assert_eq!(def.nodes.len(), 2);
        assert_eq!(tiny().trainable_count(), 10);
    }
}
