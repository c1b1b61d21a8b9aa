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

import psycopg2
import re
import signal
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import scratch, APPLIER, AppPair, Failure, Pgbench, pgbench, check, check_equal, main, run_sql, tail_file, test, wait_for  # noqa: E402

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
CREATE TABLE incl (id int, doc json, PRIMARY KEY (id) INCLUDE (doc));
INSERT INTO incl SELECT g, json_build_object('g', g) FROM generate_series(1, 300) g;
CREATE SEQUENCE countdown INCREMENT BY -1 MINVALUE -1000000 MAXVALUE 0 START 0;
SELECT setval('countdown', -50);
"""
TABLES = ["items", "pairs", "notes", "orders", "incl", "pgbench_accounts", "pgbench_branches", "pgbench_tellers",
          "pgbench_history"]


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_cutover{index}", BASE_PORT + 2 * index)


def log_path(tag):
    return scratch(f"cutover-{tag}.log")


def start_migration(pair, tag, *extra):
    status = scratch(f"cutover-{tag}.json")
    if os.path.exists(status):
        os.unlink(status)
    log = open(log_path(tag), "a")
    p = subprocess.Popen([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                          "--status-file", status, *extra], stdout=log, stderr=log)

    def streaming():
        if p.poll() is not None:
            raise Failure(f"migrate exited with {p.returncode}: {tail_file(log_path(tag))}")
        try:
            with open(status) as f:
                return json.load(f).get("phase") in ("STREAMING", "CATCHING_UP")
        except (OSError, ValueError):
            return False
    wait_for("the migration to stream", streaming, 180)
    return p




def setup(pair, scale=2):
    pair.src.sql(SCHEMA)
    pgbench(pair.src, "-i", "-q", "-s", str(scale))


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
        bench = Pgbench(pair.src, clients=4)
        try:
            runs = 0
            rechecked = 0
            for _ in range(3):
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


class OrderWriter(threading.Thread):
    """The application: inserts orders one by one, remembering which commits succeeded and
    whether the source started refusing writes (SQLSTATE 25006, read-only transaction)."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server, self.committed, self.refused, self.other_errors = server, [], 0, []
        self.stopping = False

    def run(self):
        import psycopg2
        conn = self.server.connect()
        while not self.stopping:
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO orders (item_id, qty) VALUES (1, 1) RETURNING id")
                    self.committed.append(cur.fetchone()[0])
            except psycopg2.Error as e:
                if e.pgcode == "25006":
                    self.refused += 1
                else:
                    self.other_errors.append(str(e))
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
                conn = self.server.connect()

    def stop(self):
        self.stopping = True
        self.join(30)


def complete(pair, *extra):
    return subprocess.run([APPLIER, "complete", "--source", pair.src.conninfo, "--target", pair.target, *extra],
                          capture_output=True, text=True, timeout=600)


@test
def complete_under_pgbench_cuts_over_with_a_measured_window():
    with Pair(1) as pair:
        setup(pair)
        p = start_migration(pair, "complete")
        bench = Pgbench(pair.src, clients=4)
        writer = OrderWriter(pair.src)
        writer.start()
        try:
            wait_for("the application to write", lambda: len(writer.committed) > 50, 60)
            out = complete(pair, "--max-lag", "2000", "--sequence-shift", "1000", "--verify")
            check(out.returncode == 0, f"complete exited {out.returncode}: {out.stderr[-3000:]}")
            m = re.search(r"read-only window: (\d+) ms", out.stdout)
            check(m is not None, f"no window in: {out.stdout}")
            window = int(m.group(1))
            check(window > 0, f"window {window} ms: not measured")
            check("verify: all" in out.stdout and "point the application at the target" in out.stdout, out.stdout)
            undo = re.search(r"^ +(ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf\(\);)$",
                             out.stdout, re.M)
            check(undo is not None, f"no undo statement in: {out.stdout}")

            # The application's writes are refused from the read-only point on.
            wait_for("the application's writes to be refused", lambda: writer.refused > 0, 30)
            writer.stop()
            bench_out = bench.stop()
            check("read-only transaction" in bench_out, f"pgbench was not refused: {bench_out[-400:]}")
            check(not writer.other_errors, f"unexpected errors: {writer.other_errors[:3]}")
            try:
                pair.src.sql("INSERT INTO orders (item_id, qty) VALUES (1, 1)")
            except psycopg2.errors.ReadOnlySqlTransaction:
                pass
            else:
                raise Failure("the source accepted a write after complete")

            # The applier stopped by itself at the marker; the slot and origin are gone.
            check(p.wait(60) == 0, f"migrate exited {p.returncode}: {tail_file(log_path('complete'))}")
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "a slot is left on the source")
            check(pair.dst_app("SELECT count(*) FROM pg_replication_origin")[0][0] == 0, "an origin is left")
            check(pair.dst_app("SELECT phase FROM dts.migration")[0][0] == "COMPLETED", "phase")
            # An applier started again after the cutover (a supervisor restarting it) ends at once.
            again = subprocess.run([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target],
                                   capture_output=True, text=True, timeout=60)
            check(again.returncode == 0 and "completed (cut over)" in again.stderr, f"again: {again.stderr[-300:]}")

            rows = check_equal(pair.src, pair.target_view(), TABLES)
            last = max(writer.committed)
            check(pair.dst_app(f"SELECT count(*) FROM orders WHERE id = {last}")[0][0] == 1, "the last order is missing")
            src_seq = pair.src.value("SELECT last_value FROM orders_id_seq")
            dst_seq = pair.dst_app("SELECT last_value FROM orders_id_seq")[0][0]
            check(dst_seq >= src_seq + 1000, f"target sequence {dst_seq}, source {src_seq} + 1000")
            down = pair.dst_app("SELECT last_value FROM countdown")[0][0]
            check(down <= -1050, f"a descending sequence must move down by the shift: {down}")
            print(f"    window {window} ms, {len(writer.committed)} orders committed, {writer.refused} refused, "
                  f"{rows} rows equal")

            # The undo it printed makes the source writable again.
            pair.src.sql("ALTER SYSTEM RESET default_transaction_read_only")
            pair.src.sql("SELECT pg_reload_conf()")
            wait_for("the source to be writable", lambda: _writable(pair.src), 10)
        finally:
            writer.stop()
            bench.stop()
            if p.poll() is None:
                p.terminate()
                p.wait(60)


