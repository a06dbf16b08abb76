#!/usr/bin/env bash
# Frame times of the window while a worker computes in the background, and idle CPU.
#   bash tools/bench_frames.sh [seconds] [training|units]
# Runs the release binary under Xvfb with CONVSCOPE_AUTOSTART=training (the training panel,
# curves and filters updating live) or, with `units`, CONVSCOPE_AUTOSTART=units (the Layers
# panel's units view of /_blocks.6: a page of 64 feature visualisations and the patch search,
# cells filling in as batches finish), and CONVSCOPE_FRAME_LOG (eframe's per-frame CPU time: UI code
# plus painting, without waiting for the display), then prints the median and 99th percentile.
# Then it starts the app idle on the explain panel and reports the CPU it uses over 20 s after
# the start-up work is done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${1:-60}
case ${2:-training} in
  training) WORK=(CONVSCOPE_PANEL=training CONVSCOPE_AUTOSTART=training) ;;
  units) WORK=(CONVSCOPE_PANEL=layers CONVSCOPE_LAYER=/_blocks.6/_swish/Clip_output_0
    CONVSCOPE_UNITS=1 CONVSCOPE_AUTOSTART=units) ;;
  *) echo "usage: bash tools/bench_frames.sh [seconds] [training|units]" >&2; exit 2 ;;
esac
# BIN=path/to/convscope measures a binary built elsewhere (no build)
if [ -z "${BIN:-}" ]; then
  cargo build --release
  BIN=$PWD/target/release/convscope
fi
LOG=$(mktemp)
home=$(mktemp -d)
env HOME="$home" XDG_DATA_HOME="$home" WINIT_X11_SCALE_FACTOR=1 "${WORK[@]}" \
  CONVSCOPE_FRAME_LOG="$LOG" \
  xvfb-run -a -s "-screen 0 1600x1000x24" bash -c "$BIN & pid=\$!; sleep $SECS; kill \$pid; wait \$pid 2>/dev/null || true" || true
python3 - "$LOG" <<'PY'
import statistics, sys
v = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
if not v:
    sys.exit("no frames were logged")
p99 = v[min(len(v) - 1, round(0.99 * (len(v) - 1)))]
print(f"frames {len(v)}  median {statistics.median(v):.2f} ms  p99 {p99:.2f} ms  max {v[-1]:.2f} ms")
PY
rm -rf "$home"
bash tools/idle_cpu.sh "$BIN"
