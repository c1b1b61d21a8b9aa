#!/usr/bin/python3
"""The copy in chunks (issue 12): each chunk read in a snapshot of its own and recorded on the
target with its rows; a migrate killed during the copy resumes with only the chunks that were in
flight; changes made while chunks are read (hot rows, keys moved between chunks, rows deleted and
inserted again, large values changed or left alone, a truncate, rows moving between partitions)
end exactly as on the source; no snapshot is held for much longer than a chunk.

Usage: chunked_copy_test.py [test_name ...]
"""
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (APPLIER, AppPair, Failure, Migrate, Pgbench, check, check_equal, main, pgbench, rng,  # noqa: E402
                     test, wait_for)

BASE_PORT = int(os.environ.get("DTS_CHUNKED_COPY_TEST_PORT", "26600"))
FIGURES = []


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_chunk{index}", BASE_PORT + 2 * index)


def chunks_done(pair):
    if not pair.dst_app("SELECT count(*) FROM pg_tables WHERE schemaname = 'dts' AND tablename = 'copy_chunk'")[0][0]:
        return 0
    return pair.dst_app("SELECT count(*) FROM dts.copy_chunk WHERE snapshot IS NOT NULL")[0][0]


@test
def killed_copy_resumes_with_only_the_chunks_in_flight():
    """SIGKILL in the middle of the copy. At the failure point the target holds exactly the
    chunks recorded as done (no row of a chunk in flight); the run after it copies only the
    chunks that were not done, each done chunk is copied once, and the tables end equal."""
    with Pair(0) as pair:
        pair.src.sql("CREATE TABLE big (id bigint PRIMARY KEY, v text);"
                     "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 600000) g;"
                     "CREATE TABLE small (id int PRIMARY KEY, v text);"
                     "INSERT INTO small SELECT g, 'v' FROM generate_series(1, 100) g")
        jobs = 2
        m = Migrate(pair, "kill", "--mode", "full", "--jobs", str(jobs), "--split-larger-than", "512kB").start()
        wait_for("a few chunks to be done", lambda: m.running() and chunks_done(pair) >= 6, 120)
        m.kill9()
        done = pair.dst_app("SELECT lo, hi, rows FROM dts.copy_chunk WHERE snapshot IS NOT NULL AND table_name = "
                            "'\"public\".\"big\"'")
        total = pair.dst_app("SELECT count(*) FROM dts.copy_chunk WHERE table_name = '\"public\".\"big\"'")[0][0]
        check(0 < len(done) < total, f"{len(done)} of {total} chunks done at the kill: the kill proves nothing")
        on_target = pair.dst_app("SELECT count(*) FROM big")[0][0]
        check(on_target == sum(r[2] for r in done), f"{on_target} rows of big on the target, but the done chunks "
              f"hold {sum(r[2] for r in done)}: a chunk in flight left rows behind")
        for lo, hi, rows in done:
            where = " AND ".join(c for c in (f"id >= {lo}" if lo is not None else "",
                                             f"id < {hi}" if hi is not None else "") if c) or "true"
            have = pair.dst_app(f"SELECT count(*) FROM big WHERE {where}")[0][0]
            want = pair.src.value(f"SELECT count(*) FROM big WHERE {where}")
            check(have == want == rows, f"chunk [{lo}, {hi}): {have} rows on the target, {want} on the source")
        check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 1, "the kill lost the slot")
        first_done = {(r[0], r[1]) for r in done}
        m2 = Migrate(pair, "kill2", "--mode", "full", "--jobs", str(jobs), "--split-larger-than", "512kB").start()
        check(m2.proc.wait(300) == 0, f"the run after the kill failed: {m2.log()[-1500:]}")
        log = m2.log()
        found = re.search(r"resuming the copy: (\d+) of (\d+) chunks were done; (\d+) were in flight", log)
        check(found is not None, f"the second run did not resume: {log[-1500:]}")
        redone = int(found.group(3))
        check(redone <= jobs, f"{redone} chunks redone, more than the {jobs} that can be in flight")
        attempts = pair.dst_app("SELECT lo, hi, attempts FROM dts.copy_chunk WHERE table_name = '\"public\".\"big\"'")
        twice = [(lo, hi) for lo, hi, a in attempts if a > 1 and (lo, hi) in first_done]
        check(not twice, f"chunks done before the kill were copied again: {twice}")
        check(sum(1 for _, _, a in attempts if a > 1) == redone, f"attempts {attempts} and {redone} redone disagree")
        rows = check_equal(pair.src, pair.target_view(), ["big", "small"])
        check(pair.dst_app("SELECT phase FROM dts.migration")[0][0] == "DONE", "phase")
        FIGURES.append(f"kill during the copy: {len(done)} of {total} chunks done at the kill, {redone} redone "
                       f"after it, {rows} rows equal")


