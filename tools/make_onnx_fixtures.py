#!/usr/bin/env python3
"""Makes the ONNX import fixtures under tests/fixtures/onnx/ (run from the crate root).

    /work/refenv/venv/bin/python tools/make_onnx_fixtures.py [--shared ../shared]

1. Small synthetic models built with the onnx helper API (a few KB each), one per exporter
   idiom, each with an input `<name>.input.npy` and the onnxruntime output `<name>.output.npy`:
   - keras_idioms: NHWC input + Transpose, Conv with auto_pad SAME_UPPER, batch norm folded into
     Mul + Add, Clip with bounds as Constant inputs, Squeeze with an axes input, MatMul + Add,
     Softmax (opset 13).
   - torch_flatten: Conv, BatchNormalization, Relu, MaxPool, then PyTorch's
     `x.view(x.size(0), -1)` idiom Shape -> Gather(0) -> Unsqueeze -> Concat(.., -1) -> Reshape,
     then Gemm (opset 13).
   - pools_acts: AveragePool (count_include_pad, ceil_mode), LeakyRelu, HardSigmoid, HardSwish,
     Sigmoid, Tanh, Sub/Div by constants, Concat, Unsqueeze/Squeeze on run-time values (opset 14).
   - opset9_clip_pad_softmax / opset13_clip_pad_softmax: the same network in both attribute
     (opset 9: Clip min/max, Pad pads/value, Dropout ratio, Softmax coerced to 2-D) and input
     forms (opset 13).
   - opset13_reduce_mean / opset18_reduce_mean: adaptive average pooling as PyTorch's exporters
     write it, ReduceMean over the spatial axes: axes as an attribute with keepdims=1 then
     Flatten (opset 13, the legacy exporter), axes (-1, -2) as an input with keepdims=0
     (opset 18, the default exporter since PyTorch 2.9); both end in Gemm.
   - reduce_mean_channels: ReduceMean over the channel axis (no engine op yet: the importer
     must refuse it by name; no output file).
   - opset13_split / opset18_split: ShuffleNet's channel split of a run-time value: sizes as
     an input (opset 13), `num_outputs` with an uneven last part (opset 18); the parts go
     through different activations and are concatenated again.
   - opset17_layer_norm: ConvNeXt's block as the legacy exporter writes it: Transpose to
     channels-last, LayerNormalization (scale and bias) over the last axis, MatMul, GELU
     decomposed into Div, Erf, Add, Mul, Mul, Transpose back.
   - opset20_gelu: the `Gelu` operator with approximate="tanh" and "none", and a
     LayerNormalization over the last two axes without bias.
   - vit_legacy / vit_dynamo: a tiny torchvision VisionTransformer (32x32 input, 8x8 patches,
     2 layers of 2 heads, width 16, 5 classes, random weights, head re-drawn from N(0, 0.02)
     because torchvision starts it at zero) from the legacy exporter (`dynamo=False`, opset 17:
     the class token expanded to the batch through Equal/Where shape arithmetic) and from the
     default exporter (opset 18: the class token concatenated as a bare parameter, shapes
     traced as literals with the batch inside `[L, N, E]`). Input batch 2; the output is
     onnxruntime's, run on each item (the default export's literals fix the batch at 1);
     `<name>.grad.npy` is PyTorch's float64 gradient of logit 1 of item 0 w.r.t. the input.
   - swin_legacy / swin_dynamo: a tiny torchvision Swin Transformer (32x32 input, 4x4 patches,
     width 8, two stages of 2 blocks, 4x4 windows: shifted windows with their attention mask
     built by slice assignment (ScatterND/Range on constants), torch.roll as Slice + Concat,
     patch merging as step-2 Slices, and the default exporter's `as_strided` Gather after the
     pool), same files and references as vit_*.
   - maxvit_legacy / maxvit_dynamo: a tiny torchvision MaxViT (32x32 input, one block of
     width 16, partition 2, head size 8): attention written as `Einsum`, same files.
   `--only NAME` remakes one of these (each has its own seed, so the others do not change).
2. EfficientNet-Lite0 (the shared pretrained model): an input made from a uint8 array
   `effnet.input_u8.npy` [1, 3, 224, 224] as x = (u8 - 128) / 64 (exact in f32), the
   onnxruntime logits `effnet.logits.npy` [1, 1000], and PyTorch's gradient of logit
   EFFNET_CLASS w.r.t. the input (model from shared/tools/reference/refmodels.py), stored as
   a 64x64 window `effnet.grad_window.npy` [1, 3, 64, 64] at rows/cols 80..144 plus the
   per-channel L2 norms of the whole gradient `effnet.grad_norms.npy` [3] (the full gradient
   would be 600 KB).

Versions used are written to tests/fixtures/onnx/VERSIONS.txt.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join("tests", "fixtures", "onnx")
EFFNET_CLASS = 285  # Egyptian cat
WINDOW = (80, 144)
RNG = np.random.default_rng(20261129)


def init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def const_node(name: str, arr: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name + "_node", value=init(name, arr))


def rand(*shape, scale=0.5) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def save(name: str, nodes, inits, inp, out, opset: int, x: np.ndarray) -> None:
    graph = helper.make_graph(nodes, name, [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(OUT, name + ".onnx")
    onnx.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {inp.name: x})
    np.save(os.path.join(OUT, name + ".input.npy"), x)
    np.save(os.path.join(OUT, name + ".output.npy"), y.astype(np.float32))
    print(f"{name}: {os.path.getsize(path)} bytes, output {y.shape}")


def value(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def keras_idioms() -> None:
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w"], ["conv"], name="conv", auto_pad="SAME_UPPER",
                         strides=[2, 2]),
        helper.make_node("Mul", ["conv", "bn_scale"], ["bn_mul"], name="bn_mul"),
        helper.make_node("Add", ["bn_mul", "bn_shift"], ["bn"], name="bn_add"),
        const_node("clip_min", np.array(0.0, np.float32)),
        const_node("clip_max", np.array(6.0, np.float32)),
        helper.make_node("Clip", ["bn", "clip_min", "clip_max"], ["relu6"], name="relu6"),
        helper.make_node("GlobalAveragePool", ["relu6"], ["gap"], name="gap"),
        helper.make_node("Squeeze", ["gap", "sq_axes"], ["feat"], name="squeeze"),
        helper.make_node("MatMul", ["feat", "dense_w"], ["mm"], name="dense_matmul"),
        helper.make_node("Add", ["mm", "dense_b"], ["logits"], name="dense_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax"),
    ]
    inits = [
        init("conv_w", rand(4, 3, 3, 3)),
        init("bn_scale", rand(1, 4, 1, 1) + 1.0),
        init("bn_shift", rand(1, 4, 1, 1)),
        init("sq_axes", np.array([2, 3], np.int64)),
        init("dense_w", rand(4, 5)),
        init("dense_b", rand(5)),
    ]
    x = rand(2, 9, 9, 3, scale=2.0)
    save("keras_idioms", nodes, inits, value("input", ["batch", 9, 9, 3]), value("probs", ["batch", 5]), 13, x)


def torch_flatten() -> None:
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn",
                         epsilon=1e-3, momentum=0.99),
        helper.make_node("Relu", ["bn"], ["relu"], name="relu"),
        helper.make_node("MaxPool", ["relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["pool"], ["shape"], name="shape"),
        const_node("zero", np.array(0, np.int64)),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
        const_node("ax0", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["batch", "ax0"], ["batch1"], name="unsqueeze"),
        const_node("minus1", np.array([-1], np.int64)),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["pool", "target"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    inits = [
        init("conv_w", rand(4, 3, 3, 3)),
        init("conv_b", rand(4)),
        init("bn_g", rand(4) + 1.0),
        init("bn_b", rand(4)),
        init("bn_m", rand(4)),
        init("bn_v", np.abs(rand(4)) + 0.5),
        init("fc_w", rand(3, 4 * 3 * 3)),
        init("fc_b", rand(3)),
    ]
    x = rand(2, 3, 6, 6, scale=1.0)
    save("torch_flatten", nodes, inits, value("input", ["N", 3, 6, 6]), value("logits", ["N", 3]), 13, x)


def pools_acts() -> None:
    nodes = [
        helper.make_node("AveragePool", ["input"], ["avg"], name="avg", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1),
        helper.make_node("LeakyRelu", ["avg"], ["leaky"], name="leaky", alpha=0.1),
        helper.make_node("HardSigmoid", ["leaky"], ["hsig"], name="hsig", alpha=0.3, beta=0.4),
        helper.make_node("HardSwish", ["input"], ["hswish"], name="hswish"),
        helper.make_node("AveragePool", ["hswish"], ["avg2"], name="avg2", kernel_shape=[2, 2], strides=[2, 2],
                         pads=[0, 0, 1, 1], ceil_mode=0),
        helper.make_node("Sigmoid", ["avg2"], ["sig"], name="sig"),
        helper.make_node("Tanh", ["hsig"], ["tanh"], name="tanh"),
        helper.make_node("Sub", ["tanh", "shift"], ["sub"], name="sub"),
        helper.make_node("Div", ["sig", "div"], ["divd"], name="divd"),
        helper.make_node("Concat", ["sub", "divd"], ["cat"], name="cat", axis=1),
        helper.make_node("Unsqueeze", ["cat", "ax1"], ["unsq"], name="unsq"),
        helper.make_node("Squeeze", ["unsq", "ax1"], ["sq"], name="sq"),
        helper.make_node("Identity", ["sq"], ["out"], name="ident"),
    ]
    inits = [
        init("shift", rand(1, 2, 1, 1)),
        init("div", np.abs(rand(2, 1, 1)) + 0.5),
        init("ax1", np.array([1], np.int64)),
    ]
    x = rand(2, 2, 7, 7, scale=3.0)
    save("pools_acts", nodes, inits, value("input", ["N", 2, 7, 7]), value("out", ["N", 4, 4, 4]), 14, x)


def clip_pad_softmax(opset: int) -> None:
    w, b = rand(3, 2 * 7 * 7), rand(3)
    if opset < 11:
        clip = helper.make_node("Clip", ["pad"], ["clip"], name="clip", min=-0.5, max=0.5)
        pad = helper.make_node("Pad", ["input"], ["pad"], name="pad", pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.25)
        drop = helper.make_node("Dropout", ["clip"], ["drop"], name="drop", ratio=0.3)
        extra = []
        soft = helper.make_node("Softmax", ["fc"], ["probs"], name="softmax", axis=1)
    else:
        extra = [
            const_node("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
            const_node("pad_value", np.array(0.25, np.float32)),
            const_node("lo", np.array(-0.5, np.float32)),
            const_node("hi", np.array(0.5, np.float32)),
            const_node("ratio", np.array(0.3, np.float32)),
        ]
        pad = helper.make_node("Pad", ["input", "pads", "pad_value"], ["pad"], name="pad", mode="constant")
        clip = helper.make_node("Clip", ["pad", "lo", "hi"], ["clip"], name="clip")
        drop = helper.make_node("Dropout", ["clip", "ratio"], ["drop"], name="drop")
        soft = helper.make_node("Softmax", ["fc"], ["probs"], name="softmax")
    nodes = extra + [
        pad,
        clip,
        drop,
        helper.make_node("Flatten", ["drop"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "w", "b"], ["fc"], name="fc", transB=1, alpha=0.5, beta=2.0),
        soft,
    ]
    x = rand(2, 2, 5, 5, scale=1.0)
    save(f"opset{opset}_clip_pad_softmax", nodes, [init("w", w), init("b", b)],
         value("input", ["N", 2, 5, 5]), value("probs", ["N", 3]), opset, x)


def reduce_mean(opset: int) -> None:
    rng = np.random.default_rng(20261206 + opset)
    r = lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
    ]
    inits = [init("conv_w", r(4, 3, 3, 3)), init("conv_b", r(4)), init("fc_w", r(3, 4)), init("fc_b", r(3))]
    if opset < 18:
        nodes += [
            helper.make_node("ReduceMean", ["relu"], ["pooled"], name="pool", axes=[2, 3], keepdims=1),
            helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        ]
    else:
        nodes += [
            const_node("pool_axes", np.array([-1, -2], np.int64)),
            helper.make_node("ReduceMean", ["relu", "pool_axes"], ["flat"], name="pool", keepdims=0),
        ]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1))
    x = (rng.standard_normal((2, 3, 7, 5))).astype(np.float32)
    save(f"opset{opset}_reduce_mean", nodes, inits, value("input", ["N", 3, 7, 5]),
         value("logits", ["N", 3]), opset, x)


def reduce_mean_channels() -> None:
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], name="channel_mean", axes=[1], keepdims=1)]
    graph = helper.make_graph(nodes, "reduce_mean_channels", [value("input", ["N", 3, 4, 4])],
                              [value("mean", ["N", 1, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, "reduce_mean_channels.onnx"))
    print("reduce_mean_channels")


def reduce_ops(opset: int) -> None:
    """Every reduction over channel, row and column axes, with and without keepdims: axes as
    attributes (opset 13, but ReduceSum's input) or inputs (opset 18)."""
    rng = np.random.default_rng(20261210 + opset)
    nodes, inits = [], [init("conv_w", (rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32))]
    nodes.append(helper.make_node("Conv", ["input", "conv_w"], ["conv"], name="conv", pads=[1, 1, 1, 1]))

    def reduce(op: str, src: str, out: str, axes, keepdims: int) -> None:
        as_input = opset >= 18 or op == "ReduceSum"
        if as_input:
            nodes.append(const_node(f"{out}_axes", np.array(axes, np.int64)))
            nodes.append(helper.make_node(op, [src, f"{out}_axes"], [out], name=out, keepdims=keepdims))
        else:
            nodes.append(helper.make_node(op, [src], [out], name=out, axes=axes, keepdims=keepdims))

    for op, out in [("ReduceSum", "sum"), ("ReduceMean", "mean"), ("ReduceMax", "max"),
                    ("ReduceMin", "min"), ("ReduceL2", "l2")]:
        reduce(op, "conv", out, [1], 1)  # (N, 1, 6, 5) each
    nodes.append(helper.make_node("Concat", ["sum", "mean", "max", "min", "l2"], ["cat"], name="cat", axis=1))
    reduce("ReduceMax", "cat", "row_max", [-1], 0)  # (N, 5, 6)
    reduce("ReduceL2", "cat", "col_l2", [2], 0)  # (N, 5, 5)
    reduce("ReduceMin", "row_max", "rows_min", [2], 1)  # (N, 5, 1)
    reduce("ReduceSum", "col_l2", "cols_sum", [2], 1)  # (N, 5, 1)
    nodes.append(helper.make_node("Add", ["rows_min", "cols_sum"], ["both"], name="both"))
    reduce("ReduceMean", "both", "logits", [2], 0)  # (N, 5)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    save(f"opset{opset}_reduce_ops", nodes, inits, value("input", ["N", 3, 6, 5]),
         value("logits", ["N", 5]), opset, x)


