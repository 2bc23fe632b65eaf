#!/usr/bin/env bash
# `cvene train` and `cvene probe` end to end on the demo model (issue #13 item 6): a DAS run that
# learns (held-out IIA from 0 to well above chance), files pyvene's loader reads (the JSON checked
# here; tools/check_trained_in_pyvene.py runs them in pyvene), --init resuming from them, a probe
# sweep with its results file, and bad input refused with a message that names it.
# Usage: train_probe.sh CVENE DEMO_DIR
set -uo pipefail
cvene=$1 demo=$2 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect_fail() {
  local name=$1 want=$2; shift 2
  timeout 120 "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" = 0 ] || [ "$rc" -ge 124 ]; then bad "$name: exit $rc (want a clean non-zero exit)"; cat "$tmp/err"; return; fi
  grep -qF -- "$want" "$tmp/err" && ok || bad "$name: \"$want\" not in: $(cat "$tmp/err")"
}
data=$demo/das_colour

# DAS: LowRank rank 8 at block_output of layer 2, 3 epochs; the colour moves with the subspace
timeout 300 "$cvene" train --model "$demo" --data "$data/train.jsonl" --eval "$data/eval.jsonl" \
  --type LowRankRotatedSpace --layer 2 --rank 8 --epochs 3 --lr 1e-2 --out "$tmp/das" >"$tmp/train.out" 2>"$tmp/train.err"
[ $? = 0 ] && ok || { bad "train: exit non-zero"; cat "$tmp/train.err"; }
line=$(grep '^held out' "$tmp/train.out")
after=$(sed 's/.*IIA \([0-9.]*\) (before training \([0-9.]*\)).*/\1/' <<<"$line")
before=$(sed 's/.*IIA \([0-9.]*\) (before training \([0-9.]*\)).*/\2/' <<<"$line")
# 12 colours: chance is 1/12; untrained, the random subspace carries nothing
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if a > 0.3 and b < 0.1 else 1)" \
  "$after" "$before" && ok || bad "train: IIA $before -> $after (want < 0.1 -> > 0.3): $line"
grep -q '^step 96/96  mean loss' "$tmp/train.err" && ok || bad "train: no progress lines: $(head -3 "$tmp/train.err")"
# the units sit near the end of each prompt: live rows run a small part of them
grep -qE '^live rows: each step ran [0-9]+% of the token rows' "$tmp/train.out" && ok || bad "train: no live-rows line: $(cat "$tmp/train.out")"
key=layer_2_comp_block_output_unit_pos_nunit_1#0
python3 - "$tmp/das/config.json" "$key" <<'PY' && ok || bad "train: config.json is not pyvene's"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["sorted_keys"] == [sys.argv[2]], c
assert c["intervention_types"] == ["<class 'pyvene.models.interventions.LowRankRotatedSpaceIntervention'>"], c
assert c["representations"][0][:5] == [2, "block_output", "pos", 1, 8], c
assert c["intervention_dimensions"] == [96] and c["intervention_constant_sources"] == [False], c
PY
[ -s "$tmp/das/intkey_$key.safetensors" ] && ok || bad "train: no intkey_$key.safetensors"
# resuming from the saved weights with no steps gives the trained IIA again
timeout 300 "$cvene" train --model "$demo" --data "$data/train.jsonl" --eval "$data/eval.jsonl" --type LowRankRotatedSpace \
  --layer 2 --rank 8 --steps 1 --lr 1e-12 --init "$tmp/das/intkey_$key.safetensors" --out "$tmp/das2" >"$tmp/o2" 2>&1
grep -qF "(before training $after)" "$tmp/o2" && ok || bad "train --init: before-training IIA is not $after: $(grep held "$tmp/o2")"

# PCARotatedSpace without --init: its basis fitted to the training examples' activations (the
# basis itself is checked against numpy in test_pca_data); 8 PCA dims carry the colour
timeout 300 "$cvene" train --model "$demo" --data "$data/train.jsonl" --eval "$data/eval.jsonl" \
  --type PCARotatedSpace --layer 2 --rank 8 --steps 1 --out "$tmp/pca" >"$tmp/pca.out" 2>"$tmp/pca.err"
[ $? = 0 ] && ok || { bad "pca: exit non-zero"; cat "$tmp/pca.err"; }
grep -q "PCA basis fitted to the base activations of the 512 training examples" "$tmp/pca.out" && ok ||
  bad "pca: no fit line: $(cat "$tmp/pca.out")"
