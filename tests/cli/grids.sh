#!/usr/bin/env bash
# The probe grid (`cvene probe --positions`) and the DAS grid (`cvene train --grid-positions`) on the
# demo model's binary task: a grid cell equals the same probe / the same training run done alone
# (probe: accuracies and loss to 1e-6, the same computation; DAS: IIA and held-out loss to 1e-4, the
# issue's bound), the combined SVG holds both panels, and bad input is refused naming it.
set -euo pipefail
cvene=$1 demo=$2 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
data=$demo/localize_binary
# probe grid column -1 against the plain probe (its examples' default position: last)
"$cvene" probe --model "$demo" --data "$data/probe.jsonl" --positions -2,-1 --layers 1,5 --steps 60 --out "$tmp/pg" >/dev/null
"$cvene" probe --model "$demo" --data "$data/probe.jsonl" --layers 1,5 --steps 60 --out "$tmp/p1" >/dev/null
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
g = json.load(open(tmp + "/pg/results.json"))["sites"]
one = json.load(open(tmp + "/p1/results.json"))["sites"]
assert len(g) == 4 and [s["position"] for s in g] == [-2, -1, -2, -1], g
for s in one:
    c = next(x for x in g if x["layer"] == s["layer"] and x["position"] == -1)
    for k in ("train_accuracy", "held_out_accuracy", "held_out_loss"):
        assert abs(c[k] - s[k]) <= 1e-6, (k, c[k], s[k])
PY
# DAS grid cell (layer 2, position -2) against `cvene train --layer 2` (the data's positions are -2)
common=(--model "$demo" --data "$data/train.jsonl" --eval "$data/eval.jsonl" --type LowRankRotatedSpace --rank 1
        --epochs 1 --lr 1e-2 --seed 3)
"$cvene" train "${common[@]}" --grid-positions -2,-1 --layers 2 --beside "$tmp/pg/results.json" --out "$tmp/dg" >/dev/null
"$cvene" train "${common[@]}" --layer 2 --out "$tmp/one" >"$tmp/one.txt" 2>/dev/null
python3 - "$tmp" <<'PY'
import json, re, sys
tmp = sys.argv[1]
g = json.load(open(tmp + "/dg/grid.json"))
assert [(c["layer"], c["position"]) for c in g["cells"]] == [(2, -2), (2, -1)], g["cells"]
m = re.search(r"IIA ([0-9.]+) \(before training ([0-9.]+)\), loss ([0-9.]+)", open(tmp + "/one.txt").read())
iia, before, loss = map(float, m.groups())
c = g["cells"][0]
assert abs(c["iia"] - iia) <= 1e-4 and abs(c["iia_before"] - before) <= 1e-4, (c, iia, before)
assert abs(c["held_out_loss"] - loss) <= 1e-4 * max(1, loss), (c["held_out_loss"], loss)
svg = open(tmp + "/dg/grid.svg").read()
assert svg.count("<svg") == 3 and "probe accuracy" in svg and "IIA" in svg
PY
[ -f "$tmp/dg/L2_P-2/config.json" ] || { echo "no per-cell interventions"; exit 1; }
refuse() { # expected message, then the arguments
  local want=$1; shift
  set +e
  "$cvene" "$@" >/dev/null 2>"$tmp/err"
  local rc=$?
  set -e
  [ "$rc" != 0 ] && grep -q -- "$want" "$tmp/err" || { echo "not refused with \"$want\" (rc $rc): $(cat "$tmp/err")"; exit 1; }
}
refuse "give --type, and --layers instead of --layer" train "${common[@]}" --layer 2 --grid-positions -1 --out "$tmp/x"
refuse "add --grid-positions" train "${common[@]}" --layer 2 --layers 1 --out "$tmp/x"
refuse "position -40 is outside its base" train "${common[@]}" --grid-positions -40 --layers 1 --out "$tmp/x"
refuse "--grid-positions must be" train "${common[@]}" --grid-positions 1,x --out "$tmp/x"
printf 'not json' >"$tmp/bad.json"
refuse "not a \`cvene probe --out\` results.json" train "${common[@]}" --grid-positions -1 --beside "$tmp/bad.json" --out "$tmp/x"
refuse "--positions must be" probe --model "$demo" --data "$data/probe.jsonl" --positions 2,,3
refuse "position -99 is outside" probe --model "$demo" --data "$data/probe.jsonl" --positions -99
echo "grids: 1 passed, 0 failed"
