//! Max, average and global average pooling over NCHW tensors.
//!
//! Every kernel works plane by plane (one `(h, w)` image of one channel of one batch item),
//! in parallel over the `n * c` planes. The window of each output row/column is computed once
//! per call ([`Window`]); the `*_naive` twins recompute bounds per kernel cell and are the
//! references the fast paths are tested against.

use crate::engine::simd;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::conv::Padding2d;
use super::shape::rows_per_task;
use crate::engine::error::OpError;
use crate::engine::tensor::{Tensor, dims4};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool2dSpec {
    /// `[kh, kw]`
    pub kernel: [usize; 2],
    /// `[sh, sw]`
    pub stride: [usize; 2],
    pub padding: Padding2d,
    /// Output size rounds up instead of down (windows must still start inside the input or
    /// its left/top padding, as PyTorch).
    pub ceil_mode: bool,
    /// Average pooling only: padded zeros count in the divisor.
    pub count_include_pad: bool,
}

/// One output position's window along one axis: input cells `lo..hi` (clipped to the input)
/// and the window's length within the padded input (the `count_include_pad` divisor).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Window {
    lo: usize,
    hi: usize,
    padded: usize,
}

/// Output length along one axis, PyTorch's rule: with `ceil_mode` the last window must start
/// inside the input or its leading padding.
fn out_len(
    input: usize,
    k: usize,
    s: usize,
    before: usize,
    after: usize,
    ceil: bool,
) -> Result<usize, OpError> {
    if k == 0 || s == 0 {
        crate::op_bail!("pooling kernel {k} and stride {s} must be positive");
    }
    if before >= k || after >= k {
        crate::op_bail!("pooling padding ({before}, {after}) must be smaller than the kernel {k}");
    }
    let total = input + before + after;
    if input == 0 || total < k {
        crate::op_bail!(
            "pooling kernel {k} does not fit an input of {input} padded by ({before}, {after})"
        );
    }
    let mut out = if ceil {
        (total - k).div_ceil(s) + 1
    } else {
        (total - k) / s + 1
    };
    if ceil && (out - 1) * s >= input + before {
        out -= 1;
    }
    Ok(out)
}

/// Windows of all `out` positions along one axis.
fn windows(
    out: usize,
    input: usize,
    k: usize,
    s: usize,
    before: usize,
    after: usize,
) -> Vec<Window> {
    (0..out)
        .map(|o| {
            // window [start, start + k) in input coordinates, start may be negative
            let start = (o * s) as isize - before as isize;
            let end = start + k as isize;
            let padded_end = end.min((input + after) as isize);
            Window {
                lo: start.max(0) as usize,
                hi: end.min(input as isize) as usize,
                padded: (padded_end - start) as usize,
            }
        })
        .collect()
}

/// Geometry of one pooling call.
struct Geometry {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    rows: Vec<Window>,
    cols: Vec<Window>,
}

impl Geometry {
    fn new(spec: &Pool2dSpec, x: &[usize]) -> Result<Self, OpError> {
        let [_, _, h, w] = dims4(x)?;
        let [kh, kw] = spec.kernel;
        let [sh, sw] = spec.stride;
        let p = spec.padding;
        let oh = out_len(h, kh, sh, p.top, p.bottom, spec.ceil_mode)
            .map_err(|e| OpError(format!("pooling height of {x:?}: {e}")))?;
        let ow = out_len(w, kw, sw, p.left, p.right, spec.ceil_mode)
            .map_err(|e| OpError(format!("pooling width of {x:?}: {e}")))?;
        Ok(Self {
            h,
            w,
            oh,
            ow,
            rows: windows(oh, h, kh, sh, p.top, p.bottom),
            cols: windows(ow, w, kw, sw, p.left, p.right),
        })
    }

    /// Every window is exactly 2x2 at stride 2, inside the input.
    fn is_2x2_stride2(&self) -> bool {
        let pairs = |ws: &[Window]| {
            ws.iter()
                .enumerate()
                .all(|(o, win)| win.lo == 2 * o && win.hi == win.lo + 2)
        };
        pairs(&self.rows) && pairs(&self.cols)
    }

    /// The averaging divisor of output (oy, ox).
    fn divisor(&self, oy: usize, ox: usize, include_pad: bool) -> f32 {
        let (r, c) = (self.rows[oy], self.cols[ox]);
        if include_pad {
            (r.padded * c.padded) as f32
        } else {
            ((r.hi - r.lo) * (c.hi - c.lo)) as f32
        }
    }
}