iia=$(sed -n 's/.*IIA \([0-9.]*\) (before.*/\1/p' "$tmp/pca.out")
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0.3 else 1)" "${iia:-0}" && ok || bad "pca: IIA ${iia:-none} (want > 0.3)"

# bad input
expect_fail train_not_trainable "VanillaIntervention is not trainable" \
  "$cvene" train --model "$demo" --data "$data/train.jsonl" --type Vanilla --layer 2 --out "$tmp/x"
expect_fail train_rank_too_big "low_rank_dimension 97 is outside [1, 96]" \
  "$cvene" train --model "$demo" --data "$data/train.jsonl" --type LowRankRotatedSpace --layer 2 --rank 97 --out "$tmp/x"
printf '{"base": "Today, the favourite colour of Judge Trular is", "source": [1, 2], "base_pos": -2, "source_pos": 0, "label": " blue"}\n{"base": [1, 2, 3], "source": [1, 2, 3], "base_pos": 1, "source_pos": 1, "label": 99999}\n' >"$tmp/bad.jsonl"
expect_fail train_label_out_of_vocab "label 99999 is outside the vocabulary" \
  "$cvene" train --model "$demo" --data "$tmp/bad.jsonl" --eval-fraction 0 --type LowRankRotatedSpace --layer 2 --rank 2 \
  --out "$tmp/x"
printf '{"base": [1, 2, 3], "source": [1, 2, 3], "base_pos": 1, "source_pos": 1, "label": " two tokens here"}\n' >"$tmp/bad2.jsonl"
expect_fail train_label_many_tokens "bad2.jsonl:1" \
  "$cvene" train --model "$demo" --data "$tmp/bad2.jsonl" --type LowRankRotatedSpace --layer 2 --rank 2 --out "$tmp/x"
[ -e "$tmp/x" ] && bad "train: a failed run wrote $tmp/x" || ok

# probes: two layers, a results file and one probe file per site
timeout 300 "$cvene" probe --model "$demo" --data "$data/probe.jsonl" --layers 0,3 --steps 100 --out "$tmp/probe" \
  >"$tmp/probe.out" 2>"$tmp/probe.err"
[ $? = 0 ] && ok || { bad "probe: exit non-zero"; cat "$tmp/probe.err"; }
python3 - "$tmp/probe/results.json" <<'PY' && ok || bad "probe: results.json: $(cat "$tmp/probe/results.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert [(s["component"], s["layer"]) for s in r["sites"]] == [("block_output", 0), ("block_output", 3)], r
assert len(r["classes"]) == 12 and r["n_train"] == 300 and r["n_held_out"] == 100, r
# the colour is readable at the family name far above the majority class
assert all(s["held_out_accuracy"] > 3 * r["majority_held_out_accuracy"] for s in r["sites"]), r
PY
[ -s "$tmp/probe/probe_block_output_3.safetensors" ] && ok || bad "probe: no probe_block_output_3.safetensors"
expect_fail probe_bad_component "--component \"block_outptu\" is not a component" \
  "$cvene" probe --model "$demo" --data "$data/probe.jsonl" --component block_outptu
expect_fail probe_bad_layer "layer 8 is outside [0, 8)" "$cvene" probe --model "$demo" --data "$data/probe.jsonl" --layers 8
printf '{"text": "a b c", "pos": 7, "label": "x"}\n' >"$tmp/p1.jsonl"
expect_fail probe_bad_pos "p1.jsonl:1: \"pos\" must be" "$cvene" probe --model "$demo" --data "$tmp/p1.jsonl"
printf '{"ids": [1, 2], "label": "x"}\n{"ids": [3, 4], "label": "x"}\n{"ids": [5, 6], "label": "x"}\n' >"$tmp/p2.jsonl"
expect_fail probe_one_class "a probe needs at least 2 classes" "$cvene" probe --model "$demo" --data "$tmp/p2.jsonl"
printf '{"ids": [1, 2], "labl": "x"}\n' >"$tmp/p3.jsonl"
expect_fail probe_unknown_key "unknown key \"labl\"" "$cvene" probe --model "$demo" --data "$tmp/p3.jsonl"

echo "train_probe: $pass passed, $fail failed"
[ "$fail" = 0 ]