def decomposed_layer_norm() -> None:
    """A LayerNorm written out as the legacy exporter does below opset 17 (ReduceMean, Sub,
    Pow 2, Sqrt, Div), then Reciprocal and Neg of run-time values: z − 1 / (z² + 1)."""
    rng = np.random.default_rng(20261211)
    f = lambda v: np.array(v, np.float32)  # noqa: E731
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mu"], name="mean", axes=[-1], keepdims=1),
        helper.make_node("Sub", ["input", "mu"], ["centred"], name="centre"),
        const_node("two", f(2.0)),
        helper.make_node("Pow", ["centred", "two"], ["sq"], name="square"),
        helper.make_node("ReduceMean", ["sq"], ["var"], name="variance", axes=[-1], keepdims=1),
        const_node("eps", f(1e-5)),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="add_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="std"),
        helper.make_node("Div", ["centred", "std"], ["normed"], name="normalise"),
        helper.make_node("Mul", ["normed", "gamma"], ["scaled"], name="scale"),
        helper.make_node("Add", ["scaled", "beta"], ["z"], name="shift"),
        helper.make_node("Pow", ["z", "two"], ["z_sq"], name="z_square"),
        const_node("one", f(1.0)),
        helper.make_node("Add", ["z_sq", "one"], ["z_sq1"], name="z_sq_plus_1"),
        helper.make_node("Reciprocal", ["z_sq1"], ["inv"], name="inverse"),
        helper.make_node("Neg", ["inv"], ["neg_inv"], name="negate"),
        helper.make_node("Add", ["z", "neg_inv"], ["out"], name="output"),
    ]
    inits = [init("gamma", (1.0 + rng.standard_normal(8) * 0.2).astype(np.float32)),
             init("beta", (rng.standard_normal(8) * 0.2).astype(np.float32))]
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    save("opset13_decomposed_layer_norm", nodes, inits, value("input", ["N", 5, 8]),
         value("out", ["N", 5, 8]), 13, x)


