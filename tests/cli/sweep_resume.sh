#!/usr/bin/env bash
# An interrupted sweep resumes without recomputing finished layers and ends with
# exactly the scores of an uninterrupted run; no temporary file is left behind.
set -euo pipefail
cvene=$1 model=$2 tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(sweep --model "$model" --base-ids 5,9,2,7,1,3,8 --source-ids 4,4,6,1,9,2,8 --metric kl --batch 3)
"$cvene" "${args[@]}" --out "$tmp/full" >/dev/null
set +e
"$cvene" "${args[@]}" --out "$tmp/part" --stop-after 1 >/dev/null 2>"$tmp/err"
rc=$?
set -e
[ "$rc" = 130 ] || { echo "interrupted run exited $rc, want 130"; exit 1; }
grep -q -- "--resume" "$tmp/err" || { echo "no resume hint: $(cat "$tmp/err")"; exit 1; }
python3 - "$tmp/part.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["complete"] is False, d["complete"]
assert sum(r is not None for r in d["scores"]) == 1, d["scores"]
PY
out=$("$cvene" "${args[@]}" --out "$tmp/part" --resume 2>&1)
echo "$out" | grep -q "resuming: 1 of 2 layers already done" || { echo "resume did not reuse the row: $out"; exit 1; }
# the resumed run computed one layer: 2 cached runs + ceil(7/3) batches = 5 passes
echo "$out" | grep -q "2 of 2 layers x 7 positions, 5 forward passes" || { echo "unexpected: $out"; exit 1; }
cmp "$tmp/full.csv" "$tmp/part.csv" || { echo "resumed scores differ from the uninterrupted run"; exit 1; }
ls "$tmp" | grep -q tmp && { echo "temporary file left behind"; ls "$tmp"; exit 1; }
# a resume against a different sweep is refused
set +e
"$cvene" "${args[@]/kl/prob}" --out "$tmp/part" --resume >/dev/null 2>"$tmp/err2"
rc=$?
set -e
[ "$rc" != 0 ] && grep -q "different sweep" "$tmp/err2" || { echo "mismatched resume not refused"; exit 1; }
echo "sweep resume: 1 passed, 0 failed"
