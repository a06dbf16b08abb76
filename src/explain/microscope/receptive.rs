//! Receptive fields from the graph: for each value on the image grid, which input pixels one
//! of its positions can see. The arithmetic of Araujo, Norris & Sim ("Computing receptive
//! fields of convolutional neural networks", Distill 2019), carried node by node from the input:
//! a kernel of effective size `k = d·(k₀ − 1) + 1`, stride `s` and leading padding `p` turns
//! (size `r`, jump `j`, centre of position 0 `c`) into (`r + (k − 1)·j`, `j·s`,
//! `c + ((k − 1)/2 − p)·j`). Where the fields of several inputs meet (a residual `Add`, a
//! concatenation) the result covers them all; a value that mixes every position (global pooling,
//! a dense layer, attention, a squeeze-and-excitation product) sees the whole image (`None`).

use crate::engine::graph::{ValueId, ValueKind};
use crate::engine::{Graph, Op};

/// Where one value's positions look in the input, in input pixels `[along h, along w]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Field {
    /// The side of the field.
    pub size: [f64; 2],
    /// Input pixels between neighbouring positions.
    pub jump: [f64; 2],
    /// The input position (pixel index; fractional or negative near padding) at the centre of
    /// position `(0, 0)`'s field.
    pub start: [f64; 2],
}

impl Field {
    /// The input itself: each position sees its own pixel.
    pub fn input() -> Self {
        Self {
            size: [1.0, 1.0],
            jump: [1.0, 1.0],
            start: [0.0, 0.0],
        }
    }

    /// Through a window of `kernel` (effective, dilation applied) with `stride` and leading
    /// padding `pad`.
    fn window(&self, kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2]) -> Self {
        let f = |a: usize| -> f64 { a as f64 };
        Self {
            size: std::array::from_fn(|i| self.size[i] + (f(kernel[i]) - 1.0) * self.jump[i]),
            jump: std::array::from_fn(|i| self.jump[i] * f(stride[i])),
            start: std::array::from_fn(|i| {
                self.start[i] + ((f(kernel[i]) - 1.0) / 2.0 - f(pad[i])) * self.jump[i]
            }),
        }
    }

    /// Nearest or bilinear upsampling by `scale` (output / input positions); bilinear also
    /// reads the neighbouring position.
    fn upsampled(&self, scale: [f64; 2], bilinear: bool) -> Self {
        Self {
            size: std::array::from_fn(|i| self.size[i] + if bilinear { self.jump[i] } else { 0.0 }),
            jump: std::array::from_fn(|i| self.jump[i] / scale[i]),
            start: std::array::from_fn(|i| self.start[i] + (0.5 / scale[i] - 0.5) * self.jump[i]),
        }
    }

    /// The smallest field covering both (the jump of `self`).
    fn union(&self, other: &Self) -> Self {
        let mut out = *self;
        for i in 0..2 {
            let lo = (self.start[i] - (self.size[i] - 1.0) / 2.0)
                .min(other.start[i] - (other.size[i] - 1.0) / 2.0);
            let hi = (self.start[i] + (self.size[i] - 1.0) / 2.0)
                .max(other.start[i] + (other.size[i] - 1.0) / 2.0);
            out.size[i] = hi - lo + 1.0;
            out.start[i] = (lo + hi) / 2.0;
        }
        out
    }

    /// The input pixels position `(y, x)` sees, clipped to an input of `[h, w]`:
    /// `[top, left, bottom, right)`.
    pub fn box_at(&self, y: usize, x: usize, [h, w]: [usize; 2]) -> [usize; 4] {
        let span = |i: usize, at: usize, limit: usize| -> (usize, usize) {
            let centre = self.start[i] + at as f64 * self.jump[i];
            let half = (self.size[i] - 1.0) / 2.0;
            let lo = (centre - half).ceil().max(0.0) as usize;
            let hi = ((centre + half).floor() + 1.0).clamp(0.0, limit as f64) as usize;
            (
                lo.min(limit.saturating_sub(1)),
                hi.max(lo.min(limit.saturating_sub(1)) + 1),
            )
        };
        let (top, bottom) = span(0, y, h);
        let (left, right) = span(1, x, w);
        [top, left, bottom, right]
    }
}

