//! grad_w of a stride-1 convolution without a column matrix, at every instruction-set level.
//!
//! grad_w[co, ci, ki, kj] = Σ_{y, x} d_y[co, y, x] · x_padded[ci, y + ki·dh, x + kj·dw]
//!
//! One job is (input channel ci, kernel row ki, CO_BLOCK output channels): it keeps
//! CO_BLOCK × kw vector sums in registers while it streams the output plane, so each vector
//! step loads CO_BLOCK d_y vectors and kw input vectors for CO_BLOCK·kw fused multiply-adds
//! (16 lanes with AVX-512, 8 with AVX2, 4 with NEON or the portable vectors). The GEMM path instead writes and re-reads a column matrix 25x the size of
//! the input for a 5x5 kernel: smile conv2 grad_w at batch 32, 2 threads, ~9.7 → ~7.5 ms
//! (shared machine, alternating runs; BENCHMARKS.md "Session 4").

use rayon::prelude::*;

use super::direct::Corr;
use super::{Geom, batch_plan, items_per_chunk};
use crate::engine::simd::vector::{F32Vec, Portable};
use crate::engine::simd::{self, Level};

/// Output channels per job. With 4, LLVM spilled some of the 4 × 5 accumulators of a 5x5
/// kernel to the stack after every multiply-add, and the smile CNN's 5x5 grad_w ran ~25 %
/// slower than with 2 (which loads 2 + kw vectors per 2·kw multiply-adds).
const CO_BLOCK: usize = 2;
/// The widest kernel handled (CO_BLOCK × kw accumulators plus the loads stay in registers).
const MAX_KW: usize = 7;
/// d_y rows are padded to a multiple of this many pixels: whole vectors at every level.
const LANES: usize = 16;

/// Whether [`backward_w`] handles this geometry at all: stride 1, not depthwise, kw ≤ MAX_KW.
pub(super) fn applies(g: &Geom) -> bool {
    g.sh == 1 && g.sw == 1 && !g.is_depthwise() && g.kw <= MAX_KW
}

/// Whether grad_w should take [`backward_w`]: where it applies, for kernels larger than 3x3
/// (3x3 kernels give the GEMM path a long enough inner dimension, as for d_x).
pub(super) fn prefers(g: &Geom) -> bool {
    applies(g) && g.kh * g.kw > 9
}

/// One item's inputs laid out for the kernel: x_g padded as for the forward correlation, and
/// d_y_g `(og, oh, ow16)` with its rows zero-extended to whole vectors.
struct Padded {
    x: Vec<f32>,
    dy: Vec<f32>,
}

impl Padded {
    fn new(g: &Geom) -> Self {
        Self {
            x: vec![0.0; Corr::forward(g).padded_len()],
            dy: vec![0.0; g.og * g.oh * ow16(g)],
        }
    }

    fn fill(&mut self, g: &Geom, x_g: &[f32], dy_g: &[f32]) {
        Corr::forward(g).pad_input(x_g, &mut self.x);
        let w16 = ow16(g);
        for (src, dst) in dy_g.chunks_exact(g.ow).zip(self.dy.chunks_exact_mut(w16)) {
            dst[..g.ow].copy_from_slice(src);
            dst[g.ow..].fill(0.0);
        }
    }
}

/// Output row length rounded up to whole vectors.
fn ow16(g: &Geom) -> usize {
    g.ow.div_ceil(LANES) * LANES
}

/// grad_w `(c_out, cg, kh, kw)` += the stride-1 weight gradient ([`applies`] must hold).
/// A batch is split into one run of items per thread, each summing its own partial, added in
/// run order; a single item runs its jobs in parallel (each job owns distinct weights).
pub(super) fn backward_w(g: &Geom, x: &[f32], d_y: &[f32], gw: &mut [f32]) {
    let level = simd::level();
    let (chunks, _) = batch_plan(g.n);
    if chunks > 1 {
        let per = items_per_chunk(g.n, chunks);
        let parts: Vec<Vec<f32>> = (0..g.n)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|i0| {
                let mut acc = vec![0.0f32; gw.len()];
                let mut pad = Padded::new(g);
                for ni in i0..(i0 + per).min(g.n) {
                    item(level, g, x, d_y, ni, &mut pad, &mut acc, false);
                }
                acc
            })
            .collect();
        for part in parts {
            gw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
        }
        return;
    }
    let mut pad = Padded::new(g);
    for ni in 0..g.n {
        item(level, g, x, d_y, ni, &mut pad, gw, true);
    }
}

