#!/usr/bin/env bash
# dts_decoding over the replication protocol, as pg_recvlogical (and later the applier) reads
# it: slots created by name without the extension, JSON with options, bare options, errors for
# bad options, and the binary format's packing.
set -uo pipefail
source "$(dirname "$0")/../lib/testlib.sh"
PORT=${DTS_TEST_PORT:-25450}
NAME=it_recvlogical
CONN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
WORK=$(mktemp -d)
cleanup() { "$CLUSTER" destroy "$NAME" >/dev/null 2>&1; rm -rf "$WORK"; }
trap cleanup EXIT

"$CLUSTER" destroy "$NAME" >/dev/null 2>&1
"$CLUSTER" start "$NAME" "$PORT" >/dev/null || { echo "could not start a cluster"; exit 1; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$CONN" -c "$1"; }

q "CREATE TABLE t (id int PRIMARY KEY, v text, ts timestamptz)"
q "CREATE TABLE noise (id int)"

echo "slot created by pg_recvlogical, no extension installed"
check "pg_recvlogical --create-slot -P dts_decoding" \
  pg_recvlogical -d "$CONN" --slot it_json --create-slot -P dts_decoding
check_eq "no extension in the database" "0" "$(q "SELECT count(*) FROM pg_extension WHERE extname = 'dts_decoding'")"
pg_recvlogical -d "$CONN" --slot it_bin --create-slot -P dts_decoding

q "INSERT INTO t VALUES (1, 'one', '2024-01-01 00:00:00+00'), (2, 'two', NULL)"
q "INSERT INTO noise SELECT generate_series(1, 1000)"
q "UPDATE t SET v = 'uno' WHERE id = 1"
q "DELETE FROM t WHERE id = 2"
END=$(q "SELECT pg_current_wal_lsn()")

echo "json format with options over the replication protocol"
PGTZ=UTC pg_recvlogical -d "$CONN" --slot it_json --start -E "$END" --no-loop -f "$WORK/json.out" \
  -o format=json -o exclude_tables=noise -o include_xids 2>"$WORK/json.err"
check "pg_recvlogical reached the end position" test $? -eq 0
check_contains "insert row" '"action":"insert","schema":"public","table":"t","new":{"id":1,"v":"one"' "$WORK/json.out"
check_contains "update row" '"action":"update","schema":"public","table":"t","new":{"id":1,"v":"uno"' "$WORK/json.out"
check_contains "delete key" '"action":"delete","schema":"public","table":"t","key":{"id":2}' "$WORK/json.out"
check "bare include_xids means true" grep -qE '"action":"begin","xid":[0-9]+' "$WORK/json.out"
check "excluded table absent" bash -c "! grep -q noise '$WORK/json.out'"
check_eq "three transactions, one record per line" "3" "$(grep -c '"action":"commit"' "$WORK/json.out")"
check "every line is a JSON object" bash -c "python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if line.strip(): json.loads(line)
' '$WORK/json.out'"
check_eq "the slot confirmed up to the end" "t" "$(q "SELECT confirmed_flush_lsn >= '$END' FROM pg_replication_slots WHERE slot_name = 'it_json'")"

echo "binary format: packed frames"
pg_recvlogical -d "$CONN" --slot it_bin --start -E "$END" --no-loop -f "$WORK/bin.out" 2>"$WORK/bin.err"
check "binary stream reached the end position" test $? -eq 0
check_eq "starts with protocol version 1" "01" "$(head -c1 "$WORK/bin.out" | od -An -tx1 | tr -d ' ')"
# pg_recvlogical ends every message with a newline, so one message per change would leave at
# least 1002 of them; packed frames leave a few (plus any 0x0a bytes inside the data).
lines=$(wc -l < "$WORK/bin.out")
check "1002 changes arrive packed, not one message each ($lines newlines)" test "$lines" -lt 200

echo "bad options are refused with the option named"
q "SELECT 'x' FROM pg_create_logical_replication_slot('it_bad', 'dts_decoding')" >/dev/null
pg_recvlogical -d "$CONN" --slot it_bad --start -E "$END" --no-loop -f /dev/null -o format=xml 2>"$WORK/bad.err"
check "pg_recvlogical fails" test $? -ne 0
check_contains "error names the option" 'invalid value "xml" for option "format"' "$WORK/bad.err"
pg_recvlogical -d "$CONN" --slot it_bad --start -E "$END" --no-loop -f /dev/null -o colour=blue 2>"$WORK/bad2.err"
check_contains "unknown option listed with the accepted ones" 'unrecognized option "colour"' "$WORK/bad2.err"

echo "the extension's readiness check on a ready server"
q "CREATE EXTENSION dts_decoding"
check_eq "no FAILED items" "0" "$(q "SELECT count(*) FROM dts_decoding.check_source() WHERE status = 'FAILED'")"
q "CREATE TABLE nokey (a int)"
check_eq "a table without a key is a WARNING" "WARNING" \
  "$(q "SELECT status FROM dts_decoding.check_source() WHERE item = 'replica_identity'")"
check_contains "and is named" "public.nokey" <(q "SELECT detail FROM dts_decoding.check_source() WHERE item = 'replica_identity'")
q "CREATE ROLE plain LOGIN"
check_eq "a role without REPLICATION fails the privilege item" "FAILED" \
  "$(psql -X -At -d "host=127.0.0.1 port=$PORT user=plain dbname=postgres" -c "SELECT status FROM dts_decoding.check_source() WHERE item = 'replication_privilege'")"
check_contains "and may not emit heartbeats" "permission denied" \
  <(psql -X -At -d "host=127.0.0.1 port=$PORT user=plain dbname=postgres" -c 'SELECT dts_decoding.heartbeat()' 2>&1)

finish
