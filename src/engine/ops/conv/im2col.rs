//! im2col and col2im: a group's input as the column matrix `(cg·kh·kw, oh·ow)` of a GEMM, and
//! column gradients added back into the input's planes.

use rayon::prelude::*;

use super::{Geom, in_index, valid_range};
use crate::engine::gemm::Parallelism;

/// Fills one column-matrix row (`(oh, ow)`) for kernel position (ki, kj) of one input channel
/// plane `x_c` (`(h, w)`).
pub(super) fn im2col_row(x_c: &[f32], ki: usize, kj: usize, g: &Geom, row: &mut [f32]) {
    im2col_row_range(x_c, ki, kj, g, 0..g.oh, row);
}

/// [`im2col_row`] for the output rows `rows` only: `row` is `(rows.len(), ow)`.
pub(super) fn im2col_row_range(
    x_c: &[f32],
    ki: usize,
    kj: usize,
    g: &Geom,
    rows: std::ops::Range<usize>,
    row: &mut [f32],
) {
    let offy = (ki * g.dh) as isize - g.top as isize;
    let offx = (kj * g.dw) as isize - g.left as isize;
    let (ylo, yhi) = valid_range(g.oh, g.h, g.sh, offy);
    let (xlo, xhi) = valid_range(g.ow, g.w, g.sw, offx);
    for (oy, out) in rows.zip(row.chunks_exact_mut(g.ow)) {
        if oy < ylo || oy >= yhi || xlo == xhi {
            out.fill(0.0);
            continue;
        }
        let xrow = &x_c[in_index(oy, g.sh, offy) * g.w..][..g.w];
        out[..xlo].fill(0.0);
        out[xhi..].fill(0.0);
        let start = in_index(xlo, g.sw, offx);
        if g.sw == 1 {
            out[xlo..xhi].copy_from_slice(&xrow[start..start + (xhi - xlo)]);
        } else {
            for (o, &v) in out[xlo..xhi]
                .iter_mut()
                .zip(xrow[start..].iter().step_by(g.sw))
            {
                *o = v;
            }
        }
    }
}

/// col `(cg*kh*kw, oh*ow)` from one group's input `x_g` `(cg, h, w)`.
pub(super) fn im2col(x_g: &[f32], g: &Geom, col: &mut [f32], par: Parallelism) {
    let plane = g.h * g.w;
    let fill = |(r, row): (usize, &mut [f32])| {
        let (c, kk) = (r / (g.kh * g.kw), r % (g.kh * g.kw));
        im2col_row(&x_g[c * plane..][..plane], kk / g.kw, kk % g.kw, g, row);
    };
    if par == Parallelism::Rayon {
        col.par_chunks_exact_mut(g.p()).enumerate().for_each(fill);
    } else {
        col.chunks_exact_mut(g.p()).enumerate().for_each(fill);
    }
}

/// The columns of the output rows `rows` of col: `col_block` is `(cg*kh*kw, rows.len()*ow)`.
pub(super) fn im2col_rows(
    x_g: &[f32],
    g: &Geom,
    rows: std::ops::Range<usize>,
    col_block: &mut [f32],
) {
    let plane = g.h * g.w;
    let cols = rows.len() * g.ow;
    for (r, out) in col_block.chunks_exact_mut(cols).enumerate() {
        let (c, kk) = (r / (g.kh * g.kw), r % (g.kh * g.kw));
        let x_c = &x_g[c * plane..][..plane];
        im2col_row_range(x_c, kk / g.kw, kk % g.kw, g, rows.clone(), out);
    }
}

/// Adds the rows `rows` of one column-matrix row (`row` is `(rows.len(), ow)`, kernel position
/// (ki, kj)) back into its input channel plane `dx_c` (`(h, w)`).
pub(super) fn col2im_row_range(
    row: &[f32],
    ki: usize,
    kj: usize,
    g: &Geom,
    rows: std::ops::Range<usize>,
    dx_c: &mut [f32],
) {
    let offy = (ki * g.dh) as isize - g.top as isize;
    let offx = (kj * g.dw) as isize - g.left as isize;
    let (ylo, yhi) = valid_range(g.oh, g.h, g.sh, offy);
    let (xlo, xhi) = valid_range(g.ow, g.w, g.sw, offx);
    if xlo == xhi {
        return;
    }
    for oy in rows.start.max(ylo)..rows.end.min(yhi) {
        let r = (oy - rows.start) * g.ow;
        let src = &row[r + xlo..r + xhi];
        let dst = &mut dx_c[in_index(oy, g.sh, offy) * g.w..][..g.w];
        let start = in_index(xlo, g.sw, offx);
        if g.sw == 1 {
            for (d, &v) in dst[start..start + src.len()].iter_mut().zip(src) {
                *d += v;
            }
        } else {
            for (d, &v) in dst[start..].iter_mut().step_by(g.sw).zip(src) {
                *d += v;
            }
        }
    }
}

/// dx_g `(cg, h, w)` += col2im of the columns of the output rows `rows`: `col_block` is
/// `(cg*kh*kw, rows.len()*ow)` (the inverse of [`im2col_rows`]).
pub(super) fn col2im_rows(
    col_block: &[f32],
    g: &Geom,
    rows: std::ops::Range<usize>,
    dx_g: &mut [f32],
) {
    let plane = g.h * g.w;
    let cols = rows.len() * g.ow;
    for (r, row) in col_block.chunks_exact(cols).enumerate() {
        let (c, kk) = (r / (g.kh * g.kw), r % (g.kh * g.kw));
        let dx_c = &mut dx_g[c * plane..][..plane];
        col2im_row_range(row, kk / g.kw, kk % g.kw, g, rows.clone(), dx_c);
    }
}
