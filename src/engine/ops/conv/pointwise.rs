//! Pointwise (1x1, stride 1, unpadded) forward with the bias and activation fused:
//! y_g `(og, P)` = act(W_g `(og, cg)` @ x_g `(cg, P)` + b_g), the input plane being the GEMM's
//! right operand as it lies.
//!
//! MobileNet-style networks spend most of their time here, on products with few input
//! channels (K = 16..160) and many columns (P up to 112²), where a general GEMM's packing and
//! a separate bias/activation pass over a multi-megabyte output cost more than the
//! multiply-adds. This kernel computes register tiles of 8 rows × 32 columns directly from the
//! input plane (a K-block of a 32-column panel stays in L1 across all row tiles), applies bias
//! and activation to each tile while it is in registers and writes it once. The output is cut
//! into tiles of whole row tiles × whole panels, one rayon task each, in a single parallel
//! region per convolution. Every output element is summed in the same order (k ascending)
//! whatever the task split, so results do not depend on the thread count.

use rayon::prelude::*;

use super::{ForwardOperands, Geom};
use crate::engine::error::OpError;
use crate::engine::simd::vector::{F32Vec, Portable};
use crate::engine::simd::{self, Level};
use crate::engine::tensor::Tensor;

/// Columns per tile (two 16-lane AVX-512 vectors, four AVX2, eight NEON or portable).
const NC: usize = 32;
/// Rows per tile. Each level computes the 8 × 32 tile in register blocks that fit its
/// register file: AVX-512 all of it (8 × 2 accumulators, half of its 32 registers), AVX2
/// 4 rows × 16 columns at a time (8 of 16), NEON 4 × 16 (16 of 32), portable 4 × 8.
const MR: usize = 8;
/// Input channels per K-block: the block of a panel (KC × NC floats, 32 KiB) stays in L1.
const KC: usize = 256;
/// Floats of x per column block (64 KiB: an L2-resident block that every row tile sweeps).
const BLOCK_FLOATS: usize = 16 * 1024;
/// Below this many multiply-adds per (item, group) the product is one task: forking costs
/// more than it saves.
const SPLIT_MIN_MACS: usize = 1 << 17;

/// One task: rows `tiles` (in row tiles) × columns `panels` (in NC panels) of one (item, group).
#[derive(Clone, Copy, Debug)]
struct Task {
    item: usize,
    grp: usize,
    tiles: (usize, usize),
    panels: (usize, usize),
}

/// The task grid: about four tasks per thread for each (item, group) that is big enough.
fn tasks(g: &Geom) -> Vec<Task> {
    let p = g.p();
    let (np, nt) = (p.div_ceil(NC), g.og.div_ceil(MR));
    let threads = rayon::current_num_threads();
    let (col_splits, row_splits) = if threads == 1 || g.og * g.cg * p < SPLIT_MIN_MACS {
        (1, 1)
    } else {
        let want = 4 * threads;
        let cs = np.min(want);
        (cs, nt.min(want.div_ceil(cs)))
    };
    let mut out = Vec::with_capacity(g.n * g.groups * col_splits * row_splits);
    for item in 0..g.n {
        for grp in 0..g.groups {
            for ci in 0..col_splits {
                for ri in 0..row_splits {
                    out.push(Task {
                        item,
                        grp,
                        tiles: (ri * nt / row_splits, (ri + 1) * nt / row_splits),
                        panels: (ci * np / col_splits, (ci + 1) * np / col_splits),
                    });
                }
            }
        }
    }
    out
}

/// The output pointer shared by the tasks, each of which writes its own disjoint tile.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint element sets (distinct (item, group, row, column) tiles) of one
// buffer that outlives the parallel region; nothing reads those elements meanwhile.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// y `(n, c_out, h, w)` = act(conv1x1(x `(n, c_in, h, w)`, w `(c_out, cg, 1, 1)`) + b), in a
/// buffer that is not zero-filled first: the kernel writes every element exactly once.
pub(super) fn pointwise_forward(g: &Geom, ops: ForwardOperands<'_>) -> Result<Tensor, OpError> {
    pointwise_forward_residual(g, ops, None)
}

