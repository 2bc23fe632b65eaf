#!/usr/bin/env bash
# `mpirun -np N cvene sweep`: CPU ranks over MPI (issue #15). Checks, each against the single process
# (no mpirun) as the reference:
#  - a one-pair sweep on 1, 2 and 3 ranks writes the same JSON and CSV bit for bit (layers split by
#    cost; each rank's layers come from the same cached base and source runs);
#  - a dataset sweep (--data) on 2 and 3 ranks: the same mean and per-example rows bit for bit;
#  - a DAS grid (cvene train --grid-positions) on 3 ranks: every cell's files and grid.json equal;
#  - a probe grid (cvene probe --positions) on 3 ranks: results.json and every probe file equal;
#  - ranks given different commands all fail naming the rank that differs;
#  - killing one rank mid-sweep ends every rank with a non-zero status and a message, leaves a valid
#    results file with the finished rows, and --resume on a different number of ranks finishes with
#    exactly the uninterrupted scores.
# Usage: ranks.sh CVENE DEMO_MODEL_DIR
set -euo pipefail
cvene=$1 demo=$2 tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
command -v mpirun >/dev/null || { echo "mpirun not found (apt-get install openmpi-bin)"; exit 1; }
# CI runs as root; OpenMPI refuses that unless told. --oversubscribe: more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
# shared-memory transport only (no network probing in a container)
mpi=(mpirun --oversubscribe --mca btl self,vader --mca btl_vader_single_copy_mechanism none)
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); fi; }

args=(sweep --model "$demo" --base-ids 5,9,2,7,1,3,8,11,4 --source-ids 4,4,6,1,9,2,8,11,4 --metric kl --batch 3)
"$cvene" "${args[@]}" --out "$tmp/one" >/dev/null
for n in 1 2 3; do
  "${mpi[@]}" -np "$n" "$cvene" "${args[@]}" --out "$tmp/r$n" >"$tmp/r$n.out"
  check "one-pair sweep on $n ranks equals one process" "cmp -s $tmp/one.json $tmp/r$n.json && cmp -s $tmp/one.csv $tmp/r$n.csv"
done
check "one report line from rank 0" "[ \$(grep -c 'patching sweep: 8 of 8 layers' $tmp/r3.out) = 1 ]"

# every head, every position (a wider row)
hargs=(sweep --model "$demo" --base-ids 5,9,2,7,1,3 --source-ids 4,4,6,1,9,2 --metric prob --token-id 3
       --component head_attention_value_output --head all)
"$cvene" "${hargs[@]}" --out "$tmp/h1" >/dev/null
"${mpi[@]}" -np 3 "$cvene" "${hargs[@]}" --out "$tmp/h3" >/dev/null
check "head sweep on 3 ranks equals one process" "cmp -s $tmp/h1.json $tmp/h3.json"

# a dataset sweep: examples split among the ranks
cat >"$tmp/pairs.jsonl" <<'JSONL'
{"base_ids": [5, 9, 2, 7, 1, 3], "source_ids": [4, 4, 6, 1, 9, 2], "token_id": 3, "token_b_id": 8, "positions": {"key": 2}}
{"base_ids": [15, 19, 12, 17, 11, 13, 40, 41], "source_ids": [14, 14, 16, 11, 19, 12, 50, 51], "token_id": 7, "token_b_id": 2, "positions": {"key": -3}}
{"base_ids": [25, 29, 22, 27, 21], "source_ids": [24, 24, 26, 21, 29], "token_id": 30, "token_b_id": 31, "positions": {"key": 0}}
{"base_ids": [35, 39, 32, 37, 31, 33, 30], "source_ids": [34, 34, 36, 31, 39, 32, 30], "token_id": 5, "token_b_id": 6, "positions": {"key": 1}}
{"base_ids": [45, 49, 42, 47], "source_ids": [44, 44, 46, 41], "token_id": 9, "token_b_id": 10, "positions": {"key": 3}}
JSONL
dargs=(sweep --model "$demo" --data "$tmp/pairs.jsonl" --metric logit-diff --roles key,last)
"$cvene" "${dargs[@]}" --out "$tmp/d1" >/dev/null
for n in 2 3; do
  "${mpi[@]}" -np "$n" "$cvene" "${dargs[@]}" --out "$tmp/d$n" >/dev/null
  check "dataset sweep on $n ranks equals one process" "cmp -s $tmp/d1.json $tmp/d$n.json && cmp -s $tmp/d1.csv $tmp/d$n.csv"
