#!/usr/bin/python3
"""The replication core's promises under workloads nobody here wrote: a refused change commits
nothing of its group and leaves the origin before it; many concurrent large transactions
apply; memory stays bounded inside one huge transaction. Each test is named after the defect
it guards (issue 11).

Usage: core_test.py [test_name ...]
"""
import os
import re
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Applier, SlotPair, check, check_equal, create_on_both, lsn_value, main, run_to,  # noqa: E402
                     test, wait_for)

BASE_PORT = int(os.environ.get("DTS_CORE_TEST_PORT", "26000"))


class Pair(SlotPair):
    def __init__(self, index, *settings):
        super().__init__("it_core", index, BASE_PORT + 2 * index, *settings)



def reported_lsn(log_text):
    m = re.search(r"committed at ([0-9A-F]+/[0-9A-F]+)", log_text)
    check(m is not None, f"the error names no source LSN: {log_text}")
    return lsn_value(m.group(1))


def failed_run(pair, slot, *extra):
    """follow until it stops on a refused change; returns its log."""
    a = Applier(pair.src, pair.dst, slot, "--resume-mode", "manual", *extra).start()
    rc = a.wait_exit(120)
    log = a.tail(40)
    check(rc not in (0, None), f"follow should stop on the refused change, exited {rc}: {log}")
    check(rc > 0, f"follow crashed (signal {-rc}) instead of reporting the refusal: {log}")
    return log