/// y `(n, c_out, P)` = act(W @ x + b + r): [`pointwise_forward`] with a residual `r` of y's
/// shape added before the activation (a ResNet block's join), read once when each tile's sums
/// start.
pub(super) fn pointwise_forward_residual(
    g: &Geom,
    ops: ForwardOperands<'_>,
    residual: Option<&[f32]>,
) -> Result<Tensor, OpError> {
    let n = g.n * g.y_item();
    let mut y: Vec<f32> = Vec::new();
    y.try_reserve_exact(n).map_err(|_| {
        OpError(format!(
            "cannot allocate the {n}-element output of a 1x1 convolution"
        ))
    })?;
    // SAFETY: `y` has capacity n; `write_all` writes each of its n elements (the task grid
    // covers every (item, group, row tile, panel)) before `set_len` exposes them.
    unsafe {
        write_all(simd::level(), g, ops, residual, OutPtr(y.as_mut_ptr()));
        y.set_len(n);
    }
    Tensor::new(g.output_shape(), y)
}

/// [`pointwise_forward`] into an existing buffer (tests pass NaN-filled buffers, so that an
/// element left unwritten shows).
#[cfg(test)]
pub(super) fn pointwise_forward_into(
    g: &Geom,
    ops: ForwardOperands<'_>,
    residual: Option<&[f32]>,
    y: &mut [f32],
) {
    assert_eq!(y.len(), g.n * g.y_item(), "pointwise output length");
    // SAFETY: y holds the whole output and is borrowed uniquely for the call.
    unsafe { write_all(simd::level(), g, ops, residual, OutPtr(y.as_mut_ptr())) };
}

/// Writes every element of the `(n, c_out, P)` output at `out`, one rayon task per tile.
///
/// # Safety
/// `out` must be valid for writes (and reads of what was written) of `n · c_out · P` floats
/// that nothing else accesses during the call; they need not be initialised. `residual`, when
/// given, holds as many floats.
unsafe fn write_all(
    level: Level,
    g: &Geom,
    ops: ForwardOperands<'_>,
    residual: Option<&[f32]>,
    out: OutPtr,
) {
    assert!(
        residual.is_none_or(|r| r.len() == g.n * g.y_item()),
        "residual length"
    );
    let tasks = tasks(g);
    let run = |t: &Task| {
        // SAFETY: see `OutPtr`; `run_task` writes only rows `t.tiles` × columns `t.panels` of
        // item `t.item`, group `t.grp`, all inside the output (the caller's contract).
        unsafe { run_task(level, g, ops, residual, *t, out) }
    };
    if tasks.len() > 1 {
        tasks.par_iter().for_each(run);
    } else {
        tasks.iter().for_each(run);
    }
}

