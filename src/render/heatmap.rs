//! Heat maps: a [`Map`] through a colormap, and blended over the photo it explains.

use image::{Rgba, RgbaImage};

use super::colormap::Colormap;
use crate::engine::Map;

/// Colours a map whose values are in [0, 1], one pixel per value.
pub fn map_to_image(map: &Map, cmap: Colormap) -> RgbaImage {
    RgbaImage::from_fn(map.width() as u32, map.height() as u32, |x, y| {
        let [r, g, b] = cmap.rgb(map.get(y as usize, x as usize));
        Rgba([r, g, b, 255])
    })
}

/// A signed map (e.g. a raw gradient channel) to [0, 1] with 0 at 0.5, scaled by the largest
/// magnitude, for diverging colormaps.
pub fn signed_to_unit(map: &Map) -> Map {
    let m = map
        .data()
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if m > 0.0 { 0.5 / m } else { 0.0 };
    map.map_values(|v| 0.5 + v * scale)
}

/// The photo with the map blended on top: `(1 - alpha) * photo + alpha * colour`. The map is
/// resized bilinearly (half-pixel centres) to the photo's size when they differ.
pub fn overlay(photo: &RgbaImage, map: &Map, cmap: Colormap, alpha: f32) -> RgbaImage {
    let (w, h) = photo.dimensions();
    let map = map.resize_bilinear(h as usize, w as usize);
    let a = alpha.clamp(0.0, 1.0);
    RgbaImage::from_fn(w, h, |x, y| {
        let p = photo.get_pixel(x, y).0;
        let c = cmap.rgb(map.get(y as usize, x as usize));
        let mix = |i: usize| ((1.0 - a) * p[i] as f32 + a * c[i] as f32).round() as u8;
        Rgba([mix(0), mix(1), mix(2), 255])
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn overlay_blends_and_resizes() {
        let photo = RgbaImage::from_pixel(4, 2, Rgba([200, 100, 0, 255]));
        let map = Map::new(1, 2, vec![0.0, 1.0]).unwrap();
        let out = overlay(&photo, &map, Colormap::Gray, 0.5);
        assert_eq!(out.dimensions(), (4, 2));
        assert_eq!(out.get_pixel(0, 0).0, [100, 50, 0, 255]);
        assert_eq!(out.get_pixel(3, 1).0, [228, 178, 128, 255]);
        let s = signed_to_unit(&Map::new(1, 3, vec![-2.0, 0.0, 1.0]).unwrap());
        assert_eq!(s.data(), vec![0.0, 0.5, 0.75]);
        assert_eq!(
            map_to_image(&map, Colormap::Gray).get_pixel(1, 0).0,
            [255, 255, 255, 255]
        );
    }
}