def resize_nearest() -> None:
    """Nearest upsampling by whole factors in its three spellings: Resize with scales (opset 13,
    half_pixel), Resize with sizes (opset 11, asymmetric + floor as PyTorch's nn.Upsample
    exports), Upsample with a scales input (opset 9); and a bilinear Resize that is refused."""
    rng = np.random.default_rng(20261212)
    w = init("conv_w", (rng.standard_normal((2, 3, 3, 3)) * 0.5).astype(np.float32))
    conv = helper.make_node("Conv", ["input", "conv_w"], ["conv"], name="conv", pads=[1, 1, 1, 1])
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    cases = [
        ("opset13_resize_scales", 13, [const_node("roi", f32([])), const_node("scales", f32([1, 1, 2, 3])),
                                       helper.make_node("Resize", ["conv", "roi", "scales"], ["up"], name="up",
                                                        mode="nearest")], [2, 2, 8, 15]),
        ("opset11_resize_sizes", 11, [const_node("roi", f32([])), const_node("scales", f32([])),
                                      const_node("sizes", np.array([2, 2, 12, 10], np.int64)),
                                      helper.make_node("Resize", ["conv", "roi", "scales", "sizes"], ["up"],
                                                       name="up", mode="nearest",
                                                       coordinate_transformation_mode="asymmetric",
                                                       nearest_mode="floor")], [2, 2, 12, 10]),
        ("opset9_upsample", 9, [const_node("scales", f32([1, 1, 2, 2])),
                                helper.make_node("Upsample", ["conv", "scales"], ["up"], name="up",
                                                 mode="nearest")], [2, 2, 8, 10]),
    ]
    for name, opset, nodes, out in cases:
        save(name, [conv] + nodes, [w], value("input", ["N", 3, 4, 5]), value("up", ["N"] + out[1:]), opset, x)
    nodes = [conv, const_node("roi", f32([])), const_node("scales", f32([1, 1, 2, 2])),
             helper.make_node("Resize", ["conv", "roi", "scales"], ["up"], name="cubic_up", mode="cubic")]
    graph = helper.make_graph(nodes, "resize_cubic", [value("input", ["N", 3, 4, 5])],
                              [value("up", ["N", 2, 8, 10])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, "resize_cubic.onnx"))
    print("resize_cubic")