def _writable(server):
    try:
        server.sql("INSERT INTO orders (item_id, qty) VALUES (1, 1)")
        return True
    except Exception:  # noqa: BLE001 - still read-only
        return False


@test
def complete_with_database_scope_leaves_other_databases_writable():
    with Pair(4) as pair:
        setup(pair, scale=1)
        pair.src.sql("CREATE DATABASE other")
        p = start_migration(pair, "dbscope")
        writer = OrderWriter(pair.src)
        writer.start()
        try:
            wait_for("the application to write", lambda: len(writer.committed) > 20, 60)
            out = complete(pair, "--read-only-scope", "database")
            check(out.returncode == 0, f"complete exited {out.returncode}: {out.stderr[-3000:]}")
            check('ALTER DATABASE "postgres" RESET default_transaction_read_only;' in out.stdout, out.stdout)
            wait_for("the application's writes to be refused", lambda: writer.refused > 0, 30)
            writer.stop()
            check(not writer.other_errors or all("terminat" in e for e in writer.other_errors),
                  f"unexpected errors: {writer.other_errors[:3]}")
            run_sql(pair.src.conninfo.replace("dbname=postgres", "dbname=other"), "CREATE TABLE still_writable (id int)")
            check(p.wait(60) == 0, f"migrate exited {p.returncode}")
            check_equal(pair.src, pair.target_view(), ["orders", "items", "pgbench_accounts"])
        finally:
            writer.stop()
            if p.poll() is None:
                p.terminate()
                p.wait(60)


