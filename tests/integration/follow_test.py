#!/usr/bin/python3
"""dts_applier follow against real source and target servers: every table equal at the end,
under concurrent writes, across kill -9, lost connections and restarts.

Usage: follow_test.py [test_name ...]
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Applier, SlotPair, check, check_equal, create_on_both, main, pgbench, rng,  # noqa: E402
                     run_to, test, wait_for)

BASE_PORT = int(os.environ.get("DTS_FOLLOW_TEST_PORT", "25510"))

MANY_TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE many_types (
  id bigserial PRIMARY KEY, i2 int2, i4 int4, i8 int8, num numeric(14,4), f4 float4, f8 float8,
  t text, vc varchar(20), c char(4), b bytea, bo bool, d date, tm time, ts timestamp, tstz timestamptz,
  iv interval, u uuid, js json, jsb jsonb, arr int[], tarr text[], rng int4range, e mood,
  ip inet, mac macaddr, m money, bits bit(4), tsv tsvector, x xml, pt point, big text
);
"""

MANY_TYPES_WRITES = """
INSERT INTO many_types (i2, i4, i8, num, f4, f8, t, vc, c, b, bo, d, tm, ts, tstz, iv, u, js, jsb, arr, tarr,
                        rng, e, ip, mac, m, bits, tsv, x, pt, big)
SELECT g % 32000, g, g::int8 * 1000000007, g / 7.0, g / 3.0, 'NaN'::float8 * (g % 2) + g, 'text ' || g, 'vc' || g,
       'c', decode(md5(g::text), 'hex'), g % 2 = 0, '2024-01-01'::date + g, '12:00'::time + g * interval '1 s',
       '2024-01-01'::timestamp + g * interval '1 min', now(), g * interval '1 h', gen_random_uuid(),
       json_build_object('g', g), jsonb_build_object('k', g, 'a', ARRAY[g, g]), ARRAY[g, NULL, -g],
       ARRAY['a b', 'c"d', NULL], int4range(g, g + 10), (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood,
       ('10.0.' || g % 250 || '.1')::inet, '08:00:2b:01:02:03', (g * 1.25)::numeric::money, B'1010', to_tsvector('simple', 'fat cat ' || g),
       ('<r>' || g || '</r>')::xml, point(g, -g), CASE WHEN g % 5 = 0 THEN repeat(md5(g::text), 400) END
  FROM generate_series(1, {n}) g;
UPDATE many_types SET num = num + 1, tstz = now() WHERE id % 3 = 0;
UPDATE many_types SET big = repeat('changed', 2000) WHERE id % 10 = 0;
DELETE FROM many_types WHERE id % 7 = 0;
"""


class Pair(SlotPair):
    """A source and a target server, and the tables every test compares."""

    def __init__(self, index, *settings):
        super().__init__("it_follow", index, BASE_PORT + 2 * index, *settings)


def pgbench_schema(pair):
    """pgbench's tables on both sides (no data: the data travels through the slot)."""
    for s in (pair.src, pair.dst):
        pgbench(s, "-i", "-I", "dtp", "-s", "2")


PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


@test
def pgbench_and_many_types_while_following():
    with Pair(0) as pair:
        pgbench_schema(pair)
        create_on_both(pair.src, pair.dst, MANY_TYPES)
        slot = pair.slot()
        a = Applier(pair.src, pair.dst, slot).start()
        pgbench(pair.src, "-i", "-I", "g", "-s", "2")  # 200k accounts, through the stream
        bench = threading.Thread(target=pgbench, args=(pair.src, "-n", "-c", "2", "-j", "2", "-T", "8"))
        bench.start()
        for _ in range(4):
            pair.src.sql(MANY_TYPES_WRITES.replace("{n}", "300"))
        bench.join()
        end = pair.src.lsn()
        a.wait_applied(end)
        s = a.status()
        check(s["phase"] == "STREAMING", f"phase {s['phase']}")
        rows = check_equal(pair.src, pair.dst, PGBENCH_TABLES + ["many_types"])
        check(rows > 200000, f"only {rows} rows compared")
        check(a.stop() == 0, "follow did not stop cleanly on SIGTERM")
        s = a.status()
        check(s["phase"] == "STOPPED" and s["error"] is None, f"final status {s}")
        check(s["transactions_applied"] > 1000, f"transactions_applied {s['transactions_applied']}")


