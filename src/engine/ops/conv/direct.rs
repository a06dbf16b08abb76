//! Direct stride-1 convolution without a column matrix, for the forward pass and for d_x.
//!
//! Both are one computation, a stride-1 correlation of zero-padded input planes with a
//! kernel, summing over a set of channels:
//! out[c, y, x] = Σ_{s, ki, kj} K[c, s, ki, kj] · in_padded[s, y + ki·dh, x + kj·dw]
//! - forward: in = x, s = the group's input channels, c = its output channels, K = W;
//! - d_x (stride 1): in = d_y, s = output channels, c = input channels, K = W turned by 180°
//!   with its channel axes swapped, the padding mirrored ((kh−1)·dh − top, …).
//!
//! The inner kernel keeps DIRECT_CB output channels × DIRECT_TW pixels of sums in registers
//! over every (s, ki, kj), so one load of the input feeds DIRECT_CB fused multiply-adds.

use crate::engine::simd::vector::{F32Vec, Portable};
use crate::engine::simd::{self, Level};
use std::ops::Range;

use rayon::prelude::*;

use super::{
    ForwardOperands, FusedActivation, Geom, ItemChunks, batch_plan, bias_act_row, for_item_chunks,
};

/// Output channels computed together by [`correlate_rows`] (they share every input load).
const DIRECT_CB: usize = 4;
/// Output pixels per padded tile of [`correlate_rows`] (each level computes it in register
/// tiles of 32, 16 or 8 pixels).
const DIRECT_TW: usize = 32;

/// One group's stride-1 correlation: `sum_ch` input planes `(in_h, in_w)` placed at
/// (top, left) in zero-padded planes, `out_ch` output planes `(out_h, out_w)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Corr {
    pub(super) sum_ch: usize,
    pub(super) out_ch: usize,
    pub(super) in_h: usize,
    pub(super) in_w: usize,
    pub(super) out_h: usize,
    pub(super) out_w: usize,
    kh: usize,
    kw: usize,
    dh: usize,
    dw: usize,
    pub(super) top: usize,
    pub(super) left: usize,
}

impl Corr {
    /// The forward convolution of one group (stride 1).
    pub(super) fn forward(g: &Geom) -> Self {
        Self {
            sum_ch: g.cg,
            out_ch: g.og,
            in_h: g.h,
            in_w: g.w,
            out_h: g.oh,
            out_w: g.ow,
            kh: g.kh,
            kw: g.kw,
            dh: g.dh,
            dw: g.dw,
            top: g.top,
            left: g.left,
        }
    }

    /// d_x of one group (stride 1, [`backward_x_applies`]).
    pub(super) fn backward_x(g: &Geom) -> Self {
        Self {
            sum_ch: g.og,
            out_ch: g.cg,
            in_h: g.oh,
            in_w: g.ow,
            out_h: g.h,
            out_w: g.w,
            kh: g.kh,
            kw: g.kw,
            dh: g.dh,
            dw: g.dw,
            top: (g.kh - 1) * g.dh - g.top,
            left: (g.kw - 1) * g.dw - g.left,
        }
    }

    /// Rows of a padded input plane: every row `y + ki·dh` for y < out_h.
    pub(super) fn pad_h(&self) -> usize {
        self.out_h + (self.kh - 1) * self.dh
    }

    /// Columns of a padded input plane: every column `x + kj·dw` for x < out_w rounded up to
    /// whole tiles.
    pub(super) fn pad_w(&self) -> usize {
        self.out_w.div_ceil(DIRECT_TW) * DIRECT_TW + (self.kw - 1) * self.dw
    }

    pub(super) fn padded_len(&self) -> usize {
        self.sum_ch * self.pad_h() * self.pad_w()
    }