/// The receptive field of every value of `graph` (indexed by `ValueId`): `Some` for values on
/// the input's grid `[n, c, h, w]`, `None` for values that see the whole input or are not
/// images. The input must be NCHW (`[n, c, h, w]`); a channels-last input is followed through
/// its transpose to NCHW.
pub fn receptive_fields(graph: &Graph) -> Vec<Option<Field>> {
    let mut fields: Vec<Option<Field>> = vec![None; graph.values().len()];
    for &input in graph.inputs() {
        if graph.value(input).shape.len() == 4 {
            fields[input] = Some(Field::input());
        }
    }
    let is_param = |v: ValueId| matches!(graph.value(v).kind, ValueKind::Param(_));
    for node in graph.nodes() {
        let first = node.inputs.first().and_then(|&v| fields[v]);
        let spatial = graph.value(node.output).shape.len() == 4;
        let out = match &node.op {
            _ if !spatial => None,
            Op::Conv2d(spec) => kernel_of(graph, node.inputs.get(1).copied()).and_then(|k| {
                first.map(|f| {
                    f.window(
                        [
                            spec.dilation[0] * (k[0] - 1) + 1,
                            spec.dilation[1] * (k[1] - 1) + 1,
                        ],
                        spec.stride,
                        [spec.padding.top, spec.padding.left],
                    )
                })
            }),
            Op::FusedConv2d(fused) => {
                let spec = &fused.conv;
                let conv = kernel_of(graph, node.inputs.get(1).copied()).and_then(|k| {
                    first.map(|f| {
                        f.window(
                            [
                                spec.dilation[0] * (k[0] - 1) + 1,
                                spec.dilation[1] * (k[1] - 1) + 1,
                            ],
                            spec.stride,
                            [spec.padding.top, spec.padding.left],
                        )
                    })
                });
                // a fused residual input (the last) joins like an Add
                match (conv, fused.residual, node.inputs.last()) {
                    (Some(c), true, Some(&r)) => fields[r].map(|f| c.union(&f)),
                    (c, _, _) => c,
                }
            }
            Op::MaxPool2d(spec) | Op::AvgPool2d(spec) => first.map(|f| {
                f.window(
                    spec.kernel,
                    spec.stride,
                    [spec.padding.top, spec.padding.left],
                )
            }),
            Op::Pad(spec) => match (first, spec.pads.as_slice()) {
                (Some(f), [(0, 0), (0, 0), (t, _), (l, _)]) => {
                    Some(f.window([1, 1], [1, 1], [*t, *l]))
                }
                _ => None,
            },
            Op::Upsample(spec) => {
                first.map(|f| f.upsampled([spec.sh as f64, spec.sw as f64], false))
            }
            Op::Bilinear(spec) => {
                let ins = node.inputs.first().map(|&v| graph.value(v).shape.clone());
                match (first, ins.as_deref()) {
                    (Some(f), Some([_, _, h, w])) if *h > 0 && *w > 0 => Some(f.upsampled(
                        [spec.out_h as f64 / *h as f64, spec.out_w as f64 / *w as f64],
                        true,
                    )),
                    _ => None,
                }
            }
            Op::Transpose { perm } if perm == &[0, 3, 1, 2] || perm == &[0, 2, 3, 1] => first,
            Op::Activation(_)
            | Op::BatchNorm2d(_)
            | Op::Dropout { .. }
            | Op::Identity
            | Op::Binary(_)
            | Op::Where
            | Op::Concat { axis: 1 } => {
                // every run-time input must be on the grid; the union of their fields
                let mut joined: Option<Field> = None;
                let mut whole = false;
                for &v in &node.inputs {
                    if is_param(v) {
                        continue;
                    }
                    match (fields[v], joined) {
                        (None, _) => whole = true,
                        (Some(f), None) => joined = Some(f),
                        (Some(f), Some(j)) => joined = Some(j.union(&f)),
                    }
                }
                if whole { None } else { joined }
            }
            _ => None,
        };
        fields[node.output] = out;
    }
    fields
}