@test
def replica_identity_full_toast_truncate_and_streaming():
    with Pair(1) as pair:
        create_on_both(pair.src, pair.dst, '''
            CREATE TABLE full_dup (a int, b text);
            ALTER TABLE full_dup REPLICA IDENTITY FULL;
            CREATE TABLE toasty (id int PRIMARY KEY, big text, small int);
            ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
            CREATE TABLE parent (id serial PRIMARY KEY, v text);
            CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
            CREATE TABLE "Weird ""Name""" ("Col A" int PRIMARY KEY, "ü" text);
        ''')
        slot = pair.slot()
        a = Applier(pair.src, pair.dst, slot).start()
        pair.src.sql('''
            INSERT INTO full_dup VALUES (1, 'x'), (1, 'x'), (2, NULL), (3, 'y');
            UPDATE full_dup SET b = 'z' WHERE a = 1 AND ctid = (SELECT min(ctid) FROM full_dup WHERE a = 1);
            DELETE FROM full_dup WHERE a = 2;
            INSERT INTO toasty SELECT g, repeat(md5(g::text), 500), g FROM generate_series(1, 50) g;
            UPDATE toasty SET small = small + 1;
            INSERT INTO parent (v) SELECT 'p' || g FROM generate_series(1, 20) g;
            INSERT INTO child SELECT g, g FROM generate_series(1, 20) g;
            INSERT INTO "Weird ""Name""" VALUES (1, 'é'), (2, NULL);
            UPDATE "Weird ""Name""" SET "ü" = \'ü\' WHERE "Col A" = 2;
        ''')
        pair.src.sql("TRUNCATE parent, child RESTART IDENTITY")
        pair.src.sql("INSERT INTO parent (v) VALUES ('after')")
        # A large transaction, streamed while in progress, with a rolled-back subtransaction.
        with pair.src.connect() as c, c.cursor() as cur:
            c.autocommit = False
            cur.execute("INSERT INTO toasty SELECT g, 'row ' || g, g FROM generate_series(1000, 40000) g")
            cur.execute("SAVEPOINT s")
            cur.execute("DELETE FROM toasty WHERE id < 30000")
            cur.execute("ROLLBACK TO SAVEPOINT s")
            cur.execute("UPDATE toasty SET small = -small WHERE id % 2 = 0")
            c.commit()
        # And one aborted after streaming.
        with pair.src.connect() as c, c.cursor() as cur:
            c.autocommit = False
            cur.execute("INSERT INTO toasty SELECT g, 'gone', g FROM generate_series(50000, 90000) g")
            c.rollback()
        end = pair.src.lsn()
        a.wait_applied(end)
        check_equal(pair.src, pair.dst, ["full_dup", "toasty", "parent", "child", '"Weird ""Name"""'])
        check(a.stop() == 0, "follow did not stop cleanly")


@test
def replica_identity_nothing_stops_with_a_clear_error():
    with Pair(2) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE nokey (a int, b text)")
        slot = pair.slot()
        pair.src.sql("INSERT INTO nokey VALUES (1, 'a')")
        pair.src.sql("UPDATE nokey SET b = 'b'")
        a = Applier(pair.src, pair.dst, slot).start()
        rc = a.wait_exit(60)
        log = a.tail()
        check(rc == 1, f"exit code {rc}, expected 1")
        check('"public"."nokey"' in log and "REPLICA IDENTITY FULL" in log, f"message does not name the table and fix: {log}")
        s = a.status()
        check(s["phase"] == "FAILED" and "nokey" in (s["error"] or ""), f"status {s}")
        # The insert before it may have been committed in an earlier group or rolled back with the
        # failed one; it is never there twice.
        n = pair.dst.value("SELECT count(*) FROM nokey")
        check(n <= 1, f"{n} copies of the one inserted row on the target")


