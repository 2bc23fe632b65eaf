#!/usr/bin/env bash
# cvene bench: every mode on the fixture models writes its results as JSON of schema cvene-bench/1
# (the numbers are timings, so only their presence, units and signs are checked), prints its
# table, and refuses bad input naming the option.
#   bench.sh CVENE FIXTURES DEVICE
# DEVICE cpu: the CPU backend; cuda: the binary is built on the emulated CUDA backend
# (cvene_cli_emu), so the shapes are tiny and every mode, kernels included, runs there.
set -euo pipefail
cvene=$1 fixtures=$2 device=$3 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
small=$fixtures/gpt2/small/model
fail() { echo "FAIL: $*" >&2; exit 1; }
common=(--device "$device" --threads 1 --warmup 1 --repeat 2)

# check FILE MODE MEASUREMENTS UNIT DERIVED_KEYS PROJECTION_KEYS: the document's schema
check() {
  python3 - "$@" <<'PY'
import json, sys
path, mode, n_meas, unit, derived, projection = sys.argv[1:7]
d = json.load(open(path))
def need(cond, what):
    if not cond:
        sys.exit(f"{path}: {what}")
need(d["schema"] == "cvene-bench/1" and d["mode"] == mode, f"schema/mode {d.get('schema')}/{d.get('mode')}")
dev = d["device"]
need(dev["kind"] in ("cpu", "cuda") and dev["name"] and dev["dtype"] == "f32", f"device {dev}")
need(isinstance(dev["threads"], (int, float)) and (dev["threads"] >= 1) == (dev["kind"] == "cpu"), f"threads {dev}")
mc = d["machine"]
need(mc["cpus"] >= 1 and len(mc["load_avg_before"]) == 3 and len(mc["load_avg_after"]) == 3, f"machine {mc}")
need(d["timing"]["repeat"] >= 1 and d["timing"]["warmup"] >= 0, "timing")
ms = d["measurements"]
need(len(ms) >= int(n_meas), f"{len(ms)} measurements, want >= {n_meas}")
for m in ms:
    s = m["seconds"]
    need(m["name"] and 0 < s["min"] <= s["median"] <= s["max"], f"seconds of {m['name']}: {s}")
    need(s["spread_pct"] >= 0 and len(s["samples"]) in (0, d["timing"]["repeat"], 1), f"samples of {m['name']}")
    if "unit" in m:
        need(m["rate"] > 0 and m["work"] > 0 and abs(m["rate"] - m["work"] / s["median"]) <= 1e-6 * m["rate"],
             f"rate of {m['name']}")
need(any(m.get("unit") == unit for m in ms), f"no measurement in {unit}")
for k in filter(None, derived.split(",")):
    need(k in d["derived"], f"derived lacks {k}: {list(d['derived'])}")
for k in filter(None, projection.split(",")):
    need(k in d["projection"], f"projection lacks {k}: {list(d['projection'])}")
if "model" in d:
    need(d["model"]["n_layer"] >= 1 and d["model"]["n_params"] > 0, "model")
PY
}

# forward: all logits, the last position's, none (and kept on the device on cuda)
"$cvene" bench forward --model "$small" --batch 2 --seq 4 "${common[@]}" --json "$tmp/f.json" >"$tmp/f.txt"
check "$tmp/f.json" forward 3 tokens/s batch,seq hours_per_billion_tokens
grep -q "forward, no logits" "$tmp/f.txt" || fail "forward: no table"
[ "$device" = cpu ] || python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
assert any(m['name'] == 'forward, logits kept on the device' for m in d['measurements'])" "$tmp/f.json"
# --json - : the document alone on stdout
"$cvene" bench forward --model "$small" --batch 1 --seq 2 "${common[@]}" --json - >"$tmp/f2.json"
check "$tmp/f2.json" forward 3 tokens/s batch ""

# run: a pyvene case (Subtraction, Zero on the attention weights, Collect) against plain forwards
case=$fixtures/pyvene/cases/111_mixed_types_b1_long
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d.pop('model'); json.dump(d, open(sys.argv[2], 'w'))" \
  "$case/inputs.json" "$tmp/in.json"
"$cvene" bench run --model "$fixtures/gpt2/inner_erf/model" --config "$case/config.json" --inputs "$tmp/in.json" \
  "${common[@]}" --json "$tmp/r.json" >"$tmp/r.txt"
check "$tmp/r.json" run 2 requests/s \
  interventions,forward_passes,overhead_us,overhead_pct,overhead_us_per_intervention,per_intervention_us ""
python3 - "$tmp/r.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["derived"]
per = d["per_intervention_us"]
assert d["interventions"] == 3 and len(per) == 3, per
assert [p["intervention"].split(":")[1].split()[0] for p in per] == \
    ["SubtractionIntervention", "ZeroIntervention", "CollectIntervention"], per
assert all(p["median_us"] > 0 for p in per), per
PY

# sweep: sampled layers, the naive loop, the projection (and --full beside it)
"$cvene" bench sweep --model "$small" --seq 3 --naive-sites 1 --full "${common[@]}" --json "$tmp/s.json" >"$tmp/s.txt"
check "$tmp/s.json" sweep 4 sites/s layers,positions,fast_sites_per_s,naive_sites_per_s,speedup_fast_over_naive \
  full_sweep_seconds,full_sweep_on_ranks,full_sweep_measured_seconds,projection_error_pct,naive_full_sweep_seconds
