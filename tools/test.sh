#!/usr/bin/env bash
# Build and run the whole test suite.  --sanitize: ASan + UBSan build (CPU only).
# --emu: also the slow suites on the emulated CUDA backend (label emu_slow).
set -euo pipefail
cd "$(dirname "$0")/.."
# ctest runs one test per core (-j nproc): one OpenMP thread each, or their threads
# oversubscribe the cores and spin at every barrier (a tiny sweep went from 1.5 s to 5 min)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Label emu_slow (the model suites on the emulated CUDA backend, tests/kernel_emu: minutes)
# runs only with --emu.
if [ "${1:-}" = "--sanitize" ]; then
  bash tools/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DCVENE_SANITIZE=ON -DCVENE_CUDA=OFF
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -LE emu_slow
elif [ "${1:-}" = "--emu" ]; then
  bash tools/build.sh build -DCVENE_EMU_SLOW=ON
  ctest --test-dir build --output-on-failure -j"$(nproc)"
else
  bash tools/build.sh build
  ctest --test-dir build --output-on-failure -j"$(nproc)" -LE emu_slow
fi
