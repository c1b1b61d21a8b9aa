#!/usr/bin/python3
"""Catch-up race: dts_applier follow against native logical replication on the same backlog.

With apply stopped, the source builds a backlog; then native logical replication (a
subscription, binary, streaming on: its best settings in PostgreSQL 15) and dts_applier follow
each catch up, one after the other, into their own database on one target server. A catch-up
ends when a marker row, committed after the backlog, is visible on the target.

Workloads: 1M inserts in one transaction; 100k single-row transactions from 2 clients; pgbench
tpcb-like for 60 s. Usage: bench/apply_bench.py [--rows N] [--txns N] [--pgbench-seconds N]
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


def prepare(workload, scale):
    """Tables (and pgbench's initial data) equal on the source and both target databases."""
    for db in ("dts_target", "native_target"):
        sql(DST_PORT, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        sql(DST_PORT, f"CREATE DATABASE {db}")
    sql(SRC_PORT, "DROP TABLE IF EXISTS bench_t, marker, pgbench_accounts, pgbench_branches, pgbench_tellers, "
                  "pgbench_history; DROP PUBLICATION IF EXISTS bench_pub")
    for port, db in ((SRC_PORT, "postgres"), (DST_PORT, "dts_target"), (DST_PORT, "native_target")):
        sql(port, BENCH_TABLE, db)
        sql(port, MARKER, db)
        if workload == "pgbench":
            pgbench(port, "-i", "-q", "-s", str(scale), db=db)
    sql(SRC_PORT, "CREATE PUBLICATION bench_pub FOR ALL TABLES")
    for slot in ("dts_slot", "native_slot"):
        sql(SRC_PORT, f"SELECT pg_drop_replication_slot('{slot}') FROM pg_replication_slots WHERE slot_name = '{slot}'")
    sql(SRC_PORT, "SELECT pg_create_logical_replication_slot('dts_slot', 'dts_decoding')")
    sql(SRC_PORT, "SELECT pg_create_logical_replication_slot('native_slot', 'pgoutput')")
    sql(DST_PORT, f"CREATE SUBSCRIPTION native_sub CONNECTION '{conninfo(SRC_PORT)}' PUBLICATION bench_pub "
                  "WITH (create_slot = false, slot_name = 'native_slot', enabled = false, copy_data = false, "
                  "binary = true, streaming = on)", db="native_target")


def backlog(workload, rows, txns, seconds):
    if workload == "insert_1txn":
        sql(SRC_PORT, f"INSERT INTO bench_t SELECT g, g % 1000, md5(g::text), now(), g / 7.0 "
                      f"FROM generate_series(1, {rows}) g")
        return rows
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


def wait_marker(db, timeout=1800):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sql(DST_PORT, "SELECT count(*) FROM marker", db)[0][0] > 0:
            return
        time.sleep(0.05)
    sys.exit(f"apply_bench: {db} did not catch up within {timeout}s")


def race_native():
    t0 = time.monotonic()
    sql(DST_PORT, "ALTER SUBSCRIPTION native_sub ENABLE", db="native_target")
    wait_marker("native_target")
    secs = time.monotonic() - t0
    sql(DST_PORT, "ALTER SUBSCRIPTION native_sub DISABLE", db="native_target")
    sql(DST_PORT, "ALTER SUBSCRIPTION native_sub SET (slot_name = NONE)", db="native_target")
    sql(DST_PORT, "DROP SUBSCRIPTION native_sub", db="native_target")
    return secs


def race_dts(end_lsn):
    t0 = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", APPLIER, "follow", "--source", conninfo(SRC_PORT),
                          "--target", conninfo(DST_PORT, "dts_target"), "--slot", "dts_slot",
                          "--until-lsn", end_lsn], capture_output=True, text=True)
    secs = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"apply_bench: dts_applier failed: {out.stderr[-800:]}")
    wait_marker("dts_target", timeout=5)
    rss_kb = int(out.stderr.strip().splitlines()[-1])
    return secs, rss_kb


def same_data(tables):
    for t in tables:
        q = f"SELECT count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
        a = sql(SRC_PORT, q)[0]
        for db in ("dts_target", "native_target"):
            b = sql(DST_PORT, q, db)[0]
            if a != b:
                sys.exit(f"apply_bench: {t} differs between the source and {db}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--txns", type=int, default=100_000)
    ap.add_argument("--pgbench-seconds", type=int, default=60)
    ap.add_argument("--pgbench-scale", type=int, default=10)
    ap.add_argument("--workloads", default="insert_1txn,small_txns,pgbench")
    ap.add_argument("--fsync", choices=["on", "off"], default="off",
                    help="fsync and full_page_writes: on is PostgreSQL's default (what users run), off shows CPU cost")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "apply.md"))
    args = ap.parse_args()

    start_servers("max_replication_slots=20", "max_wal_senders=20", "max_logical_replication_workers=8",
                  "wal_retrieve_retry_interval=100ms", f"fsync={args.fsync}", f"full_page_writes={args.fsync}")
    rows = []
    try:
        for w in args.workloads.split(","):
            prepare(w, args.pgbench_scale)
            changes = backlog(w, args.rows, args.txns, args.pgbench_seconds)
            sql(SRC_PORT, "INSERT INTO marker VALUES (1)")
            end = sql(SRC_PORT, "SELECT pg_current_wal_lsn()::text")[0][0]
            print(f"== {w}: {changes} changes in the backlog", file=sys.stderr)
            native = race_native()
            print(f"   native {native:.2f}s", file=sys.stderr)
            dts, rss = race_dts(end)
            print(f"   dts    {dts:.2f}s, peak RSS {rss // 1024} MB", file=sys.stderr)
            tables = ["bench_t", "marker"] + (["pgbench_accounts", "pgbench_branches", "pgbench_tellers",
                                               "pgbench_history"] if w == "pgbench" else [])
            same_data(tables)
            rows.append((w, changes, native, dts, rss))
    finally:
        stop_servers()

    targets = {"insert_1txn": 2.0, "small_txns": 3.0, "pgbench": 1.5}
    lines = ["| workload | changes | native s | native changes/s | dts s | dts changes/s | ratio | target | dts peak RSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w, changes, native, dts, rss in rows:
        ratio = native / dts
        lines.append(f"| {w} | {changes} | {native:.2f} | {changes / native / 1000:.0f}k | {dts:.2f} | "
                     f"{changes / dts / 1000:.0f}k | {ratio:.2f}x | {'MET' if ratio >= targets[w] else 'MISS'} "
                     f">= {targets[w]}x | {rss // 1024} MB |")
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
