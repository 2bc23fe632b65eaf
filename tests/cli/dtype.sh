#!/usr/bin/env bash
# --dtype on the commands that run a model: bf16 / f16 run the model with 16-bit weights and
# activations (cvene_ctx_params.activation_dtype); a sweep in bf16 (full forwards) scores within
# bf16 noise of the f32 sweep; a bf16 sweep does not resume an f32 one; bad values are refused
# naming the option.
set -euo pipefail
cvene=$1 model=$2 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for dt in bf16 f16; do
  out=$("$cvene" predict --model "$model" --ids "5,9,2,7;4,4" --top 3 --dtype "$dt")
  [ "$(echo "$out" | grep -c '^  ')" -ge 6 ] || { echo "predict --dtype $dt printed: $out"; exit 1; }
done
set +e
"$cvene" predict --model "$model" --ids 1,2 --dtype f8 >/dev/null 2>"$tmp/err"; rc=$?
set -e
[ "$rc" = 2 ] && grep -q -- '--dtype must be f32, bf16 or f16, got "f8"' "$tmp/err" \
  || { echo "bad --dtype: rc $rc, $(cat "$tmp/err")"; exit 1; }
args=(sweep --model "$model" --base-ids 5,9,2,7,1,3,8 --source-ids 4,4,6,1,9,2,8 --metric prob --token-id 3)
"$cvene" "${args[@]}" --out "$tmp/f32" >/dev/null 2>&1
"$cvene" "${args[@]}" --out "$tmp/bf16" --dtype bf16 >/dev/null 2>&1
python3 - "$tmp/f32.json" "$tmp/bf16.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["complete"] and b["complete"]
assert b["sweep"]["dtype"] == "bf16" and "dtype" not in a["sweep"]
d = max(abs(x - y) for ra, rb in zip(a["scores"], b["scores"]) for x, y in zip(ra, rb))
# probabilities of one token: bf16 keeps 8 significand bits through 2 layers (measured ~1e-3)
assert d < 0.02, d
assert d > 0, "bf16 scores equal the f32 ones: nothing was rounded"
PY
set +e
"$cvene" "${args[@]}" --out "$tmp/f32" --dtype bf16 --resume >/dev/null 2>"$tmp/err2"; rc=$?
set -e
[ "$rc" != 0 ] && grep -q "different sweep" "$tmp/err2" || { echo "bf16 resume of an f32 sweep not refused"; exit 1; }
echo "cli dtype: 1 passed, 0 failed"
