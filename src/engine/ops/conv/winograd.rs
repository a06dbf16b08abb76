//! Winograd F(2x2, 3x3) for undilated 3x3 stride-1 convolutions: the forward pass and d_x.
//!
//! Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural Networks". Every 2x2 block of
//! output pixels (a *tile*) of one output channel is Aᵀ [Σ_s (G g_s Gᵀ) ⊙ (Bᵀ d_s B)] A, where
//! d_s is the 4x4 input patch under the tile in input channel s and g_s the 3x3 kernel. Taken
//! over all tiles and channels, the sum is 16 GEMMs, one per position ξ of the 4x4 transformed
//! tile: M_ξ `(out_ch, tiles)` = U_ξ `(out_ch, sum_ch)` @ V_ξ `(sum_ch, tiles)`. That is 16
//! multiply-adds per input channel for 4 output pixels against 36 for the direct sum (2.25x
//! fewer). The transforms are additions and exact halvings, so the result differs from the
//! direct sum by rounding of the same order (VGG16's logits: 1.6e-6 from PyTorch's either way).
//!
//! The computation is the same [`Corr`] as the direct kernel's. d_x is a correlation of d_y
//! with the kernel turned by 180° and its channel axes swapped, so it runs the same code on
//! the turned kernels' transform ([`transformed_for_backward_x`]), kept with the weights beside
//! the forward's. (Reading the forward's U transposed at the mirrored positions gives the same
//! products without a second transform, but the GEMM's transposed operand made d_x of VGG16's
//! 512→512 layers 1.5–2x slower than their forward pass.)
//!
//! Tiles are cut into chunks of whole tile rows of one plane so that a chunk's V and M stay in
//! cache; each chunk runs input transform → 16 GEMMs → output transform. Every chunk is the same
//! computation whatever the thread count (threads split channels, GEMMs or batch items, never a
//! sum), so results are bit-identical on any number of threads.

use crate::engine::simd;
use crate::engine::tensor::{Prepared, Tensor};
use std::borrow::Cow;
use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::direct::Corr;
use super::spare::Spare;
use super::{
    ForwardOperands, FusedActivation, Geom, ItemChunks, batch_plan, bias_act_row, for_item_chunks,
};
use crate::engine::gemm::{MatRef, Parallelism, sgemm};

/// Positions of a transformed 4x4 tile.
const XI: usize = 16;

/// Floats of V and M per chunk of tile rows: 4 MiB, which keeps a chunk's operands in the
/// last-level cache between its three steps (measured on VGG16's layers, BENCHMARKS.md).
const CHUNK_FLOATS: usize = 1 << 20;

/// Whether the geometry is one Winograd F(2x2, 3x3) computes: 3x3, stride 1, undilated, not
/// depthwise.
pub(super) fn applies(g: &Geom) -> bool {
    g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1 && !g.is_depthwise()
}

/// Whether the forward pass should take [`forward`]: where it applies, with channels enough for
/// the 16 GEMMs' inner dimension and tiles enough to pay for the transforms. Measured per layer
/// at batch 1 on 2 threads (BENCHMARKS.md "Session 6"), Winograd against the previous path:
/// VGG16 64→64 @224² 9.9 against 21.1 ms, 512→512 @14² 2.9 against 3.7 ms; ResNet50 128→128
/// @28² 0.59 against 0.72 ms, 256→256 @14² 0.74 against 0.86 ms; but ResNet50 64→64 @56² 0.76
/// against 0.73 ms and SqueezeNet's 64→256 @13² 0.35 against 0.23 ms. Since the weights'
/// transform is kept with the weight tensor ([`transformed`]; session 12), 512→512 @7² takes
/// Winograd too: 1.4–2.4 against 2.4–3.4 ms at AVX2, 2.3–2.6 against 2.5–2.9 ms at AVX-512
/// (single-convolution files through `convscope bench`, alternated).
pub(super) fn prefers_forward(g: &Geom) -> bool {
    let channels = g.cg.min(g.og);
    let tiles = g.oh.div_ceil(2) * g.ow.div_ceil(2);
    let wide = channels >= 256 && tiles >= 16;
    applies(g) && (wide || (channels >= 128 && tiles >= 49) || (channels >= 64 && tiles >= 784))
}