def setup_t(pair, rows=100):
    create_on_both(pair.src, pair.dst, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    for s in (pair.src, pair.dst):
        s.sql("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, %s) g", (rows,))


@test
def refused_change_commits_nothing_of_its_transaction():
    """Defect 1: a row missing on the target; the source updates ids 10, 50 and 60 in one
    transaction. Nothing of it may be committed and the origin must stay before it; once the
    operator restores the row, a restart applies all three."""
    with Pair(0) as pair:
        setup_t(pair)
        slot = pair.slot()
        pair.dst.sql("DELETE FROM t WHERE id = 50")
        before = lsn_value(pair.src.lsn())
        pair.src.sql("UPDATE t SET v = 'new' WHERE id IN (10, 50, 60)")
        after = lsn_value(pair.src.lsn())
        log = failed_run(pair, slot)
        check('"public"."t"' in log or "public.t" in log, f"the error names no table: {log}")
        check("(id)=(50)" in log or "id=50" in log or "(50)" in log, f"the error names no key: {log}")
        check("SQLSTATE" in log, f"the error names no SQLSTATE: {log}")
        check(before < reported_lsn(log) <= after, f"the LSN named is not the transaction's: {log}")
        check(pair.dst.value("SELECT count(*) FROM t WHERE v = 'new'") == 0,
              "ids 10 and 60 were committed on the target although id 50 was refused")
        check(pair.origin_lsn() < after and pair.origin_lsn() <= before,
              f"the origin moved past the refused transaction: {pair.origin_lsn():X} > {before:X}")
        # The fix, then a restart: all three rows get their update.
        pair.dst.sql("INSERT INTO t VALUES (50, 'v50')")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check(pair.dst.value("SELECT count(*) FROM t WHERE v = 'new'") == 3, "the restart did not apply the fix")
        check_equal(pair.src, pair.dst, ["t"])


@test
def refused_statement_by_the_target_commits_nothing():
    """Defect 1, a server error: a CHECK that only the target has refuses one row."""
    with Pair(1) as pair:
        setup_t(pair)
        slot = pair.slot()
        pair.dst.sql("ALTER TABLE t ADD CONSTRAINT target_only CHECK (v <> 'bad')")
        before = lsn_value(pair.src.lsn())
        pair.src.sql("BEGIN; UPDATE t SET v = 'ok' WHERE id = 10; INSERT INTO t VALUES (1000, 'fine');"
                     " UPDATE t SET v = 'bad' WHERE id = 50; DELETE FROM t WHERE id = 60; COMMIT")
        log = failed_run(pair, slot)
        check("23514" in log, f"the error does not carry the check violation's SQLSTATE: {log}")
        check(pair.dst.value("SELECT count(*) FROM t WHERE v IN ('ok', 'fine')") == 0 and
              pair.dst.value("SELECT count(*) FROM t WHERE id = 60") == 1,
              "part of the refused transaction was committed")
        check(pair.origin_lsn() <= before, "the origin moved past the refused transaction")
        pair.dst.sql("ALTER TABLE t DROP CONSTRAINT target_only")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check_equal(pair.src, pair.dst, ["t"])


@test
def refused_change_inside_a_streamed_transaction():
    """Defect 1 inside a transaction large enough to be streamed while in progress."""
    with Pair(2) as pair:
        setup_t(pair, 20000)
        slot = pair.slot()
        pair.dst.sql("DELETE FROM t WHERE id = 15000")
        before = lsn_value(pair.src.lsn())
        pair.src.sql("UPDATE t SET v = 'streamed' WHERE id % 2 = 0")
        after = lsn_value(pair.src.lsn())
        log = failed_run(pair, slot, "--decoding-work-mem", "64kB")
        check(before < reported_lsn(log) <= after, f"the LSN named is not the transaction's: {log}")
        check(pair.dst.value("SELECT count(*) FROM t WHERE v = 'streamed'") == 0,
              "part of the refused streamed transaction was committed")
        check(pair.origin_lsn() <= before, "the origin moved past the refused streamed transaction")
        pair.dst.sql("INSERT INTO t VALUES (15000, 'v15000')")
        run_to(pair.src, pair.dst, slot, pair.src.lsn(), "--decoding-work-mem", "64kB")
        check_equal(pair.src, pair.dst, ["t"])


@test
def refused_row_deep_in_a_copy_left_open_across_batches():
    """A streamed transaction's inserts go into one COPY left open across batches of 5,000 rows
    (and stream blocks); the 17,000th row is refused by a CHECK only the target has, its result
    known only when the COPY ends. Nothing of the transaction may commit, the origin stays
    before it; the UPDATE after the inserts (which ends the COPY) and a later transaction too.
    Ordinary transactions decoded before the stream and between two of its blocks must not
    lend it their LSN in the error (they did)."""
    with Pair(2) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE big (id int PRIMARY KEY, v text)")
        setup_t(pair, 10)
        pair.dst.sql("ALTER TABLE big ADD CONSTRAINT target_only CHECK (id <> 17000)")
        slot = pair.slot()
        pair.src.sql("UPDATE t SET v = 'before' WHERE id = 3")
        before = lsn_value(pair.src.lsn())
        a = pair.src.connect()
        a.autocommit = False
        with a.cursor() as cur:
            cur.execute("INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 15000) g")
            pair.src.sql("UPDATE t SET v = 'between' WHERE id = 4")
            between = lsn_value(pair.src.lsn())
            cur.execute("INSERT INTO big SELECT g, 'v' || g FROM generate_series(15001, 30000) g")
            cur.execute("UPDATE t SET v = 'after the copy' WHERE id = 1")
        a.commit()
        a.close()
        after = lsn_value(pair.src.lsn())
        pair.src.sql("UPDATE t SET v = 'later' WHERE id = 2")
        log = failed_run(pair, slot, "--decoding-work-mem", "64kB")
        check("23514" in log and "INSERT on" in log, f"the refused row is not named with its SQLSTATE: {log}")
        check("batches sent after it in the same COPY" in log, f"the COPY's extent is not named: {log}")
        check("transactions committed at" not in log and between < reported_lsn(log) <= after,
              f"the LSN named is not the transaction's (before {before:X}, between {between:X}): {log}")
        check(pair.dst.value("SELECT count(*) FROM big") == 0, "rows of the refused transaction were committed")
        check(pair.dst.value("SELECT count(*) FROM t WHERE v IN ('after the copy', 'later')") == 0,
              "a change of or after the refused transaction was committed")
        # The transaction committed between two of its blocks may be applied: it commits first.
        check(pair.origin_lsn() <= between, "the origin moved past the refused transaction")
        pair.dst.sql("ALTER TABLE big DROP CONSTRAINT target_only")
        run_to(pair.src, pair.dst, slot, pair.src.lsn(), "--decoding-work-mem", "64kB")
        check_equal(pair.src, pair.dst, ["big", "t"])


@test
def refused_change_in_a_streamed_transaction_the_source_aborts_is_forgotten():
    """A streamed transaction that the target would refuse, but the source rolls back: it never
    happened, so follow goes on."""
    with Pair(6) as pair:
        setup_t(pair, 20000)
        slot = pair.slot()
        pair.dst.sql("DELETE FROM t WHERE id = 15000")
        create_on_both(pair.src, pair.dst, "CREATE TABLE big (id int PRIMARY KEY, v text)")
        pair.dst.sql("ALTER TABLE big ADD CONSTRAINT target_only CHECK (id <> 17000)")
        pair.src.sql("BEGIN; UPDATE t SET v = 'aborted' WHERE id % 2 = 0; ROLLBACK")
        # Refused inside a COPY left open across stream blocks, then aborted on the source.
        pair.src.sql("BEGIN; INSERT INTO big SELECT g, 'x' FROM generate_series(1, 30000) g; ROLLBACK")
        pair.src.sql("UPDATE t SET v = 'after' WHERE id = 10")
        run_to(pair.src, pair.dst, slot, pair.src.lsn(), "--decoding-work-mem", "64kB")
        check(pair.dst.value("SELECT v FROM t WHERE id = 10") == "after", "the change after the abort was not applied")
        check(pair.dst.value("SELECT count(*) FROM t WHERE v = 'aborted'") == 0, "aborted changes were applied")
        check(pair.dst.value("SELECT count(*) FROM big") == 0, "rows of the aborted COPY were applied")


@test
def refused_row_in_a_subtransaction_the_source_rolls_back_is_forgotten():
    """A streamed transaction whose subtransaction (a savepoint, or a PL/pgSQL exception block)
    has a row the target refuses, then rolled back on the source: the rest of the transaction,
    before and after the savepoint, must commit; it stopped follow for good (the refusal stayed
    held after the rollback). A refusal before the savepoint must still stop it."""
    with Pair(7) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE big (id int PRIMARY KEY, v text)")
        setup_t(pair, 10)
        pair.dst.sql("ALTER TABLE big ADD CONSTRAINT target_only CHECK (id NOT IN (17000, 99999))")
        slot = pair.slot()
        pair.src.sql("BEGIN; INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 10000) g; "
                     "SAVEPOINT s1; INSERT INTO big SELECT g, 'v' || g FROM generate_series(10001, 20000) g; "
                     "UPDATE t SET v = 'rolled back' WHERE id = 1; ROLLBACK TO SAVEPOINT s1; "
                     "SAVEPOINT s2; UPDATE t SET v = 'kept' WHERE id = 2; RELEASE SAVEPOINT s2; "
                     "INSERT INTO big SELECT g, 'v' || g FROM generate_series(20001, 30000) g; COMMIT")
        run_to(pair.src, pair.dst, slot, pair.src.lsn(), "--decoding-work-mem", "64kB")
        check_equal(pair.src, pair.dst, ["big", "t"])
        check(pair.dst.value("SELECT count(*) FROM big") == 20000, "the rows around the savepoint were not applied")

        # Refused before the savepoint: rolling the subtransaction back does not forgive it.
        before = lsn_value(pair.src.lsn())
        pair.src.sql("BEGIN; INSERT INTO big SELECT g, 'w' FROM generate_series(90000, 100000) g; SAVEPOINT s1; "
                     "INSERT INTO big SELECT g, 'w' FROM generate_series(100001, 110000) g; "
                     "ROLLBACK TO SAVEPOINT s1; COMMIT")
        log = failed_run(pair, slot, "--decoding-work-mem", "64kB")
        check("23514" in log and before < reported_lsn(log), f"the refusal before the savepoint was not reported: {log}")
        check(pair.dst.value("SELECT count(*) FROM big WHERE id >= 90000") == 0, "rows of the refused transaction committed")
        pair.dst.sql("ALTER TABLE big DROP CONSTRAINT target_only")
        run_to(pair.src, pair.dst, slot, pair.src.lsn(), "--decoding-work-mem", "64kB")
        check_equal(pair.src, pair.dst, ["big", "t"])


@test
def truncate_only_of_an_inheritance_parent_leaves_its_children():
    """TRUNCATE ONLY of a parent with inheritance children empties the parent alone; the source
    lists each table it empties, so each is truncated ONLY here too (a plain TRUNCATE of the
    parent emptied the children on the target). A partitioned table, which refuses ONLY, and
    CASCADE still work."""
    with Pair(9) as pair:
        create_on_both(pair.src, pair.dst,
                       "CREATE TABLE parent (id int PRIMARY KEY, v text); CREATE TABLE child (w int) INHERITS (parent); "
                       "CREATE TABLE p (id int PRIMARY KEY) PARTITION BY RANGE (id); "
                       "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100); "
                       "CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200); "
                       "CREATE TABLE ref (id int PRIMARY KEY); CREATE TABLE fk (id int REFERENCES ref)")
        slot = pair.slot()
        pair.src.sql("INSERT INTO parent VALUES (1, 'p'); INSERT INTO child VALUES (2, 'c', 2); "
                     "INSERT INTO p SELECT g FROM generate_series(1, 150) g; INSERT INTO ref VALUES (1); "
                     "INSERT INTO fk VALUES (1)")
        pair.src.sql("TRUNCATE ONLY parent")
        pair.src.sql("TRUNCATE p")
        pair.src.sql("TRUNCATE ref CASCADE")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check(pair.dst.sql("SELECT id FROM parent ORDER BY id") == [(2,)],
              f"the child's row is gone with TRUNCATE ONLY parent: {pair.dst.sql('SELECT id FROM parent')}")
        check_equal(pair.src, pair.dst, ["child", "p1", "p2", "ref", "fk"])
        pair.src.sql("TRUNCATE parent")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check(pair.dst.value("SELECT count(*) FROM parent") == 0, "TRUNCATE parent left rows")


@test
def refused_change_inside_a_group_of_200():
    """Defect 1 inside a group: 200 one-row transactions, the 150th refused. The target must
    hold exactly the transactions up to where the origin stands, and none after."""
    with Pair(3) as pair:
        setup_t(pair, 200)
        slot = pair.slot()
        pair.dst.sql("DELETE FROM t WHERE id = 150")
        ends = []
        c = pair.src.connect()
        with c.cursor() as cur:
            for i in range(1, 201):
                cur.execute("UPDATE t SET v = 'g' WHERE id = %s", (i,))
                cur.execute("SELECT pg_current_wal_insert_lsn()::text")
                ends.append(lsn_value(cur.fetchone()[0]))
        c.close()
        log = failed_run(pair, slot)
        applied = [r[0] for r in pair.dst.sql("SELECT id FROM t WHERE v = 'g' ORDER BY id")]
        k = len(applied)
        check(applied == list(range(1, k + 1)), f"the target holds a non-prefix of the transactions: {applied}")
        check(k < 150, f"transactions after the refused one were committed: {k}")
        origin = pair.origin_lsn()
        # Transaction i ends after ends[i-2] and at or before ends[i-1]: the origin must be at
        # the end of the k-th transaction exactly.
        check(origin <= (ends[k - 1] if k else ends[0]), f"the origin {origin:X} is past what the target holds")
        check(k < 2 or origin > ends[k - 2], f"the origin {origin:X} is behind what the target holds")
        check(reported_lsn(log) > ends[148] and reported_lsn(log) <= ends[149],
              f"the error does not name the 150th transaction: {log}")
        pair.dst.sql("INSERT INTO t VALUES (150, 'v150')")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check_equal(pair.src, pair.dst, ["t"])


@test
def refused_insert_batched_across_a_group():
    """Inserts into a table without key travel batched across a group's transactions (one COPY
    per group): 200 one-row transactions append to a log and update a counter, the 150th's log
    row refused by a CHECK only the target has. The target must hold a prefix of the
    transactions, the origin exactly its end, and the error the range holding the refused one."""
    with Pair(3) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE log (n int, v text); "
                                           "CREATE TABLE counter (id int PRIMARY KEY, n int)")
        for s in (pair.src, pair.dst):
            s.sql("INSERT INTO counter VALUES (1, 0)")
        pair.dst.sql("ALTER TABLE log ADD CONSTRAINT target_only CHECK (v <> 'bad')")
        slot = pair.slot()
        ends = []
        c = pair.src.connect()
        c.autocommit = True
        with c.cursor() as cur:
            for i in range(1, 201):
                cur.execute("BEGIN; INSERT INTO log VALUES (%s, %s); UPDATE counter SET n = %s WHERE id = 1; COMMIT",
                            (i, "bad" if i == 150 else "ok", i))
                cur.execute("SELECT pg_current_wal_insert_lsn()::text")
                ends.append(lsn_value(cur.fetchone()[0]))
        c.close()
        log = failed_run(pair, slot)
        check("23514" in log and "INSERT on" in log, f"the refused insert is not named with its SQLSTATE: {log}")
        m = re.search(r"committed at ([0-9A-F]+/[0-9A-F]+) to ([0-9A-F]+/[0-9A-F]+)", log)
        check(m is not None, f"the error does not name the batch's range of transactions: {log}")
        first, last = lsn_value(m.group(1)), lsn_value(m.group(2))
        check(first <= ends[149] and last > ends[148], f"the range named does not hold the 150th transaction: {log}")
        applied = [r[0] for r in pair.dst.sql("SELECT n FROM log ORDER BY n")]
        k = len(applied)
        check(applied == list(range(1, k + 1)) and k < 150, f"the target holds more than a prefix: {applied}")
        check(pair.dst.value("SELECT n FROM counter") == k, "the counter and the log are of different transactions")
        origin = pair.origin_lsn()
        check(origin <= (ends[k - 1] if k else ends[0]) and (k < 2 or origin > ends[k - 2]),
              f"the origin {origin:X} is not at the end of the {k} transactions the target holds")
        pair.dst.sql("ALTER TABLE log DROP CONSTRAINT target_only")
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check_equal(pair.src, pair.dst, ["log", "counter"])


