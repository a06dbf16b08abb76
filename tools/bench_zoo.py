#!/usr/bin/env python3
"""Imported-model speed: convscope beside PyTorch and onnxruntime, in one run.

usage: python tools/bench_zoo.py [--zoo DIR] [--models a,b] [--rounds 3] [--runs 10]
                                 [--threads 2] [--convscope target/release/convscope]
                                 [--json-out FILE]

Models: resnet50, vgg16, mobilenet_v2, squeezenet1_1 from the model zoo made by
tools/make_zoo_fixtures.py (DIR: --zoo, else $CONVSCOPE_MODEL_ZOO, else target/model-zoo) and
the shared pretrained efficientnet_lite0 (../shared/data/models/efficientnet_lite0.onnx; its
PyTorch side is tools/effnet_lite0.py, the same weights).

Per model and round, in this order so that all three see the same machine state:
  PyTorch       the torchvision model (same seeded weights as the .onnx): forward under
                inference_mode, and forward + backward of one logit to the input with frozen
                parameters (the cost of one saliency map)
  onnxruntime   forward (CPUExecutionProvider, intra-op threads = --threads)
  convscope     `convscope bench --model X.onnx --json --threads T --runs R` (same definitions)
Each figure is the median of --runs timed runs after warm-up; the table reports the median
over --rounds rounds. Batch 1, 224x224, float32.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import make_zoo_fixtures as zoo  # noqa: E402
import simd_level  # noqa: E402

SHARED_EFFNET = os.path.join(ROOT, "..", "shared", "data", "models", "efficientnet_lite0.onnx")


def median_ms(fn, runs, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def torch_side(name, runs):
    import torch

    if name == "efficientnet_lite0":
        import effnet_lite0  # the pretrained PyTorch model behind the bundled .onnx

        m = effnet_lite0.build(True)
    else:
        m = zoo.build(name)
    for p in m.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def fwd():
        with torch.inference_mode():
            m(x)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        m(xi)[0, 0].backward()

    return median_ms(fwd, runs), median_ms(fwd_bwd, runs)


def ort_side(path, threads, runs):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    return median_ms(lambda: sess.run(None, {name: x}), runs)


def convscope_side(exe, path, threads, runs):
    out = subprocess.run([exe, "bench", "--model", path, "--json", "--threads", str(threads),
                          "--runs", str(runs)], check=True, capture_output=True, text=True)
    j = json.loads(out.stdout.strip().splitlines()[-1])
    return j["forward_ms"], j["forward_backward_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zoo", default=zoo.default_out())
    ap.add_argument("--models", default="resnet50,vgg16,mobilenet_v2,squeezenet1_1,efficientnet_lite0")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    ap.add_argument("--json-out")
    ap.add_argument("--level", default="best", choices=simd_level.LEVELS,
                    help="instruction-set level of PyTorch and convscope (tools/simd_level.py); "
                         "onnxruntime always runs at the CPU's best")
    a = ap.parse_args()
    simd_level.apply(a.level)

    import onnxruntime
    import torch

    print(simd_level.describe(), flush=True)

    torch.set_num_threads(a.threads)
    results = {}
    for name in a.models.split(","):
        path = SHARED_EFFNET if name == "efficientnet_lite0" else os.path.join(a.zoo, f"{name}.onnx")
        if not os.path.isfile(path):
            sys.exit(f"{path} is missing; make it with tools/make_zoo_fixtures.py --models {name}")
        rows = []
        for r in range(a.rounds):
            pt = torch_side(name, a.runs)
            o = ort_side(path, a.threads, a.runs)
            cs = convscope_side(a.convscope, path, a.threads, a.runs)
            rows.append({"torch_fwd": pt[0], "torch_fwd_bwd": pt[1], "ort_fwd": o,
                         "cs_fwd": cs[0], "cs_fwd_bwd": cs[1]})
            print(f"{name} round {r + 1}: " + ", ".join(
                f"{k} {v:.1f}" for k, v in rows[-1].items() if v is not None), flush=True)
        med = {k: (statistics.median([row[k] for row in rows]) if rows[0][k] is not None else None)
               for k in rows[0]}
        results[name] = {"median_of_rounds": med, "rounds": rows}

    print(f"\nbatch 1, 224x224, {a.threads} threads, median of {a.rounds} rounds x {a.runs} runs "
          f"(torch {torch.__version__}, onnxruntime {onnxruntime.__version__})")
    print("| model | convscope fwd | PyTorch fwd | ort fwd | fwd / PyTorch | fwd / ort "
          "| convscope fwd+bwd | PyTorch fwd+bwd | fwd+bwd / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        m = res["median_of_rounds"]
        f = lambda v: "-" if v is None else f"{v:.1f} ms"  # noqa: E731
        ratio = lambda a_, b_: "-" if (a_ is None or b_ is None) else f"{a_ / b_:.2f}x"  # noqa: E731
        print(f"| {name} | {f(m['cs_fwd'])} | {f(m['torch_fwd'])} | {f(m['ort_fwd'])} "
              f"| {ratio(m['cs_fwd'], m['torch_fwd'])} | {ratio(m['cs_fwd'], m['ort_fwd'])} "
              f"| {f(m['cs_fwd_bwd'])} | {f(m['torch_fwd_bwd'])} | {ratio(m['cs_fwd_bwd'], m['torch_fwd_bwd'])} |")
    if a.json_out:
        with open(a.json_out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
