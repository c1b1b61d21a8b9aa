#!/usr/bin/python3
"""Parallel apply (issue 14): `--apply-workers N` applies consecutive groups of source
transactions on N target sessions and commits them in source order. Hot rows (pgbench's
branches) beside independent rows, the same rows touched in different orders by concurrent
sessions, unique-key swaps split across transactions, foreign-key chains, REPLICA IDENTITY FULL
tables with duplicate rows, kills in the middle, and a refused change with several groups in
flight: nothing committed past it, the origin before it.

Usage: parallel_apply_test.py [test_name ...]
"""
import os
import random
import sys
import threading

import psycopg2
import psycopg2.errors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Applier, Failure, SlotPair, check, check_equal, create_on_both, lsn_value, main,  # noqa: E402
                     pgbench, run_to, test, wait_for)

BASE_PORT = int(os.environ.get("DTS_PARALLEL_TEST_PORT", "26870"))
WORKERS = ("--apply-workers", "4")
PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


class Pair(SlotPair):
    def __init__(self, index, *settings):
        super().__init__("it_par", index, BASE_PORT + 2 * index, *settings)


class Writers:
    """Sessions committing small transactions on the source until stopped; each runs `work(cur,
    rng, i)` per transaction. A failure in any is re-raised by stop()."""

    def __init__(self, server, sessions, work):
        self.stopping = threading.Event()
        self.errors = []
        self.count = 0
        self.threads = [threading.Thread(target=self._run, args=(server, work, s), daemon=True)
                        for s in range(sessions)]
        for t in self.threads:
            t.start()

    def _run(self, server, work, session):
        rng = random.Random(session)
        try:
            with server.connect() as c, c.cursor() as cur:
                cur.execute("SET deadlock_timeout = '20ms'")  # sessions meeting in different orders
                c.commit()
                c.autocommit = False
                i = 0
                while not self.stopping.is_set():
                    try:
                        work(cur, rng, session, i)
                        c.commit()
                    except psycopg2.errors.DeadlockDetected:
                        c.rollback()  # sessions taking the same rows in different orders: again
                        continue
                    i += 1
                    self.count += 1
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(repr(e))

    def progress(self):
        if self.errors:
            raise Failure(f"a writer failed: {self.errors[0]}")
        return self.count

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(60)
        if self.errors:
            raise Failure(f"a writer failed: {self.errors[0]}")
        return self.count


def pgbench_on_both(pair):
    for server in (pair.src, pair.dst):
        pgbench(server, "-i", "-q", "-s", "2")
    return pair.slot()


def wait_applied(applier, lsn_text, timeout=180):
    applier.wait_applied(lsn_text, timeout)
    return applier.status()


@test
def hot_and_independent_rows_with_four_workers_end_equal_across_kills():
    """pgbench (20 branch rows every transaction touches) and a writer of rows of its own, live
    and as a backlog, with the applier killed twice on the way: every row equal, groups waited
    for one another where they shared rows, and no refusal to retry."""
    with Pair(0) as pair:
        slot = pgbench_on_both(pair)
        pair.src.sql("CREATE TABLE w (id bigint PRIMARY KEY, session int, n int, pad text)")
        pair.dst.sql("CREATE TABLE w (id bigint PRIMARY KEY, session int, n int, pad text)")

        def independent(cur, rng, s, i):
            base = s * 10_000_000 + i
            cur.execute("INSERT INTO w VALUES (%s, %s, 0, repeat('x', 100))", (base, s))
            if i > 10:
                cur.execute("UPDATE w SET n = n + 1 WHERE id = %s", (base - rng.randint(1, 10),))
            if i % 7 == 0 and i > 20:
                cur.execute("DELETE FROM w WHERE id = %s", (base - 20,))

        a = Applier(pair.src, pair.dst, slot, *WORKERS).start()
        writers = Writers(pair.src, 2, independent)
        pgbench(pair.src, "-n", "-c", "4", "-T", "6")
        a.kill9()
        pgbench(pair.src, "-n", "-c", "4", "-T", "4")  # a backlog: large groups
        a = Applier(pair.src, pair.dst, slot, *WORKERS).start()
        wait_for("the applier to be streaming", lambda: (a.status() or {}).get("transactions_applied", 0) > 0, 60)
        a.kill9()
        a = Applier(pair.src, pair.dst, slot, *WORKERS).start()
        pgbench(pair.src, "-n", "-c", "4", "-T", "3")
        n = writers.stop()
        st = wait_applied(a, pair.src.lsn())
        rows = check_equal(pair.src, pair.dst, PGBENCH_TABLES + ["w"])
        check(st["apply_workers"] == 4, f"expected 4 apply workers: {st}")
        check(st["conflict_waits"] > 0, f"pgbench's shared branch rows never made a group wait: {st}")
        check(st["parallel_retries"] == 0, f"a conflict was not foreseen (applied again on one session): {st}")
        check(len(st["apply_lanes"]) == 4 and all(l["state"] in ("idle", "building", "applying", "committing")
                                                  for l in st["apply_lanes"]), f"per-worker activity: {st}")
        wait = st["last_conflict_wait"]
        check("waited for worker" in wait and ('"pgbench_' in wait or '"w"' in wait),
              f"what the last wait waited for: {wait}")
        check(a.stop() == 0, f"follow did not stop cleanly: {a.tail()}")
        print(f"       {rows} rows equal, {n} independent transactions, {st['conflict_waits']} conflict waits")


