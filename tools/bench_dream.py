#!/usr/bin/env python3
"""Activation maximisation ("dream") speed: convscope beside PyTorch, in one run, at one
instruction-set level.

usage: python tools/bench_dream.py [--steps 256] [--size 224] [--threads 2] [--rounds 2]
                                   [--level best|avx512|avx2|portable]
                                   [--convscope target/release/convscope] [--json-out FILE]
    (with the reference venv: /work/refenv/venv/bin/python tools/bench_dream.py ...)

The issue's check: `convscope dream` (leopard, 256 steps, 224) within PyTorch's time for the
same Lucid-style loop, at both levels (best and AVX2). Run once per level (`--level best`, then
`--level avx2`): tools/simd_level.py caps PyTorch (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, set
before torch is imported) and convscope (CONVSCOPE_SIMD, inherited by the subprocess) alike.

Per round, in this order so that both see the same machine state:
  PyTorch    the loop below with torch.set_num_threads(--threads): 3 warm-up steps on a throwaway
             image (not counted), then --steps steps from a fresh image, timed with
             time.perf_counter around the whole loop; then p(leopard) of the final image
             (softmax of the model on the untransformed image rounded to 8 bits, no timing)
  convscope  `convscope dream --model efficientnet-lite0 --target leopard --steps N --size S
             --seed 0 --out TMP.png --json --every N` with RAYON_NUM_THREADS=--threads (and
             `--threads T` when the CLI has that flag), timed with time.perf_counter around the
             subprocess: process start, loading the bundled model, the N steps, one evaluation,
             writing and scoring the PNG. Its final JSON line gives p(leopard) of the saved PNG
             and `seconds` (its own timer: the steps and the evaluation only), reported beside.
             `--every N` means no intermediate evaluations (the CLI's default, every 10 steps,
             adds a forward pass each; `--every 10` here restores it).
The table reports medians over --rounds; the ratio is convscope wall time / PyTorch loop time
(< 1: convscope is faster). Without the binary (--convscope PATH, default
target/release/convscope) only the PyTorch side runs.

One step, the same maths in both (src/explain/dream.rs with DreamConfig::default(), which the
CLI uses except for size, seed and target):
  1. image: parameters p (2, 3, S, S/2+1), real then imaginary parts, initialised N(0, 0.01²)
     (Lucid's fft_image); spectrum = (p_re + i p_im) · sqrt(S·S) / max(|f|, 1/S) / 4, planes =
     irfft2(spectrum, s=(S, S)) (convscope: the same transform as dense cosine/sine products,
     src/explain/dream/fourier.rs; torch.fft.irfft2's gradient is the exact adjoint, checked in
     float64); rgb = sigmoid(M · planes) per pixel with M Lucid's colour_correlation_svd_sqrt
     divided by its largest column norm.
  2. view (src/explain/dream/warp.rs): shift dy, dx uniform integers in [−8, 8], zoom uniform in
     [0.95, 1.05], angle uniform in ±10°; the model's 224×224 input samples the square of side
     (S + 2·12)/zoom centred on (S/2 + dy, S/2 + dx), rotated by the angle, bilinearly, with grey
     0.5 outside the image (the pad). convscope builds the sample grid itself; here the same
     affine map goes through F.affine_grid / F.grid_sample (align_corners=False, zeros padding
     of rgb − 0.5, plus 0.5 — equal to convscope's fill), so pad, jitter, zoom, rotation and the
     resize to 224 are one resampling on both sides.
  3. input: (rgb − ImageNet mean) / ImageNet std (convscope's efficientnet-lite0 preset, applied
     by src/explain/dream/input.rs); the model: tools/effnet_lite0.py, the PyTorch source of the
     bundled ONNX file, eval mode, parameters frozen (gradients to the input only, as convscope's
     BackwardRequest with param_grads false).
  4. loss = −logit[288] (leopard; convscope maximises J = logit with the descent direction −dJ/dp),
     backward to p, one torch.optim.Adam step (lr 0.05, betas (0.9, 0.999), eps 1e-8: the
     engine's Adam is PyTorch's update). No TV, L2 or blur penalty (all weights 0 by default).
Differences, none of which changes the work per step: the random draws come from Python's
`random` (convscope: one ChaCha8 stream), so the views and the final images differ, and the
probabilities agree only in kind; convscope snaps sample coordinates within 1e-4 of a pixel
centre (no effect on time); PyTorch's loop keeps its intermediate tensors for autograd while
convscope computes the adjoints of the view and the parameterisation by hand.
"""
import argparse
import json
import math
import os
import random
import statistics
import shutil
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
import torch.nn.functional as F  # noqa: E402

