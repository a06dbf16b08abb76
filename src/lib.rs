//! convscope: a native desktop microscope for convolutional neural networks.
//!
//! Layers (dependencies point downwards only): `app`, `cli` → `explain`, `train`, `render`,
//! `data`, `models` → `engine`, `io`.

pub mod allocator;
#[cfg(feature = "gui")]
pub mod app;
pub mod cli;
pub mod data;
pub mod engine;
pub mod explain;
pub mod io;
pub mod models;
pub mod render;
pub mod train;