SHAPES = '''
    CREATE TABLE hot (id int PRIMARY KEY, v int NOT NULL);
    CREATE TABLE uq (id int PRIMARY KEY, code int NOT NULL UNIQUE, who text);
    CREATE TABLE parent (id int PRIMARY KEY, name text);
    CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, v int);
    CREATE TABLE dup (a int, b text);
    ALTER TABLE dup REPLICA IDENTITY FULL;
'''
SHAPES_FILL = '''
    INSERT INTO hot SELECT g, 0 FROM generate_series(1, 8) g;
    INSERT INTO uq SELECT g, g, 'r' || g FROM generate_series(1, 40) g;
    INSERT INTO dup SELECT g % 5, 'same' FROM generate_series(1, 200) g;
'''
SHAPE_TABLES = ["hot", "uq", "parent", "child", "dup"]


def contended(cur, rng, s, i):
    """One transaction of a session: the same few rows in an order of its own, a unique-key swap
    in three steps split over three transactions, a parent and child born and dying in separate
    transactions, one of several identical rows changed."""
    ids = rng.sample(range(1, 9), 3)
    for k in (ids if s % 2 == 0 else reversed(ids)):
        cur.execute("UPDATE hot SET v = v + %s WHERE id = %s", (s + 1, k))
    # Each session swaps the codes of its own pair of rows, one step a transaction, the old code
    # kept in `who` on the way: the unique index sees every step, as the source did.
    a, b = 1 + 2 * s, 2 + 2 * s
    step = i % 3
    if step == 0:
        cur.execute("UPDATE uq SET who = code::text, code = -code WHERE id = %s", (a,))
    elif step == 1:
        cur.execute("UPDATE uq SET who = code::text, code = (SELECT who::int FROM uq WHERE id = %s) WHERE id = %s",
                    (a, b))
    else:
        cur.execute("UPDATE uq SET code = (SELECT who::int FROM uq WHERE id = %s) WHERE id = %s", (b, a))
    pid = s * 1_000_000 + i
    cur.execute("INSERT INTO parent VALUES (%s, 'p')", (pid,))
    if i > 0:
        cur.execute("INSERT INTO child VALUES (%s, %s, %s)", (pid - 1, pid - 1, i))
    if i > 3:
        cur.execute("DELETE FROM child WHERE id = %s", (pid - 3,))
        cur.execute("DELETE FROM parent WHERE id = %s", (pid - 3,))
    if i % 5 == 0:
        cur.execute("UPDATE dup SET a = a + 10 WHERE ctid = (SELECT ctid FROM dup WHERE a = %s LIMIT 1)",
                    (rng.randint(0, 4),))
        cur.execute("DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE a = %s LIMIT 1)", (rng.randint(10, 14),))
        cur.execute("INSERT INTO dup VALUES (%s, 'same')", (rng.randint(0, 4),))


