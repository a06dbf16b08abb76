//! The naive 7-loop definitions every fast convolution kernel is tested against.

use super::{Conv2dSpec, Geom, backward_geometry, geometry};
use crate::engine::error::OpError;
use crate::engine::tensor::Tensor;

/// The definition: y[n, co, oy, ox] = b[co] + Σ_{ci, ki, kj} w[co, ci, ki, kj] ·
/// x[n, grp·cg + ci, oy·sh + ki·dh − top, ox·sw + kj·dw − left] (zero outside the input).
pub fn forward_naive(
    spec: &Conv2dSpec,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    let g = geometry(spec, x.shape(), w.shape(), b.map(|b| b.shape()))?;
    let mut y = Tensor::try_zeros(&g.output_shape())?; // (n, c_out, oh, ow)
    let (xd, wd) = (x.data(), w.data());
    let yd = y.data_mut();
    for n in 0..g.n {
        for co in 0..g.c_out {
            let grp = co / g.og;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut acc = b.map_or(0.0, |b| b.data()[co]);
                    for ci in 0..g.cg {
                        for ki in 0..g.kh {
                            for kj in 0..g.kw {
                                if let Some((iy, ix)) = naive_input_pos(&g, oy, ox, ki, kj) {
                                    let c = grp * g.cg + ci;
                                    acc += wd[((co * g.cg + ci) * g.kh + ki) * g.kw + kj]
                                        * xd[((n * g.c_in + c) * g.h + iy) * g.w + ix];
                                }
                            }
                        }
                    }
                    yd[((n * g.c_out + co) * g.oh + oy) * g.ow + ox] = acc;
                }
            }
        }
    }
    Ok(y)
}

/// Input position read by output (oy, ox) at kernel tap (ki, kj), or None in the padding.
pub(super) fn naive_input_pos(
    g: &Geom,
    oy: usize,
    ox: usize,
    ki: usize,
    kj: usize,
) -> Option<(usize, usize)> {
    let iy = (oy * g.sh + ki * g.dh) as isize - g.top as isize;
    let ix = (ox * g.sw + kj * g.dw) as isize - g.left as isize;
    (iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w)
        .then_some((iy as usize, ix as usize))
}

/// The definition of every gradient, by the same loops as [`forward_naive`]:
/// d_x[n, c, iy, ix] += w · d_y, grad_w[co, ci, ki, kj] += x · d_y, grad_b[co] += d_y.
/// Returns `[d_x, grad_w, grad_b]` (all three; grad_b even without a bias).
pub fn backward_naive(
    spec: &Conv2dSpec,
    x: &Tensor,
    w: &Tensor,
    d_y: &Tensor,
) -> Result<[Tensor; 3], OpError> {
    let g = backward_geometry(spec, x, w, false, d_y)?;
    let mut d_x = Tensor::try_zeros(x.shape())?; // (n, c_in, h, w)
    let mut gw = Tensor::try_zeros(w.shape())?; // (c_out, cg, kh, kw)
    let mut gb = Tensor::try_zeros(&[g.c_out])?; // (c_out)
    let (xd, wd, dyd) = (x.data(), w.data(), d_y.data());
    for n in 0..g.n {
        for co in 0..g.c_out {
            let grp = co / g.og;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let dy = dyd[((n * g.c_out + co) * g.oh + oy) * g.ow + ox];
                    gb.data_mut()[co] += dy;
                    for ci in 0..g.cg {
                        for ki in 0..g.kh {
                            for kj in 0..g.kw {
                                if let Some((iy, ix)) = naive_input_pos(&g, oy, ox, ki, kj) {
                                    let xi = ((n * g.c_in + grp * g.cg + ci) * g.h + iy) * g.w + ix;
                                    let wi = ((co * g.cg + ci) * g.kh + ki) * g.kw + kj;
                                    d_x.data_mut()[xi] += wd[wi] * dy;
                                    gw.data_mut()[wi] += xd[xi] * dy;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok([d_x, gw, gb])
}
