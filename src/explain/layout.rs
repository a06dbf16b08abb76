//! Where each element of a graph's values sits on an image grid, found from the graph: what
//! lets the CAM family and the Layers panel show channel-last maps (Swin, ConvNeXt's
//! LayerNorms) and token sequences (ViT) as channel planes `[c, h, w]`, as pytorch-grad-cam's
//! hand-written `reshape_transform` does, but for any file.
//!
//! A convolution's output is channel-first on its own grid. From there the layout follows the
//! data-movement ops: a transpose to channels-last gives a *row map* (one grid pixel per row of
//! the value's non-last axes); reshapes that keep the last axis, transposes that keep it last,
//! slices and concatenations of rows, padding, per-row ops (LayerNorm, a linear layer, element-
//! wise ops, the residual `Add`) carry the row map along. So a ViT's class token (concatenated
//! from a parameter) and a Swin block's padding become rows with no pixel, and Swin's shifted
//! windows (`torch.roll` as slices and a concatenation, then the window partition as reshapes
//! and transposes) come back un-shifted: every windowed token knows its pixel.
//!
//! Row maps are computed at the graph's declared shapes; a map is read from a value of one
//! image (the CAMs and the Layers panel run one).

use std::sync::Arc;

use ndarray::{ArrayD, Axis, IxDyn, Slice as NdSlice, concatenate};

use super::{ExplainError, ExplainResult};
use crate::engine::graph::{ValueId, ValueKind};
use crate::engine::{Graph, Op, Tensor};

/// A row of a channel-last value that is no pixel (a class token, padding).
pub(crate) const NO_PIXEL: u32 = u32::MAX;

/// How one value's elements map to channel planes on an `h × w` grid.
#[derive(Clone, Debug, PartialEq)]
pub enum PixelLayout {
    /// Channels first, then the plane: `[n, c, h, w]` or `[n, c, h·w]`.
    ChannelFirst { h: usize, w: usize },
    /// Channels last: row `r` of the value (its index over every axis but the last) is pixel
    /// `rows[r] = y·w + x`, or no pixel ([`NO_PIXEL`]).
    ChannelLast {
        h: usize,
        w: usize,
        rows: Arc<[u32]>,
    },
}

impl PixelLayout {
    /// `(h, w)` of the grid.
    pub fn grid(&self) -> (usize, usize) {
        match self {
            Self::ChannelFirst { h, w } | Self::ChannelLast { h, w, .. } => (*h, *w),
        }
    }

    /// One image's value `t` (of the shape this layout was found at, batch 1) as channel
    /// planes `[1, c, h, w]`. Channel-last rows with no pixel are left out; grid pixels that no
    /// row reaches are 0.
    pub fn to_planes(&self, t: &Tensor) -> ExplainResult<Tensor> {
        let shape = t.shape();
        match self {
            Self::ChannelFirst { h, w } => {
                let plane = h * w;
                let c = shape.get(1).copied().unwrap_or(0);
                if shape.len() < 3 || shape[0] != 1 || c * plane != t.numel() {
                    return Err(ExplainError::invalid(format!(
                        "a value of shape {shape:?} is not one image's channel planes of {h}x{w}"
                    )));
                }
                Ok(Tensor::new(vec![1, c, *h, *w], t.data().to_vec())?)
            }
            Self::ChannelLast { h, w, rows } => {
                let c = shape.last().copied().unwrap_or(0);
                if c == 0 || rows.len() * c != t.numel() {
                    return Err(ExplainError::invalid(format!(
                        "a value of shape {shape:?} is not one image's {} rows of channels \
                         (maps of token and channel-last layers are read one image at a time)",
                        rows.len()
                    )));
                }
                let plane = h * w;
                let mut out = vec![0.0f32; c * plane];
                for (row, &p) in t.data().chunks_exact(c).zip(rows.iter()) {
                    if p == NO_PIXEL {
                        continue;
                    }
                    for (ch, &v) in row.iter().enumerate() {
                        // a pixel reached twice (a broadcast) sums, as its gradient does
                        out[ch * plane + p as usize] += v;
                    }
                }
                Ok(Tensor::new(vec![1, c, *h, *w], out)?)
            }
        }
    }
}

