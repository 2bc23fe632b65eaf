#!/usr/bin/env bash
# The main job: install what is missing, build, and run a causal trace (ROME-style: noise on the
# subject tokens' embeddings, clean states restored at each layer x position) on a shipped model,
# writing build/demo-trace.{svg,csv,json}. Open the SVG in a browser.
# The model is the small random GPT-2 test fixture until the trained demo model (assets/) lands;
# its heatmap shows the machinery, not a learned fact.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh build >/dev/null
model=tests/fixtures/gpt2/small/model
[ -f assets/demo-gpt2/model.safetensors ] && model=assets/demo-gpt2
out=${1:-build/demo-trace}
if [ "$model" = assets/demo-gpt2 ]; then
  ./build/cvene sweep --model "$model" --trace --base "The capital of Zorblaxia is" --subject " Zorblaxia" --out "$out"
else
  ./build/cvene sweep --model "$model" --trace --base-ids 17,42,99,5,23,61,8,77 --subject-positions 2,3 \
    --samples 10 --out "$out"
fi
echo "open $out.svg in a browser"
