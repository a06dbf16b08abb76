#!/usr/bin/env python3
"""torchvision models through PyTorch's *default* ONNX exporter (torch.export, opset 18, the
default since PyTorch 2.9), imported by convscope and compared with onnxruntime (issue 14).

    /work/refenv/venv/bin/python tools/default_exporter_parity.py [--out DIR] [MODEL ...]
        (default models: resnet18 mobilenet_v2 mobilenet_v3_small efficientnet_b0
         shufflenet_v2_x1_0 mnasnet0_5 squeezenet1_0 googlenet regnet_x_400mf convnext_tiny)

Per model (random weights, eval mode): `torch.onnx.export(model, (x,), path)` at batch 1 (the
exporter writes the traced batch as a literal), then `convscope activations --input-npy` on a
batch of 2 standard-normal images against onnxruntime run on each item. Prints one line per
model: the largest difference relative to the largest logit, or convscope's one-sentence
refusal (which names every unsupported op). Needs target/release/convscope and a Python with
torch, torchvision, onnxscript and onnxruntime (tools/reference setup).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0",
           "mnasnet0_5", "squeezenet1_0", "googlenet", "regnet_x_400mf", "convnext_tiny"]


def export(name: str, path: str) -> None:
    import torch
    import torchvision
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(**kw).eval()
    size = 299 if name == "inception_v3" else 224
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), path)


def check(exe: str, path: str, scratch: str) -> str:
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0].name
    size = inp.shape[2]
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    x_path, y_path = os.path.join(scratch, "x.npy"), os.path.join(scratch, "y.npy")
    np.save(x_path, x)
    want = np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(2)])
    r = subprocess.run([exe, "activations", "--model", path, "--input-npy", x_path, "--layer", out,
                        "--out", y_path], capture_output=True, text=True)
    if r.returncode != 0:
        return "not imported: " + r.stderr.strip()
    got = np.load(y_path)
    return f"logits at batch 2 within {np.abs(got - want).max() / np.abs(want).max():.1e} of onnxruntime"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "default-exporter"))
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    a = ap.parse_args()
    if not os.path.exists(a.convscope):
        sys.exit(f"{a.convscope} is missing: cargo build --release")
    os.makedirs(a.out, exist_ok=True)
    for name in a.models:
        path = os.path.join(a.out, name + ".onnx")
        if not os.path.exists(path):
            try:
                export(name, path)
            except Exception as e:  # an exporter failure is a finding, not a crash
                print(f"{name}: PyTorch could not export it: {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
        print(f"{name}: {check(a.convscope, path, a.out)}", flush=True)


if __name__ == "__main__":
    main()