/// `[n, c, oh, ow]` for x `[n, c, h, w]`.
pub fn output_shape(spec: &Pool2dSpec, x: &[usize]) -> Result<Vec<usize>, OpError> {
    let [n, c, _, _] = dims4(x)?;
    let g = Geometry::new(spec, x)?;
    Ok(vec![n, c, g.oh, g.ow])
}

/// Whether `v` replaces `best` as a window's maximum: larger, or a NaN over a number (NaN
/// propagates, as in PyTorch); ties keep the earlier winner. Max pooling and the Max / Min
/// reductions (`reduce.rs`) share this rule.
#[inline(always)]
pub(super) fn max_wins(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// `[n, c, 1, 1]` for x `[n, c, h, w]`.
pub fn global_output_shape(x: &[usize]) -> Result<Vec<usize>, OpError> {
    let [n, c, h, w] = dims4(x)?;
    if h * w == 0 {
        crate::op_bail!("global average pooling of an empty plane, x has shape {x:?}");
    }
    Ok(vec![n, c, 1, 1])
}

/// Checks that d_y is `[n, c, oh, ow]` for x `[n, c, h, w]`.
fn check_grad(what: &str, x_shape: &[usize], want: &[usize], d_y: &Tensor) -> Result<(), OpError> {
    if d_y.shape() != want {
        crate::op_bail!(
            "{what} gradient has shape {:?}, expected {want:?} for x {x_shape:?}",
            d_y.shape()
        );
    }
    Ok(())
}

/// Returns (y `[n, c, oh, ow]`, flat index into x of each output's maximum).
/// Ties go to the first cell in row-major order; NaN wins (propagates), as PyTorch.
pub fn max_forward(spec: &Pool2dSpec, x: &Tensor) -> Result<(Tensor, Vec<u32>), OpError> {
    let out_shape = output_shape(spec, x.shape())?;
    if x.numel() > u32::MAX as usize + 1 {
        crate::op_bail!(
            "max pooling input {:?} is too large for 32-bit winner indices",
            x.shape()
        );
    }
    let g = Geometry::new(spec, x.shape())?;
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut y = vec![0.0f32; out_shape.iter().product()];
    let mut arg = vec![0u32; y.len()];
    let pairs = g.is_2x2_stride2();
    if !y.is_empty() {
        // (n * c, oh * ow) from (n * c, h * w)
        y.par_chunks_mut(ohw)
            .zip(arg.par_chunks_mut(ohw))
            .zip(x.data().par_chunks(hw))
            .with_min_len(rows_per_task(hw))
            .enumerate()
            .for_each(|(plane, ((yp, ap), xp))| {
                if pairs {
                    max_plane_2x2(&g, xp, plane * hw, yp, ap)
                } else {
                    max_plane(&g, xp, plane * hw, yp, ap)
                }
            });
    }
    Ok((Tensor::new(out_shape, y)?, arg))
}

/// Max pooling of one plane: the outputs whose windows lie wholly inside the input by
/// [`max_interior`], the border ones (windows clipped by padding) cell by cell.
fn max_plane(g: &Geometry, xp: &[f32], base: usize, yp: &mut [f32], ap: &mut [u32]) {
    let (rows_in, cols_in) = (interior(&g.rows), interior(&g.cols));
    if !rows_in.is_empty() && !cols_in.is_empty() {
        max_interior(g, xp, base, rows_in.clone(), cols_in.clone(), yp, ap);
    }
    for (oy, r) in g.rows.iter().enumerate() {
        for (ox, c) in g.cols.iter().enumerate() {
            if rows_in.contains(&oy) && cols_in.contains(&ox) {
                continue;
            }
            let mut best = f32::NEG_INFINITY;
            let mut at = r.lo * g.w + c.lo;
            for iy in r.lo..r.hi {
                let row = &xp[iy * g.w..(iy + 1) * g.w];
                for (ix, &v) in row.iter().enumerate().take(c.hi).skip(c.lo) {
                    // select, not branch: winners are unpredictable on real data
                    let wins = max_wins(v, best);
                    best = if wins { v } else { best };
                    at = if wins { iy * g.w + ix } else { at };
                }
            }
            yp[oy * g.ow + ox] = best;
            ap[oy * g.ow + ox] = (base + at) as u32;
        }
    }
}

/// The outputs along one axis whose windows are whole (not clipped by padding): a contiguous
/// range, since window starts grow with the output index; empty unless those windows are all
/// equally wide and evenly spaced (what [`max_interior`] assumes).
fn interior(wins: &[Window]) -> std::ops::Range<usize> {
    let full = wins.iter().map(|w| w.hi - w.lo).max().unwrap_or(0);
    let lo = wins.iter().position(|w| w.hi - w.lo == full);
    let hi = wins.iter().rposition(|w| w.hi - w.lo == full);
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return 0..0;
    };
    let run = &wins[lo..=hi];
    let step = run.get(1).map_or(0, |w| w.lo - run[0].lo);
    // windows clipped on both sides can all start at 0 (step 0): left to the border loop
    let even = (run.len() == 1 || step > 0) && run.windows(2).all(|p| p[1].lo == p[0].lo + step);
    if even && run.iter().all(|w| w.hi - w.lo == full) {
        lo..hi + 1
    } else {
        0..0
    }
}