/// The turned kernels' U `(groups·cg, 16·og)` ([`turned_weights`] through
/// [`transform_weights`]), kept with the weight tensor `w` `(c_out, cg, 3, 3)` until it changes.
pub(super) fn transformed_for_backward_x<'w>(g: &Geom, w: &'w Tensor) -> Cow<'w, [f32]> {
    w.prepared(Prepared::Winograd2x2Turned, |w| {
        transform_weights(&turned_weights(g, w), g.groups * g.cg, g.og)
    })
}

/// The kernels of `w` `(groups·og, cg, 3, 3)` turned by 180° with their channel axes swapped
/// per group: `(groups·cg, og, 3, 3)`, w'[grp, ci, co] = rot180(w[grp, co, ci]). d_x is the
/// forward correlation of d_y with these.
pub(super) fn turned_weights(g: &Geom, w: &[f32]) -> Vec<f32> {
    let (og, cg) = (g.og, g.cg);
    let mut turned = vec![0.0f32; w.len()];
    if og * cg == 0 {
        return turned;
    }
    // one output row of w' per (group, input channel); rows are disjoint, so in parallel
    turned
        .par_chunks_mut(og * 9)
        .enumerate()
        .for_each(|(row, dst)| {
            let (grp, ci) = (row / cg, row % cg);
            for (co, k) in dst.chunks_exact_mut(9).enumerate() {
                let src = &w[((grp * og + co) * cg + ci) * 9..][..9];
                for (t, v) in k.iter_mut().enumerate() {
                    *v = src[8 - t];
                }
            }
        });
    turned
}

/// Whether d_x should take [`backward_x`]: where the forward pass would and the mirrored
/// padding is not negative ([`super::direct::backward_x_applies`]). With the transform kept
/// (session 12) it also wins on small planes, where GEMM + col2im had been as fast: ResNet50's
/// 256→256 @14² forward + d_x 4.1–4.8 against 6.1–7.7 ms at AVX2 (4.1–5.0 against 4.8–5.2 ms
/// at AVX-512), VGG16's 512→512 @14² 17.5–20.5 against 16.2–21.7 ms.
pub(super) fn prefers_backward_x(g: &Geom) -> bool {
    prefers_forward(g) && super::direct::backward_x_applies(g)
}

/// U of the weight tensor `w` `(c_out, cg, 3, 3)` ([`transform_weights`]), kept with the tensor
/// until it changes: an inference pass transforms each weight once, and d_x reads the forward
/// pass's U.
pub(super) fn transformed(w: &Tensor) -> Cow<'_, [f32]> {
    let (c_out, cg) = match *w.shape() {
        [c_out, cg, ..] => (c_out, cg),
        _ => (0, 0),
    };
    w.prepared(Prepared::Winograd2x2, |w| transform_weights(w, c_out, cg))
}

/// y `(n, c_out, oh, ow)` = act(conv(x, w) + b) for the geometries of [`applies`], with `u` the
/// transform of `ops.w` ([`transformed`]).
pub(super) fn forward(g: &Geom, ops: ForwardOperands<'_>, u: &[f32], y: &mut [f32]) {
    let ForwardOperands { x, b, act, .. } = ops;
    correlate(g, u, false, x, y, Epilogue { bias: b, act });
}

/// d_x `(n, c_in, h, w)` from d_y `(n, c_out, oh, ow)` for the geometries of
/// [`prefers_backward_x`], with `u` the turned kernels' transform
/// ([`transformed_for_backward_x`]).
pub(super) fn backward_x(g: &Geom, u: &[f32], d_y: &[f32], d_x: &mut [f32]) {
    let plain = Epilogue {
        bias: None,
        act: None,
    };
    correlate(g, u, true, d_y, d_x, plain);
}

/// The forward correlation (x → y) with U the weights' transform or, `turned`, d_x's (d_y →
/// d_x) with U the turned kernels' transform.
fn correlate(
    g: &Geom,
    u: &[f32],
    turned: bool,
    inp: &[f32],
    out: &mut [f32],
    epilogue: Epilogue<'_>,
) {
    debug_assert_eq!(u.len(), g.c_out * XI * g.cg);
    let kernels = Kernels { u, g, turned };
    let (corr, io) = if turned {
        let io = ItemIo {
            in_item: g.y_item(),
            in_group: g.og * g.p(),
            out_item: g.x_item(),
        };
        (Corr::backward_x(g), io)
    } else {
        let io = ItemIo {
            in_item: g.x_item(),
            in_group: g.cg * g.h * g.w,
            out_item: g.y_item(),
        };
        (Corr::forward(g), io)
    };
    run_items(g, &corr, &kernels, io, inp, out, epilogue);
}

