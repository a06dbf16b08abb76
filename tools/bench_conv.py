#!/usr/bin/env python3
"""Side-by-side convolution timings: convscope (Rust) vs PyTorch vs onnxruntime, 2 threads.

Run from the repository root:
    /work/refenv/venv/bin/python tools/bench_conv.py [--runs 21] [--rust-bin PATH] [LAYER ...]

LAYER arguments keep only the layers whose name contains one of them (all by default).

The layers are those of benches/conv.rs (LAYERS); the Rust side is
`cargo bench --bench conv -- --json` (or a built binary given with --rust-bin) with
RAYON_NUM_THREADS=2. Times are medians after warm-up. "bwd" is d_x + grad_w for one given d_y.
ONNX models are built directly with onnx.helper (a single Conv node, weights as initializers).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

THREADS = 2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rust_layers():
    """benches/conv.rs's LAYERS, read from its source so that both sides time one table:
    (name, n, c_in, h, w, c_out, k, stride, pad, groups)."""
    with open(os.path.join(ROOT, "benches", "conv.rs")) as f:
        src = f.read()
    table = src[src.index("pub const LAYERS"):]
    table = table[:table.index("];")]
    return [(name, *(int(v) for v in nums.split(",") if v.strip()))
            for name, nums in re.findall(r'\("(\w+)",([\d,\s]+)\)', table)]


LAYERS = rust_layers()


def median_ms(fn, runs):
    fn()
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def torch_times(layer, runs):
    name, n, c_in, h, w, c_out, k, s, p, g = layer
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, h, w, generator=gen)
    wt = torch.randn(c_out, c_in // g, k, k, generator=gen)
    b = torch.randn(c_out, generator=gen)
    with torch.no_grad():
        fwd = median_ms(lambda: F.conv2d(x, wt, b, stride=s, padding=p, groups=g), runs)
    xg = x.clone().requires_grad_(True)
    wg = wt.clone().requires_grad_(True)
    y = F.conv2d(xg, wg, b, stride=s, padding=p, groups=g)
    dy = torch.randn(y.shape, generator=gen)
    bwd = median_ms(lambda: torch.autograd.grad(y, [xg, wg], dy, retain_graph=True), runs)
    return fwd, bwd


def ort_forward(layer, runs):
    name, n, c_in, h, w, c_out, k, s, p, g = layer
    rng = np.random.default_rng(0)
    wt = rng.standard_normal((c_out, c_in // g, k, k), dtype=np.float32)
    b = rng.standard_normal((c_out,), dtype=np.float32)
    x = rng.standard_normal((n, c_in, h, w), dtype=np.float32)
    oh = (h + 2 * p - k) // s + 1
    ow = (w + 2 * p - k) // s + 1
    node = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=g
    )
    graph = helper.make_graph(
        [node],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c_in, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c_out, oh, ow])],
        [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return median_ms(lambda: sess.run(None, {"x": x}), runs)


def rust_times(runs, rust_bin, filters):
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS), BENCH_RUNS=str(runs))
    cmd = [rust_bin, "--json"] if rust_bin else ["cargo", "bench", "--bench", "conv", "--", "--json"]
    cmd += filters
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {r["layer"]: r for r in rows}


def macs(layer):
    name, n, c_in, h, w, c_out, k, s, p, g = layer
    oh = (h + 2 * p - k) // s + 1
    ow = (w + 2 * p - k) // s + 1
    return n * c_out * oh * ow * (c_in // g) * k * k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--rust-bin", default=None, help="built benches/conv binary (default: cargo bench)")
    ap.add_argument("layers", nargs="*", help="keep layers whose name contains one of these")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    rust = rust_times(args.runs, args.rust_bin, args.layers)
    print(f"threads: {THREADS}, runs: {args.runs}, torch {torch.__version__}, onnxruntime {ort.__version__}")
    head = (
        f"{'layer':<17} {'rs fwd':>7} {'pt fwd':>7} {'ort fwd':>7} {'rs/ort':>6} {'rs/pt':>6} "
        f"{'rs GF/s':>7} {'rs bwd':>7} {'pt bwd':>7} {'rs b/f':>6} {'rs/pt b':>7}"
    )
    print(head)
    print("-" * len(head))
    for layer in LAYERS:
        name = layer[0]
        if args.layers and not any(f in name for f in args.layers):
            continue
        r = rust.get(name)
        if r is None:
            print(f"{name:<17} missing from the Rust bench output", file=sys.stderr)
            continue
        pt_f, pt_b = torch_times(layer, args.runs)
        ort_f = ort_forward(layer, args.runs)
        gf = 2 * macs(layer) / (r["fwd_ms"] * 1e-3) / 1e9
        print(
            f"{name:<17} {r['fwd_ms']:7.3f} {pt_f:7.3f} {ort_f:7.3f} {r['fwd_ms'] / ort_f:6.2f} "
            f"{r['fwd_ms'] / pt_f:6.2f} {gf:7.1f} {r['bwd_ms']:7.3f} {pt_b:7.3f} "
            f"{r['bwd_ms'] / r['fwd_ms']:6.2f} {r['bwd_ms'] / pt_b:7.2f}"
        )
    print("times in ms (median); rs = convscope, pt = PyTorch, ort = onnxruntime; bwd = d_x + grad_w")


if __name__ == "__main__":
    main()