    /// padded `(sum_ch, pad_h, pad_w)`: the planes `inp` `(sum_ch, in_h, in_w)` at (top,
    /// left), zeros around; input rows and columns past the padded plane (padding on the far
    /// side wider than the kernel) feed no output and are left out.
    pub(super) fn pad_input(&self, inp: &[f32], padded: &mut [f32]) {
        padded.fill(0.0);
        if self.in_h == 0 || self.in_w == 0 {
            return; // an empty input plane inside its padding: all zeros
        }
        let (ph, pw) = (self.pad_h(), self.pad_w());
        let rows = self.in_h.min(ph.saturating_sub(self.top));
        let cols = self.in_w.min(pw.saturating_sub(self.left));
        for (plane, dst) in inp
            .chunks_exact(self.in_h * self.in_w)
            .zip(padded.chunks_exact_mut(ph * pw))
        {
            for (y, row) in plane.chunks_exact(self.in_w).take(rows).enumerate() {
                dst[(self.top + y) * pw + self.left..][..cols].copy_from_slice(&row[..cols]);
            }
        }
    }
}

/// Whether [`backward_x`] applies: stride 1 and padding no wider than the dilated kernel, so
/// that the mirrored padding is not negative.
pub(super) fn backward_x_applies(g: &Geom) -> bool {
    g.sh == 1 && g.sw == 1 && g.top <= (g.kh - 1) * g.dh && g.left <= (g.kw - 1) * g.dw
}

/// Whether d_x should take [`backward_x`]: where it applies, for kernels larger than 3x3.
/// Measured on the smile CNN (batch 32, one thread, CPU time): 5x5 16→16 @64² 10.0 ms against
/// 17.7 ms for the blocked GEMM + col2im path, batch 1 0.30 against 0.55 ms; but 3x3 16→32 and
/// 32→32 @32² 2.35 / 4.36 against 2.17 / 4.39 ms (a 3x3 kernel gives the GEMM path a long
/// enough inner dimension; the same at AVX2, BENCHMARKS.md "Session 10").
pub(super) fn prefers_backward_x(g: &Geom) -> bool {
    backward_x_applies(g) && g.kh * g.kw > 9
}

/// The most channels a 3x3 direct forward correlation sums over where it runs instead of
/// im2col + GEMM. Measured at batch 32, 2 threads (`benches/conv.rs`, BENCHMARKS.md "Session
/// 10"): the smile CNN's 32→32 @32² 9.7–10.8 → 5.7–8.5 ms at AVX2 and 5.7–5.9 → 4.7–4.8 ms
/// at AVX-512; its 16→32, ResNet50's 64→64 @56² and VGG16's 3→64 @224² even; 512→512 @7²
/// 2.3–3.1 → 2.8–17 ms (worse). Winograd is tried first and has since taken ResNet50's
/// 64→64 @56² (`winograd::prefers_forward`, session 12).
const DIRECT_3X3_MAX_SUM: usize = 64;

/// Whether the forward pass should take [`forward`]: stride 1, not depthwise, a kernel larger
/// than 3x3 (the same trade as [`prefers_backward_x`]: smile conv2, 16→16 5x5 @64², batch 32,
/// 2 threads, 6.6–7.0 → 4.9–5.2 ms against im2col + GEMM, BENCHMARKS.md "Session 4"), or a 3x3
/// kernel over at most [`DIRECT_3X3_MAX_SUM`] input channels.
pub(super) fn prefers_forward(g: &Geom) -> bool {
    let taps = g.kh * g.kw;
    g.sh == 1
        && g.sw == 1
        && !g.is_depthwise()
        && (taps > 9 || (taps == 9 && g.cg <= DIRECT_3X3_MAX_SUM))
}

/// Kernel blocks of DIRECT_CB output channels, tap-major: `(sum_ch, kh·kw, DIRECT_CB)`, zero
/// for channels past the block's count; `tap(c, s, t)` reads K[c, s, t] of one group.
fn kernel_blocks(corr: &Corr, tap: impl Fn(usize, usize, usize) -> f32) -> Vec<KernelBlock> {
    let ks = corr.kh * corr.kw;
    (0..corr.out_ch)
        .step_by(DIRECT_CB)
        .map(|c0| {
            let cb = DIRECT_CB.min(corr.out_ch - c0);
            let mut kb = vec![0.0f32; corr.sum_ch * ks * DIRECT_CB];
            for s in 0..corr.sum_ch {
                for t in 0..ks {
                    for c in 0..cb {
                        kb[(s * ks + t) * DIRECT_CB + c] = tap(c0 + c, s, t);
                    }
                }
            }
            KernelBlock { c0, cb, kb }
        })
        .collect()
}

