#!/usr/bin/env bash
# Every speed figure of issue 13 ("every CPU") at one instruction-set level, convscope beside
# PyTorch held to the same level (tools/simd_level.py), one script after the other on a quiet
# machine:
#   bash tools/bench_levels.sh LEVEL [OUT.log]        LEVEL: best, avx512, avx2, portable
# 1. ImageNet networks, batch 1, 224²: ResNet50, VGG16, MobileNetV2, EfficientNet-Lite0 forward
#    and forward + backward to the input (tools/bench_zoo.py; onnxruntime at its own best level)
# 2. smile CNN: batch-1 forward, forward + backward, training step at batch 32
#    (tools/bench_engine.py)
# 3. dream: leopard, 256 steps at 224 on EfficientNet-Lite0 (tools/bench_dream.py)
# 4. `convscope train --data synthetic-smiles --epochs 2` (the issue's ≥ 0.97 in ≤ 60 s; 2 epochs reach 0.99)
# 5. SMILEsmileD epochs beside PyTorch's (tools/bench_train_smiles.py, EPOCHS, default 3)
# Needs target/release/convscope, the model zoo (tools/make_zoo_fixtures.py) and a Python with
# torch, torchvision, onnxruntime (PY, default /work/refenv/venv/bin/python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LEVEL=${1:?usage: bench_levels.sh LEVEL [OUT.log]}
OUT=${2:-/dev/stdout}
PY=${PY:-/work/refenv/venv/bin/python}
EPOCHS=${EPOCHS:-3}
BIN=target/release/convscope
{
  echo "## level $LEVEL, $(date -u '+%Y-%m-%d %H:%M UTC'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  "$PY" tools/bench_zoo.py --level "$LEVEL" --rounds 2 --runs 5 \
    --models resnet50,vgg16,mobilenet_v2,efficientnet_lite0
  "$PY" tools/bench_engine.py --level "$LEVEL" --runs 15 --out /tmp/bench_engine_"$LEVEL".json
  "$PY" tools/bench_dream.py --level "$LEVEL" --rounds 1
  tmp=$(mktemp -d)
  if [ "$LEVEL" != best ]; then export CONVSCOPE_SIMD=$LEVEL; fi
  /usr/bin/time -f "synthetic-smiles: %e s wall, peak RSS %M KB" \
    "$BIN" train --data synthetic-smiles --epochs 2 --threads 2 --out "$tmp/syn" --json 2>&1 | tail -2
  unset CONVSCOPE_SIMD
  rm -rf "$tmp"
  "$PY" tools/bench_train_smiles.py --level "$LEVEL" --epochs "$EPOCHS"
} 2>&1 | tee -a "$OUT"
