//! convscope: a native desktop microscope for convolutional neural networks.
//!
//! Layers (dependencies point downwards only): `cli` → `models` → `engine`.

pub mod cli;
pub mod data;
pub mod engine;
pub mod explain;
pub mod models;
pub mod render;
pub mod train;