@test
def rejected_change_names_table_key_lsn_and_sqlstate():
    with Pair(3) as pair:
        pair.src.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        pair.dst.sql("CREATE TABLE t (id int PRIMARY KEY, v text CHECK (v <> 'bad'))")
        slot = pair.slot()
        pair.src.sql("INSERT INTO t VALUES (1, 'good')")
        pair.src.sql("INSERT INTO t VALUES (42, 'bad')")
        a = Applier(pair.src, pair.dst, slot, "--resume-mode", "auto").start()
        rc = a.wait_exit(60)
        log = a.tail()
        check(rc == 1, f"exit code {rc}")
        for needle in ('"public"."t"', '("id")=(42)', "23514", "violates check constraint"):
            check(needle in log, f"{needle!r} missing from: {log}")
        # Grouped with the rejected one, the good transaction before it rolled back too (it is
        # applied again on resume): the target never holds half of a group.
        check(pair.dst.value("SELECT count(*) FROM t WHERE id = 42") == 0, "the rejected row is on the target")
        # Fixing the target and running again resumes exactly there.
        pair.dst.sql("ALTER TABLE t DROP CONSTRAINT t_v_check")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check_equal(pair.src, pair.dst, ["t"])


@test
def added_and_dropped_columns_follow_the_relation():
    with Pair(10) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE t (id int PRIMARY KEY, a text, gone int)")
        slot = pair.slot()
        a = Applier(pair.src, pair.dst, slot).start()
        pair.src.sql("INSERT INTO t SELECT g, 'a', g FROM generate_series(1, 100) g")
        a.wait_applied(pair.src.lsn())
        # DDL is not replicated: the target gets it first when adding, last when dropping.
        pair.dst.sql("ALTER TABLE t ADD COLUMN added numeric DEFAULT 0")
        pair.src.sql("ALTER TABLE t ADD COLUMN added numeric DEFAULT 0")
        pair.src.sql("INSERT INTO t SELECT g, 'b', g, g / 3.0 FROM generate_series(101, 200) g")
        pair.src.sql("UPDATE t SET added = -1 WHERE id <= 50")
        pair.src.sql("ALTER TABLE t DROP COLUMN gone")
        pair.src.sql("INSERT INTO t SELECT g, 'c', g FROM generate_series(201, 300) g")
        pair.src.sql("UPDATE t SET a = 'd' WHERE id % 3 = 0")
        a.wait_applied(pair.src.lsn())
        pair.dst.sql("ALTER TABLE t DROP COLUMN gone")
        check_equal(pair.src, pair.dst, ["t"])
        check(a.stop() == 0, "follow did not stop cleanly")