@test
def merged_rows_pending_when_a_large_transaction_starts_streaming_are_kept():
    """Rows merged per key from small committed transactions were still held when a large
    transaction's first streamed block arrived: they were written on that transaction's
    session instead of the group's, and lost when the source rolled it back, with the origin
    already past them. The backlog is decoded in one burst, so the group is still open then."""
    with Pair(8) as pair:
        setup_t(pair, 100)
        create_on_both(pair.src, pair.dst, "CREATE TABLE big (id int PRIMARY KEY, pad text)")
        slot = pair.slot()
        c = pair.src.connect()
        with c.cursor() as cur:
            for i in range(1, 51):
                cur.execute("UPDATE t SET v = 'small' WHERE id = %s", (i,))
        c.close()
        for fate in ("ROLLBACK", "COMMIT"):
            pair.src.sql("UPDATE t SET v = %s WHERE id BETWEEN 51 AND 60", (fate,))
            pair.src.sql(f"BEGIN; INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g; {fate}")
        pair.src.sql("UPDATE t SET v = 'last' WHERE id = 100")
        run_to(pair.src, pair.dst, slot, pair.src.lsn(), "--decoding-work-mem", "64kB")
        check(pair.dst.value("SELECT count(*) FROM t WHERE v = 'small'") == 50,
              "updates of committed transactions held when the streamed transaction began were lost")
        check_equal(pair.src, pair.dst, ["t", "big"])


