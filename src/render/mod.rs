//! Tensors to pictures: colormaps, heat-map overlays, channel grids and PNG files. Everything
//! produces `image::RgbaImage`, so the CLI writes and the GUI shows the same pixels.

pub mod colormap;
pub mod filters;
mod font;
pub mod grid;
pub mod heatmap;
pub mod sheet;

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

/// PNG bytes of a picture (any pixel type the PNG encoder takes: RGB, RGBA, gray).
pub fn png_bytes<P>(img: &image::ImageBuffer<P, Vec<P::Subpixel>>) -> Result<Vec<u8>, RenderError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| RenderError::Invalid(format!("cannot encode the PNG: {e}")))?;
    Ok(out.into_inner())
}

/// Writes an image as PNG atomically (a temporary file beside it, then a rename), so that a
/// full disk or a kill never leaves half a picture under the real name.
pub fn save_png<P>(
    img: &image::ImageBuffer<P, Vec<P::Subpixel>>,
    path: &Path,
) -> Result<(), RenderError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    let write_error = |msg: String| RenderError::Write {
        path: path.display().to_string(),
        msg,
    };
    let bytes = png_bytes(img).map_err(|e| write_error(e.to_string()))?;
    crate::io::write_atomically(path, &bytes).map_err(|e| write_error(e.to_string()))
}