def resize_linear() -> None:
    """Bilinear resizing in the spellings exporters write: Resize with scales (opset 13,
    half_pixel: PyTorch's align_corners=False), Resize with sizes (opset 11, align_corners;
    and pytorch_half_pixel shrinking to 3x2), Upsample in bilinear mode (opset 9, asymmetric)."""
    rng = np.random.default_rng(20261214)
    w = init("conv_w", (rng.standard_normal((2, 3, 3, 3)) * 0.5).astype(np.float32))
    conv = helper.make_node("Conv", ["input", "conv_w"], ["conv"], name="conv", pads=[1, 1, 1, 1])
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    i64 = lambda v: np.array(v, np.int64)  # noqa: E731
    cases = [
        ("opset13_resize_linear", 13, [const_node("roi", f32([])), const_node("scales", f32([1, 1, 2, 1.5])),
                                       helper.make_node("Resize", ["conv", "roi", "scales"], ["up"], name="up",
                                                        mode="linear")], [2, 2, 8, 7]),
        ("opset11_resize_linear_align", 11, [const_node("roi", f32([])), const_node("scales", f32([])),
                                             const_node("sizes", i64([2, 2, 7, 9])),
                                             helper.make_node("Resize", ["conv", "roi", "scales", "sizes"], ["up"],
                                                              name="up", mode="linear",
                                                              coordinate_transformation_mode="align_corners")],
         [2, 2, 7, 9]),
        ("opset11_resize_linear_down", 11, [const_node("roi", f32([])), const_node("scales", f32([])),
                                            const_node("sizes", i64([2, 2, 3, 2])),
                                            helper.make_node("Resize", ["conv", "roi", "scales", "sizes"], ["up"],
                                                             name="up", mode="linear",
                                                             coordinate_transformation_mode="pytorch_half_pixel")],
         [2, 2, 3, 2]),
        ("opset9_upsample_bilinear", 9, [const_node("scales", f32([1, 1, 2, 3])),
                                         helper.make_node("Upsample", ["conv", "scales"], ["up"], name="up",
                                                          mode="linear")], [2, 2, 8, 15]),
    ]
    for name, opset, nodes, out in cases:
        save(name, [conv] + nodes, [w], value("input", ["N", 3, 4, 5]), value("up", ["N"] + out[1:]), opset, x)


