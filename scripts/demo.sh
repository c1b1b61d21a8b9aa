#!/usr/bin/env bash
# The README's demo command. Until dts_applier can migrate (the follow and migrate issues),
# it shows the source side at work: it installs what it needs, starts a throwaway source
# server on loopback, loads pgbench tables and a table of many types with large values, checks
# the source, then decodes a live pgbench workload with pg_recvlogical in both formats and
# prints what arrived. Stops and removes the server it started, whatever happens.
#
#   sudo scripts/demo.sh [--seconds N]      (default 10 seconds of pgbench)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
seconds=10
[ "${1:-}" = "--seconds" ] && seconds=${2:?--seconds needs a number}
PORT=${DTS_DEMO_PORT:-25470}
NAME=demo_source
CONN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
work=$(mktemp -d /tmp/dts-demo.XXXXXX)
cleanup() { scripts/pg-cluster.sh destroy "$NAME" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$CONN" -c "$1"; }

if [ "$(id -u)" -eq 0 ]; then
  say "installing packages"
  bash scripts/install-deps.sh
fi
say "building and installing dts_decoding"
make -s -j2 >/dev/null && make -s install >/dev/null

say "starting a throwaway source server on 127.0.0.1:$PORT"
scripts/pg-cluster.sh destroy "$NAME" >/dev/null 2>&1 || true
scripts/pg-cluster.sh start "$NAME" "$PORT"

say "loading pgbench (scale 5) and a table of many types with large values"
pgbench -i -q -s 5 -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1
q "CREATE TABLE many_types (id bigserial PRIMARY KEY, amount numeric(12,2), happened timestamptz,
     tags text[], doc jsonb, blob bytea, note text, ok bool, uid uuid)"
q "CREATE EXTENSION dts_decoding"

say "source readiness (dts_decoding.check_source())"
psql -X -q -d "$CONN" -c "SELECT item, status, detail FROM dts_decoding.check_source()"

say "creating two slots with the dts_decoding plugin"
pg_recvlogical -d "$CONN" --slot demo_json --create-slot -P dts_decoding
pg_recvlogical -d "$CONN" --slot demo_bin --create-slot -P dts_decoding

say "running pgbench for $seconds s (2 clients) plus large-value writes, while the slots fill"
pgbench -n -c 2 -j 2 -T "$seconds" -h 127.0.0.1 -p "$PORT" -U postgres postgres > "$work/pgbench.out" 2>&1 &
bench=$!
for i in $(seq 1 20); do
  q "INSERT INTO many_types (amount, happened, tags, doc, blob, note, ok, uid)
     SELECT g * 1.25, now(), ARRAY['a','b'], jsonb_build_object('n', g), decode(md5(g::text), 'hex'),
            repeat('large value ', 2000), g % 2 = 0, gen_random_uuid() FROM generate_series(1, 50) g"
  q "UPDATE many_types SET ok = NOT ok WHERE id % 7 = $((i % 7))"
done
wait $bench
q "SELECT dts_decoding.heartbeat()" >/dev/null
end=$(q "SELECT pg_current_wal_lsn()")
grep -E "number of transactions actually processed|tps" "$work/pgbench.out" | sed 's/^/  pgbench: /'

say "decoding up to $end with pg_recvlogical"
t0=$(date +%s.%N)
pg_recvlogical -d "$CONN" --slot demo_json --start -E "$end" --no-loop -f "$work/changes.json" -o format=json
t1=$(date +%s.%N)
pg_recvlogical -d "$CONN" --slot demo_bin --start -E "$end" --no-loop -f "$work/changes.bin"
t2=$(date +%s.%N)

say "what arrived"
python3 - "$work/changes.json" "$work/changes.bin" "$t0" "$t1" "$t2" <<'PY'
import collections, json, sys
path, binpath, t0, t1, t2 = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
actions = collections.Counter()
tables = collections.Counter()
sample = {}
for line in open(path, encoding="utf-8"):
    rec = json.loads(line)
    actions[rec["action"]] += 1
    if "table" in rec and rec["action"] in ("insert", "update", "delete"):
        tables[rec["schema"] + "." + rec["table"]] += 1
        sample.setdefault(rec["action"], line.strip())
changes = sum(tables.values())
json_bytes = sum(len(l.encode()) for l in open(path, encoding="utf-8"))
bin_bytes = len(open(binpath, "rb").read())
print(f"  transactions: {actions['commit']}, row changes: {changes}")
for t, n in tables.most_common():
    print(f"    {t:28} {n:8} changes")
print(f"  json:   {json_bytes / max(changes, 1):6.0f} bytes/change, decoded in {t1 - t0:.2f} s")
print(f"  binary: {bin_bytes / max(changes, 1):6.0f} bytes/change, decoded in {t2 - t1:.2f} s "
      f"(the format dts_applier will read)")
for action in ("insert", "update", "delete"):
    if action in sample:
        s = sample[action]
        print(f"  sample {action}: {s[:220]}{'...' if len(s) > 220 else ''}")
PY

say "done: the source server is stopped and removed"
