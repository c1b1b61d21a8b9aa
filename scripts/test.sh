#!/usr/bin/env bash
# The README's test command: installs what the project needs (as root), builds the plugin and
# the applier, and runs every suite: C++ unit tests, the plugin's pg_regress suites and the
# integration tests against real servers. Ends with one "N passed, N failed" line.
#
#   sudo scripts/test.sh            everything
#   scripts/test.sh --no-install    skip apt-get (packages already there)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
install=1
[ "${1:-}" = "--no-install" ] && install=0

passed=0
failed=0
failures=()
count() {  # count SUITE PASSED FAILED
  passed=$((passed + $2))
  failed=$((failed + $3))
  [ "$3" -gt 0 ] && failures+=("$1")
}
step() { printf '\n==> %s\n' "$*"; }

if [ $install -eq 1 ]; then
  step "installing packages"
  if [ "$(id -u)" -eq 0 ]; then
    bash scripts/install-deps.sh || { echo "test.sh: package installation failed"; exit 1; }
  else
    echo "not root: skipping apt-get (run as root on a fresh machine)"
  fi
fi

step "building and installing the dts_decoding plugin (PGXS)"
make -s -j2 >/dev/null || { echo "test.sh: plugin build failed"; make; exit 1; }
make -s install >/dev/null || { echo "test.sh: make install failed (run as root, or as the owner of $(pg_config --pkglibdir))"; exit 1; }

step "building the applier and the C++ tests (CMake)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || { echo "test.sh: cmake failed"; exit 1; }
cmake --build build -j2 >/dev/null || { cmake --build build; echo "test.sh: build failed"; exit 1; }

step "unit tests (GoogleTest)"
out=$(cd build && ctest --output-on-failure 2>&1)
echo "$out" | tail -4
total=$(echo "$out" | sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p')
bad=$(echo "$out" | sed -n 's/.*, \([0-9]*\) tests failed out of.*/\1/p')
if [ -n "$total" ]; then count unit $((total - bad)) "$bad"; else count unit 0 1; fi

step "plugin regression suites (pg_regress)"
out=$(scripts/run-regress.sh 2>&1)
rc=$?
echo "$out" | grep -E '\.\.\. |tests (passed|failed)' || echo "$out" | tail -20
n_ok=$(echo "$out" | grep -cE '\.\.\. ok')
n_bad=$(echo "$out" | grep -cE '\.\.\. FAILED')
[ $rc -ne 0 ] && [ "$n_bad" -eq 0 ] && n_bad=1 && echo "$out" | tail -20
count regress "$n_ok" "$n_bad"

# Test clusters live on tmpfs when it has room: creating a file on this class of VM's disk costs
# ~0.5 ms, so copying a data directory took 1.2 s and CREATE DATABASE 0.35 s, half of a short
# test. fsync is off in test clusters either way. DTS_CLUSTER_ROOT chooses another place.
if [ -z "${DTS_CLUSTER_ROOT:-}" ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
  shm_free_kb=$(df --output=avail -k /dev/shm | tail -1)
  if [ "${shm_free_kb:-0}" -ge $((4 * 1024 * 1024)) ]; then
    export DTS_CLUSTER_ROOT=/dev/shm/dts-clusters
  fi
fi
echo "test clusters under ${DTS_CLUSTER_ROOT:-/tmp/dts-clusters}"

# The fault suite runs in its short form here (10 kills); `make soak` runs the long one.
for t in tests/integration/*_test.sh tests/integration/*_test.py tests/fault/*_test.py; do
  step "integration: $(basename "$t")"
  started=$SECONDS
  # Python suites need Debian's python3, which has python3-psycopg2 (a pyenv python may not).
  case "$t" in
    *.py) out=$(/usr/bin/python3 "$t" 2>&1) ;;
    *) out=$(bash "$t" 2>&1) ;;
  esac
  rc=$?
  echo "$out"
  line=$(echo "$out" | tail -1)
  p=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
  f=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
  if [ -z "$p" ]; then p=0; f=1; fi
  [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
  count "$(basename "${t%.*}")" "$p" "$f"
  echo "($((SECONDS - started)) s)"
done
bash scripts/pg-cluster.sh drop-template
[ "${DTS_CLUSTER_ROOT:-}" = /dev/shm/dts-clusters ] && rmdir /dev/shm/dts-clusters 2>/dev/null

step "fuzzing the decoder (libFuzzer, ${DTS_FUZZ_SECONDS:-10} s)"
out=$(tests/fuzz/run.sh "${DTS_FUZZ_SECONDS:-10}" 2>&1)
echo "$out"
if echo "$out" | grep -q "fuzz: 1 passed"; then count fuzz 1 0; else count fuzz 0 1; fi

echo
[ ${#failures[@]} -gt 0 ] && echo "failing suites: ${failures[*]}"
echo "test.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