@test
def a_statement_prepared_while_the_previous_group_commits_keeps_its_parameter_types():
    """While a group's commit waited for its results, the next group's inserts were held, and
    sending them (just before another statement) overwrote that statement's parameter types:
    an UPDATE prepared then declared the 156 types of 13 held rows of 12 columns. Here every
    group ends with 200 one-row transactions, then one inserts 13 rows into a table without a
    key and updates a REPLICA IDENTITY FULL table in the same transaction."""
    with Pair(9) as pair:
        setup_t(pair, 200)
        cols = ", ".join(f"c{i} int" for i in range(12))
        create_on_both(pair.src, pair.dst, f"CREATE TABLE lg ({cols})")
        create_on_both(pair.src, pair.dst, "CREATE TABLE fu (a int, b text); ALTER TABLE fu REPLICA IDENTITY FULL")
        for s in (pair.src, pair.dst):
            s.sql("INSERT INTO fu SELECT g, 'b' FROM generate_series(1, 20) g")
        slot = pair.slot()
        c = pair.src.connect()
        with c.cursor() as cur:
            for rnd in range(5):
                for i in range(1, 201):
                    cur.execute("UPDATE t SET v = %s WHERE id = %s", (f"r{rnd}", i))
                cur.execute("BEGIN")
                cur.execute(f"INSERT INTO lg SELECT {', '.join(['g'] * 12)} FROM generate_series(1, 13) g")
                cur.execute("UPDATE fu SET b = %s WHERE a = %s", (f"r{rnd}", rnd + 1))
                cur.execute("COMMIT")
        c.close()
        run_to(pair.src, pair.dst, slot, pair.src.lsn())
        check_equal(pair.src, pair.dst, ["t", "lg", "fu"])