simd::kernel! {
    /// Interior outputs `oys` × `oxs` of one plane, tap by tap in row-major order over a whole
    /// output row at once (the same winner rule as the cell-by-cell loop: strictly greater wins,
    /// NaN wins, the first cell in row-major order on ties), instead of a window walk per output:
    /// ResNet50's 3x3 stride-2 pooling 3.6 → 0.7–1.3 ms (shared machine; BENCHMARKS.md "Session 4").
    fn max_interior(
        g: &Geometry,
        xp: &[f32],
        base: usize,
        oys: std::ops::Range<usize>,
        oxs: std::ops::Range<usize>,
        yp: &mut [f32],
        ap: &mut [u32],
    ) {
        let (kh, kw) = (
            g.rows[oys.start].hi - g.rows[oys.start].lo,
            g.cols[oxs.start].hi - g.cols[oxs.start].lo,
        );
        let sw = if oxs.len() > 1 {
            g.cols[oxs.start + 1].lo - g.cols[oxs.start].lo
        } else {
            1
        };
        let x0 = g.cols[oxs.start].lo;
        let n = oxs.len();
        // Row cells x0 + j·sw + p split by phase p < sw (phase p, position j), so that tap kj reads
        // the contiguous run phase[kj % sw][kj / sw..][..n]: a strided read per tap did not vectorise.
        let per_phase = n + (kw - 1) / sw.max(1) + 1;
        let mut phases = vec![0.0f32; sw.max(1) * per_phase]; // (sw, per_phase)
        for oy in oys {
            let r0 = g.rows[oy].lo;
            let ys = &mut yp[oy * g.ow + oxs.start..][..n];
            let ats = &mut ap[oy * g.ow + oxs.start..][..n];
            for ki in 0..kh {
                let iy = r0 + ki;
                let row = &xp[iy * g.w..][..g.w];
                let cols = &row[x0..(x0 + (n - 1) * sw + kw).min(g.w)];
                if sw > 1 {
                    for (p, ph) in phases.chunks_exact_mut(per_phase).enumerate() {
                        for (d, &v) in ph.iter_mut().zip(cols.iter().skip(p).step_by(sw)) {
                            *d = v;
                        }
                    }
                }
                for kj in 0..kw {
                    let taps = if sw > 1 {
                        &phases[(kj % sw) * per_phase + kj / sw..][..n]
                    } else {
                        &cols[kj..][..n]
                    };
                    let cell0 = (base + iy * g.w + x0 + kj) as u32;
                    if ki == 0 && kj == 0 {
                        for (i, ((y, a), &v)) in ys.iter_mut().zip(ats.iter_mut()).zip(taps).enumerate()
                        {
                            *y = v;
                            *a = cell0 + (i * sw) as u32;
                        }
                        continue;
                    }
                    for (i, ((y, a), &v)) in ys.iter_mut().zip(ats.iter_mut()).zip(taps).enumerate() {
                        let wins = max_wins(v, *y);
                        *y = if wins { v } else { *y };
                        *a = if wins { cell0 + (i * sw) as u32 } else { *a };
                    }
                }
            }
        }
    }
}

