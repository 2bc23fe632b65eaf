#!/usr/bin/env bash
# Install the Debian packages cvene builds against, only if something is missing.
# Usage: tools/install_deps.sh [--fuzz]   (--fuzz: also what tools/fuzz.sh builds with)
set -euo pipefail
pkgs=(cmake g++ make pkg-config libopenblas-openmp-dev libcjson-dev libgtest-dev libdlpack-dev)
# ranks: mpirun and the MPI library (issue #15; the tests run CPU ranks)
pkgs+=(openmpi-bin libopenmpi-dev)
# the Python package's tests (tools/pytest.sh) and its clean-venv wheel check (tools/wheel_check.sh)
pkgs+=(python3-numpy python3-pytest python3-venv)
# clang with libFuzzer (libclang_rt.fuzzer is in libclang-rt-14-dev) and clang's OpenMP runtime
if [ "${1:-}" = "--fuzz" ]; then pkgs+=(clang libclang-rt-14-dev libomp-dev); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "cvene: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# nvcc is optional: the CUDA backend is built when it is found.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "export PATH=/usr/local/cuda/bin:\$PATH"
fi
