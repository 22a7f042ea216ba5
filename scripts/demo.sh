#!/usr/bin/env bash
# scripts/demo.sh: the README's main job (make demo). Installs what is missing, builds, trains the
# original and the retrained cnn on Fashion-MNIST with --split class=0, shows both side by side, then
# compares unlearning methods from the original against the retrained model.
# Outputs go to $HAMU_DEMO_DIR (default runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "building build/hamu (the first build compiles ~50 files: a minute or two on 2 cores) ..."
make -j"$(nproc)" build/hamu | grep -v "^  \(CXX\|AR\) " || true
out=${HAMU_DEMO_DIR:-runs/demo}
mkdir -p "$out"
hamu=build/hamu
epochs=${HAMU_DEMO_EPOCHS:-3}
start=$(date +%s)

echo "== 1/4 train the original model (all 60,000 training images) =="
$hamu train --model cnn --split class=0 --subset full --epochs "$epochs" \
  --out "$out/original.safetensors" --json "$out/original.json"
echo
echo "== 2/4 train the retrained reference (never sees class 0) =="
$hamu train --model cnn --split class=0 --subset retain --epochs "$epochs" \
  --out "$out/retrained.safetensors" --json "$out/retrained.json"
echo
echo "== 3/4 original vs retrained =="
$hamu eval --model "$out/original.safetensors" --reference "$out/retrained.safetensors" --json "$out/eval.json"
echo
echo "== 4/4 unlearning methods from the original, judged against the retrained model =="
$hamu compare --model "$out/original.safetensors" --reference "$out/retrained.safetensors" \
  --methods hamu-q,hamu-u,ft,ga,gdiff,scrub,npo --json "$out/compare.json" --svg "$out/compare.svg"
end=$(date +%s)
echo
echo "demo finished in $((end - start)) s; outputs in $out/ (compare.svg is the trade-off plot)"