simd::kernel! {
    /// `max_plane` for 2x2 windows at stride 2 that all lie inside the input (the classic VGG-style
    /// pooling): no window bookkeeping, two input rows zipped in pairs, the winner kept as a local
    /// cell number 0..4 by selects (no branches), so the loop vectorises. Same winner rule: cells
    /// in row-major order, strictly greater wins, NaN wins. Compiled per instruction-set level.
    fn max_plane_2x2(g: &Geometry, xp: &[f32], base: usize, yp: &mut [f32], ap: &mut [u32]) {
        let (w, ow) = (g.w, g.ow);
        for (oy, (yrow, arow)) in yp
            .chunks_exact_mut(ow)
            .zip(ap.chunks_exact_mut(ow))
            .enumerate()
        {
            let i0 = 2 * oy * w;
            let r0 = &xp[i0..i0 + 2 * ow];
            let r1 = &xp[i0 + w..i0 + w + 2 * ow];
            // flat index of cell 0 of output ox is row0 + 2·ox; cell k adds (k >> 1)·w + (k & 1)
            let row0 = (base + i0) as u32;
            for (ox, ((y, a), (p0, p1))) in yrow
                .iter_mut()
                .zip(arow.iter_mut())
                .zip(r0.chunks_exact(2).zip(r1.chunks_exact(2)))
                .enumerate()
            {
                let mut best = p0[0];
                let mut at = 0u32;
                for (k, v) in [(1u32, p0[1]), (w as u32, p1[0]), (w as u32 + 1, p1[1])] {
                    let wins = max_wins(v, best);
                    best = if wins { v } else { best };
                    at = if wins { k } else { at };
                }
                *y = best;
                *a = row0 + 2 * ox as u32 + at;
            }
        }
    }
}

/// The reference: every kernel cell, skipping those in the padding.
pub fn max_naive(spec: &Pool2dSpec, x: &Tensor) -> Result<(Tensor, Vec<u32>), OpError> {
    let out_shape = output_shape(spec, x.shape())?;
    let [n, c, h, w] = dims4(x.shape())?;
    let [_, _, oh, ow] = dims4(&out_shape)?;
    let mut y = Vec::new();
    let mut arg = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = (f32::NEG_INFINITY, usize::MAX);
                for ky in 0..spec.kernel[0] {
                    for kx in 0..spec.kernel[1] {
                        let iy = (oy * spec.stride[0] + ky) as isize - spec.padding.top as isize;
                        let ix = (ox * spec.stride[1] + kx) as isize - spec.padding.left as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let at = plane * h * w + iy as usize * w + ix as usize;
                        if best.1 == usize::MAX || x.data()[at] > best.0 {
                            best = (x.data()[at], at);
                        }
                    }
                }
                y.push(best.0);
                arg.push(best.1 as u32);
            }
        }
    }
    Ok((Tensor::new(out_shape, y)?, arg))
}

/// d_x `[n, c, h, w]`: each output's gradient goes to its winner.
pub fn max_backward(x_shape: &[usize], argmax: &[u32], d_y: &Tensor) -> Result<Tensor, OpError> {
    let [n, c, h, w] = dims4(x_shape)?;
    let [dn, dc, oh, ow] = dims4(d_y.shape())?;
    if (dn, dc) != (n, c) || argmax.len() != d_y.numel() {
        crate::op_bail!(
            "max pool gradient {:?} with {} winners does not fit x {x_shape:?}",
            d_y.shape(),
            argmax.len()
        );
    }
    let (hw, ohw) = (h * w, oh * ow);
    let mut d_x = Tensor::try_zeros(x_shape)?;
    if d_x.numel() == 0 || ohw == 0 {
        return Ok(d_x);
    }
    // (n * c, h * w) gathers from (n * c, oh * ow); winners never leave their plane
    d_x.data_mut()
        .par_chunks_mut(hw)
        .zip(d_y.data().par_chunks(ohw).zip(argmax.par_chunks(ohw)))
        .with_min_len(rows_per_task(hw))
        .enumerate()
        .try_for_each(|(plane, (dxp, (gp, ap)))| {
            let base = plane * hw;
            for (&g, &a) in gp.iter().zip(ap) {
                let local = (a as usize).wrapping_sub(base);
                match dxp.get_mut(local) {
                    Some(slot) => *slot += g,
                    None => crate::op_bail!(
                        "max pool winner {a} lies outside plane {plane} of x {x_shape:?}"
                    ),
                }
            }
            Ok(())
        })?;
    Ok(d_x)
}