/// Computes one task's tile of the output.
///
/// # Safety
/// `out` must point to the `(n, c_out, P)` output, and no other thread may access the task's
/// elements during the call.
unsafe fn run_task(
    level: Level,
    g: &Geom,
    ops: ForwardOperands<'_>,
    residual: Option<&[f32]>,
    t: Task,
    out: OutPtr,
) {
    let ForwardOperands { x, w, b, act } = ops;
    let (k, p) = (g.cg, g.p());
    let x_g = &x[(t.item * g.c_in + t.grp * g.cg) * p..][..k * p]; // (K, P)
    let (lo, hi) = act.map_or((f32::NEG_INFINITY, f32::INFINITY), |a| a.bounds());
    // a zero-padded copy of the last, partial panel: (K, NC)
    let mut edge = Vec::new();
    let last_panel = p.div_ceil(NC) - 1;
    if p % NC != 0 && (t.panels.0..t.panels.1).contains(&last_panel) {
        let (c0, cols) = (last_panel * NC, p % NC);
        edge = vec![0.0f32; k * NC];
        for (kk, row) in edge.chunks_exact_mut(NC).enumerate() {
            row[..cols].copy_from_slice(&x_g[kk * p + c0..][..cols]);
        }
    }
    // the tile of the partial panel, computed here and then copied into y: (MR, NC)
    let mut tmp = [[0.0f32; NC]; MR];
    // Column blocks whose K-block of x (≤ BLOCK_FLOATS) stays in cache while every row tile
    // of the task sweeps it; each row tile then writes its rows as a few long runs.
    let kc_max = KC.min(k);
    let block_panels = (BLOCK_FLOATS / (kc_max * NC)).max(1);
    for bp0 in (t.panels.0..t.panels.1).step_by(block_panels) {
        let bp1 = (bp0 + block_panels).min(t.panels.1);
        for k0 in (0..k).step_by(KC) {
            let k1 = (k0 + KC).min(k);
            let (first, last) = (k0 == 0, k1 == k);
            let clamp = (last && act.is_some()).then_some((lo, hi));
            for tile in t.tiles.0..t.tiles.1 {
                let row0 = tile * MR;
                let rows = MR.min(g.og - row0);
                let co0 = t.grp * g.og + row0;
                // Rows past `og` repeat the last row (weights, bias and output): they compute
                // and store exactly its values again.
                let row = |r: usize| r.min(rows - 1);
                let w_rows: [&[f32]; MR] =
                    std::array::from_fn(|r| &w[(co0 + row(r)) * k + k0..][..k1 - k0]);
                let bias: [f32; MR] = std::array::from_fn(|r| b.map_or(0.0, |b| b[co0 + row(r)]));
                for panel in bp0..bp1 {
                    let c0 = panel * NC;
                    let cols = NC.min(p - c0);
                    // row r of the tile in y: NC floats when the panel is whole, else `cols`
                    let y_row = |r: usize| (t.item * g.c_out + co0 + row(r)) * p + c0;
                    let start = match (first, residual) {
                        (false, _) => Start::Prev,
                        (true, None) => Start::Bias(bias),
                        // the residual's rows, at the same offsets as y's (whole panels only:
                        // the partial panel starts from a copy in `tmp`, below)
                        (true, Some(res)) if cols == NC => Start::BiasPlus(
                            bias,
                            std::array::from_fn(|r| res[y_row(r)..][..NC].as_ptr()),
                        ),
                        (true, Some(_)) => Start::Prev,
                    };
                    if cols == NC {
                        // SAFETY: rows co0..co0+rows × columns c0..c0+NC of item t.item lie
                        // inside y (length asserted by the caller) and belong to this task.
                        let outs = std::array::from_fn(|r| unsafe { out.0.add(y_row(r)) });
                        let x_t = &x_g[k0 * p + c0..];
                        // SAFETY: `outs` rows hold NC floats each, owned by this task.
                        unsafe {
                            tile_kernel(level, &w_rows, rows, x_t, p, k1 - k0, start, clamp, outs)
                        };
                        continue;
                    }
                    for (r, t_row) in tmp.iter_mut().enumerate().take(rows) {
                        if let (true, Some(res)) = (first, residual) {
                            // bias + residual, then the K-blocks add to it like partial sums
                            for (v, &rv) in t_row.iter_mut().zip(&res[y_row(r)..][..cols]) {
                                *v = bias[r] + rv;
                            }
                        } else if !first {
                            // SAFETY: as above, `cols` floats of this task's row.
                            let prev =
                                unsafe { std::slice::from_raw_parts(out.0.add(y_row(r)), cols) };
                            t_row[..cols].copy_from_slice(prev);
                        }
                    }
                    let base = tmp.as_mut_ptr();
                    // SAFETY: row(r) < MR rows of tmp, NC floats each.
                    let outs = std::array::from_fn(|r| unsafe { (*base.add(row(r))).as_mut_ptr() });
                    // SAFETY: `outs` rows are tmp's, NC floats each.
                    unsafe {
                        tile_kernel(
                            level,
                            &w_rows,
                            rows,
                            &edge[k0 * NC..],
                            NC,
                            k1 - k0,
                            start,
                            clamp,
                            outs,
                        )
                    };
                    for (r, t_row) in tmp.iter().enumerate().take(rows) {
                        // SAFETY: as above (a raw copy: the destination may be uninitialised).
                        unsafe {
                            std::ptr::copy_nonoverlapping(t_row.as_ptr(), out.0.add(y_row(r)), cols)
                        };
                    }
                }
            }
        }
    }
}

/// How a tile's accumulators start: from the bias of each row (first K-block) or from the
/// partial sums already in the output rows (later K-blocks).
#[derive(Clone, Copy, Debug)]
enum Start {
    Bias([f32; MR]),
    /// The bias of each row plus that row's NC floats of a residual.
    BiasPlus([f32; MR], [*const f32; MR]),
    Prev,
}

/// out `(MR, NC)` = clamp(start + W `(MR, kn)` @ x `(kn, NC)`), W's rows `w_rows`, x's rows
/// `stride` apart, clamped to `clamp` when given, with the register tiles of `level`. Only the
/// first `rows` rows are real; the others repeat the last real row (same weights, same output
/// pointer), and are computed only inside a register block that also holds real rows.
///
/// # Safety
/// `level` must be supported by the CPU. Each of `outs` must point to NC floats that nothing
/// else accesses during the call (two entries may be equal only if they compute the same
/// values); they may be uninitialised only when `start` is [`Start::Bias`] or
/// [`Start::BiasPlus`] (whose residual rows must hold NC floats each).
#[inline(always)]
unsafe fn tile_kernel(
    level: Level,
    w_rows: &[&[f32]; MR],
    rows: usize,
    x: &[f32],
    stride: usize,
    kn: usize,
    start: Start,
    clamp: Option<(f32, f32)>,
    outs: [*mut f32; MR],
) {
    assert!(w_rows.iter().all(|r| r.len() >= kn) && (kn == 0 || x.len() >= (kn - 1) * stride + NC));
    let t = Tile {
        w_rows: w_rows.map(|r| r.as_ptr()),
        rows,
        x: x.as_ptr(),
        stride,
        kn,
        start,
        clamp,
        outs,
    };
    // SAFETY (every arm): the assert above keeps every read inside the weight rows and x, the
    // caller vouches for `outs` and for the CPU having `level`.
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { tile_avx512(t) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { tile_avx2(t) },
        #[cfg(target_arch = "aarch64")]
        Level::Neon => unsafe { tile::<simd::vector::Neon, 4, 4>(t) },
        _ => unsafe { tile::<Portable, 4, 2>(t) },
    }
}

