//! Neural-network ops of the ONNX import: convolution, batch and layer norm, pooling, padding,
//! activations, softmax and resizing, with the window geometry they share.

use super::{Importer, bad};
use crate::engine::ops::{
    Activation, BatchNormSpec, BilinearSpec, Conv2dSpec, Coordinates, Op, PadSpec, Padding2d,
    Pool2dSpec, UpsampleSpec,
};
use crate::models::onnx::Problem;
use crate::models::onnx::attrs::Attrs;
use crate::models::onnx::proto::NodeProto;
use crate::models::onnx::shape::{self, SymShape};
use crate::models::onnx::tensor::Int;

impl Importer {
    pub(super) fn activation(
        &self,
        n: &NodeProto,
        op: &str,
        a: &Attrs,
    ) -> Result<Activation, Problem> {
        Ok(match op {
            "Relu" => Activation::Relu,
            "Sigmoid" => Activation::Sigmoid,
            "Tanh" => Activation::Tanh,
            "HardSwish" => Activation::HardSwish,
            "Erf" => Activation::Erf,
            "Sqrt" => Activation::Sqrt,
            "Reciprocal" => Activation::Reciprocal,
            "Neg" => Activation::Neg,
            "Pow" => {
                let exponent = self
                    .const_input(n, 1, "the exponent")?
                    .ok_or_else(|| {
                        bad("raises to a run-time exponent; only a constant exponent is supported")
                    })?
                    .scalar_f32("the exponent")?;
                Activation::Pow { exponent }
            }
            "Gelu" => match a.string("approximate", "none").as_str() {
                "none" => Activation::Gelu { tanh: false },
                "tanh" => Activation::Gelu { tanh: true },
                other => return Err(bad(format!("has approximate={other:?} (none or tanh)"))),
            },
            "LeakyRelu" => Activation::LeakyRelu {
                alpha: a.float("alpha", 0.01),
            },
            "HardSigmoid" => Activation::HardSigmoid {
                alpha: a.float("alpha", 0.2),
                beta: a.float("beta", 0.5),
            },
            _ => {
                let (min, max) = if self.opset < 11 {
                    (
                        a.float("min", f32::NEG_INFINITY),
                        a.float("max", f32::INFINITY),
                    )
                } else {
                    let bound = |i: usize, default: f32| -> Result<f32, Problem> {
                        match self.const_input(n, i, "the Clip bound")? {
                            Some(c) => c.scalar_f32("the Clip bound"),
                            None => Ok(default),
                        }
                    };
                    (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
                };
                Activation::Clip { min, max }
            }
        })
    }

    pub(super) fn conv(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let (w, ws) = self.value(self.required(n, 1)?, true)?;
        if xs.len() != 4 || ws.len() != 4 {
            return Err(bad(format!(
                "only 2-D convolutions are supported (input {xs:?}, weight {ws:?})"
            )));
        }
        let kernel = [
            shape::known(ws[2], "kernel height")?,
            shape::known(ws[3], "kernel width")?,
        ];
        let stride = pair(a.ints("strides"), 1, "strides")?;
        let dilation = pair(a.ints("dilations"), 1, "dilations")?;
        let groups = a.int("group", 1);
        if groups < 1 {
            return Err(bad(format!("has group {groups}")));
        }
        let padding = padding(a, &xs, kernel, stride, dilation)?;
        let out_hw = out_size(&xs, kernel, stride, dilation, padding, false)?;
        let mut inputs = vec![x, w];
        if let Some(b) = self.input_name(n, 2) {
            inputs.push(self.value(b, true)?.0);
        }
        let spec = Conv2dSpec {
            stride,
            padding,
            dilation,
            groups: groups as usize,
        };
        Ok((
            Op::Conv2d(spec),
            inputs,
            vec![xs[0], ws[0], out_hw[0], out_hw[1]],
        ))
    }

    pub(super) fn batch_norm(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        if a.int("training_mode", 0) != 0 {
            return Err(bad(
                "is in training mode; only inference-mode batch norm is imported",
            ));
        }
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let mut inputs = vec![x];
        for (i, trainable) in [(1, true), (2, true), (3, false), (4, false)] {
            inputs.push(self.value(self.required(n, i)?, trainable)?.0);
        }
        // ONNX: running = momentum * running + (1 - momentum) * batch; the engine uses PyTorch's
        // convention with the weight on the batch statistic.
        let spec = BatchNormSpec {
            eps: a.float("epsilon", 1e-5),
            momentum: 1.0 - a.float("momentum", 0.9),
        };
        Ok((Op::BatchNorm2d(spec), inputs, xs))
    }

    pub(super) fn pool(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
        max: bool,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        if xs.len() != 4 {
            return Err(bad(format!("only 2-D pooling is supported (input {xs:?})")));
        }
        let k = pair(Some(a.required_ints("kernel_shape")?), 1, "kernel_shape")?;
        let stride = pair(a.ints("strides"), 1, "strides")?;
        if pair(a.ints("dilations"), 1, "dilations")? != [1, 1] {
            return Err(bad(
                "has dilations other than 1, which pooling does not support",
            ));
        }
        let padding = padding(a, &xs, k, stride, [1, 1])?;
        let ceil_mode = a.int("ceil_mode", 0) != 0;
        let out_hw = out_size(&xs, k, stride, [1, 1], padding, ceil_mode)?;
        let spec = Pool2dSpec {
            kernel: k,
            stride,
            padding,
            ceil_mode,
            count_include_pad: a.int("count_include_pad", 0) != 0,
        };
        let op = if max {
            Op::MaxPool2d(spec)
        } else {
            Op::AvgPool2d(spec)
        };
        Ok((op, vec![x], vec![xs[0], xs[1], out_hw[0], out_hw[1]]))
    }

    pub(super) fn pad(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let mode = a.string("mode", "constant");
        if mode != "constant" {
            return Err(bad(format!(
                "uses mode '{mode}'; only constant padding is supported"
            )));
        }
        let (x, xs) = self.value(self.required(n, 0)?, false)?;
        let (raw, value, axes) = if self.opset < 11 {
            (a.required_ints("pads")?, a.float("value", 0.0), None)
        } else {
            let pads = self
                .const_input(n, 1, "the pads")?
                .ok_or_else(|| bad("has no pads"))?;
            let value = match self.const_input(n, 2, "the pad value")? {
                Some(c) => c.scalar_f32("the pad value")?,
                None => 0.0,
            };
            let axes = self
                .const_input(n, 3, "the pad axes")?
                .map(|c| c.to_i64("the pad axes"))
                .transpose()?;
            (pads.to_i64("the pads")?, value, axes)
        };
        let r = xs.len();
        let axes: Vec<usize> = match axes {
            Some(ax) => ax
                .iter()
                .map(|&v| shape::axis(v, r))
                .collect::<Result<_, _>>()?,
            None => (0..r).collect(),
        };
        if raw.len() != 2 * axes.len() {
            return Err(bad(format!(
                "has {} pads for {} axes",
                raw.len(),
                axes.len()
            )));
        }
        if raw.iter().any(|&p| p < 0) {
            return Err(bad(format!(
                "has negative pads {raw:?} (cropping is not supported)"
            )));
        }
        let mut pads = vec![(0usize, 0usize); r];
        let mut out = xs.clone();
        for (j, &ax) in axes.iter().enumerate() {
            let (b, e) = (raw[j], raw[j + axes.len()]);
            pads[ax] = (b as usize, e as usize);
            let total = b
                .checked_add(e)
                .ok_or_else(|| bad(format!("has pads {raw:?} that overflow")))?;
            if total > 0 {
                out[ax] = shape::add(xs[ax], Int::Known(total))
                    .map_err(|_| bad("pads the batch dimension"))?;
            }
        }
        Ok((Op::Pad(PadSpec { pads, value }), vec![x], out))
    }

    /// `LayerNormalization` (opset 17): normalised over `axis..` (default the last axis), scale
    /// and optional bias of that trailing shape. Only its first output (the extra `Mean` and
    /// `InvStdDev` outputs are training intermediates no exporter reads).
    pub(super) fn layer_norm(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        if n.output.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(bad(
                "reads its Mean or InvStdDev output, which is not supported",
            ));
        }
        let (x, s) = self.value(self.required(n, 0)?, false)?;
        let axis = shape::axis(a.int("axis", -1), s.len())?;
        if axis == 0 {
            return Err(bad("normalises over the batch axis"));
        }
        let eps = a.float("epsilon", 1e-5);
        let (scale, _) = self.value(self.required(n, 1)?, true)?;
        let mut inputs = vec![x, scale];
        if let Some(b) = self.input_name(n, 2) {
            inputs.push(self.value(b, true)?.0);
        }
        Ok((Op::LayerNorm { axis, eps }, inputs, s))
    }

