//! 2-D convolution: stride, asymmetric padding, dilation, groups (incl. depthwise), optional bias.
//!
//! Algorithms (each beside the naive 7-loop definition it is tested against):
//! - 1x1, stride 1, unpadded: the input plane already is the GEMM operand (`[c_in/g, h*w]`);
//!   forward runs register tiles straight from it with bias and activation fused
//!   (`conv/pointwise.rs`), backward uses GEMMs;
//! - depthwise (one input channel per group): a direct kernel on stride-phase planes, parallel
//!   over `(n, c_out)` planes (`conv/depthwise.rs`);
//! - 3x3, stride 1, undilated, with many channels on a large enough plane: Winograd
//!   F(2x2, 3x3) for the forward pass and d_x, 16 GEMMs over transformed tiles
//!   (`conv/winograd.rs`);
//! - stride 1 with kernels larger than 3x3: a direct correlation for the forward pass and d_x
//!   (`conv/direct.rs`) and, on AVX-512 machines, a direct grad_w (`conv/grad_w_direct.rs`);
//! - everything else: im2col + GEMM per group (grad_w in `conv/grad_w.rs`).
//!
//! Batches of at least two items are split across rayon threads (each running sequential GEMMs on
//! its own column buffer); a single item lets the GEMM and the im2col/col2im loops parallelise.
//!
//! This file dispatches forward and backward to those algorithms. Its children besides them:
//! `spec` (what a convolution is asked to do, the fusable activations), `geometry` (every size
//! a kernel needs), `im2col` (column matrices and their adjoint), `schedule` (how a batch is
//! spread over threads) and `naive` (the definitions every kernel is tested against).

use crate::engine::simd;
use rayon::prelude::*;

use crate::engine::error::OpError;
use crate::engine::gemm::{MatRef, Parallelism, sgemm};
use crate::engine::tensor::Tensor;
use crate::op_bail;
use spare::Spare;

mod backward;
mod depthwise;
mod direct;
mod geometry;
mod grad_w;
mod grad_w_direct;
mod im2col;
mod naive;
mod pointwise;
mod schedule;
mod spare;
mod spec;
mod winograd;

pub use geometry::output_shape;
use geometry::{Geom, geometry, in_index, offsets, valid_range};
use im2col::{col2im_row_range, col2im_rows, im2col, im2col_rows};
pub use naive::{backward_naive, forward_naive};
use schedule::{ForwardOperands, ItemChunks, batch_plan, for_item_chunks, items_per_chunk};
pub use spec::{Conv2dSpec, FusedActivation, FusedConvSpec, Padding2d};

