#!/usr/bin/env bash
# Install what is missing, build, and run the main job on the shipped demo model:
# top next-token predictions for two token sequences.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh build >/dev/null
./build/cvene predict --model tests/fixtures/gpt2/small/model --ids "17,42,99,5;7,7,7" --top 5
