#!/usr/bin/env bash
# Issue #18's command-line regressions, one case per item (the library's are in
# tests/test_hardening.cpp). Usage: hardening.sh CVENE MODEL_DIR DEMO_DIR REPO_ROOT
set -uo pipefail
cvene=$1 model=$2 demo=$3 repo=$4 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect_fail NAME WANT_SUBSTRING COMMAND...: non-zero exit, message on stderr, no crash (rc < 128)
expect_fail() {
  local name=$1 want=$2; shift 2
  timeout 60 "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" = 0 ] || [ "$rc" -ge 124 ]; then bad "$name: exit $rc (want a clean non-zero exit)"; cat "$tmp/err"; return; fi
  grep -qF -- "$want" "$tmp/err" && ok || { bad "$name: \"$want\" not in: $(cat "$tmp/err")"; }
}

sweep=(sweep --model "$model" --base-ids 5,9,2,7 --source-ids 4,4,6,1 --metric kl)

# 2. list values are checked before use (reads out of bounds, then a segfault, before)
expect_fail item02_positions_beyond_prompt "--positions \"99\": position 99 is outside [0, 4) (the prompt has 4 tokens)" \
  "$cvene" "${sweep[@]}" --positions 99 --out "$tmp/p"
expect_fail item02_positions_huge "position 100000000 is outside [0, 4)" "$cvene" "${sweep[@]}" --positions 100000000 --out "$tmp/p"
expect_fail item02_positions_repeated "lists position 1 twice" "$cvene" "${sweep[@]}" --positions 1,0-2 --out "$tmp/p"
expect_fail item02_token_id "--base-ids entry 1 is 999, outside [0, 320)" \
  "$cvene" sweep --model "$model" --base-ids 5,999 --source-ids 4,4 --out "$tmp/p"
[ -e "$tmp/p.json" ] && bad "item02: a results file was written" || ok

# 5. a named pipe as --config is refused at once (blocked forever before)
mkfifo "$tmp/fifo.json"
echo '{"base": {"input_ids": [[1]]}}' >"$tmp/in.json"
expect_fail item05_config_fifo "fifo.json: cannot open: it is a named pipe" \
  "$cvene" run --model "$model" --config "$tmp/fifo.json" --inputs "$tmp/in.json"

# 8. a damaged results file is refused by --resume, naming the entry
"$cvene" "${sweep[@]}" --out "$tmp/r" --stop-after 1 >/dev/null 2>&1
python3 - "$tmp/r.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["scores"][0][1] = "oops"
json.dump(d, open(sys.argv[1], "w"))
PY
expect_fail item08_resume_corrupt "scores[0][1] = \"oops\" is not a finite f32 number" "$cvene" "${sweep[@]}" --out "$tmp/r" --resume

# 11. every argument is checked before any work: no layer computed, no file written
expect_fail item11_layers "--layers \"1,7\": layer 7 is outside [0, 2) (the model has 2 layers)" \
  "$cvene" "${sweep[@]}" --layers 1,7 --out "$tmp/l"
[ -e "$tmp/l.json" ] && bad "item11: a results file was written before the bad layer was seen" || ok
expect_fail item11_head "--head 9 is outside [0, 4)" "$cvene" "${sweep[@]}" --component head_attention_value_output --head 9 --out "$tmp/l"

# 12. temporary files of a killed writer are cleaned by the next run; a live writer's are kept
sh -c 'exit 0' & dead=$!
wait $dead
touch "$tmp/s.json.tmp.$dead" "$tmp/s.json.tmp.$$" "$tmp/o.safetensors.tmp.$dead"
"$cvene" "${sweep[@]}" --out "$tmp/s" >/dev/null 2>&1 || bad "item12: sweep failed"
[ -e "$tmp/s.json.tmp.$dead" ] && bad "item12: stale sweep temporary left" || ok
[ -e "$tmp/s.json.tmp.$$" ] && ok || bad "item12: a live process's temporary file was removed"
echo '{"representations": [{"layer": 0, "component": "block_output", "intervention_type": "ZeroIntervention"}]}' >"$tmp/z.json"
echo '{"base": {"input_ids": [[1, 2]]}, "unit_locations": {"base": 0}}' >"$tmp/zi.json"
"$cvene" run --model "$model" --config "$tmp/z.json" --inputs "$tmp/zi.json" --out "$tmp/o.safetensors" >/dev/null 2>&1 \
  || bad "item12: run failed"
[ -e "$tmp/o.safetensors.tmp.$dead" ] && bad "item12: stale run --out temporary left" || ok

# 14. options out of range name the option; the help's example runs as printed
expect_fail item14_samples "--samples 1e9 must be an integer in [1, 100000]" \
  "$cvene" sweep --model "$model" --trace --base-ids 5,9,2,7 --subject-positions 1 --samples 1e9 --out "$tmp/x"
expect_fail item14_noise "--noise 1e300 must be a finite f32 value" \
  "$cvene" sweep --model "$model" --trace --base-ids 5,9,2,7 --subject-positions 1 --noise 1e300 --out "$tmp/x"
"$cvene" run --help >"$tmp/help"
python3 - "$tmp/help" "$tmp/hc.json" "$tmp/hi.json" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
cfg = t[t.index('  {"mode"'):t.index("INPUTS.json for it")]
inp = t[t.index('  {"base"'):t.index("  unit_locations: [SOURCE")]
json.loads(cfg), json.loads(inp)
open(sys.argv[2], "w").write(cfg), open(sys.argv[3], "w").write(inp)
PY
[ $? = 0 ] || bad "item14: the help's JSON examples are not valid JSON"
"$cvene" run --model "$demo" --config "$tmp/hc.json" --inputs "$tmp/hi.json" >"$tmp/out" 2>&1 \
  && grep -q "2 interventions" "$tmp/out" && ok || { bad "item14: the help's example does not run: $(cat "$tmp/out")"; }
expect_fail item14_predict_mask "--mask must have the layout of --ids" \
  "$cvene" predict --model "$model" --ids "1,2;3,4,5" --mask "1,1,1;1,1,1"

# 15. no package index address anywhere in the project
if (cd "$repo" && git grep -nI -e "--index-url" -e "--extra-index-url" -- . ':!tests/cli/hardening.sh' >/dev/null 2>&1); then
  bad "item15: a package index address is named in the tree"
else ok; fi

echo "hardening (cli): $pass passed, $fail failed"
[ "$fail" = 0 ]