/// Chunks of tile rows per plane of the forward pass (tests check that chunking is exercised).
#[cfg(test)]
pub(super) fn chunk_count(g: &Geom) -> usize {
    Grid::of(&Corr::forward(g)).chunks().count()
}

/// U `(c_out, 16·cg)`: U[co][ξ·cg + ci] = (G g Gᵀ)[ξ / 4][ξ % 4] for the 3x3 kernel
/// g = w[co, ci] of w `(c_out, cg, 3, 3)`, with G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
/// An output channel's 16 positions lie in one row so that channels transform in parallel,
/// each writing its own slice; U_ξ of a group is then a strided `(og, cg)` matrix.
pub(super) fn transform_weights(w: &[f32], c_out: usize, cg: usize) -> Vec<f32> {
    let row = XI * cg;
    let mut u = vec![0.0f32; c_out * row];
    if row == 0 {
        return u; // no input channels: nothing to transform (and no chunks of length 0)
    }
    u.par_chunks_mut(row)
        .zip(w.par_chunks(9 * cg))
        .for_each(|(u_co, w_co)| transform_weight_row(w_co, cg, u_co));
    u
}

simd::kernel! {
    /// One output channel's kernels `w_co` `(cg, 3, 3)` → `u_co` `(16, cg)`, 16 kernels at a time
    /// in fixed-size arrays (one vector register per tap).
    fn transform_weight_row(w_co: &[f32], cg: usize, u_co: &mut [f32]) {
        const L: usize = 16;
        for c0 in (0..cg).step_by(L) {
            let nb = L.min(cg - c0);
            let mut g = [[0.0f32; L]; 9]; // (tap, kernel)
            for (i, k) in w_co[c0 * 9..][..nb * 9].chunks_exact(9).enumerate() {
                for t in 0..9 {
                    g[t][i] = k[t];
                }
            }
            // G down the kernel's columns: r[a][j] = Σ_i G[a][i] g[i][j]
            let mut r = [[[0.0f32; L]; 3]; 4];
            for j in 0..3 {
                for l in 0..L {
                    let (g0, g1, g2) = (g[j][l], g[3 + j][l], g[6 + j][l]);
                    r[0][j][l] = g0;
                    r[1][j][l] = 0.5 * (g0 + g1 + g2);
                    r[2][j][l] = 0.5 * (g0 - g1 + g2);
                    r[3][j][l] = g2;
                }
            }
            // and along its rows: U[a][b] = Σ_j r[a][j] G[b][j]
            for (a, [r0, r1, r2]) in r.iter().enumerate() {
                let mut u = [[0.0f32; L]; 4];
                for l in 0..L {
                    u[0][l] = r0[l];
                    u[1][l] = 0.5 * (r0[l] + r1[l] + r2[l]);
                    u[2][l] = 0.5 * (r0[l] - r1[l] + r2[l]);
                    u[3][l] = r2[l];
                }
                for (b, ub) in u.iter().enumerate() {
                    u_co[(4 * a + b) * cg + c0..][..nb].copy_from_slice(&ub[..nb]);
                }
            }
        }
    }
}

/// The transformed kernels as the 16 GEMMs' left operands.
struct Kernels<'a> {
    /// `(c_out, 16·cg)` from [`transform_weights`], or for d_x `(groups·cg, 16·og)` from
    /// [`transformed_for_backward_x`]
    u: &'a [f32],
    g: &'a Geom,
    /// d_x: `u` holds the kernels turned by 180° with the channel axes swapped
    turned: bool,
}

impl Kernels<'_> {
    /// U_ξ of group `grp`, row-major: `(og, cg)` for the forward pass, `(cg, og)` for d_x.
    fn at(&self, grp: usize, xi: usize) -> MatRef<'_> {
        let (rows, cols) = if self.turned {
            (self.g.cg, self.g.og)
        } else {
            (self.g.og, self.g.cg)
        };
        let row = XI * cols;
        MatRef {
            data: &self.u[grp * rows * row + xi * cols..],
            rows,
            cols,
            rs: row,
            cs: 1,
        }
    }
}

/// Sizes of one item of the input and output, and of one group of the input.
#[derive(Clone, Copy)]
struct ItemIo {
    in_item: usize,
    in_group: usize,
    out_item: usize,
}

/// Bias `(c_out)` and activation added to the output (none for d_x).
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    act: Option<FusedActivation>,
}

/// The tile grid of one output plane and its chunks.
#[derive(Clone, Copy, Debug)]
struct Grid {
    /// tile rows: ⌈out_h / 2⌉
    th: usize,
    /// tiles per row: ⌈out_w / 2⌉
    tw: usize,
    /// tile rows per chunk
    chunk_rows: usize,
}

