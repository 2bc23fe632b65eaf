#!/usr/bin/env bash
# cvene generate against the references of tests/fixtures/generate (transformers' generate and
# pyvene's IntervenableModel.generate): a left-padded batch given as --ids equals generate's ids;
# a steering config (--config, --intervene-on-prompt, no unit_locations) equals pyvene's; the
# demo model streams text for one prompt; bad options are refused naming them.
set -euo pipefail
cvene=$1 fixtures=$2 demo=$3 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$fixtures/manifest.json" "$tmp" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
case = {c["name"]: c for c in m["cases"]}
for name in ("gpt2_greedy_b3_noeos", "gpt2_pyvene_steer_every_call"):
    c = case[name]
    rows = [[t for t, k in zip(r, mk) if k] for r, mk in zip(c["input_ids"], c["attention_mask"])]
    open(f"{sys.argv[2]}/{name}.ids", "w").write(";".join(",".join(map(str, r)) for r in rows))
    open(f"{sys.argv[2]}/{name}.want", "w").write(json.dumps([r[len(c["input_ids"][0]):] for r in c["output_ids"]]))
    if c["kind"] == "pyvene":
        json.dump(c["config"], open(f"{sys.argv[2]}/{name}.config.json", "w"))
PY
check() { # name, extra args...
  local name=$1; shift
  "$cvene" generate --model "$fixtures/gpt2/model" --ids "$(cat "$tmp/$name.ids")" --pad 0 --no-eos --json "$@" \
    >"$tmp/$name.out"
  python3 - "$tmp/$name.out" "$tmp/$name.want" "$name" <<'PY'
import json, sys
got, want = json.load(open(sys.argv[1]))["ids"], json.load(open(sys.argv[2]))
assert got == want, f"{sys.argv[3]}: cvene {got} != reference {want}"
PY
}
check gpt2_greedy_b3_noeos --max-new-tokens 32
check gpt2_pyvene_steer_every_call --max-new-tokens 16 --config "$tmp/gpt2_pyvene_steer_every_call.config.json" \
  --intervene-on-prompt
# --out: ids, each step's logits and every collected tensor (pyvene's Collect case: 7 calls of (3, 1, 32))
python3 - "$fixtures/manifest.json" "$tmp" <<'PY'
import json, sys
c = {c["name"]: c for c in json.load(open(sys.argv[1]))["cases"]}["gpt2_pyvene_collect_block_output_steps"]
json.dump(c["config"], open(f"{sys.argv[2]}/collect.json", "w"))
rows = [[t for t, k in zip(r, mk) if k] for r, mk in zip(c["input_ids"], c["attention_mask"])]
open(f"{sys.argv[2]}/collect.ids", "w").write(";".join(",".join(map(str, r)) for r in rows))
PY
"$cvene" generate --model "$fixtures/gpt2/model" --ids "$(cat "$tmp/collect.ids")" --pad 0 --no-eos --quiet \
  --max-new-tokens 8 --config "$tmp/collect.json" --out "$tmp/gen.safetensors" >/dev/null 2>&1
python3 - "$tmp/gen.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
head = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
assert head["ids"]["shape"] == [3, 17] and head["ids"]["dtype"] == "I32", head["ids"]
assert head["logits"]["shape"] == [3, 8, 101], head["logits"]
got = sorted(k for k in head if k.startswith("collected."))
assert got == [f"collected.{k}" for k in range(7)], got
assert all(head[k]["shape"] == [3, 1, 32] for k in got)
PY
# one prompt streams its text; the demo model's tokenizer; the timing line on stderr
out=$("$cvene" generate --model "$demo" --prompt "Today, Judge Triklol's favourite colour is" --max-new-tokens 4 2>"$tmp/err")
case "$out" in "Today, Judge Triklol's favourite colour is "*) ;; *) echo "streamed: $out"; exit 1 ;; esac
grep -q "1 prompt x 4 new tokens" "$tmp/err" || { echo "no timing line: $(cat "$tmp/err")"; exit 1; }
# the same seed samples the same tokens
a=$("$cvene" generate --model "$demo" --prompt "In 1850," --sample --seed 5 --top-k 50 --json --max-new-tokens 8)
b=$("$cvene" generate --model "$demo" --prompt "In 1850," --sample --seed 5 --top-k 50 --json --max-new-tokens 8)
[ "$(echo "$a" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ids"])')" = \
  "$(echo "$b" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ids"])')" ] || { echo "sampling differs"; exit 1; }
refused() { # expected rc, message, args...
  local rc_want=$1 msg=$2; shift 2
  set +e
  "$cvene" generate --model "$demo" "$@" >/dev/null 2>"$tmp/err"; local rc=$?
  set -e
  [ "$rc" = "$rc_want" ] && grep -qF -- "$msg" "$tmp/err" || { echo "$* : rc $rc, $(cat "$tmp/err")"; exit 1; }
}
refused 1 "top_p = 1.5 is outside (0, 1]" --ids 5,6 --sample --top-p 1.5
refused 2 '--calls "5-2"' --ids 5,6 --calls 5-2
refused 1 "n_positions" --ids 5,6,7 --max-new-tokens 40
refused 2 "one of --prompt, --ids or --inputs" --max-new-tokens 3
echo "cli generate: 1 passed, 0 failed"
