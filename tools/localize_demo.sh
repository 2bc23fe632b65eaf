#!/usr/bin/env bash
# The pyvene paper's localisation experiment (Pythia-6.9B: "<name> walked because" -> he / she), here
# on the shipped demo model's binary task (tools/make_localize_demo.py: white or pink): a probe per
# (layer, position) cell and a rank-1 DAS intervention per cell, the two heatmaps side by side in
# OUT/das/grid.svg - where the attribute is linearly readable (probe) against where the model uses it
# (DAS's interchange intervention accuracy).
#   bash tools/localize_demo.sh [MODEL_DIR [DATA_DIR [OUT [EPOCHS]]]]
# A Pythia checkpoint directory with its own train/eval/probe.jsonl in DATA_DIR takes the same commands.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-assets/demo-gpt2} data=${2:-assets/demo-gpt2/localize_binary} out=${3:-build/localize} epochs=${4:-3}
positions=-4,-3,-2,-1
[ -x build/cvene ] || bash tools/build.sh build >/dev/null
mkdir -p "$out"
./build/cvene probe --model "$model" --data "$data/probe.jsonl" --positions "$positions" --out "$out/probe"
./build/cvene train --model "$model" --data "$data/train.jsonl" --eval "$data/eval.jsonl" \
  --type LowRankRotatedSpace --rank 1 --grid-positions "$positions" --epochs "$epochs" --lr 1e-2 \
  --beside "$out/probe/results.json" --out "$out/das"
echo "open $out/das/grid.svg: DAS IIA (left) beside probe accuracy (right), layers x positions"