done

# a DAS grid: cells split among the ranks; every cell's files and results reach rank 0's OUT/
data=$demo/localize_binary
gargs=(train --model "$demo" --data "$data/train.jsonl" --eval "$data/eval.jsonl" --type LowRankRotatedSpace --rank 1
       --epochs 1 --lr 1e-2 --seed 3 --grid-positions -2,-1 --layers 0,2,5)
"$cvene" "${gargs[@]}" --out "$tmp/g1" >/dev/null
"${mpi[@]}" -np 3 "$cvene" "${gargs[@]}" --out "$tmp/g3" >/dev/null
check "DAS grid on 3 ranks: every cell's files equal one process's" \
  "diff -r -q -x grid.json -x grid.svg $tmp/g1 $tmp/g3 >/dev/null && [ \$(ls -d $tmp/g3/L* | wc -l) = 6 ]"
check "DAS grid on 3 ranks: grid.json equal but for the time taken" \
  "python3 -c \"import json; a, b = (json.load(open(f)) for f in ('$tmp/g1/grid.json', '$tmp/g3/grid.json')); a.pop('seconds'); b.pop('seconds'); assert a == b\""
check "DAS grid on 3 ranks: no temporary directory left" "! ls \${TMPDIR:-/tmp} | grep -q '^cvene-cell-'"
# data-parallel training: 4 shards per batch, split among the ranks; the same weights as one process
# with the same shards, bit for bit
same_report() { # the held-out line and the first and last losses, once
  [ "$(grep '^held out' "$1")" = "$(grep '^held out' "$2")" ] && [ "$(grep -c '^held out' "$2")" = 1 ] &&
    [ "$(grep -o 'loss [0-9.]* -> [0-9.]*' "$1")" = "$(grep -o 'loss [0-9.]* -> [0-9.]*' "$2")" ]
}
targs=(train --model "$demo" --data "$data/train.jsonl" --eval "$data/eval.jsonl" --type LowRankRotatedSpace --layer 1
       --rank 2 --epochs 1 --batch 8 --lr 1e-2 --seed 3 --shards 4)
"$cvene" "${targs[@]}" --out "$tmp/t1" >"$tmp/t1.out"
for n in 2 3; do
  "${mpi[@]}" -np "$n" "$cvene" "${targs[@]}" --out "$tmp/t$n" >"$tmp/t$n.out"
  check "data-parallel training on $n ranks: weights equal one process's bit for bit" \
    "diff -r -q $tmp/t1 $tmp/t$n >/dev/null && [ \$(ls $tmp/t$n/intkey_*.safetensors | wc -l) = 1 ]"
  check "data-parallel training on $n ranks: the same held-out IIA and losses, reported once" \
    "same_report $tmp/t1.out $tmp/t$n.out"
done

# a layer split: cvene predict with the layers in 2 and 3 stages prints what one process prints
pargs=(predict --model "$demo" --ids "5,9,2,7,1,3;15,19,12,17,11,13;25,29,22,27,21,23")
"$cvene" "${pargs[@]}" | grep -v 'loaded in\|forward:' >"$tmp/p1.out"
for n in 2 3; do
  for mb in 3 1; do
    "${mpi[@]}" -np "$n" "$cvene" "${pargs[@]}" --micro-batch $mb | grep -v 'loaded in\|forward:\|stages on' >"$tmp/p$n.out"
    check "predict in $n stages, micro-batches of $mb: the same predictions as one process" "cmp -s $tmp/p1.out $tmp/p$n.out"
  done
done
set +e
"${mpi[@]}" -np 2 "$cvene" predict --model "$demo" --ids "5,9,2;7" >/dev/null 2>"$tmp/pr.err"
rc=$?
set -e
check "predict in stages refuses sequences of different lengths" "[ $rc != 0 ] && grep -q 'sequence 1 has 1 of 3 tokens' $tmp/pr.err"

