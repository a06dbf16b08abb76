#!/usr/bin/env bash
# The CPU a settled window uses: starts BIN (default target/release/convscope) under Xvfb on its
# built-in defaults (the explain panel), waits 15 s for the start-up work (the first explanation)
# and reports the CPU it uses over the next 20 s. Used by bench_frames.sh and
# bench_window_training.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${1:-$PWD/target/release/convscope}
home=$(mktemp -d)
env HOME="$home" XDG_DATA_HOME="$home" WINIT_X11_SCALE_FACTOR=1 \
  xvfb-run -a -s "-screen 0 1600x1000x24" bash -c "
    $BIN & pid=\$!
    sleep 15
    t0=\$(awk '{print \$14+\$15}' /proc/\$pid/stat)
    sleep 20
    t1=\$(awk '{print \$14+\$15}' /proc/\$pid/stat)
    echo \"idle window CPU over 20 s: \$(( (t1 - t0) * 1000 / \$(getconf CLK_TCK) )) ms (\$(( (t1 - t0) * 100 / (20 * \$(getconf CLK_TCK)) )) % of one core)\"
    kill \$pid; wait \$pid 2>/dev/null || true" || true
rm -rf "$home"
