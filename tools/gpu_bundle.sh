#!/usr/bin/env bash
# Build what bench/gpu_check.sh runs on a lent GPU machine. Run it HERE (the build machine):
#
#   bash tools/gpu_bundle.sh            # then, with the device tool:
#   run  command "bash bench/gpu_check.sh"  carry ["build-gpu"]  timeout_s 420
#
# The device machine has nvcc, cmake, a driver, cuBLAS and python3 with torch + transformers,
# but none of the Debian packages cvene builds against (OpenBLAS, cJSON, GoogleTest), and
# nothing can be downloaded there; its glibc is newer than this machine's, so binaries built
# here run there. This script
#   1. configures and builds a Release tree with the CUDA backend for sm_90 (H100/H200) in
#      build-gpu-tree/ (CVENE_NATIVE=OFF: the device's CPU is not this one; only the targets
#      gpu_check.sh runs);
#   2. stages the test and benchmark binaries (stripped) and, with ldd, the shared libraries
#      they need that the device image lacks (OpenBLAS, cJSON, libgomp, libgfortran,
#      libquadmath, cudart, ...) into lib/; libstdc++ and libgcc_s go to lib/fallback
#      (used there only if the device's own are too old); libc, libm, libcuda and cuBLAS are
#      NOT copied (the driver and CUDA 13 / torch's nvidia wheels provide them there);
#   3. packs them as build-gpu/cvene-gpu.tar.xz plus build-gpu/MANIFEST.txt. The device tool
#      carries at most 64 MiB in all (tracked and untracked-not-ignored files plus carried
#      paths), and OpenBLAS alone is ~36 MB unpacked, so build-gpu holds only the archive;
#      gpu_check.sh unpacks it into a temporary directory there (never into the tree);
#   4. checks that build-gpu plus the rest of the working tree that travels is under 60 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TREE=${GPU_BUNDLE_TREE:-build-gpu-tree}
OUTDIR=build-gpu
LIMIT_MIB=60

eval "$(bash tools/install_deps.sh)"
command -v nvcc >/dev/null || { echo "gpu_bundle: nvcc not found (CUDA 13 toolkit needed)" >&2; exit 1; }

echo "== configure $TREE (Release, CUDA sm_90, CVENE_NATIVE=OFF)"
mkdir -p "$TREE"
cmake -S . -B "$TREE" -DCMAKE_BUILD_TYPE=Release -DCVENE_CUDA=ON -DCVENE_WERROR=ON -DCVENE_NATIVE=OFF \
  -DCMAKE_CUDA_ARCHITECTURES=90 >"$TREE/configure.log" 2>&1 || { cat "$TREE/configure.log"; exit 1; }
grep -q "cvene: CUDA backend ON" "$TREE/configure.log" || { echo "gpu_bundle: CUDA backend is OFF" >&2; exit 1; }

# what gpu_check.sh runs: tests/<name> and <name>; targets another change has not added yet
# are left out (gpu_check.sh reports them as missing)
TESTS=(test_cuda_ops test_gpt2_parity_cuda test_neox_parity_cuda test_gru test_pyvene_parity_cuda test_intervene_ops
  test_sweep_cuda test_lowp_cuda test_fused_ops_cuda test_ops16_cuda test_backward_ops_cuda test_sample_cuda
  test_generate_cuda test_localize_cuda)
BENCH=(cvene_bench_forward cvene_bench_iv_kernels cvene_make_random_model cvene_bench_sweep cvene_cli)
known=$(cmake --build "$TREE" --target help | sed -n 's/^\.\.\. \([A-Za-z0-9_]*\).*/\1/p')
targets=()
for t in "${TESTS[@]}" "${BENCH[@]}"; do
  if grep -qx "$t" <<<"$known"; then targets+=("$t"); else echo "gpu_bundle: no target $t (skipped)"; fi
done
echo "== build ${targets[*]}"
cmake --build "$TREE" -j"$(nproc)" --target "${targets[@]}"

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/cvene-gpu-stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/tests" "$STAGE/lib/fallback"
for t in "${targets[@]}"; do
  if [ -x "$TREE/tests/$t" ]; then cp "$TREE/tests/$t" "$STAGE/tests/"
  elif [ "$t" = cvene_cli ]; then cp "$TREE/cvene" "$STAGE/bin/"  # the CLI target's file is "cvene"
  else cp "$TREE/$t" "$STAGE/bin/"; fi