    /// Resize (opset 10+) and Upsample (opsets 7–9), from scales or (Resize, opset 11+) target
    /// sizes, of height and width only:
    /// - `nearest` by whole factors: the nearest source of output pixel i is i / factor under
    ///   `half_pixel` and `pytorch_half_pixel` whatever the rounding mode, and under
    ///   `asymmetric` with `nearest_mode = floor` (PyTorch's nn.Upsample export);
    /// - `linear` (`bilinear` in Upsample) to any size, with `half_pixel`,
    ///   `pytorch_half_pixel`, `align_corners` or `asymmetric` coordinates (Upsample and Resize
    ///   10: asymmetric), without antialiasing.
    ///
    /// Other modes are refused by name.
    pub(super) fn resize(
        &mut self,
        n: &NodeProto,
        a: &Attrs,
        op: &str,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(self.required(n, 0)?, false)?;
        let &[batch, channels, Int::Known(h), Int::Known(w)] = s.as_slice() else {
            return Err(bad(format!(
                "resizes a value of shape {s:?}; only NCHW images of a fixed size are supported"
            )));
        };
        let mode = a.string("mode", "nearest");
        let linear = matches!(mode.as_str(), "linear" | "bilinear");
        if mode != "nearest" && !linear {
            return Err(bad(format!(
                "resizes in mode {mode:?}; only \"nearest\" and \"linear\" are supported"
            )));
        }
        let coords = if op == "Resize" && self.opset >= 11 {
            a.string("coordinate_transformation_mode", "half_pixel")
        } else {
            "asymmetric".to_string()
        };
        if !linear && op == "Resize" && self.opset >= 11 {
            let rounding = a.string("nearest_mode", "round_prefer_floor");
            let exact = matches!(coords.as_str(), "half_pixel" | "pytorch_half_pixel")
                || (coords == "asymmetric" && rounding == "floor");
            if !exact {
                return Err(bad(format!(
                    "resizes with coordinate_transformation_mode {coords:?} and nearest_mode \
                     {rounding:?}; only half_pixel, pytorch_half_pixel, or asymmetric with floor \
                     are supported"
                )));
            }
        }
        // scales: an attribute (Upsample before opset 9), input 1 (Upsample 9, Resize 10) or
        // input 2 (Resize 11+); sizes: input 3 (Resize 11+)
        let scales = match (op, self.opset) {
            ("Upsample", o) if o < 9 => a.floats("scales"),
            ("Upsample", _) | (_, 10) => self
                .const_input(n, 1, "the scales")?
                .map(|c| c.to_f32("scales"))
                .transpose()?,
            _ => self
                .const_input(n, 2, "the scales")?
                .map(|c| c.to_f32("scales"))
                .transpose()?
                .filter(|v| !v.is_empty()),
        };
        let sizes = match scales {
            Some(_) => None,
            None => {
                let sizes = self
                    .const_input(n, 3, "the sizes")?
                    .ok_or_else(|| bad("has neither scales nor sizes"))?
                    .to_i64("sizes")?;
                if sizes.len() != 4 {
                    return Err(bad(format!("has sizes {sizes:?}; four are needed")));
                }
                if matches!(channels, Int::Known(c) if c != sizes[1]) {
                    return Err(bad(format!(
                        "resizes {channels:?} channels to {}; only height and width can change",
                        sizes[1]
                    )));
                }
                Some(sizes)
            }
        };
        if let Some(v) = &scales
            && (v.len() != 4 || v[0] != 1.0 || v[1] != 1.0)
        {
            return Err(bad(format!(
                "resizes by {v:?}; only height and width can change"
            )));
        }
        if linear {
            if a.int("antialias", 0) != 0 {
                return Err(bad(
                    "resizes with antialias = 1; only antialias = 0 is supported",
                ));
            }
            let coordinates = match coords.as_str() {
                "half_pixel" => Coordinates::HalfPixel,
                "pytorch_half_pixel" => Coordinates::PytorchHalfPixel,
                "align_corners" => Coordinates::AlignCorners,
                "asymmetric" => Coordinates::Asymmetric,
                other => {
                    return Err(bad(format!(
                        "resizes linearly with coordinate_transformation_mode {other:?}; only \
                         half_pixel, pytorch_half_pixel, align_corners and asymmetric are supported"
                    )));
                }
            };
            // the output size, and the scales the coordinates use: given ones as given, else
            // out / in (ONNX's rule)
            let (out_h, out_w, scale_h, scale_w) = match (&scales, &sizes) {
                (Some(v), _) => {
                    let size = |have: i64, f: f32| (have as f64 * f as f64).floor();
                    (size(h, v[2]), size(w, v[3]), v[2], v[3])
                }
                (None, Some(z)) => (
                    z[2] as f64,
                    z[3] as f64,
                    z[2] as f32 / h.max(1) as f32,
                    z[3] as f32 / w.max(1) as f32,
                ),
                (None, None) => return Err(bad("has neither scales nor sizes")),
            };
            let fits = |v: f64| (1.0..=65_536.0).contains(&v);
            if !fits(out_h) || !fits(out_w) || h <= 0 || w <= 0 {
                return Err(bad(format!(
                    "resizes {h}x{w} pixels to {out_h}x{out_w}; sizes from 1 to 65536 are supported"
                )));
            }
            let spec = BilinearSpec {
                out_h: out_h as usize,
                out_w: out_w as usize,
                scale_h,
                scale_w,
                coordinates,
            };
            let out = vec![
                batch,
                channels,
                Int::Known(out_h as i64),
                Int::Known(out_w as i64),
            ];
            return Ok((Op::Bilinear(spec), vec![x], out));
        }
        let factors: Vec<f32> = match (scales, sizes) {
            (Some(v), _) => v,
            (None, Some(sizes)) => {
                let mut f = vec![1.0; 4];
                for (d, have) in [(2, h), (3, w)] {
                    if have <= 0 || sizes[d] < 0 || sizes[d] % have != 0 {
                        return Err(bad(format!(
                            "resizes {have} pixels to {}; only whole factors are supported",
                            sizes[d]
                        )));
                    }
                    f[d] = (sizes[d] / have) as f32;
                }
                f
            }
            (None, None) => return Err(bad("has neither scales nor sizes")),
        };
        let whole = |v: f32| v >= 1.0 && v.fract() == 0.0 && v <= 4096.0;
        if !whole(factors[2]) || !whole(factors[3]) {
            return Err(bad(format!(
                "resizes by {factors:?}; only whole factors ≥ 1 of height and width are supported \
                 in nearest mode"
            )));
        }
        let spec = UpsampleSpec {
            sh: factors[2] as usize,
            sw: factors[3] as usize,
        };
        let out = vec![
            batch,
            channels,
            Int::Known(h * spec.sh as i64),
            Int::Known(w * spec.sw as i64),
        ];
        Ok((Op::Upsample(spec), vec![x], out))
    }