impl Grid {
    fn of(corr: &Corr) -> Self {
        let (th, tw) = (corr.out_h.div_ceil(2), corr.out_w.div_ceil(2));
        let per_row = XI * (corr.sum_ch + corr.out_ch) * tw;
        Self {
            th,
            tw,
            chunk_rows: (CHUNK_FLOATS / per_row.max(1)).clamp(1, th.max(1)),
        }
    }

    fn chunks(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.th)
            .step_by(self.chunk_rows)
            .map(|r0| r0..(r0 + self.chunk_rows).min(self.th))
    }

    /// Scratch floats for V and M of the largest chunk.
    fn scratch(&self, corr: &Corr) -> (usize, usize) {
        let pc = self.chunk_rows * self.tw;
        (XI * corr.sum_ch * pc, XI * corr.out_ch * pc)
    }
}

/// Every item and group: batches of at least two items split items across threads (each chunk
/// sequential); a single item splits the steps of each chunk across threads.
fn run_items(
    g: &Geom,
    corr: &Corr,
    kernels: &Kernels<'_>,
    io: ItemIo,
    inp: &[f32],
    out: &mut [f32],
    epilogue: Epilogue<'_>,
) {
    let grid = Grid::of(corr);
    let (v_len, m_len) = grid.scratch(corr);
    let out_group = corr.out_ch * corr.out_h * corr.out_w;
    let item = |in_it: &[f32], out_it: &mut [f32], scratch: &mut [f32], par: bool| {
        let (v, m) = scratch.split_at_mut(v_len);
        for grp in 0..g.groups {
            let in_g = &in_it[grp * io.in_group..][..io.in_group]; // (sum_ch, in_h, in_w)
            let out_g = &mut out_it[grp * out_group..][..out_group]; // (out_ch, out_h, out_w)
            let bias = epilogue
                .bias
                .map(|b| &b[grp * corr.out_ch..][..corr.out_ch]);
            for rows in grid.chunks() {
                let pc = rows.len() * grid.tw;
                let v = &mut v[..XI * corr.sum_ch * pc];
                let m = &mut m[..XI * corr.out_ch * pc];
                transform_input(corr, &grid, in_g, rows.clone(), v, par);
                multiply(|xi| kernels.at(grp, xi), v, pc, m, par);
                let tail = Epilogue { bias, ..epilogue };
                transform_output(corr, &grid, m, rows, out_g, tail, par);
            }
        }
    };
    let (chunks, _) = batch_plan(g.n);
    if chunks > 1 {
        let cut = ItemChunks {
            chunks,
            in_item: io.in_item,
            out_item: io.out_item,
            scratch_len: v_len + m_len,
        };
        for_item_chunks(cut, inp, out, |in_it, out_it, scratch| {
            item(in_it, out_it, scratch, false)
        });
        return;
    }
    // V and M are written in full before they are read: a spare buffer's old contents never show
    let mut scratch = Spare::take(&SPARE_SCRATCH, v_len + m_len);
    for (ni, out_it) in out.chunks_exact_mut(io.out_item).enumerate() {
        item(
            &inp[ni * io.in_item..][..io.in_item],
            out_it,
            &mut scratch.buf,
            true,
        );
    }
}

