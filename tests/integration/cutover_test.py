#!/usr/bin/python3
"""verify and complete against real servers under live pgbench writes: no false difference
over repeated runs; rows changed, deleted and added on the target found with their key
ranges; the cutover refuses the application's writes, leaves the target equal with sequences
at or past the source's (plus the shift), drops the slot and prints a measured window; migrate
refuses to start on a FAILED precheck unless the item is skipped.

Usage: cutover_test.py [test_name ...]
"""
import json
import os
import re
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import APPLIER, AppPair, Failure, check, check_equal, main, test, wait_for  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_CUTOVER_TEST_PORT", "25600"))

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2), tags text[], at timestamptz,
                    doc jsonb, blob bytea, f float8);
INSERT INTO items SELECT g, 'item ' || g, g / 7.0, ARRAY['a', g::text], '2024-01-01'::timestamptz + g * interval '1 min',
                         jsonb_build_object('g', g), decode(md5(g::text), 'hex'), g / 3.0
  FROM generate_series(1, 30000) g;
CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT g % 100, 'k' || g, g FROM generate_series(1, 5000) g;
CREATE TABLE notes (msg text);
INSERT INTO notes SELECT 'note ' || g FROM generate_series(1, 2000) g;
CREATE TABLE orders (id serial PRIMARY KEY, item_id bigint REFERENCES items, qty int);
INSERT INTO orders (item_id, qty) SELECT g, g % 5 FROM generate_series(1, 1000) g;
"""
TABLES = ["items", "pairs", "notes", "orders", "pgbench_accounts", "pgbench_branches", "pgbench_tellers",
          "pgbench_history"]


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_cutover{index}", BASE_PORT + 2 * index)


def log_path(tag):
    return f"/tmp/dts-it-cutover-{tag}-{os.getpid()}.log"


def start_migration(pair, tag, *extra):
    status = f"/tmp/dts-it-cutover-{tag}-{os.getpid()}.json"
    if os.path.exists(status):
        os.unlink(status)
    log = open(log_path(tag), "a")
    p = subprocess.Popen([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                          "--status-file", status, *extra], stdout=log, stderr=log)

    def streaming():
        if p.poll() is not None:
            raise Failure(f"migrate exited with {p.returncode}: {tail(log_path(tag))}")
        try:
            with open(status) as f:
                return json.load(f).get("phase") in ("STREAMING", "CATCHING_UP")
        except (OSError, ValueError):
            return False
    wait_for("the migration to stream", streaming, 180)
    return p


def tail(path, n=20):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class Pgbench:
    """pgbench writing to the source in the background until stopped."""

    def __init__(self, server, seconds=300, clients=4):
        self.proc = subprocess.Popen(["pgbench", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-n",
                                      "-c", str(clients), "-T", str(seconds), "-R", "300", "postgres"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=60)
        return out + err


def setup(pair, scale=2):
    pair.src.sql(SCHEMA)
    subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(pair.src.port), "-U", "postgres", "-i", "-q", "-s",
                    str(scale), "postgres"], check=True, capture_output=True)


def verify(pair, *extra):
    out = subprocess.run([APPLIER, "verify", "--source", pair.src.conninfo, "--target", pair.target, "--json",
                          "--chunk-rows", "10000", *extra], capture_output=True, text=True, timeout=300)
    try:
        doc = json.loads(out.stdout)
    except ValueError:
        raise Failure(f"verify exited {out.returncode} without JSON: {out.stderr[-800:]}")
    return out.returncode, {t["table"].split(".")[-1]: t for t in doc["tables"]}, out.stderr


@test
def verify_under_pgbench_finds_no_false_difference_and_every_real_one():
    with Pair(0) as pair:
        setup(pair)
        p = start_migration(pair, "verify")
        bench = Pgbench(pair.src)
        try:
            runs = 0
            rechecked = 0
            for _ in range(6):
                rc, tables, err = verify(pair)
                bad = {k: v for k, v in tables.items() if v["result"] != "EQUAL"}
                check(rc == 0 and not bad, f"false difference under live writes (rc {rc}): {bad} {err[-500:]}")
                check(set(TABLES) <= set(tables), f"tables verified: {sorted(tables)}")
                check(tables["items"]["chunks"] == 4 and tables["items"]["sourceRows"] == 30000 and tables["notes"]["keyed"] is False,
                      f"chunks {tables['items']['chunks']}, notes keyed {tables['notes']['keyed']}")
                rechecked += sum(t["rechecked"] for t in tables.values())
                runs += 1
            print(f"    {runs} verify runs under pgbench, {rechecked} chunks re-checked, no false difference")

            # Now break the target on purpose, behind the applier's back.
            pair.dst_app("UPDATE items SET name = 'tampered' WHERE id = 15000; DELETE FROM items WHERE id = 25000; "
                         "INSERT INTO items (id, name) VALUES (40000, 'extra'); "
                         "UPDATE pairs SET v = -1 WHERE a = 7 AND b = 'k7'; DELETE FROM notes WHERE msg = 'note 5'")
            rc, tables, err = verify(pair)
            check(rc == 1, f"verify exit code {rc} with differences")
            items = tables["items"]
            check(items["result"] == "DIFFERENT", f"items: {items}")
            samples = [s for d in items["differences"] for s in d["samples"]]
            for want in ("id=15000: differs", "id=25000: missing on the target", "id=40000: only on the target"):
                check(want in samples, f"{want!r} not in {samples}")
            ranges = [d["range"] for d in items["differences"]]
            # 30000 rows in chunks of 10000, then an open-ended one for rows past the source's last key.
            check(sorted(ranges) == ["(id) > ('10000'::bigint) AND (id) <= ('20000'::bigint)",
                                     "(id) > ('20000'::bigint) AND (id) <= ('30000'::bigint)",
                                     "(id) > ('30000'::bigint)"], f"ranges {ranges}")
            pair_samples = [s for d in tables["pairs"]["differences"] for s in d["samples"]]
            check(pair_samples == ["a=7, b=k7: differs"], f"pairs: {pair_samples}")
            notes = tables["notes"]
            check(notes["result"] == "DIFFERENT" and notes["differences"][0]["targetRows"] ==
                  notes["differences"][0]["sourceRows"] - 1, f"notes: {notes}")
            others = {k: v["result"] for k, v in tables.items() if k not in ("items", "pairs", "notes")}
            check(all(r == "EQUAL" for r in others.values()), f"the other tables: {others}")
        finally:
            bench.stop()
            p.terminate()
            p.wait(60)


if __name__ == "__main__":
    main("cutover_test")
