#!/usr/bin/python3
"""Set-based apply of UPDATEs and DELETEs (issue 14): runs of them on one table go as one
statement per batch, for every replica identity, and end exactly like the source: keys of
several columns and odd names, partitions, enums and other text-only types, unchanged large
values, REPLICA IDENTITY FULL with duplicate rows and NULLs, rows changed twice in a run, key
changes and unique swaps in between; a refused batch commits nothing.

Usage: set_apply_test.py [test_name ...]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Applier, SlotPair, check, check_equal, create_on_both, main, run_to,  # noqa: E402
                     test)

BASE_PORT = int(os.environ.get("DTS_SET_APPLY_TEST_PORT", "26800"))
STREAM = ("--decoding-work-mem", "64kB")  # large transactions stream at once


class Pair(SlotPair):
    def __init__(self, index, *settings):
        super().__init__("it_set", index, BASE_PORT + 2 * index, *settings)


def in_one_transaction(server, *statements):
    with server.connect() as c, c.cursor() as cur:
        c.autocommit = False
        for s in statements:
            cur.execute(s)
        c.commit()


def equal_tables(pair, schema, fill):
    """The same tables and rows on both sides, then the slot (the rows are not in the stream)."""
    create_on_both(pair.src, pair.dst, schema)
    pair.src.sql(fill)
    pair.dst.sql(fill)
    return pair.slot()


def status_after(source, target, slot, *extra):
    a = run_to(source, target, slot, source.lsn(), *extra, timeout=300)
    return a.status()


SCHEMA = '''
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE k (id int PRIMARY KEY, v text, n numeric(12,3), ts timestamptz, m mood, b bytea, doc json,
                    big text);
    ALTER TABLE k ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE "Odd ""Name""" (a int, "B c" text, val int, PRIMARY KEY (a, "B c"));
    CREATE TABLE p (id int, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
    CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (20000);
    CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (20000) TO (40000);
    CREATE TYPE addr AS (street text, n int);
    CREATE TABLE comp (id int PRIMARY KEY, a addr, q int);
    CREATE TABLE ui (a int NOT NULL, b text NOT NULL, v int, UNIQUE (b, a));
    ALTER TABLE ui REPLICA IDENTITY USING INDEX ui_b_a_key;
'''
FILL = '''
    INSERT INTO k SELECT g, 'v' || g, g / 7.0, '2026-01-01'::timestamptz + g * interval '1 min',
                         (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, decode(md5(g::text), 'hex'),
                         json_build_object('g', g), CASE WHEN g % 100 = 0 THEN repeat(md5(g::text), 400) END
      FROM generate_series(1, 30000) g;
    INSERT INTO "Odd ""Name""" SELECT g % 100, 'k ' || (g / 100), g FROM generate_series(1, 6000) g;
    INSERT INTO p SELECT g, 'p' || g FROM generate_series(1, 39999) g;
    INSERT INTO ui SELECT g % 50, 'b' || (g / 50), g FROM generate_series(1, 5000) g;
    INSERT INTO comp SELECT g, ROW('street ' || g, g)::addr, g FROM generate_series(1, 3000) g;
'''
CHANGES = [
    # Every column but the large one, which stays an unchanged TOAST value where it is set.
    "UPDATE k SET v = v || '!', n = n * 2, ts = ts + interval '1 day', m = 'happy', b = b || '\\x00'::bytea,"
    " doc = json_build_object('new', id) WHERE id % 2 = 0",
    "DELETE FROM k WHERE id % 5 = 0",
    "UPDATE k SET big = repeat('z', 5000) WHERE id % 300 = 1",  # a new large value
    # The same rows again: a run must end before a row it changed comes back.
    "UPDATE k SET v = v || '?' WHERE id % 4 = 0",
    'UPDATE "Odd ""Name""" SET val = -val WHERE a % 2 = 1',
    'DELETE FROM "Odd ""Name""" WHERE val % 3 = 0',
    "UPDATE p SET v = upper(v) WHERE id % 3 <> 0",
    "DELETE FROM p WHERE id % 7 = 0",
    # A unique index as the replica identity (a key of two columns, in index order b, a).
    "UPDATE ui SET v = v * 10 WHERE a % 2 = 0",
    "DELETE FROM ui WHERE v % 3 = 0",
    # A composite column (unnest would expand it into its fields: these go one by one).
    "UPDATE comp SET a = ROW('moved', q)::addr, q = -q WHERE id % 2 = 0",
    "DELETE FROM comp WHERE id % 3 = 0",
]
TABLES = ["k", '"Odd ""Name"""', "p", "ui", "comp"]


@test
def large_updates_and_deletes_go_set_based_and_end_equal():
    """Streamed (applied as they arrive) and not streamed (applied at commit, in a group)."""
    with Pair(0) as pair:
        slot = equal_tables(pair, SCHEMA, FILL)
        in_one_transaction(pair.src, *CHANGES)
        st = status_after(pair.src, pair.dst, slot, *STREAM)
        rows = check_equal(pair.src, pair.dst, TABLES)
        check(st["set_statements"] > 0 and st["set_rows"] > 30000,
              f"the streamed transaction's changes did not go set-based: {st}")
        first = st["set_rows"]
        # The same again, not streamed: applied at its commit on the group's session.
        in_one_transaction(pair.src, *CHANGES)
        st = status_after(pair.src, pair.dst, slot, "--no-streaming")
        rows = check_equal(pair.src, pair.dst, TABLES)
        check(st["set_rows"] > 20000, f"the unstreamed transaction's changes did not go set-based: {st}")
        print(f"       {first} + {st['set_rows']} changes in set-based statements, {rows} rows compared")


@test
def replica_identity_full_duplicates_and_nulls():
    """Identical rows: each change takes exactly one; NULLs match NULLs; json compares as text;
    a row updated twice in one transaction."""
    with Pair(1) as pair:
        slot = equal_tables(pair, '''
            CREATE TABLE f (a int, b text, c json);
            ALTER TABLE f REPLICA IDENTITY FULL;
            CREATE TABLE fu (a int UNIQUE, b text);
            ALTER TABLE fu REPLICA IDENTITY FULL;
            CREATE TABLE fi (a int, b text);
            ALTER TABLE fi REPLICA IDENTITY FULL;
            CREATE INDEX ON fi (a);
        ''', '''INSERT INTO f SELECT g % 2000, CASE WHEN g % 3 = 0 THEN NULL ELSE 'b' || (g % 2000) END,
                                   json_build_object('x', g % 2000) FROM generate_series(1, 6000) g;
                  INSERT INTO f SELECT g, '', NULL FROM generate_series(1, 500) g;
                  INSERT INTO fu SELECT g, 'u' FROM generate_series(1, 3000) g;
                  INSERT INTO fi SELECT g % 700, 'i' FROM generate_series(1, 2100) g;''')
        in_one_transaction(
            pair.src,
            # One row of each group of duplicates (the source picks which: the target may pick
            # another, the table ends the same).
            "UPDATE f SET b = 'one' WHERE ctid IN (SELECT min(ctid) FROM f GROUP BY a, b, c::text)",
            # Two of three duplicates.
            "DELETE FROM f WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER "
            "(PARTITION BY a, b, c::text ORDER BY ctid) r FROM f WHERE a % 4 = 0) x WHERE r <= 2)",
            "UPDATE f SET b = 'was null' WHERE b IS NULL AND a % 2 = 1",
            "UPDATE f SET b = NULL WHERE b = ''",  # '' and NULL are different rows
            "UPDATE f SET a = a + 100000 WHERE a % 5 = 0",  # again, rows changed above
            # A unique index: FULL UPDATEs go one by one (a set could collide midway), DELETEs set-based.
            "UPDATE fu SET a = -a WHERE a >= 2000",
            "UPDATE fu SET a = -a + 1 WHERE a < 0",
            "DELETE FROM fu WHERE a % 10 = 0",
            # An index on the target: one by one, the index serving each change.
            "UPDATE fi SET b = 'j' WHERE ctid IN (SELECT min(ctid) FROM fi GROUP BY a)",
            "DELETE FROM fi WHERE a % 7 = 0")
        st = status_after(pair.src, pair.dst, slot, *STREAM)
        rows = check_equal(pair.src, pair.dst, ["f", "fu", "fi"])
        check(st["set_rows"] > 5000, f"FULL identity changes did not go set-based: {st}")
        print(f"       {st['set_rows']} changes set-based, {rows} rows compared (duplicates included)")


@test
def key_changes_swaps_and_rows_changed_again_keep_their_order():
    """Between set-based runs: UPDATEs of the key (one by one), unique values swapped through
    a temporary one, a row deleted and inserted again, the same row updated in turn."""
    with Pair(2) as pair:
        slot = equal_tables(pair, '''
            CREATE TABLE s (id int PRIMARY KEY, code int UNIQUE, v int);
            CREATE TABLE r (id int PRIMARY KEY, v int);
        ''', '''INSERT INTO s SELECT g, g, 0 FROM generate_series(1, 5000) g;
                  INSERT INTO r SELECT g, 0 FROM generate_series(1, 20000) g;''')
        in_one_transaction(
            pair.src,
            "UPDATE r SET v = 1",
            "UPDATE r SET id = id + 100000 WHERE id % 1000 = 0",  # key changes between runs
            "UPDATE r SET v = 2 WHERE id > 100000",
            "DELETE FROM r WHERE id % 3 = 0",
            "INSERT INTO r SELECT g, 3 FROM generate_series(3, 20000, 3) g",  # back again
            "UPDATE r SET v = v + 10 WHERE id % 3 = 0",
            # Swap codes of neighbours: a -> -a, b -> a, -a -> b.
            "UPDATE s SET code = -code WHERE id % 2 = 1 AND id < 5000",
            "UPDATE s SET code = code - 1 WHERE id % 2 = 0",
            "UPDATE s SET code = -code + 1 WHERE code < 0")
        for i in range(1, 6):  # one row updated by several transactions in a row
            pair.src.sql(f"UPDATE r SET v = {i} WHERE id BETWEEN 1 AND 500")
        st = status_after(pair.src, pair.dst, slot, *STREAM)
        rows = check_equal(pair.src, pair.dst, ["s", "r"])
        check(st["set_rows"] > 20000, f"the runs between them did not go set-based: {st}")
        print(f"       {st['set_rows']} changes set-based, {rows} rows compared")


@test
def a_refused_batch_commits_nothing_and_resumes_after_the_fix():
    """A row missing on the target inside a batch of 2000: nothing of the transaction is
    committed, the origin stays before it, the error names the missing key; restored, a
    restart applies it all. Once not streamed, once streamed."""
    with Pair(3) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE t (id int PRIMARY KEY, v text)")
        for s in (pair.src, pair.dst):
            s.sql("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 20000) g")
        slot = pair.slot()
        for mode, missing, change in (("--no-streaming", 2500, "UPDATE t SET v = 'new' WHERE id <= 5000"),
                                      (STREAM, 17000, "DELETE FROM t WHERE id > 15000")):
            extra = mode if isinstance(mode, tuple) else (mode,)
            pair.dst.sql("DELETE FROM t WHERE id = %s", (missing,))
            before = pair.origin_lsn()
            digest = pair.dst.value("SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM t")
            pair.src.sql(change)
            a = Applier(pair.src, pair.dst, slot, "--resume-mode", "manual", *extra).start()
            rc = a.wait_exit(120)
            log = a.tail(40)
            check(rc not in (0, None) and rc > 0, f"follow should stop on the refused batch, exited {rc}: {log}")
            check(f'("id")=({missing})' in log, f"the error does not name the missing key {missing}: {log}")
            check("02000" in log, f"the error names no SQLSTATE: {log}")
            check(pair.dst.value("SELECT md5(string_agg(id || v, ',' ORDER BY id)) FROM t") == digest,
                  f"part of the refused transaction was committed ({mode})")
            check(pair.origin_lsn() == before, f"the origin moved past the refused transaction ({mode})")
            pair.dst.sql("INSERT INTO t VALUES (%s, 'v')", (missing,))
            status_after(pair.src, pair.dst, slot, *extra)
            check_equal(pair.src, pair.dst, ["t"])


if __name__ == "__main__":
    main("set_apply_test")
