//! One egui texture per picture slot: created on first use, then updated in place with
//! `TextureHandle::set` (rerun's habit) so that a live preview does not leak textures.

use egui::{ColorImage, TextureHandle, TextureOptions, Vec2};
use image::RgbaImage;

/// A picture shown in the window.
#[derive(Default)]
pub struct Picture {
    handle: Option<TextureHandle>,
    size: [usize; 2],
}

/// An `image` crate picture as egui pixels.
pub fn color_image(img: &RgbaImage) -> ColorImage {
    let size = [img.width() as usize, img.height() as usize];
    ColorImage::from_rgba_unmultiplied(size, img.as_raw())
}

impl Picture {
    /// Replaces the picture (`name` identifies it in egui's texture list). `nearest` keeps
    /// pixels sharp when enlarged (filters, activation cells); photos are smoothed.
    pub fn set(&mut self, ctx: &egui::Context, name: &str, img: &RgbaImage, nearest: bool) {
        let options = if nearest {
            TextureOptions::NEAREST
        } else {
            TextureOptions::LINEAR
        };
        let pixels = color_image(img);
        self.size = pixels.size;
        match &mut self.handle {
            Some(h) => h.set(pixels, options),
            None => self.handle = Some(ctx.load_texture(name, pixels, options)),
        }
    }

    pub fn clear(&mut self) {
        self.handle = None;
        self.size = [0, 0];
    }

    pub fn is_set(&self) -> bool {
        self.handle.is_some()
    }

    /// Pixel size `[w, h]`.
    pub fn size(&self) -> [usize; 2] {
        self.size
    }

    /// Shows the picture scaled to fit in `max` keeping its aspect ratio; `None` when empty.
    pub fn show(&self, ui: &mut egui::Ui, max: Vec2) -> Option<egui::Response> {
        let h = self.handle.as_ref()?;
        let [w, ht] = self.size;
        if w == 0 || ht == 0 {
            return None;
        }
        let scale = (max.x / w as f32).min(max.y / ht as f32).max(0.01);
        let size = Vec2::new(w as f32 * scale, ht as f32 * scale);
        let sized = egui::load::SizedTexture::new(h.id(), size);
        Some(ui.add(egui::Image::new(sized).sense(egui::Sense::click())))
    }
}
