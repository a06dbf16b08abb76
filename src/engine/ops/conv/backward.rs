//! Convolution d_x streaming blocks of output rows through cache instead of building one whole
//! column matrix per image, on every thread for batch 1 as for larger batches.
//!
//! Measured alternative, not kept: for stride 1, d_x is a forward correlation of d_y with the
//! kernel turned by 180° (im2col of d_y + one GEMM per block of d_x rows). On the smile CNN's
//! 16→16 5x5 layer at batch 32 it took 16.2 ms of CPU against 13.2 ms for this path (one
//! thread, CPU time): its im2col of d_y moves as much data as col2im and copies more.

use std::ops::Range;

use rayon::prelude::*;

use super::{Geom, ItemChunks, batch_plan, col2im_row_range, col2im_rows, for_item_chunks};
use crate::engine::gemm::{MatRef, Parallelism, sgemm};

/// Floats of one column block (256 KiB: a quarter of a Zen 5 core's 1 MiB L2, so col2im reads
/// what the GEMM just wrote from cache; 16–256 K floats measured within noise of each other).
pub(super) const BLOCK_FLOATS: usize = 64 * 1024;

/// Output rows (each `row_len` wide) per block of a `k`-row column matrix of at most
/// `block_floats` floats, at least one.
fn rows_per_block(block_floats: usize, k: usize, row_len: usize, rows: usize) -> usize {
    (block_floats / (k * row_len).max(1)).clamp(1, rows.max(1))
}

/// d_x `(n, c_in, h, w)` for any stride (not depthwise), streaming blocks of at most
/// `block_floats` floats: per item, group and block of output rows, dcol `(K, rows·ow)` =
/// W_gᵀ `(K, og)` @ d_y block `(og, rows·ow)`, added into d_x by [`col2im_rows`] while it is in
/// cache.
///
/// Threads: a batch of at least two items is split into one chunk of items per thread
/// ([`batch_plan`]); a single item splits its output rows into one range per thread instead,
/// each range accumulating into its own d_x buffer (neighbouring ranges touch the same input
/// rows), and the buffers are added in range order: deterministic for a given thread count.
pub(super) fn scatter_backward_x_blocked(
    g: &Geom,
    w: &[f32],
    d_y: &[f32],
    d_x: &mut [f32],
    block_floats: usize,
) {
    let (chunks, _) = batch_plan(g.n);
    let rows = rows_per_block(block_floats, g.k(), g.ow, g.oh);
    let dcol_len = g.k() * rows * g.ow; // (K, rows·ow)
    if chunks > 1 {
        let items = ItemChunks {
            chunks,
            in_item: g.y_item(),
            out_item: g.x_item(),
            scratch_len: dcol_len,
        };
        for_item_chunks(items, d_y, d_x, |dy_item, dx_item, dcol| {
            scatter_item_rows(g, w, dy_item, 0..g.oh, rows, dcol, dx_item)
        });
        return;
    }
    if prefers_whole_plane(g) {
        for (ni, dx_item) in d_x.chunks_exact_mut(g.x_item()).enumerate() {
            scatter_item_whole(g, w, &d_y[ni * g.y_item()..][..g.y_item()], dx_item);
        }
        return;
    }
    let parts = rayon::current_num_threads().clamp(1, g.oh.max(1));
    let per = g.oh.div_ceil(parts);
    let ranges: Vec<Range<usize>> = (0..g.oh)
        .step_by(per.max(1))
        .map(|r0| r0..(r0 + per).min(g.oh))
        .collect();
    for (ni, dx_item) in d_x.chunks_exact_mut(g.x_item()).enumerate() {
        let dy_item = &d_y[ni * g.y_item()..][..g.y_item()];
        if ranges.len() < 2 {
            let mut dcol = vec![0.0f32; dcol_len];
            scatter_item_rows(g, w, dy_item, 0..g.oh, rows, &mut dcol, dx_item);
            continue;
        }
        let partial: Vec<Vec<f32>> = ranges
            .par_iter()
            .map(|r| {
                let mut dcol = vec![0.0f32; dcol_len];
                let mut dx = vec![0.0f32; g.x_item()]; // (c_in, h, w)
                scatter_item_rows(g, w, dy_item, r.clone(), rows, &mut dcol, &mut dx);
                dx
            })
            .collect();
        for part in &partial {
            add_into(dx_item, part);
        }
    }
}

