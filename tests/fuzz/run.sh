#!/usr/bin/env bash
# Builds the decoder's libFuzzer target with clang and runs it.
#   tests/fuzz/run.sh [SECONDS] [EXTRA libFuzzer flags...]     (default 30 s)
# Prints "fuzz: N passed, N failed" with the number of executions in the log above it.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-30}
shift || true
out=$repo/build/fuzz
mkdir -p "$out/corpus"
CXX=${FUZZ_CXX:-$(command -v clang++-14 || command -v clang++)}
[ -n "$CXX" ] || { echo "fuzz: clang++ not found (apt-get install clang-14 libclang-rt-14-dev)"; echo "fuzz: 0 passed, 1 failed"; exit 1; }
"$CXX" -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$repo/include" -I"$repo/applier" \
  "$repo/tests/fuzz/decoder_fuzz.cpp" "$repo/applier/decode/decoder.cpp" \
  "$repo/applier/common/lsn.cpp" -o "$out/decoder_fuzz" || { echo "fuzz: 0 passed, 1 failed"; exit 1; }
# Seeds: the checked-in corpus of real frames, copied so the run's discoveries stay out of git.
cp -n "$repo"/tests/fuzz/corpus/* "$out/corpus/" 2>/dev/null || true
log=$out/fuzz.log
"$out/decoder_fuzz" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
  "$@" "$out/corpus" >"$log" 2>&1
rc=$?
grep -E "^stat::number_of_executed_units|^#[0-9]+.*DONE|ERROR|SUMMARY" "$log" | tail -5
if [ $rc -eq 0 ]; then echo "fuzz: 1 passed, 0 failed"; else echo "fuzz: 0 passed, 1 failed (log: $log)"; fi
exit $rc
