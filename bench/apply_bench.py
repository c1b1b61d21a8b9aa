#!/usr/bin/python3
"""Catch-up race: dts_applier follow against native logical replication on the same backlog.

With apply stopped, the source builds a backlog; then native logical replication (a
subscription, binary, streaming on: its best settings in PostgreSQL 15) and dts_applier follow
each catch up, one after the other, into their own database on one target server. A catch-up
ends when a marker row, committed after the backlog, is visible on the target.

A single catch-up varies by up to +-30% from run to run on a small machine, so each side runs R
times (--repeat, default 2) on the same backlog, alternating native, dts, native, dts, ...: before
the backlog, each side's slot is copied R - 1 times (pg_copy_logical_replication_slot, so every
copy starts at the same point and decodes the same WAL), and each run has a target database of
its own (dts_target, dts_target_2, ...; native_target, native_target_2, ..., one disabled
subscription each), prepared alike. Before each run both servers are checkpointed and left to
finish any autovacuum, so a run does not pay for the previous one's leftovers. The table reports
each side's best (minimum) time and the ratio of the bests, plus every run's time; the data of
every table is compared between the source and every target database.

Workloads: 1M inserts in one transaction; 100k single-row transactions from 2 clients; pgbench
tpcb-like for 60 s; a 1M-row UPDATE then a 1M-row DELETE (two transactions, of a table filled
alike on every side beforehand). dts runs once per apply-worker count of --workers (default
1,4), each into databases and from slots of its own (dts_target_w4, dts_slot_w4, ...).

Usage: bench/apply_bench.py [--rows N] [--txns N] [--pgbench-seconds N] [--repeat R] [--workers 1,4]
[--workloads insert_1txn,small_txns,pgbench,update_delete]
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (APPLIER, DST_PORT, REPO, SRC_PORT, conninfo, sql, start_servers,  # noqa: E402
                      stop_servers, write_report)


def pgbench(port, *args, db="postgres"):
    out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", *args, db],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"apply_bench: pgbench {' '.join(args)} failed: {out.stderr[-400:]}")
    return out.stdout


BENCH_TABLE = "CREATE TABLE bench_t (id bigint PRIMARY KEY, k int, v text, ts timestamptz, n numeric)"
MARKER = "CREATE TABLE marker (id int PRIMARY KEY)"


def run_name(base, run):
    """Name of run `run` (1-based) of a slot, target database or subscription: base, base_2, base_3, ..."""
    return base if run == 1 else f"{base}_{run}"


def dts_name(base, workers):
    """dts's slot or target database for a worker count: base with 1 worker, base_w4 with 4."""
    return base if workers == 1 else f"{base}_w{workers}"