/// DIRECT_CB output channels of one group and their kernel.
struct KernelBlock {
    /// first output channel within the group
    c0: usize,
    /// channels in the block (DIRECT_CB but for the last block)
    cb: usize,
    /// `(sum_ch, kh·kw, DIRECT_CB)`
    kb: Vec<f32>,
}

/// One job of a single item: a block's output rows, one `(rows, out_w)` slice per channel.
struct RowsJob<'a> {
    block: &'a KernelBlock,
    rows: Range<usize>,
    dsts: Vec<&'a mut [f32]>,
}

/// The rows written for one block of output channels: copied out, or with bias and activation.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    Copy,
    BiasAct {
        bias: Option<&'a [f32]>,
        act: Option<FusedActivation>,
    },
}

/// y `(n, c_out, oh, ow)` = act(conv(x, w) + b) for stride 1 ([`prefers_forward`]): per item
/// and group, x padded once, then DIRECT_CB output channels at a time. Items are split across
/// threads; a single item splits its channel blocks instead.
pub(super) fn forward(g: &Geom, ops: ForwardOperands<'_>, y: &mut [f32]) {
    let ForwardOperands { x, w, b, act } = ops;
    let corr = Corr::forward(g);
    let ks = g.kh * g.kw;
    let blocks: Vec<Vec<KernelBlock>> = (0..g.groups)
        .map(|grp| kernel_blocks(&corr, |c, s, t| w[((grp * g.og + c) * g.cg + s) * ks + t]))
        .collect();
    let epilogue = Epilogue::BiasAct { bias: b, act };
    run_items(
        g,
        &corr,
        x,
        g.x_item(),
        g.cg * g.h * g.w,
        y,
        g.y_item(),
        &blocks,
        |grp, c0| grp * g.og + c0,
        epilogue,
    );
}

/// d_x `(n, c_in, h, w)` for stride 1 ([`backward_x_applies`]) from d_y `(n, c_out, oh, ow)`.
pub(super) fn backward_x(g: &Geom, w: &[f32], d_y: &[f32], d_x: &mut [f32]) {
    let corr = Corr::backward_x(g);
    let ks = g.kh * g.kw;
    // K[ci, co, t] = W[co, ci, ks−1−t]: (ki, kj) → (kh−1−ki, kw−1−kj) reverses the flat kernel
    let blocks: Vec<Vec<KernelBlock>> = (0..g.groups)
        .map(|grp| {
            kernel_blocks(&corr, |c, s, t| {
                w[((grp * g.og + s) * g.cg + c) * ks + (ks - 1 - t)]
            })
        })
        .collect();
    run_items(
        g,
        &corr,
        d_y,
        g.y_item(),
        g.og * g.p(),
        d_x,
        g.x_item(),
        &blocks,
        |grp, c0| grp * g.cg + c0,
        Epilogue::Copy,
    );
}