def where_mask() -> None:
    """Comparisons and Where on run-time values, as an attention mask is written: outside
    -2 ≤ y ≤ 0.8 (Greater, Less, Equal of the two, Not) a convolution's output is replaced by
    -inf (Where with a constant side) before a Softmax over the last axis, whose weights then
    scale the values (opset 13)."""
    rng = np.random.default_rng(20261215)
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        const_node("hi", f32(0.8)), const_node("lo", f32(-2.0)), const_node("minus_inf", f32(-np.inf)),
        helper.make_node("Greater", ["y", "hi"], ["above"], name="above"),
        helper.make_node("Less", ["y", "lo"], ["below"], name="below"),
        helper.make_node("Equal", ["above", "below"], ["inside"], name="inside"),
        helper.make_node("Not", ["inside"], ["outside"], name="outside"),
        helper.make_node("Where", ["outside", "minus_inf", "y"], ["masked"], name="mask"),
        helper.make_node("Softmax", ["masked"], ["weights"], name="softmax", axis=-1),
        helper.make_node("Mul", ["weights", "y"], ["out"], name="weighted"),
    ]
    inits = [init("conv_w", (rng.standard_normal((2, 3, 3, 3)) * 0.15).astype(np.float32))]
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    save("opset13_where_mask", nodes, inits, value("input", ["N", 3, 4, 5]), value("out", ["N", 2, 4, 5]), 13, x)
    y = np.load(os.path.join(OUT, "opset13_where_mask.output.npy"))
    assert np.isfinite(y).all(), "a row with every entry masked: pick another seed"


def expand_runtime() -> None:
    """Expand of a run-time value along a dimension of known size (a per-column mean spread
    back over the rows, opset 13), then used with the value it came from."""
    rng = np.random.default_rng(20261216)
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["y"], ["m"], name="column_mean", axes=[2], keepdims=1),
        const_node("shape", np.array([1, 2, 4, 5], np.int64)),
        helper.make_node("Expand", ["m", "shape"], ["e"], name="spread"),
        helper.make_node("Mul", ["e", "y"], ["out"], name="scaled"),
    ]
    inits = [init("conv_w", (rng.standard_normal((2, 3, 3, 3)) * 0.5).astype(np.float32))]
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    save("opset13_expand_runtime", nodes, inits, value("input", ["N", 3, 4, 5]), value("out", ["N", 2, 4, 5]), 13, x)