# ranks that disagree (two commands in one run) all fail, naming the rank
set +e
"${mpi[@]}" -np 1 "$cvene" "${args[@]}" --out "$tmp/x" : -np 1 "$cvene" "${args[@]/kl/prob}" --token-id 3 --out "$tmp/x" \
  >/dev/null 2>"$tmp/x.err"
rc=$?
set -e
check "mismatched ranks exit non-zero" "[ $rc != 0 ]"
check "both ranks name rank 1" "[ \$(grep -c \"rank 1's command or model differs from rank 0's\" $tmp/x.err) = 2 ]"
check "nothing written by mismatched ranks" "[ ! -e $tmp/x.json ]"

# a probe grid: the collect split by batches among the ranks, rank 0 fits and writes
pargs=(probe --model "$demo" --data "$demo/localize_binary/probe.jsonl" --positions -2,-1 --layers 1,5 --steps 60 --batch 16)
"$cvene" "${pargs[@]}" --out "$tmp/p1" >/dev/null
"${mpi[@]}" -np 3 "$cvene" "${pargs[@]}" --out "$tmp/p3" >"$tmp/p3.out"
check "probe grid on 3 ranks: results and probe files equal one process's" "diff -r -q $tmp/p1 $tmp/p3 >/dev/null"
check "probe grid on 3 ranks: one report" "[ \$(grep -c '^probing' $tmp/p3.out) = 1 ]"

# a command that does not split its work refuses ranks rather than run N copies
set +e
"${mpi[@]}" -np 2 "$cvene" generate --model "$demo" --prompt "x" >/dev/null 2>"$tmp/p.err"
rc=$?
set -e
check "cvene generate on 2 ranks refused" "[ $rc != 0 ] && grep -q 'split their work among ranks so far' $tmp/p.err"

set +e
"$cvene" sweep --model "$demo" --base-ids 1,2 --source-ids 2,1 --device cuda:x --out "$tmp/c" 2>"$tmp/c.err"
rc=$?
set -e
check "--device cuda:x refused" "[ $rc = 2 ] && grep -q 'cuda:N needs a device number' $tmp/c.err"

# kill rank 1 mid-sweep: a causal trace slow enough (naive, noise samples) to be caught in the middle
ids=$(seq -s, 3 34)
targs=(sweep --model "$demo" --trace --base-ids "$ids" --subject-positions 3,4 --samples 6 --naive)
"$cvene" "${targs[@]}" --out "$tmp/t1" >/dev/null
set +e
# mpirun ends the surviving ranks (SIGTERM, then SIGKILL soon after); rank 0 then writes what it has
# and says how to resume if it gets the time, but the results file is rewritten after every row
# either way, so only the file is checked
"${mpi[@]}" -np 2 "$cvene" "${targs[@]}" --out "$tmp/tk" >"$tmp/tk.out" 2>"$tmp/tk.err" &
runner=$!
set -e
rank1=""
for _ in $(seq 1 600); do # up to 60 s: wait until a row is written, then kill rank 1
  if [ -z "$rank1" ]; then
    for p in $(pgrep -f -- "--out $tmp/tk" || true); do
      tr '\0' '\n' </proc/"$p"/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && rank1=$p
    done
  fi
  if [ -n "$rank1" ] && [ -e "$tmp/tk.json" ]; then kill -9 "$rank1"; break; fi
  sleep 0.1
done
set +e
wait "$runner"
rc=$?
set -e
check "a killed rank ends the run non-zero" "[ -n '$rank1' ] && [ $rc != 0 ]"
check "the run says a rank died" "grep -q -i -E 'signal 9|killed|exited' $tmp/tk.err"
check "a valid, partial results file" "python3 -c \"import json,sys; d=json.load(open('$tmp/tk.json')); sys.exit(0 if d['complete'] is False and any(r is not None for r in d['scores']) else 1)\""
"${mpi[@]}" -np 3 "$cvene" "${targs[@]}" --out "$tmp/tk" --resume >"$tmp/tr.out" 2>"$tmp/tr.err"
check "resumed on 3 ranks" "grep -q 'resuming: [1-7] of 8 layers already done' $tmp/tr.err"
check "resumed scores equal the uninterrupted run" "cmp -s $tmp/t1.csv $tmp/tk.csv"
echo "ranks: $((fails == 0 ? 1 : 0)) suite, $fails failed"
[ "$fails" = 0 ]
