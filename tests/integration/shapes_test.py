#!/usr/bin/python3
"""Table shapes the copy and the change stream must carry like any other: tables with no column
to copy (none at all, or only generated ones) still hold rows, and migrate, follow, verify and
check must move and compare them.

Usage: shapes_test.py [test_name ...]
"""
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (scratch, read_json, APPLIER, AppPair, Failure, check, check_equal, lsn_value, main, tail_file, test,  # noqa: E402
                     wait_for)

BASE_PORT = int(os.environ.get("DTS_SHAPES_TEST_PORT", "26200"))

# z: no column at all. g: only generated columns (not copied, computed again on the target).
# i: an identity column, which is an ordinary column to copy; ip: an identity key, whose
# GENERATED ALWAYS refuses the source's values unless told to take them. t: an ordinary table.
# REPLICA IDENTITY FULL: a table without columns can have no key, and its DELETEs need an old row.
SCHEMA = """
CREATE TABLE z ();
ALTER TABLE z REPLICA IDENTITY FULL;
CREATE TABLE g (a int GENERATED ALWAYS AS (1) STORED, b text GENERATED ALWAYS AS ('gen') STORED);
ALTER TABLE g REPLICA IDENTITY FULL;
CREATE TABLE i (id int GENERATED ALWAYS AS IDENTITY);
ALTER TABLE i REPLICA IDENTITY FULL;
CREATE TABLE ip (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO ip (v) SELECT 'v' || g FROM generate_series(1, 300) g;
INSERT INTO z DEFAULT VALUES;
INSERT INTO z DEFAULT VALUES;
INSERT INTO z SELECT FROM generate_series(1, 3000);
INSERT INTO g DEFAULT VALUES;
INSERT INTO g SELECT FROM generate_series(1, 500);
INSERT INTO i SELECT FROM generate_series(1, 200);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g;
"""

# During follow, every kind of change each shape can take: single and multi-row inserts (the
# applier's INSERT path and, above 100 rows, its binary COPY path), DELETEs of "any one row",
# an UPDATE that sets nothing the source sends, TRUNCATE.
STREAMED = [
    "INSERT INTO z DEFAULT VALUES",
    "INSERT INTO z SELECT FROM generate_series(1, 7)",
    "INSERT INTO z SELECT FROM generate_series(1, 450)",
    "DELETE FROM z WHERE ctid IN (SELECT ctid FROM z LIMIT 25)",
    "BEGIN; INSERT INTO z DEFAULT VALUES; DELETE FROM z WHERE ctid = (SELECT ctid FROM z LIMIT 1); "
    "INSERT INTO z SELECT FROM generate_series(1, 3); COMMIT",
    "INSERT INTO g DEFAULT VALUES",
    "INSERT INTO g SELECT FROM generate_series(1, 120)",
    "UPDATE g SET a = DEFAULT WHERE ctid IN (SELECT ctid FROM g LIMIT 5)",
    "DELETE FROM g WHERE ctid IN (SELECT ctid FROM g LIMIT 10)",
    "TRUNCATE g",
    "INSERT INTO g SELECT FROM generate_series(1, 42)",
    "INSERT INTO i DEFAULT VALUES",
    "DELETE FROM i WHERE id <= 20",
    "INSERT INTO ip (v) SELECT 'live' FROM generate_series(1, 150)",
    "UPDATE ip SET v = 'changed' WHERE id % 10 = 0",
    "DELETE FROM ip WHERE id % 9 = 0",
    "INSERT INTO t SELECT g, 'live' FROM generate_series(1001, 1200) g",
    "UPDATE t SET v = 'changed' WHERE id % 10 = 0",
    "DELETE FROM t WHERE id % 7 = 0",
    "TRUNCATE z",
    "INSERT INTO z SELECT FROM generate_series(1, 11)",
    "DELETE FROM z WHERE ctid = (SELECT ctid FROM z LIMIT 1)",
]

TABLES = ["z", "g", "i", "ip", "t"]


status_of = read_json


def counts(conn_value):
    return {t: conn_value(f"SELECT count(*) FROM {t}") for t in TABLES}


@test
def tables_with_no_column_to_copy():
    with AppPair("it_shapes0", BASE_PORT) as pair:
        pair.src.sql(SCHEMA)
        tag = f"{os.getpid()}"
        status, log_path = scratch(f"shapes-{tag}.json"), scratch(f"shapes-{tag}.log")
        for path in (status, log_path):
            if os.path.exists(path):
                os.unlink(path)

        out = subprocess.run([APPLIER, "check", "--source", pair.src.conninfo, "--target", pair.target, "--json"],
                             capture_output=True, text=True, timeout=120)
        items = json.loads(out.stdout)
        items = items.get("items", items) if isinstance(items, dict) else items
        failed = [it for it in items if it.get("status") == "FAILED"]
        check(out.returncode in (0, 1) and not failed, f"check on these shapes: rc {out.returncode}, failed {failed}")

        with open(log_path, "a") as log:
            p = subprocess.Popen([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                                  "--jobs", "2", "--status-file", status], stdout=log, stderr=log)
        try:
            def streaming():
                if p.poll() is not None:
                    raise Failure(f"migrate exited with {p.returncode}: {tail_file(log_path)}")
                return (status_of(status) or {}).get("phase") in ("STREAMING", "CATCHING_UP")
            wait_for("the migration to stream", streaming, 120)
            copied = {c["table"]: c["copied_rows"] for c in status_of(status)["copy"]["tables"]}
            check(copied == {"public.z": 3002, "public.g": 501, "public.i": 200, "public.ip": 300,
                            "public.t": 1000},
                  f"rows the copy counted: {copied}")
            after_copy = counts(pair.target_view().value)
            check(after_copy == {"z": 3002, "g": 501, "i": 200, "ip": 300, "t": 1000}, f"target after the copy: {after_copy}")

            for statement in STREAMED:
                pair.src.sql(statement)
            end = lsn_value(pair.src.lsn())

            def caught_up():
                if p.poll() is not None:
                    raise Failure(f"migrate exited with {p.returncode}: {tail_file(log_path)}")
                return lsn_value((status_of(status) or {}).get("applied_lsn", "0/0")) >= end
            wait_for("follow to apply the streamed changes", caught_up, 120)

            source, target = counts(pair.src.value), counts(pair.target_view().value)
            check(source == target, f"row counts differ: source {source}, target {target}")
            # The changes arrived through the stream, not the copy: every count moved since.
            check(all(target[t] != after_copy[t] for t in TABLES), f"after the copy {after_copy}, now {target}")
            check(target["z"] == 10 and target["g"] == 42, f"z and g after TRUNCATE and inserts: {target}")
            check_equal(pair.src, pair.target_view(), TABLES)

            out = subprocess.run([APPLIER, "verify", "--source", pair.src.conninfo, "--target", pair.target, "--json"],
                                 capture_output=True, text=True, timeout=300)
            try:
                report = json.loads(out.stdout)
            except ValueError:
                raise Failure(f"verify exited {out.returncode} without JSON: {out.stderr[-800:]}")
            by_table = {r["table"]: r for r in report["tables"]}
            check(out.returncode == 0 and report["result"] == "EQUAL", f"verify: rc {out.returncode}, {report}")
            for t in TABLES:
                r = by_table.get(f"public.{t}")
                check(r is not None and r["result"] == "EQUAL" and r["sourceRows"] == r["targetRows"] == target[t],
                      f"verify of {t}: {r}")
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
        check(p.returncode == 0, f"migrate stopped with {p.returncode}: {tail_file(log_path)}")


if __name__ == "__main__":
    main("shapes_test")
