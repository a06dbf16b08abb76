//! Convolution d_x streaming blocks of output rows through cache instead of building one whole
//! column matrix per image, on every thread for batch 1 as for larger batches.
//!
//! Measured alternative, not kept: for stride 1, d_x is a forward correlation of d_y with the
//! kernel turned by 180° (im2col of d_y + one GEMM per block of d_x rows). On the smile CNN's
//! 16→16 5x5 layer at batch 32 it took 16.2 ms of CPU against 13.2 ms for this path (one
//! thread, CPU time): its im2col of d_y moves as much data as col2im and copies more.

use std::ops::Range;

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
        for_item_chunks(g, chunks, d_y, d_x, dcol_len, |dy_item, dx_item, dcol| {
            scatter_item_rows(g, w, dy_item, 0..g.oh, rows, dcol, dx_item)
        });
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

/// Runs `per_item(dy_item, dx_item, scratch)` for every item of d_y `(n, c_out, oh, ow)` and
/// d_x `(n, c_in, h, w)`, the items split into `chunks` consecutive runs in parallel, each run
/// with its own `scratch_len` floats of scratch (reused across its items).
fn for_item_chunks(
    g: &Geom,
    chunks: usize,
    d_y: &[f32],
    d_x: &mut [f32],
    scratch_len: usize,
    per_item: impl Fn(&[f32], &mut [f32], &mut [f32]) + Sync,
) {
    let per = items_per_chunk(g.n, chunks);
    d_x.par_chunks_mut(per * g.x_item())
        .enumerate()
        .for_each(|(ci, dx_chunk)| {
            let mut scratch = vec![0.0f32; scratch_len];
            for (i, dx_item) in dx_chunk.chunks_exact_mut(g.x_item()).enumerate() {
                let dy_item = &d_y[(ci * per + i) * g.y_item()..][..g.y_item()];
                per_item(dy_item, dx_item, &mut scratch);
            }
        });
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

// ---------------------------------------------------------------------------------------------
// Direct stride-1 d_x
// ---------------------------------------------------------------------------------------------

/// Input channels computed together by [`direct_rows`] (they share every d_y load).
const DIRECT_CB: usize = 4;
/// Output pixels per tile of [`direct_rows`]: two 16-float vectors per channel.
const DIRECT_TW: usize = 32;

/// Whether [`direct_backward_x`] applies: stride 1 and padding no wider than the dilated
/// kernel, so that d_x is a plain correlation of zero-padded d_y with the flipped kernel:
/// d_x[ci, iy, ix] = Σ_{co, ki, kj} W[co, ci, kh−1−ki, kw−1−kj] · dyp[co, iy + ki·dh, ix + kj·dw]
/// with dyp = d_y moved down by top' = (kh−1)·dh − top and right by left' = (kw−1)·dw − left.
pub(super) fn direct_applies(g: &Geom) -> bool {
    g.sh == 1 && g.sw == 1 && g.top <= (g.kh - 1) * g.dh && g.left <= (g.kw - 1) * g.dw
}

/// Whether d_x should take [`direct_backward_x`]: where it applies, for kernels larger than
/// 3x3. Measured on the smile CNN (batch 32, one thread, CPU time): 5x5 16→16 @64² 10.0 ms
/// against 17.7 ms for the blocked GEMM + col2im path, batch 1 0.30 against 0.55 ms; but 3x3
/// 16→32 and 32→32 @32² 2.35 / 4.36 against 2.17 / 4.39 ms (a 3x3 kernel gives the GEMM path
/// a long enough inner dimension).
pub(super) fn prefers_direct(g: &Geom) -> bool {
    direct_applies(g) && g.kh * g.kw > 9
}

/// Extents of one zero-padded d_y plane of [`direct_backward_x`].
#[derive(Clone, Copy, Debug)]
struct DyPad {
    /// every row `iy + ki·dh` for iy < h
    h: usize,
    /// every column `ix + kj·dw` for ix < w rounded up to whole tiles
    w: usize,
    top: usize,
    left: usize,
}

impl DyPad {
    fn of(g: &Geom) -> Self {
        Self {
            h: g.h + (g.kh - 1) * g.dh,
            w: g.w.div_ceil(DIRECT_TW) * DIRECT_TW + (g.kw - 1) * g.dw,
            top: (g.kh - 1) * g.dh - g.top,
            left: (g.kw - 1) * g.dw - g.left,
        }
    }
}

/// dyp `(og, pd.h, pd.w)`: the planes dy_g `(og, oh, ow)` placed at (top', left'), zeros
/// around; d_y rows and columns past the padded plane (bottom/right padding wider than the
/// kernel) feed no input pixel and are left out.
fn pad_dy(g: &Geom, pd: DyPad, dy_g: &[f32], dyp: &mut [f32]) {
    dyp.fill(0.0);
    let rows = g.oh.min(pd.h - pd.top);
    let cols = g.ow.min(pd.w - pd.left);
    for (plane, dst) in dy_g
        .chunks_exact(g.p())
        .zip(dyp.chunks_exact_mut(pd.h * pd.w))
    {
        for (oy, row) in plane.chunks_exact(g.ow).take(rows).enumerate() {
            dst[(pd.top + oy) * pd.w + pd.left..][..cols].copy_from_slice(&row[..cols]);
        }
    }
}

/// The flipped weights of input channels `c0..c0 + cb` of group `grp`, tap-major:
/// `(og, kh·kw, DIRECT_CB)`, zero for channels past `cb`.
fn block_weights(g: &Geom, w: &[f32], grp: usize, c0: usize, cb: usize) -> Vec<f32> {
    let ks = g.kh * g.kw;
    let mut wb = vec![0.0f32; g.og * ks * DIRECT_CB];
    for co in 0..g.og {
        for c in 0..cb {
            let src = &w[((grp * g.og + co) * g.cg + c0 + c) * ks..][..ks]; // (kh, kw)
            // (ki, kj) → (kh−1−ki, kw−1−kj) reverses the flat kernel
            for (t, &v) in src.iter().rev().enumerate() {
                wb[(co * ks + t) * DIRECT_CB + c] = v;
            }
        }
    }
    wb
}

/// d_x `(n, c_in, h, w)` for stride 1 ([`direct_applies`]) without a column matrix: d_y of an
/// item's group is padded once, then [`direct_rows`] keeps DIRECT_CB input channels ×
/// DIRECT_TW pixels of sums in registers over every (co, ki, kj). Items are split across
/// threads; a single item splits its channel blocks instead.
pub(super) fn direct_backward_x(g: &Geom, w: &[f32], d_y: &[f32], d_x: &mut [f32]) {
    let pd = DyPad::of(g);
    let dyp_len = g.og * pd.h * pd.w;
    let plane = g.h * g.w;
    // (group, first channel, channels) of every block, with its weights
    let blocks: Vec<(usize, usize, usize, Vec<f32>)> = (0..g.groups)
        .flat_map(|grp| {
            (0..g.cg).step_by(DIRECT_CB).map(move |c0| {
                let cb = DIRECT_CB.min(g.cg - c0);
                (grp, c0, cb)
            })
        })
        .map(|(grp, c0, cb)| (grp, c0, cb, block_weights(g, w, grp, c0, cb)))
        .collect();
    let item = |dy_item: &[f32], dx_item: &mut [f32], dyp: &mut [f32], par: bool| {
        for grp in 0..g.groups {
            pad_dy(g, pd, &dy_item[grp * g.og * g.p()..][..g.og * g.p()], dyp);
            let dx_g = &mut dx_item[grp * g.cg * plane..][..g.cg * plane]; // (cg, h, w)
            let mine = blocks.iter().filter(|b| b.0 == grp);
            let dyp = &*dyp;
            let run = |(dx_b, b): (&mut [f32], &(usize, usize, usize, Vec<f32>))| {
                direct_block(g, pd, &b.3, dyp, dx_b)
            };
            let chunks = dx_g.chunks_mut(DIRECT_CB * plane);
            if par {
                let pairs: Vec<_> = chunks.zip(mine).collect();
                pairs.into_par_iter().for_each(run);
            } else {
                chunks.zip(mine).for_each(run);
            }
        }
    };
    let (chunks, _) = batch_plan(g.n);
    if chunks > 1 {
        for_item_chunks(g, chunks, d_y, d_x, dyp_len, |dy_item, dx_item, dyp| {
            item(dy_item, dx_item, dyp, false)
        });
        return;
    }
    let mut dyp = vec![0.0f32; dyp_len];
    for (ni, dx_item) in d_x.chunks_exact_mut(g.x_item()).enumerate() {
        item(
            &d_y[ni * g.y_item()..][..g.y_item()],
            dx_item,
            &mut dyp,
            true,
        );
    }
}

/// One block of input channels: dx_b `(cb, h, w)` from the padded d_y `dyp` and the block's
/// weights `wb` `(og, kh·kw, DIRECT_CB)`.
fn direct_block(g: &Geom, pd: DyPad, wb: &[f32], dyp: &[f32], dx_b: &mut [f32]) {
    let cb = dx_b.len() / (g.h * g.w);
    let mut rows = vec![0.0f32; DIRECT_CB * g.w]; // (DIRECT_CB, w)
    for iy in 0..g.h {
        direct_rows(g, pd, wb, dyp, iy, &mut rows);
        for c in 0..cb {
            dx_b[(c * g.h + iy) * g.w..][..g.w].copy_from_slice(&rows[c * g.w..][..g.w]);
        }
    }
}

/// `a += k · s` over 16 lanes (one AVX-512 register).
#[inline(always)]
fn axpy16(a: &mut [f32; 16], k: f32, s: &[f32; 16]) {
    for l in 0..16 {
        a[l] += k * s[l];
    }
}

/// 16 floats from `v` at `at` as an array (callers guarantee the range).
#[inline(always)]
fn lane16(v: &[f32], at: usize) -> &[f32; 16] {
    v[at..at + 16]
        .try_into()
        .unwrap_or_else(|_| unreachable!("a 16-element range"))
}

/// Output row iy of the block's DIRECT_CB channels: out `(DIRECT_CB, w)`. Each tile of 32
/// pixels keeps its 4 × 32 sums in eight named 16-lane accumulators, which LLVM keeps in
/// registers (an indexed `[[f32; 32]; 4]` was not, and ran 70x slower in a standalone test),
/// and one d_y load feeds four fused multiply-adds. Compiled for AVX-512 and AVX2 as well,
/// chosen at run time.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma"
))]
fn direct_rows(g: &Geom, pd: DyPad, wb: &[f32], dyp: &[f32], iy: usize, out: &mut [f32]) {
    let ks = g.kh * g.kw;
    let plane = pd.h * pd.w;
    for x0 in (0..g.w).step_by(DIRECT_TW) {
        let (mut a0, mut a1, mut a2, mut a3) = ([0f32; 16], [0f32; 16], [0f32; 16], [0f32; 16]);
        let (mut b0, mut b1, mut b2, mut b3) = ([0f32; 16], [0f32; 16], [0f32; 16], [0f32; 16]);
        for co in 0..g.og {
            for ki in 0..g.kh {
                let row = &dyp[co * plane + (iy + ki * g.dh) * pd.w + x0..];
                let wr = &wb[(co * ks + ki * g.kw) * DIRECT_CB..][..g.kw * DIRECT_CB];
                for kj in 0..g.kw {
                    let (s0, s1) = (lane16(row, kj * g.dw), lane16(row, kj * g.dw + 16));
                    let wv = &wr[kj * DIRECT_CB..][..DIRECT_CB];
                    axpy16(&mut a0, wv[0], s0);
                    axpy16(&mut b0, wv[0], s1);
                    axpy16(&mut a1, wv[1], s0);
                    axpy16(&mut b1, wv[1], s1);
                    axpy16(&mut a2, wv[2], s0);
                    axpy16(&mut b2, wv[2], s1);
                    axpy16(&mut a3, wv[3], s0);
                    axpy16(&mut b3, wv[3], s1);
                }
            }
        }
        let n = DIRECT_TW.min(g.w - x0);
        for (c, (a, b)) in [(a0, b0), (a1, b1), (a2, b2), (a3, b3)].iter().enumerate() {
            let dst = &mut out[c * g.w + x0..][..n];
            let (lo, hi) = dst.split_at_mut(n.min(16));
            lo.copy_from_slice(&a[..lo.len()]);
            hi.copy_from_slice(&b[..hi.len()]);
        }
    }
}
