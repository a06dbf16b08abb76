#!/usr/bin/env python3
"""SMILEsmileD training, PyTorch and convscope side by side in one run (issue #5's must-show).

usage: python tools/bench_train_smiles.py [--epochs 20] [--threads 2]
           [--data ../shared/data/smiles] [--convscope target/release/convscope]

Both sides train the seed book's smile CNN (BN momentum 0.1) on the same data: every JPEG under
SMILEs/positives (label 1) and SMILEs/negatives (label 0), grayscale replicated to 3 channels,
x/255, a stratified 80/20 split with seed 0, Adam 1e-3, batch 32, shuffled each epoch, for
--epochs epochs, then the test accuracy in evaluation mode.

- PyTorch: the images are decoded once into one tensor (timed apart, "decode"); an epoch is the
  training loop over shuffled batches (train mode, BCE-with-logits, backward, Adam step).
- convscope: `convscope train --data DIR --epochs E --batch 32 --lr 1e-3 --seed 0
  --val-fraction 0 --patience 0 --threads T --json`; an epoch is its "seconds" (the first one
  includes decoding, done by its loader thread while training runs; later epochs read the
  decoded-sample cache).

Training images/s = training images / epoch seconds. The script prints per-epoch seconds, the
median over epochs 2..E (epoch 1 carries decoding on the convscope side and warm-up on both),
the ratio, and both test accuracies.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simd_level  # noqa: E402  (before torch: it caps PyTorch's level at import)

simd_level.apply_from_argv()
import torch
import torch.nn as nn
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from make_engine_fixtures import SmileCNN  # noqa: E402


def list_images(data):
    """(path, label) of every .jpg: label 1 under a 'positives' folder, 0 under 'negatives'."""
    items = []
    for dirpath, _, files in os.walk(data):
        parts = dirpath.split(os.sep)
        label = 1 if "positives" in parts else 0 if "negatives" in parts else None
        if label is None:
            continue
        items += [(os.path.join(dirpath, f), label) for f in sorted(files) if f.lower().endswith(".jpg")]
    return sorted(items)


def stratified_split(labels, test_fraction, seed):
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in sorted(set(labels)):
        idx = np.array([i for i, l in enumerate(labels) if l == c])
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test += idx[:n_test].tolist()
        train += idx[n_test:].tolist()
    return sorted(train), sorted(test)


def decode(paths):
    x = np.empty((len(paths), 3, 64, 64), dtype=np.float32)
    for i, p in enumerate(paths):
        g = np.asarray(Image.open(p).convert("L").resize((64, 64), Image.BILINEAR), dtype=np.float32)
        x[i] = g / 255.0
    return torch.from_numpy(x)


def torch_side(data, epochs, threads, batch):
    torch.set_num_threads(threads)
    items = list_images(data)
    labels = [l for _, l in items]
    train_idx, test_idx = stratified_split(labels, 0.2, 0)
    t0 = time.perf_counter()
    x = decode([p for p, _ in items])
    decode_s = time.perf_counter() - t0
    y = torch.tensor(labels, dtype=torch.float32).reshape(-1, 1)
    xtr, ytr = x[train_idx], y[train_idx]
    xte, yte = x[test_idx], y[test_idx]
    torch.manual_seed(0)
    m = SmileCNN(bn_momentum=0.1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    lossf = nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(0)
    epoch_s = []
    for _ in range(epochs):
        m.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(xtr), generator=g)
        for s in range(0, len(order), batch):
            b = order[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(m(xtr[b]), ytr[b])
            loss.backward()
            opt.step()
        epoch_s.append(time.perf_counter() - t0)
        print(f"  PyTorch epoch {len(epoch_s)}: {epoch_s[-1]:.2f} s", flush=True)
    m.eval()
    with torch.inference_mode():
        pred = torch.cat([m(xte[s:s + 256]) for s in range(0, len(xte), 256)]) > 0
    acc = (pred.float() == yte).float().mean().item()
    return {"train": len(train_idx), "test": len(test_idx), "decode_s": decode_s,
            "epoch_s": epoch_s, "test_acc": acc}


def convscope_side(binary, data, epochs, threads, batch):
    out = tempfile.mkdtemp(prefix="bench_train_smiles_")
    cmd = [binary, "train", "--data", data, "--epochs", str(epochs), "--batch", str(batch),
           "--lr", "1e-3", "--seed", "0", "--val-fraction", "0", "--patience", "0",
           "--threads", str(threads), "--out", out, "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    epoch_s, final = [], {}
    for line in proc.stdout.splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "epoch" in ev and "seconds" in ev:
            epoch_s.append(ev["seconds"])
            print(f"  convscope epoch {ev['epoch']}: {ev['seconds']:.2f} s", flush=True)
        if "test_acc" in ev:
            final = ev
    return {"cmd": " ".join(cmd), "epoch_s": epoch_s, "test_acc": final.get("test_acc"),
            "wall_s": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "smiles"))
    ap.add_argument("--convscope", default=os.path.join(ROOT, "target", "release", "convscope"))
    ap.add_argument("--level", default="best", choices=simd_level.LEVELS,
                    help="instruction-set level of both sides (tools/simd_level.py)")
    args = ap.parse_args()
    if not os.path.isdir(args.data):
        sys.exit(f"SMILEsmileD not found at {args.data} (../shared/data/smiles)")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.epochs} epochs", flush=True)
    pt = torch_side(args.data, args.epochs, args.threads, args.batch)
    cs = convscope_side(args.convscope, args.data, args.epochs, args.threads, args.batch)
    n = pt["train"]
    later = lambda s: s[1:] if len(s) > 1 else s  # noqa: E731
    pt_med, cs_med = statistics.median(later(pt["epoch_s"])), statistics.median(later(cs["epoch_s"]))
    print(f"convscope: {cs['cmd']}")
    print(f"split: {pt['train']} train / {pt['test']} test; PyTorch decode {pt['decode_s']:.1f} s (not in its epochs)")
    print("| measure | PyTorch | convscope | convscope speed-up |")
    print("|---|---|---|---|")
    print(f"| epoch 1 (s) | {pt['epoch_s'][0]:.2f} | {cs['epoch_s'][0]:.2f} | {pt['epoch_s'][0] / cs['epoch_s'][0]:.2f}x |")
    print(f"| epochs 2..{args.epochs}, median (s) | {pt_med:.2f} | {cs_med:.2f} | {pt_med / cs_med:.2f}x |")
    print(f"| training images/s (median epoch) | {n / pt_med:.0f} | {n / cs_med:.0f} | {pt_med / cs_med:.2f}x |")
    print(f"| total training time, all epochs (s) | {sum(pt['epoch_s']):.1f} | {sum(cs['epoch_s']):.1f} | {sum(pt['epoch_s']) / sum(cs['epoch_s']):.2f}x |")
    print(f"| test accuracy after epoch {args.epochs} | {pt['test_acc']:.3f} | {cs['test_acc']:.3f} | |")
    print(f"convscope whole command (decode, {args.epochs} epochs, test, checkpoints): {cs['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
