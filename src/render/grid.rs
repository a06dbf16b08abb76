//! Grids of channel maps (activation grids, filter tiles), optionally numbered.

use image::{Rgba, RgbaImage, imageops};

use super::colormap::Colormap;
use super::font::{draw_number, number_width};
use super::heatmap::map_to_image;
use crate::engine::Map;

#[derive(Clone, Debug, PartialEq)]
pub struct GridOptions {
    /// Columns; `None` picks about a square grid.
    pub columns: Option<usize>,
    /// Side of each cell in pixels (maps are scaled with nearest-neighbour to fit).
    pub cell: u32,
    /// Gap between cells in pixels.
    pub gap: u32,
    pub colormap: Colormap,
    /// Draw each cell's label (e.g. the channel index) in its top-left corner.
    pub labels: bool,
}

impl Default for GridOptions {
    fn default() -> Self {
        Self {
            columns: None,
            cell: 64,
            gap: 2,
            colormap: Colormap::Viridis,
            labels: true,
        }
    }
}

/// Lays out `maps` (values in [0, 1]) in a grid on a dark background; `labels[i]` numbers cell
/// i when labels are on (missing labels use the cell index).
pub fn channel_grid(maps: &[Map], labels: &[usize], opts: &GridOptions) -> RgbaImage {
    let n = maps.len();
    let cols = opts
        .columns
        .unwrap_or_else(|| (n as f64).sqrt().ceil() as usize)
        .clamp(1, n.max(1));
    let rows = n.div_ceil(cols).max(1);
    let cell = opts.cell.max(1);
    let step = cell + opts.gap;
    let width = cols as u32 * step + opts.gap;
    let height = rows as u32 * step + opts.gap;
    let mut out = RgbaImage::from_pixel(width, height, Rgba([32, 32, 32, 255]));
    let scale = if cell >= 48 { 2 } else { 1 };
    for (i, map) in maps.iter().enumerate() {
        let (col, row) = ((i % cols) as u32, (i / cols) as u32);
        let (x0, y0) = (opts.gap + col * step, opts.gap + row * step);
        let tile = imageops::resize(
            &map_to_image(map, opts.colormap),
            cell,
            cell,
            imageops::FilterType::Nearest,
        );
        imageops::replace(&mut out, &tile, x0 as i64, y0 as i64);
        let label = labels.get(i).copied().unwrap_or(i);
        if opts.labels && number_width(label, scale) <= cell {
            draw_number(&mut out, label, x0, y0, scale);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn grid_layout() {
        let maps = vec![Map::new(2, 2, vec![1.0; 4]).unwrap(); 5];
        let opts = GridOptions {
            cell: 8,
            gap: 1,
            colormap: Colormap::Gray,
            labels: false,
            ..GridOptions::default()
        };
        let img = channel_grid(&maps, &[], &opts);
        // 5 maps -> 3 columns, 2 rows.
        assert_eq!(img.dimensions(), (3 * 9 + 1, 2 * 9 + 1));
        assert_eq!(img.get_pixel(1, 1).0, [255, 255, 255, 255]);
        assert_eq!(img.get_pixel(0, 0).0, [32, 32, 32, 255]);
        // The sixth cell is empty.
        assert_eq!(img.get_pixel(2 * 9 + 2, 9 + 2).0, [32, 32, 32, 255]);
    }
}
