//! grad_w of a (non-depthwise) convolution as GEMMs over blocks of output rows.
//!
//! The work is cut into tasks of (items, output rows): a batch of at least two items gives one
//! run of items per thread, a single item one range of output rows per thread. Each task sums
//! its own `(c_out, K)` partial and the partials are added in task order, so results do not
//! depend on scheduling (only on the thread count, which fixes the cut).
//!
//! Splitting a single item's rows instead of letting every small GEMM fork onto the pool:
//! 64→64 3x3 @56², batch 1, 2 threads, grad_w 1.2–1.5 → 0.65–0.85 ms (shared machine,
//! alternating runs; BENCHMARKS.md "Session 4").

use std::ops::Range;

use rayon::prelude::*;

use super::{Geom, batch_plan, im2col_rows, items_per_chunk};
use crate::engine::gemm::{MatRef, Parallelism, sgemm};

/// How grad_w cuts its column matrices; tests pass small values to reach every path.
#[derive(Clone, Copy, Debug)]
pub(super) struct Blocking {
    /// Floats of the column block built per GEMM step of the small-K path.
    pub block_floats: usize,
    /// Up to this K (rows of the column matrix) a task streams small row-major blocks
    /// ([`small_k_partial`]); above it one column matrix per item and task feeds a single
    /// GEMM with a transposed view ([`large_k_partial`]).
    pub small_k_max: usize,
}

impl Blocking {
    /// block_floats: 512 KiB, still in a Zen 5 core's 1 MiB L2 when the GEMM reads it, and
    /// wide enough that the GEMM's inner dimension is not tiny (smile conv2 grad_w at batch 32,
    /// one thread, CPU time: 16 K floats 27.6 ms, 64 K 21.6 ms, 128 K 18.9 ms, 256 K 18.4 ms).
    /// small_k_max, 2 threads, batch 1 (shared machine, 3 alternating runs): 64→64 3x3 @56²
    /// (K = 576) 0.65–0.72 ms small-K against 0.85 large-K; 256→256 3x3 @14² (K = 2304)
    /// 1.15 ms small-K against 0.86 large-K, its `(K, og)` accumulator no longer in cache.
    pub const DEFAULT: Blocking = Blocking {
        block_floats: 128 * 1024,
        small_k_max: 1024,
    };
}

/// One task: the items and the output rows whose contributions it sums.
struct Task {
    items: Range<usize>,
    rows: Range<usize>,
}

/// The tasks of one grad_w: a run of items per thread for a batch, a range of output rows per
/// thread for a single item (at most one range per row).
fn tasks(g: &Geom) -> Vec<Task> {
    let (chunks, _) = batch_plan(g.n);
    if chunks > 1 {
        let per = items_per_chunk(g.n, chunks);
        return (0..g.n)
            .step_by(per)
            .map(|i0| Task {
                items: i0..(i0 + per).min(g.n),
                rows: 0..g.oh,
            })
            .collect();
    }
    let parts = rayon::current_num_threads().clamp(1, g.oh.max(1));
    let per = g.oh.div_ceil(parts).max(1);
    (0..g.oh)
        .step_by(per)
        .map(|r0| Task {
            items: 0..g.n,
            rows: r0..(r0 + per).min(g.oh),
        })
        .collect()
}

/// grad_w `(c_out, cg, kh, kw)` += Σ over the batch and output positions of
/// d_y `(n, c_out, oh, ow)` ⊗ the input patches of x `(n, c_in, h, w)`. `block_floats` bounds
/// the column blocks ([`Blocking::DEFAULT`]).
pub(super) fn backward_w(g: &Geom, x: &[f32], d_y: &[f32], gw: &mut [f32], blocking: Blocking) {
    let tasks = tasks(g);
    let par = if tasks.len() > 1 {
        Parallelism::Sequential
    } else {
        Parallelism::Rayon
    };
    let run = |t: &Task| task_partial(g, x, d_y, t, blocking, par);
    let parts: Vec<Vec<f32>> = if tasks.len() > 1 {
        tasks.par_iter().map(run).collect()
    } else {
        tasks.iter().map(run).collect()
    };
    for part in parts {
        gw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
    }
}

/// One task's partial grad_w `(c_out, K)`.
fn task_partial(
    g: &Geom,
    x: &[f32],
    d_y: &[f32],
    t: &Task,
    blocking: Blocking,
    par: Parallelism,
) -> Vec<f32> {
    if g.k() <= blocking.small_k_max {
        small_k_partial(g, x, d_y, t, blocking.block_floats, par)
    } else {
        large_k_partial(g, x, d_y, t, par)
    }
}