@test
def a_source_error_is_named_as_the_sources_with_its_sqlstate():
    """Defect 11: a server error on the source was reported as the target rejecting a change,
    and callers searched message text for SQLSTATEs."""
    with Pair(8) as pair:
        slot = pair.slot()
        a = Applier(pair.src, pair.dst, slot, "--decoding-work-mem", "1kB", "--resume-mode", "manual").start()
        rc = a.wait_exit(60)
        log = a.tail(20)
        check(rc == 1, f"follow should fail with exit code 1, got {rc}: {log}")
        check("the source failed" in log and "SQLSTATE 22023" in log,
              f"the error does not name the source and its SQLSTATE: {log}")
        check("target rejected" not in log, f"a source error is reported as the target's: {log}")


FIGURES = []


def interleaved_transactions(server, sessions, rounds, rows, fate):
    """`sessions` transactions open at once, each writing `rows` rows per round; every round
    waits for all of them (so the source's WAL interleaves them). fate(i) is 'commit', 'abort'
    or 'savepoint' (a subtransaction rolled back in the middle, the rest committed)."""
    barrier = threading.Barrier(sessions)
    errors = []

    def session(i):
        try:
            c = server.connect()
            c.autocommit = False
            with c.cursor() as cur:
                for r in range(rounds):
                    if fate(i) == "savepoint" and r == rounds // 2:
                        cur.execute("SAVEPOINT s")
                    cur.execute("INSERT INTO big (sess, n, pad) SELECT %s, g, repeat(md5(g::text), 3)"
                                " FROM generate_series(%s, %s) g", (i, r * rows, (r + 1) * rows - 1))
                    cur.execute("UPDATE big SET n = -n WHERE sess = %s AND n %% 97 = %s", (i, r))
                    if fate(i) == "savepoint" and r == rounds // 2:
                        cur.execute("ROLLBACK TO SAVEPOINT s")
                    barrier.wait(120)
            c.rollback() if fate(i) == "abort" else c.commit()
            c.close()
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(f"session {i}: {e}")
            barrier.abort()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, f"the source workload failed: {errors}")


