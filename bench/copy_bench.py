#!/usr/bin/python3
"""Snapshot copy race: `dts_applier migrate --mode full` against `pgcopydb clone`, native
logical replication's initial sync, and `pg_dump -Fc` + `pg_restore -j`, in one run.

The source holds pgbench at --scale (30 by default: 3M accounts, with their indexes). Each tool
copies it into a fresh database on one target server, with the same --jobs, best of --repeat
runs; every result is checked equal to the source.

- Source data: by default loaded by `pgbench -i` (its client-side COPY FREEZE) then
  VACUUM (FREEZE, ANALYZE), so no tool pays for setting hint bits. --fresh loads it instead
  with `pgbench -i -I dtpG` (primary keys first, then the rows by INSERT ... SELECT, with
  autovacuum off on the source), so nothing has read the rows since they were written, and
  loads it again before every run that reads it: each tool reads freshly loaded data, and pays
  for the hint bits as the first reader of a fresh table does.
- "longest snapshot s": while a tool runs, a thread polls the source every 100 ms for the
  oldest transaction holding an xmin (pg_stat_activity.backend_xmin: client backends and
  walsenders, such as the tablesync's, not autovacuum), and for how long a replication slot
  has held an xmin (pg_replication_slots.xmin; a logical slot's catalog_xmin holds back only
  the catalogs and is not counted); the longest seen over the tool's runs is reported.
- "target COPY FROM local file + indexes": the target's own limit. Each table is written on
  the source to local files (`COPY ... TO '<file>' (FORMAT binary)`, in up to --jobs ctid
  ranges), the pre-data schema restored into a fresh database; timed: the files loaded by
  --jobs sessions with `COPY ... FROM '<file>'`, then `pg_restore -j --jobs` of the post-data
  section (dumped beforehand). dts's time is reported as a share of it.
- The cost of a kill: one more dts run, SIGKILLed (its process group) once half the chunks in
  the target's dts.copy_chunk are done, then the same command run again to the end; its total
  time against the best uninterrupted dts run, and how many chunks the second run redid.
  dts splits tables larger than 64MB; when pgbench_accounts would be fewer than 4 chunks at
  that size (small --scale) the split is made so that it is at least 8, and the report says so.

Usage: bench/copy_bench.py [--scale N] [--jobs N] [--repeat N] [--fsync on|off] [--fresh]
"""
import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (APPLIER, DST_PORT, REPO, SRC_PORT, conninfo, sql, start_servers,  # noqa: E402
                      stop_servers, write_report)

TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
SPLIT_MB = 64