python3 - "$tmp/s.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["projection"]
r = p["full_sweep_on_ranks"]
assert [x["ranks"] for x in r] == [1, 2, 4, 8], r
assert all(a["seconds"] >= b["seconds"] for a, b in zip(r, r[1:])), r   # more ranks never take longer
assert abs(r[0]["seconds"] - p["full_sweep_seconds"]) < 1e-9, r
PY
"$cvene" bench sweep --model "$small" --base-ids 5,6,7 --source-ids 8,9,10 --layers 1 --naive-sites 0 --ranks 3 \
  "${common[@]}" --json "$tmp/s2.json" >/dev/null
check "$tmp/s2.json" sweep 2 sites/s layers,positions full_sweep_seconds

# generate: greedy decoding with and without a steering config (Addition of a constant source)
cat >"$tmp/steer.json" <<'EOF'
{"representations": [{"layer": 1, "component": "block_output", "intervention_type": "AdditionIntervention",
  "source_representation": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
  0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
  0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
  0.5, 0.5, 0.5, 0.5]}]}
EOF
"$cvene" bench generate --model "$small" --ids 5,6,7 --max-new-tokens 3 --batch 2 --config "$tmp/steer.json" \
  --intervene-on-prompt "${common[@]}" --json "$tmp/g.json" >/dev/null
check "$tmp/g.json" generate 2 tokens/s ms_per_step,intervention_overhead_pct ""

# train: a rank-1 LowRankRotatedSpace on 4 ids-only examples
for i in 1 2 3 4; do
  echo "{\"base\": [5, 6, $i], \"source\": [7, 8, $((i + 10))], \"base_pos\": \"last\", \"source_pos\": \"last\", \"label\": $((i + 20))}"
done >"$tmp/train.jsonl"
"$cvene" bench train --model "$small" --data "$tmp/train.jsonl" --type LowRankRotatedSpace --layer 0 --batch 2 \
  --steps 2 "${common[@]}" --json "$tmp/t.json" >/dev/null
check "$tmp/t.json" train 1 steps/s seconds_per_step,examples_per_s,cache_build_seconds \
  steps_per_epoch,epoch_seconds,training_run_seconds,das_grid_cells,das_grid_on_ranks

# kernels: the CUDA backend's; refused on the CPU naming --device
if [ "$device" = cuda ]; then
  "$cvene" bench kernels --model "$small" --batch 2 --seq 2 --rank 2 "${common[@]}" --json "$tmp/k.json" >/dev/null
  check "$tmp/k.json" kernels 6 GB/s B,T,C,k ""
  python3 -c "import json,sys; ms=json.load(open(sys.argv[1]))['measurements']; \
assert all(m['pct_of_copy'] > 0 and m['bytes'] > 0 for m in ms), ms" "$tmp/k.json"
else
  if "$cvene" bench kernels --model "$small" --device cpu >"$tmp/o" 2>"$tmp/e"; then fail "kernels ran on the CPU"; fi
  grep -q -- "--device cuda" "$tmp/e" || fail "kernels on the CPU: $(cat "$tmp/e")"
fi

# bad input: each refused with a non-zero status and a message naming what is wrong
expect_fail() { # name, expected text, command...
  local name=$1 want=$2; shift 2
  if "$@" >"$tmp/o" 2>"$tmp/e"; then fail "$name: succeeded"; fi
  grep -qF -- "$want" "$tmp/e" || fail "$name: expected \"$want\" in: $(cat "$tmp/e")"
  echo "ok $name"
}
expect_fail seq_beyond_context "--seq 999 is beyond the model's context (n_positions 32)" \
  "$cvene" bench forward --model "$small" --seq 999 --device "$device"
expect_fail config_cannot_run "the config cannot run on this model: representations[2].layer = 2 is out of range" \
  "$cvene" bench run --model "$small" --config "$case/config.json" --inputs "$tmp/in.json" --device "$device"
expect_fail other_modes_option "--config is not an option of this mode" \
  "$cvene" bench forward --model "$small" --config x.json --device "$device"
expect_fail unknown_mode "unknown mode \"warp\"" "$cvene" bench warp --model "$small"
expect_fail bad_repeat "--repeat must be an integer in [1, 100000], got \"0\"" \
  "$cvene" bench forward --model "$small" --repeat 0
expect_fail sweep_lengths "the base has 2 tokens and the source 3" \
  "$cvene" bench sweep --model "$small" --base-ids 1,2 --source-ids 1,2,3 --device "$device"
expect_fail generate_context "beyond the model's context (n_positions 32)" \
  "$cvene" bench generate --model "$small" --ids 1,2 --max-new-tokens 31 --device "$device"
expect_fail train_needs "--data and one of --config or --type" "$cvene" bench train --model "$small"
expect_fail json_unwritable "--json $tmp/no/such/dir/x.json: cannot write" \
  "$cvene" bench forward --model "$small" --seq 2 --repeat 1 --json "$tmp/no/such/dir/x.json" --device "$device"
"$cvene" bench --help >"$tmp/help"; grep -q "cvene bench MODE" "$tmp/help" || fail "no help"
echo "bench.sh ($device): all checks passed"