WRITER_SCHEMA = """
CREATE TABLE hot (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, doc text);
ALTER TABLE hot ALTER doc SET STORAGE EXTERNAL;
INSERT INTO hot SELECT g, 0, CASE WHEN g % 10 = 0 THEN repeat(md5(g::text), 400) END FROM generate_series(1, 300000) g;
CREATE TABLE wiped (id int PRIMARY KEY, v text);
INSERT INTO wiped SELECT g, 'before' FROM generate_series(1, 20000) g;
CREATE TABLE nokey (v int, w text);
INSERT INTO nokey SELECT g, 'w' FROM generate_series(1, 5000) g;
CREATE TABLE part (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE part_n PARTITION OF part FOR VALUES IN ('n');
CREATE TABLE part_s PARTITION OF part FOR VALUES IN ('s');
INSERT INTO part SELECT g, CASE WHEN g % 2 = 0 THEN 'n' ELSE 's' END, g FROM generate_series(1, 20000) g;
"""
WRITER_TABLES = ["hot", "wiped", "nokey", "part"]


def hostile_writer(pair, stop, counts):
    """Changes made while chunks are read: hot rows, keys moved between far-apart chunks and
    back, rows deleted and inserted again, large values changed and left alone, a truncate,
    rows moving between partitions."""
    c = pair.src.connect()
    c.autocommit = True
    cur = c.cursor()
    i = 0
    moved = []
    while not stop.is_set():
        i += 1
        k = rng.randint(1, 299000)
        cur.execute("UPDATE hot SET n = n + 1 WHERE id IN (1, 150000, 299999)")  # the same rows, again and again
        cur.execute("UPDATE hot SET n = n + 1 WHERE id = %s", (k,))  # large value left unchanged if it has one
        r = rng.randint(1, 299000)  # to the last chunk, and later back
        cur.execute("UPDATE hot SET id = id + 1000000 WHERE id = %s AND NOT EXISTS "
                    "(SELECT 1 FROM hot WHERE id = %s)", (r, r + 1000000))
        if cur.rowcount:
            moved.append(r)
        if len(moved) > 5:
            r = moved.pop(0)
            cur.execute("UPDATE hot SET id = id - 1000000 WHERE id = %s AND NOT EXISTS "
                        "(SELECT 1 FROM hot WHERE id = %s)", (r + 1000000, r))
        cur.execute("BEGIN; DELETE FROM hot WHERE id = %s; INSERT INTO hot VALUES (%s, -1, 'again'); COMMIT", (k, k))
        cur.execute("UPDATE hot SET doc = repeat(md5(%s::text), 300) WHERE id = %s", (i, rng.randint(1, 299000)))
        cur.execute("UPDATE part SET region = CASE region WHEN 'n' THEN 's' ELSE 'n' END WHERE id = %s",
                    (rng.randint(1, 20000),))
        cur.execute("UPDATE nokey SET w = %s WHERE v = %s", (str(i), rng.randint(1, 5000)))
        if i == 150:
            cur.execute("BEGIN; TRUNCATE wiped; INSERT INTO wiped SELECT g, 'after' FROM generate_series(1, 500) g; COMMIT")
            counts["truncated"] = True
        counts["rounds"] = i
    c.close()


@test
def changes_during_the_copy_end_exact():
    """A copy of many chunks with one worker, under a writer that changes what is being read,
    killed twice at random moments: every table ends equal, and the log shows that changes
    were both skipped (already in their chunk) and applied."""
    with Pair(1) as pair:
        pair.src.sql(WRITER_SCHEMA)
        pair.src.sql("ALTER TABLE nokey REPLICA IDENTITY FULL")
        stop = threading.Event()
        counts = {"rounds": 0}
        writer = threading.Thread(target=hostile_writer, args=(pair, stop, counts))
        args = ("--jobs", "1", "--split-larger-than", "256kB")
        m = Migrate(pair, "w0", *args).start()
        wait_for("the copy to start", lambda: m.running() and chunks_done(pair) >= 1, 120)
        writer.start()
        try:
            for n in range(2):
                wait_for("the copy to be under way",
                         lambda: m.running() and chunks_done(pair) >= 3 + 4 * n, 180)
                time.sleep(rng.uniform(0, 0.5))
                m.kill9()
                m = Migrate(pair, f"w{n + 1}", *args).start()
            m.wait_phase("STREAMING")
            wait_for("the writer to truncate during the copy", lambda: counts.get("truncated"), 120)
        finally:
            stop.set()
            writer.join()
        # A row read again takes a snapshot of the source as it is now, ahead of the stream;
        # the reconciler retires (and logs its counts) at the first transaction past it. On a
        # live source one always comes; here the writer has stopped, so write one — once the
        # writer's changes are applied, so that no read made while applying them is after it.
        m.wait_applied(pair.src.lsn())
        pair.src.sql("UPDATE wiped SET v = 'last' WHERE id = 1")
        m.wait_applied(pair.src.lsn())
        m.stop()
        rows = check_equal(pair.src, pair.target_view(), WRITER_TABLES)
        skipped = [int(x) for x in re.findall(r"(\d+) changes were already in their chunks", m.log())]
        reconcile_lines = [ln for ln in m.log().splitlines() if "chunk" in ln or "reconcil" in ln][-12:]
        check(skipped and skipped[-1] > 0, f"no change was found already in its chunk: the test proves nothing: "
              f"{skipped}; the last run's log: {reconcile_lines}")
        read_again = [int(x) for x in re.findall(r"(\d+) rows were read again", m.log())]
        check(read_again and read_again[-1] > 0, "no row moved between chunks lacked its large values: the read-again "
              f"path was not exercised: {read_again}")
        copy = m.status_json().get("copy") or {}
        FIGURES.append(f"copy under a hostile writer with 2 kills: {counts['rounds']} writer rounds, {skipped[-1]} "
                       f"changes already in their chunks, {read_again[-1]} rows read again, {copy.get('chunks')} chunks, "
                       f"{rows} rows equal")