@test
def many_concurrent_large_transactions_apply():
    """Defect 2: 20 large transactions in progress at once, interleaved in the WAL, all
    streamed (more than there are apply sessions): some abort, some roll back a savepoint.
    All apply; connections stay bounded; the spool is private and empty at the end."""
    with Pair(4) as pair:
        create_on_both(pair.src, pair.dst,
                       "CREATE TABLE big (id bigserial PRIMARY KEY, sess int, n int, pad text)")
        slot = pair.slot()
        tmp = tempfile.mkdtemp(prefix="dts-it-core-")
        os.chmod(tmp, 0o755)
        a = Applier(pair.src, pair.dst, slot, "--decoding-work-mem", "64kB", env={"TMPDIR": tmp}).start()
        fates = {0: "abort", 7: "abort", 13: "abort", 3: "savepoint", 9: "savepoint", 16: "savepoint"}
        interleaved_transactions(pair.src, 20, 8, 1500, lambda i: fates.get(i, "commit"))
        end = pair.src.lsn()
        a.wait_applied(end, 300)
        st = a.status()
        backends = pair.dst.value("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                                  " AND datname = 'postgres' AND pid <> pg_backend_pid()")
        check(a.stop() == 0, f"follow did not stop cleanly: {a.tail()}")
        rows = check_equal(pair.src, pair.dst, ["big"])
        check(rows == 14 * 8 * 1500 + 3 * 7 * 1500, f"{rows} rows: aborted work arrived or committed work did not")
        check(st["spooled_transactions"] > 0, f"no transaction was spooled: {st}")
        # One per apply worker, the catalog's, 8 for streamed transactions, the progress and resync ones.
        bound = 11 + st["apply_workers"]
        check(backends <= bound, f"the applier holds {backends} target sessions (bound {bound}): connections are not "
                                 "bounded")
        left = [f for _, _, fs in os.walk(tmp) for f in fs]
        check(not left, f"spool files left behind: {left}")
        spool_dirs = os.listdir(tmp)
        check(not spool_dirs, f"spool directory left behind: {spool_dirs}")
        os.rmdir(tmp)
        FIGURES.append(f"20 concurrent streamed transactions, {rows} rows: applier peak RSS "
                       f"{a.peak_rss_kb // 1024} MB, {st['spooled_transactions']} spooled, spool peak "
                       f"{st['spool_peak_bytes'] // 1024} kB, {backends} target sessions")


@test
def applier_killed_while_transactions_are_spooled_loses_nothing():
    """kill -9 while twelve streamed transactions are open (four of them spooled): the restart
    removes the dead applier's spool, gets them streamed again, and ends equal."""
    with Pair(7) as pair:
        create_on_both(pair.src, pair.dst,
                       "CREATE TABLE big (id bigserial PRIMARY KEY, sess int, n int, pad text)")
        slot = pair.slot()
        tmp = tempfile.mkdtemp(prefix="dts-it-core-")
        env = {"TMPDIR": tmp}
        a = Applier(pair.src, pair.dst, slot, "--decoding-work-mem", "64kB", env=env).start()
        conns = []
        for i in range(12):
            c = pair.src.connect()
            c.autocommit = False
            with c.cursor() as cur:
                cur.execute("INSERT INTO big (sess, n, pad) SELECT %s, g, repeat('x', 200) FROM generate_series(1, 3000) g",
                            (i,))
            conns.append(c)

        def spooled_files():
            return [f for _, _, fs in os.walk(tmp) for f in fs if f.startswith("xid-")]
        wait_for("streamed transactions to be spooled", lambda: len(spooled_files()) >= 4, 120)
        a.kill9()
        dead = os.listdir(tmp)
        check(dead, "the killed applier left no spool to clean up (the test proves nothing)")
        b = Applier(pair.src, pair.dst, slot, "--decoding-work-mem", "64kB", env=env).start()
        wait_for("the dead applier's spool to be removed", lambda: not (set(dead) & set(os.listdir(tmp))), 60)
        for c in conns:
            with c.cursor() as cur:
                cur.execute("UPDATE big SET n = -n WHERE n % 10 = 0")
            c.commit()
            c.close()
        b.wait_applied(pair.src.lsn(), 300)
        check(b.stop() == 0, f"follow did not stop cleanly: {b.tail()}")
        check(check_equal(pair.src, pair.dst, ["big"]) == 36000, "rows lost or duplicated across the kill")
        check(not os.listdir(tmp), f"spool left behind after a clean stop: {os.listdir(tmp)}")
        os.rmdir(tmp)


@test
def a_relation_sent_again_while_a_group_awaits_its_commit():
    """The source sends a table's relation record again when its cache is invalidated (a GRANT,
    autovacuum's statistics): merged rows of that table held for the group were once held back
    behind the pending commit still pointing at the freed old shape, and the applier crashed
    (SIGSEGV) on a backlog of small transactions. An ANALYZE every 25 transactions, one apply
    worker (where a group is held behind the previous one's commit). Freed memory is filled with
    a pattern (glibc's MALLOC_PERTURB_, its per-thread cache off), so a freed shape read again
    is garbage, not the old values by luck: the applier before the fix crashed here."""
    with Pair(10) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE t (id int PRIMARY KEY, v text)")
        pair.src.sql("CREATE EXTENSION dts_decoding")  # packing: many transactions between two polls
        slot = pair.slot()
        c = pair.src.connect()  # not `with`: psycopg2 would make it one transaction
        try:
            cur = c.cursor()
            for i in range(1, 3001):
                cur.execute("INSERT INTO t VALUES (%s, md5(%s::text))", (i, i))
                if i % 25 == 0:
                    cur.execute("ANALYZE t")
        finally:
            c.close()
        a = Applier(pair.src, pair.dst, slot, "--until-lsn", pair.src.lsn(), "--apply-workers", "1",
                    env={"MALLOC_PERTURB_": "165", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}).start()
        rc = a.wait_exit(180)
        check(rc == 0, f"follow exited with {rc}: {a.tail()}")
        check(check_equal(pair.src, pair.dst, ["t"]) == 3000, "rows lost or duplicated")


@test
def unstreamed_huge_transaction_has_flat_memory():
    """Defect 6: a 2M-row transaction (5M in `make soak`) sent whole at its commit (--no-streaming)
    into a table whose rows are merged per key: the applier's memory must not grow with it."""
    with Pair(5) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE huge (id int PRIMARY KEY, v int)")
        slot = pair.slot()
        rows = int(os.environ.get("DTS_HUGE_TXN_ROWS", "2000000"))
        pair.src.sql(f"BEGIN; INSERT INTO huge SELECT g, g FROM generate_series(1, {rows}) g;"
                     " UPDATE huge SET v = -v WHERE id % 1000 = 0; COMMIT")
        a = run_to(pair.src, pair.dst, slot, pair.src.lsn(), "--no-streaming", timeout=600)
        check_equal(pair.src, pair.dst, ["huge"])
        peak_mb = a.peak_rss_kb // 1024
        FIGURES.append(f"one unstreamed {rows // 1000000}M-row transaction: applier peak RSS {peak_mb} MB")
        # About 20 MB; the row keys parallel apply records once held 5M keys here (237 MB).
        check(peak_mb < 64, f"the applier's memory grew with the transaction: peak RSS {peak_mb} MB")


def figures():
    for f in FIGURES:
        print(f"  figure: {f}")


if __name__ == "__main__":
    main("core_test", figures)
