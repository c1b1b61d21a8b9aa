#!/usr/bin/env bash
# The README's demo command: a live migration on one machine. It installs what it needs, starts
# throwaway source and target servers on loopback, loads pgbench tables and a table of many
# types with large values, runs `dts_applier migrate` while pgbench keeps writing, verifies
# under the writes, cuts over with `dts_applier complete` (pgbench still writing, and refused
# from the read-only point on), compares every table independently and prints a short report. It stops and removes the servers it started, whatever happens.
#
#   sudo scripts/demo.sh [--seconds N]      (default: 20 seconds of pgbench)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
seconds=20
[ "${1:-}" = "--seconds" ] && seconds=${2:?--seconds needs a number}
SRC_PORT=${DTS_DEMO_PORT:-25470}
DST_PORT=$((SRC_PORT + 1))
SRC="host=127.0.0.1 port=$SRC_PORT user=postgres dbname=postgres"
DST="host=127.0.0.1 port=$DST_PORT user=postgres dbname=app"
work=$(mktemp -d /tmp/dts-demo.XXXXXX)
migrate_pid=""
cleanup() {
  [ -n "$migrate_pid" ] && kill "$migrate_pid" 2>/dev/null && wait "$migrate_pid" 2>/dev/null
  scripts/pg-cluster.sh destroy demo_source >/dev/null 2>&1 || true
  scripts/pg-cluster.sh destroy demo_target >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
status() { /usr/bin/python3 -c "import json,sys; s=json.load(open('$work/status.json')); print(s$1)" 2>/dev/null || true; }

if [ "$(id -u)" -eq 0 ]; then
  say "installing packages"
  bash scripts/install-deps.sh
fi
say "building and installing dts_decoding and dts_applier"
make -s -j2 >/dev/null && make -s install >/dev/null
applier=$(command -v dts_applier || echo "$repo/build/dts_applier")

say "starting throwaway servers: source on $SRC_PORT, target on $DST_PORT"
scripts/pg-cluster.sh destroy demo_source >/dev/null 2>&1 || true
scripts/pg-cluster.sh destroy demo_target >/dev/null 2>&1 || true
scripts/pg-cluster.sh start demo_source "$SRC_PORT"
scripts/pg-cluster.sh start demo_target "$DST_PORT"
q "${DST/dbname=app/dbname=postgres}" "CREATE DATABASE app"

say "loading the source: pgbench (scale 10) and a table of many types with large values"
pgbench -i -q -s 10 -h 127.0.0.1 -p "$SRC_PORT" -U postgres postgres >/dev/null 2>&1
q "$SRC" "CREATE TABLE many_types (id bigserial PRIMARY KEY, amount numeric(12,2), happened timestamptz,
     tags text[], doc jsonb, blob bytea, note text, ok bool, uid uuid)"
q "$SRC" "INSERT INTO many_types (amount, happened, tags, doc, blob, note, ok, uid)
   SELECT g * 1.25, now(), ARRAY['a','b'], jsonb_build_object('n', g), decode(md5(g::text), 'hex'),
          CASE WHEN g % 10 = 0 THEN repeat('large value ', 2000) ELSE 'small' END, g % 2 = 0, gen_random_uuid()
     FROM generate_series(1, 20000) g"

say "pgbench writes (2 clients) while dts_applier migrate copies and streams; cutover after $seconds s"
# pgbench runs until the cutover refuses its writes; the bound is only a safety net.
pgbench -n -c 2 -j 2 -T $((seconds + 300)) -h 127.0.0.1 -p "$SRC_PORT" -U postgres postgres > "$work/pgbench.out" 2>&1 &
bench=$!
( while kill -0 $bench 2>/dev/null; do
    q "$SRC" "UPDATE many_types SET ok = NOT ok, note = note || '+' WHERE id % 97 = (extract(epoch from now())::int % 97)" 2>/dev/null || break
  done ) &
writer=$!
t0=$(date +%s.%N)
"$applier" migrate --source "$SRC" --target "$DST" --jobs 2 --split-larger-than 16MB \
  --status-file "$work/status.json" > "$work/migrate.log" 2>&1 &
migrate_pid=$!
deadline=$((SECONDS + 600))
until [ "$(status "['phase']")" = "STREAMING" ] || [ "$(status "['phase']")" = "CATCHING_UP" ]; do
  kill -0 $migrate_pid 2>/dev/null || { cat "$work/migrate.log"; echo "demo: migrate failed"; exit 1; }
  [ $SECONDS -lt $deadline ] || { cat "$work/migrate.log"; echo "demo: no streaming after 10 minutes"; exit 1; }
  sleep 0.5
done
t_copy=$(date +%s.%N)
echo "  copy done: $(status "['copy']['rows_copied']") rows in $(status "['copy']['chunks']") chunks; now streaming"

say "verify while pgbench keeps writing (chunk checksums, re-checked past the applier's position)"
"$applier" verify --source "$SRC" --target "$DST" 2>/dev/null | sed 's/^/  /'

while [ "$(echo "$(date +%s.%N) - $t0 < $seconds" | bc)" = 1 ]; do
  kill -0 $migrate_pid 2>/dev/null || { cat "$work/migrate.log"; echo "demo: migrate failed"; exit 1; }
  sleep 0.5
done
say "complete: the cutover while pgbench still writes"
"$applier" complete --source "$SRC" --target "$DST" --max-lag 1000 --sequence-shift 1000 --verify \
  > "$work/complete.out" 2> "$work/complete.log" || { cat "$work/complete.log" "$work/complete.out"; echo "demo: complete failed"; exit 1; }
sed 's/^/  /' "$work/complete.out"
window=$(sed -n 's/.*read-only window: \([0-9]*\) ms.*/\1/p' "$work/complete.out")
t_end=$(date +%s.%N)
wait "$migrate_pid" || { cat "$work/migrate.log"; echo "demo: migrate did not end at the cutover"; exit 1; }
migrate_pid=""
replayed=$(status "['changes_applied']")
wait $bench 2>/dev/null || true
wait $writer 2>/dev/null || true
refused=$(grep -c "read-only transaction" "$work/pgbench.out" || true)
grep -E "number of transactions actually processed" "$work/pgbench.out" | sed 's/^/  pgbench: /' || true
echo "  pgbench's writes refused after the read-only point: $refused client errors"

say "comparing every table (row count and a digest of every row)"
equal=1
for t in $(q "$SRC" "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"); do
  a=$(q "$SRC" "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM $t x")
  b=$(q "$DST" "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM $t x")
  if [ "$a" = "$b" ]; then printf '  %-28s %10s rows  equal\n' "$t" "${a%% *}"; else printf '  %-28s DIFFERENT (source %s, target %s)\n' "$t" "$a" "$b"; equal=0; fi
done

say "report"
printf '  copy (schema, data, indexes): %.1f s\n' "$(echo "$t_copy - $t0" | bc)"
printf '  changes replayed while pgbench wrote: %s\n' "$replayed"
printf '  start to cut over: %.1f s, read-only window %s ms\n' "$(echo "$t_end - $t0" | bc)" "$window"
if [ $equal -eq 1 ]; then echo "  result: source and target are equal"; else echo "  result: DIFFERENCES FOUND"; exit 1; fi
