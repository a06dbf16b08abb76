#!/usr/bin/env python3
"""Whole-network engine benchmark: PyTorch and convscope side by side, in one run.

usage: python tools/bench_engine.py [--runs 15] [--threads 2] [--convscope target/release/convscope]

Measures, for the smile CNN (the seed book's smile detector, 64x64x3):
  fwd           batch 1 forward (torch.inference_mode)
  fwd_bwd_input batch 1 forward + backward of the logit to the input, parameters frozen
                (the cost of one saliency map)
  train_step    batch 32 forward (train mode) + BCE-with-logits + backward + Adam step
Medians of --runs timed runs after warm-up; both sides use --threads threads. convscope's
numbers come from `convscope bench --json` (same definitions, see DESIGN.md), run right after
the PyTorch side so that both see the same machine state. Prints a table and writes JSON.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simd_level  # noqa: E402  (before torch: it caps PyTorch's level at import)

simd_level.apply_from_argv()
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

# The same module names as the engine preset and the golden fixtures.
from make_engine_fixtures import SmileCNN  # noqa: E402


def median_ms(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def torch_side(runs, warmup, threads, batch):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = SmileCNN(bn_momentum=0.1).eval()
    x1 = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def fwd():
        with torch.inference_mode():
            m(x1)

    for p in m.parameters():
        p.requires_grad_(False)

    def fwd_bwd():
        xi = x1.clone().requires_grad_(True)
        m(xi).reshape(-1)[0].backward()

    res = {"fwd_ms": median_ms(fwd, runs, warmup), "fwd_bwd_input_ms": median_ms(fwd_bwd, runs, warmup)}
    for p in m.parameters():
        p.requires_grad_(True)
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    lossf = nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(0)
    steps = 10
    X = torch.rand(batch * steps, 3, 64, 64, generator=g)
    Y = (torch.rand(batch * steps, 1, generator=g) > 0.5).float()

    def run():
        for s in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = lossf(m(X[s * batch:(s + 1) * batch]), Y[s * batch:(s + 1) * batch])
            loss.backward()
            opt.step()

    res["train_step_ms"] = median_ms(run, max(3, runs // 3), 1) / steps
    res["train_images_per_s"] = batch / res["train_step_ms"] * 1e3
    return res


def convscope_side(exe, runs, threads, batch):
    cmd = [exe, "bench", "--model", "smile-cnn", "--runs", str(runs), "--threads", str(threads),
           "--train-batch", str(batch), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {"fwd_ms": r["forward_ms"], "fwd_bwd_input_ms": r["forward_backward_ms"],
            "train_step_ms": r["train_step_ms"], "train_images_per_s": r["train_images_per_s"]}, cmd


def cpu_model():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    ap.add_argument("--out", default="bench_engine.json")
    ap.add_argument("--level", default="best", choices=simd_level.LEVELS,
                    help="instruction-set level of both sides (tools/simd_level.py)")
    a = ap.parse_args()
    if not os.path.exists(a.convscope):
        sys.exit(f"{a.convscope} does not exist: build it first with `cargo build --release`")
    t = torch_side(a.runs, a.warmup, a.threads, a.batch)
    c, cmd = convscope_side(a.convscope, a.runs, a.threads, a.batch)
    rows = [("smile CNN forward, batch 1 (ms)", "fwd_ms", False),
            ("smile CNN forward + backward to input, batch 1 (ms)", "fwd_bwd_input_ms", False),
            (f"smile CNN train step, batch {a.batch} (ms)", "train_step_ms", False),
            (f"smile CNN training throughput, batch {a.batch} (images/s)", "train_images_per_s", True)]
    print(f"machine: {cpu_model()}, {a.threads} threads, torch {torch.__version__}")
    print(f"convscope: {' '.join(cmd)}")
    print("| measure | PyTorch | convscope | convscope speed-up |")
    print("|---|---|---|---|")
    for label, key, higher_better in rows:
        ratio = c[key] / t[key] if higher_better else t[key] / c[key]
        print(f"| {label} | {t[key]:.2f} | {c[key]:.2f} | {ratio:.2f}x |")
    json.dump({"machine": cpu_model(), "threads": a.threads, "torch": t, "convscope": c},
              open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