pub fn avg_forward(spec: &Pool2dSpec, x: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = output_shape(spec, x.shape())?;
    let g = Geometry::new(spec, x.shape())?;
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut y = vec![0.0f32; out_shape.iter().product()];
    if !y.is_empty() {
        // (n * c, oh * ow) from (n * c, h * w)
        y.par_chunks_mut(ohw)
            .zip(x.data().par_chunks(hw))
            .with_min_len(rows_per_task(hw))
            .for_each(|(yp, xp)| {
                for (oy, r) in g.rows.iter().enumerate() {
                    for (ox, c) in g.cols.iter().enumerate() {
                        let mut sum = 0.0f32;
                        for iy in r.lo..r.hi {
                            sum += xp[iy * g.w + c.lo..iy * g.w + c.hi].iter().sum::<f32>();
                        }
                        yp[oy * g.ow + ox] = sum / g.divisor(oy, ox, spec.count_include_pad);
                    }
                }
            });
    }
    Tensor::new(out_shape, y)
}

/// The reference: every kernel cell, counting the divisor cell by cell as PyTorch defines it
/// (padded cells count when `count_include_pad`, cells past the padded input never do).
pub fn avg_naive(spec: &Pool2dSpec, x: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = output_shape(spec, x.shape())?;
    let [n, c, h, w] = dims4(x.shape())?;
    let [_, _, oh, ow] = dims4(&out_shape)?;
    let p = spec.padding;
    let mut y = Vec::new();
    for plane in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut sum, mut count) = (0.0f32, 0usize);
                for ky in 0..spec.kernel[0] {
                    for kx in 0..spec.kernel[1] {
                        let py = oy * spec.stride[0] + ky; // in padded coordinates
                        let px = ox * spec.stride[1] + kx;
                        let in_padded = py < p.top + h + p.bottom && px < p.left + w + p.right;
                        let inside =
                            py >= p.top && py < p.top + h && px >= p.left && px < p.left + w;
                        if inside {
                            sum += x.data()[plane * h * w + (py - p.top) * w + px - p.left];
                        }
                        if inside || (spec.count_include_pad && in_padded) {
                            count += 1;
                        }
                    }
                }
                y.push(sum / count as f32);
            }
        }
    }
    Tensor::new(out_shape, y)
}

pub fn avg_backward(spec: &Pool2dSpec, x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = output_shape(spec, x_shape)?;
    check_grad("average pool", x_shape, &out_shape, d_y)?;
    let g = Geometry::new(spec, x_shape)?;
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut d_x = Tensor::try_zeros(x_shape)?;
    if d_x.numel() == 0 {
        return Ok(d_x);
    }
    // (n * c, h * w) accumulates from (n * c, oh * ow)
    d_x.data_mut()
        .par_chunks_mut(hw)
        .zip(d_y.data().par_chunks(ohw))
        .with_min_len(rows_per_task(hw))
        .for_each(|(dxp, gp)| {
            for (oy, r) in g.rows.iter().enumerate() {
                for (ox, c) in g.cols.iter().enumerate() {
                    let share = gp[oy * g.ow + ox] / g.divisor(oy, ox, spec.count_include_pad);
                    for iy in r.lo..r.hi {
                        for v in &mut dxp[iy * g.w + c.lo..iy * g.w + c.hi] {
                            *v += share;
                        }
                    }
                }
            }
        });
    Ok(d_x)
}

/// y `[n, c, 1, 1]` = mean of each plane of x `[n, c, h, w]`.
pub fn global_avg_forward(x: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = global_output_shape(x.shape())?;
    let [_, _, h, w] = dims4(x.shape())?;
    let hw = h * w;
    let y: Vec<f32> = x
        .data()
        .par_chunks(hw)
        .with_min_len(rows_per_task(hw))
        .map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
        .collect();
    Tensor::new(out_shape, y)
}

