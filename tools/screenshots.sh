#!/usr/bin/env bash
# Real screenshots of the running app, one per panel, under Xvfb (no display needed):
#   apt-get install -y xvfb xdotool imagemagick libgl1-mesa-dri libegl1 mesa-vulkan-drivers libvulkan1
#   bash tools/screenshots.sh            # writes screenshots/*.png
# Each panel starts from a fresh settings folder and the start-up switches of src/app/mod.rs
# (CONVSCOPE_PANEL, CONVSCOPE_LAYER, CONVSCOPE_AUTOSTART, CONVSCOPE_UNITS, CONVSCOPE_UNIT), waits,
# and grabs the screen.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release
BIN=target/release/convscope
OUT=screenshots
mkdir -p "$OUT"

shot() { # name wait_seconds env...
  local name=$1 wait=$2
  shift 2
  local home
  home=$(mktemp -d)
  env HOME="$home" XDG_DATA_HOME="$home" WINIT_X11_SCALE_FACTOR=1 "$@" \
    xvfb-run -a -s "-screen 0 1600x1000x24" bash -c "
      $BIN & pid=\$!
      sleep $wait
      xdotool mousemove 1599 999 && sleep 1  # no tooltip where the pointer happened to rest
      import -window root -crop 1440x920+0+0 +repage '$OUT/$name.png'
      kill \$pid; wait \$pid 2>/dev/null || true" || true
  rm -rf "$home"
  echo "$OUT/$name.png"
}

shot explain 20 CONVSCOPE_PANEL=explain
shot layers 25 CONVSCOPE_PANEL=layers CONVSCOPE_LAYER=/_blocks.2/_expand_conv/Conv_output_0
shot training 60 CONVSCOPE_PANEL=training CONVSCOPE_AUTOSTART=training
shot dataset 60 CONVSCOPE_PANEL=dataset CONVSCOPE_AUTOSTART=training
shot dream 75 CONVSCOPE_PANEL=dream CONVSCOPE_AUTOSTART=dream
shot simd-fallback 20 CONVSCOPE_PANEL=explain CONVSCOPE_SIMD=neon
shot training-software-rendering 40 CONVSCOPE_PANEL=training CONVSCOPE_AUTOSTART=training CONVSCOPE_FRAME_TIMES=1
# vision transformers and the preprocessing window (issue 14). The ViT-B/16 file has random
# weights (no pretrained transformer can be downloaded here): the maps show the mechanism — the
# tokens read back onto the 14x14 patch grid — not what a trained ViT looks at.
VIT=target/default-exporter/legacy_vit_b_16.onnx
if [ -f "$VIT" ]; then
  shot explain-vit-gradcam 60 CONVSCOPE_PANEL=explain CONVSCOPE_OPEN="$VIT" CONVSCOPE_METHOD=gradcam
  shot explain-vit-rollout 60 CONVSCOPE_PANEL=explain CONVSCOPE_OPEN="$VIT" CONVSCOPE_METHOD=attention-rollout
  shot layers-vit-tokens 60 CONVSCOPE_PANEL=layers CONVSCOPE_OPEN="$VIT" \
    CONVSCOPE_LAYER=/encoder/layers/encoder_layer_11/ln_1/LayerNormalization_output_0
else
  echo "skipped the ViT screenshots: $VIT is missing (python tools/default_exporter_parity.py --legacy vit_b_16)"
fi
shot preprocessing 20 CONVSCOPE_PANEL=explain CONVSCOPE_PREPROCESSING=1
# the units view (issue 16): a page of /_blocks.6's units visualised (128 steps at 64 px, ~25 s
# on 2 cores) and searched in the bundled photos, then one unit's page with its four faces
shot microscope-units 90 CONVSCOPE_PANEL=layers CONVSCOPE_LAYER=/_blocks.6/_swish/Clip_output_0 \
  CONVSCOPE_UNITS=1 CONVSCOPE_AUTOSTART=units
shot microscope-unit-page 100 CONVSCOPE_PANEL=layers CONVSCOPE_LAYER=/_blocks.6/_swish/Clip_output_0 \
  CONVSCOPE_UNITS=1 CONVSCOPE_AUTOSTART=units CONVSCOPE_UNIT=5
# the microscope's self-contained index.html in a real headless browser (issue 16):
#   apt-get install -y chromium
MS=$(mktemp -d)
$BIN microscope --model efficientnet-lite0 --layer /_blocks.6/_swish/Clip --channels 0..32 \
  --out "$MS" >/dev/null
cp "$MS/contact_sheet.png" "$OUT/microscope-contact-sheet.png"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1440,1000 \
  --screenshot="$OUT/microscope-html.png" "file://$MS/index.html"
rm -rf "$MS"
echo "$OUT/microscope-html.png"