@test
def hot_rows_and_a_second_unique_index_end_equal():
    with Pair(11) as pair:
        create_on_both(pair.src, pair.dst, '''
            CREATE TABLE counters (id int PRIMARY KEY, n bigint, note text);
            CREATE TABLE people (id int PRIMARY KEY, email text UNIQUE, big text);
            ALTER TABLE people ALTER COLUMN big SET STORAGE EXTERNAL;
        ''')
        slot = pair.slot()
        a = Applier(pair.src, pair.dst, slot).start()
        pair.src.sql("INSERT INTO counters SELECT g, 0, 'c' FROM generate_series(1, 5) g")
        pair.src.sql("INSERT INTO people SELECT g, 'p' || g || '@x', repeat(md5(g::text), 300) FROM generate_series(1, 20) g")
        # Many small transactions hammering the same rows (merged per row within a group).
        with pair.src.connect() as c, c.cursor() as cur:
            for i in range(600):
                cur.execute("UPDATE counters SET n = n + 1, note = %s WHERE id = %s", (f"t{i}", i % 5 + 1))
                if i % 7 == 0:
                    cur.execute("INSERT INTO counters VALUES (%s, %s, 'new')", (1000 + i, i))
                    cur.execute("UPDATE counters SET n = -n WHERE id = %s", (1000 + i,))
                if i % 50 == 0:
                    cur.execute("DELETE FROM counters WHERE id = %s", (1000 + i,))
            # Emails rotate through rows: in any other order the unique index would object.
            for i in range(100):
                x, y = i % 20 + 1, (i + 1) % 20 + 1
                cur.execute("SELECT (SELECT email FROM people WHERE id = %s), (SELECT email FROM people WHERE id = %s)",
                            (x, y))
                ex, ey = cur.fetchone()
                cur.execute("UPDATE people SET email = 'tmp' WHERE id = %s", (x,))
                cur.execute("UPDATE people SET email = %s WHERE id = %s", (ex, y))
                cur.execute("UPDATE people SET email = %s WHERE id = %s", (ey, x))
            cur.execute("UPDATE people SET email = email || '.org' WHERE id % 2 = 0")  # big unchanged
        a.wait_applied(pair.src.lsn())
        check_equal(pair.src, pair.dst, ["counters", "people"])
        check(a.stop() == 0, "follow did not stop cleanly")


@test
def a_row_missing_on_the_target_stops_the_job():
    with Pair(9) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE t (id int PRIMARY KEY, v text)")
        slot = pair.slot()
        pair.src.sql("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 10) g")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        pair.dst.sql("DELETE FROM t WHERE id = 7")  # the target drifts
        pair.src.sql("UPDATE t SET v = 'w' WHERE id = 7")
        a = Applier(pair.src, pair.dst, slot).start()
        rc = a.wait_exit(60)
        log = a.tail()
        check(rc == 1, f"exit code {rc}: {log}")
        check("UPDATE on \"public\".\"t\" key (\"id\")=(7)" in log and "no row matches" in log, f"message: {log}")


@test
def kill9_at_random_moments_loses_and_duplicates_nothing():
    with Pair(4) as pair:
        pgbench_schema(pair)
        create_on_both(pair.src, pair.dst, "CREATE TABLE seqlog (id bigserial PRIMARY KEY, note text)")
        slot = pair.slot()
        pgbench(pair.src, "-i", "-I", "g", "-s", "2")
        stop = threading.Event()

        def writer():
            while not stop.is_set():
                pair.src.sql("INSERT INTO seqlog (note) SELECT 'n' || g FROM generate_series(1, %s) g",
                             (rng.randint(1, 300),))
        w = threading.Thread(target=writer)
        w.start()
        bench = threading.Thread(target=pgbench, args=(pair.src, "-n", "-c", "2", "-j", "2", "-T", "12"))
        bench.start()
        rounds = 0
        try:
            while rounds < 6:
                a = Applier(pair.src, pair.dst, slot).start()
                time.sleep(rng.uniform(0.05, 1.5))  # a random moment to kill at, not synchronisation
                check(a.proc.poll() is None, f"applier died on its own: {a.tail()}")
                a.kill9()
                rounds += 1
        finally:
            stop.set()
            w.join()
            bench.join()
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        rows = check_equal(pair.src, pair.dst, PGBENCH_TABLES + ["seqlog"])
        print(f"       {rounds} kills survived, {rows} rows compared, 0 lost, 0 duplicated")