/// The layout of every value of a graph (index: [`ValueId`]).
#[derive(Clone, Debug)]
pub struct Layouts(Vec<Option<PixelLayout>>);

impl Layouts {
    /// Follows the layouts through the graph in topological order.
    pub fn of(graph: &Graph) -> Self {
        let mut found: Vec<Option<PixelLayout>> = vec![None; graph.values().len()];
        for (id, info) in graph.values().iter().enumerate() {
            if matches!(info.kind, ValueKind::Input(_)) && info.shape.len() == 4 {
                found[id] = Some(PixelLayout::ChannelFirst {
                    h: info.shape[2],
                    w: info.shape[3],
                });
            }
        }
        for node in graph.nodes() {
            let shape = |v: ValueId| graph.value(v).shape.as_slice();
            let ins: Vec<(Option<&PixelLayout>, &[usize])> = node
                .inputs
                .iter()
                .map(|&v| (found[v].as_ref(), shape(v)))
                .collect();
            let out = step(&node.op, &ins, shape(node.output));
            found[node.output] = out;
        }
        Self(found)
    }

    /// The value's layout: the one followed from the graph, else channel-first for any other
    /// 4-D value (the convention of every CNN file).
    pub fn get(&self, graph: &Graph, v: ValueId) -> Option<PixelLayout> {
        let info = graph.values().get(v)?;
        match self.0.get(v)? {
            Some(l) => Some(l.clone()),
            None if info.shape.len() == 4 => Some(PixelLayout::ChannelFirst {
                h: info.shape[2],
                w: info.shape[3],
            }),
            None => None,
        }
    }

    /// The node outputs that have a layout, in topological order (the Layers panel's list and
    /// the CAM layer candidates).
    pub fn spatial_values(&self, graph: &Graph) -> Vec<ValueId> {
        graph
            .nodes()
            .iter()
            .map(|n| n.output)
            .filter(|&v| self.get(graph, v).is_some())
            .collect()
    }
}

/// The output layout of one node from its inputs' layouts and shapes.
fn step(op: &Op, ins: &[(Option<&PixelLayout>, &[usize])], out: &[usize]) -> Option<PixelLayout> {
    let (first, in_shape) = *ins.first()?;
    let channel_first = || {
        (out.len() == 4).then(|| PixelLayout::ChannelFirst {
            h: out[2],
            w: out[3],
        })
    };
    match op {
        Op::Conv2d(_)
        | Op::FusedConv2d(_)
        | Op::BatchNorm2d(_)
        | Op::MaxPool2d(_)
        | Op::AvgPool2d(_)
        | Op::Upsample(_)
        | Op::Bilinear(_) => channel_first(),
        // per-element and per-row ops
        Op::Activation(_)
        | Op::Dropout { .. }
        | Op::Identity
        | Op::LayerNorm { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. } => (in_shape == out).then(|| first.cloned()).flatten(),
        // the residual join: the layout of whichever operand has the output's shape and one
        Op::Binary(_) | Op::Where => ins
            .iter()
            .find(|(l, s)| l.is_some() && *s == out)
            .and_then(|(l, _)| l.cloned()),
        // a linear layer on the channels of a channel-last value
        Op::MatMul => match (first?, ins.get(1)) {
            (l @ PixelLayout::ChannelLast { .. }, Some((_, w)))
                if w.len() == 2
                    && out.len() == in_shape.len()
                    && out[..out.len() - 1] == in_shape[..in_shape.len() - 1] =>
            {
                Some(l.clone())
            }
            _ => None,
        },
        Op::Reshape { .. } | Op::Flatten { .. } => reshape(first?, in_shape, out),
        Op::Transpose { perm } => transpose(first?, in_shape, perm, out),
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => slice(first?, in_shape, *axis, *start, *end, *step, out),
        Op::Pad(spec) => pad(first?, in_shape, &spec.pads, out),
        Op::Concat { axis } => concat(ins, *axis, out),
        _ => None,
    }
}

/// The rows of a channel-last value as an array over its non-last axes.
fn row_array(rows: &Arc<[u32]>, shape: &[usize]) -> Option<ArrayD<u32>> {
    let dims = &shape[..shape.len().checked_sub(1)?];
    ArrayD::from_shape_vec(IxDyn(dims), rows.to_vec()).ok()
}

