//! Convolution d_x for batches split across threads, streaming blocks of output rows through
//! cache instead of building one whole column matrix per image.
//!
//! Measured alternative, not kept: for stride 1, d_x is a forward correlation of d_y with the
//! kernel turned by 180° (im2col of d_y + one GEMM per block of d_x rows). On the smile CNN's
//! 16→16 5x5 layer at batch 32 it took 16.2 ms of CPU against 13.2 ms for this path (one
//! thread, CPU time): its im2col of d_y moves as much data as col2im and copies more.

use rayon::prelude::*;

use super::{Geom, batch_plan, col2im_rows, items_per_chunk};
use crate::engine::gemm::{MatRef, Parallelism, sgemm};

/// Floats of one column block (256 KiB: a quarter of a Zen 5 core's 1 MiB L2, so col2im reads
/// what the GEMM just wrote from cache; 16–256 K floats measured within noise of each other).
pub(super) const BLOCK_FLOATS: usize = 64 * 1024;

/// Output rows (each `row_len` wide) per block of a `k`-row column matrix of at most
/// `block_floats` floats, at least one.
fn rows_per_block(block_floats: usize, k: usize, row_len: usize, rows: usize) -> usize {
    (block_floats / (k * row_len).max(1)).clamp(1, rows.max(1))
}

/// d_x for batches split across threads (`chunks > 1` in [`batch_plan`]), any stride: per
/// item, group and block of output rows, dcol `(K, rows·ow)` = W_gᵀ `(K, og)` @ d_y block
/// `(og, rows·ow)`, added into d_x by [`col2im_rows`] while it is in cache.
pub(super) fn scatter_backward_x_blocked(
    g: &Geom,
    w: &[f32],
    d_y: &[f32],
    d_x: &mut [f32],
    block_floats: usize,
) {
    let (chunks, _) = batch_plan(g.n);
    let per = items_per_chunk(g.n, chunks);
    let (k, p) = (g.k(), g.p());
    let rows = rows_per_block(block_floats, k, g.ow, g.oh);
    let plane_g = g.cg * g.h * g.w;
    d_x.par_chunks_mut(per * g.x_item())
        .enumerate()
        .for_each(|(ci, dx_chunk)| {
            let mut dcol = vec![0.0f32; k * rows * g.ow]; // (K, rows·ow)
            for (i, dx_item) in dx_chunk.chunks_exact_mut(g.x_item()).enumerate() {
                let dy_item = &d_y[(ci * per + i) * g.y_item()..][..g.y_item()];
                for grp in 0..g.groups {
                    let w_g = MatRef::row_major(&w[grp * g.og * k..][..g.og * k], g.og, k);
                    let dx_g = &mut dx_item[grp * plane_g..][..plane_g]; // (cg, h, w)
                    for oy0 in (0..g.oh).step_by(rows) {
                        let oy1 = (oy0 + rows).min(g.oh);
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
        });
}