done
strip --strip-unneeded "$STAGE"/bin/* "$STAGE"/tests/*

# shared libraries: everything ldd resolves except what the device has (system C runtime,
# the driver, cuBLAS); the C++ runtime only as a fallback
skip='^(linux-vdso|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so|ld-linux|libcuda\.so|libcublas|libcublasLt)'
fallback='^(libstdc\+\+\.so|libgcc_s\.so)'
missing=0
for b in "$STAGE"/bin/* "$STAGE"/tests/*; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [ "$path" = "not" ]; then echo "gpu_bundle: $(basename "$b") needs $name, not found here" >&2; missing=1; continue; fi
    [[ $name =~ $skip ]] && continue
    dest="$STAGE/lib"; [[ $name =~ $fallback ]] && dest="$STAGE/lib/fallback"
    [ -e "$dest/$name" ] || cp -L "$path" "$dest/$name"
  done < <(ldd "$b")
done
[ "$missing" = 0 ] || exit 1
chmod 0755 "$STAGE"/lib/*.so* "$STAGE"/lib/fallback/*.so* 2>/dev/null || true

# the newest glibc / libstdc++ symbol versions the staged files need (the device must have them)
need() { for f in "$STAGE"/bin/* "$STAGE"/tests/* "$STAGE"/lib/*.so*; do objdump -T "$f" 2>/dev/null; done |
  grep -o "$1_[0-9.]*" | sort -uV | tail -1; }
glibc_need=$(need GLIBC); glibcxx_need=$(need GLIBCXX)

mkdir -p "$OUTDIR"
for f in "$OUTDIR"/* "$OUTDIR"/.[!.]*; do  # only ever our two files in there
  [ -e "$f" ] || continue
  case "$(basename "$f")" in MANIFEST.txt | cvene-gpu.tar.xz) rm -f "$f" ;;
    *) echo "gpu_bundle: $f is not ours; $OUTDIR must hold only the bundle" >&2; exit 1 ;; esac
done
{
  echo "cvene GPU bundle, made by tools/gpu_bundle.sh on $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
  echo "nvcc: $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), CUDA architectures 90"
  echo "needs at most: ${glibc_need:-?}, ${glibcxx_need:-?} (lib/fallback has this machine's libstdc++)"
  echo "binaries:"; (cd "$STAGE" && ls -1 bin/* tests/* | sed 's/^/  /')
  echo "libraries:"; (cd "$STAGE" && find lib -type f | sort | sed 's/^/  /')
} >"$STAGE/MANIFEST.txt"
cp "$STAGE/MANIFEST.txt" "$OUTDIR/MANIFEST.txt"
echo "== pack $OUTDIR/cvene-gpu.tar.xz"
tar -C "$STAGE" -cf - MANIFEST.txt bin tests lib | xz -6 -T"$(nproc)" >"$OUTDIR/cvene-gpu.tar.xz"
cat "$OUTDIR/MANIFEST.txt"

# what travels: tracked + untracked-not-ignored files, plus build-gpu
if git rev-parse --git-dir >/dev/null 2>&1; then
  tree_bytes=$( (git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null || true) |
    awk '{s+=$1} END {print s+0}')
else  # not a git checkout: everything but build directories
  tree_bytes=$(du -sb --exclude='./build*' . | cut -f1)
fi
bundle_bytes=$(du -sb "$OUTDIR" | cut -f1)
total=$((tree_bytes + bundle_bytes))
awk -v o="$OUTDIR" -v b="$bundle_bytes" -v t="$tree_bytes" -v l="$LIMIT_MIB" 'BEGIN {
  printf "gpu_bundle: %s is %.1f MiB; with the working tree that travels (%.1f MiB) %.1f MiB (limit %d MiB)\n",
         o, b / 1048576, t / 1048576, (b + t) / 1048576, l }'
if [ "$total" -ge $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu_bundle: too large for the device tool (64 MiB carried at most)" >&2
  exit 1
fi
echo "gpu_bundle: ready. Device tool: run command \"bash bench/gpu_check.sh\" with carry [\"build-gpu\"]"
