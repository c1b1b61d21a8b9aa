#!/usr/bin/python3
"""A whole server copied, side by side: `dts_applier migrate --all-databases --mode full` against
`pgcopydb clone` on each database in turn (pgcopydb 0.10 has no all-databases mode; the roles go
first through pg_dumpall --roles-only | psql, as pgcopydb's own role copy fails on this stack) and
`pg_dumpall | psql` (offline, one session), then the cutover window of a whole-server job
with and without large objects.

The source holds --databases databases, each pgbench at --scale, six roles with passwords and
one database with --large-objects large objects of 1 MB. Before each tool the target server is
emptied (its databases and roles dropped); each result is checked equal to the source (row
digests of every pgbench table in every database, and the large objects' md5).

The cutover window: a whole-server incremental job (`migrate --all-databases`), pgbench
writing at a fixed rate in every database while it streams, then `complete --all-databases`;
its "read-only window" as it prints it, once with the large objects and once after they are
removed (best of --repeat each).

Usage: bench/server_bench.py [--databases N] [--scale N] [--large-objects N] [--jobs N]
                             [--repeat N] [--fsync on|off]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (APPLIER, DST_PORT, REPO, SRC_PORT, conninfo, sql, start_servers,  # noqa: E402
                      stop_servers, write_report)

TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
ROLES = ["app_owner", "app_user", "reader", "writer", "batch", "report"]


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"server_bench: {' '.join(cmd[:3])} failed: {out.stderr[-800:]} {out.stdout[-400:]}")
    return out


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def databases(n):
    return [f"db{i}" for i in range(1, n + 1)]


def load_source(args):
    for r in ROLES:
        sql(SRC_PORT, f"CREATE ROLE {r} LOGIN PASSWORD '{r} pw'")
    sql(SRC_PORT, "GRANT reader TO app_user")
    for db in databases(args.databases):
        sql(SRC_PORT, f"CREATE DATABASE {db} OWNER app_owner")
        run(["pgbench", "-h", "127.0.0.1", "-p", str(SRC_PORT), "-U", "postgres", "-i", "-q", "-s", str(args.scale), db])
        sql(SRC_PORT, "CREATE EXTENSION dts_decoding", db)
    for i in range(args.large_objects):
        sql(SRC_PORT, f"SELECT lo_from_bytea(0, convert_to(repeat(md5('{i}'), 32768), 'UTF8'))", "db1")
    for db in databases(args.databases):
        sql(SRC_PORT, "VACUUM (FREEZE, ANALYZE)", db)


def empty_target(args):
    for db in databases(args.databases):
        sql(DST_PORT, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    for r in ROLES:
        sql(DST_PORT, f"DROP ROLE IF EXISTS {r}")
    # The migrations' state in the target's postgres database, and their origins.
    sql(DST_PORT, "DROP SCHEMA IF EXISTS dts CASCADE")
    sql(DST_PORT, "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin")
    sql(DST_PORT, "CHECKPOINT")
    sql(SRC_PORT, "CHECKPOINT")


def digest(port, db):
    parts = []
    for t in TABLES:
        parts.append(sql(port, f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {t} t", db)[0])
    parts.append(sql(port, "SELECT count(*), md5(string_agg(md5(lo_get(oid)), '' ORDER BY oid)) FROM pg_largeobject_metadata", db)[0])
    return parts


def check_equal(args, name):
    for db in databases(args.databases):
        if digest(SRC_PORT, db) != digest(DST_PORT, db):
            sys.exit(f"server_bench: {name} left {db} different from the source")
    missing = [r for r in ROLES if not sql(DST_PORT, f"SELECT 1 FROM pg_roles WHERE rolname = '{r}'")]
    if missing:
        sys.exit(f"server_bench: {name} did not copy the roles {missing}")


def dts(args):
    run([APPLIER, "migrate", "--all-databases", "--mode", "full", "--source", conninfo(SRC_PORT), "--target",
         conninfo(DST_PORT), "--jobs", str(args.jobs), "--slot", "bench_server"])


def dumpall_into_target(*options):
    """pg_dumpall of the source (with `options`) replayed on the target by psql."""
    dump = subprocess.Popen(["pg_dumpall", *options, "-h", "127.0.0.1", "-p", str(SRC_PORT), "-U", "postgres"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    restore = subprocess.run(["psql", "-qX", "-h", "127.0.0.1", "-p", str(DST_PORT), "-U", "postgres", "-d", "postgres"],
                             stdin=dump.stdout, capture_output=True, text=True)
    dump.stdout.close()
    if dump.wait() != 0 or restore.returncode != 0:
        sys.exit(f"server_bench: pg_dumpall {' '.join(options)} | psql failed: {restore.stderr[-800:]}")


def pgcopydb(args):
    # pgcopydb creates no database, and its own role copy (pgcopydb copy roles, clone --roles)
    # fails on this stack: it replays pg_dumpall's output statement by statement, and pg_dumpall
    # 15.14 starts it with psql's \restrict. The roles go through psql instead (timed too).
    dumpall_into_target("--roles-only")
    for db in databases(args.databases):
        sql(DST_PORT, f"CREATE DATABASE {db} OWNER app_owner")
        with tempfile.TemporaryDirectory() as d:
            run(["pgcopydb", "clone", "--source", conninfo(SRC_PORT, db), "--target", conninfo(DST_PORT, db),
                 "--table-jobs", str(args.jobs), "--index-jobs", str(args.jobs), "--dir", d])


def dumpall(_args):
    dumpall_into_target()


def streaming(status_path):
    try:
        with open(status_path) as f:
            return json.load(f).get("phase") == "STREAMING"
    except (OSError, ValueError):
        return False


def cutover_window(args):
    """A whole-server job streaming under pgbench, then complete: the window it prints, in ms."""
    empty_target(args)
    status = tempfile.mktemp(prefix="dts-server-bench-", suffix=".json")
    job = subprocess.Popen([APPLIER, "migrate", "--all-databases", "--source", conninfo(SRC_PORT), "--target",
                            conninfo(DST_PORT), "--jobs", str(args.jobs), "--slot", "bench_cut", "--status-file", status],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    benches = []
    try:
        deadline = time.monotonic() + 600
        while not streaming(status):
            if job.poll() is not None or time.monotonic() > deadline:
                sys.exit("server_bench: the whole-server job did not reach STREAMING")
            time.sleep(0.2)
        benches = [subprocess.Popen(["pgbench", "-h", "127.0.0.1", "-p", str(SRC_PORT), "-U", "postgres", "-n", "-c", "1",
                                     "-T", "600", "-R", "50", db], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for db in databases(args.databases)]
        time.sleep(3)  # a steady stream in every database: the window is measured under load
        out = run([APPLIER, "complete", "--all-databases", "--source", conninfo(SRC_PORT), "--target",
                   conninfo(DST_PORT), "--slot", "bench_cut"])
        job.wait(120)
    finally:
        for b in benches:
            b.terminate()
            b.wait()
        if job.poll() is None:
            job.terminate()
        sql(SRC_PORT, "ALTER SYSTEM RESET default_transaction_read_only")
        sql(SRC_PORT, "SELECT pg_reload_conf()")
        if os.path.exists(status):
            os.unlink(status)
    m = re.search(r"read-only window: (\d+) ms", out.stdout)
    return int(m.group(1)), out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--databases", type=int, default=3)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--large-objects", type=int, default=100, help="of 1 MB each, in db1")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool; the best counts")
    ap.add_argument("--fsync", choices=["on", "off"], default="on")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "server.md"))
    args = ap.parse_args()
    start_servers("max_replication_slots=20", "max_wal_senders=20", f"fsync={args.fsync}",
                  f"full_page_writes={args.fsync}")
    try:
        load_source(args)
        size_mb = sum(sql(SRC_PORT, f"SELECT pg_database_size('{db}')")[0][0] for db in databases(args.databases)) / 1e6
        results = []
        for name, fn in (("dts_applier migrate --all-databases --mode full", dts),
                         ("pg_dumpall --roles-only | psql + pgcopydb clone per database", pgcopydb),
                         ("pg_dumpall | psql", dumpall)):
            runs = []
            for _ in range(args.repeat):
                empty_target(args)
                runs.append(timed(lambda: fn(args)))
            check_equal(args, name)
            print(f"   {name:48} {min(runs):7.2f}s", file=sys.stderr)
            results.append((name, min(runs)))
        windows = {}
        for label in ("with", "without"):
            if label == "without":
                sql(SRC_PORT, "SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata", "db1")
            best = None
            for _ in range(args.repeat):
                ms, _out = cutover_window(args)
                best = ms if best is None else min(best, ms)
            windows[label] = best
            print(f"   cutover window {label} large objects: {best} ms", file=sys.stderr)
    finally:
        stop_servers()
    dts_secs = results[0][1]
    lines = [f"{args.databases} databases of pgbench scale {args.scale} ({size_mb:.0f} MB with indexes), 6 roles, "
             f"{args.large_objects} large objects of 1 MB in db1; --jobs {args.jobs}, best of {args.repeat}; "
             f"fsync {args.fsync}:", "",
             "| tool | seconds | MB/s | dts speed-up |", "|---|---:|---:|---:|"]
    for name, secs in results:
        shown = name.replace("|", "\\|")  # a pipe in a table cell
        lines.append(f"| {shown} | {secs:.2f} | {size_mb / secs:.0f} | {secs / dts_secs:.2f}x |")
    lines += ["", f"Cutover window of a whole-server job (complete --all-databases, pgbench at 50 tps in each "
                  f"database until it starts): {windows['with']} ms with the {args.large_objects} large objects "
                  f"({args.large_objects} MB compared by md5 on both sides inside the window), "
                  f"{windows['without']} ms without."]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