def open_spatial() -> None:
    """A CNN exported with its input's height and width left open (`dynamic_axes` on H and W):
    conv, global average pool; onnxruntime's output at 6x7 (opset 13)."""
    rng = np.random.default_rng(20261217)
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["out"], name="pool"),
    ]
    inits = [init("conv_w", (rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32))]
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    save("opset13_open_spatial", nodes, inits, value("input", ["N", 3, "H", "W"]), value("out", ["N", 4, 1, 1]),
         13, x)


def log_softmax() -> None:
    """A classifier ending in LogSoftmax (trained with NLL loss), over the last axis at opset 13
    and over axis 1 of a 2-D value at opset 11."""
    rng = np.random.default_rng(20261213)
    for opset, axis in [(13, -1), (11, 1)]:
        nodes = [
            helper.make_node("Conv", ["input", "conv_w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Flatten", ["conv"], ["flat"], name="flatten", axis=1),
            helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], name="fc", transB=1),
            helper.make_node("LogSoftmax", ["logits"], ["log_probs"], name="log_probs", axis=axis),
        ]
        inits = [init("conv_w", (rng.standard_normal((2, 3, 3, 3)) * 0.5).astype(np.float32)),
                 init("fc_w", (rng.standard_normal((4, 2 * 4 * 4)) * 0.3).astype(np.float32))]
        x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
        save(f"opset{opset}_log_softmax", nodes, inits, value("input", ["N", 3, 4, 4]),
             value("log_probs", ["N", 4]), opset, x)


def reduce_batch_axis() -> None:
    nodes = [helper.make_node("ReduceSum", ["input"], ["total"], name="batch_sum", axes=[0], keepdims=1)]
    graph = helper.make_graph(nodes, "reduce_batch_axis", [value("input", ["N", 3])],
                              [value("total", [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, "reduce_batch_axis.onnx"))
    print("reduce_batch_axis")


def split(opset: int) -> None:
    rng = np.random.default_rng(20261207 + opset)
    r = lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)  # noqa: E731
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], name="conv", pads=[1, 1, 1, 1])]
    if opset < 18:
        nodes += [
            const_node("sizes", np.array([2, 3], np.int64)),
            helper.make_node("Split", ["conv", "sizes"], ["a", "b"], name="split", axis=1),
        ]
    else:
        nodes.append(helper.make_node("Split", ["conv"], ["a", "b"], name="split", axis=1, num_outputs=2))
    nodes += [
        helper.make_node("Relu", ["a"], ["ra"], name="relu"),
        helper.make_node("Sigmoid", ["b"], ["sb"], name="sigmoid"),
        helper.make_node("Concat", ["sb", "ra"], ["out"], name="concat", axis=1),
    ]
    inits = [init("conv_w", r(5, 2, 3, 3)), init("conv_b", r(5))]
    x = rng.standard_normal((2, 2, 4, 6)).astype(np.float32)
    save(f"opset{opset}_split", nodes, inits, value("input", ["N", 2, 4, 6]),
         value("out", ["N", 5, 4, 6]), opset, x)


def layer_norm_block() -> None:
    rng = np.random.default_rng(20261208)
    r = lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Transpose", ["input"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("LayerNormalization", ["nhwc", "ln_g", "ln_b"], ["ln"], name="norm", axis=-1,
                         epsilon=1e-6),
        helper.make_node("MatMul", ["ln", "fc_w"], ["fc"], name="fc"),
        const_node("sqrt2", np.array(np.sqrt(2.0), np.float32)),
        helper.make_node("Div", ["fc", "sqrt2"], ["d"], name="gelu_div"),
        helper.make_node("Erf", ["d"], ["e"], name="gelu_erf"),
        const_node("one", np.array(1.0, np.float32)),
        helper.make_node("Add", ["e", "one"], ["a"], name="gelu_add"),
        helper.make_node("Mul", ["fc", "a"], ["m"], name="gelu_mul"),
        const_node("half", np.array(0.5, np.float32)),
        helper.make_node("Mul", ["m", "half"], ["gelu"], name="gelu_half"),
        helper.make_node("Transpose", ["gelu"], ["out"], name="to_nchw", perm=[0, 3, 1, 2]),
    ]
    inits = [init("ln_g", r(4) + 1.0), init("ln_b", r(4)), init("fc_w", r(4, 6))]
    x = (rng.standard_normal((2, 4, 3, 5)) * 2.0 + 0.5).astype(np.float32)
    save("opset17_layer_norm", nodes, inits, value("input", ["N", 4, 3, 5]), value("out", ["N", 6, 3, 5]), 17, x)


def gelu_op() -> None:
    rng = np.random.default_rng(20261209)
    nodes = [
        helper.make_node("Gelu", ["input"], ["g_tanh"], name="gelu_tanh", approximate="tanh"),
        helper.make_node("Gelu", ["g_tanh"], ["g_erf"], name="gelu_erf"),
        helper.make_node("LayerNormalization", ["g_erf", "ln_g"], ["out"], name="norm", axis=-2),
    ]
    inits = [init("ln_g", (rng.standard_normal((3, 5)) * 0.5 + 1.0).astype(np.float32))]
    x = (rng.standard_normal((2, 4, 3, 5)) * 2.0).astype(np.float32)
    save("opset20_gelu", nodes, inits, value("input", ["N", 4, 3, 5]), value("out", ["N", 4, 3, 5]), 20, x)


