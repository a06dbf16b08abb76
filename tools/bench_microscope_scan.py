#!/usr/bin/env python3
"""The microscope's folder scan: its throughput beside `convscope bench`'s forward pass at the
same batch size, and its peak memory as the folder grows.

usage: python3 tools/bench_microscope_scan.py [--convscope target/release/convscope]
                                              [--images DIR] [--counts 250,1000,4000]
                                              [--batch 16] [--level avx2] [--json-out FILE]

--images defaults to ../shared/data/smiles (SMILEsmileD, 13,165 face crops, 64x64 JPEG). For each
count N a folder of symlinks to the first N images (sorted) is made, and
`convscope microscope --model efficientnet-lite0 --layer L --channels all --no-vis --data DIR
--scan-batch B --json` runs under /usr/bin/time -v (peak resident memory). Its summary line's
`scan_seconds` (the scan alone: listing, decoding, the preset's resize to 224, the forward pass of
the graph's prefix up to L, the per-channel top-9 and histograms) gives images/s. Beside it,
`convscope bench --model efficientnet-lite0 --batch B --runs 10 --json` gives the whole
network's forward pass at batch B on random inputs (no decoding): images/s = B / forward_ms.
Two layers: a mid layer (block 6's expansion, where the microscope's quality figure is
measured) and the last one before pooling (`/_head_act/Clip`, the whole convolutional trunk,
the fair comparison with the whole forward pass). Both sides at one level (CONVSCOPE_SIMD,
--level), RAYON_NUM_THREADS=2.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import platform

LAYERS = ["/_blocks.6/_swish/Clip", "/_head_act/Clip"]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    p = argparse.ArgumentParser()
    p.add_argument("--convscope", default=os.path.join(root, "target/release/convscope"))
    p.add_argument("--images", default=os.path.join(root, "../shared/data/smiles"))
    p.add_argument("--counts", default="250,1000,4000")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--level", default="avx2")
    p.add_argument("--json-out")
    a = p.parse_args()
    files = []
    for d, _, names in os.walk(a.images):
        files += [os.path.join(d, n) for n in names if n.lower().endswith((".jpg", ".jpeg", ".png"))]
    files.sort()
    if not files:
        sys.exit(f"no images under {a.images}")
    env = dict(os.environ, RAYON_NUM_THREADS="2", CONVSCOPE_SIMD=a.level)
    bench = subprocess.run([a.convscope, "bench", "--model", "efficientnet-lite0", "--batch",
                            str(a.batch), "--runs", "10", "--json"], capture_output=True,
                           text=True, env=env, check=True)
    b = json.loads(bench.stdout.strip().splitlines()[-1])
    forward_ips = a.batch / (b["forward_ms"] / 1000.0)
    print(f"{platform.processor() or platform.machine()}; level {a.level}; bench forward at batch "
          f"{a.batch}: {b['forward_ms']:.1f} ms = {forward_ips:.1f} images/s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(c) for c in a.counts.split(",")]:
            folder = os.path.join(tmp, f"n{n}")
            os.makedirs(folder)
            for i, f in enumerate(files[:n]):
                os.symlink(f, os.path.join(folder, f"{i:06d}{os.path.splitext(f)[1]}"))
            for layer in LAYERS:
                out = os.path.join(tmp, "out")
                r = subprocess.run(["/usr/bin/time", "-v", a.convscope, "microscope", "--model",
                                    "efficientnet-lite0", "--layer", layer, "--channels", "all",
                                    "--no-vis", "--data", folder, "--scan-batch", str(a.batch),
                                    "--out", out, "--json"], capture_output=True, text=True, env=env)
                if r.returncode != 0:
                    sys.exit(r.stderr)
                s = json.loads(r.stdout.strip().splitlines()[-1])
                rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
                ips = s["images"] / s["scan_seconds"]
                row = {"images": s["images"], "layer": layer, "channels": s["channels"],
                       "scan_seconds": s["scan_seconds"], "images_per_s": ips,
                       "share_of_forward": ips / forward_ips, "peak_rss_mb": rss / 1024}
                rows.append(row)
                print(f"{n:>6} images  {layer:<24} {s['channels']:>5} units  "
                      f"{s['scan_seconds']:7.1f} s  {ips:6.1f} images/s  "
                      f"{100 * ips / forward_ips:5.1f} % of forward  peak {rss / 1024:6.0f} MB")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"bench": b, "forward_images_per_s": forward_ips, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
