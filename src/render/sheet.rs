//! Contact sheets: rows of pictures in equal square cells, each row numbered in its first
//! cell's corner (the microscope's sheet: per unit, its visualisation and its best patches).

use image::imageops::{self, FilterType};
use image::{Rgba, RgbaImage};

use super::font::{draw_number, number_width};

/// One row of a sheet: its number and its pictures (any sizes; each is fitted into its cell,
/// aspect kept, on grey).
pub struct SheetRow<'a> {
    pub label: usize,
    pub pictures: Vec<&'a image::RgbImage>,
}

/// A sheet of `rows`, `columns` cells wide (rows with fewer pictures leave cells empty), cells
/// of `cell` pixels with a 2-pixel gap.
pub fn contact_sheet(rows: &[SheetRow], columns: usize, cell: u32) -> RgbaImage {
    const GAP: u32 = 2;
    let columns = columns.max(1) as u32;
    let width = columns * (cell + GAP) + GAP;
    let height = rows.len() as u32 * (cell + GAP) + GAP;
    let mut out = RgbaImage::from_pixel(width.max(1), height.max(1), Rgba([32, 32, 32, 255]));
    for (r, row) in rows.iter().enumerate() {
        let y0 = GAP + r as u32 * (cell + GAP);
        for (c, picture) in row.pictures.iter().take(columns as usize).enumerate() {
            let x0 = GAP + c as u32 * (cell + GAP);
            let (w, h) = picture.dimensions();
            if w == 0 || h == 0 {
                continue;
            }
            let k = cell as f32 / w.max(h) as f32;
            let (fw, fh) = (
                ((w as f32 * k).round() as u32).max(1),
                ((h as f32 * k).round() as u32).max(1),
            );
            let rgba = image::DynamicImage::ImageRgb8((*picture).clone()).to_rgba8();
            let fitted = imageops::resize(&rgba, fw, fh, FilterType::Triangle);
            imageops::overlay(
                &mut out,
                &fitted,
                i64::from(x0 + (cell - fw) / 2),
                i64::from(y0 + (cell - fh) / 2),
            );
        }
        // the row's number on a dark tab in the first cell's corner
        let scale = 2;
        let tab_w = number_width(row.label, scale) + 4;
        for y in y0..(y0 + 5 * scale + 4).min(height) {
            for x in GAP..(GAP + tab_w).min(width) {
                out.put_pixel(x, y, Rgba([0, 0, 0, 255]));
            }
        }
        draw_number(&mut out, row.label, GAP + 2, y0 + 2, scale);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_hold_their_pictures() {
        let red = image::RgbImage::from_pixel(10, 20, image::Rgb([255, 0, 0]));
        let blue = image::RgbImage::from_pixel(30, 30, image::Rgb([0, 0, 255]));
        let rows = [
            SheetRow {
                label: 7,
                pictures: vec![&red, &blue],
            },
            SheetRow {
                label: 12,
                pictures: vec![&blue],
            },
        ];
        let sheet = contact_sheet(&rows, 3, 40);
        assert_eq!(sheet.dimensions(), (3 * 42 + 2, 2 * 42 + 2));
        // the red picture (10 x 20) is fitted to 20 x 40, centred in the first cell
        assert_eq!(sheet.get_pixel(2 + 20, 2 + 30).0, [255, 0, 0, 255]);
        assert_eq!(sheet.get_pixel(2 + 42 + 20, 2 + 20).0, [0, 0, 255, 255]);
        // the empty third cell of the second row stays background
        assert_eq!(sheet.get_pixel(2 + 84 + 20, 44 + 20).0, [32, 32, 32, 255]);
    }
}
