#!/usr/bin/env bash
# `cvene sweep --method atp [--verify K]` and `--head all` from the command line, on the GPT-2
# fixture: AtP's scores equal torch autograd's estimate (tests/fixtures/atp, 1e-4 of the largest
# change, as tests/test_localize.cpp); --verify's exact scores equal the exact sweep's at those sites
# (1e-6: the same forwards); every head at once equals one head at a time (1e-6); bad
# combinations are refused naming the option.
set -euo pipefail
cvene=$1 fixtures=$2 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=$fixtures/gpt2/small/model
ref=$fixtures/atp/gpt2_small.json
read -r base src tok tokb < <(python3 -c "
import json,sys; d=json.load(open('$ref'))
print(','.join(map(str,d['base'])), ','.join(map(str,d['source'])), d['token'], d['token_b'])")
common=(--model "$model" --base-ids "$base" --source-ids "$src" --token-id "$tok" --token-b-id "$tokb" --metric logit-diff)
"$cvene" sweep "${common[@]}" --method atp --verify 5 --out "$tmp/atp" >"$tmp/atp.txt"
grep -q "attribution patching: 2 of 2 layers x 9 positions, 3 forward passes" "$tmp/atp.txt" || { cat "$tmp/atp.txt"; exit 1; }
grep -q "Spearman" "$tmp/atp.txt" || { echo "no verify summary"; cat "$tmp/atp.txt"; exit 1; }
"$cvene" sweep "${common[@]}" --out "$tmp/exact" >/dev/null
"$cvene" sweep "${common[@]}" --component head_attention_value_output --head all --out "$tmp/heads" >/dev/null
for h in 0 3; do
  "$cvene" sweep "${common[@]}" --component head_attention_value_output --head $h --out "$tmp/head$h" >/dev/null
done
python3 - "$tmp" "$ref" <<'PY'
import json, sys
tmp, ref = sys.argv[1], json.load(open(sys.argv[2]))
case = next(c for c in ref["cases"] if c["component"] == "block_output" and c["metric"] == "logit_diff")
atp = json.load(open(tmp + "/atp.json"))
assert atp["sweep"]["method"] == "atp" and atp["complete"] is True
scale = max(1e-3, max(abs(v) for row in case["scores"] for v in row))
err = max(abs(g - (case["base_score"] + r)) for grow, rrow in zip(atp["scores"], case["scores"]) for g, r in zip(grow, rrow))
assert err <= 1e-4 * scale, ("atp vs torch", err, scale)
exact = json.load(open(tmp + "/exact.json"))["scores"]
v = atp["verify"]
assert len(v) == 5 and atp["verify_summary"]["sites"] == 5
for e in v:
    want = exact[e["layer"]][e["position"]]
    assert abs(e["exact"] - want) <= 1e-6 * max(1, abs(want)), (e, want)
changes = [abs(e["estimate"] - atp["base_score"]) for e in v]
assert changes == sorted(changes, reverse=True), changes
heads = json.load(open(tmp + "/heads.json"))
assert heads["sweep"]["head"] == "all" and len(heads["scores"][0]) == 4 * 9 and heads["tokens"][9].startswith("h1 ")
for h in (0, 3):
    one = json.load(open(tmp + "/head%d.json" % h))["scores"]
    for l in range(2):
        for t in range(9):
            a, b = heads["scores"][l][h * 9 + t], one[l][t]
            assert abs(a - b) <= 1e-6 * max(1, abs(b)), (h, l, t, a, b)
rows = open(tmp + "/heads.csv").read().splitlines()
assert rows[0] == "layer,head,position,token,score" and len(rows) == 1 + 2 * 4 * 9, (rows[0], len(rows))
PY
refuse() { # expected message, then the arguments
  local want=$1; shift
  set +e
  "$cvene" sweep "$@" --out "$tmp/bad" >/dev/null 2>"$tmp/err"
  local rc=$?
  set -e
  [ "$rc" != 0 ] && grep -q -- "$want" "$tmp/err" || { echo "not refused with \"$want\" (rc $rc): $(cat "$tmp/err")"; exit 1; }
  [ ! -e "$tmp/bad.json" ] || { echo "a refused sweep wrote a file"; exit 1; }
}
"$cvene" sweep "${common[@]}" --component head_attention_value_output --head all --together --out "$tmp/tog" >/dev/null
python3 -c "
import json; d = json.load(open('$tmp/tog.json'))
assert d['sweep']['together'] is True and [len(r) for r in d['scores']] == [4, 4], d['scores']
assert d['tokens'] == ['h%d all positions' % h for h in range(4)], d['tokens']"
refuse "not with --verify" "${common[@]}" --together --method atp --verify 2
refuse "it takes no --trace" --model "$model" --base-ids "$base" --method atp --trace --subject-positions 1
refuse "it takes no --window" "${common[@]}" --method atp --window 2
refuse "add --method atp" "${common[@]}" --verify 3
refuse "--method must be exact or atp" "${common[@]}" --method fast
refuse "--head all needs --component head_attention_value_output" "${common[@]}" --head all
echo "sweep atp / heads: 1 passed, 0 failed"