simd::kernel! {
    /// `d[i] *= act'`, 1 where `y[i]` is inside `(lo, hi)` and 0 elsewhere (`FusedActivation::passes`
    /// written out). A product, as the unfused activation's backward computes it, so that a NaN
    /// gradient stays NaN and signed zeros match bit for bit.
    fn mask_outside(lo: f32, hi: f32, y: &[f32], d: &mut [f32]) {
        for (d, &yv) in d.iter_mut().zip(y) {
            // a select, not a branch: the mask is data-dependent, and this form vectorises
            *d *= if yv > lo && yv < hi { 1.0 } else { 0.0 };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

/// y `[n, c_out, oh, ow]` = conv(x `[n, c_in, h, w]`, w `[c_out, c_in/g, kh, kw]`) + b `[c_out]`.
pub fn forward(
    spec: &Conv2dSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    forward_fused(spec, None, x, w, b)
}

/// y `[n, c_out, oh, ow]` = act(conv(x, w) + b): [`forward`] with the activation applied in the
/// bias pass (GEMM paths) or per output row (depthwise) instead of a separate op.
pub fn forward_fused(
    spec: &Conv2dSpec,
    act: Option<FusedActivation>,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    let g = geometry(spec, x.shape(), w.shape(), b.map(|b| b.shape()))?;
    let (xd, wd, bd) = (x.data(), w.data(), b.map(|b| b.data()));
    let ops = ForwardOperands {
        x: xd,
        w: wd,
        b: bd,
        act,
    };
    if g.is_pointwise() && !g.is_depthwise() {
        // (n, c_out, oh, ow), every element written once by the kernel: no zero fill
        return pointwise::pointwise_forward(&g, ops);
    }
    let mut y = Tensor::try_zeros(&g.output_shape())?; // (n, c_out, oh, ow)
    if x.numel() == 0 {
        // empty input planes inside their padding: every output sees only zeros
        if b.is_some() || act.is_some() {
            add_bias(&g, bd, act, y.data_mut());
        }
    } else if g.is_depthwise() {
        depthwise::depthwise_forward(&g, ops, y.data_mut());
    } else if winograd::prefers_forward(&g) {
        winograd::forward(&g, ops, &winograd::transformed(w), y.data_mut());
    } else if direct::prefers_forward(&g) {
        direct::forward(&g, ops, y.data_mut());
    } else {
        gemm_forward(&g, xd, wd, y.data_mut());
        if b.is_some() || act.is_some() {
            add_bias(&g, bd, act, y.data_mut());
        }
    }
    Ok(y)
}

/// y `[n, c_out, oh, ow]` = act(conv(x, w) + b + r) with r of y's shape: [`forward_fused`]
/// with a residual added before the activation. The 1x1 kernel starts its sums from b + r;
/// the other paths add r and apply the activation in one pass after the convolution.
pub fn forward_residual(
    spec: &Conv2dSpec,
    act: Option<FusedActivation>,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    r: &Tensor,
) -> Result<Tensor, OpError> {
    let g = geometry(spec, x.shape(), w.shape(), b.map(|b| b.shape()))?;
    if r.shape() != g.output_shape().as_slice() {
        op_bail!(
            "residual shape {:?} does not match output shape {:?}",
            r.shape(),
            g.output_shape()
        );
    }
    if g.is_pointwise() && !g.is_depthwise() {
        let ops = ForwardOperands {
            x: x.data(),
            w: w.data(),
            b: b.map(|b| b.data()),
            act,
        };
        return pointwise::pointwise_forward_residual(&g, ops, Some(r.data()));
    }
    let mut y = forward_fused(spec, None, x, w, b)?; // (n, c_out, oh, ow), before r and act
    add_residual(act, r.data(), y.data_mut());
    Ok(y)
}

/// y = act(y + r), element-wise over equal lengths, in parallel.
fn add_residual(act: Option<FusedActivation>, r: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(ELEMENTWISE_TASK)
        .zip(r.par_chunks(ELEMENTWISE_TASK))
        .for_each(|(yc, rc)| residual_act_row(yc, rc, act));
}

simd::kernel! {
    /// row = act(row + r), vectorised.
    fn residual_act_row(row: &mut [f32], r: &[f32], act: Option<FusedActivation>) {
        let pairs = row.iter_mut().zip(r);
        match act {
            None => pairs.for_each(|(v, &r)| *v += r),
            Some(FusedActivation::Relu) => pairs.for_each(|(v, &r)| *v = (*v + r).max(0.0)),
            Some(FusedActivation::Clip { min, max }) => {
                pairs.for_each(|(v, &r)| *v = (*v + r).max(min).min(max))
            }
        }
    }
}

/// Backward of [`forward_fused`]: the activation's derivative is read from the output `y`
/// (see [`FusedActivation::passes`]) and applied to `d_y` in place, then the convolution's
/// [`backward`] runs on the masked gradient. Returns `[d_x, grad_w, grad_b]` like [`backward`].
pub fn backward_fused(
    spec: &FusedConvSpec,
    x: &Tensor,
    w: &Tensor,
    has_bias: bool,
    y: &Tensor,
    mut d_y: Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    if let Some(act) = spec.activation {
        if y.shape() != d_y.shape() {
            op_bail!(
                "gradient shape {:?} does not match output shape {:?}",
                d_y.shape(),
                y.shape()
            );
        }
        act.mask_gradient(y.data(), d_y.data_mut()); // (n, c_out, oh, ow)
    }
    let mut grads = backward(&spec.conv, x, w, has_bias, &d_y, needs)?;
    if spec.residual {
        // d r = d z, the masked gradient itself (the input order is x, w, b, r)
        grads.resize(3, None);
        grads.push(needs.get(3).copied().unwrap_or(false).then_some(d_y));
    }
    Ok(grads)
}

/// Forward of every group of every item as GEMMs: y_g `(og, P)` = W_g `(og, K)` @ col `(K, P)`
/// (1x1 convolutions take `pointwise` instead, so there is always a column matrix to build).
fn gemm_forward(g: &Geom, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (chunks, par) = batch_plan(g.n);
    let per = items_per_chunk(g.n, chunks);
    let run = |(ci, y_chunk): (usize, &mut [f32])| {
        // one column buffer per chunk, reused across its items and groups: (K, P), every
        // element written by im2col before the product reads it
        let mut col = Spare::take(&SPARE_COLUMNS, g.k() * g.p());
        for (i, y_item) in y_chunk.chunks_exact_mut(g.y_item()).enumerate() {
            let x_item = &x[(ci * per + i) * g.x_item()..][..g.x_item()];
            forward_item(g, x_item, w, y_item, &mut col.buf, par);
        }
    };
    if chunks > 1 {
        y.par_chunks_mut(per * g.y_item()).enumerate().for_each(run);
    } else {
        y.chunks_mut(per * g.y_item()).enumerate().for_each(run);
    }
}

thread_local! {
    /// The forward column buffer of this thread's last im2col convolution ([`Spare`]): 7.4 MB
    /// for ResNet50's 7x7 stem, which took 5.7–6.7 ms with a fresh zeroed buffer per call and
    /// 5.4–5.7 ms with this one (AVX2, 2 threads, alternated).
    static SPARE_COLUMNS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// One batch item: x_item `(c_in, h, w)` → y_item `(c_out, oh, ow)`.
fn forward_item(
    g: &Geom,
    x_item: &[f32],
    w: &[f32],
    y_item: &mut [f32],
    col: &mut [f32],
    par: Parallelism,
) {
    let (k, p) = (g.k(), g.p());
    for grp in 0..g.groups {
        let x_g = &x_item[grp * g.cg * g.h * g.w..][..g.cg * g.h * g.w]; // (cg, h, w)
        let w_g = MatRef::row_major(&w[grp * g.og * k..][..g.og * k], g.og, k); // (og, K)
        let y_g = &mut y_item[grp * g.og * p..][..g.og * p]; // (og, P)
        im2col(x_g, g, col, par);
        sgemm(1.0, w_g, MatRef::row_major(col, k, p), 0.0, y_g, par);
    }
}

/// y `(n, c_out, P)` = act(y + b) with b `(c_out)` (zero when absent); parallel over planes.
fn add_bias(g: &Geom, b: Option<&[f32]>, act: Option<FusedActivation>, y: &mut [f32]) {
    let planes_per_task = (ELEMENTWISE_TASK / g.p().max(1)).max(1);
    y.par_chunks_mut(g.p() * planes_per_task)
        .enumerate()
        .for_each(|(t, planes)| {
            for (i, plane) in planes.chunks_exact_mut(g.p()).enumerate() {
                let bv = b.map_or(0.0, |b| b[(t * planes_per_task + i) % g.c_out]);
                bias_act_row(plane, bv, act);
            }
        });
}

/// Elements per rayon task of the bias / activation epilogue: below this, splitting costs more
/// than it saves at batch 1.
const ELEMENTWISE_TASK: usize = 1 << 14;

simd::kernel! {
    /// row = act(row + bias), vectorised (the clamp compiles to min/max instructions).
    fn bias_act_row(row: &mut [f32], bias: f32, act: Option<FusedActivation>) {
        match act {
            None => row.iter_mut().for_each(|v| *v += bias),
            Some(FusedActivation::Relu) => row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
            Some(FusedActivation::Clip { min, max }) => row
                .iter_mut()
                .for_each(|v| *v = (*v + bias).max(min).min(max)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

/// Checks shapes for backward and returns the geometry.
fn backward_geometry(
    spec: &Conv2dSpec,
    x: &Tensor,
    w: &Tensor,
    has_bias: bool,
    d_y: &Tensor,
) -> Result<Geom, OpError> {
    let c_out = w.shape().first().copied().unwrap_or(0);
    let b_shape = [c_out];
    let g = geometry(spec, x.shape(), w.shape(), has_bias.then_some(&b_shape[..]))?;
    if d_y.shape() != g.output_shape() {
        op_bail!(
            "gradient shape {:?} does not match the output shape {:?}",
            d_y.shape(),
            g.output_shape()
        );
    }
    Ok(g)
}

/// Returns `[d_x, grad_w, grad_b]` (grad_b only when `has_bias`), each computed iff `needs[i]`.
pub fn backward(
    spec: &Conv2dSpec,
    x: &Tensor,
    w: &Tensor,
    has_bias: bool,
    d_y: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>, OpError> {
    let g = backward_geometry(spec, x, w, has_bias, d_y)?;
    let need = |i: usize| needs.get(i).copied().unwrap_or(false);
    let (xd, wd, dyd) = (x.data(), w.data(), d_y.data());
    let d_x = if need(0) {
        let mut d_x = Tensor::try_zeros(x.shape())?; // (n, c_in, h, w)
        if x.numel() == 0 {
            // nothing to fill (and no kernel should see an empty plane)
        } else if g.is_depthwise() {
            depthwise::depthwise_backward_x(&g, wd, dyd, d_x.data_mut());
        } else if winograd::prefers_backward_x(&g) {
            let u = winograd::transformed_for_backward_x(&g, w);
            winograd::backward_x(&g, &u, dyd, d_x.data_mut());
        } else if !g.is_pointwise() && direct::prefers_backward_x(&g) {
            direct::backward_x(&g, wd, dyd, d_x.data_mut());
        } else if !g.is_pointwise() {
            backward::scatter_backward_x_blocked(
                &g,
                wd,
                dyd,
                d_x.data_mut(),
                backward::BLOCK_FLOATS,
            );
        } else {
            pointwise_backward_x(&g, wd, dyd, d_x.data_mut());
        }
        Some(d_x)
    } else {
        None
    };
    let grad_w = if need(1) {
        let mut gw = Tensor::try_zeros(w.shape())?; // (c_out, cg, kh, kw)
        if x.numel() == 0 {
            // an all-padding input contributes nothing: grad_w stays zero
        } else if g.is_depthwise() {
            depthwise_backward_w(&g, xd, dyd, gw.data_mut());
        } else if grad_w_direct::prefers(&g) {
            grad_w_direct::backward_w(&g, xd, dyd, gw.data_mut());
        } else {
            grad_w::backward_w(&g, xd, dyd, gw.data_mut(), grad_w::Blocking::DEFAULT);
        }
        Some(gw)
    } else {
        None
    };
    let mut out = vec![d_x, grad_w];
    if has_bias {
        out.push(need(2).then(|| bias_grad(&g, dyd)));
    }
    Ok(out)
}

/// grad_b `[c_out]` = Σ_{n, oy, ox} d_y.
fn bias_grad(g: &Geom, d_y: &[f32]) -> Tensor {
    let mut gb = vec![0.0f32; g.c_out];
    // planes summed in order into their channel: deterministic whatever the thread count
    for (i, plane) in d_y.chunks_exact(g.p()).enumerate() {
        gb[i % g.c_out] += super::lanes::sum(plane);
    }
    Tensor::new(vec![g.c_out], gb)
        .unwrap_or_else(|_| unreachable!("bias gradient has c_out elements"))
}

/// d_x of a pointwise convolution (1x1, stride 1, unpadded), where the input plane is the
/// column matrix: dx_g `(cg, P)` = W_gᵀ `(cg, og)` @ dy_g `(og, P)`.
fn pointwise_backward_x(g: &Geom, w: &[f32], d_y: &[f32], d_x: &mut [f32]) {
    let (chunks, par) = batch_plan(g.n);
    let per = items_per_chunk(g.n, chunks);
    let (k, p) = (g.k(), g.p());
    let run = |(ci, dx_chunk): (usize, &mut [f32])| {
        for (i, dx_item) in dx_chunk.chunks_exact_mut(g.x_item()).enumerate() {
            let dy_item = &d_y[(ci * per + i) * g.y_item()..][..g.y_item()];
            for grp in 0..g.groups {
                let w_g = MatRef::row_major(&w[grp * g.og * k..][..g.og * k], g.og, k); // (og, K)
                let dy_g = MatRef::row_major(&dy_item[grp * g.og * p..][..g.og * p], g.og, p);
                let dx_g = &mut dx_item[grp * g.cg * p..][..g.cg * p]; // (cg, P)
                sgemm(1.0, w_g.t(), dy_g, 0.0, dx_g, par);
            }
        }
    };
    if chunks > 1 {
        d_x.par_chunks_mut(per * g.x_item())
            .enumerate()
            .for_each(run);
    } else {
        d_x.chunks_mut(per * g.x_item()).enumerate().for_each(run);
    }
}

/// Depthwise grad_w, one task per output channel: gw[co, ki, kj] = Σ_{n, oy, ox} dy · x.
fn depthwise_backward_w(g: &Geom, x: &[f32], d_y: &[f32], gw: &mut [f32]) {
    let ks = g.kh * g.kw;
    let plane_in = g.h * g.w;
    let xoffs = offsets(g.kw, g.dw, g.left);
    let xranges: Vec<(usize, usize)> = xoffs
        .iter()
        .map(|&o| valid_range(g.ow, g.w, g.sw, o))
        .collect();
    gw.par_chunks_exact_mut(ks)
        .enumerate()
        .for_each(|(co, gw_c)| {
            for ni in 0..g.n {
                let x_c = &x[(ni * g.c_in + co / g.og) * plane_in..][..plane_in];
                let dy_p = &d_y[(ni * g.c_out + co) * g.p()..][..g.p()];
                for (oy, dyrow) in dy_p.chunks_exact(g.ow).enumerate() {
                    for ki in 0..g.kh {
                        let iy = (oy * g.sh + ki * g.dh) as isize - g.top as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        let xrow = &x_c[iy as usize * g.w..][..g.w];
                        for kj in 0..g.kw {
                            let (lo, hi) = xranges[kj];
                            if lo == hi {
                                continue;
                            }
                            let start = in_index(lo, g.sw, xoffs[kj]);
                            let dot: f32 = if g.sw == 1 {
                                dyrow[lo..hi]
                                    .iter()
                                    .zip(&xrow[start..start + (hi - lo)])
                                    .map(|(a, b)| a * b)
                                    .sum()
                            } else {
                                dyrow[lo..hi]
                                    .iter()
                                    .zip(xrow[start..].iter().step_by(g.sw))
                                    .map(|(a, b)| a * b)
                                    .sum()
                            };
                            gw_c[ki * g.kw + kj] += dot;
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gradcheck::{assert_op_gradients, test_tensor};
    use crate::engine::ops::{Mode, Op};
    use proptest::prelude::*;

    fn spec(
        stride: [usize; 2],
        padding: Padding2d,
        dilation: [usize; 2],
        groups: usize,
    ) -> Conv2dSpec {
        Conv2dSpec {
            stride,
            padding,
            dilation,
            groups,
        }
    }

    fn pad(top: usize, left: usize, bottom: usize, right: usize) -> Padding2d {
        Padding2d {
            top,
            left,
            bottom,
            right,
        }
    }

    /// Asserts |a - b| <= 1e-4 · max(max|b|, 1) element-wise.
    fn assert_close(what: &str, a: &Tensor, b: &Tensor) -> Result<(), TestCaseError> {
        prop_assert_eq!(a.shape(), b.shape(), "{} shape", what);
        let scale = b.max_abs().max(1.0);
        let diff = a
            .data()
            .iter()
            .zip(b.data())
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        prop_assert!(
            diff <= 1e-4 * scale,
            "{}: max diff {} (scale {})",
            what,
            diff,
            scale
        );
        Ok(())
    }

    /// Runs fast forward and backward against the naive definitions for one geometry, at
    /// every instruction-set level this CPU has.
    fn check_fast_vs_naive(
        s: &Conv2dSpec,
        x_shape: [usize; 4],
        w_shape: [usize; 4],
        bias: bool,
        seed: u64,
    ) -> Result<(), TestCaseError> {
        simd::try_each_level(2, |level| {
            check_fast_vs_naive_here(s, x_shape, w_shape, bias, seed)
                .map_err(|e| TestCaseError::fail(format!("at {level}: {e}")))
        })
    }

    /// [`check_fast_vs_naive`] at the current thread's level.
    fn check_fast_vs_naive_here(
        s: &Conv2dSpec,
        x_shape: [usize; 4],
        w_shape: [usize; 4],
        bias: bool,
        seed: u64,
    ) -> Result<(), TestCaseError> {
        let x = test_tensor(&x_shape, seed);
        let w = test_tensor(&w_shape, seed + 1);
        let b = bias.then(|| test_tensor(&[w_shape[0]], seed + 2));
        let fast = forward(s, &x, &w, b.as_ref()).map_err(|e| TestCaseError::fail(e.0))?;
        let slow = forward_naive(s, &x, &w, b.as_ref()).map_err(|e| TestCaseError::fail(e.0))?;
        assert_close("forward", &fast, &slow)?;
        let dy = test_tensor(fast.shape(), seed + 3);
        let grads = backward(s, &x, &w, bias, &dy, &[true, true, true])
            .map_err(|e| TestCaseError::fail(e.0))?;
        let [dx, gw, gb] = backward_naive(s, &x, &w, &dy).map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert_eq!(grads.len(), if bias { 3 } else { 2 });
        assert_close(
            "d_x",
            grads[0]
                .as_ref()
                .ok_or_else(|| TestCaseError::fail("no d_x"))?,
            &dx,
        )?;
        assert_close(
            "grad_w",
            grads[1]
                .as_ref()
                .ok_or_else(|| TestCaseError::fail("no grad_w"))?,
            &gw,
        )?;
        if bias {
            assert_close(
                "grad_b",
                grads[2]
                    .as_ref()
                    .ok_or_else(|| TestCaseError::fail("no grad_b"))?,
                &gb,
            )?;
        }
        Ok(())
    }

    /// act(naive conv + b), b optional.
    /// act(naive conv + b + r).
    fn naive_residual(
        s: &Conv2dSpec,
        act: Option<FusedActivation>,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        r: &Tensor,
    ) -> Tensor {
        let z = forward_naive(s, x, w, Some(b)).unwrap();
        let data = z.data().iter().zip(r.data()).map(|(&v, &rv)| {
            let v = v + rv;
            act.map_or(v, |a| a.activation().apply(v))
        });
        Tensor::new(z.shape().to_vec(), data.collect()).unwrap()
    }

    fn naive_fused(
        s: &Conv2dSpec,
        act: Option<FusedActivation>,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Tensor {
        let z = forward_naive(s, x, w, b).unwrap();
        match act {
            Some(a) => z.map(|v| a.activation().apply(v)),
            None => z,
        }
    }

    /// Fused forward on one and on two threads, at every instruction-set level this CPU has:
    /// each close to the naive definition, and the two threads' results bit-identical.
    fn check_threads_vs_naive(
        s: &Conv2dSpec,
        act: Option<FusedActivation>,
        x_shape: [usize; 4],
        w_shape: [usize; 4],
        seed: u64,
    ) -> Result<(), TestCaseError> {
        simd::try_each_level(1, |level| {
            check_threads_vs_naive_at(level, s, act, x_shape, w_shape, seed)
                .map_err(|e| TestCaseError::fail(format!("at {level}: {e}")))
        })
    }

    /// [`check_threads_vs_naive`] at one level.
    fn check_threads_vs_naive_at(
        level: simd::Level,
        s: &Conv2dSpec,
        act: Option<FusedActivation>,
        x_shape: [usize; 4],
        w_shape: [usize; 4],
        seed: u64,
    ) -> Result<(), TestCaseError> {
        let x = test_tensor(&x_shape, seed);
        let w = test_tensor(&w_shape, seed + 1);
        let b = test_tensor(&[w_shape[0]], seed + 2);
        let want = naive_fused(s, act, &x, &w, Some(&b));
        let run = |threads: usize| {
            simd::with_level(level, threads, || {
                forward_fused(s, act, &x, &w, Some(&b)).unwrap()
            })
            .unwrap()
        };
        let (one, two) = (run(1), run(2));
        assert_close("fused forward, 1 thread", &one, &want)?;
        prop_assert_eq!(one.data(), two.data(), "1 and 2 threads differ");
        Ok(())
    }

    /// Random geometry: (spec, x shape, w shape). Channel layout: plain, grouped or depthwise
    /// (with a channel multiplier); the input is sized so the output has at least one pixel.
    fn geometry_strategy() -> impl Strategy<Value = (Conv2dSpec, [usize; 4], [usize; 4])> {
        let channels = prop_oneof![
            (1usize..4, 1usize..4).prop_map(|(ci, co)| (1usize, ci, co)),
            (2usize..4, 1usize..3, 1usize..3).prop_map(|(g, cg, og)| (g, g * cg, g * og)),
            (2usize..5, 1usize..3).prop_map(|(c, m)| (c, c, c * m)),
        ];
        (
            channels,
            1usize..4,
            (1usize..6, 1usize..6),
            (1usize..4, 1usize..4),
            (0usize..4, 0usize..4, 0usize..4, 0usize..4),
            (1usize..4, 1usize..4),
            (0usize..6, 0usize..6),
        )
            .prop_map(
                |(
                    (groups, c_in, c_out),
                    n,
                    (kh, kw),
                    (sh, sw),
                    (t, l, bo, r),
                    (dh, dw),
                    (eh, ew),
                )| {
                    let span_h = dh * (kh - 1) + 1;
                    let span_w = dw * (kw - 1) + 1;
                    let h = (span_h + eh).saturating_sub(t + bo).max(1);
                    let w = (span_w + ew).saturating_sub(l + r).max(1);
                    (
                        spec([sh, sw], pad(t, l, bo, r), [dh, dw], groups),
                        [n, c_in, h, w],
                        [c_out, c_in / groups, kh, kw],
                    )
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn fast_matches_naive_on_random_geometries((s, xs, ws) in geometry_strategy(), bias: bool, seed in 0u64..1000) {
            check_fast_vs_naive(&s, xs, ws, bias, seed)?;
        }

        #[test]
        fn im2col_rows_matches_the_columns_of_im2col((s, xs, ws) in geometry_strategy(), seed in 0u64..1000, split in 0usize..8) {
            let g = geometry(&s, &xs, &ws, None).unwrap();
            let x = test_tensor(&xs, seed);
            let x_g = &x.data()[..g.cg * g.h * g.w]; // first group of item 0: (cg, h, w)
            let (k, p) = (g.k(), g.p());
            let mut col = vec![f32::NAN; k * p]; // (K, P)
            im2col(x_g, &g, &mut col, Parallelism::Sequential);
            let oy0 = split.min(g.oh - 1);
            let rows = oy0..g.oh;
            let cols = rows.len() * g.ow;
            let mut got = vec![f32::NAN; k * cols]; // (K, cols)
            im2col_rows(x_g, &g, rows, &mut got);
            for r in 0..k {
                prop_assert_eq!(&got[r * cols..(r + 1) * cols], &col[r * p + oy0 * g.ow..(r + 1) * p]);
            }
        }

        /// The blocked d_x kernel, with blocks small enough that most geometries span several
        /// (down to one row each), and the whole-plane d_x (one GEMM per item and group,
        /// col2im per input channel), on one and two threads, against the naive d_x.
        #[test]
        fn blocked_and_whole_plane_d_x_match_naive((s, xs, ws) in geometry_strategy(),
                                                  seed in 0u64..1000, block_floats in 1usize..300,
                                                  threads in 1usize..3) {
            let g = geometry(&s, &xs, &ws, None).unwrap();
            let (x, w) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1));
            let dy = test_tensor(&g.output_shape(), seed + 2);
            let [want, _, _] = backward_naive(&s, &x, &w, &dy).unwrap();
            simd::try_each_level(threads, |level| {
                let mut blocked = vec![0.0f32; x.numel()]; // (n, c_in, h, w)
                let mut whole = vec![0.0f32; x.numel()];
                backward::scatter_backward_x_blocked(&g, w.data(), dy.data(), &mut blocked, block_floats);
                for (ni, dx_item) in whole.chunks_exact_mut(g.x_item()).enumerate() {
                    let dy_item = &dy.data()[ni * g.y_item()..][..g.y_item()];
                    backward::scatter_item_whole(&g, w.data(), dy_item, dx_item);
                }
                assert_close(&format!("{level} blocked d_x"), &Tensor::new(xs.to_vec(), blocked).unwrap(), &want)?;
                assert_close(&format!("{level} whole-plane d_x"), &Tensor::new(xs.to_vec(), whole).unwrap(), &want)
            })?;
        }

        /// The direct stride-1 d_x kernel on every geometry it applies to (any kernel size,
        /// dilation, groups, channel counts that leave partial channel blocks and partial
        /// pixel tiles), on one and two threads, against the naive d_x.
        #[test]
        fn direct_d_x_matches_naive((s, xs, ws) in geometry_strategy(), seed in 0u64..1000,
                                    wide in 0usize..40, threads in 1usize..3) {
            // stride 1, padding within the dilated kernel; some inputs wider than one tile
            let [_, _, kh, kw] = ws;
            let (span_h, span_w) = ((kh - 1) * s.dilation[0], (kw - 1) * s.dilation[1]);
            let p = s.padding;
            let s = spec([1, 1], pad(p.top.min(span_h), p.left.min(span_w), p.bottom, p.right),
                         s.dilation, s.groups);
            let xs = [xs[0], xs[1], xs[2] + span_h, xs[3] + span_w + wide];
            let g = geometry(&s, &xs, &ws, None).unwrap();
            prop_assert!(direct::backward_x_applies(&g));
            let (x, w) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1));
            let dy = test_tensor(&g.output_shape(), seed + 2);
            let [want, _, _] = backward_naive(&s, &x, &w, &dy).unwrap();
            simd::try_each_level(threads, |level| {
                let mut got = vec![f32::NAN; x.numel()]; // every element must be written
                direct::backward_x(&g, w.data(), dy.data(), &mut got);
                assert_close(&format!("{level} direct d_x"), &Tensor::new(xs.to_vec(), got).unwrap(), &want)
            })?;
        }

        /// The direct stride-1 forward kernel on any stride-1 geometry (any padding, also wider
        /// than the kernel, dilation, groups, partial channel blocks and pixel tiles), with
        /// bias and a fused activation, on one and two threads, against the naive forward.
        #[test]
        fn direct_forward_matches_naive((s, xs, ws) in geometry_strategy(), seed in 0u64..1000,
                                        wide in 0usize..40, bias: bool, which in 0usize..3,
                                        threads in 1usize..3) {
            let s = spec([1, 1], s.padding, s.dilation, s.groups);
            let xs = [xs[0], xs[1], xs[2], xs[3] + wide];
            let g = geometry(&s, &xs, &ws, None).unwrap();
            prop_assume!(!g.is_depthwise());
            let act = [None, Some(FusedActivation::Relu),
                       Some(FusedActivation::Clip { min: -0.2, max: 0.3 })][which];
            let (x, w) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1));
            let b = bias.then(|| test_tensor(&[ws[0]], seed + 2));
            let want = naive_fused(&s, act, &x, &w, b.as_ref());
            simd::try_each_level(threads, |level| {
                let mut got = vec![f32::NAN; want.numel()]; // every element must be written
                let bd = b.as_ref().map(|b| b.data());
                let ops = ForwardOperands { x: x.data(), w: w.data(), b: bd, act };
                direct::forward(&g, ops, &mut got);
                assert_close(&format!("{level} direct forward"), &Tensor::new(g.output_shape(), got).unwrap(), &want)
            })?;
        }

        /// Winograd F(2x2, 3x3), forward (with bias and a fused activation) and d_x, on any 3x3
        /// stride-1 geometry it applies to (any padding for the forward, up to 2 for d_x, odd
        /// and even sizes, groups, batches that split across threads, planes of several chunks
        /// of tile rows), against the naive definitions; one and two threads bit-identical.
        #[test]
        fn winograd_forward_and_d_x_match_naive(
            (groups, cg, og) in (1usize..3, 1usize..6, 1usize..6), n in 1usize..4,
            (h, w) in (1usize..20, 1usize..40), (t, l, bo, r) in (0usize..4, 0usize..4, 0usize..4, 0usize..4),
            bias: bool, which in 0usize..3, seed in 0u64..1000,
        ) {
            let s = spec([1, 1], pad(t, l, bo, r), [1, 1], groups);
            // at least one output pixel: h + t + bo ≥ 3
            let xs = [n, groups * cg, h.max(3usize.saturating_sub(t + bo)), w.max(3usize.saturating_sub(l + r))];
            let ws = [groups * og, cg, 3, 3];
            let g = geometry(&s, &xs, &ws, None).unwrap();
            prop_assume!(!g.is_depthwise());
            prop_assert!(winograd::applies(&g));
            let act = [None, Some(FusedActivation::Relu),
                       Some(FusedActivation::Clip { min: -0.2, max: 0.3 })][which];
            let (x, wt) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1));
            let b = bias.then(|| test_tensor(&[ws[0]], seed + 2));
            let want = naive_fused(&s, act, &x, &wt, b.as_ref());
            let dy = test_tensor(&g.output_shape(), seed + 3);
            let [want_dx, _, _] = backward_naive(&s, &x, &wt, &dy).unwrap();
            for level in simd::Level::supported() {
                let run = |threads: usize| {
                    simd::with_level(level, threads, || {
                        let mut y = vec![f32::NAN; want.numel()]; // every element must be written
                        let bd = b.as_ref().map(|b| b.data());
                        let ops = ForwardOperands { x: x.data(), w: wt.data(), b: bd, act };
                        // fresh each time, as a changed weight would be
                        let u = winograd::transform_weights(wt.data(), ws[0], cg);
                        winograd::forward(&g, ops, &u, &mut y);
                        let mut dx = vec![f32::NAN; x.numel()];
                        if direct::backward_x_applies(&g) {
                            let turned = winograd::turned_weights(&g, wt.data());
                            let ut = winograd::transform_weights(&turned, g.groups * g.cg, g.og);
                            winograd::backward_x(&g, &ut, dy.data(), &mut dx);
                        }
                        (y, dx)
                    })
                    .unwrap()
                };
                let ((y1, dx1), (y2, dx2)) = (run(1), run(2));
                assert_close(&format!("{level} winograd forward"), &Tensor::new(g.output_shape(), y1.clone()).unwrap(), &want)?;
                prop_assert_eq!(&y1, &y2, "{} forward: 1 and 2 threads differ", level);
                if direct::backward_x_applies(&g) {
                    assert_close(&format!("{level} winograd d_x"), &Tensor::new(xs.to_vec(), dx1.clone()).unwrap(), &want_dx)?;
                    prop_assert_eq!(&dx1, &dx2, "{} d_x: 1 and 2 threads differ", level);
                }
            }
        }

        /// The direct stride-1 grad_w kernel on every geometry it applies to (kernels up to 7
        /// wide, any padding, dilation, groups, partial channel blocks and vectors), at every
        /// instruction-set level of this CPU, on one and two threads, against the naive grad_w.
        #[test]
        fn direct_grad_w_matches_naive((s, xs, ws) in geometry_strategy(), seed in 0u64..1000,
                                       wide in 0usize..40, threads in 1usize..3) {
            let s = spec([1, 1], s.padding, s.dilation, s.groups);
            let xs = [xs[0], xs[1], xs[2], xs[3] + wide];
            let g = geometry(&s, &xs, &ws, None).unwrap();
            prop_assume!(!g.is_depthwise());
            prop_assert!(grad_w_direct::applies(&g));
            let (x, w) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1));
            let dy = test_tensor(&g.output_shape(), seed + 2);
            let [_, want, _] = backward_naive(&s, &x, &w, &dy).unwrap();
            simd::try_each_level(threads, |level| {
                let mut got = vec![0.0f32; w.numel()]; // (c_out, cg, kh, kw)
                grad_w_direct::backward_w(&g, x.data(), dy.data(), &mut got);
                assert_close(&format!("{level} direct grad_w"), &Tensor::new(ws.to_vec(), got).unwrap(), &want)
            })?;
        }

        /// grad_w with column blocks of a few output rows (several blocks per image), through
        /// the small-K and the large-K path, on one and two threads (a single item then splits
        /// its rows), against the naive grad_w (depthwise has its own kernel).
        #[test]
        fn blocked_grad_w_matches_naive((s, xs, ws) in geometry_strategy(), seed in 0u64..1000,
                                        block_floats in 1usize..300, small_k_max in 0usize..80,
                                        threads in 1usize..3) {
            let g = geometry(&s, &xs, &ws, None).unwrap();
            prop_assume!(!g.is_depthwise());
            let (x, w) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1));
            let dy = test_tensor(&g.output_shape(), seed + 2);
            let [_, want, _] = backward_naive(&s, &x, &w, &dy).unwrap();
            simd::try_each_level(threads, |level| {
                let mut got = vec![0.0f32; w.numel()]; // (c_out, cg, kh, kw)
                let blocking = grad_w::Blocking { block_floats, small_k_max };
                grad_w::backward_w(&g, x.data(), dy.data(), &mut got, blocking);
                assert_close(&format!("{level} blocked grad_w"), &Tensor::new(ws.to_vec(), got).unwrap(), &want)
            })?;
        }

        #[test]
        fn fused_forward_matches_naive_then_activation((s, xs, ws) in geometry_strategy(), bias: bool,
                                                      which in 0usize..3, seed in 0u64..1000) {
            let act = [
                None,
                Some(FusedActivation::Relu),
                Some(FusedActivation::Clip { min: -0.2, max: 0.3 }),
            ][which];
            let x = test_tensor(&xs, seed);
            let w = test_tensor(&ws, seed + 1);
            let b = bias.then(|| test_tensor(&[ws[0]], seed + 2));
            let fast = forward_fused(&s, act, &x, &w, b.as_ref()).unwrap();
            let z = forward_naive(&s, &x, &w, b.as_ref()).unwrap();
            let slow = match act {
                Some(a) => z.map(|v| a.activation().apply(v)),
                None => z,
            };
            assert_close("fused forward", &fast, &slow)?;
        }

        /// The depthwise kernels (flat stride 1, phase-split stride 2 and above) on
        /// MobileNet-like shapes, against the naive definition.
        #[test]
        fn depthwise_paths_match_naive(c in 1usize..6, m in 1usize..3, k in 1usize..6, (sh, sw) in (1usize..3, 1usize..4),
                                       p in 0usize..3, d in 1usize..3, (h, w) in (6usize..20, 6usize..20),
                                       bias: bool, seed in 0u64..1000) {
            let span = d * (k - 1) + 1;
            prop_assume!(h + 2 * p >= span && w + 2 * p >= span);
            let s = spec([sh, sw], Padding2d::uniform(p), [d, d], c);
            check_fast_vs_naive(&s, [1, c, h, w], [c * m, 1, k, k], bias, seed)?;
        }

        /// The depthwise kernel at batch 1 and above, with a fused activation, on one and two
        /// threads (the thread count must not change a single bit of the output); forward and
        /// backward with asymmetric padding at every level.
        #[test]
        fn depthwise_batches_and_threads_match_naive(n in 1usize..4, c in 1usize..5, m in 1usize..3,
                                                     k in 1usize..6, (sh, sw) in (1usize..3, 1usize..3),
                                                     (t, l, bo, r) in (0usize..3, 0usize..3, 0usize..3, 0usize..3),
                                                     d in 1usize..3, (h, w) in (1usize..17, 1usize..17),
                                                     relu: bool, seed in 0u64..1000) {
            let span = d * (k - 1) + 1;
            prop_assume!(h + t + bo >= span && w + l + r >= span);
            let s = spec([sh, sw], pad(t, l, bo, r), [d, d], c);
            let act = relu.then_some(FusedActivation::Relu);
            check_threads_vs_naive(&s, act, [n, c, h, w], [c * m, 1, k, k], seed)?;
            // and the backward (d_x is the forward's adjoint on the same phase planes)
            check_fast_vs_naive(&s, [n, c, h, w], [c * m, 1, k, k], relu, seed)?;
        }

        /// The pointwise kernel at every instruction-set level this CPU has, on shapes with
        /// partial row tiles, partial column panels and several K-blocks, with each
        /// activation, on one and two threads.
        #[test]
        fn pointwise_kernel_matches_naive(n in 1usize..3, groups in 1usize..3, cg in 1usize..300,
                                          og in 1usize..20, hw in 1usize..80, which in 0usize..3,
                                          residual: bool, seed in 0u64..1000) {
            let s = spec([1, 1], Padding2d::default(), [1, 1], groups);
            let act = [None, Some(FusedActivation::Relu),
                       Some(FusedActivation::Clip { min: -0.2, max: 0.3 })][which];
            let (xs, ws) = ([n, groups * cg, 1, hw], [groups * og, cg, 1, 1]);
            let g = geometry(&s, &xs, &ws, None).unwrap();
            let (x, w, b) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1), test_tensor(&[ws[0]], seed + 2));
            let r = test_tensor(&g.output_shape(), seed + 3);
            let want = if residual {
                naive_residual(&s, act, &x, &w, &b, &r)
            } else {
                naive_fused(&s, act, &x, &w, Some(&b))
            };
            check_threads_vs_naive(&s, act, xs, ws, seed)?;
            simd::try_each_level(2, |level| {
                let mut got = vec![f32::NAN; want.numel()];
                let ops = ForwardOperands { x: x.data(), w: w.data(), b: Some(b.data()), act };
                pointwise::pointwise_forward_into(&g, ops, residual.then_some(r.data()), &mut got);
                assert_close(&format!("{level} pointwise"), &Tensor::new(want.shape().to_vec(), got).unwrap(), &want)
            })?;
        }

        /// The residual join on every path (1x1, direct, GEMM), at every level: forward
        /// against act(naive + r), and backward's d_r is the activation-masked d_y while d_x,
        /// d_w and d_b equal the plain convolution's backward of that masked gradient.
        #[test]
        fn residual_join_matches_naive(n in 1usize..3, c_in in 1usize..6, c_out in 1usize..6,
                                       k in prop::sample::select(vec![1usize, 3]), stride in 1usize..3,
                                       h in 1usize..12, relu: bool, seed in 0u64..1000) {
            let s = spec([stride, stride], Padding2d::uniform(k / 2), [1, 1], 1);
            let act = relu.then_some(FusedActivation::Relu);
            let (xs, ws) = ([n, c_in, h, h + 1], [c_out, c_in, k, k]);
            let g = geometry(&s, &xs, &ws, None).unwrap();
            let (x, w, b) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1), test_tensor(&[c_out], seed + 2));
            let r = test_tensor(&g.output_shape(), seed + 3);
            let want = naive_residual(&s, act, &x, &w, &b, &r);
            simd::try_each_level(2, |level| {
                let y = forward_residual(&s, act, &x, &w, Some(&b), &r).unwrap();
                assert_close(&format!("{level} residual forward"), &y, &want)?;
                let d_y = test_tensor(y.shape(), seed + 4);
                let fused = FusedConvSpec { conv: s.clone(), activation: act, residual: true };
                let got = backward_fused(&fused, &x, &w, true, &y, d_y.clone(), &[true; 4]).unwrap();
                let mut d_z = d_y.clone();
                if let Some(a) = act {
                    a.mask_gradient(y.data(), d_z.data_mut());
                }
                let plain = backward(&s, &x, &w, true, &d_z, &[true; 3]).unwrap();
                prop_assert_eq!(got.len(), 4);
                prop_assert_eq!(got[3].as_ref(), Some(&d_z));
                for (i, (a, b)) in got.iter().zip(&plain).enumerate() {
                    prop_assert_eq!(a.as_ref(), b.as_ref(), "gradient {}", i);
                }
                // and the gradient of r is left out when not asked for
                let none = backward_fused(&fused, &x, &w, true, &y, d_y, &[true, true, true, false]).unwrap();
                prop_assert!(none[3].is_none());
                Ok(())
            })?;
        }

        #[test]
        fn pointwise_path_matches_naive(n in 1usize..4, groups in 1usize..3, cg in 1usize..5, og in 1usize..5,
                                        h in 1usize..7, w in 1usize..7, bias: bool, seed in 0u64..1000) {
            let s = spec([1, 1], Padding2d::default(), [1, 1], groups);
            check_fast_vs_naive(&s, [n, groups * cg, h, w], [groups * og, cg, 1, 1], bias, seed)?;
        }
    }

    proptest! {
        // the naive convolution of each case takes about a second
        #![proptest_config(ProptestConfig::with_cases(6))]

        /// Winograd on planes of several chunks of tile rows and channel counts past one GEMM
        /// block, against the naive definitions.
        #[test]
        fn winograd_on_large_planes_matches_naive(cg in 128usize..150, og in 128usize..150, seed in 0u64..100) {
            let s = spec([1, 1], Padding2d::uniform(1), [1, 1], 1);
            let xs = [1, cg, 41, 29];
            let ws = [og, cg, 3, 3];
            let g = geometry(&s, &xs, &ws, None).unwrap();
            prop_assert!(winograd::prefers_forward(&g) && winograd::prefers_backward_x(&g));
            prop_assert!(winograd::chunk_count(&g) > 1, "one chunk: the test misses chunking");
            let (x, wt) = (test_tensor(&xs, seed), test_tensor(&ws, seed + 1));
            let b = test_tensor(&[og], seed + 2);
            let want = forward_naive(&s, &x, &wt, Some(&b)).unwrap();
            let got = forward(&s, &x, &wt, Some(&b)).unwrap();
            assert_close("winograd forward", &got, &want)?;
            let dy = test_tensor(&g.output_shape(), seed + 3);
            let [want_dx, _, _] = backward_naive(&s, &x, &wt, &dy).unwrap();
            let got_dx = backward(&s, &x, &wt, true, &dy, &[true, false, false]).unwrap();
            assert_close("winograd d_x", got_dx[0].as_ref().unwrap(), &want_dx)?;
        }
    }

    /// The smile CNN's layer shapes (scaled down) at batch 1 and 3, with a bias: every d_x
    /// path (blocked col2im on one or more threads) and the blocked grad_w against the naive loops.
    #[test]
    fn smile_like_geometries_match_naive() {
        let cases = [
            (
                spec([1, 1], Padding2d::uniform(2), [1, 1], 1),
                [1, 8, 19, 17],
                [8, 8, 5, 5],
            ),
            (
                spec([1, 1], Padding2d::uniform(2), [1, 1], 1),
                [3, 3, 11, 9],
                [6, 3, 5, 5],
            ),
            (
                spec([1, 1], Padding2d::uniform(1), [1, 1], 1),
                [3, 4, 9, 10],
                [8, 4, 3, 3],
            ),
        ];
        for (s, xs, ws) in cases {
            check_fast_vs_naive(&s, xs, ws, true, 7).unwrap();
        }
    }

    /// The Winograd path keeps the weights' transform with the weight tensor: a changed weight
    /// must be transformed again. Doubling every weight doubles the output exactly (the
    /// transforms are additions and halvings), so a stale transform shows as equality.
    #[test]
    fn winograd_sees_a_changed_weight() {
        let s = spec([1, 1], Padding2d::uniform(1), [1, 1], 1);
        let (xs, ws) = ([1, 128, 14, 14], [128, 128, 3, 3]);
        let g = geometry(&s, &xs, &ws, None).unwrap();
        assert!(
            winograd::prefers_forward(&g),
            "the test needs the Winograd path"
        );
        let (x, mut w) = (test_tensor(&xs, 1), test_tensor(&ws, 2));
        let y1 = forward(&s, &x, &w, None).unwrap();
        assert_eq!(
            forward(&s, &x, &w, None).unwrap(),
            y1,
            "the kept transform differs"
        );
        w.data_mut().iter_mut().for_each(|v| *v *= 2.0);
        let y2 = forward(&s, &x, &w, None).unwrap();
        let doubled: Vec<f32> = y1.data().iter().map(|v| 2.0 * v).collect();
        assert_eq!(y2.data(), doubled.as_slice());
        let dy = test_tensor(&g.output_shape(), 3);
        let d_x = |w: &Tensor| backward(&s, &x, w, false, &dy, &[true]).unwrap()[0].clone();
        let (dx2, dx1) = (d_x(&w), d_x(&test_tensor(&ws, 2)));
        let dx1_doubled: Vec<f32> = dx1.unwrap().data().iter().map(|v| 2.0 * v).collect();
        assert_eq!(dx2.unwrap().data(), dx1_doubled.as_slice());
    }

    #[test]
    fn output_shape_follows_pytorch_formula() {
        // floor((h + top + bottom - dil*(k-1) - 1) / stride) + 1
        let s = spec([2, 3], pad(1, 0, 2, 1), [2, 1], 1);
        let got = output_shape(&s, &[2, 3, 10, 9], &[4, 3, 3, 2], Some(&[4])).unwrap();
        assert_eq!(
            got,
            vec![2, 4, (10 + 3 - 4 - 1) / 2 + 1, (9 + 1 - 1 - 1) / 3 + 1]
        );
    }

    /// Regression: the depthwise phase split for stride 3 on a 1-pixel-wide row indexed past
    /// the row's end (found by the random-geometry property test).
    #[test]
    fn depthwise_stride_wider_than_the_row() {
        let pad = Padding2d {
            top: 0,
            left: 1,
            bottom: 0,
            right: 1,
        };
        let s = spec([1, 3], pad, [1, 1], 2);
        let x = test_tensor(&[1, 2, 3, 1], 1);
        let w = test_tensor(&[2, 1, 1, 3], 2);
        let fast = forward(&s, &x, &w, None).unwrap();
        let naive = forward_naive(&s, &x, &w, None).unwrap();
        assert_eq!(fast.shape(), naive.shape());
        for (a, b) in fast.data().iter().zip(naive.data()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn empty_input_planes_inside_padding_match_naive() {
        // an input of height 0 padded to more than the kernel: the output is bias only, and
        // no kernel may divide by or chunk over the empty plane
        for k in [3, 5] {
            let s = spec([1, 1], Padding2d::uniform(3), [1, 1], 1);
            let (xs, ws) = ([2, 2, 0, 4], [3, 2, k, k]);
            let (x, w, b) = (
                test_tensor(&xs, 1),
                test_tensor(&ws, 2),
                test_tensor(&[3], 3),
            );
            let y = forward(&s, &x, &w, Some(&b)).unwrap();
            assert_eq!(y, forward_naive(&s, &x, &w, Some(&b)).unwrap());
            let dy = test_tensor(y.shape(), 4);
            let got = backward(&s, &x, &w, true, &dy, &[true, true, true]).unwrap();
            let [dx, gw, _] = backward_naive(&s, &x, &w, &dy).unwrap();
            assert_eq!(got[0].as_ref().unwrap().shape(), dx.shape());
            assert_close("grad_w", got[1].as_ref().unwrap(), &gw).unwrap();
        }
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        let ok = spec([1, 1], Padding2d::default(), [1, 1], 1);
        type Case = (Conv2dSpec, Vec<usize>, Vec<usize>, Option<Vec<usize>>);
        let cases: Vec<Case> = vec![
            (ok.clone(), vec![1, 3, 2, 2], vec![4, 3, 3, 3], None), // output would be 0x0
            (ok.clone(), vec![1, 3, 8, 8], vec![4, 2, 3, 3], None), // c_in != w[1] * groups
            (
                spec([1, 1], Padding2d::default(), [1, 1], 2),
                vec![1, 4, 8, 8],
                vec![3, 2, 3, 3],
                None,
            ), // c_out % groups
            (
                ok.clone(),
                vec![1, 3, 8, 8],
                vec![4, 3, 3, 3],
                Some(vec![3]),
            ), // bias length
            (
                ok.clone(),
                vec![1, 3, 8, 8],
                vec![4, 3, 3, 3],
                Some(vec![1, 4]),
            ), // bias rank
            (
                spec([0, 1], Padding2d::default(), [1, 1], 1),
                vec![1, 3, 8, 8],
                vec![4, 3, 3, 3],
                None,
            ),
            (
                spec([1, 1], Padding2d::default(), [1, 0], 1),
                vec![1, 3, 8, 8],
                vec![4, 3, 3, 3],
                None,
            ),
            (
                spec([1, 1], Padding2d::default(), [1, 1], 0),
                vec![1, 3, 8, 8],
                vec![4, 3, 3, 3],
                None,
            ),
            (ok.clone(), vec![3, 8, 8], vec![4, 3, 3, 3], None), // rank 3 input
            (ok.clone(), vec![1, 3, 8, 8], vec![4, 3, 3], None), // rank 3 weight
            (ok.clone(), vec![1, 3, 8, 8], vec![4, 3, 0, 3], None), // empty kernel
        ];
        for (s, x, w, b) in cases {
            let r = output_shape(&s, &x, &w, b.as_deref());
            assert!(
                r.is_err(),
                "{s:?} x {x:?} w {w:?} b {b:?} should fail, got {r:?}"
            );
        }
        // forward and backward check too (they are public)
        let x = test_tensor(&[1, 3, 8, 8], 1);
        let w = test_tensor(&[4, 2, 3, 3], 2);
        assert!(forward(&ok, &x, &w, None).is_err());
        let w = test_tensor(&[4, 3, 3, 3], 2);
        let wrong_dy = test_tensor(&[1, 4, 5, 5], 3);
        assert!(backward(&ok, &x, &w, false, &wrong_dy, &[true, true]).is_err());
    }

    #[test]
    fn backward_computes_only_what_is_needed() {
        let s = spec([1, 1], Padding2d::uniform(1), [1, 1], 1);
        let x = test_tensor(&[1, 2, 5, 5], 1);
        let w = test_tensor(&[3, 2, 3, 3], 2);
        let dy = test_tensor(&[1, 3, 5, 5], 3);
        let g = backward(&s, &x, &w, true, &dy, &[false, true, false]).unwrap();
        assert!(g[0].is_none() && g[1].is_some() && g[2].is_none());
        let g = backward(&s, &x, &w, false, &dy, &[true, false]).unwrap();
        assert_eq!(g.len(), 2);
        assert!(g[0].is_some() && g[1].is_none());
    }

    fn gradcheck(s: Conv2dSpec, x_shape: &[usize], w_shape: &[usize]) {
        let x = test_tensor(x_shape, 11);
        let w = test_tensor(w_shape, 12);
        let b = test_tensor(&[w_shape[0]], 13);
        assert_op_gradients(
            &Op::Conv2d(s),
            &[x, w, b],
            &[true, true, true],
            Mode::Eval,
            1e-2,
        );
    }

    #[test]
    fn gradients_match_finite_differences_plain() {
        gradcheck(
            spec([1, 1], Padding2d::uniform(1), [1, 1], 1),
            &[2, 3, 6, 5],
            &[4, 3, 3, 3],
        );
    }

    #[test]
    fn gradients_match_finite_differences_stride2_asymmetric_pad_dilated() {
        gradcheck(
            spec([2, 2], pad(0, 2, 1, 0), [1, 2], 1),
            &[1, 2, 7, 8],
            &[3, 2, 3, 2],
        );
    }

    #[test]
    fn gradients_match_finite_differences_depthwise() {
        gradcheck(
            spec([1, 1], Padding2d::uniform(1), [1, 1], 4),
            &[2, 4, 6, 6],
            &[4, 1, 3, 3],
        );
        gradcheck(
            spec([2, 2], pad(1, 0, 0, 1), [1, 1], 3),
            &[1, 3, 7, 6],
            &[6, 1, 3, 3],
        );
    }

    #[test]
    fn gradients_match_finite_differences_grouped_pointwise() {
        gradcheck(
            spec([1, 1], Padding2d::default(), [1, 1], 2),
            &[2, 4, 3, 4],
            &[6, 2, 1, 1],
        );
    }
}