/// The operands of one tile, as raw pointers (see [`tile_kernel`]).
#[derive(Clone, Copy)]
struct Tile {
    w_rows: [*const f32; MR],
    /// Real rows: register blocks that start at or past it are skipped. (Computing them would
    /// store the last row again; with `Start::Prev` a later block would read that row back
    /// after an earlier one had already added to it, and add twice.)
    rows: usize,
    x: *const f32,
    stride: usize,
    kn: usize,
    start: Start,
    clamp: Option<(f32, f32)>,
    outs: [*mut f32; MR],
}

/// [`tile`] with AVX-512's 8 × 2 register block: per k, two loads of x, eight broadcasts of w,
/// sixteen FMAs; the clamp and the stores follow at once.
///
/// # Safety
/// As [`tile_kernel`], on a CPU with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_avx512(t: Tile) {
    // SAFETY: the caller's contract.
    unsafe { tile::<simd::vector::Avx512, 8, 2>(t) }
}

/// [`tile`] with AVX2's 4 × 2 register block (8 of its 16 registers hold sums; 4 × 4 would
/// leave none for x and w).
///
/// # Safety
/// As [`tile_kernel`], on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(t: Tile) {
    // SAFETY: the caller's contract.
    unsafe { tile::<simd::vector::Avx2, 4, 2>(t) }
}

/// The 8 × 32 tile in blocks of `R` rows × `C` vectors of `V`, each block's sums held in
/// registers over the whole K loop, then clamped and stored. Every element is summed in k
/// order, one multiply-add per k, at every level.
///
/// # Safety
/// As [`tile_kernel`]; `V`'s instructions must be enabled in the caller.
#[inline(always)]
unsafe fn tile<V: F32Vec, const R: usize, const C: usize>(t: Tile) {
    let bw = C * V::LANES;
    debug_assert!(MR.is_multiple_of(R) && NC.is_multiple_of(bw));
    // SAFETY (whole body): reads stay inside the extents the caller guarantees (kn weights per
    // row, (kn − 1)·stride + NC floats of x); each output row is NC floats.
    unsafe {
        for r0 in (0..MR).step_by(R).take_while(|&r0| r0 < t.rows) {
            for c0 in (0..NC).step_by(bw) {
                let mut a = [[V::zero(); C]; R];
                for (r, row) in a.iter_mut().enumerate() {
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = match t.start {
                            Start::Bias(bias) => V::splat(bias[r0 + r]),
                            Start::BiasPlus(bias, res) => {
                                // r · 1 + bias: exact product, one rounding, as r + bias
                                V::load(res[r0 + r].add(c0 + c * V::LANES))
                                    .mul_add(V::splat(1.0), V::splat(bias[r0 + r]))
                            }
                            Start::Prev => V::load(t.outs[r0 + r].add(c0 + c * V::LANES)),
                        };
                    }
                }
                for kk in 0..t.kn {
                    let xr = t.x.add(kk * t.stride + c0);
                    let mut xv = [V::zero(); C];
                    for (c, v) in xv.iter_mut().enumerate() {
                        *v = V::load(xr.add(c * V::LANES));
                    }
                    for (r, row) in a.iter_mut().enumerate() {
                        let wv = V::splat(*t.w_rows[r0 + r].add(kk));
                        for (v, &xc) in row.iter_mut().zip(&xv) {
                            *v = wv.mul_add(xc, *v);
                        }
                    }
                }
                if let Some((lo, hi)) = t.clamp {
                    // max then min, as FusedActivation::apply (NaN becomes lo, like f32::max)
                    let (lo, hi) = (V::splat(lo), V::splat(hi));
                    for v in a.iter_mut().flatten() {
                        *v = v.max(lo).min(hi);
                    }
                }
                for (r, row) in a.iter().enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        v.store(t.outs[r0 + r].add(c0 + c * V::LANES));
                    }
                }
            }
        }
    }
}
