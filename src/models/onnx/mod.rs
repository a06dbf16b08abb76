//! ONNX import: an `.onnx` file becomes a [`GraphDef`] that `Graph::from_def` validates and runs.
//!
//! Steps: decode the protobuf ([`proto`], generated once by prost, no protoc at build time),
//! list every unsupported operator at once, decode initializers (raw, typed or external data,
//! sizes checked before allocating), then walk the nodes in topological order keeping a
//! symbolic shape for each value ([`shape`]). Integer shape arithmetic and `Constant`s are folded
//! at import ([`fold`]); everything else maps onto the engine's [`Op`](crate::engine::Op)s
//! ([`convert`]), with constant operands turned into parameters.

mod attrs;
mod convert;
mod fold;
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub use convert::OPEN_SPATIAL_DEFAULT;
pub mod proto;
mod shape;
mod stream;
mod tensor;

use std::path::Path;

use prost::Message;
use thiserror::Error;

use crate::engine::GraphDef;

/// An imported model, ready for `Graph::from_def(model.def)`.
#[derive(Debug)]
pub struct ImportedModel {
    pub def: GraphDef,
    /// The graph input's ONNX name.
    pub input_name: String,
    /// Declared input shape with the batch dimension (symbolic or 0 in the file) set to 1.
    pub input_shape: Vec<usize>,
    pub output_names: Vec<String>,
    /// The default-domain opset the file was exported with.
    pub opset: i64,
    /// The file's metadata (`metadata_props`, then the graph's and the model's doc strings
    /// and the graph's name): where a file may say which model it is.
    pub metadata: Vec<(String, String)>,
}

/// An operator the importer cannot map, with the node that uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedNode {
    pub op_type: String,
    pub node: String,
}

/// What is wrong with a model; [`ImportError`] adds the file.
#[derive(Debug, Error)]
pub enum Problem {
    #[error("the file cannot be read ({0})")]
    Io(#[from] std::io::Error),
    #[error("it is not a valid ONNX protobuf file ({0})")]
    Decode(String),
    #[error("it uses operators the importer does not support: {}", fmt_unsupported(.0))]
    Unsupported(Vec<UnsupportedNode>),
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn fmt_unsupported(list: &[UnsupportedNode]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|u| format!("{} (node '{}')", u.op_type, u.node))
        .collect();
    items.join(", ")
}

/// An import failure: one sentence naming the file and the problem.
#[derive(Debug, Error)]
#[error("cannot import '{file}': {problem}")]
pub struct ImportError {
    pub file: String,
    pub problem: Problem,
}

/// Imports an ONNX file; external data files are looked up beside it.
pub fn import_onnx(path: &Path) -> Result<ImportedModel, ImportError> {
    import_onnx_sized(path, convert::OPEN_SPATIAL_DEFAULT)
}

/// [`import_onnx`] with the height and width `[h, w]` that an image input whose file leaves
/// them open (`dynamic_axes` on H and W) is imported at: the graph is static, so the size is
/// fixed here (a preset's size; 224x224 by default).
pub fn import_onnx_sized(path: &Path, spatial: [usize; 2]) -> Result<ImportedModel, ImportError> {
    let wrap = |problem: Problem| ImportError {
        file: path.display().to_string(),
        problem,
    };
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    // Streamed: the weights are read from the file as they are converted (memory).
    let model = stream::read_model(path).map_err(wrap)?;
    import_proto(&model, base, spatial).map_err(wrap)
}

/// Imports ONNX bytes; `base_dir` is where external data files live (`None` forbids them).
pub fn import_onnx_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
) -> Result<ImportedModel, ImportError> {
    import_model(bytes, base_dir).map_err(|problem| ImportError {
        file: "(ONNX bytes)".into(),
        problem,
    })
}

fn import_model(bytes: &[u8], base_dir: Option<&Path>) -> Result<ImportedModel, Problem> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| Problem::Decode(e.to_string()))?;
    import_proto(&model, base_dir, convert::OPEN_SPATIAL_DEFAULT)
}

fn import_proto(
    model: &proto::ModelProto,
    base_dir: Option<&Path>,
    spatial: [usize; 2],
) -> Result<ImportedModel, Problem> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| {
            Problem::Invalid("it declares no opset for the default ONNX domain".into())
        })?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Problem::Invalid("it holds no graph".into()))?;
    let mut imported = convert::import_graph(graph, opset, base_dir, spatial)?;
    imported.metadata = model
        .metadata_props
        .iter()
        .map(|e| {
            (
                e.key.clone().unwrap_or_default(),
                e.value.clone().unwrap_or_default(),
            )
        })
        .chain(
            graph
                .doc_string
                .clone()
                .map(|d| ("graph doc_string".into(), d)),
        )
        .chain(model.doc_string.clone().map(|d| ("doc_string".into(), d)))
        .chain(graph.name.clone().map(|n| ("graph name".into(), n)))
        .collect();
    Ok(imported)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_list_reads_as_one_sentence() {
        let e = ImportError {
            file: "m.onnx".into(),
            problem: Problem::Unsupported(vec![
                UnsupportedNode {
                    op_type: "LSTM".into(),
                    node: "l1".into(),
                },
                UnsupportedNode {
                    op_type: "Einsum".into(),
                    node: "e".into(),
                },
            ]),
        };
        assert_eq!(
            e.to_string(),
            "cannot import 'm.onnx': it uses operators the importer does not support: LSTM (node 'l1'), Einsum (node 'e')"
        );
    }
}
