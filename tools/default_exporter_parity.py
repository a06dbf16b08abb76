#!/usr/bin/env python3
"""torchvision models through PyTorch's *default* ONNX exporter (torch.export, opset 18, the
default since PyTorch 2.9), imported by convscope and compared with onnxruntime (issue 14).

    /work/refenv/venv/bin/python tools/default_exporter_parity.py [--out DIR] [--legacy] [MODEL ...]
        (default models: resnet18 mobilenet_v2 mobilenet_v3_small efficientnet_b0
         shufflenet_v2_x1_0 mnasnet0_5 squeezenet1_0 googlenet regnet_x_400mf convnext_tiny)

With --legacy the files come from the legacy exporter instead (`dynamo=False`, opset 17,
written as `legacy_<model>.onnx`). Vision transformers (vit_b_16, swin_t, maxvit_t) have
zero-initialised classifier heads, re-drawn from N(0, 0.02) so that logits are not all 0.
Where a file runs only at its traced batch (see below), convscope runs each item alone.

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


def build(name: str):
    """The random-weight torchvision model every script of the zoo exports (seed 0; zero
    classifier heads re-drawn from N(0, 0.02))."""
    import torch
    import torchvision
    torch.manual_seed(0)
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision.models, name)(**kw).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.any():
                torch.nn.init.normal_(m.weight, std=0.02)
    return model


def export(name: str, path: str, legacy: bool) -> None:
    import torch
    model = build(name)
    size = 299 if name == "inception_v3" else 224
    x = torch.randn(1, 3, size, size)
    if legacy:
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17)
    else:
        torch.onnx.export(model, (x,), path)


def check(exe: str, path: str, scratch: str) -> str:
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0].name
    size = inp.shape[2]
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    x_path, y_path = os.path.join(scratch, "x.npy"), os.path.join(scratch, "y.npy")
    np.save(x_path, x)
    want = np.concatenate([sess.run(None, {inp.name: x[i:i + 1]})[0] for i in range(2)])

    def run(xp: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, "activations", "--model", path, "--input-npy", xp, "--layer", out,
                               "--out", y_path], capture_output=True, text=True)

    r = run(x_path)
    how = "at batch 2"
    if r.returncode != 0 and "cannot import" not in r.stderr:
        # a file that runs only at its traced batch: each item alone
        parts = []
        for i in range(2):
            np.save(x_path, x[i:i + 1])
            r = run(x_path)
            if r.returncode != 0:
                break
            parts.append(np.load(y_path))
        else:
            np.save(y_path, np.concatenate(parts))
        how = "item by item (the file runs at its traced batch only)"
    if r.returncode != 0:
        return "not imported: " + r.stderr.strip()
    got = np.load(y_path)
    return f"logits {how} within {np.abs(got - want).max() / np.abs(want).max():.1e} of onnxruntime"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "default-exporter"))
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    ap.add_argument("--legacy", action="store_true", help="the legacy exporter (dynamo=False, opset 17)")
    a = ap.parse_args()
    if not os.path.exists(a.convscope):
        sys.exit(f"{a.convscope} is missing: cargo build --release")
    os.makedirs(a.out, exist_ok=True)
    for name in a.models:
        path = os.path.join(a.out, ("legacy_" if a.legacy else "") + name + ".onnx")
        if not os.path.exists(path):
            try:
                export(name, path, a.legacy)
            except Exception as e:  # an exporter failure is a finding, not a crash
                print(f"{name}: PyTorch could not export it: {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
        print(f"{name}: {check(a.convscope, path, a.out)}", flush=True)


if __name__ == "__main__":
    main()