thread_local! {
    /// The chunk scratch of this thread's last call, kept for the next: a fresh multi-MiB
    /// buffer per call is memory the kernel must map and zero again (page faults), which made
    /// ResNet50's 3x3 layers slower with Winograd than without in a whole forward pass, though
    /// faster in isolation (BENCHMARKS.md "Session 6"). It holds the largest size used so far
    /// on its thread (VGG16: 4 MiB). The transformed weights stay with their tensor instead
    /// ([`transformed`]).
    static SPARE_SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// v `(sum_ch, 16, pc)`, pc = rows·tw: Bᵀ d B of the 4x4 patch under every tile of tile rows
/// `rows`, in every input plane of `inp` `(sum_ch, in_h, in_w)`; parallel over planes.
fn transform_input(
    corr: &Corr,
    grid: &Grid,
    inp: &[f32],
    rows: Range<usize>,
    v: &mut [f32],
    par: bool,
) {
    let tw = grid.tw;
    let pc = rows.len() * tw;
    let plane_len = corr.in_h * corr.in_w;
    // per job: a padded input row, four of them split into even and odd columns (4, 2, tw + 1),
    // and their transform down the columns (same shape)
    let init = || {
        (
            vec![0.0f32; 2 * tw + 2],
            vec![0.0f32; 8 * (tw + 1)],
            vec![0.0f32; 8 * (tw + 1)],
        )
    };
    let one = |(padded, split, t): &mut (Vec<f32>, Vec<f32>, Vec<f32>),
               (s, v_s): (usize, &mut [f32])| {
        let plane = &inp[s * plane_len..][..plane_len];
        for (i, ty) in rows.clone().enumerate() {
            for r in 0..4 {
                padded_row(corr, plane, 2 * ty + r, padded);
                let (even, odd) = split[2 * r * (tw + 1)..][..2 * (tw + 1)].split_at_mut(tw + 1);
                for (j, pair) in padded.chunks_exact(2).enumerate() {
                    even[j] = pair[0];
                    odd[j] = pair[1];
                }
            }
            input_tile_row(split, t, tw, &mut v_s[i * tw..], pc);
        }
    };
    each_chunk(v, XI * pc, par, init, one);
}

/// `f(scratch, (i, chunk))` for the `len`-float chunks of `data`, in parallel when `par`;
/// `init` makes the scratch of each rayon job (one for all when sequential).
fn each_chunk<S>(
    data: &mut [f32],
    len: usize,
    par: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, (usize, &mut [f32])) + Sync + Send,
) {
    if par {
        data.par_chunks_mut(len).enumerate().for_each_init(init, f);
    } else {
        let mut scratch = init();
        data.chunks_mut(len)
            .enumerate()
            .for_each(|chunk| f(&mut scratch, chunk));
    }
}

/// Row `py` of the zero-padded plane (the input placed at (top, left)), columns 0..len.
fn padded_row(corr: &Corr, plane: &[f32], py: usize, row: &mut [f32]) {
    row.fill(0.0);
    let Some(iy) = py.checked_sub(corr.top).filter(|&iy| iy < corr.in_h) else {
        return;
    };
    let src = &plane[iy * corr.in_w..][..corr.in_w];
    // input column ix lands at left + ix; columns past the row feed no tile
    let first = corr.left.min(row.len());
    let cols = corr.in_w.min(row.len() - first);
    row[first..first + cols].copy_from_slice(&src[..cols]);
}

simd::kernel! {
    /// The 16 transformed rows of one tile row from its padded input rows split into even and odd
    /// columns, `split` (4, 2, tw + 1), through `t` (same shape): for ξ = 4a + b, `v[ξ·pc + tx]`
    /// for tx < tw.
    fn input_tile_row(split: &[f32], t: &mut [f32], tw: usize, v: &mut [f32], pc: usize) {
        let n = tw + 1;
        let row = |r: usize, odd: usize| &split[(2 * r + odd) * n..][..n];
        // Bᵀ down the columns, for even and odd columns alike: t = Bᵀ d, t[(2a + odd) n + j]
        for (k, dst) in t.chunks_exact_mut(n).enumerate() {
            let (a, odd) = (k / 2, k % 2);
            let d = |r: usize| row(r, odd);
            match a {
                0 => difference(d(0), d(2), dst),
                1 => sum(d(1), d(2), dst),
                2 => difference(d(2), d(1), dst),
                _ => difference(d(1), d(3), dst),
            }
        }
        // and B along the rows: columns 2tx .. 2tx + 4 of the patch are even[tx], odd[tx],
        // even[tx + 1], odd[tx + 1]
        for a in 0..4 {
            let e = &t[2 * a * n..][..n];
            let o = &t[(2 * a + 1) * n..][..n];
            let (v0, rest) = v[4 * a * pc..].split_at_mut(pc);
            let (v1, rest) = rest.split_at_mut(pc);
            let (v2, rest) = rest.split_at_mut(pc);
            let (v0, v1, v2, v3) = (&mut v0[..tw], &mut v1[..tw], &mut v2[..tw], &mut rest[..tw]);
            for tx in 0..tw {
                v0[tx] = e[tx] - e[tx + 1];
                v1[tx] = o[tx] + e[tx + 1];
                v2[tx] = e[tx + 1] - o[tx];
                v3[tx] = o[tx] - o[tx + 1];
            }
        }
    }
}

/// dst = a − b.
#[inline(always)]
fn difference(a: &[f32], b: &[f32], dst: &mut [f32]) {
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = x - y;
    }
}

/// dst = a + b.
#[inline(always)]
fn sum(a: &[f32], b: &[f32], dst: &mut [f32]) {
    for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
        *d = x + y;
    }
}

