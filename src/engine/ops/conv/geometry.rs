//! [`Geom`]: every size a kernel needs, derived once from validated shapes, and the index
//! arithmetic of strided, padded, dilated windows.

use super::Conv2dSpec;
use crate::engine::error::OpError;
use crate::engine::tensor::{checked_numel, dims4};
use crate::op_bail;

/// Every size a kernel needs, derived once from validated shapes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) c_in: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c_out: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) sh: usize,
    pub(super) sw: usize,
    pub(super) dh: usize,
    pub(super) dw: usize,
    pub(super) top: usize,
    pub(super) left: usize,
    pub(super) groups: usize,
    /// input channels per group (`w[1]`)
    pub(super) cg: usize,
    /// output channels per group
    pub(super) og: usize,
}

impl Geom {
    /// Rows of a group's column matrix: `cg * kh * kw`.
    pub(super) fn k(&self) -> usize {
        self.cg * self.kh * self.kw
    }
    /// Output pixels per plane: `oh * ow`.
    pub(super) fn p(&self) -> usize {
        self.oh * self.ow
    }
    pub(super) fn x_item(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub(super) fn y_item(&self) -> usize {
        self.c_out * self.p()
    }
    /// 1x1, stride 1, unpadded: the input plane is the column matrix itself.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.oh == self.h
            && self.ow == self.w
    }
    /// One input channel per group (groups == c_in, any channel multiplier).
    pub(super) fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.cg == 1
    }
    pub(super) fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.c_out, self.oh, self.ow]
    }
}

/// Output length of one spatial axis (PyTorch's formula), or an error when it is below 1.
pub(super) fn out_len(
    axis: &str,
    len: usize,
    pad: (usize, usize),
    k: usize,
    stride: usize,
    dil: usize,
) -> Result<usize, OpError> {
    let padded = len + pad.0 + pad.1;
    let span = dil * (k - 1) + 1;
    if padded < span {
        op_bail!(
            "the {axis} of the padded input ({len} + {} + {} = {padded}) is smaller than the dilated kernel ({span})",
            pad.0,
            pad.1
        );
    }
    Ok((padded - span) / stride + 1)
}

pub(super) fn geometry(
    spec: &Conv2dSpec,
    x: &[usize],
    w: &[usize],
    b: Option<&[usize]>,
) -> Result<Geom, OpError> {
    let [n, c_in, h, wd] = dims4(x).map_err(|e| OpError(format!("input: {e}")))?;
    let [c_out, cg, kh, kw] = dims4(w).map_err(|e| OpError(format!("weight: {e}")))?;
    let [sh, sw] = spec.stride;
    let [dh, dw] = spec.dilation;
    let groups = spec.groups;
    if sh == 0 || sw == 0 || dh == 0 || dw == 0 || groups == 0 {
        op_bail!(
            "stride {:?}, dilation {:?} and groups {groups} must all be at least 1",
            spec.stride,
            spec.dilation
        );
    }
    if kh == 0 || kw == 0 || cg == 0 {
        op_bail!("weight shape {w:?} has a zero dimension");
    }
    if cg.checked_mul(groups) != Some(c_in) {
        op_bail!(
            "input {x:?} has {c_in} channels but weight {w:?} with {groups} groups expects {cg} x {groups}"
        );
    }
    if c_out % groups != 0 {
        op_bail!("weight {w:?}: {c_out} output channels do not split into {groups} groups");
    }
    if let Some(b) = b
        && b != [c_out]
    {
        op_bail!("bias shape {b:?} does not match the {c_out} output channels of weight {w:?}");
    }
    let p = spec.padding;
    let oh = out_len("height", h, (p.top, p.bottom), kh, sh, dh)?;
    let ow = out_len("width", wd, (p.left, p.right), kw, sw, dw)?;
    let g = Geom {
        n,
        c_in,
        h,
        w: wd,
        c_out,
        kh,
        kw,
        oh,
        ow,
        sh,
        sw,
        dh,
        dw,
        top: p.top,
        left: p.left,
        groups,
        cg,
        og: c_out / groups,
    };
    // the column buffer of one group must be allocatable, like any tensor
    if checked_numel(&g.output_shape()).is_none() || checked_numel(&[g.k(), g.p()]).is_none() {
        op_bail!("convolution of {x:?} with {w:?} is too large");
    }
    Ok(g)
}

/// Output shape `[n, c_out, oh, ow]` for x `[n, c_in, h, w]`, w `[c_out, c_in/groups, kh, kw]`,
/// optional bias `[c_out]`.
pub fn output_shape(
    spec: &Conv2dSpec,
    x: &[usize],
    w: &[usize],
    b: Option<&[usize]>,
) -> Result<Vec<usize>, OpError> {
    Ok(geometry(spec, x, w, b)?.output_shape())
}

/// Output positions `[lo, hi)` along one axis whose input index `o * stride + off` lies in
/// `[0, in_len)`. `off` is `k_index * dilation - pad_before`.
pub(super) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    off: isize,
) -> (usize, usize) {
    let s = stride as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let room = in_len as isize - off; // input positions at or after `off`
    let hi = if room <= 0 { 0 } else { (room + s - 1) / s };
    let lo = (lo as usize).min(out_len);
    (lo, (hi as usize).clamp(lo, out_len))
}

/// Input index of output position `o` at kernel offset `off` (only called inside a valid range).
pub(super) fn in_index(o: usize, stride: usize, off: isize) -> usize {
    (o as isize * stride as isize + off) as usize
}

/// Offsets `k * dil - pad` of every kernel position along one axis.
pub(super) fn offsets(k: usize, dil: usize, pad: usize) -> Vec<isize> {
    (0..k).map(|i| (i * dil) as isize - pad as isize).collect()
}