@test
def no_snapshot_is_held_for_much_longer_than_a_chunk():
    """The longest transaction holding a snapshot on the source during the copy, sampled by
    migrate itself, against the copy's duration: with 40 chunks copied one at a time it must
    be well under a third of it (the old copy held one snapshot for all of it)."""
    with Pair(2) as pair:
        # Large enough that migrate's samples (one per half second of copy) catch chunks in flight.
        pair.src.sql("CREATE TABLE big (id bigint PRIMARY KEY, v text);"
                     "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 800000) g")
        m = Migrate(pair, "xmin", "--mode", "full", "--jobs", "1", "--split-larger-than", "2MB").start()
        check(m.proc.wait(300) == 0, f"migrate failed: {m.log()[-1500:]}")
        copy = m.status_json().get("copy") or {}
        longest, seconds, chunks = copy.get("longest_snapshot_seconds"), copy.get("seconds"), copy.get("chunks")
        check(chunks and chunks >= 20, f"{chunks} chunks: too few for the test to mean anything")
        check(longest is not None and seconds, f"no figures in the status: {copy}")
        check(0 < longest < seconds / 3, f"a snapshot was held {longest:.2f} s of a {seconds:.2f} s copy")
        check_equal(pair.src, pair.target_view(), ["big"])
        FIGURES.append(f"longest snapshot during a {seconds:.1f} s copy of {chunks} chunks: {longest:.2f} s")


PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def resync(pair, *tables):
    return subprocess.run([APPLIER, "resync", "--source", pair.src.conninfo, "--target", pair.target,
                           "--tables", ",".join(tables), "--timeout", "300", "--split-larger-than", "512kB"],
                          capture_output=True, text=True, timeout=400)


def damage(pair):
    """Rows changed by hand on the target: some altered, one that the source never had. (A row
    missing on the target would stop the stream at its next change, before any resync.)"""
    pair.dst_app("UPDATE pgbench_accounts SET abalance = -1, filler = 'by hand' WHERE aid % 89 = 0; "
                 "INSERT INTO pgbench_accounts VALUES (999999999, 1, 0, 'stray')")


@test
def resync_under_pgbench_ends_equal():
    """A table damaged on the target is copied again by `resync` while the migration keeps
    streaming under pgbench (the running migrate carries it out); then everything is equal."""
    with Pair(3) as pair:
        pgbench(pair.src, "-i", "-q", "-s", "3")
        m = Migrate(pair, "rs", "--split-larger-than", "1MB").start()
        m.wait_phase("STREAMING")
        bench = Pgbench(pair.src, clients=2, rate=400)
        try:
            damage(pair)
            out = resync(pair, "pgbench_accounts")
            check(out.returncode == 0, f"resync failed ({out.returncode}): {out.stderr[-1500:]}")
            check("done" in out.stdout, f"resync said: {out.stdout} {out.stderr[-500:]}")
        finally:
            bench.stop()
        m.wait_applied(pair.src.lsn())
        m.stop()
        rows = check_equal(pair.src, pair.target_view(), PGBENCH_TABLES)
        check(re.search(r"resync \d+: 1 tables copied again", m.log()) is not None,
              f"the running migrate did not carry out the resync: {m.log()[-1500:]}")
        FIGURES.append(f"resync of pgbench_accounts under pgbench: {out.stdout.strip()}; {rows} rows equal")


