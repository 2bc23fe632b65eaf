#!/usr/bin/env bash
# What users install works outside the source tree (run by .ci/run):
#   1. C: `cmake --install` of a build into a temporary prefix; a C program compiled with
#      `pkg-config --cflags --libs cvene` against it runs a forward of the fixture model;
#   2. Python: the wheel `pip wheel .` builds (scikit-build-core, CPU backend) installed into a
#      fresh venv, imported from another directory, runs a forward and a pyvene case against the
#      reference logits.
# Usage: tools/install_check.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=$root/tests/fixtures/gpt2/small/model

echo "== C: cmake --install, pkg-config, a forward"
cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log"
cat >"$tmp/fwd.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include "cvene.h"
int main(int argc, char **argv) {
    cvene_ctx *ctx;
    cvene_model *m;
    char err[256];
    if (cvene_ctx_new(NULL, &ctx, err, sizeof err) != CVENE_OK) return puts(err), 1;
    if (cvene_model_load(ctx, argv[1], &m) != CVENE_OK) return puts(cvene_ctx_error(ctx)), 1;
    int32_t ids[3] = {11, 42, 7};
    float *logits = malloc(sizeof(float) * 3 * cvene_model_get_info(m).vocab_size);
    cvene_run_opts o = {0};
    o.logits = logits;
    if (cvene_forward(m, ids, 1, 3, &o) != CVENE_OK) return puts(cvene_ctx_error(ctx)), 1;
    printf("cvene %s: logits[0][0][0] = %.6f\n", cvene_version(), logits[0]);
    free(logits);
    cvene_model_free(m);
    cvene_ctx_free(ctx);
    return 0;
}
C
export PKG_CONFIG_PATH=$tmp/prefix/lib/pkgconfig:$tmp/prefix/lib64/pkgconfig
# shellcheck disable=SC2046
cc -o "$tmp/fwd" "$tmp/fwd.c" $(pkg-config --cflags --libs cvene) -Wl,-rpath,"$(pkg-config --variable=libdir cvene)"
"$tmp/fwd" "$model"
"$tmp/prefix/bin/cvene" predict --model "$model" --ids 11,42,7 --top 1 | tail -1

echo "== Python: the wheel in a fresh venv"
python=/usr/bin/python3
[ -x "$python" ] || python=python3
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --upgrade pip
(cd "$root" && "$tmp/venv/bin/pip" wheel -q . -w "$tmp/wheels" -C cmake.define.CVENE_CUDA=OFF)
"$tmp/venv/bin/pip" install -q "$tmp"/wheels/cvene-*.whl
cd "$tmp"  # nothing of the source tree on the path
CVENE_LIBRARY= "$tmp/venv/bin/python" - "$root" <<'PY'
import json, struct, sys
from pathlib import Path
import numpy as np
import cvene
root = Path(sys.argv[1])
assert str(root) not in cvene.__file__, cvene.__file__
case = root / "tests/fixtures/pyvene/cases/001_vanilla_pos_block_output_small"
inputs = json.loads((case / "inputs.json").read_text())
m = cvene.load(root / "tests/fixtures/gpt2" / inputs.pop("model") / "model")
raw = (case / "expected.safetensors").read_bytes()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])["logits"]
want = np.frombuffer(raw[8 + n + h["data_offsets"][0]:8 + n + h["data_offsets"][1]], np.float32).reshape(h["shape"])
_, out = cvene.IntervenableModel(case / "config.json", m)(inputs["base"], inputs["sources"],
                                                         unit_locations=inputs["unit_locations"])
err = float(np.abs(out.logits - want).max() / np.abs(want).max())
assert err <= 1e-5, err
print(f"cvene {cvene.__version__} from {cvene.__file__}: pyvene case 001 within {err:.1e}")
PY
echo "install_check: OK"