/// m `(16, out_ch, pc)`: M_ξ = U_ξ @ V_ξ for the 16 positions (U_ξ = `kernels(ξ)`), parallel
/// over them.
fn multiply<'u>(
    kernels: impl Fn(usize) -> MatRef<'u> + Sync + Send,
    v: &[f32],
    pc: usize,
    m: &mut [f32],
    par: bool,
) {
    let sum_ch = v.len() / (XI * pc);
    let out_ch = m.len() / (XI * pc);
    let one = |_: &mut (), (xi, m_xi): (usize, &mut [f32])| {
        // V_ξ: (sum_ch, pc) inside v (sum_ch, 16, pc)
        let v_xi = MatRef {
            data: &v[xi * pc..],
            rows: sum_ch,
            cols: pc,
            rs: XI * pc,
            cs: 1,
        };
        sgemm(1.0, kernels(xi), v_xi, 0.0, m_xi, Parallelism::Sequential);
    };
    each_chunk(m, out_ch * pc, par, || (), one);
}

/// Aᵀ M A of every tile of tile rows `rows`, with bias and activation, into the output planes
/// `out` `(out_ch, out_h, out_w)`; parallel over planes. A tile's second row or column past
/// the plane's edge (odd sizes) is dropped.
fn transform_output(
    corr: &Corr,
    grid: &Grid,
    m: &[f32],
    rows: Range<usize>,
    out: &mut [f32],
    epilogue: Epilogue<'_>,
    par: bool,
) {
    let tw = grid.tw;
    let pc = rows.len() * tw;
    let (oh, ow) = (corr.out_h, corr.out_w);
    // per job: two output rows of 2·tw
    let init = || vec![0.0f32; 4 * tw];
    let one = |pair: &mut Vec<f32>, (c, plane): (usize, &mut [f32])| {
        let bias = epilogue.bias.map_or(0.0, |b| b[c]);
        for (i, ty) in rows.clone().enumerate() {
            let at = c * pc + i * tw;
            // positions ξ and ξ + 1 of a tile lie a whole (out_ch, pc) product apart
            output_tile_row(m, at, corr.out_ch * pc, tw, pair);
            for r in 0..2 {
                let y = 2 * ty + r;
                if y < oh {
                    let dst = &mut plane[y * ow..][..ow];
                    dst.copy_from_slice(&pair[r * 2 * tw..][..ow]);
                    if epilogue.bias.is_some() || epilogue.act.is_some() {
                        bias_act_row(dst, bias, epilogue.act);
                    }
                }
            }
        }
    };
    each_chunk(out, oh * ow, par, init, one);
}

simd::kernel! {
    /// Two output rows of one tile row, `pair` (2, 2·tw), from the 16 products at `m[ξ·stride +
    /// at + tx]`: y = Aᵀ M A with Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]. Sixteen tiles at a time in
    /// fixed-size arrays, which LLVM keeps in vector registers (the last block zero-filled).
    fn output_tile_row(m: &[f32], at: usize, stride: usize, tw: usize, pair: &mut [f32]) {
        const L: usize = 16;
        let (top, bottom) = pair.split_at_mut(2 * tw);
        for tx0 in (0..tw).step_by(L) {
            let n = L.min(tw - tx0);
            let load = |xi: usize| {
                let mut v = [0.0f32; L];
                v[..n].copy_from_slice(&m[xi * stride + at + tx0..][..n]);
                v
            };
            // Aᵀ down the columns: s0 = m0 + m1 + m2, s1 = m1 − m2 − m3 (rows of the 4x4 tile)
            let mut s0 = [[0.0f32; L]; 4];
            let mut s1 = [[0.0f32; L]; 4];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (load(j), load(4 + j), load(8 + j), load(12 + j));
                for l in 0..L {
                    s0[j][l] = m0[l] + m1[l] + m2[l];
                    s1[j][l] = m1[l] - m2[l] - m3[l];
                }
            }
            // and A along the rows, interleaved into the two output rows
            for (s, row) in [(&s0, &mut *top), (&s1, &mut *bottom)] {
                let mut y = [0.0f32; 2 * L];
                for l in 0..L {
                    y[2 * l] = s[0][l] + s[1][l] + s[2][l];
                    y[2 * l + 1] = s[1][l] - s[2][l] - s[3][l];
                }
                row[2 * tx0..][..2 * n].copy_from_slice(&y[..2 * n]);
            }
        }
    }
}
