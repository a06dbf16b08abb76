//! Building and loading graphs: presets, the RON model description, safetensors checkpoints.
pub mod onnx;