fn channel_last(h: usize, w: usize, rows: ArrayD<u32>) -> PixelLayout {
    PixelLayout::ChannelLast {
        h,
        w,
        rows: rows.iter().copied().collect(),
    }
}

fn reshape(l: &PixelLayout, in_shape: &[usize], out: &[usize]) -> Option<PixelLayout> {
    match l {
        // [n, c, h, w] ↔ [n, c, h·w]: the planes stay whole behind the channel axis
        PixelLayout::ChannelFirst { h, w } => {
            let plane: usize = out.get(2..)?.iter().product();
            (out.len() >= 3 && out[..2] == in_shape[..2] && plane == h * w && out.len() <= 4)
                .then(|| l.clone())
        }
        // rows keep their (row-major) order when the channel axis is untouched
        PixelLayout::ChannelLast { .. } => {
            (out.last() == in_shape.last() && out.len() >= 2).then(|| l.clone())
        }
    }
}

fn transpose(
    l: &PixelLayout,
    in_shape: &[usize],
    perm: &[usize],
    out: &[usize],
) -> Option<PixelLayout> {
    let r = in_shape.len();
    if perm.len() != r || r < 2 {
        return None;
    }
    match l {
        // channels to the end: [n, c, h, w] → [n, h, w, c] or [n, c, h·w] → [n, h·w, c]
        PixelLayout::ChannelFirst { h, w } => {
            let to_last: &[usize] = if r == 4 { &[0, 2, 3, 1] } else { &[0, 2, 1] };
            if perm != to_last {
                return None;
            }
            let plane = (h * w) as u32;
            let items = in_shape[0] as u32;
            let rows: Arc<[u32]> = (0..items * plane).map(|i| i % plane).collect();
            Some(PixelLayout::ChannelLast { h: *h, w: *w, rows })
        }
        PixelLayout::ChannelLast { h, w, rows } => {
            let a = row_array(rows, in_shape)?;
            if perm[r - 1] == r - 1 {
                // rows permuted among themselves
                let moved = a.permuted_axes(IxDyn(&perm[..r - 1]));
                return Some(channel_last(*h, *w, moved.as_standard_layout().to_owned()));
            }
            // channels back to axis 1 ([n, h, w, c] → [n, c, h, w]) of an un-permuted map
            let back: &[usize] = if r == 4 { &[0, 3, 1, 2] } else { &[0, 2, 1] };
            let identity = rows
                .iter()
                .enumerate()
                .all(|(i, &p)| p as usize == i % (h * w));
            (perm == back && identity && in_shape[0] == 1)
                .then_some(PixelLayout::ChannelFirst { h: *h, w: *w })
                .filter(|_| out.len() == r)
        }
    }
}

fn slice(
    l: &PixelLayout,
    in_shape: &[usize],
    axis: usize,
    start: usize,
    end: usize,
    step: usize,
    out: &[usize],
) -> Option<PixelLayout> {
    let r = in_shape.len();
    match l {
        // channels picked: the same planes
        PixelLayout::ChannelFirst { .. } if axis == 1 => Some(l.clone()),
        // a crop of the grid: a grid of its own
        PixelLayout::ChannelFirst { .. } => (out.len() == 4).then(|| PixelLayout::ChannelFirst {
            h: out[2],
            w: out[3],
        }),
        PixelLayout::ChannelLast { .. } if axis + 1 == r => Some(l.clone()),
        PixelLayout::ChannelLast { h, w, rows } => {
            let a = row_array(rows, in_shape)?;
            let end = end.min(in_shape[axis]);
            if start >= end || step == 0 {
                return None;
            }
            let cut = a.slice_axis(
                Axis(axis),
                NdSlice::new(start as isize, Some(end as isize), step as isize),
            );
            Some(channel_last(*h, *w, cut.to_owned()))
        }
    }
}

