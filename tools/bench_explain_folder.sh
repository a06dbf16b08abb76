#!/usr/bin/env bash
# `convscope explain` over a folder: wall time with 1 and 2 threads (median of RUNS runs each),
# and peak RSS for a folder of 20 and of N images (memory must not grow with the folder).
#
# usage: tools/bench_explain_folder.sh [MODEL] [N] [RUNS]
#   MODEL  an .onnx file or bundled name (default /work/model-zoo/resnet50.onnx, made by
#          tools/make_zoo_fixtures.py / ../shared/tools/reference/export_models.py)
#   N      images in the folder (default 100): copies of the sample photos in ../shared
#   RUNS   timed runs per thread count (default 3)
# env: METHOD (default gradcam), SPLIT (images | ops; how two threads are used, default images),
#      EXTRA (more explain arguments).
# Needs a release build: cargo build --release. Prints one line per run and a summary.
set -euo pipefail

cd "$(dirname "$0")/.."
MODEL=${1:-/work/model-zoo/resnet50.onnx}
N=${2:-100}
RUNS=${3:-3}
METHOD=${METHOD:-gradcam}
SPLIT=${SPLIT:-images}
EXTRA=${EXTRA:-}
BIN=target/release/convscope
PHOTOS=../shared/data/images

[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -d "$PHOTOS" ] || { echo "$PHOTOS is missing (the shared folder beside the checkout)" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# A folder of n images: the sample photos copied round-robin under distinct names.
make_folder() {
    local dir=$1 n=$2
    mkdir -p "$dir"
    local photos=("$PHOTOS"/*.png)
    for ((i = 0; i < n; i++)); do
        cp "${photos[i % ${#photos[@]}]}" "$dir/img$(printf %03d "$i").png"
    done
}

# Runs explain once; prints "seconds peak_rss_kb cpu_seconds" (cpu = user + system).
run_once() {
    local dir=$1 threads=$2
    rm -rf "$WORK/out"
    # shellcheck disable=SC2086
    /usr/bin/time -f "%e %M %U %S" -o "$WORK/time" \
        "$BIN" explain --model "$MODEL" --method "$METHOD" --out "$WORK/out" \
        --threads "$threads" --split "$SPLIT" --json $EXTRA "$dir" >"$WORK/lines"
    local lines
    lines=$(wc -l <"$WORK/lines")
    [ "$lines" -eq "$(find "$dir" -type f | wc -l)" ] || { echo "only $lines results" >&2; exit 1; }
    awk '{print $1, $2, $3 + $4}' "$WORK/time"
}

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

make_folder "$WORK/big" "$N"
make_folder "$WORK/small" 20

echo "model $MODEL, method $METHOD, $N images, split $SPLIT, $RUNS runs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A SECS CPU
for threads in 1 2; do
    : >"$WORK/t$threads"
    : >"$WORK/c$threads"
    for ((r = 1; r <= RUNS; r++)); do
        read -r secs rss cpu < <(run_once "$WORK/big" "$threads")
        echo "threads $threads run $r: $secs s wall, $cpu s CPU, peak RSS $((rss / 1024)) MiB; load $(cut -d' ' -f1 /proc/loadavg)"
        echo "$secs" >>"$WORK/t$threads"
        echo "$cpu" >>"$WORK/c$threads"
    done
    SECS[$threads]=$(median <"$WORK/t$threads")
    CPU[$threads]=$(median <"$WORK/c$threads")
done
read -r _ rss_small _ < <(run_once "$WORK/small" 2)
read -r _ rss_big _ < <(run_once "$WORK/big" 2)
# On a shared machine the wall-time ratio also measures the other jobs; the CPU time per run
# does not: 2 * cpu1 / cpu2 is the speed-up two otherwise idle cores would give.
awk -v a="${SECS[1]}" -v b="${SECS[2]}" -v ca="${CPU[1]}" -v cb="${CPU[2]}" -v n="$N" -v s="$rss_small" -v l="$rss_big" 'BEGIN {
    printf "median wall: 1 thread %.1f s (%.2f images/s), 2 threads %.1f s (%.2f images/s), speed-up %.2fx\n", a, n / a, b, n / b, a / b
    printf "median CPU: 1 thread %.1f s, 2 threads %.1f s; estimated speed-up on two idle cores 2 x %.1f / %.1f = %.2fx\n", ca, cb, ca, cb, 2 * ca / cb
    printf "peak RSS with 2 threads: 20 images %.0f MiB, %d images %.0f MiB\n", s / 1024, n, l / 1024
}'