@test
def contended_rows_unique_swaps_foreign_keys_and_duplicates():
    """Eight sessions at once on the same rows; the target enforces the unique key and the
    foreign key (replica role: the source already did), holds the duplicates: equal at the end,
    live and from a backlog."""
    with Pair(1) as pair:
        create_on_both(pair.src, pair.dst, SHAPES)
        pair.src.sql(SHAPES_FILL)
        pair.dst.sql(SHAPES_FILL)
        slot = pair.slot()
        a = Applier(pair.src, pair.dst, slot, *WORKERS).start()
        writers = Writers(pair.src, 8, contended)
        wait_for("400 contended transactions", lambda: writers.progress() >= 400, 120)
        a.kill9()
        wait_for("400 more", lambda: writers.progress() >= 800, 120)  # a backlog, applied after the kill
        n = writers.stop()
        a = run_to(pair.src, pair.dst, slot, pair.src.lsn(), *WORKERS, timeout=300)
        st = a.status()
        rows = check_equal(pair.src, pair.dst, SHAPE_TABLES)
        check(st["conflict_waits"] > 0, f"no group ever waited for another: {st}")
        print(f"       {n} transactions, {rows} rows equal, {st['conflict_waits']} conflict waits, "
              f"{st['parallel_retries']} retries on one session")


@test
def a_refused_change_with_workers_in_flight_commits_nothing_past_it():
    """A row missing on the target, updated by one transaction among many: follow applies what it
    received again on one session, then stops on the refusal; everything before it committed,
    nothing after it, the origin just before it; with the row restored, a restart ends equal."""
    with Pair(2) as pair:
        create_on_both(pair.src, pair.dst, "CREATE TABLE t (id int PRIMARY KEY, v int)")
        fill = "INSERT INTO t SELECT g, 0 FROM generate_series(1, 5000) g"
        pair.src.sql(fill)
        pair.dst.sql(fill)
        slot = pair.slot()
        pair.dst.sql("DELETE FROM t WHERE id = 4000")
        c = pair.src.connect()  # not `with`: psycopg2 would make the 3,000 one transaction
        try:
            cur = c.cursor()
            for i in range(1, 3001):
                cur.execute("UPDATE t SET v = %s WHERE id = %s", (i, i))
                if i == 1500:
                    cur.execute("UPDATE t SET v = -1 WHERE id IN (1500, 4000, 1501)")
                    refused_at = lsn_value(pair.src.lsn())
        finally:
            c.close()
        end = pair.src.lsn()
        a = Applier(pair.src, pair.dst, slot, *WORKERS, "--resume-mode", "manual").start()
        rc = a.wait_exit(180)
        log = a.tail(40)
        check(rc != 0, "follow did not stop on the refused change")
        check('("id")=(4000)' in log, f"the refusal does not name the missing key: {log}")
        check("applying again on one session" in log, f"the refusal was not told apart on one session: {log}")
        got = dict(pair.dst.sql("SELECT id, v FROM t WHERE id <= 3000"))
        # What committed is a prefix of the source's transactions (the refused one's group, all
        # of it, rolled back), which ends before the refused one.
        applied = next(i for i in range(1, 3002) if i == 3001 or got[i] != i)
        check(applied <= 1500, f"transactions up to {applied - 1} committed, past the refused one")
        check(applied > 200, f"only {applied - 1} transactions committed: the groups before the refused one's are "
                             "missing")
        check(all(got[i] == 0 for i in range(applied, 3001)),
              f"not a prefix: transaction {applied - 1} is the last in order, a later one committed")
        check(got[1501] == 0, "the refused transaction was partly applied")
        origin = pair.origin_lsn()
        check(origin < refused_at, f"the origin moved past the refused transaction: {origin:X} >= {refused_at:X}")
        pair.dst.sql("INSERT INTO t VALUES (4000, 0)")
        run_to(pair.src, pair.dst, slot, end, *WORKERS, timeout=180)
        rows = check_equal(pair.src, pair.dst, ["t"])
        print(f"       stopped at (id)=(4000), {rows} rows equal after the row was restored")


if __name__ == "__main__":
    main("parallel_apply_test")
