# Shared helpers for the shell test suites: assertions that count, and polling with a
# deadline (tests never sleep to synchronise). Source it; call `finish` at the end.
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CLUSTER="$REPO/scripts/pg-cluster.sh"
T_PASSED=0
T_FAILED=0
T_NAME=${T_NAME:-$(basename "$0" .sh)}

pass() { T_PASSED=$((T_PASSED + 1)); echo "  ok   $*"; }
fail() { T_FAILED=$((T_FAILED + 1)); echo "  FAIL $*"; }

# check "description" command...: passes when the command succeeds.
check() {
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

# check_eq "description" expected actual
check_eq() {
  if [ "$2" == "$3" ]; then pass "$1"; else fail "$1: expected [$2], got [$3]"; fi
}

# check_contains "description" needle haystack-file
check_contains() {
  if grep -qF -- "$2" "$3"; then pass "$1"; else fail "$1: [$2] not in $3"; fi
}

finish() {
  echo "$T_NAME: $T_PASSED passed, $T_FAILED failed"
  [ "$T_FAILED" -eq 0 ]
}
