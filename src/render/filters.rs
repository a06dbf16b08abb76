//! First-layer filters as colour tiles: each filter `[c_in, kh, kw]` scaled by its own largest
//! magnitude to [0, 1] around mid-grey (0 weight = grey), RGB when it reads three channels,
//! grey otherwise; tiles in a grid, enlarged with nearest-neighbour so that each weight is a
//! visible square.

use image::{Rgba, RgbaImage};

use crate::engine::Tensor;

/// Tiles of a convolution weight `[c_out, c_in, kh, kw]`, `columns` per row, each weight drawn as
/// a `zoom`×`zoom` square, with a 1-pixel gap scaled by `zoom`. `None` for another rank.
pub fn filter_tiles(weight: &Tensor, columns: usize, zoom: u32) -> Option<RgbaImage> {
    let &[c_out, c_in, kh, kw] = weight.shape() else {
        return None;
    };
    if c_out == 0 || c_in == 0 || kh == 0 || kw == 0 {
        return None;
    }
    let zoom = zoom.max(1);
    let cols = columns.clamp(1, c_out);
    let rows = c_out.div_ceil(cols);
    let (tw, th) = (kw as u32 * zoom, kh as u32 * zoom);
    let gap = zoom.max(2);
    let width = cols as u32 * (tw + gap) + gap;
    let height = rows as u32 * (th + gap) + gap;
    let mut out = RgbaImage::from_pixel(width, height, Rgba([24, 24, 24, 255]));
    let per = c_in * kh * kw;
    for f in 0..c_out {
        let w = &weight.data()[f * per..(f + 1) * per]; // (c_in, kh, kw)
        let m = w.iter().fold(0f32, |a, &v| a.max(v.abs())).max(1e-12);
        let (col, row) = ((f % cols) as u32, (f / cols) as u32);
        let (x0, y0) = (gap + col * (tw + gap), gap + row * (th + gap));
        for y in 0..kh {
            for x in 0..kw {
                let at = |c: usize| {
                    let v = w[(c.min(c_in - 1) * kh + y) * kw + x];
                    ((0.5 + 0.5 * v / m).clamp(0.0, 1.0) * 255.0).round() as u8
                };
                let px = if c_in >= 3 {
                    Rgba([at(0), at(1), at(2), 255])
                } else {
                    let g = at(0);
                    Rgba([g, g, g, 255])
                };
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        out.put_pixel(x0 + x as u32 * zoom + dx, y0 + y as u32 * zoom + dy, px);
                    }
                }
            }
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tiles_scale_each_filter_by_its_own_magnitude() {
        // two 1x1 RGB filters: [1, -1, 0] and [0.5, 0, 0]
        let w = Tensor::new(vec![2, 3, 1, 1], vec![1.0, -1.0, 0.0, 0.5, 0.0, 0.0]).unwrap();
        let img = filter_tiles(&w, 2, 1).unwrap();
        // gap 2: tiles at x=2 and x=5, y=2
        assert_eq!(img.dimensions(), (2 * 3 + 2, 5));
        assert_eq!(img.get_pixel(2, 2).0, [255, 0, 128, 255]);
        // the second filter's largest weight is 0.5: it maps to full red as well
        assert_eq!(img.get_pixel(5, 2).0, [255, 128, 128, 255]);
        assert!(filter_tiles(&Tensor::new(vec![3], vec![0.0; 3]).unwrap(), 2, 1).is_none());
    }
}
