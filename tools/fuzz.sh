#!/usr/bin/env bash
# Build the libFuzzer harnesses (tests/fuzz; docs/fuzzing.md) with clang, ASan and UBSan into
# build-fuzz, then for each harness: replay its regression inputs (tests/fuzz/regressions/
# HARNESS/*, once-found bugs that must stay fixed), and fuzz for SECONDS (default 30) from a
# temporary copy of its corpus (tests/fuzz/corpus/HARNESS is never modified).
#   Usage: tools/fuzz.sh [SECONDS] [HARNESS...]     (default: every harness)
# Any finding (crash, sanitizer report, leak, timeout, out-of-memory, failed invariant) fails
# the script after the remaining harnesses ran; the input that caused it is kept under
# build-fuzz/findings/HARNESS/ with the log, and named in the message.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
eval "$(bash tools/install_deps.sh --fuzz)"
export CC=clang CXX=clang++
dir=build-fuzz
mkdir -p "$dir"
# the harnesses' warnings are errors (tests/fuzz/CMakeLists.txt); the library's clang-only ones are not
cmake -S . -B "$dir" -DCVENE_FUZZ=ON -DCVENE_CUDA=OFF -DBUILD_TESTING=OFF -DCVENE_WERROR=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; exit 1; }
cmake --build "$dir" --target cvene_fuzzers -j"$(nproc)"

harnesses=("$@")
if ((${#harnesses[@]} == 0)); then
  harnesses=(fuzz_safetensors fuzz_safetensors_index fuzz_model_config fuzz_config fuzz_request
             fuzz_tokenizer_json fuzz_tokenizer_bpe fuzz_tokenize fuzz_resume fuzz_dataset)
fi
# one thread per process (the library's OpenMP loops would only contend with the fuzzer);
# leaks are findings; UBSan reports stop the run with a stack
export OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work # the harnesses' scratch files, removed with it
findings=$dir/findings
failed=()
summary=()

# keep what a failed run left (artifacts and log) under $findings/$1 and say where
report() { # harness, log, what
  local h=$1 log=$2 what=$3 keep=$findings/$1
  mkdir -p "$keep"
  cp "$log" "$keep/$h.log"
  local files=()
  for f in "$work/$h/"{crash,leak,timeout,oom,slow-unit}-*; do
    [ -e "$f" ] && cp "$f" "$keep/" && files+=("$keep/$(basename "$f")")
  done
  echo "fuzz: $h: $what${files:+ -- input: ${files[*]}} (log: $keep/$h.log)" >&2
  # the report's headline and the first stack's innermost frames
  awk '/ERROR|SUMMARY|cvene fuzz:|runtime error/ {print; next}
       /^ *#[0-9]+ 0x/ && !done {print; if (++n == 12) done = 1}' "$log" | head -30 >&2 || true
  failed+=("$h")
}

for h in "${harnesses[@]}"; do
  bin=$dir/tests/fuzz/$h
  [ -x "$bin" ] || { echo "fuzz: no harness $h" >&2; exit 2; }
  mkdir -p "$work/$h/corpus"
  opts=(-timeout=25 -rss_limit_mb=2048 -artifact_prefix="$work/$h/")
  # the JSON dictionary helps every harness whose input is JSON (all but the raw text)
  dict=$work/$h.dict
  if [ "$h" = fuzz_tokenize ]; then cp "tests/fuzz/dict/$h.dict" "$dict"
  else cat tests/fuzz/dict/json.dict "tests/fuzz/dict/$h.dict" >"$dict"; fi

  # 1. the regression inputs, each run once
  regs=(tests/fuzz/regressions/"$h"/*)
  if [ -e "${regs[0]}" ]; then
    if ! "$bin" "${opts[@]}" "${regs[@]}" >"$work/$h/replay.log" 2>&1; then
      bad=$(grep -o "Running: [^ ]*" "$work/$h/replay.log" | tail -1 | cut -d' ' -f2)
      report "$h" "$work/$h/replay.log" "regression input ${bad:-?} fails again"
      continue
    fi
  fi

  # 2. fuzz from a copy of the corpus
  cp -r "tests/fuzz/corpus/$h/." "$work/$h/corpus/" 2>/dev/null || true
  n0=$(find "$work/$h/corpus" -type f | wc -l)
  log=$work/$h/fuzz.log
  if ! "$bin" "${opts[@]}" -dict="$dict" -max_total_time="$secs" -print_final_stats=1 "$work/$h/corpus" >"$log" 2>&1; then
    report "$h" "$log" "finding after $(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#') executions"
    continue
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  last=$(grep -E "^#[0-9]+.*cov: " "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  nreg=0
  [ -e "${regs[0]}" ] && nreg=${#regs[@]}
  line=$(printf "%-24s %10s %8s %6s %7s %6s %9s" "$h" "$execs" "$rate" "$cov" "$ft" "$n0->$corp" "$nreg")
  echo "fuzz: $line"
  summary+=("$line")
done

echo
printf "%-24s %10s %8s %6s %7s %6s %9s\n" harness execs exec/s cov ft corpus regress.
for l in "${summary[@]}"; do echo "$l"; done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (inputs and logs under $findings/)" >&2
  exit 1
fi
echo "fuzz: ${#harnesses[@]} harnesses, ${secs}s each: no findings"
