#!/usr/bin/env bash
# The window's training speed beside the command line's, on the same machine and data, and the
# CPU a settled window uses (issue 13: >= 80 % of `convscope train`'s images/s, idle ~ 0).
#   bash tools/bench_window_training.sh [level]      (level: best, avx2, portable; default best)
# 1. `convscope train --data synthetic-smiles` with the window's default run (3,000 / 500 / 500
#    built-in faces, smile CNN, Adam 1e-3, batch 32, 3 epochs, 2 threads): images/s per epoch.
# 2. The release window under Xvfb (software rendering) with CONVSCOPE_AUTOSTART=training on the
#    training panel, curves and filters updating live; CONVSCOPE_TRAIN_LOG gets one JSON line per
#    epoch (`images_per_s` over that epoch). Stopped after its third epoch.
# 3. The window started idle on the explain panel: CPU over 20 s once the first explanation is
#    on screen (15 s after launch).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LEVEL=${1:-best}
if [ "$LEVEL" != best ]; then export CONVSCOPE_SIMD=$LEVEL; fi
BIN=$PWD/target/release/convscope
[ -x "$BIN" ] || { echo "build it first: cargo build --release"; exit 1; }
grep -m1 "model name" /proc/cpuinfo
echo "level: $("$BIN" bench --model smile-cnn --runs 1 --json | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["simd"])')"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$BIN" train --data synthetic-smiles --train-size 3000 --val-size 500 --test-size 500 \
  --epochs 3 --batch 32 --threads 2 --out "$tmp/cli" --json > "$tmp/cli.jsonl"
python3 - "$tmp/cli.jsonl" <<'PY'
import json, sys
eps = [json.loads(l) for l in open(sys.argv[1]) if '"epoch"' in l]
print("command line: " + ", ".join(f"epoch {e['epoch']} {3000 / e['seconds']:.0f} images/s" for e in eps))
PY

home=$(mktemp -d)
log="$tmp/window.jsonl"
env HOME="$home" XDG_DATA_HOME="$home" WINIT_X11_SCALE_FACTOR=1 CONVSCOPE_PANEL=training \
  CONVSCOPE_AUTOSTART=training CONVSCOPE_TRAIN_LOG="$log" \
  xvfb-run -a -s "-screen 0 1600x1000x24" bash -c "
    $BIN & pid=\$!
    for _ in \$(seq 600); do
      [ -f $log ] && [ \$(wc -l < $log) -ge 3 ] && break
      sleep 0.5
    done
    kill \$pid; wait \$pid 2>/dev/null || true" || true
python3 - "$log" <<'PY'
import json, sys
eps = [json.loads(l) for l in open(sys.argv[1])]
print("window:       " + ", ".join(f"epoch {e['epoch']} {e['images_per_s']:.0f} images/s" for e in eps))
PY
rm -rf "$home"

bash tools/idle_cpu.sh "$BIN"