/// Per item, group and block of output rows: acc_t `(K, og)` += col block `(K, cols)` @
/// d_y blockᵀ `(cols, og)`, both operands built row-major and small (the `gemm` crate is up to
/// 25x slower with a column-major right operand when K is small: measured on 16x4096x75 and
/// 32x1024x144, the smile CNN's products).
fn small_k_partial(
    g: &Geom,
    x: &[f32],
    d_y: &[f32],
    t: &Task,
    block_floats: usize,
    par: Parallelism,
) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let rows_per_block = (block_floats / (g.ow * k).max(1)).clamp(1, t.rows.len().max(1));
    let mut col = vec![
        0.0f32;
        if g.is_pointwise() {
            0
        } else {
            rows_per_block * g.ow * k
        }
    ];
    let mut dy_t = vec![0.0f32; rows_per_block * g.ow * g.og]; // (cols, og)
    let mut acc_t = vec![0.0f32; g.c_out * k]; // groups × (K, og)
    for ni in t.items.clone() {
        let x_item = &x[ni * g.x_item()..][..g.x_item()];
        let dy_item = &d_y[ni * g.y_item()..][..g.y_item()];
        for grp in 0..g.groups {
            let x_g = &x_item[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w]; // (cg, h, w)
            let dy_g = &dy_item[grp * g.og * p..][..g.og * p]; // (og, P)
            let acc_g = &mut acc_t[grp * k * g.og..][..k * g.og]; // (K, og)
            for oy0 in t.rows.clone().step_by(rows_per_block) {
                let oy1 = (oy0 + rows_per_block).min(t.rows.end);
                let cols = (oy1 - oy0) * g.ow;
                let block = column_block(g, x_g, oy0..oy1, &mut col);
                let dyt = &mut dy_t[..cols * g.og]; // (cols, og)
                for o in 0..g.og {
                    let src = &dy_g[o * p + oy0 * g.ow..][..cols];
                    for (j, &v) in src.iter().enumerate() {
                        dyt[j * g.og + o] = v;
                    }
                }
                sgemm(
                    1.0,
                    block,
                    MatRef::row_major(dyt, cols, g.og),
                    1.0,
                    acc_g,
                    par,
                );
            }
        }
    }
    // groups × (K, og) → (c_out, K)
    let mut acc = vec![0.0f32; g.c_out * k];
    for grp in 0..g.groups {
        let acc_t = &acc_t[grp * k * g.og..][..k * g.og];
        let acc_g = &mut acc[grp * g.og * k..][..g.og * k];
        transpose_into(acc_t, k, g.og, acc_g);
    }
    acc
}

/// dst `(cols, rows)` = srcᵀ for src `(rows, cols)`, in cache-sized tiles (a plain loop over a
/// 2304 x 256 matrix took longer than the GEMM that made it).
fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// Per item and group: acc_g `(og, K)` += d_y rows `(og, cols)` @ colᵀ `(cols, K)` over the
/// task's output rows, col built once per item (a transposed view: no copy).
fn large_k_partial(g: &Geom, x: &[f32], d_y: &[f32], t: &Task, par: Parallelism) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let cols = t.rows.len() * g.ow;
    let mut col = vec![0.0f32; if g.is_pointwise() { 0 } else { k * cols }]; // (K, cols)
    let mut acc = vec![0.0f32; g.c_out * k]; // (c_out, K)
    for ni in t.items.clone() {
        let x_item = &x[ni * g.x_item()..][..g.x_item()];
        let dy_item = &d_y[ni * g.y_item()..][..g.y_item()];
        for grp in 0..g.groups {
            let x_g = &x_item[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w]; // (cg, h, w)
            let dy_blk = MatRef {
                data: &dy_item[grp * g.og * p + t.rows.start * g.ow..],
                rows: g.og,
                cols,
                rs: p,
                cs: 1,
            }; // (og, cols)
            let block = column_block(g, x_g, t.rows.clone(), &mut col);
            let acc_g = &mut acc[grp * g.og * k..][..g.og * k]; // (og, K)
            sgemm(1.0, dy_blk, block.t(), 1.0, acc_g, par);
        }
    }
    acc
}

/// The column matrix `(K, rows·ow)` of output rows `rows` of one group's input x_g
/// `(cg, h, w)`: for a pointwise convolution a view of the input planes (rows P apart), else
/// built into `col` by [`im2col_rows`].
fn column_block<'a>(
    g: &Geom,
    x_g: &'a [f32],
    rows: Range<usize>,
    col: &'a mut [f32],
) -> MatRef<'a> {
    let (k, cols) = (g.k(), rows.len() * g.ow);
    if g.is_pointwise() {
        return MatRef {
            data: &x_g[rows.start * g.ow..],
            rows: k,
            cols,
            rs: g.p(),
            cs: 1,
        };
    }
    let block = &mut col[..k * cols];
    im2col_rows(x_g, g, rows, block);
    MatRef::row_major(block, k, cols)
}