import effnet_lite0  # noqa: E402

LEOPARD = 288
MODEL_SIZE = 224  # EfficientNet-Lite0's input side

# DreamConfig::default() (src/explain/dream.rs)
LR = 0.05
PAD = 12
JITTER = 8
SCALE = (0.95, 1.05)
ROTATION_DEGREES = 10.0
INIT_SD = 0.01
WARMUP = 3

# lucid.optvis.param.color.color_correlation_svd_sqrt, normalised by its largest column norm
_CORR = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]],
                     dtype=torch.float64)
COLOR = (_CORR / _CORR.norm(dim=0).max()).float()
MEAN = torch.tensor(effnet_lite0.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(effnet_lite0.IMAGENET_STD).view(1, 3, 1, 1)


def spectrum_scale(s: int) -> torch.Tensor:
    """(s, s/2+1): sqrt(s·s) / max(|f|, 1/s) / 4 (fourier.rs `FourierBasis::scale`)."""
    fy = torch.fft.fftfreq(s, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(s, dtype=torch.float64)[None, :]
    f = torch.sqrt(fx * fx + fy * fy)
    return (math.sqrt(s * s) / torch.clamp(f, min=1.0 / s) / 4.0).float()


def to_rgb(params: torch.Tensor, scale: torch.Tensor, s: int) -> torch.Tensor:
    """Parameters (2, 3, s, wf) → RGB (1, 3, s, s) in (0, 1)."""
    spec = torch.complex(params[0] * scale, params[1] * scale)  # (3, s, wf)
    planes = torch.fft.irfft2(spec, s=(s, s))  # (3, s, s)
    return torch.sigmoid(torch.einsum("ij,jhw->ihw", COLOR, planes)).unsqueeze(0)


def random_theta(s: int, rng: random.Random) -> torch.Tensor:
    """warp.rs `View::random` as an affine_grid matrix (align_corners=False): normalised output
    (x, y) → normalised source (x, y) for an s×s source."""
    dy, dx = rng.randint(-JITTER, JITTER), rng.randint(-JITTER, JITTER)
    zoom = rng.uniform(*SCALE)
    angle = math.radians(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    span = (s + 2 * PAD) / zoom
    cy, cx = s / 2 + dy, s / 2 + dx
    sin, cos = math.sin(angle), math.cos(angle)
    k = span / s
    # warp.rs: sy = cy + cos·v − sin·u, sx = cx + sin·v + cos·u (pixel k covers [k, k+1)),
    # u, v = output x, y (normalised) · span / 2
    return torch.tensor([[[cos * k, sin * k, 2 * cx / s - 1],
                          [-sin * k, cos * k, 2 * cy / s - 1]]], dtype=torch.float32)


def view(rgb: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resample to the model's input, grey (0.5) outside the image."""
    grid = F.affine_grid(theta, [1, 3, MODEL_SIZE, MODEL_SIZE], align_corners=False)
    return F.grid_sample(rgb - 0.5, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) + 0.5


class Dream:
    """One Lucid-style dream of one class with PyTorch's autograd and Adam."""

    def __init__(self, model, s: int, seed: int):
        self.model, self.s = model, s
        self.scale = spectrum_scale(s)
        g = torch.Generator().manual_seed(seed)
        self.params = (INIT_SD * torch.randn(2, 3, s, s // 2 + 1, generator=g)).requires_grad_(True)
        self.opt = torch.optim.Adam([self.params], lr=LR)
        self.rng = random.Random(seed)

    def step(self) -> None:
        theta = random_theta(self.s, self.rng)
        x = (view(to_rgb(self.params, self.scale, self.s), theta) - MEAN) / STD
        loss = -self.model(x)[0, LEOPARD]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def probability(self) -> float:
        """p(leopard) of the untransformed image rounded to 8 bits (what convscope's last report
        scores: the saved PNG through the model's preprocessing)."""
        rgb = to_rgb(self.params, self.scale, self.s)
        if self.s != MODEL_SIZE:  # the whole view: a plain bilinear resample (no antialiasing)
            rgb = F.interpolate(rgb, size=(MODEL_SIZE, MODEL_SIZE), mode="bilinear",
                                align_corners=False)
        rgb = torch.round(rgb * 255.0) / 255.0
        return torch.softmax(self.model((rgb - MEAN) / STD), dim=1)[0, LEOPARD].item()


def torch_round(model, steps: int, s: int, threads: int, seed: int = 0):
    torch.set_num_threads(threads)
    warm = Dream(model, s, seed + 1)
    for _ in range(WARMUP):
        warm.step()
    d = Dream(model, s, seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        d.step()
    seconds = time.perf_counter() - t0
    return seconds, d.probability()


def convscope_command(exe: str, steps: int, s: int, threads: int, out: str):
    cmd = [exe, "dream", "--model", "efficientnet-lite0", "--target", "leopard",
           "--steps", str(steps), "--size", str(s), "--seed", "0", "--out", out, "--json",
           "--every", str(steps)]
    help_text = subprocess.run([exe, "dream", "--help"], capture_output=True, text=True).stdout
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
    last = None
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                pass
    prob = inner = None
    if last:
        inner = last.get("seconds")
        for t in last.get("targets", []):
            if t.get("index") == LEOPARD:
                prob = t.get("prob")
    return seconds, inner, prob


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, default=224, help="side of the dream image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--level", default="best", choices=simd_level.LEVELS,
                    help="instruction-set level of PyTorch and convscope (tools/simd_level.py)")
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    ap.add_argument("--json-out")
    a = ap.parse_args()
    if a.steps < 1 or a.size < 1 or a.threads < 1 or a.rounds < 1:
        sys.exit("--steps, --size, --threads and --rounds must be at least 1")

    print(simd_level.describe(), flush=True)
    exe = a.convscope if os.path.isabs(a.convscope) else os.path.join(os.getcwd(), a.convscope)
    have_cs = os.path.isfile(exe) and os.access(exe, os.X_OK)
    tmpdir = tempfile.mkdtemp(prefix="bench_dream_")
    cmd = None
    if have_cs:
        cmd = convscope_command(exe, a.steps, a.size, a.threads, os.path.join(tmpdir, "dream.png"))
        try:
            print(f"convscope reports level {simd_level.convscope_level(exe)}", flush=True)
        except (subprocess.CalledProcessError, OSError, ValueError) as e:
            print(f"convscope level unknown ({e})", flush=True)
        print(f"convscope: RAYON_NUM_THREADS={a.threads} {' '.join(cmd)}", flush=True)
    else:
        print(f"{a.convscope} does not exist: PyTorch side only "
              "(build convscope with `cargo build --release` for the comparison)", flush=True)

    model = effnet_lite0.build(pretrained=True)
    for p in model.parameters():
        p.requires_grad_(False)

    rows = []
    try:
        for r in range(a.rounds):
            t_s, t_p = torch_round(model, a.steps, a.size, a.threads)
            row = {"torch_s": t_s, "torch_step_ms": t_s / a.steps * 1e3, "torch_p": t_p,
                   "cs_s": None, "cs_inner_s": None, "cs_p": None}
            if have_cs:
                row["cs_s"], row["cs_inner_s"], row["cs_p"] = convscope_round(cmd, a.threads)
            rows.append(row)
            print(f"round {r + 1}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in row.items() if v is not None), flush=True)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    def med(k):
        vals = [row[k] for row in rows if row[k] is not None]
        return statistics.median(vals) if vals else None

    m = {k: med(k) for k in rows[0]}
    f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    ratio = None if m["cs_s"] is None else m["cs_s"] / m["torch_s"]
    print(f"\nEfficientNet-Lite0 dream of leopard ({LEOPARD}), {a.steps} steps, {a.size}x{a.size}, "
          f"{a.threads} threads, median of {a.rounds} round(s) (torch {torch.__version__})")
    print("| level | PyTorch s | convscope s | convscope loop s | convscope / PyTorch "
          "| p(leopard) PyTorch | p(leopard) convscope |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {a.level} | {m['torch_s']:.2f} | {f(m['cs_s'], '.2f')} | {f(m['cs_inner_s'], '.2f')} "
          f"| {f(ratio, '.2f')} | {m['torch_p']:.3f} | {f(m['cs_p'], '.3f')} |")
    if a.json_out:
        with open(a.json_out, "w") as fh:
            json.dump({"level": a.level, "describe": simd_level.describe(), "steps": a.steps,
                       "size": a.size, "threads": a.threads, "convscope_command": cmd,
                       "median_of_rounds": dict(m, ratio=ratio), "rounds": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