/// Largest whole-plane column matrix `(K, P)` [`scatter_item_whole`] builds (4 MiB).
const WHOLE_PLANE_MAX_FLOATS: usize = 1 << 20;

/// A single item whose weights outweigh its output plane (`og ≥ P`: deep layers at small
/// resolution, e.g. ResNet50's 512 channels at 7x7). Split by rows and blocks, every range and
/// block re-read the whole weight matrix (9 MiB there) for a GEMM only 14 columns wide: layer4's
/// 3x3 d_x took 2.3 ms against 0.9 ms forward.
fn prefers_whole_plane(g: &Geom) -> bool {
    g.og >= g.p() && g.k() * g.p() <= WHOLE_PLANE_MAX_FLOATS
}

/// dx_item `(c_in, h, w)` += the contributions of all of one item's output rows: per group one
/// GEMM dcol `(K, P)` = W_gᵀ `(K, og)` @ d_y_g `(og, P)` that the GEMM splits across threads
/// (the weights are read once), then col2im with one task per input channel (channels own
/// disjoint rows of dcol and disjoint planes of d_x, so the result does not depend on threads).
pub(super) fn scatter_item_whole(g: &Geom, w: &[f32], dy_item: &[f32], dx_item: &mut [f32]) {
    let (k, p) = (g.k(), g.p());
    let (plane, taps) = (g.h * g.w, g.kh * g.kw);
    let mut dcol = vec![0.0f32; k * p]; // (K, P)
    for grp in 0..g.groups {
        let w_g = MatRef::row_major(&w[grp * g.og * k..][..g.og * k], g.og, k); // (og, K)
        let dy_g = MatRef::row_major(&dy_item[grp * g.og * p..][..g.og * p], g.og, p); // (og, P)
        sgemm(1.0, w_g.t(), dy_g, 0.0, &mut dcol, Parallelism::Rayon);
        let dx_g = &mut dx_item[grp * g.cg * plane..][..g.cg * plane]; // (cg, h, w)
        dx_g.par_chunks_mut(plane)
            .zip(dcol.par_chunks(taps * p))
            .for_each(|(dx_c, col_c)| {
                for (kk, row) in col_c.chunks_exact(p).enumerate() {
                    col2im_row_range(row, kk / g.kw, kk % g.kw, g, 0..g.oh, dx_c);
                }
            });
    }
}

/// `acc += v` element-wise (vectorised).
fn add_into(acc: &mut [f32], v: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(v) {
        *a += b;
    }
}

/// dx_item `(c_in, h, w)` += the contributions of the output rows `out_rows` of one item,
/// `rows` output rows per block; `dcol` holds one block `(K, rows·ow)`.
fn scatter_item_rows(
    g: &Geom,
    w: &[f32],
    dy_item: &[f32],
    out_rows: Range<usize>,
    rows: usize,
    dcol: &mut [f32],
    dx_item: &mut [f32],
) {
    let (k, p) = (g.k(), g.p());
    let plane_g = g.cg * g.h * g.w;
    for grp in 0..g.groups {
        let w_g = MatRef::row_major(&w[grp * g.og * k..][..g.og * k], g.og, k); // (og, K)
        let dx_g = &mut dx_item[grp * plane_g..][..plane_g]; // (cg, h, w)
        for oy0 in out_rows.clone().step_by(rows) {
            let oy1 = (oy0 + rows).min(out_rows.end);
            let cols = (oy1 - oy0) * g.ow;
            // d_y block (og, cols): rows of the group's planes, p apart
            let dy_blk = MatRef {
                data: &dy_item[grp * g.og * p + oy0 * g.ow..],
                rows: g.og,
                cols,
                rs: p,
                cs: 1,
            };
            let block = &mut dcol[..k * cols];
            sgemm(1.0, w_g.t(), dy_blk, 0.0, block, Parallelism::Sequential);
            col2im_rows(block, g, oy0..oy1, dx_g);
        }
    }
}
