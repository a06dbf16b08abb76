#!/usr/bin/env python3
"""Every torchvision family from both exporters: logits and the input gradient of the top logit,
convscope against PyTorch, judged by PyTorch's own float32 floor (issue 14's must-show).

    /work/refenv/venv/bin/python tools/zoo_gradient_parity.py [--out DIR] [--convscope BIN]
        [--json FILE] [MODEL ...]

Per model (random weights, seed 0, as tools/default_exporter_parity.py builds and exports them;
one standard-normal image, seed 0, 224² or 299² for Inception-v3):
- PyTorch's float64 gradient g64 of the top logit, its float32 gradient g32, and g32 again at
  three nudges of the input by N(0, 1) x 1e-6 x max |x| (tools/make_zoo_fixtures.py's
  `gradient_sensitivity`): the float32 floor is, per entry, the largest of |g32 - g64| and
  |g32 - g32(nudged)|; its maximum and its 99th percentile, relative to max |g64|;
- convscope's gradient (`explain --method saliency --raw --target K`, the input gradient of
  logit K) from the default exporter's file and the legacy one's;
- the must-show: max |ours - g64| / max |g64| <= max(1e-3, 3 x floor), and the 99th percentile
  of |ours - g64| / max |g64| <= max(1e-3, 3 x the floor's 99th percentile). Logits are checked
  against PyTorch float64 within 1e-4 of the largest.
Prints one line per file and a summary; --json writes every figure.
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

FAMILIES = ["alexnet", "vgg11_bn", "resnet18", "resnext50_32x4d", "wide_resnet50_2", "densenet121",
            "googlenet", "inception_v3", "squeezenet1_0", "mobilenet_v2", "mobilenet_v3_small",
            "mobilenet_v3_large", "mnasnet0_5", "shufflenet_v2_x1_0", "efficientnet_b0",
            "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny", "vit_b_16",
            "swin_t", "maxvit_t"]


def torch_side(name: str, x: np.ndarray):
    import torch
    model = build(name)
    out = {}

    def grad(dtype, xin, k=None):
        m = model.to(dtype)
        xt = torch.from_numpy(xin).to(dtype).requires_grad_(True)
        y = m(xt)[0]
        k = int(y.argmax()) if k is None else k
        y[k].backward()
        return k, y.detach().double().numpy(), xt.grad.double().numpy()[0]

    k, logits64, g64 = grad(torch.float64, x)
    _, _, g32 = grad(torch.float32, x, k)
    floor = np.abs(g32 - g64)
    for draw in range(3):  # as tools/make_zoo_fixtures.py's gradient_sensitivity
        nudge = np.random.default_rng(1000 + draw).standard_normal(x.shape).astype(np.float32)
        _, _, g32n = grad(torch.float32, x + nudge * np.float32(1e-6 * np.abs(x).max()), k)
        floor = np.maximum(floor, np.abs(g32 - g32n))
    model.float()
    scale = np.abs(g64).max()
    floor = floor / scale
    out.update(top=k, logits=logits64, g64=g64, scale=scale, floor_max=float(floor.max()),
               floor_p99=float(np.percentile(floor, 99)))
    return out


def ours(exe: str, path: str, x_path: str, k: int, scratch: str):
    r = subprocess.run([exe, "explain", "--model", path, "--input-npy", x_path, "--method", "saliency",
                        "--target", str(k), "--raw", "--json", "--out", scratch],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[0] if r.stderr.strip() else f"exit {r.returncode}"
    line = json.loads(r.stdout.strip().splitlines()[-1])
    return np.load(line["raw"]).astype(np.float64), None


def logits_of(exe: str, path: str, x_path: str, scratch: str):
    import onnx
    out_name = onnx.load(path, load_external_data=False).graph.output[0].name
    y_path = os.path.join(scratch, "y.npy")
    r = subprocess.run([exe, "activations", "--model", path, "--input-npy", x_path, "--layer", out_name,
                        "--out", y_path], capture_output=True, text=True)
    return np.load(y_path).astype(np.float64)[0] if r.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", default=FAMILIES)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "default-exporter"))
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    scratch = tempfile.mkdtemp()
    rows, ok = [], 0
    for name in a.models:
        size = 299 if name == "inception_v3" else 224
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        x_path = os.path.join(scratch, "x.npy")
        np.save(x_path, x)
        ref = torch_side(name, x)
        for legacy in (False, True):
            path = os.path.join(a.out, ("legacy_" if legacy else "") + name + ".onnx")
            label = f"{name} ({'legacy' if legacy else 'default'})"
            if not os.path.exists(path):
                try:
                    export(name, path, legacy)
                except Exception as e:  # an exporter failure is a finding, not a crash
                    print(f"{label}: PyTorch could not export it: {type(e).__name__}", flush=True)
                    rows.append(dict(model=name, legacy=legacy, error="export failed"))
                    continue
            g, err = ours(a.convscope, path, x_path, ref["top"], scratch)
            if g is None:
                print(f"{label}: convscope failed: {err}", flush=True)
                rows.append(dict(model=name, legacy=legacy, error=err))
                continue
            y = logits_of(a.convscope, path, x_path, scratch)
            logit_err = float(np.abs(y - ref["logits"]).max() / np.abs(ref["logits"]).max()) if y is not None else None
            d = np.abs(g - ref["g64"]) / ref["scale"]
            e_max, e_p99 = float(d.max()), float(np.percentile(d, 99))
            bound_max = max(1e-3, 3 * ref["floor_max"])
            bound_p99 = max(1e-3, 3 * ref["floor_p99"])
            passed = e_max <= bound_max and e_p99 <= bound_p99 and logit_err is not None and logit_err <= 1e-4
            ok += passed
            rows.append(dict(model=name, legacy=legacy, logits=logit_err, grad_max=e_max, grad_p99=e_p99,
                             floor_max=ref["floor_max"], floor_p99=ref["floor_p99"], passed=bool(passed)))
            print(f"{label}: logits {logit_err:.1e}; gradient max {e_max:.1e} (bound {bound_max:.1e}, "
                  f"floor {ref['floor_max']:.1e}), p99 {e_p99:.1e} (bound {bound_p99:.1e}, floor p99 "
                  f"{ref['floor_p99']:.1e}): {'ok' if passed else 'FAILS'}", flush=True)
    print(f"{ok} of {2 * len(a.models)} files within the bounds")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
