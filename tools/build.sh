#!/usr/bin/env bash
# Configure and build cvene.  Usage: tools/build.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash tools/install_deps.sh)"
dir=${1:-build}; shift || true
mkdir -p "$dir"
cmake -S . -B "$dir" -DCVENE_WERROR=ON -DCVENE_CUDA=ON "$@" >"$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; exit 1; }
grep -E "cvene: CUDA backend" "$dir/configure.log" || true
cmake --build "$dir" -j"$(nproc)"
