//! The model-facing names of the one image → tensor path ([`crate::data::preprocess`] and
//! [`crate::data::image`]), with errors as [`ModelError`]: prediction, explanation, the dream
//! and the window call these; training and evaluation reach the same functions through the data
//! sets.

use std::path::Path;

use super::ModelError;
use super::description::Preprocess;
use crate::engine::Tensor;

pub use crate::data::image::{AxisTaps, Image, Pixels, resize_f32, resize_u8};
pub use crate::data::preprocess::fit;

fn other(e: crate::data::DataError) -> ModelError {
    ModelError::Other(e.to_string())
}

/// Checks a preset before it touches pixels; the message names the bad field.
pub fn validate(preset: &Preprocess) -> Result<(), ModelError> {
    preset.validate().map_err(other)
}

/// A decoded image to the model input `[1, c, h, w]` (NCHW) or `[1, h, w, c]` (NHWC).
pub fn image_to_tensor(image: &Image, preset: &Preprocess) -> Result<Tensor, ModelError> {
    preset.image_to_tensor(image).map_err(other)
}

/// Opens and preprocesses one image file; the error names the file.
pub fn load_image(path: &Path, preset: &Preprocess) -> Result<Tensor, ModelError> {
    image_to_tensor(&Image::open(path).map_err(other)?, preset)
}