def drop_leftovers():
    """Slots, target databases (with their subscriptions) and dts origins of an earlier workload or run."""
    dbs = [r[0] for r in sql(DST_PORT, "SELECT datname FROM pg_database WHERE datname LIKE 'dts\\_target%' "
                                       "OR datname LIKE 'native\\_target%'")]
    for db in dbs:
        for (sub,) in sql(DST_PORT, "SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                                    f"WHERE d.datname = '{db}'"):
            sql(DST_PORT, f"ALTER SUBSCRIPTION {sub} DISABLE", db)
            sql(DST_PORT, f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)", db)
            sql(DST_PORT, f"DROP SUBSCRIPTION {sub}", db)
        sql(DST_PORT, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    sql(DST_PORT, "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin "
                  "WHERE roname LIKE 'dts\\_dts\\_slot%'")
    # A walsender of a run just finished may still hold its slot for a moment.
    ours = "(slot_name LIKE 'dts\\_slot%' OR slot_name LIKE 'native\\_slot%')"
    deadline = time.monotonic() + 30
    while True:
        sql(SRC_PORT, f"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE {ours} "
                      "AND active_pid IS NOT NULL")
        sql(SRC_PORT, f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE {ours} "
                      "AND NOT active")
        if sql(SRC_PORT, f"SELECT count(*) FROM pg_replication_slots WHERE {ours}")[0][0] == 0:
            return
        if time.monotonic() > deadline:
            sys.exit("apply_bench: leftover replication slots could not be dropped")
        time.sleep(0.2)


FILL_ROWS = ("INSERT INTO bench_t SELECT g, g % 1000, md5(g::text), '2026-11-30'::timestamptz, g / 7.0 "
             "FROM generate_series(1, {rows}) g")


def prepare(workload, scale, repeat, rows, workers):
    """Tables (and pgbench's initial data) equal on the source and every target database; one slot
    per run and side, all at the same point; one disabled subscription per native run."""
    drop_leftovers()
    sql(SRC_PORT, "DROP TABLE IF EXISTS bench_t, marker, pgbench_accounts, pgbench_branches, pgbench_tellers, "
                  "pgbench_history; DROP PUBLICATION IF EXISTS bench_pub")
    sides = ["native_target"] + [dts_name("dts_target", w) for w in workers]
    targets = [run_name(side, i) for i in range(1, repeat + 1) for side in sides]
    for db in targets:
        sql(DST_PORT, f"CREATE DATABASE {db}")
    for port, db in [(SRC_PORT, "postgres")] + [(DST_PORT, db) for db in targets]:
        sql(port, BENCH_TABLE, db)
        sql(port, MARKER, db)
        if workload == "pgbench":
            pgbench(port, "-i", "-q", "-s", str(scale), db=db)
        if workload == "update_delete":
            sql(port, FILL_ROWS.format(rows=rows), db)
            sql(port, "VACUUM ANALYZE bench_t", db)
    sql(SRC_PORT, "CREATE PUBLICATION bench_pub FOR TABLES IN SCHEMA public")
    sql(SRC_PORT, "SELECT pg_create_logical_replication_slot('dts_slot', 'dts_decoding')")
    sql(SRC_PORT, "SELECT pg_create_logical_replication_slot('native_slot', 'pgoutput')")
    for i in range(1, repeat + 1):
        copies = [dts_name("dts_slot", w) for w in workers] + ["native_slot"]
        for slot in copies:
            if run_name(slot, i) not in ("dts_slot", "native_slot"):
                source = "native_slot" if slot == "native_slot" else "dts_slot"
                sql(SRC_PORT, f"SELECT pg_copy_logical_replication_slot('{source}', '{run_name(slot, i)}')")
    for i in range(1, repeat + 1):
        sql(DST_PORT, f"CREATE SUBSCRIPTION {run_name('native_sub', i)} CONNECTION '{conninfo(SRC_PORT)}' "
                      f"PUBLICATION bench_pub WITH (create_slot = false, slot_name = '{run_name('native_slot', i)}', "
                      "enabled = false, copy_data = false, binary = true, streaming = on)",
            db=run_name("native_target", i))
    return targets


def backlog(workload, rows, txns, seconds):
    if workload == "insert_1txn":
        sql(SRC_PORT, f"INSERT INTO bench_t SELECT g, g % 1000, md5(g::text), now(), g / 7.0 "
                      f"FROM generate_series(1, {rows}) g")
        return rows
    if workload == "update_delete":
        sql(SRC_PORT, "UPDATE bench_t SET k = k + 1, v = md5(v), n = n + 1")
        sql(SRC_PORT, "DELETE FROM bench_t")
        return 2 * rows
    if workload == "small_txns":
        script = "/tmp/dts_apply_bench_small.sql"
        with open(script, "w") as f:
            f.write("\\set id random(1, 1000000000000)\n"
                    "INSERT INTO bench_t VALUES (:id, :id % 1000, md5(:id::text), now(), :id / 7.0) "
                    "ON CONFLICT DO NOTHING;\n")
        pgbench(SRC_PORT, "-n", "-c", "2", "-j", "2", "-t", str(txns // 2), "-f", script)
        return sql(SRC_PORT, "SELECT count(*) FROM bench_t")[0][0]
    if workload == "pgbench":
        out = pgbench(SRC_PORT, "-n", "-c", "2", "-j", "2", "-T", str(seconds))
        done = [l for l in out.splitlines() if "actually processed" in l]
        tx = int(done[0].split(":")[1].split("/")[0]) if done else 0
        return tx * 4  # tpcb-like: 3 updates and 1 insert per transaction
    raise ValueError(workload)


def settle(timeout=120):
    """Before a run: a checkpoint on both servers, then no autovacuum worker at work on either
    (waits up to `timeout` s), so a run does not pay for the writes of the one before."""
    for port in (SRC_PORT, DST_PORT):
        sql(port, "CHECKPOINT")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = sum(sql(port, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")[0][0]
                   for port in (SRC_PORT, DST_PORT))
        if busy == 0:
            return
        time.sleep(0.5)
    print(f"   (autovacuum still busy after {timeout}s; racing anyway)", file=sys.stderr)


def wait_marker(db, timeout=1800):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sql(DST_PORT, "SELECT count(*) FROM marker", db)[0][0] > 0:
            return
        time.sleep(0.05)
    sys.exit(f"apply_bench: {db} did not catch up within {timeout}s")


def race_native(run):
    db, sub = run_name("native_target", run), run_name("native_sub", run)
    t0 = time.monotonic()
    sql(DST_PORT, f"ALTER SUBSCRIPTION {sub} ENABLE", db=db)
    wait_marker(db)
    secs = time.monotonic() - t0
    sql(DST_PORT, f"ALTER SUBSCRIPTION {sub} DISABLE", db=db)
    sql(DST_PORT, f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)", db=db)
    sql(DST_PORT, f"DROP SUBSCRIPTION {sub}", db=db)
    return secs


def race_dts(run, end_lsn, workers):
    db = run_name(dts_name("dts_target", workers), run)
    t0 = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", APPLIER, "follow", "--source", conninfo(SRC_PORT),
                          "--target", conninfo(DST_PORT, db), "--slot", run_name(dts_name("dts_slot", workers), run),
                          "--until-lsn", end_lsn, "--apply-workers", str(workers),
                          *os.environ.get("DTS_FOLLOW_ARGS", "").split()],
                         capture_output=True, text=True)
    secs = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"apply_bench: dts_applier failed: {out.stderr[-800:]}")
    wait_marker(db, timeout=5)
    rss_kb = int(out.stderr.strip().splitlines()[-1])
    return secs, rss_kb


def same_data(tables, dbs):
    for t in tables:
        q = f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
        a = sql(SRC_PORT, q)[0]
        for db in dbs:
            b = sql(DST_PORT, q, db)[0]
            if a != b:
                sys.exit(f"apply_bench: {t} differs between the source and {db}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--txns", type=int, default=100_000)
    ap.add_argument("--pgbench-seconds", type=int, default=60)
    ap.add_argument("--pgbench-scale", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2,
                    help="catch-ups per side on the same backlog, alternating native and dts; the best counts")
    ap.add_argument("--workloads", default="insert_1txn,small_txns,pgbench,update_delete")
    ap.add_argument("--workers", default="1,4", help="dts runs with each of these --apply-workers counts")
    ap.add_argument("--fsync", choices=["on", "off"], default="off",
                    help="fsync and full_page_writes: on is PostgreSQL's default (what users run), off shows CPU cost")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "apply.md"))
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        ap.error("--workers must be comma-separated integers, e.g. 1,4")
    if not workers or any(w < 1 or w > 16 for w in workers):
        ap.error("--workers: each count from 1 to 16")

    # Every run has a slot of its own on the source (2 * repeat) and native's a walsender and worker.
    slots = max(20, (1 + len(workers)) * args.repeat + 4)
    start_servers(f"max_replication_slots={slots}", f"max_wal_senders={slots}",
                  f"max_logical_replication_workers={max(8, args.repeat + 4)}",
                  "wal_retrieve_retry_interval=100ms", f"fsync={args.fsync}", f"full_page_writes={args.fsync}")
    rows = []
    try:
        # As a migration's source is set up (check's ddl_capture item): with it, follow can emit
        # heartbeats, so small transactions travel packed (--no-packing in DTS_FOLLOW_ARGS: not).
        sql(SRC_PORT, "CREATE EXTENSION dts_decoding")
        for w in args.workloads.split(","):
            dbs = prepare(w, args.pgbench_scale, args.repeat, args.rows, workers)
            changes = backlog(w, args.rows, args.txns, args.pgbench_seconds)
            sql(SRC_PORT, "INSERT INTO marker VALUES (1)")
            end = sql(SRC_PORT, "SELECT pg_current_wal_lsn()::text")[0][0]
            print(f"== {w}: {changes} changes in the backlog", file=sys.stderr)
            native, dts, rss = [], {n: [] for n in workers}, 0
            for run in range(1, args.repeat + 1):
                settle()
                native.append(race_native(run))
                print(f"   run {run}: native {native[-1]:.2f}s", file=sys.stderr)
                for n in workers:
                    settle()
                    secs, rss_kb = race_dts(run, end, n)
                    dts[n].append(secs)
                    rss = max(rss, rss_kb)
                    print(f"   run {run}: dts ({n} workers) {secs:.2f}s, peak RSS {rss_kb // 1024} MB", file=sys.stderr)
            tables = ["bench_t", "marker"] + (["pgbench_accounts", "pgbench_branches", "pgbench_tellers",
                                               "pgbench_history"] if w == "pgbench" else [])
            same_data(tables, dbs)
            rows.append((w, changes, native, dts, rss))
    finally:
        stop_servers()

    # The apply-speed issue's targets (the decoding floor caps update_delete near 3.7x).
    targets = {"insert_1txn": 4.0, "small_txns": 2.0, "pgbench": 2.5, "update_delete": 2.5}
    head = "| workload | changes | native s (best) |"
    for n in workers:
        head += f" dts {n}w s (best) | ratio {n}w |"
    lines = [head + " target | dts peak RSS | native runs s |" + "".join(f" dts {n}w runs s |" for n in workers),
             "|---|---:|---:|" + "---:|---:|" * len(workers) + "---:|---:|---:|" + "---:|" * len(workers)]
    for w, changes, native_runs, dts_runs, rss in rows:
        native = min(native_runs)
        best = max(native / min(dts_runs[n]) for n in workers)
        line = f"| {w} | {changes} | {native:.2f} |"
        for n in workers:
            line += f" {min(dts_runs[n]):.2f} | {native / min(dts_runs[n]):.2f}x |"
        line += (f" {'MET' if best >= targets[w] else 'MISS'} >= {targets[w]}x | {rss // 1024} MB | "
                 f"{' / '.join(f'{s:.2f}' for s in native_runs)} |")
        line += "".join(f" {' / '.join(f'{s:.2f}' for s in dts_runs[n])} |" for n in workers)
        lines.append(line)
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