@test
def a_resync_whose_copy_loses_the_source_resumes_instead_of_failing():
    """The source session reading a chunk for a resync is terminated: its tables were already
    emptied on the target, so the request must not end FAILED (its chunks would never be read
    and every change to those tables skipped: they were, silently); it stays COPYING, the
    migration reconnects and resumes it, and the tables end equal."""
    with Pair(6) as pair:
        pgbench(pair.src, "-i", "-q", "-s", "4")
        m = Migrate(pair, "rsfail", "--split-larger-than", "1MB").start()
        m.wait_phase("STREAMING")
        bench = Pgbench(pair.src, clients=2, rate=300)
        killed = 0
        try:
            damage(pair)
            r = subprocess.Popen([APPLIER, "resync", "--source", pair.src.conninfo, "--target", pair.target,
                                  "--tables", "pgbench_accounts", "--timeout", "300", "--split-larger-than", "256kB"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

            def terminate_a_chunk_read():
                if r.poll() is not None:
                    raise Failure(f"resync ended before a chunk read could be cut: {r.stdout.read()} {r.stderr.read()[-800:]}")
                return pair.src.value("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE query ILIKE 'COPY%pgbench_accounts%' AND pid <> pg_backend_pid()")
            killed = wait_for("a resync chunk being read", terminate_a_chunk_read, 120, interval=0.01)
            out, err = r.communicate(timeout=400)
            check(r.returncode == 0 and "done" in out, f"resync ended {r.returncode}: {out} {err[-1500:]}")
        finally:
            bench.stop()
        m.wait_applied(pair.src.lsn())
        states = pair.dst_app("SELECT state, error IS NOT NULL FROM dts.resync ORDER BY id")
        check(states == [("DONE", True)], f"resync requests: {states}")
        m.stop()
        check_equal(pair.src, pair.target_view(), PGBENCH_TABLES)
        check("it resumes when the stream starts again" in m.log(), f"the stopped copy is not reported: {m.log()[-1500:]}")
        FIGURES.append(f"resync with {killed} chunk read(s) cut: resumed and equal")


@test
def resync_with_no_applier_running_follows_until_done():
    """The migration's applier is stopped: resync follows the slot itself until the copy is
    done (and the changes made meanwhile are applied); the next migrate goes on from there."""
    with Pair(4) as pair:
        pgbench(pair.src, "-i", "-q", "-s", "2")
        m = Migrate(pair, "rs2", "--split-larger-than", "1MB").start()
        m.wait_phase("STREAMING")
        m.stop()
        pgbench(pair.src, "-n", "-t", "300")
        damage(pair)
        out = resync(pair, "pgbench_accounts")
        check(out.returncode == 0, f"resync failed ({out.returncode}): {out.stderr[-1500:]}")
        m = Migrate(pair, "rs3").start()
        m.wait_applied(pair.src.lsn())
        m.stop()
        check_equal(pair.src, pair.target_view(), PGBENCH_TABLES)
        bad = subprocess.run([APPLIER, "resync", "--source", pair.src.conninfo, "--target", pair.target,
                              "--tables", "no_such_table"], capture_output=True, text=True, timeout=120)
        check(bad.returncode != 0 and "no_such_table" in bad.stderr + bad.stdout or "selects no table" in bad.stderr,
              f"a resync of a table that does not exist: {bad.returncode} {bad.stderr[-500:]}")


@test
def verify_repair_copies_the_differing_table_again():
    """A row changed by hand on the target: `verify --repair` finds the table different, copies
    it again while the migration streams under pgbench, compares it once more, and exits 0."""
    with Pair(5) as pair:
        pgbench(pair.src, "-i", "-q", "-s", "2")
        m = Migrate(pair, "repair", "--split-larger-than", "1MB").start()
        m.wait_phase("STREAMING")
        bench = Pgbench(pair.src, clients=2, rate=200)
        try:
            pair.dst_app("UPDATE pgbench_accounts SET filler = 'by hand' WHERE aid IN (7, 70000, 150000)")
            out = subprocess.run([APPLIER, "verify", "--source", pair.src.conninfo, "--target", pair.target,
                                  "--repair", "--json"], capture_output=True, text=True, timeout=600)
        finally:
            bench.stop()
        check(out.returncode == 0, f"verify --repair exited {out.returncode}: {out.stdout[-800:]} {out.stderr[-1500:]}")
        check(out.stdout.count('"DIFFERENT"') >= 1 and "repairing" in out.stderr,
              f"verify did not find the difference before repairing: {out.stdout[-800:]} {out.stderr[-800:]}")
        m.wait_applied(pair.src.lsn())
        m.stop()
        check(pair.dst_app("SELECT count(*) FROM pgbench_accounts WHERE filler = 'by hand'")[0][0] == 0,
              "the changes made by hand are still there")
        check_equal(pair.src, pair.target_view(), PGBENCH_TABLES)


def figures():
    for f in FIGURES:
        print(f"  figure: {f}")


if __name__ == "__main__":
    main("chunked_copy_test", figures)