def transformer_fixtures(stem: str, model, size: int, classes: int) -> None:
    """`<stem>_legacy` and `<stem>_dynamo`: `model` through both exporters at batch 1, a batch of
    2 inputs, onnxruntime's logits per item and PyTorch's float64 gradient of logit 1 of item 0."""
    import torch

    x = torch.randn(2, 3, size, size)
    xd = x.double().requires_grad_(True)
    model.double()(xd)[0, 1].backward()
    model.float()
    for name, kw in ((f"{stem}_legacy", {"dynamo": False, "opset_version": 17}), (f"{stem}_dynamo", {})):
        path = os.path.join(OUT, name + ".onnx")
        torch.onnx.export(model, (x[:1],), path, input_names=["input"], output_names=["logits"], **kw)
        onnx.save(onnx.load(path), path)  # external data (if any) folded into the one file
        if os.path.exists(path + ".data"):
            os.remove(path + ".data")
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        y = np.concatenate([sess.run(None, {"input": x[i:i + 1].numpy()})[0] for i in range(2)])
        assert y.shape == (2, classes)
        np.save(os.path.join(OUT, name + ".input.npy"), x.numpy())
        np.save(os.path.join(OUT, name + ".output.npy"), y.astype(np.float32))
        np.save(os.path.join(OUT, name + ".grad.npy"), xd.grad.numpy().astype(np.float32))
        print(f"{name}: {os.path.getsize(path)} bytes, output {y.shape}")


def grad_cam_raw(model, layer, reshape_transform, x, cls: int) -> np.ndarray:
    """pytorch-grad-cam's (pip package `grad-cam`) Grad-CAM of logit `cls` for item 0 of `x` at
    `layer` with `reshape_transform`, in float64, before its min-max scaling and resize:
    ReLU(Σ_k mean(∂y/∂A_k) · A_k) at the layer's grid `(h, w)`."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    xd = torch.from_numpy(np.asarray(x)[:1]).double()
    model.double()
    targets = [ClassifierOutputTarget(cls)]
    cam = GradCAM(model=model, target_layers=[layer], reshape_transform=reshape_transform)
    cam(input_tensor=xd, targets=targets)  # runs the hooks: activations and gradients kept
    acts = cam.activations_and_grads.activations[0].cpu().numpy()
    grads = cam.activations_and_grads.gradients[0].cpu().numpy()
    raw = np.maximum(cam.get_cam_image(xd, layer, targets, acts, grads, False), 0)[0]
    model.float()
    return raw


def vit_rollout_reference(model, x) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020, heads averaged, (A + I)/2 with rows
    re-normalised, R = Â_L ⋯ Â_1) of a torchvision ViT for item 0 of `x`: the class token's row
    over the patch tokens. The attention matrices come from each block's own
    `nn.MultiheadAttention` (need_weights=True) on its `ln_1` output, in float64, not from an
    exported graph."""
    import torch

    xd = torch.from_numpy(np.asarray(x)[:1]).double()
    model.double()
    normed = []
    hooks = [layer.ln_1.register_forward_hook(lambda m, i, o: normed.append(o))
             for layer in model.encoder.layers]
    with torch.no_grad():
        model(xd)
        t = normed[0].shape[1]
        r = np.eye(t)
        for layer, y in zip(model.encoder.layers, normed):
            _, w = layer.self_attention(y, y, y, need_weights=True, average_attn_weights=False)
            a = w[0].numpy().mean(0) + np.eye(t)
            a /= a.sum(-1, keepdims=True)
            r = a @ r
    for h in hooks:
        h.remove()
    model.float()
    return r[0, 1:]


def token_grad_cam(stem: str, model, layer, reshape_transform) -> None:
    """`<stem>.gradcam_raw.npy`: [`grad_cam_raw`] of logit 1 for item 0 of
    `<stem>_legacy.input.npy` (the same input as both exports)."""
    x = np.load(os.path.join(OUT, f"{stem}_legacy.input.npy"))
    raw = grad_cam_raw(model, layer, reshape_transform, x, 1)
    np.save(os.path.join(OUT, f"{stem}.gradcam_raw.npy"), raw.astype(np.float32))
    print(f"{stem}: Grad-CAM {raw.shape}, max {raw.max():.4g}")


