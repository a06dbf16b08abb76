//! Tensors to pictures: colormaps, heat-map overlays, channel grids and PNG files. Everything
//! produces `image::RgbaImage`, so the CLI writes and the GUI shows the same pixels.

pub mod colormap;
pub mod filters;
mod font;
pub mod grid;
pub mod heatmap;

use std::path::Path;

use thiserror::Error;

pub use colormap::Colormap;
pub use grid::{GridOptions, channel_grid};
pub use heatmap::{map_to_image, overlay, signed_to_unit};

#[derive(Debug, Error)]
pub enum RenderError {
    #[error("cannot write '{path}': {msg}")]
    Write { path: String, msg: String },
    #[error("{0}")]
    Invalid(String),
}

/// Writes an image as PNG.
pub fn save_png(img: &image::RgbaImage, path: &Path) -> Result<(), RenderError> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| RenderError::Write {
            path: path.display().to_string(),
            msg: e.to_string(),
        })
}