/// Runs the correlation of every item and group: `inp` items of `in_item` floats (groups of
/// `in_group` floats), `out` items of `out_item` floats; `channel(grp, c0)` is the item-level
/// output channel of a block's first channel.
#[allow(clippy::too_many_arguments)]
fn run_items(
    g: &Geom,
    corr: &Corr,
    inp: &[f32],
    in_item: usize,
    in_group: usize,
    out: &mut [f32],
    out_item: usize,
    blocks: &[Vec<KernelBlock>],
    channel: impl Fn(usize, usize) -> usize + Sync,
    epilogue: Epilogue<'_>,
) {
    let (oh, ow) = (corr.out_h, corr.out_w);
    let plane = oh * ow;
    // A single item on several threads also splits its rows when there are fewer channel
    // blocks than about two per thread (the smile CNN's first layer has one block for d_x).
    let threads = rayon::current_num_threads();
    let item = |in_it: &[f32], out_it: &mut [f32], padded: &mut [f32], par: bool| {
        // each block's output planes, in channel order: (cb, out_h, out_w)
        let mut outs: Vec<&mut [f32]> = Vec::new();
        let mut rest = out_it;
        for grp_blocks in blocks {
            for blk in grp_blocks {
                let (head, tail) = rest.split_at_mut(blk.cb * plane);
                outs.push(head);
                rest = tail;
            }
        }
        let mut outs = outs.into_iter();
        for (grp, grp_blocks) in blocks.iter().enumerate() {
            corr.pad_input(&in_it[grp * in_group..][..in_group], padded);
            let padded = &*padded;
            let parts = if par {
                (2 * threads)
                    .div_ceil(grp_blocks.len().max(1))
                    .clamp(1, oh.max(1))
            } else {
                1
            };
            let per = oh.div_ceil(parts).max(1);
            // jobs: (block, its rows, one (rows, out_w) slice per channel of the block)
            let mut jobs = Vec::new();
            for (out_b, block) in outs.by_ref().take(grp_blocks.len()).zip(grp_blocks) {
                let mut chans: Vec<_> = out_b
                    .chunks_mut(plane)
                    .map(|p| p.chunks_mut(per * ow))
                    .collect();
                for r0 in (0..oh).step_by(per) {
                    let dsts: Vec<&mut [f32]> = chans.iter_mut().flat_map(|c| c.next()).collect();
                    let rows = r0..(r0 + per).min(oh);
                    jobs.push(RowsJob { block, rows, dsts });
                }
            }
            let run = |job: RowsJob<'_>| {
                let c_first = channel(grp, job.block.c0);
                correlate_block(corr, job, padded, c_first, epilogue)
            };
            if par {
                jobs.into_par_iter().for_each(run);
            } else {
                jobs.into_iter().for_each(run);
            }
        }
    };
    let (chunks, _) = batch_plan(g.n);
    if chunks > 1 {
        let cut = ItemChunks {
            chunks,
            in_item,
            out_item,
            scratch_len: corr.padded_len(),
        };
        for_item_chunks(cut, inp, out, |in_it, out_it, padded| {
            item(in_it, out_it, padded, false)
        });
        return;
    }
    let mut padded = vec![0.0f32; corr.padded_len()];
    for (ni, out_it) in out.chunks_exact_mut(out_item).enumerate() {
        item(&inp[ni * in_item..][..in_item], out_it, &mut padded, true);
    }
}

/// One job's output rows of one block of output channels, from the padded input and the
/// block's kernel; `c_first` is the block's first channel within the item (for the bias).
fn correlate_block(
    corr: &Corr,
    mut job: RowsJob<'_>,
    padded: &[f32],
    c_first: usize,
    epilogue: Epilogue<'_>,
) {
    let ow = corr.out_w;
    let mut sums = vec![0.0f32; DIRECT_CB * ow]; // (DIRECT_CB, out_w)
    for (i, y) in job.rows.enumerate() {
        correlate_rows(corr, &job.block.kb, padded, y, &mut sums);
        for (c, dst_c) in job.dsts.iter_mut().enumerate() {
            let dst = &mut dst_c[i * ow..][..ow];
            dst.copy_from_slice(&sums[c * ow..][..ow]);
            if let Epilogue::BiasAct { bias, act } = epilogue
                && (bias.is_some() || act.is_some())
            {
                bias_act_row(dst, bias.map_or(0.0, |b| b[c_first + c]), act);
            }
        }
    }
}

/// Output row y of the block's DIRECT_CB channels: out `(DIRECT_CB, out_w)`, with the
/// register tiles of the current instruction-set level.
fn correlate_rows(corr: &Corr, kb: &[f32], padded: &[f32], y: usize, out: &mut [f32]) {
    assert!(kb.len() >= corr.sum_ch * corr.kh * corr.kw * DIRECT_CB);
    assert!(out.len() >= DIRECT_CB * corr.out_w);
    // the furthest read: the last tile's last vector of the last kernel tap, which the padded
    // width (whole tiles plus the kernel's reach) holds
    assert!(y + (corr.kh - 1) * corr.dh < corr.pad_h() && padded.len() >= corr.padded_len());
    // SAFETY (every arm): the asserts above bound every access of `correlate` (see there); the
    // level is one `simd::level()` returned, so the CPU has it.
    match simd::level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { correlate_avx512(corr, kb, padded, y, out) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { correlate_avx2(corr, kb, padded, y, out) },
        #[cfg(target_arch = "aarch64")]
        Level::Neon => unsafe { correlate::<simd::vector::Neon, 4>(corr, kb, padded, y, out) },
        _ => unsafe { correlate::<Portable, 2>(corr, kb, padded, y, out) },
    }
}

