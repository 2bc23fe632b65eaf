#!/usr/bin/env bash
# `cvene sweep --data PAIRS.jsonl`: the mean and every example's scores equal single-pair sweeps at
# each line's own positions (1e-5 of the largest score: the same sweep, f32 sums printed with 9
# digits); roles from "positions" (negative from the end), "subject" text, first / last; lines of
# different lengths; bad lines refused naming the line, with nothing written.
set -euo pipefail
cvene=$1 fixtures=$2 demo=$3 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=$fixtures/gpt2/small/model
cat >"$tmp/pairs.jsonl" <<'JSONL'
{"base_ids": [5, 9, 2, 7, 1, 3], "source_ids": [4, 4, 6, 1, 9, 2], "token_id": 3, "token_b_id": 8, "positions": {"key": 2}}

{"base_ids": [15, 19, 12, 17, 11, 13, 40, 41], "source_ids": [14, 14, 16, 11, 19, 12, 50, 51], "token_id": 7, "token_b_id": 2, "positions": {"key": -3}}
{"base_ids": [25, 29, 22, 27, 21], "source_ids": [24, 24, 26, 21, 29], "token_id": 30, "token_b_id": 31, "positions": {"key": 0}}
JSONL
"$cvene" sweep --model "$model" --data "$tmp/pairs.jsonl" --metric logit-diff --out "$tmp/ds" >"$tmp/out.txt"
grep -q "dataset sweep: 3 examples x 2 layers x 2 columns" "$tmp/out.txt" || { cat "$tmp/out.txt"; exit 1; }
# each line alone at its positions (key, last)
i=0
for spec in "5,9,2,7,1,3 4,4,6,1,9,2 3 8 2,5" "15,19,12,17,11,13,40,41 14,14,16,11,19,12,50,51 7 2 5,7" \
            "25,29,22,27,21 24,24,26,21,29 30 31 0,4"; do
  read -r b s t tb p <<<"$spec"
  "$cvene" sweep --model "$model" --base-ids "$b" --source-ids "$s" --token-id "$t" --token-b-id "$tb" \
    --metric logit-diff --positions "$p" --out "$tmp/one$i" >/dev/null
  i=$((i + 1))
done
python3 - "$tmp" <<'PY'
import json, sys
tmp = sys.argv[1]
d = json.load(open(tmp + "/ds.json"))
assert d["columns"] == ["key", "last"] and d["n_examples"] == 3, d["columns"]
ones = [json.load(open(f"{tmp}/one{i}.json"))["scores"] for i in range(3)]
mx = max(1.0, max(abs(v) for o in ones for row in o for v in row))
for i, o in enumerate(ones):
    for l in range(2):
        for c in range(2):
            assert abs(d["examples"][i]["scores"][l][c] - o[l][c]) <= 1e-5 * mx, (i, l, c)
            m = sum(ones[k][l][c] for k in range(3)) / 3
            assert abs(d["scores"][l][c] - m) <= 1e-5 * mx, (l, c, d["scores"][l][c], m)
assert [e["line"] for e in d["examples"]] == [1, 3, 4]
assert [e["positions"] for e in d["examples"]] == [[2, 5], [5, 7], [0, 4]]
rows = open(tmp + "/ds.csv").read().splitlines()
assert rows[0] == "example,line,layer,column,position,score" and len(rows) == 1 + 4 * 2 * 2, len(rows)
PY
# text lines and a subject on the demo model (roles from the subject, every head)
cat >"$tmp/text.jsonl" <<'JSONL'
{"base": "Today, Judge Trular's favourite colour is", "source": "Today, Sister Zenul's favourite colour is", "token": " red", "token_b": " blue", "subject": " Judge Trular"}
JSONL
"$cvene" sweep --model "$demo" --data "$tmp/text.jsonl" --metric logit-diff --component head_attention_value_output \
  --head all --out "$tmp/txt" >/dev/null
python3 -c "
import json; d = json.load(open('$tmp/txt.json'))
assert d['columns'][:3] == ['h0 subject first', 'h0 subject last', 'h0 last'], d['columns']
assert d['examples'][0]['positions'] == [2, 3, 7], d['examples'][0]['positions']"
refuse() { # expected message, a line of the dataset, then options
  local want=$1 line=$2; shift 2
  printf '%s\n' "$line" >"$tmp/bad.jsonl"
  set +e
  "$cvene" sweep --model "$model" --data "$tmp/bad.jsonl" --metric logit-diff --out "$tmp/bad" "$@" >/dev/null 2>"$tmp/err"
  local rc=$?
  set -e
  [ "$rc" != 0 ] && grep -q -- "$want" "$tmp/err" || { echo "not refused with \"$want\" (rc $rc): $(cat "$tmp/err")"; exit 1; }
  [ ! -e "$tmp/bad.json" ] || { echo "a refused sweep wrote a file"; exit 1; }
}
ok='{"base_ids": [1, 2, 3], "source_ids": [4, 5, 6], "token_id": 3, "token_b_id": 4, "positions": {"key": 1}}'
refuse "line 1 has no role \"verb\"" "$ok" --roles verb
refuse "line 1: the base has 3 tokens and the source 2" '{"base_ids": [1, 2, 3], "source_ids": [4, 5], "token_id": 3, "token_b_id": 4}'
refuse "line 1: not a JSON object" '{"base_ids": [1, 2'
refuse "line 1: unknown key \"bsae\"" '{"bsae": [1], "source_ids": [4], "token_id": 3}'
refuse "line 1: no metric token b" '{"base_ids": [1, 2, 3], "source_ids": [4, 5, 6], "token_id": 3}'
refuse "line 1: positions.\"key\" must be an integer in \[-3, 3)" '{"base_ids": [1, 2, 3], "source_ids": [4, 5, 6], "token_id": 3, "token_b_id": 4, "positions": {"key": 3}}'
refuse "has no examples" ''
refuse "line 1: token_id is not a token id" '{"base_ids": [1, 2, 3], "source_ids": [4, 5, 6], "token_id": 99999, "token_b_id": 4}'
refuse "not with --trace" "$ok" --trace
refuse "or --together" "$ok" --together
long=$(printf 'r%.0s' $(seq 300))
refuse "longer than 256 characters" "{\"base_ids\": [1, 2, 3], \"source_ids\": [4, 5, 6], \"token_id\": 3, \"token_b_id\": 4, \"positions\": {\"$long\": 1}}"
refuse "lines of different lengths" '{"base_ids": [1, 2, 3], "source_ids": [4, 5, 6], "token_id": 3, "token_b_id": 4}
{"base_ids": [1, 2], "source_ids": [4, 5], "token_id": 3, "token_b_id": 4}'
echo "sweep --data: 1 passed, 0 failed"