    /// `Softmax` or `LogSoftmax` (`op`) over one axis.
    pub(super) fn softmax(
        &mut self,
        a: &Attrs,
        op: &str,
        x_name: &str,
    ) -> Result<(Op, Vec<String>, SymShape), Problem> {
        let (x, s) = self.value(x_name, false)?;
        let default = if self.opset < 13 { 1 } else { -1 };
        let axis = shape::axis(a.int("axis", default), s.len())?;
        // Before opset 13 Softmax flattens to 2-D at `axis`; that equals a softmax over
        // one axis only when `axis` is the last one.
        if self.opset < 13 && axis + 1 != s.len() {
            return Err(bad(format!(
                "with opset {} coerces its {}-D input to 2-D at axis {axis}, which only the last axis supports",
                self.opset,
                s.len()
            )));
        }
        let op = if op == "Softmax" {
            Op::Softmax { axis }
        } else {
            Op::LogSoftmax { axis }
        };
        Ok((op, vec![x], s))
    }
}

/// A two-element attribute (`[h, w]`), `default` for both when absent.
fn pair(v: Option<Vec<i64>>, default: usize, what: &str) -> Result<[usize; 2], Problem> {
    match v.as_deref() {
        None => Ok([default, default]),
        Some(&[h, w]) if h > 0 && w > 0 => Ok([h as usize, w as usize]),
        Some(other) => Err(bad(format!(
            "has {what} {other:?}; two positive numbers are needed"
        ))),
    }
}

