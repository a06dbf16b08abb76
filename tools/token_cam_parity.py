#!/usr/bin/env python3
"""Grad-CAM at a token layer of the full-size vision transformers, convscope against
pytorch-grad-cam (issue 14's must-show): ViT-B/16 and Swin-T with random weights (seed 0, as
tools/default_exporter_parity.py builds and exports them), from both exporters.

    /work/refenv/venv/bin/python tools/token_cam_parity.py [--out DIR] [--convscope BIN]

The reference is pytorch-grad-cam (`pip install grad-cam`) in float64 at the layer its
documentation recommends, with its reshape transform: ViT's last block `ln_1` (class token
dropped, 14x14 patches), Swin's last block `norm1` (channels-last 7x7 to channels-first).
convscope gets no layer and no transform: `explain --method gradcam` picks its default layer and
reads the tokens back onto the grid itself. Both explain the top class of one standard-normal
image (seed 0). Prints the layer convscope chose and the largest difference of the raw map
relative to its largest value (the must-show: within 1e-3), and attention rollout's for ViT
against a float64 rollout from each block's own attention weights.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from default_exporter_parity import build, export  # noqa: E402
from make_onnx_fixtures import grad_cam_raw, vit_rollout_reference  # noqa: E402


def reference(name: str, model, x):
    """The top class (float64), pytorch-grad-cam's raw map at the documented layer, and for ViT
    the float64 attention rollout on the 14x14 grid."""
    import torch

    with torch.no_grad():
        top = int(model.double()(torch.from_numpy(x).double())[0].argmax())
    model.float()
    if name == "vit_b_16":
        layer = model.encoder.layers[-1].ln_1

        def transform(t):
            return t[:, 1:, :].reshape(t.shape[0], 14, 14, t.shape[2]).permute(0, 3, 1, 2)
    else:
        layer = model.features[-1][-1].norm1

        def transform(t):
            return t.permute(0, 3, 1, 2)
    raw = grad_cam_raw(model, layer, transform, x, top)
    rollout = vit_rollout_reference(model, x).reshape(14, 14) if name == "vit_b_16" else None
    return top, raw, rollout


def convscope(exe: str, path: str, x_path: str, method: str, top: int, out: str):
    r = subprocess.run([exe, "explain", "--model", path, "--input-npy", x_path, "--method", method,
                        "--target", str(top), "--raw", "--json", "--out", out],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    line = json.loads(r.stdout.strip().splitlines()[-1])
    return np.load(line["raw"]), line.get("layer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "default-exporter"))
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    scratch = tempfile.mkdtemp()
    x_path = os.path.join(scratch, "x.npy")
    np.save(x_path, x)
    for name in ["vit_b_16", "swin_t"]:
        top, want, want_rollout = reference(name, build(name), x)
        for legacy in (False, True):
            path = os.path.join(a.out, ("legacy_" if legacy else "") + name + ".onnx")
            if not os.path.exists(path):
                export(name, path, legacy)
            label = f"{name} ({'legacy' if legacy else 'default'} exporter)"
            got, layer = convscope(a.convscope, path, x_path, "gradcam", top, scratch)
            if got is None:
                print(f"{label}: Grad-CAM failed: {layer}", flush=True)
                continue
            err = np.abs(got - want).max() / np.abs(want).max()
            print(f"{label}: Grad-CAM of class {top} at {layer}, {got.shape}: "
                  f"{err:.1e} of the largest value from pytorch-grad-cam", flush=True)
            if want_rollout is not None:
                got, _ = convscope(a.convscope, path, x_path, "attention-rollout", top, scratch)
                if got is not None:
                    err = np.abs(got - want_rollout).max() / np.abs(want_rollout).max()
                    print(f"{label}: attention rollout {got.shape}: {err:.1e} of the largest value "
                          f"from PyTorch float64", flush=True)


if __name__ == "__main__":
    main()