def fresh_db(name):
    sql(DST_PORT, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    sql(DST_PORT, f"CREATE DATABASE {name}")


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"copy_bench: {' '.join(cmd[:3])} failed: {out.stderr[-600:]}")
    return out


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def load_source(scale, fresh):
    pgbench = ["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(SRC_PORT), "-U", "postgres"]
    if fresh:
        # Server-side generation (no COPY FREEZE) into tables that already have their primary
        # keys: no index build and no vacuum reads the rows after they are committed.
        run(pgbench + ["-I", "dtpG", "postgres"])
    else:
        run(pgbench + ["postgres"])
        # The first reader of freshly loaded rows pays for setting their hint bits: settle the
        # data first, so that no tool pays for it.
        sql(SRC_PORT, "VACUUM (FREEZE, ANALYZE)")


class SnapshotSampler(threading.Thread):
    """Polls the source every 100 ms for the longest-held snapshot (seconds) while a tool runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.longest = 0.0
        self.halt = threading.Event()
        self.first_seen = {}  # pid or slot without a start time of its own -> when first seen holding an xmin
        self.conn = None

    def sample(self):
        if self.conn is None or self.conn.closed:
            self.conn = psycopg2.connect(conninfo(SRC_PORT))
            self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute("SELECT pid, extract(epoch FROM clock_timestamp() - xact_start)::float8 FROM pg_stat_activity "
                        "WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid() "
                        "AND backend_type IN ('client backend', 'walsender')")
            held = cur.fetchall()
            cur.execute("SELECT slot_name FROM pg_replication_slots WHERE xmin IS NOT NULL")
            slots = cur.fetchall()
        now = time.monotonic()
        holders = set()
        for pid, age in held:
            if age is None:  # a walsender holding an xmin outside a transaction: timed from when first seen
                holders.add(("pid", pid))
                age = now - self.first_seen.setdefault(("pid", pid), now)
            self.longest = max(self.longest, age)
        for (slot,) in slots:
            holders.add(("slot", slot))
            self.longest = max(self.longest, now - self.first_seen.setdefault(("slot", slot), now))
        for k in list(self.first_seen):
            if k not in holders:
                del self.first_seen[k]

    def run(self):
        while not self.halt.is_set():
            try:
                self.sample()
            except psycopg2.Error:
                pass
            self.halt.wait(0.1)
        if self.conn is not None:
            self.conn.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.join()


def dts_cmd(jobs, split):
    return [APPLIER, "migrate", "--mode", "full", "--source", conninfo(SRC_PORT), "--target",
            conninfo(DST_PORT, "dts_copy"), "--jobs", str(jobs), "--split-larger-than", split, "--slot", "bench_copy"]


def dts(jobs, split):
    fresh_db("dts_copy")
    run(dts_cmd(jobs, split))


def pgcopydb(jobs):
    fresh_db("pgcopydb_copy")
    with tempfile.TemporaryDirectory() as d:
        run(["pgcopydb", "clone", "--source", conninfo(SRC_PORT), "--target", conninfo(DST_PORT, "pgcopydb_copy"),
             "--table-jobs", str(jobs), "--index-jobs", str(jobs), "--dir", d, "--no-owner", "--no-acl"])


def native(jobs):
    fresh_db("native_copy")
    # Native logical replication copies data only: the schema goes first (with its indexes,
    # as a subscriber's tables have them), then the subscription's initial sync.
    schema = run(["pg_dump", "-d", conninfo(SRC_PORT), "--schema-only"]).stdout
    run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo(DST_PORT, "native_copy")], input=schema)
    sql(SRC_PORT, "DROP PUBLICATION IF EXISTS bench_pub; CREATE PUBLICATION bench_pub FOR ALL TABLES")
    sql(DST_PORT, f"CREATE SUBSCRIPTION bench_sub CONNECTION '{conninfo(SRC_PORT)}' PUBLICATION bench_pub "
                  "WITH (binary = true)", "native_copy")
    deadline = time.monotonic() + 3600
    while sql(DST_PORT, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'", "native_copy")[0][0] > 0:
        if time.monotonic() > deadline:
            sys.exit("copy_bench: the native subscription did not finish its initial copy within an hour")
        time.sleep(0.05)
    sql(DST_PORT, "ALTER SUBSCRIPTION bench_sub DISABLE", "native_copy")
    sql(DST_PORT, "ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)", "native_copy")
    sql(DST_PORT, "DROP SUBSCRIPTION bench_sub", "native_copy")
    for (slot,) in sql(SRC_PORT, "SELECT slot_name FROM pg_replication_slots"):
        sql(SRC_PORT, f"SELECT pg_drop_replication_slot('{slot}')")


def dump_restore(jobs):
    fresh_db("dump_copy")
    with tempfile.TemporaryDirectory() as d:
        run(["pg_dump", "-d", conninfo(SRC_PORT), "-Fc", "-f", f"{d}/db.dump"])
        run(["pg_restore", "-d", conninfo(DST_PORT, "dump_copy"), "-j", str(jobs), f"{d}/db.dump"])


def server_dir():
    """A private directory both servers (run as the data directory's owner) can write and read."""
    d = tempfile.mkdtemp(prefix="copy_bench_")
    st = os.stat(sql(SRC_PORT, "SHOW data_directory")[0][0])
    if os.geteuid() == 0 and st.st_uid != 0:
        os.chown(d, st.st_uid, st.st_gid)  # still 0700: only the servers' user (and root) get in
    return d


def export_source(d, jobs):
    """Writes every table to files on the source, in up to `jobs` ctid ranges; returns the
    (table, file, pages) to load, largest first."""
    parts = []
    block = int(sql(SRC_PORT, "SHOW block_size")[0][0])
    for t in TABLES:
        pages = sql(SRC_PORT, f"SELECT pg_relation_size('{t}')")[0][0] // block
        n = jobs if pages >= 8 * jobs else 1
        for i in range(n):
            f = os.path.join(d, f"{t}.{i}.bin")
            lo, hi = pages * i // n, pages * (i + 1) // n
            where = [f"ctid >= '({lo},0)'::tid"] if i > 0 else []
            where += [f"ctid < '({hi},0)'::tid"] if i + 1 < n else []
            src = f"(SELECT * FROM {t} WHERE {' AND '.join(where)})" if where else t
            sql(SRC_PORT, f"COPY {src} TO '{f}' (FORMAT binary)")
            parts.append((t, f, hi - lo))
    parts.sort(key=lambda p: -p[2])
    run(["pg_dump", "-d", conninfo(SRC_PORT), "--section=post-data", "-Fc", "-f", os.path.join(d, "post.dump")])
    return parts


def limit_prepare():
    fresh_db("limit_copy")
    schema = run(["pg_dump", "-d", conninfo(SRC_PORT), "--section=pre-data"]).stdout
    run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo(DST_PORT, "limit_copy")], input=schema)


