#!/usr/bin/env bash
# Runs the plugin's pg_regress suites (make installcheck against a temp instance). pg_regress
# will not start a server as root, so as root the suites run as $DTS_PG_USER in a scratch
# copy of sql/ and expected/. Usage: run-regress.sh [suite ...]   (default: all of them)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PG_USER=${DTS_PG_USER:-dts}
suites=("$@")

work=$(mktemp -d /tmp/dts-regress.XXXXXX)
cleanup() {
  if [ -f "$work/tmp_check/data/postmaster.pid" ]; then
    runuser -u "$PG_USER" -- pg_ctl -D "$work/tmp_check/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cp -r "$repo/Makefile" "$repo/sql" "$repo/expected" "$work/"
mkdir -p "$work/plugin" && cp "$repo/plugin/dts_decoding.control" "$work/plugin/"
args=(-C "$work" --no-print-directory installcheck REGRESS_DIR="$work")
[ ${#suites[@]} -gt 0 ] && args+=(REGRESS="${suites[*]}")

status=0
if [ "$(id -u)" -eq 0 ]; then
  id "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
  chown -R "$PG_USER" "$work"
  runuser -u "$PG_USER" -- make "${args[@]}" || status=$?
else
  make "${args[@]}" || status=$?
fi
if [ $status -ne 0 ]; then
  [ -f "$work/regression.diffs" ] && cat "$work/regression.diffs"
  # Keep the results for a look at what differed.
  mkdir -p "$repo/results" && cp "$work"/results/*.out "$repo/results/" 2>/dev/null || true
  echo "run-regress.sh: failed; actual outputs copied to $repo/results/" >&2
fi
exit $status