@test
def walsender_terminated_and_target_restarted_reconnect():
    with Pair(5) as pair:
        pgbench_schema(pair)
        slot = pair.slot()
        a = Applier(pair.src, pair.dst, slot, "--resume-mode", "auto").start()
        pgbench(pair.src, "-i", "-I", "g", "-s", "1")
        bench = threading.Thread(target=pgbench, args=(pair.src, "-n", "-c", "2", "-j", "2", "-T", "12"))
        bench.start()
        wait_for("the stream to start", lambda: pair.src.value(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name <> 'walreceiver'"), 30)
        pair.src.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        wait_for("a reconnect", lambda: (a.status() or {}).get("reconnects", 0) >= 1, 30)
        wait_for("streaming again", lambda: (a.status() or {}).get("phase") == "STREAMING", 30)
        pair.dst.restart()
        wait_for("a second reconnect", lambda: (a.status() or {}).get("reconnects", 0) >= 2, 60)
        bench.join()
        a.wait_applied(pair.src.lsn(), timeout=120)
        check_equal(pair.src, pair.dst, PGBENCH_TABLES)
        check(a.stop() == 0, "follow did not stop cleanly")


@test
def manual_resume_mode_stops_cleanly_on_a_lost_connection():
    with Pair(6) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE t (id int PRIMARY KEY)")
        slot = pair.slot()
        a = Applier(pair.src, pair.dst, slot, "--resume-mode", "manual").start()
        pair.src.sql("INSERT INTO t SELECT generate_series(1, 100)")
        a.wait_applied(pair.src.lsn())
        pair.src.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        rc = a.wait_exit(30)
        check(rc == 3, f"exit code {rc}, expected 3: {a.tail()}")
        check("resume mode is manual" in a.tail(), f"no clear message: {a.tail()}")
        pair.src.sql("INSERT INTO t SELECT generate_series(101, 200)")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check_equal(pair.src, pair.dst, ["t"])


@test
def a_large_streamed_transaction_in_bounded_memory():
    """A 1M-row transaction (2M in `make soak`), streamed while in progress: memory stays flat."""
    with Pair(7) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE big (id bigint PRIMARY KEY, v text, n numeric)")
        slot = pair.slot()
        rows = int(os.environ.get("DTS_BIG_TXN_ROWS", "1000000"))
        pair.src.sql(f"INSERT INTO big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, {rows}) g")
        a = run_to(pair.src, pair.dst, slot, pair.src.lsn(), timeout=300)
        check_equal(pair.src, pair.dst, ["big"])
        peak_mb = a.peak_rss_kb / 1024
        print(f"       applier peak RSS {peak_mb:.0f} MB for a {rows // 1000000}M-row transaction")
        check(0 < peak_mb < 256, f"peak RSS {peak_mb:.0f} MB")


@test
def bad_options_and_missing_slot_are_clear():
    with Pair(8) as pair:
        out = subprocess.run([os.path.join(os.path.dirname(__file__), "..", "..", "build", "dts_applier"), "follow",
                              "--source", pair.src.conninfo, "--target", pair.dst.conninfo, "--slot", "s",
                              "--resume-mode", "sometimes"], capture_output=True, text=True)
        check(out.returncode != 0 and "resume-mode" in out.stderr, f"bad resume mode: {out.returncode} {out.stderr}")
        out = subprocess.run([os.path.join(os.path.dirname(__file__), "..", "..", "build", "dts_applier"), "follow",
                              "--source", pair.src.conninfo, "--target", pair.dst.conninfo, "--slot", "s",
                              "--until-lsn", "nonsense"], capture_output=True, text=True)
        check(out.returncode == 2 and "--until-lsn" in out.stderr, f"bad lsn: {out.returncode} {out.stderr}")
        a = Applier(pair.src, pair.dst, "no_such_slot").start()
        rc = a.wait_exit(30)
        check(rc == 1 and "does not exist" in a.tail() and "--create-slot" in a.tail(), f"missing slot: {a.tail()}")
        secret = pair.src.conninfo + " password=hunter2"
        out = subprocess.run([os.path.join(os.path.dirname(__file__), "..", "..", "build", "dts_applier"), "follow",
                              "--source", secret.replace("127.0.0.1", "127.0.0.2"), "--target", pair.dst.conninfo,
                              "--slot", "s", "--resume-mode", "manual"], capture_output=True, text=True, timeout=60)
        check("hunter2" not in out.stderr and "********" in out.stderr, f"password in log: {out.stderr}")


if __name__ == "__main__":
    main("follow_test")