fn pad(
    l: &PixelLayout,
    in_shape: &[usize],
    pads: &[(usize, usize)],
    out: &[usize],
) -> Option<PixelLayout> {
    match l {
        PixelLayout::ChannelFirst { .. } => (out.len() == 4
            && pads.iter().take(2).all(|&p| p == (0, 0)))
        .then(|| PixelLayout::ChannelFirst {
            h: out[2],
            w: out[3],
        }),
        PixelLayout::ChannelLast { h, w, rows } => {
            let mut a = row_array(rows, in_shape)?;
            for (axis, &(before, after)) in pads.iter().enumerate().take(in_shape.len() - 1) {
                let mut dims = a.shape().to_vec();
                let mut parts = Vec::new();
                dims[axis] = before;
                let head = ArrayD::from_elem(IxDyn(&dims), NO_PIXEL);
                dims[axis] = after;
                let tail = ArrayD::from_elem(IxDyn(&dims), NO_PIXEL);
                parts.push(head.view());
                parts.push(a.view());
                parts.push(tail.view());
                a = concatenate(Axis(axis), &parts).ok()?;
            }
            Some(channel_last(*h, *w, a))
        }
    }
}

fn concat(
    ins: &[(Option<&PixelLayout>, &[usize])],
    axis: usize,
    out: &[usize],
) -> Option<PixelLayout> {
    let r = out.len();
    // the grid all laid-out inputs share
    let mut grid = None;
    for (l, _) in ins {
        if let Some(l) = l {
            if grid.is_some_and(|g| g != l.grid()) {
                return None;
            }
            grid = Some(l.grid());
        }
    }
    let (h, w) = grid?;
    match ins.iter().find_map(|(l, _)| *l)? {
        // channels joined on one grid
        PixelLayout::ChannelFirst { .. } => (axis == 1
            && ins
                .iter()
                .all(|(l, _)| matches!(l, Some(PixelLayout::ChannelFirst { .. }))))
        .then_some(PixelLayout::ChannelFirst { h, w }),
        PixelLayout::ChannelLast { rows, .. } if axis + 1 == r => {
            let mut same = true;
            for (l, _) in ins {
                match l {
                    Some(PixelLayout::ChannelLast { rows: o, .. }) if o.len() == rows.len() => {
                        same &= o == rows;
                    }
                    _ => return None,
                }
            }
            if same {
                return Some(PixelLayout::ChannelLast {
                    h,
                    w,
                    rows: rows.clone(),
                });
            }
            // Swin's patch merging: the four pixels of each 2x2 cell (strided slices) side by
            // side in the channels, a grid of its own [1, h/2, w/2, 4c]
            (r == 4 && out[0] == 1).then(|| PixelLayout::ChannelLast {
                h: out[1],
                w: out[2],
                rows: (0..(out[1] * out[2]) as u32).collect(),
            })
        }
        // rows joined: inputs without a layout (a class token) are rows with no pixel
        PixelLayout::ChannelLast { .. } => {
            let mut arrays = Vec::with_capacity(ins.len());
            for (l, s) in ins {
                let a = match l {
                    Some(PixelLayout::ChannelLast { rows, .. }) => row_array(rows, s)?,
                    None => ArrayD::from_elem(IxDyn(s.get(..s.len().checked_sub(1)?)?), NO_PIXEL),
                    Some(PixelLayout::ChannelFirst { .. }) => return None,
                };
                arrays.push(a);
            }
            let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
            Some(channel_last(h, w, concatenate(Axis(axis), &views).ok()?))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rows(l: &PixelLayout) -> Vec<u32> {
        match l {
            PixelLayout::ChannelLast { rows, .. } => rows.to_vec(),
            PixelLayout::ChannelFirst { .. } => panic!("channel-first"),
        }
    }

    /// A roll along the grid's rows written as an exporter writes `torch.roll` (two slices
    /// joined), then a window partition (reshape, transpose keeping channels last): every
    /// row still names its pixel, and the planes read back un-shifted.
    #[test]
    fn rows_follow_a_roll_and_a_window_partition() {
        let (h, w, c) = (4usize, 4usize, 2usize);
        let first = PixelLayout::ChannelFirst { h, w };
        let nhwc = transpose(&first, &[1, c, h, w], &[0, 2, 3, 1], &[1, h, w, c]).unwrap();
        assert_eq!(rows(&nhwc), (0..16).collect::<Vec<_>>());
        // roll by 1 along the rows: x[:, 1:] ++ x[:, :1]
        let tail = slice(&nhwc, &[1, h, w, c], 1, 1, 4, 1, &[1, 3, w, c]).unwrap();
        let head = slice(&nhwc, &[1, h, w, c], 1, 0, 1, 1, &[1, 1, w, c]).unwrap();
        let rolled = concat(
            &[(Some(&tail), &[1, 3, w, c]), (Some(&head), &[1, 1, w, c])],
            1,
            &[1, h, w, c],
        )
        .unwrap();
        let r = rows(&rolled);
        assert_eq!(&r[..4], &[4, 5, 6, 7]);
        assert_eq!(&r[12..], &[0, 1, 2, 3]);
        // 2x2 windows: [1, 2, 2, 2, 2, c] → [1, 2, 2, 2, 2, c] (wy, wx, y, x) → [4, 4, c]
        let split = reshape(&rolled, &[1, h, w, c], &[1, 2, 2, 2, 2, c]).unwrap();
        let windows = transpose(
            &split,
            &[1, 2, 2, 2, 2, c],
            &[0, 1, 3, 2, 4, 5],
            &[1, 2, 2, 2, 2, c],
        )
        .unwrap();
        let tokens = reshape(&windows, &[1, 2, 2, 2, 2, c], &[4, 4, c]).unwrap();
        // window 0 holds rolled rows 0..2 and columns 0..2: pixels of grid rows 1 and 2
        assert_eq!(&rows(&tokens)[..4], &[4, 5, 8, 9]);
        // the planes read back in grid order whatever the row order
        let values: Vec<f32> = rows(&tokens)
            .iter()
            .flat_map(|&p| [p as f32, -(p as f32)])
            .collect();
        let t = Tensor::new(vec![4, 4, c], values).unwrap();
        let planes = tokens.to_planes(&t).unwrap();
        assert_eq!(planes.shape(), &[1, c, h, w]);
        assert_eq!(
            &planes.data()[..16],
            (0..16).map(|p| p as f32).collect::<Vec<_>>().as_slice()
        );
        assert_eq!(planes.data()[16 + 5], -5.0);
    }

    /// A ViT's token sequence: flattened patches, transposed, a class token concatenated in
    /// front (no pixel), the class token dropped when read as planes.
    #[test]
    fn a_class_token_is_a_row_without_a_pixel() {
        let first = PixelLayout::ChannelFirst { h: 2, w: 3 };
        let flat = reshape(&first, &[1, 4, 2, 3], &[1, 4, 6]).unwrap();
        let tokens = transpose(&flat, &[1, 4, 6], &[0, 2, 1], &[1, 6, 4]).unwrap();
        let with_cls = concat(
            &[(None, &[1, 1, 4]), (Some(&tokens), &[1, 6, 4])],
            1,
            &[1, 7, 4],
        )
        .unwrap();
        assert_eq!(rows(&with_cls), vec![NO_PIXEL, 0, 1, 2, 3, 4, 5]);
        let t = Tensor::new(vec![1, 7, 4], (0..28).map(|v| v as f32).collect()).unwrap();
        let planes = with_cls.to_planes(&t).unwrap();
        assert_eq!(planes.shape(), &[1, 4, 2, 3]);
        // channel 1 of pixel 0 is token 1's element 1
        assert_eq!(planes.data()[6], 5.0);
        // the class token alone has no pixel rows left: a plane of zeros, never its values
        let cls = slice(&with_cls, &[1, 7, 4], 1, 0, 1, 1, &[1, 1, 4]).unwrap();
        assert_eq!(rows(&cls), vec![NO_PIXEL]);
        // a value of two images is refused with its shape named
        let two = Tensor::zeros(&[2, 7, 4]);
        assert!(
            with_cls
                .to_planes(&two)
                .unwrap_err()
                .to_string()
                .contains("[2, 7, 4]")
        );
    }

    /// Padding adds rows without pixels; a crop drops them again.
    #[test]
    fn padding_rows_have_no_pixel() {
        let first = PixelLayout::ChannelFirst { h: 2, w: 2 };
        let nhwc = transpose(&first, &[1, 3, 2, 2], &[0, 2, 3, 1], &[1, 2, 2, 3]).unwrap();
        let padded = pad(
            &nhwc,
            &[1, 2, 2, 3],
            &[(0, 0), (0, 1), (1, 0), (0, 0)],
            &[1, 3, 3, 3],
        )
        .unwrap();
        let n = NO_PIXEL;
        assert_eq!(rows(&padded), vec![n, 0, 1, n, 2, 3, n, n, n]);
    }
}