/// [`correlate`] in AVX-512 vectors: 4 channels × 2 vectors (32 pixels) of sums.
///
/// # Safety
/// As [`correlate`], on a CPU with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn correlate_avx512(corr: &Corr, kb: &[f32], padded: &[f32], y: usize, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { correlate::<simd::vector::Avx512, 2>(corr, kb, padded, y, out) }
}

/// [`correlate`] in AVX2 vectors: 4 channels × 2 vectors (16 pixels) of sums, 8 of the 16
/// registers (the 16-lane arrays this replaced needed all 16 for sums and spilled).
///
/// # Safety
/// As [`correlate`], on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn correlate_avx2(corr: &Corr, kb: &[f32], padded: &[f32], y: usize, out: &mut [f32]) {
    // SAFETY: the caller's contract.
    unsafe { correlate::<simd::vector::Avx2, 2>(corr, kb, padded, y, out) }
}

/// Output row y of the block's DIRECT_CB channels in tiles of `P` vectors of `V` pixels: each
/// tile's DIRECT_CB × P sums stay in registers over every input channel and kernel tap, and
/// one input load feeds DIRECT_CB fused multiply-adds.
///
/// # Safety
/// `V`'s instructions enabled in the caller; the bounds `correlate_rows` asserts: a tile of
/// P·LANES pixels divides DIRECT_TW, so reads end within the padded row (whole DIRECT_TW
/// tiles plus the kernel's reach).
#[inline(always)]
unsafe fn correlate<V: F32Vec, const P: usize>(
    corr: &Corr,
    kb: &[f32],
    padded: &[f32],
    y: usize,
    out: &mut [f32],
) {
    let tw = P * V::LANES;
    debug_assert!(DIRECT_TW.is_multiple_of(tw));
    let (ks, pw) = (corr.kh * corr.kw, corr.pad_w());
    let plane = corr.pad_h() * pw;
    let (pad, kbp) = (padded.as_ptr(), kb.as_ptr());
    // SAFETY (whole body): see the function's contract.
    unsafe {
        for x0 in (0..corr.out_w).step_by(tw) {
            let mut acc = [[V::zero(); P]; DIRECT_CB];
            for s in 0..corr.sum_ch {
                for ki in 0..corr.kh {
                    let row = pad.add(s * plane + (y + ki * corr.dh) * pw + x0);
                    let kr = kbp.add((s * ks + ki * corr.kw) * DIRECT_CB);
                    for kj in 0..corr.kw {
                        let mut xs = [V::zero(); P];
                        for (p, v) in xs.iter_mut().enumerate() {
                            *v = V::load(row.add(kj * corr.dw + p * V::LANES));
                        }
                        for (c, a) in acc.iter_mut().enumerate() {
                            let k = V::splat(*kr.add(kj * DIRECT_CB + c));
                            for (a, &x) in a.iter_mut().zip(&xs) {
                                *a = x.mul_add(k, *a);
                            }
                        }
                    }
                }
            }
            let n = tw.min(corr.out_w - x0);
            for (c, a) in acc.iter().enumerate() {
                let dst = out.as_mut_ptr().add(c * corr.out_w + x0);
                if n == tw {
                    for (p, v) in a.iter().enumerate() {
                        v.store(dst.add(p * V::LANES));
                    }
                } else {
                    let mut tmp = [0.0f32; DIRECT_TW];
                    for (p, v) in a.iter().enumerate() {
                        v.store(tmp.as_mut_ptr().add(p * V::LANES));
                    }
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, n);
                }
            }
        }
    }
}