/// d_x `[n, c, h, w]` = d_y `[n, c, 1, 1]` / (h * w) spread over each plane.
pub fn global_avg_backward(x_shape: &[usize], d_y: &Tensor) -> Result<Tensor, OpError> {
    let out_shape = global_output_shape(x_shape)?;
    check_grad("global average pool", x_shape, &out_shape, d_y)?;
    let [_, _, h, w] = dims4(x_shape)?;
    let hw = h * w;
    let mut d_x = Tensor::try_zeros(x_shape)?;
    d_x.data_mut()
        .par_chunks_mut(hw)
        .zip(d_y.data().par_iter())
        .with_min_len(rows_per_task(hw))
        .for_each(|(p, &g)| p.fill(g / hw as f32));
    Ok(d_x)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};

    fn spec(k: usize, s: usize, p: Padding2d, ceil: bool, include: bool) -> Pool2dSpec {
        Pool2dSpec {
            kernel: [k, k],
            stride: [s, s],
            padding: p,
            ceil_mode: ceil,
            count_include_pad: include,
        }
    }

    /// Distinct values (a shuffled ramp) so that max-pool winners are unique and stay winners
    /// under the finite-difference step.
    fn distinct(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let keys = crate::engine::gradcheck::test_values(n, seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
        let mut data = vec![0.0; n];
        for (rank, &i) in order.iter().enumerate() {
            data[i] = rank as f32 * 0.05 - 1.0;
        }
        Tensor::new(shape.to_vec(), data).unwrap()
    }

    fn geometries() -> Vec<Pool2dSpec> {
        let pads = [
            Padding2d::uniform(0),
            Padding2d::uniform(1),
            Padding2d {
                top: 0,
                left: 1,
                bottom: 2,
                right: 0,
            },
        ];
        let mut v = Vec::new();
        for (k, s) in [(2, 2), (3, 2), (3, 1), (3, 3)] {
            for p in pads {
                if p.bottom >= k {
                    continue;
                }
                for ceil in [false, true] {
                    for include in [false, true] {
                        v.push(spec(k, s, p, ceil, include));
                    }
                }
            }
        }
        v
    }

    #[test]
    fn output_sizes_follow_pytorch() {
        let p0 = Padding2d::uniform(0);
        let p1 = Padding2d::uniform(1);
        // torch.nn.MaxPool2d(2, 2, ceil_mode=True) on 5x5 -> 3x3; floor -> 2x2
        assert_eq!(
            output_shape(&spec(2, 2, p0, true, false), &[1, 1, 5, 5]).unwrap(),
            vec![1, 1, 3, 3]
        );
        assert_eq!(
            output_shape(&spec(2, 2, p0, false, false), &[1, 1, 5, 5]).unwrap(),
            vec![1, 1, 2, 2]
        );
        // MaxPool2d(3, 2, padding=1, ceil_mode=True) on 6: ceil((6+2-3)/2)+1 = 4, the last
        // window starts at 6 < input + pad = 7 so it stays (torch gives 4)
        assert_eq!(
            output_shape(&spec(3, 2, p1, true, false), &[1, 1, 6, 6]).unwrap(),
            vec![1, 1, 4, 4]
        );
        // MaxPool2d(2, 2, padding=1, ceil_mode=True) on 4: ceil((4+2-2)/2)+1 = 3; a 4th window
        // would start at 6 >= 5 (torch gives 3)
        assert_eq!(
            output_shape(&spec(2, 2, p1, true, false), &[1, 1, 4, 4]).unwrap()[2],
            3
        );
        // on 5 with padding 1: ceil(5/2)+1 = 4, window 3 starts at 6 >= 5 + 1 -> dropped -> 3
        assert_eq!(
            output_shape(&spec(2, 2, p1, true, false), &[1, 1, 5, 5]).unwrap()[2],
            3
        );
        // GoogLeNet-style MaxPool2d(3, 2, ceil_mode=True) on 112 -> 56; on 7 -> 3
        assert_eq!(
            output_shape(&spec(3, 2, p0, true, false), &[1, 1, 112, 112]).unwrap()[2],
            56
        );
        assert_eq!(
            output_shape(&spec(3, 2, p0, true, false), &[1, 1, 7, 7]).unwrap()[2],
            3
        );
        // ResNet stem MaxPool2d(3, 2, 1) on 112 -> 56
        assert_eq!(
            output_shape(&spec(3, 2, p1, false, false), &[1, 1, 112, 112]).unwrap()[2],
            56
        );
    }

    #[test]
    fn shape_errors() {
        let p0 = Padding2d::uniform(0);
        assert!(output_shape(&spec(3, 1, p0, false, false), &[1, 1, 2, 2]).is_err());
        assert!(output_shape(&spec(0, 1, p0, false, false), &[1, 1, 2, 2]).is_err());
        assert!(output_shape(&spec(2, 0, p0, false, false), &[1, 1, 2, 2]).is_err());
        assert!(
            output_shape(
                &spec(2, 1, Padding2d::uniform(2), false, false),
                &[1, 1, 4, 4]
            )
            .is_err()
        );
        assert!(output_shape(&spec(2, 1, p0, false, false), &[1, 4, 4]).is_err());
        assert!(global_output_shape(&[1, 2, 0, 3]).is_err());
        assert!(global_output_shape(&[2, 3]).is_err());
        let x = test_tensor(&[1, 1, 4, 4], 1);
        let s = spec(2, 2, p0, false, false);
        assert!(avg_backward(&s, x.shape(), &x).is_err());
        let (y, arg) = max_forward(&s, &x).unwrap();
        assert!(max_backward(x.shape(), &arg[..3], &y).is_err());
        assert!(max_backward(x.shape(), &[99, 0, 0, 0], &y).is_err());
        assert!(global_avg_backward(x.shape(), &x).is_err());
    }

    #[test]
    fn avg_divisors_follow_pytorch() {
        // AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=True) on ones 1x1x4x4:
        // windows rows [-1,2), [1,4), [3,6)->padded input ends at 5: [3,5) (2 rows)
        let x = Tensor::full(&[1, 1, 4, 4], 1.0);
        let p1 = Padding2d::uniform(1);
        let y = avg_forward(&spec(3, 2, p1, true, true), &x).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        // torch: [[4/9, 6/9, 2/6], [6/9, 1, 3/6], [2/6, 3/6, 1/4]]
        let want = [
            4.0 / 9.0,
            6.0 / 9.0,
            2.0 / 6.0,
            6.0 / 9.0,
            1.0,
            0.5,
            2.0 / 6.0,
            0.5,
            0.25,
        ];
        for (a, b) in y.data().iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?}", y.data());
        }
        let y = avg_forward(&spec(3, 2, p1, true, false), &x).unwrap();
        assert!(y.data().iter().all(|&v| (v - 1.0).abs() < 1e-6));
        // AvgPool2d(2, 2, ceil_mode=True, count_include_pad=True) on ones 5x5: the last window
        // hangs past the (unpadded) input and its divisor excludes that part: all ones in torch
        let x = Tensor::full(&[1, 1, 5, 5], 1.0);
        let y = avg_forward(&spec(2, 2, Padding2d::uniform(0), true, true), &x).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert!(
            y.data().iter().all(|&v| (v - 1.0).abs() < 1e-6),
            "{:?}",
            y.data()
        );
        // ramp input, no padding effect: mean of each window
        let x = Tensor::new(vec![1, 1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let y = avg_forward(&spec(2, 1, Padding2d::uniform(0), false, true), &x).unwrap();
        assert_eq!(y.data(), &[3.0, 4.0]);
    }

    #[test]
    fn max_values_and_padding_never_wins() {
        let x = Tensor::new(vec![1, 1, 2, 2], vec![-5.0, -4.0, -3.0, -2.0]).unwrap();
        let (y, arg) = max_forward(&spec(2, 1, Padding2d::uniform(1), false, false), &x).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(
            y.data(),
            &[-5.0, -4.0, -4.0, -3.0, -2.0, -2.0, -3.0, -2.0, -2.0]
        );
        assert_eq!(arg, vec![0, 1, 1, 2, 3, 3, 2, 3, 3]);
    }

    #[test]
    fn fast_kernels_match_naive() {
        simd::for_each_level(2, |_| fast_kernels_match_naive_here());
    }

    fn fast_kernels_match_naive_here() {
        for s in geometries() {
            for shape in [[2, 3, 7, 8], [1, 2, 5, 5], [1, 1, 6, 4]] {
                let x = test_tensor(&shape, 11);
                let Ok(want) = max_naive(&s, &x) else {
                    continue;
                };
                assert_eq!(max_forward(&s, &x).unwrap(), want, "{s:?} {shape:?}");
                let a = avg_forward(&s, &x).unwrap();
                let b = avg_naive(&s, &x).unwrap();
                for (u, v) in a.data().iter().zip(b.data()) {
                    assert!((u - v).abs() < 1e-5, "{s:?} {shape:?}");
                }
            }
        }
    }

    #[test]
    fn max_2x2_stride2_fast_path_matches_general_kernel_and_naive() {
        simd::for_each_level(2, |_| max_2x2_stride2_here());
    }

    fn max_2x2_stride2_here() {
        let s = spec(2, 2, Padding2d::default(), false, true);
        for (shape, seed) in [([2, 3, 8, 6], 1), ([1, 2, 7, 9], 2), ([3, 1, 2, 2], 3)] {
            let mut x = test_tensor(&shape, seed);
            for v in x.data_mut().iter_mut() {
                *v = (*v * 2.0).round(); // ties
            }
            // without NaN: the naive definition
            assert_eq!(max_forward(&s, &x).unwrap(), max_naive(&s, &x).unwrap());
            // with NaN (which the naive loop does not model): the general window kernel
            for (i, v) in x.data_mut().iter_mut().enumerate() {
                if i % 13 == 5 {
                    *v = f32::NAN;
                }
            }
            let g = Geometry::new(&s, x.shape()).unwrap();
            assert!(g.is_2x2_stride2());
            let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
            let (y, a) = max_forward(&s, &x).unwrap();
            for (plane, xp) in x.data().chunks_exact(hw).enumerate() {
                let (mut yp, mut ap) = (vec![0.0; ohw], vec![0u32; ohw]);
                max_plane(&g, xp, plane * hw, &mut yp, &mut ap);
                assert_eq!(&a[plane * ohw..][..ohw], &ap[..], "{shape:?}");
                for (u, v) in y.data()[plane * ohw..][..ohw].iter().zip(&yp) {
                    assert!(u == v || (u.is_nan() && v.is_nan()), "{shape:?}");
                }
            }
        }
    }

    /// Windows wider than the input, clipped on both sides, all start at 0: a geometry the
    /// interior kernel must leave to the border loop (it read past the row before the fix).
    #[test]
    fn max_windows_wider_than_the_input() {
        let padding = Padding2d {
            top: 2,
            left: 2,
            bottom: 2,
            right: 2,
        };
        for (k, s) in [(4, 1), (5, 1), (5, 2)] {
            let spec = Pool2dSpec {
                kernel: [k, k],
                stride: [s, s],
                padding,
                ceil_mode: false,
                count_include_pad: false,
            };
            let x = test_tensor(&[1, 2, 2, 2], 3);
            assert_eq!(
                max_forward(&spec, &x).unwrap(),
                max_naive(&spec, &x).unwrap()
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn fast_kernels_match_naive_on_random_geometries(
            kh in 1usize..5, kw in 1usize..5, sh in 1usize..4, sw in 1usize..4,
            pads in proptest::array::uniform4(0usize..3),
            h in 1usize..10, w in 1usize..10, ceil: bool, include: bool, seed in 0u64..1000,
        ) {
            let padding = Padding2d { top: pads[0], left: pads[1], bottom: pads[2], right: pads[3] };
            let s = Pool2dSpec { kernel: [kh, kw], stride: [sh, sw], padding, ceil_mode: ceil, count_include_pad: include };
            let x = test_tensor(&[2, 2, h, w], seed);
            // a copy with many ties (as after a ReLU): the first winner in row-major order
            let tied = x.map(|v| (v * 2.0).round().max(0.0));
            simd::try_each_level(2, |level| {
                if let Ok(want) = max_naive(&s, &tied) {
                    proptest::prop_assert_eq!(max_forward(&s, &tied).unwrap(), want, "{}", level);
                }
                match max_naive(&s, &x) {
                    Err(_) => proptest::prop_assert!(max_forward(&s, &x).is_err()),
                    Ok(want) => {
                        proptest::prop_assert_eq!(max_forward(&s, &x).unwrap(), want, "{}", level);
                        let a = avg_forward(&s, &x).unwrap();
                        let b = avg_naive(&s, &x).unwrap();
                        for (u, v) in a.data().iter().zip(b.data()) {
                            proptest::prop_assert!((u - v).abs() < 1e-5, "{}", level);
                        }
                    }
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn gradients_for_many_geometries() {
        for s in geometries() {
            let x = distinct(&[2, 2, 7, 6], 5);
            assert_op_gradients(
                &Op::MaxPool2d(s.clone()),
                std::slice::from_ref(&x),
                &[true],
                Mode::Eval,
                1e-2,
            );
            assert_op_gradients(&Op::AvgPool2d(s), &[x], &[true], Mode::Eval, 1e-2);
        }
        let x = test_tensor(&[2, 3, 4, 5], 6);
        assert_op_gradients(&Op::GlobalAvgPool, &[x], &[true], Mode::Eval, 1e-2);
    }

    #[test]
    fn global_avg_values() {
        let x = Tensor::new(vec![1, 2, 1, 2], vec![1.0, 3.0, -2.0, 4.0]).unwrap();
        let y = global_avg_forward(&x).unwrap();
        assert_eq!(y.shape(), &[1, 2, 1, 1]);
        assert_eq!(y.data(), &[2.0, 1.0]);
    }
}
