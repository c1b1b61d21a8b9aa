#!/usr/bin/python3
"""Snapshot copy race: `dts_applier migrate --mode full` against `pgcopydb clone`, native
logical replication's initial sync, and `pg_dump -Fc` + `pg_restore -j`, in one run.

The source holds pgbench at --scale (30 by default: 3M accounts, with their indexes). Each tool
copies it into a fresh database on one target server, with the same --jobs; every result is
checked equal to the source. Usage: bench/copy_bench.py [--scale N] [--jobs N]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (APPLIER, DST_PORT, REPO, SRC_PORT, conninfo, sql, start_servers,  # noqa: E402
                      stop_servers, write_report)

TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


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


def dts(jobs):
    fresh_db("dts_copy")
    run([APPLIER, "migrate", "--mode", "full", "--source", conninfo(SRC_PORT), "--target",
         conninfo(DST_PORT, "dts_copy"), "--jobs", str(jobs), "--split-larger-than", "64MB", "--slot", "bench_copy"])


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


def digest(port, db, table):
    return sql(port, f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t", db)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool; the best counts")
    ap.add_argument("--fsync", choices=["on", "off"], default="off",
                    help="fsync and full_page_writes: on is PostgreSQL's default (what users run), off shows CPU cost")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "copy.md"))
    args = ap.parse_args()
    start_servers("max_replication_slots=20", "max_wal_senders=20", "max_sync_workers_per_subscription=4",
                  "max_logical_replication_workers=8", f"fsync={args.fsync}", f"full_page_writes={args.fsync}")
    try:
        run(["pgbench", "-i", "-q", "-s", str(args.scale), "-h", "127.0.0.1", "-p", str(SRC_PORT), "-U", "postgres",
             "postgres"])
        # The first reader of freshly loaded rows pays for setting their hint bits: settle the
        # data first, so that no tool pays for it.
        sql(SRC_PORT, "VACUUM (FREEZE, ANALYZE)")
        size_mb = sql(SRC_PORT, "SELECT pg_database_size('postgres')")[0][0] / 1e6
        results = []
        for name, fn, db in (("dts_applier migrate --mode full", dts, "dts_copy"), ("pgcopydb clone", pgcopydb, "pgcopydb_copy"),
                             ("native initial sync", native, "native_copy"),
                             ("pg_dump -Fc + pg_restore -j", dump_restore, "dump_copy")):
            runs = []
            for _ in range(args.repeat):
                sql(SRC_PORT, "CHECKPOINT")
                sql(DST_PORT, "CHECKPOINT")
                runs.append(timed(lambda: fn(args.jobs)))
            secs = min(runs)
            for t in TABLES:
                if digest(SRC_PORT, "postgres", t) != digest(DST_PORT, db, t):
                    sys.exit(f"copy_bench: {t} differs after {name}")
            print(f"   {name:34} {secs:6.2f}s", file=sys.stderr)
            results.append((name, secs))
    finally:
        stop_servers()
    dts_secs = results[0][1]
    lines = [f"pgbench scale {args.scale} ({size_mb:.0f} MB with indexes), --jobs {args.jobs}:", "",
             "| tool | seconds | MB/s | dts speed-up |", "|---|---:|---:|---:|"]
    for name, secs in results:
        lines.append(f"| {name} | {secs:.2f} | {size_mb / secs:.0f} | {secs / dts_secs:.2f}x |")
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