def limit_load(d, parts, jobs):
    todo = queue.Queue()
    for p in parts:
        todo.put(p)
    errors = []

    def worker():
        try:
            c = psycopg2.connect(conninfo(DST_PORT, "limit_copy"))
            c.autocommit = True
            with c.cursor() as cur:
                while True:
                    try:
                        t, f, _ = todo.get_nowait()
                    except queue.Empty:
                        break
                    cur.execute(f"COPY {t} FROM '{f}' (FORMAT binary)")
            c.close()
        except psycopg2.Error as e:
            errors.append(e)

    workers = [threading.Thread(target=worker) for _ in range(jobs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        sys.exit(f"copy_bench: COPY FROM a local file failed: {errors[0]}")
    run(["pg_restore", "-d", conninfo(DST_PORT, "limit_copy"), "-j", str(jobs), os.path.join(d, "post.dump")])


def dts_killed_once(jobs, split):
    """Runs dts, SIGKILLs it once half its chunks are done, runs it again to the end.
    Returns (total seconds, chunks done at the kill, chunks, seconds to the kill, chunks redone),
    or None if migrate finished before half its chunks were seen done."""
    fresh_db("dts_copy")
    cmd = dts_cmd(jobs, split)
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        conn, killed = None, None
        while killed is None and p.poll() is None:
            if time.monotonic() - t0 > 3600:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                sys.exit("copy_bench: dts did not get half its chunks done within an hour")
            try:
                if conn is None:
                    conn = psycopg2.connect(conninfo(DST_PORT, "dts_copy"))
                    conn.autocommit = True
                with conn.cursor() as cur:  # fails until migrate has made dts.copy_chunk
                    cur.execute("SELECT count(*) FILTER (WHERE snapshot IS NOT NULL), count(*) FROM dts.copy_chunk")
                    done, total = cur.fetchone()
                if total > 0 and 2 * done >= total:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    killed = (done, total, time.monotonic() - t0)
                    break
            except psycopg2.Error:
                pass
            time.sleep(0.05)
        if conn is not None:
            conn.close()
        if killed is None:
            if p.returncode != 0:
                err.seek(0)
                sys.exit(f"copy_bench: dts failed: {err.read()[-600:].decode(errors='replace')}")
            return None
    run(cmd)
    total_secs = time.monotonic() - t0
    redone = sql(DST_PORT, "SELECT count(*) FROM dts.copy_chunk WHERE attempts > 1", "dts_copy")[0][0]
    return (total_secs, *killed, redone)


def digest(port, db, table):
    return sql(port, f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t", db)[0]


def check_equal(db, name):
    for t in TABLES:
        if digest(SRC_PORT, "postgres", t) != digest(DST_PORT, db, t):
            sys.exit(f"copy_bench: {t} differs after {name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool; the best counts")
    ap.add_argument("--fsync", choices=["on", "off"], default="off",
                    help="fsync and full_page_writes: on is PostgreSQL's default (what users run), off shows CPU cost")
    ap.add_argument("--fresh", action="store_true",
                    help="no VACUUM (FREEZE): the source is loaded again before each run, and each tool reads "
                         "freshly loaded rows (hint bits not set)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "copy.md"))
    args = ap.parse_args()
    start_servers("max_replication_slots=20", "max_wal_senders=20", "max_sync_workers_per_subscription=4",
                  "max_logical_replication_workers=8", f"fsync={args.fsync}", f"full_page_writes={args.fsync}")
    files = None
    try:
        if args.fresh:
            # Autovacuum would set the hint bits (and the visibility map) of the loaded rows.
            sql(SRC_PORT, "ALTER SYSTEM SET autovacuum = off")
            sql(SRC_PORT, "SELECT pg_reload_conf()")
        load_source(args.scale, args.fresh)
        source_read = [False]  # whether a run has read the rows since they were loaded

        def before_reading_source():
            if args.fresh and source_read[0]:
                load_source(args.scale, True)
            source_read[0] = True

        size_mb = sql(SRC_PORT, "SELECT pg_database_size('postgres')")[0][0] / 1e6
        accounts = sql(SRC_PORT, "SELECT pg_relation_size('pgbench_accounts')")[0][0]
        split, split_note = f"{SPLIT_MB}MB", f"--split-larger-than {SPLIT_MB}MB"
        if -(-accounts // (SPLIT_MB << 20)) < 4:
            split = str(max(1, accounts // 8))
            split_note = (f"--split-larger-than {split} (bytes: pgbench_accounts, {accounts / 1e6:.1f} MB, would be "
                          f"fewer than 4 chunks at {SPLIT_MB}MB; this makes at least 8)")

        results = []
        tools = (("dts_applier migrate --mode full", lambda: dts(args.jobs, split), "dts_copy"),
                 ("pgcopydb clone", lambda: pgcopydb(args.jobs), "pgcopydb_copy"),
                 ("native initial sync", lambda: native(args.jobs), "native_copy"),
                 ("pg_dump -Fc + pg_restore -j", lambda: dump_restore(args.jobs), "dump_copy"))
        for name, fn, db in tools:
            runs, longest = [], 0.0
            for _ in range(args.repeat):
                before_reading_source()
                sql(SRC_PORT, "CHECKPOINT")
                sql(DST_PORT, "CHECKPOINT")
                with SnapshotSampler() as sampler:
                    runs.append(timed(fn))
                longest = max(longest, sampler.longest)
            secs = min(runs)
            check_equal(db, name)
            print(f"   {name:34} {secs:6.2f}s  longest snapshot {longest:6.2f}s", file=sys.stderr)
            results.append((name, secs, longest))

        before_reading_source()
        sql(SRC_PORT, "CHECKPOINT")
        sql(DST_PORT, "CHECKPOINT")
        killed = dts_killed_once(args.jobs, split)
        check_equal("dts_copy", "dts killed and run again")

        files = server_dir()
        parts = export_source(files, args.jobs)
        runs = []
        for _ in range(args.repeat):
            limit_prepare()
            sql(DST_PORT, "CHECKPOINT")
            runs.append(timed(lambda: limit_load(files, parts, args.jobs)))
        limit_secs = min(runs)
        check_equal("limit_copy", "the load from local files")
        print(f"   {'target COPY FROM local file':34} {limit_secs:6.2f}s", file=sys.stderr)
    finally:
        stop_servers()
        if files:
            shutil.rmtree(files, ignore_errors=True)
    dts_secs = results[0][1]
    data = ("freshly loaded source rows (hint bits not set; loaded again before every run that reads them)"
            if args.fresh else "source vacuumed frozen before the runs")
    lines = [f"pgbench scale {args.scale} ({size_mb:.0f} MB with indexes), --jobs {args.jobs}, best of {args.repeat}; "
             f"fsync {args.fsync}, {data}; dts {split_note}:", "",
             "| tool | seconds | MB/s | dts speed-up | longest snapshot s |", "|---|---:|---:|---:|---:|"]
    for name, secs, longest in results:
        lines.append(f"| {name} | {secs:.2f} | {size_mb / secs:.0f} | {secs / dts_secs:.2f}x | {longest:.2f} |")
    lines.append(f"| target COPY FROM local file + indexes | {limit_secs:.2f} | {size_mb / limit_secs:.0f} "
                 f"| {limit_secs / dts_secs:.2f}x | - |")
    lines += ["", f"dts reaches {100 * limit_secs / dts_secs:.0f}% of the target's own limit (binary COPY FROM files "
                  f"on the target, {len(parts)} files by {args.jobs} sessions, then pg_restore -j {args.jobs} of the "
                  "post-data section)."]
    if killed is None:
        lines.append("Cost of a kill: not measured: migrate finished before half its chunks were seen done.")
    else:
        total, done, chunks, at, redone = killed
        lines.append(f"Cost of a kill: dts SIGKILLed at {at:.2f} s with {done} of {chunks} chunks done, then run "
                     f"again to the end: {total:.2f} s in all, {total / dts_secs:.2f}x the best uninterrupted run; "
                     f"the second run redid {redone} chunk{'s' if redone != 1 else ''}.")
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
