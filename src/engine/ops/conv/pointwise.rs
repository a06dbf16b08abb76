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
use crate::engine::tensor::Tensor;

/// Columns per register tile (two 16-lane vectors).
const NC: usize = 32;
/// Rows per register tile: 8 × 2 accumulators of 16 lanes, half of AVX-512's registers.
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
        write_all(has_avx512(), g, ops, OutPtr(y.as_mut_ptr()));
        y.set_len(n);
    }
    Tensor::new(g.output_shape(), y)
}

/// [`pointwise_forward`] into an existing buffer, with the AVX-512 tile kernel allowed
/// (`simd`) or not (tests run both).
#[cfg(test)]
pub(super) fn pointwise_forward_with(
    simd: bool,
    g: &Geom,
    ops: ForwardOperands<'_>,
    y: &mut [f32],
) {
    assert_eq!(y.len(), g.n * g.y_item(), "pointwise output length");
    // SAFETY: y holds the whole output and is borrowed uniquely for the call.
    unsafe { write_all(simd, g, ops, OutPtr(y.as_mut_ptr())) };
}

/// Writes every element of the `(n, c_out, P)` output at `out`, one rayon task per tile.
///
/// # Safety
/// `out` must be valid for writes (and reads of what was written) of `n · c_out · P` floats
/// that nothing else accesses during the call; they need not be initialised.
unsafe fn write_all(simd: bool, g: &Geom, ops: ForwardOperands<'_>, out: OutPtr) {
    let tasks = tasks(g);
    let run = |t: &Task| {
        // SAFETY: see `OutPtr`; `run_task` writes only rows `t.tiles` × columns `t.panels` of
        // item `t.item`, group `t.grp`, all inside the output (the caller's contract).
        unsafe { run_task(simd, g, ops, *t, out) }
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
unsafe fn run_task(simd: bool, g: &Geom, ops: ForwardOperands<'_>, t: Task, out: OutPtr) {
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
                let start = if first {
                    Start::Bias(std::array::from_fn(|r| b.map_or(0.0, |b| b[co0 + row(r)])))
                } else {
                    Start::Prev
                };
                for panel in bp0..bp1 {
                    let c0 = panel * NC;
                    let cols = NC.min(p - c0);
                    // row r of the tile in y: NC floats when the panel is whole, else `cols`
                    let y_row = |r: usize| (t.item * g.c_out + co0 + row(r)) * p + c0;
                    if cols == NC {
                        // SAFETY: rows co0..co0+rows × columns c0..c0+NC of item t.item lie
                        // inside y (length asserted by the caller) and belong to this task.
                        let outs = std::array::from_fn(|r| unsafe { out.0.add(y_row(r)) });
                        let x_t = &x_g[k0 * p + c0..];
                        // SAFETY: `outs` rows hold NC floats each, owned by this task.
                        unsafe { tile_kernel(simd, &w_rows, x_t, p, k1 - k0, start, clamp, outs) };
                        continue;
                    }
                    for (r, t_row) in tmp.iter_mut().enumerate().take(rows) {
                        if !first {
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
                            simd,
                            &w_rows,
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
    Prev,
}

/// out `(MR, NC)` = clamp(start + W `(MR, kn)` @ x `(kn, NC)`), W's rows `w_rows`, x's rows
/// `stride` apart, clamped to `clamp` when given: the AVX-512 kernel when the CPU has it
/// (`simd`), else the portable loops.
///
/// # Safety
/// Each of `outs` must point to NC floats that nothing else accesses during the call (two
/// entries may be equal only if they compute the same values); they may be uninitialised
/// only when `start` is [`Start::Bias`].
#[inline(always)]
unsafe fn tile_kernel(
    simd: bool,
    w_rows: &[&[f32]; MR],
    x: &[f32],
    stride: usize,
    kn: usize,
    start: Start,
    clamp: Option<(f32, f32)>,
    outs: [*mut f32; MR],
) {
    assert!(w_rows.iter().all(|r| r.len() >= kn) && (kn == 0 || x.len() >= (kn - 1) * stride + NC));
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the CPU has AVX-512F (`simd` comes from `has_avx512`), the assert above keeps
        // every read inside the weight rows and x, and the caller vouches for `outs`.
        unsafe {
            tile_avx512(
                w_rows.map(|r| r.as_ptr()),
                x.as_ptr(),
                stride,
                kn,
                start,
                clamp,
                outs,
            )
        };
        return;
    }
    let _ = simd;
    let mut acc = [[0.0f32; NC]; MR];
    for (r, a) in acc.iter_mut().enumerate() {
        match start {
            Start::Bias(bias) => a.fill(bias[r]),
            // SAFETY: the caller vouches for `outs`.
            Start::Prev => a.copy_from_slice(unsafe { std::slice::from_raw_parts(outs[r], NC) }),
        }
    }
    tile_portable(w_rows, x, stride, kn, &mut acc);
    for (a, &o) in acc.iter_mut().zip(&outs) {
        if let Some((lo, hi)) = clamp {
            a.iter_mut().for_each(|v| *v = v.max(lo).min(hi));
        }
        // SAFETY: the caller vouches for `outs` (a raw copy: they may be uninitialised).
        unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), o, NC) };
    }
}

/// Whether [`tile_kernel`] may use its AVX-512 kernel on this CPU.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The portable tile (CPUs without AVX-512; several times slower than [`tile_avx512`]).
fn tile_portable(
    w_rows: &[&[f32]; MR],
    x: &[f32],
    stride: usize,
    kn: usize,
    acc: &mut [[f32; NC]; MR],
) {
    for kk in 0..kn {
        let xr = &x[kk * stride..][..NC];
        for (a, wr) in acc.iter_mut().zip(w_rows) {
            let wv = wr[kk];
            for (o, &v) in a.iter_mut().zip(xr) {
                *o = wv.mul_add(v, *o);
            }
        }
    }
}

/// [`tile_kernel`] with its 16 accumulators (8 rows × 2 vectors) in registers: per k, two
/// loads of x, eight broadcasts of w, sixteen FMAs; the clamp and the stores follow at once.
///
/// # Safety
/// The CPU must have AVX-512F; each weight row must hold `kn` floats, `x`
/// `(kn − 1)·stride + NC`, and `outs` as for [`tile_kernel`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(
    w_rows: [*const f32; MR],
    x: *const f32,
    stride: usize,
    kn: usize,
    start: Start,
    clamp: Option<(f32, f32)>,
    outs: [*mut f32; MR],
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): reads stay inside the extents the caller guarantees; each output
    // row is NC = 32 floats, two 16-lane vectors.
    unsafe {
        let mut a = [_mm512_setzero_ps(); 2 * MR];
        for r in 0..MR {
            (a[2 * r], a[2 * r + 1]) = match start {
                Start::Bias(bias) => (_mm512_set1_ps(bias[r]), _mm512_set1_ps(bias[r])),
                Start::Prev => (_mm512_loadu_ps(outs[r]), _mm512_loadu_ps(outs[r].add(16))),
            };
        }
        for kk in 0..kn {
            let xr = x.add(kk * stride);
            let (x0, x1) = (_mm512_loadu_ps(xr), _mm512_loadu_ps(xr.add(16)));
            for r in 0..MR {
                let wv = _mm512_set1_ps(*w_rows[r].add(kk));
                a[2 * r] = _mm512_fmadd_ps(wv, x0, a[2 * r]);
                a[2 * r + 1] = _mm512_fmadd_ps(wv, x1, a[2 * r + 1]);
            }
        }
        if let Some((lo, hi)) = clamp {
            // max then min, as FusedActivation::apply (NaN becomes lo, like f32::max)
            let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
            for v in a.iter_mut() {
                *v = _mm512_min_ps(_mm512_max_ps(*v, lo), hi);
            }
        }
        for r in 0..MR {
            _mm512_storeu_ps(outs[r], a[2 * r]);
            _mm512_storeu_ps(outs[r].add(16), a[2 * r + 1]);
        }
    }
}