def vit_rollout(stem: str, model, grid: int) -> None:
    """`<stem>.rollout.npy`: [`vit_rollout_reference`] for item 0 of `<stem>_legacy.input.npy`,
    on the `(grid, grid)` patch grid."""
    x = np.load(os.path.join(OUT, f"{stem}_legacy.input.npy"))
    out = vit_rollout_reference(model, x).reshape(grid, grid)
    np.save(os.path.join(OUT, f"{stem}.rollout.npy"), out.astype(np.float32))
    print(f"{stem}: rollout {out.shape}, sum {out.sum():.4g}")


def redraw_zero_heads(model) -> None:
    import torch
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.any():
                torch.nn.init.normal_(m.weight, std=0.02)


def vit_tiny() -> None:
    import torch
    import torchvision

    torch.manual_seed(20261210)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5).eval()
    redraw_zero_heads(model)
    with torch.no_grad():
        torch.nn.init.normal_(model.class_token, std=0.5)
    transformer_fixtures("vit", model, 32, 5)
    # pytorch-grad-cam's ViT recipe: the last block's first norm, class token dropped
    token_grad_cam("vit", model, model.encoder.layers[-1].ln_1,
                   lambda t: t[:, 1:, :].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2))
    vit_rollout("vit", model, 4)


def swin_tiny() -> None:
    import torch
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(20261211)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[2, 2],
                            window_size=[4, 4], stochastic_depth_prob=0.0, num_classes=5).eval()
    redraw_zero_heads(model)
    transformer_fixtures("swin", model, 32, 5)
    # pytorch-grad-cam's Swin recipe: the last block's first norm, channels-last to first
    token_grad_cam("swin", model, model.features[-1][-1].norm1, lambda t: t.permute(0, 3, 1, 2))


def maxvit_tiny() -> None:
    import torch
    from torchvision.models.maxvit import MaxVit

    torch.manual_seed(20261212)
    model = MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16],
                   block_layers=[1], head_dim=8, stochastic_depth_prob=0.0, num_classes=5).eval()
    redraw_zero_heads(model)
    transformer_fixtures("maxvit", model, 32, 5)


ONLY = {
    "vit": vit_tiny,
    "swin": swin_tiny,
    "maxvit": maxvit_tiny,
    "layer_norm": lambda: (layer_norm_block(), gelu_op()),
    "split": lambda: (split(13), split(18)),
    "reduce_mean": lambda: (reduce_mean(13), reduce_mean(18), reduce_mean_channels()),
    "reduce_resize": lambda: (reduce_ops(13), reduce_ops(18), reduce_batch_axis(), decomposed_layer_norm(),
                                 resize_nearest(), resize_linear(), log_softmax()),
    "where": lambda: (where_mask(), expand_runtime(), open_spatial()),
}


def effnet(shared: str) -> None:
    import torch

    sys.path.insert(0, os.path.join(shared, "tools", "reference"))
    import refmodels  # noqa: E402

    path = os.path.join(shared, "data", "models", "efficientnet_lite0.onnx")
    from PIL import Image

    img = Image.open(os.path.join(shared, "data", "images", "chelsea.png")).convert("RGB")
    u8 = np.asarray(img.resize((224, 224), Image.BILINEAR))  # (224, 224, 3)
    u8 = np.ascontiguousarray(u8.transpose(2, 0, 1)[None]).astype(np.uint8)  # (1, 3, 224, 224)
    x = ((u8.astype(np.float32) - 128.0) / 64.0).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"input": x})
    model = refmodels.build_efficientnet_lite0(pretrained=True).eval()
    xt = torch.from_numpy(x).requires_grad_(True)
    out = model(xt)
    torch_err = float(np.abs(out.detach().numpy() - logits).max())
    out[0, EFFNET_CLASS].backward()
    g = xt.grad.numpy()
    lo, hi = WINDOW
    np.save(os.path.join(OUT, "effnet.input_u8.npy"), u8)
    np.save(os.path.join(OUT, "effnet.logits.npy"), logits.astype(np.float32))
    np.save(os.path.join(OUT, "effnet.grad_window.npy"), np.ascontiguousarray(g[:, :, lo:hi, lo:hi]))
    np.save(os.path.join(OUT, "effnet.grad_norms.npy"),
            np.sqrt((g.astype(np.float64) ** 2).sum(axis=(0, 2, 3))).astype(np.float32))
    print(f"effnet: top class {int(logits.argmax())}, torch vs onnxruntime max |diff| {torch_err:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.path.join("..", "shared"))
    ap.add_argument("--only", choices=sorted(ONLY))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if args.only:
        ONLY[args.only]()
        return
    keras_idioms()
    torch_flatten()
    pools_acts()
    clip_pad_softmax(9)
    clip_pad_softmax(13)
    effnet(args.shared)
    for make in ONLY.values():
        make()
    import torch
    with open(os.path.join(OUT, "VERSIONS.txt"), "w") as f:
        f.write("made by tools/make_onnx_fixtures.py with\n")
        f.write(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, torch {torch.__version__}, "
                f"numpy {np.__version__}\n")


if __name__ == "__main__":
    main()
