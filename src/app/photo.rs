//! Photos in the window: decoding (from a file or the bundled bytes), the model's view of them
//! (resized and cropped as its preprocessing preset says) and conversions between the engine's
//! planar images and displayable RGBA pictures.

use std::path::Path;
use std::sync::Arc;

use image::RgbaImage;

use crate::engine::Tensor;
use crate::models::Preprocess;
use crate::models::preprocess::{Image, fit, image_to_tensor};

/// An image as the model sees it.
#[derive(Clone)]
pub struct Photo {
    /// File name for lists and exported files.
    pub name: String,
    /// Where it came from (`None`: bundled with the binary).
    pub path: Option<std::path::PathBuf>,
    /// The decoded original, `(c, h, w)` planes.
    pub original: Arc<Image>,
    /// The model's input `[1, c, h, w]` (or NHWC when the model wants it).
    pub input: Arc<Tensor>,
    /// What the model sees, resized and cropped, for display under heat maps.
    pub view: Arc<RgbaImage>,
}

impl Photo {
    /// Decodes a file; the error names it.
    pub fn open(path: &Path, preset: &Preprocess) -> Result<Self, String> {
        let original = Image::open(path).map_err(|e| e.to_string())?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Self::from_image(name, Some(path.to_path_buf()), original, preset)
    }

    /// Decodes encoded bytes (a bundled sample).
    pub fn from_bytes(name: &str, bytes: &[u8], preset: &Preprocess) -> Result<Self, String> {
        let img = image::load_from_memory(bytes)
            .map_err(|e| format!("{name}: cannot decode the image: {e}"))?
            .to_rgb8();
        Self::from_image(name.to_string(), None, image_from_rgb(&img), preset)
    }

    /// The same photo prepared for another model.
    pub fn for_model(&self, preset: &Preprocess) -> Result<Self, String> {
        Self::from_image(
            self.name.clone(),
            self.path.clone(),
            (*self.original).clone(),
            preset,
        )
    }

    fn from_image(
        name: String,
        path: Option<std::path::PathBuf>,
        original: Image,
        preset: &Preprocess,
    ) -> Result<Self, String> {
        let input = image_to_tensor(&original, preset).map_err(|e| format!("{name}: {e}"))?;
        let view = to_rgba(&fit(&original, preset));
        Ok(Self {
            name,
            path,
            original: Arc::new(original),
            input: Arc::new(input),
            view: Arc::new(view),
        })
    }
}

/// An 8-bit RGB picture as engine planes.
pub fn image_from_rgb(img: &image::RgbImage) -> Image {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut planes = vec![0f32; 3 * h * w]; // (3, h, w) in [0, 1]
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            planes[c * h * w + i] = f32::from(p.0[c]) / 255.0;
        }
    }
    Image::from_unit_planes(planes, 3, h, w)
}

/// Engine planes (gray or RGB) as an RGBA picture.
pub fn to_rgba(img: &Image) -> RgbaImage {
    image::DynamicImage::ImageRgb8(img.to_rgb8()).to_rgba8()
}

/// A model-space sample `[c, h, w]` with values in [0, 1] (the data layer's decoded images) as
/// an RGBA picture.
pub fn unit_tensor_to_rgba(t: &Tensor) -> Option<RgbaImage> {
    let s = t.shape();
    let (c, h, w) = match s {
        [c, h, w] => (*c, *h, *w),
        [1, c, h, w] => (*c, *h, *w),
        _ => return None,
    };
    if c == 0 {
        return None;
    }
    let d = t.data();
    let mut out = RgbaImage::new(w as u32, h as u32);
    for (i, p) in out.pixels_mut().enumerate() {
        let at = |ch: usize| (d[ch.min(c - 1) * h * w + i].clamp(0.0, 1.0) * 255.0).round() as u8;
        *p = image::Rgba([at(0), at(1), at(2), 255]);
    }
    Some(out)
}
