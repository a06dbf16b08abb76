//! A 3x5 pixel bitmap font for the digits 0-9: enough to number the cells of a grid without a
//! font file.

use image::{Rgba, RgbaImage};

/// Rows of each digit, 3 bits per row (bit 2 = left column).
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Width in pixels of `n` drawn at `scale`, including a 1-pixel margin around it.
pub(crate) fn number_width(n: usize, scale: u32) -> u32 {
    let digits = n.to_string().len() as u32;
    (digits * 4 + 1) * scale
}

/// Draws `n` in white on a black box whose top-left corner is (x, y); clipped to the image.
pub(crate) fn draw_number(img: &mut RgbaImage, n: usize, x: u32, y: u32, scale: u32) {
    let (w, h) = img.dimensions();
    let box_w = number_width(n, scale);
    let box_h = 7 * scale;
    for by in y..(y + box_h).min(h) {
        for bx in x..(x + box_w).min(w) {
            img.put_pixel(bx, by, Rgba([0, 0, 0, 255]));
        }
    }
    for (i, ch) in n.to_string().bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize];
        let gx = x + (1 + 4 * i as u32) * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (0b100 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (gx + col * scale + dx, y + (1 + row as u32) * scale + dy);
                        if px < w && py < h {
                            img.put_pixel(px, py, Rgba([255, 255, 255, 255]));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one() {
        let mut img = RgbaImage::new(12, 8);
        draw_number(&mut img, 1, 0, 0, 1);
        // "1": middle column lit on every row, box black around it.
        assert_eq!(img.get_pixel(2, 1).0, [255, 255, 255, 255]);
        assert_eq!(img.get_pixel(1, 3).0, [0, 0, 0, 255]);
        assert_eq!(img.get_pixel(11, 7).0, [0, 0, 0, 0]);
        assert_eq!(number_width(42, 2), 18);
    }
}
