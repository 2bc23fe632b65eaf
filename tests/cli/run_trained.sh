#!/usr/bin/env bash
# `cvene run` with trained interventions (issue #13): pyvene's saved LowRank / LoReFT interventions
# (tests/fixtures/training/model/*: IntervenableModel.save's config.json beside the converted
# intkey_*.safetensors) run from the config's directory and from --weights, and their logits equal
# pyvene's (expected.safetensors "logits", read here with the standard library alone); a config
# without its weights is refused with a message that says where cvene looked and what to pass.
# Usage: run_trained.sh CVENE MODEL_DIR FIXTURES_DIR
set -uo pipefail
cvene=$1 model=$2 fx=$3/training/model tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# the request alone (the fixture's inputs.json also holds the generator's notes: labels, loss)
request() {
  python3 - "$1/inputs.json" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
json.dump({k: d[k] for k in ("base", "sources", "unit_locations") if d.get(k) is not None}, open(sys.argv[2], "w"))
PY
}
# max |ours - pyvene's| over the logits, relative to pyvene's largest, below 1e-5 (f32 on both sides)
same_logits() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
def load(path, name):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])[name]
    assert h["dtype"] == "F32", h
    s, e = h["data_offsets"]
    return struct.unpack("<%df" % ((e - s) // 4), b[8 + n + s:8 + n + e])
ours, want = load(sys.argv[1], "logits"), load(sys.argv[2], "logits")
assert len(ours) == len(want), (len(ours), len(want))
scale = max(abs(x) for x in want)
err = max(abs(a - b) for a, b in zip(ours, want))
print("max |cvene - pyvene| = %.3g of %.3g" % (err, scale))
sys.exit(0 if err <= 1e-5 * scale else 1)
PY
}

for case in das_lowrank_r1_l1 loreft_r4_l1; do
  request "$fx/$case" "$tmp/$case.json"
  # weights from the config's directory (the default)
  timeout 120 "$cvene" run --model "$model" --config "$fx/$case/config.json" --inputs "$tmp/$case.json" \
    --out "$tmp/$case.safetensors" >"$tmp/out" 2>"$tmp/err"
  [ $? = 0 ] && ok || { bad "$case: exit non-zero: $(cat "$tmp/err")"; continue; }
  same_logits "$tmp/$case.safetensors" "$fx/$case/expected.safetensors" && ok || bad "$case: logits differ from pyvene's"
done

# --weights: the config copied elsewhere, the weights named explicitly
mkdir -p "$tmp/cfg" && cp "$fx/das_lowrank_r1_l1/config.json" "$tmp/cfg/"
timeout 120 "$cvene" run --model "$model" --config "$tmp/cfg/config.json" --inputs "$tmp/das_lowrank_r1_l1.json" \
  --weights "$fx/das_lowrank_r1_l1" --out "$tmp/w.safetensors" >"$tmp/out" 2>"$tmp/err"
[ $? = 0 ] && ok || bad "--weights: exit non-zero: $(cat "$tmp/err")"
same_logits "$tmp/w.safetensors" "$fx/das_lowrank_r1_l1/expected.safetensors" && ok || bad "--weights: logits differ"

# without them: refused, naming the representation, the file it looked for and the option
timeout 120 "$cvene" run --model "$model" --config "$tmp/cfg/config.json" --inputs "$tmp/das_lowrank_r1_l1.json" \
  --out "$tmp/none.safetensors" >"$tmp/out" 2>"$tmp/err"
rc=$?
{ [ "$rc" != 0 ] && [ "$rc" -lt 124 ]; } && ok || bad "no weights: exit $rc"
for want in "representations[0] (LowRankRotatedSpaceIntervention)" "intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.safetensors" "--weights DIR"; do
  grep -qF -- "$want" "$tmp/err" && ok || bad "no weights: \"$want\" not in: $(cat "$tmp/err")"
done
[ -e "$tmp/none.safetensors" ] && bad "no weights: a failed run wrote its --out" || ok

echo "run_trained: $pass passed, $fail failed"
[ "$fail" = 0 ]
