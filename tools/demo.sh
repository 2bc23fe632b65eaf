#!/usr/bin/env bash
# The main job: install what is missing, build, and run a causal trace (ROME-style: noise on the
# subject tokens' embeddings, clean states restored at each layer x position) on a shipped model,
# writing build/demo-trace.{svg,csv,json}. Open the SVG in a browser.
# The model is assets/demo-gpt2, a tiny GPT-2 trained on invented facts (its README says how): the
# heatmap shows the fact recalled from the subject's last token in early layers and from the last
# token in late layers. (Without assets/, it falls back to the random test fixture.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh build >/dev/null
model=tests/fixtures/gpt2/small/model
[ -f assets/demo-gpt2/model.safetensors ] && model=assets/demo-gpt2
out=${1:-build/demo-trace}
if [ "$model" = assets/demo-gpt2 ]; then
  ./build/cvene sweep --model "$model" --trace --base "Today, Judge Triklol's favourite colour is" \
    --subject " Judge Triklol" --threads 1 --out "$out"  # a 1M-parameter model: one thread is fastest
else
  ./build/cvene sweep --model "$model" --trace --base-ids 17,42,99,5,23,61,8,77 --subject-positions 2,3 \
    --samples 10 --out "$out"
fi
echo "open $out.svg in a browser"