@test
def complete_interrupted_after_the_read_only_point_makes_the_source_writable_again():
    with Pair(5) as pair:
        setup(pair, scale=1)
        p = start_migration(pair, "interrupt")
        pair.src.sql("ALTER ROLE postgres SET default_transaction_read_only = off")
        out = complete(pair)
        check(out.returncode == 2 and "set per role or database" in out.stderr, f"role override: {out.stderr[-400:]}")
        pair.src.sql("ALTER ROLE postgres RESET default_transaction_read_only")
        # A transaction begun before the read-only point keeps complete draining...
        holder = pair.src.connect()
        holder.autocommit = False
        holder.cursor().execute("SELECT count(*) FROM orders")
        cutover = subprocess.Popen([APPLIER, "complete", "--source", pair.src.conninfo, "--target", pair.target,
                                    "--drain-timeout", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for("the source to turn read-only", lambda: pair.src.value("SHOW default_transaction_read_only") == "on"
                 or cutover.poll() is not None, 60)
        cutover.send_signal(signal.SIGTERM)  # ...when the operator interrupts it
        _, err = cutover.communicate(timeout=60)
        holder.rollback()
        holder.close()
        check(cutover.returncode == 1 and "interrupted while transactions drained" in err
              and "the source is writable again" in err, f"exit {cutover.returncode}: {err[-600:]}")
        p.terminate()
        p.wait(30)
        check(pair.src.value("SHOW default_transaction_read_only") == "off" and _writable(pair.src),
              "the source was left read-only")


@test
def complete_refuses_without_a_running_applier_and_leaves_the_source_writable():
    with Pair(2) as pair:
        setup(pair, scale=1)
        out = complete(pair)
        check(out.returncode == 2 and "no migration streams into the target" in out.stderr, out.stderr[-500:])
        p = start_migration(pair, "norun")
        p.terminate()
        p.wait(60)
        out = complete(pair)
        check(out.returncode == 2 and "run `dts_applier migrate` again" in out.stderr, out.stderr[-500:])
        check(pair.src.value("SHOW default_transaction_read_only") == "off", "the source was left read-only")
        check(_writable(pair.src), "the source refuses writes")
        check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 1, "the slot should be kept")


@test
def migrate_refuses_a_failed_precheck_unless_skipped():
    with Pair(3) as pair:
        pair.src.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        pair.dst_app("CREATE TABLE squatter (id int)")
        out = subprocess.run([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                              "--mode", "full"], capture_output=True, text=True, timeout=300)
        check(out.returncode == 2 and "prechecks FAILED: target_empty" in out.stderr
              and "--skip-check target_empty" in out.stderr and "squatter" in out.stderr, out.stderr[-800:])
        check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "a slot was created anyway")
        out = subprocess.run([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                              "--mode", "full", "--skip-check", "nonsense"], capture_output=True, text=True)
        check(out.returncode != 0 and "nonsense" in out.stderr, out.stderr[-500:])
        out = subprocess.run([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                              "--mode", "full", "--skip-check", "target_empty"], capture_output=True, text=True,
                             timeout=300)
        check(out.returncode == 0 and "skipped as asked" in out.stderr, out.stderr[-800:])
        check(pair.dst_app("SELECT count(*) FROM t")[0][0] == 1, "t was not copied")


@test
def large_objects_over_several_windows_are_brought_up_to_date_in_the_window():
    """2,600 large objects (three of complete's windows of 1,000): changed, removed and new ones
    on the source, at the edges and inside the windows, and drift on the target by hand."""
    with Pair(7) as pair:
        for side in (pair.src.conninfo, pair.target):
            run_sql(side, "CREATE ROLE lo_reader")
        pair.src.sql("CREATE TABLE t (id int PRIMARY KEY); "
                     "SELECT lo_from_bytea(g * 10, convert_to('object ' || g, 'UTF8')) FROM generate_series(1, 2600) g")
        objects = ("SELECT oid::bigint, pg_get_userbyid(lomowner), coalesce(lomacl::text, ''), md5(lo_get(oid)) "
                   "FROM pg_largeobject_metadata ORDER BY oid")
        p = start_migration(pair, "largeobjects")
        try:
            wait_for("the large objects' first copy", lambda: pair.dst_app(objects) == pair.src.sql(objects), 120)
            pair.src.sql("SELECT lo_put(oid, 0, 'changed') FROM pg_largeobject_metadata WHERE oid::bigint % 70 = 0; "
                         "SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid::bigint % 110 = 0; "
                         "SELECT lo_from_bytea(o, 'new') FROM unnest(ARRAY[15, 1005, 10005, 25995, 30000]) o; "
                         "ALTER LARGE OBJECT 500 OWNER TO lo_reader; GRANT SELECT ON LARGE OBJECT 510 TO lo_reader")
            pair.dst_app("SELECT lo_from_bytea(o, 'only on the target') FROM unnest(ARRAY[5, 9995, 26010]) o; "
                         "SELECT lo_put(2000, 0, 'drift')")
            unlinked = {o for o in range(10, 26001, 10) if o % 110 == 0}
            changed = ({o for o in range(10, 26001, 10) if o % 70 == 0} - unlinked) | {500, 510, 2000}
            expected = len(changed) + len(unlinked) + 3 + 5
            out = complete(pair)
            check(out.returncode == 0, f"complete exited {out.returncode}: {out.stderr[-2000:]}")
            check(f"{expected} large objects brought up to date" in out.stdout, f"expected {expected}: {out.stdout[-800:]}")
            check(p.wait(60) == 0, f"migrate exited {p.returncode}")
            want, got = pair.src.sql(objects), pair.dst_app(objects)
            check(len(want) == 2600 - len(unlinked) + 5, f"{len(want)} objects on the source")
            check(got == want, f"{len(got)} objects on the target, {len(want)} on the source; first difference: "
                               f"{[(g, w) for g, w in zip(got + [None] * len(want), want + [None] * len(got)) if g != w][:1]}")
        finally:
            if p.poll() is None:
                p.terminate()
                p.wait(60)


if __name__ == "__main__":
    main("cutover_test")