/// `[kh, kw]` of a convolution's weight `[o, i, kh, kw]`.
fn kernel_of(graph: &Graph, weight: Option<ValueId>) -> Option<[usize; 2]> {
    match graph.value(weight?).shape.as_slice() {
        [_, _, kh, kw] if *kh > 0 && *kw > 0 => Some([*kh, *kw]),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::ops::{Conv2dSpec, Padding2d, Pool2dSpec};
    use crate::engine::{BackwardRequest, ForwardOptions, GraphDef, Tensor};

    fn conv(stride: usize, pad: usize, dilation: usize) -> Op {
        Op::Conv2d(Conv2dSpec {
            stride: [stride, stride],
            padding: Padding2d::uniform(pad),
            dilation: [dilation, dilation],
            groups: 1,
        })
    }

    /// conv 3x3 → avg pool 2x2/2 → conv 3x3/2 → conv 3x3 dilated 2 → conv 1x5 on a 1 × 37 × 41
    /// image; positive weights, so every input pixel a position can see gets a gradient.
    fn net() -> Graph {
        let mut d = GraphDef::default();
        d.inputs.push(crate::engine::graph::InputDef {
            name: "x".into(),
            shape: vec![1, 1, 37, 41],
        });
        for (name, shape) in [
            ("w1", [1, 1, 3, 3]),
            ("w2", [1, 1, 3, 3]),
            ("w3", [1, 1, 3, 3]),
            ("w4", [1, 1, 1, 5]),
        ] {
            let n: usize = shape.iter().product();
            d.param(
                name,
                Tensor::new(shape.to_vec(), vec![1.0; n]).unwrap(),
                false,
            );
        }
        d.push("c1", conv(1, 1, 1), &["x", "w1"]);
        d.push(
            "p1",
            Op::AvgPool2d(Pool2dSpec {
                kernel: [2, 2],
                stride: [2, 2],
                padding: Padding2d::uniform(0),
                ceil_mode: false,
                count_include_pad: true,
            }),
            &["c1"],
        );
        d.push("c2", conv(2, 1, 1), &["p1", "w2"]);
        d.push("c3", conv(1, 2, 2), &["c2", "w3"]);
        let mut c4 = Conv2dSpec::stride1(0);
        c4.padding = Padding2d {
            top: 0,
            left: 2,
            bottom: 0,
            right: 2,
        };
        d.push("c4", Op::Conv2d(c4), &["c3", "w4"]);
        d.outputs.push("c4".into());
        Graph::from_def(d).unwrap()
    }

    /// The boxes agree with the support of the input gradient of single positions (an
    /// independent measure of what each position sees): equal at the centre, containing it at
    /// the edges.
    #[test]
    fn boxes_match_the_support_of_the_gradient() {
        let g = net();
        let fields = receptive_fields(&g);
        let x = Tensor::full(&[1, 1, 37, 41], 1.0);
        let pass = g
            .forward(&[x], &ForwardOptions::eval_for_backward())
            .unwrap();
        for layer in ["c1", "p1", "c2", "c3", "c4"] {
            let v = g.value_id(layer).unwrap();
            let shape = g.value(v).shape.clone();
            let (h, w) = (shape[2], shape[3]);
            let field = fields[v].unwrap();
            for (y, xx) in [(0, 0), (h / 2, w / 2), (h - 1, w - 1), (1, w - 2)] {
                let mut seed = Tensor::zeros(&shape);
                seed.data_mut()[y * w + xx] = 1.0;
                let req = BackwardRequest {
                    seeds: vec![(v, seed)],
                    param_grads: false,
                    value_grads: vec![g.inputs()[0]],
                };
                let grads = g.backward(&pass, &req).unwrap();
                let d = &grads.values[&g.inputs()[0]];
                let (mut top, mut left, mut bottom, mut right) = (usize::MAX, usize::MAX, 0, 0);
                for (i, &gv) in d.data().iter().enumerate() {
                    if gv != 0.0 {
                        let (r, c) = (i / 41, i % 41);
                        top = top.min(r);
                        left = left.min(c);
                        bottom = bottom.max(r + 1);
                        right = right.max(c + 1);
                    }
                }
                let b = field.box_at(y, xx, [37, 41]);
                let support = [top, left, bottom, right];
                // The arithmetic's box is the theoretical field: it contains what the position
                // sees, and equals it away from the edges. At an edge it may reach further,
                // over padding taps whose own fields would include image pixels that a
                // flooring stride or pool dropped.
                assert!(
                    b[0] <= top && b[1] <= left && b[2] >= bottom && b[3] >= right,
                    "{layer} at ({y}, {xx}): box {b:?} misses support {support:?}"
                );
                if (y, xx) == (h / 2, w / 2) {
                    assert_eq!(b, support, "{layer} at the centre: {field:?}");
                }
            }
        }
        // the arithmetic by hand for the last layer: sizes 3 → 4 → 8 → 16 (h), jump 4
        let f = fields[g.value_id("c4").unwrap()].unwrap();
        assert_eq!(f.jump, [4.0, 4.0]);
        assert_eq!(f.size, [24.0, 40.0]);
    }

    #[test]
    fn global_pooling_sees_everything() {
        let mut d = GraphDef::default();
        d.inputs.push(crate::engine::graph::InputDef {
            name: "x".into(),
            shape: vec![1, 1, 8, 8],
        });
        d.push("g", Op::GlobalAvgPool, &["x"]);
        d.push(
            "r",
            Op::Activation(crate::engine::ops::Activation::Relu),
            &["g"],
        );
        d.outputs.push("r".into());
        let g = Graph::from_def(d).unwrap();
        let f = receptive_fields(&g);
        assert!(f[g.value_id("g").unwrap()].is_none());
        assert!(f[g.value_id("r").unwrap()].is_none());
    }
}