/// Adds item `ni`'s contribution to acc `(c_out, cg, kh, kw)`, its jobs in parallel if `par`.
fn item(
    level: Level,
    g: &Geom,
    x: &[f32],
    d_y: &[f32],
    ni: usize,
    pad: &mut Padded,
    acc: &mut [f32],
    par: bool,
) {
    let (plane_x, ks) = (g.cg * g.h * g.w, g.kh * g.kw);
    for grp in 0..g.groups {
        let x_g = &x[ni * g.x_item() + grp * plane_x..][..plane_x]; // (cg, h, w)
        let dy_g = &d_y[ni * g.y_item() + grp * g.og * g.p()..][..g.og * g.p()]; // (og, oh, ow)
        pad.fill(g, x_g, dy_g);
        // jobs: (first output channel in the group, input channel, kernel row)
        let jobs: Vec<(usize, usize, usize)> = (0..g.og)
            .step_by(CO_BLOCK)
            .flat_map(|c0| (0..g.cg).flat_map(move |ci| (0..g.kh).map(move |ki| (c0, ci, ki))))
            .collect();
        let pad = &*pad;
        let run = |&(c0, ci, ki): &(usize, usize, usize)| job_sums(level, g, pad, c0, ci, ki);
        let sums: Vec<[[f32; MAX_KW]; CO_BLOCK]> = if par {
            jobs.par_iter().map(run).collect()
        } else {
            jobs.iter().map(run).collect()
        };
        for (&(c0, ci, ki), s) in jobs.iter().zip(&sums) {
            for (c, row) in s.iter().enumerate().take(CO_BLOCK.min(g.og - c0)) {
                let at = ((grp * g.og + c0 + c) * g.cg + ci) * ks + ki * g.kw;
                for (a, &v) in acc[at..][..g.kw].iter_mut().zip(row) {
                    *a += v;
                }
            }
        }
    }
}

/// The sums of one job: `[c][kj]` for output channels c0 + c, zero past the group's channels
/// and past kw.
fn job_sums(
    level: Level,
    g: &Geom,
    pad: &Padded,
    c0: usize,
    ci: usize,
    ki: usize,
) -> [[f32; MAX_KW]; CO_BLOCK] {
    let corr = Corr::forward(g);
    let (ph, pw, w16) = (corr.pad_h(), corr.pad_w(), ow16(g));
    let x_plane = &pad.x[ci * ph * pw..][..ph * pw]; // (pad_h, pad_w)
    let dy_plane = g.oh * w16;
    // a channel past the group's last one reads the last one again and is dropped by the caller
    let dys: [&[f32]; CO_BLOCK] = std::array::from_fn(|c| {
        let co = (c0 + c).min(g.og - 1);
        &pad.dy[co * dy_plane..][..dy_plane]
    });
    let shape = JobShape {
        oh: g.oh,
        w16,
        pw,
        ki,
        dh: g.dh,
        dw: g.dw,
    };
    let mut out = [[0.0f32; MAX_KW]; CO_BLOCK];
    macro_rules! dispatch {
        ($($kw:literal)*) => {
            match g.kw {
                $($kw => {
                    let s = if g.dw == 1 {
                        job_at::<$kw, false>(level, &shape, dys, x_plane)
                    } else {
                        job_at::<$kw, true>(level, &shape, dys, x_plane)
                    };
                    for (o, r) in out.iter_mut().zip(s) {
                        o[..$kw].copy_from_slice(&r);
                    }
                })*
                _ => unreachable!("applies() bounds kw by MAX_KW"),
            }
        };
    }
    dispatch!(1 2 3 4 5 6 7);
    out
}

/// The extents one job streams over.
struct JobShape {
    oh: usize,
    /// d_y row length (whole vectors)
    w16: usize,
    /// padded input row length
    pw: usize,
    ki: usize,
    dh: usize,
    dw: usize,
}