/// Explicit padding from `pads` or `auto_pad` (SAME_* need the input's spatial size).
fn padding(
    a: &Attrs,
    xs: &[Int],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
) -> Result<Padding2d, Problem> {
    let auto = a.string("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => match a.ints("pads").as_deref() {
            None => Ok(Padding2d::default()),
            Some(&[t, l, b, r]) if t >= 0 && l >= 0 && b >= 0 && r >= 0 => Ok(Padding2d {
                top: t as usize,
                left: l as usize,
                bottom: b as usize,
                right: r as usize,
            }),
            Some(p) => Err(bad(format!(
                "has pads {p:?}; four non-negative numbers are needed"
            ))),
        },
        "VALID" => Ok(Padding2d::default()),
        "SAME_UPPER" | "SAME_LOWER" => {
            let upper = auto == "SAME_UPPER";
            let h = shape::known(xs[2], "the input height")?;
            let w = shape::known(xs[3], "the input width")?;
            let (top, bottom) = same_pads(h, k[0], s[0], d[0], upper);
            let (left, right) = same_pads(w, k[1], s[1], d[1], upper);
            Ok(Padding2d {
                top,
                left,
                bottom,
                right,
            })
        }
        other => Err(bad(format!("has auto_pad '{other}'"))),
    }
}

