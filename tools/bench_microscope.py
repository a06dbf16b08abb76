#!/usr/bin/env python3
"""Feature visualisation of many units in one batch ("microscope") speed: convscope beside
PyTorch, in one run, at one instruction-set level.

usage: python tools/bench_microscope.py [--steps 256] [--size 128] [--units 32] [--layer-block 6]
                                        [--threads 2] [--rounds 3] [--seed 0]
                                        [--level best|avx512|avx2|portable]
                                        [--convscope target/release/convscope] [--json-out FILE]
    (with the reference venv: /work/refenv/venv/bin/python tools/bench_microscope.py ...)

What is measured: one Lucid-style feature visualisation per channel (unit) 0..U−1 of
EfficientNet-Lite0's `/_blocks.6/_swish/Clip` (the ONNX node name; in tools/effnet_lite0.py the
output of block 6's expansion: `_blocks[6]._expand_conv` → `_bn0` → `_swish` (ReLU6), i.e. the
first activation of the block, 480 channels, 8×8 at 128 px), all U images optimised together
as ONE batch. The same loop as tools/bench_dream.py (whose helpers it imports), except that the
objective is a channel mean instead of a logit and the model runs at the image size itself (no
resample to 224: EfficientNet is fully convolutional and its static "SAME" pads are the same for
every even size here). --level caps both sides as in bench_dream (tools/simd_level.py, applied
before torch is imported).

Per round, in this order so that both see the same machine state:
  PyTorch    torch.set_num_threads(--threads); 3 warm-up steps on a throwaway batch (seed + 1, not
             counted), then --steps steps from a fresh batch (seed), timed with time.perf_counter
             around the whole loop. Afterwards (untimed) the sanity figure: for each unit b, the
             spatial mean of channel b on its own final, untransformed image (rgb → normalise →
             truncated model, no rounding to 8 bits); it should be large (≫ 0; ReLU6 caps it at 6).
  convscope  `convscope microscope --model efficientnet-lite0 --layer /_blocks.6/_swish/Clip
             --channels 0..U --steps N --size S --seed 0 --out TMPDIR --json --no-patches` with
             RAYON_NUM_THREADS=--threads (and `--threads T` when its help lists that flag), timed
             with time.perf_counter around the subprocess (process start, model loading, the loop,
             writing the images). The last stdout line is parsed as JSON; its `visualise_seconds`
             (convscope's own timer of the optimisation loop) is reported beside the wall time.
             When `convscope microscope --help` fails (no such subcommand yet) or the binary is
             missing, only the PyTorch side runs.
The table reports medians over --rounds; the ratios are convscope wall time / PyTorch loop time
and convscope visualise_seconds / PyTorch loop time (< 1: convscope is faster).

One step (B = U images, S = --size, wf = S/2 + 1), in PyTorch:
  1. image: parameters p (B, 2, 3, S, wf), real then imaginary parts, initialised N(0, 0.01²)
     from a torch.Generator seeded with the seed (Lucid's fft_image); per item, spectrum =
     (p_re + i p_im) · sqrt(S·S) / max(|f|, 1/S) / 4, planes = irfft2(spectrum, s=(S, S))
     (batched over B), rgb = sigmoid(M · planes) per pixel with M Lucid's
     colour_correlation_svd_sqrt divided by its largest column norm → (B, 3, S, S).
  2. view, one random draw PER ITEM (bench_dream.random_theta, Python's `random` seeded with the
     seed): shift dy, dx uniform integers in [−8, 8], zoom uniform in [0.95, 1.05], angle uniform
     in ±10°; the S×S output samples the square of side (S + 2·12)/zoom centred on
     (S/2 + dy, S/2 + dx), rotated by the angle: F.affine_grid(theta (B, 2, 3), [B, 3, S, S]),
     F.grid_sample of rgb − 0.5 (bilinear, zeros padding, align_corners=False) + 0.5, i.e. grey
     0.5 outside the image.
  3. x = (v − ImageNet mean) / ImageNet std; A = truncated model(x) → (B, C, h, w): the stem and
     blocks 0..5 in full, then block 6's expand conv, BN and ReLU6 only (the rest of the network
     is not run); eval mode, parameters frozen (gradients to the input only).
  4. loss = −Σ_b mean_{h,w} A[b, unit_b] (unit_b = b), backward to p, one torch.optim.Adam step
     over all of p (lr 0.05, betas (0.9, 0.999), eps 1e-8). No TV, L2 or blur penalty.
Differences between the two sides, none of which changes the work per step: the random streams
differ (Python's `random` and torch.Generator here, convscope's own ChaCha8 stream), so views,
initial parameters and final images differ and the activations agree only in kind; convscope
computes the adjoints of the view and the parameterisation by hand where PyTorch keeps
intermediate tensors for autograd; convscope's wall time includes process start, loading the
bundled model and writing its outputs (hence `visualise_seconds` beside it). Batching: one Adam
over the whole (B, ...) tensor is the same update as B independent Adams (Adam is elementwise and
the items' losses do not interact; eval-mode BN has no batch coupling).
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import simd_level  # noqa: E402  (before torch: it caps PyTorch's level at import)

simd_level.apply_from_argv()
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import effnet_lite0  # noqa: E402
from bench_dream import (COLOR, INIT_SD, LR, MEAN, STD, WARMUP,  # noqa: E402
                         random_theta, spectrum_scale)


def layer_name(block: int) -> str:
    return f"/_blocks.{block}/_swish/Clip"


class Truncated(nn.Module):
    """EfficientNet-Lite0 up to `/_blocks.{k}/_swish/Clip`: stem, blocks 0..k−1 in full, then
    block k's expand conv → BN (_bn0) → ReLU6 (_swish), the block's first activation."""

    def __init__(self, model: nn.Module, block: int):
        super().__init__()
        if not 0 <= block < len(model._blocks):
            raise SystemExit(f"--layer-block must be in 0..{len(model._blocks) - 1}")
        b = model._blocks[block]
        if b._block_args.expand_ratio == 1:
            raise SystemExit(f"block {block} has no expansion, so no {layer_name(block)}")
        self.m, self.block, self.n_blocks = model, block, len(model._blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.m
        x = m._stem_act(m._bn0(m._conv_stem(x)))
        for idx in range(self.block):  # as effnet_lite0.build's extract_features
            dcr = m._global_params.drop_connect_rate
            if dcr:
                dcr *= float(idx) / self.n_blocks
            x = m._blocks[idx](x, drop_connect_rate=dcr)
        b = m._blocks[self.block]
        return b._swish(b._bn0(b._expand_conv(x)))


def to_rgb_batch(params: torch.Tensor, scale: torch.Tensor, s: int) -> torch.Tensor:
    """Parameters (B, 2, 3, s, wf) → RGB (B, 3, s, s) in (0, 1) (bench_dream.to_rgb per item)."""
    spec = torch.complex(params[:, 0] * scale, params[:, 1] * scale)  # (B, 3, s, wf)
    planes = torch.fft.irfft2(spec, s=(s, s))  # (B, 3, s, s)
    return torch.sigmoid(torch.einsum("ij,bjhw->bihw", COLOR, planes))


def view_batch(rgb: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per-item bilinear resample to an s×s view, grey (0.5) outside the image."""
    b, c, h, w = rgb.shape
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    return F.grid_sample(rgb - 0.5, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + 0.5


class Microscope:
    """Feature visualisations of channels `units` with PyTorch's autograd and one Adam."""

    def __init__(self, trunc: nn.Module, units, s: int, seed: int):
        self.trunc, self.s = trunc, s
        self.units = torch.tensor(units, dtype=torch.long)
        self.idx = torch.arange(len(units))
        self.scale = spectrum_scale(s)
        g = torch.Generator().manual_seed(seed)
        self.params = (INIT_SD * torch.randn(len(units), 2, 3, s, s // 2 + 1, generator=g)
                       ).requires_grad_(True)
        self.opt = torch.optim.Adam([self.params], lr=LR)
        self.rng = random.Random(seed)

    def step(self) -> None:
        theta = torch.cat([random_theta(self.s, self.rng) for _ in range(len(self.units))])
        v = view_batch(to_rgb_batch(self.params, self.scale, self.s), theta)
        a = self.trunc((v - MEAN) / STD)  # (B, C, h, w)
        loss = -a[self.idx, self.units].mean(dim=(1, 2)).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def activations(self):
        """Spatial mean of each unit's channel on its own final, untransformed image."""
        rgb = to_rgb_batch(self.params, self.scale, self.s)
        a = self.trunc((rgb - MEAN) / STD)
        return a[self.idx, self.units].mean(dim=(1, 2)).tolist()


def torch_round(trunc, units, steps: int, s: int, threads: int, seed: int):
    torch.set_num_threads(threads)
    warm = Microscope(trunc, units, s, seed + 1)
    for _ in range(WARMUP):
        warm.step()
    del warm
    ms = Microscope(trunc, units, s, seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        ms.step()
    seconds = time.perf_counter() - t0
    return seconds, ms.activations()


def convscope_help(exe: str):
    """`convscope microscope --help` text, or None when the subcommand does not exist."""
    try:
        out = subprocess.run([exe, "microscope", "--help"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout if out.returncode == 0 else None


def convscope_command(exe: str, help_text: str, layer: str, units: int, steps: int, s: int,
                      seed: int, threads: int, out: str):
    cmd = [exe, "microscope", "--model", "efficientnet-lite0", "--layer", layer,
           "--channels", f"0..{units}", "--steps", str(steps), "--size", str(s),
           "--seed", str(seed), "--out", out, "--json", "--no-patches"]
    if "--threads" in help_text:
        cmd += ["--threads", str(threads)]
    return cmd


def convscope_round(cmd, threads: int):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"convscope failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr.strip()}")
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    last = None
    if lines:
        try:
            last = json.loads(lines[-1])
        except json.JSONDecodeError:
            print(f"note: convscope's last stdout line is not JSON: {lines[-1][:200]}", flush=True)
    inner = last.get("visualise_seconds") if isinstance(last, dict) else None
    return seconds, inner, last


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, default=128, help="side of each image (the model input)")
    ap.add_argument("--units", type=int, default=32, help="channels 0..units-1, one image each")
    ap.add_argument("--layer-block", type=int, default=6,
                    help="k in /_blocks.k/_swish/Clip (the block's expansion activation)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--level", default="best", choices=simd_level.LEVELS,
                    help="instruction-set level of PyTorch and convscope (tools/simd_level.py)")
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    ap.add_argument("--json-out")
    a = ap.parse_args()
    if min(a.steps, a.size, a.units, a.threads, a.rounds) < 1:
        sys.exit("--steps, --size, --units, --threads and --rounds must be at least 1")
    layer = layer_name(a.layer_block)
    units = list(range(a.units))

    print(simd_level.describe(), flush=True)
    model = effnet_lite0.build(pretrained=True)
    for p in model.parameters():
        p.requires_grad_(False)
    trunc = Truncated(model, a.layer_block).eval()
    with torch.no_grad():
        shape = tuple(trunc(torch.zeros(1, 3, a.size, a.size)).shape)
    print(f"layer {layer}: output {shape[1:]} per image at {a.size}x{a.size}", flush=True)
    if a.units > shape[1]:
        sys.exit(f"--units {a.units} exceeds the layer's {shape[1]} channels")

    exe = a.convscope if os.path.isabs(a.convscope) else os.path.join(os.getcwd(), a.convscope)
    help_text = None
    if os.path.isfile(exe) and os.access(exe, os.X_OK):
        help_text = convscope_help(exe)
        if help_text is None:
            print(f"note: `{a.convscope} microscope --help` failed (no `microscope` subcommand in "
                  "this build?): PyTorch side only", flush=True)
    else:
        print(f"note: {a.convscope} does not exist: PyTorch side only "
              "(build convscope with `cargo build --release` for the comparison)", flush=True)
    have_cs = help_text is not None
    tmpdir = tempfile.mkdtemp(prefix="bench_microscope_")
    cmd0 = None
    if have_cs:
        cmd0 = convscope_command(exe, help_text, layer, a.units, a.steps, a.size, a.seed,
                                 a.threads, "TMPDIR")
        try:
            print(f"convscope reports level {simd_level.convscope_level(exe)}", flush=True)
        except (subprocess.CalledProcessError, OSError, ValueError) as e:
            print(f"convscope level unknown ({e})", flush=True)
        print(f"convscope: RAYON_NUM_THREADS={a.threads} {' '.join(cmd0)}", flush=True)

    rows = []
    try:
        for r in range(a.rounds):
            t_s, acts = torch_round(trunc, units, a.steps, a.size, a.threads, a.seed)
            row = {"torch_s": t_s, "torch_step_ms": t_s / a.steps * 1e3,
                   "torch_act_min": min(acts), "torch_act_median": statistics.median(acts),
                   "torch_act_max": max(acts), "cs_s": None, "cs_visualise_s": None}
            cs_json = None
            if have_cs:
                out_dir = tempfile.mkdtemp(prefix=f"round{r + 1}_", dir=tmpdir)
                cmd = convscope_command(exe, help_text, layer, a.units, a.steps, a.size, a.seed,
                                        a.threads, out_dir)
                row["cs_s"], row["cs_visualise_s"], cs_json = convscope_round(cmd, a.threads)
            print(f"round {r + 1}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in row.items() if v is not None), flush=True)
            rows.append(dict(row, torch_activations=acts, cs_json=cs_json))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    def med(k):
        vals = [row[k] for row in rows if row[k] is not None]
        return statistics.median(vals) if vals else None

    keys = ["torch_s", "torch_step_ms", "torch_act_min", "torch_act_median", "torch_act_max",
            "cs_s", "cs_visualise_s"]
    m = {k: med(k) for k in keys}
    ratio = None if m["cs_s"] is None else m["cs_s"] / m["torch_s"]
    ratio_inner = None if m["cs_visualise_s"] is None else m["cs_visualise_s"] / m["torch_s"]
    f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    print(f"\nEfficientNet-Lite0 microscope of {layer} channels 0..{a.units - 1} in one batch, "
          f"{a.steps} steps, {a.size}x{a.size}, {a.threads} threads, median of {a.rounds} "
          f"round(s) (torch {torch.__version__})")
    print("| level | PyTorch s | PyTorch ms/step | convscope s | convscope visualise s "
          "| convscope / PyTorch | visualise / PyTorch | PyTorch act min / median / max |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {a.level} | {m['torch_s']:.2f} | {m['torch_step_ms']:.1f} | {f(m['cs_s'], '.2f')} "
          f"| {f(m['cs_visualise_s'], '.2f')} | {f(ratio, '.2f')} | {f(ratio_inner, '.2f')} "
          f"| {m['torch_act_min']:.2f} / {m['torch_act_median']:.2f} / {m['torch_act_max']:.2f} |")
    if a.json_out:
        with open(a.json_out, "w") as fh:
            json.dump({"level": a.level, "describe": simd_level.describe(), "layer": layer,
                       "layer_shape": list(shape[1:]), "units": units, "steps": a.steps,
                       "size": a.size, "threads": a.threads, "seed": a.seed,
                       "convscope_command": cmd0,
                       "median_of_rounds": dict(m, ratio=ratio, ratio_visualise=ratio_inner),
                       "rounds": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