/// [`job`] with the vectors of `level` (which `simd::level()` returned: the CPU has it).
fn job_at<const KW: usize, const DILATED: bool>(
    level: Level,
    s: &JobShape,
    dys: [&[f32]; CO_BLOCK],
    x_plane: &[f32],
) -> [[f32; KW]; CO_BLOCK] {
    // Every load of `job` stays inside these bounds: d_y rows y·w16 + x0 + LANES ≤ oh·w16,
    // input rows (y + ki·dh)·pw + x0 + (KW−1)·dw + LANES ≤ (oh + (kh−1)·dh)·pw (the padded
    // plane has w16 + (kw−1)·dw ≤ pw columns and oh + (kh−1)·dh rows, ki < kh).
    assert!(dys.iter().all(|d| d.len() >= s.oh * s.w16));
    assert!(s.w16.is_multiple_of(LANES) && s.w16 + (KW - 1) * s.dw <= s.pw);
    assert!(DILATED || s.dw == 1);
    assert!(x_plane.len() >= (s.oh - 1 + s.ki * s.dh + 1) * s.pw);
    // SAFETY (every arm): the asserts above bound every load; the level is the CPU's.
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { job_avx512::<KW, DILATED>(s, dys, x_plane) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { job_avx2::<KW, DILATED>(s, dys, x_plane) },
        #[cfg(target_arch = "aarch64")]
        Level::Neon => unsafe { job::<simd::vector::Neon, KW, DILATED>(s, dys, x_plane) },
        _ => unsafe { job::<Portable, KW, DILATED>(s, dys, x_plane) },
    }
}

/// [`job`] in 16-lane AVX-512 vectors.
///
/// # Safety
/// As [`job`], on a CPU with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn job_avx512<const KW: usize, const DILATED: bool>(
    s: &JobShape,
    dys: [&[f32]; CO_BLOCK],
    x_plane: &[f32],
) -> [[f32; KW]; CO_BLOCK] {
    // SAFETY: the caller's contract.
    unsafe { job::<simd::vector::Avx512, KW, DILATED>(s, dys, x_plane) }
}

/// [`job`] in 8-lane AVX2 vectors.
///
/// # Safety
/// As [`job`], on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn job_avx2<const KW: usize, const DILATED: bool>(
    s: &JobShape,
    dys: [&[f32]; CO_BLOCK],
    x_plane: &[f32],
) -> [[f32; KW]; CO_BLOCK] {
    // SAFETY: the caller's contract.
    unsafe { job::<simd::vector::Avx2, KW, DILATED>(s, dys, x_plane) }
}

/// Σ_{y, x} dys[c][y, x] · x_plane[y + ki·dh, x + kj·dw] for c < CO_BLOCK, kj < KW, in
/// vectors of `V`.
///
/// # Safety
/// `V`'s instructions must be enabled in the caller; the bounds asserted by [`job_at`] hold.
#[inline(always)]
unsafe fn job<V: F32Vec, const KW: usize, const DILATED: bool>(
    s: &JobShape,
    dys: [&[f32]; CO_BLOCK],
    x_plane: &[f32],
) -> [[f32; KW]; CO_BLOCK] {
    // SAFETY (whole body): in bounds by the caller's asserts; `V` is enabled.
    unsafe {
        let mut acc: [[V; KW]; CO_BLOCK] = [[V::zero(); KW]; CO_BLOCK];
        for y in 0..s.oh {
            let xr = x_plane[(y + s.ki * s.dh) * s.pw..].as_ptr();
            let mut dr = [std::ptr::null::<f32>(); CO_BLOCK];
            for (p, d) in dr.iter_mut().zip(&dys) {
                *p = d[y * s.w16..].as_ptr();
            }
            let mut x0 = 0;
            while x0 < s.w16 {
                let mut d = [V::zero(); CO_BLOCK];
                for c in 0..CO_BLOCK {
                    d[c] = V::load(dr[c].add(x0));
                }
                for kj in 0..KW {
                    // an undilated kernel's taps sit at constant offsets from one pointer
                    let at = if DILATED { x0 + kj * s.dw } else { x0 + kj };
                    let xv = V::load(xr.add(at));
                    for c in 0..CO_BLOCK {
                        acc[c][kj] = d[c].mul_add(xv, acc[c][kj]);
                    }
                }
                x0 += V::LANES;
            }
        }
        // reduced in plain loops: a closure borrowing `acc` made LLVM store every accumulator
        // to the stack after each multiply-add (3x slower)
        let mut out = [[0.0f32; KW]; CO_BLOCK];
        for c in 0..CO_BLOCK {
            for kj in 0..KW {
                out[c][kj] = acc[c][kj].sum();
            }
        }
        out
    }
}