/// (begin, end) padding so that the output has ceil(n / s) positions; the odd pixel goes at
/// the end for SAME_UPPER, at the start for SAME_LOWER.
fn same_pads(n: usize, k: usize, s: usize, d: usize, upper: bool) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(n);
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

/// Spatial output size of a convolution or pooling window (PyTorch's ceil-mode rule: the last
/// window must start inside the input or its top/left padding).
fn out_size(
    xs: &[Int],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    p: Padding2d,
    ceil: bool,
) -> Result<[Int; 2], Problem> {
    let one = |n: usize,
               k: usize,
               s: usize,
               d: usize,
               before: usize,
               after: usize|
     -> Result<Int, Problem> {
        let span = (k - 1) * d + 1;
        let padded = n + before + after;
        if padded < span {
            return Err(bad(format!(
                "has a {k}x window larger than the padded input ({padded})"
            )));
        }
        let mut o = if ceil {
            (padded - span).div_ceil(s) + 1
        } else {
            (padded - span) / s + 1
        };
        if ceil && (o - 1) * s >= n + before {
            o -= 1;
        }
        Ok(Int::Known(o as i64))
    };
    let h = shape::known(xs[2], "the input height")?;
    let w = shape::known(xs[3], "the input width")?;
    Ok([
        one(h, k[0], s[0], d[0], p.top, p.bottom)?,
        one(w, k[1], s[1], d[1], p.left, p.right)?,
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_last_for_upper() {
        // 224 -> 112 with a 3x3 stride-2 window: total pad 1.
        assert_eq!(same_pads(224, 3, 2, 1, true), (0, 1));
        assert_eq!(same_pads(224, 3, 2, 1, false), (1, 0));
        assert_eq!(same_pads(7, 3, 1, 1, true), (1, 1));
    }
}
