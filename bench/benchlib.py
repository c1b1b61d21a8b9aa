"""Helpers shared by the bench scripts run with Debian's /usr/bin/python3 (psycopg2)."""
import os
import subprocess

import psycopg2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(REPO, "scripts", "pg-cluster.sh")
APPLIER = os.environ.get("DTS_APPLIER", os.path.join(REPO, "build", "dts_applier"))
SRC_PORT = int(os.environ.get("DTS_BENCH_PORT", "25440"))
DST_PORT = SRC_PORT + 1


def conninfo(port, db="postgres"):
    return f"host=127.0.0.1 port={port} user=postgres dbname={db}"


def sql(port, query, db="postgres"):
    c = psycopg2.connect(conninfo(port, db))
    c.autocommit = True
    try:
        with c.cursor() as cur:
            cur.execute(query)
            return cur.fetchall() if cur.description else None
    finally:
        c.close()


def start_servers(*settings):
    """Fresh source and target servers (bench_src, bench_dst) on SRC_PORT and DST_PORT."""
    for name, port in (("bench_src", SRC_PORT), ("bench_dst", DST_PORT)):
        subprocess.run([CLUSTER, "destroy", name], capture_output=True)
        subprocess.run([CLUSTER, "start", name, str(port), *settings], check=True, capture_output=True)


def stop_servers():
    for name in ("bench_src", "bench_dst"):
        subprocess.run([CLUSTER, "destroy", name], capture_output=True)


def write_report(path, lines):
    """Writes the result table to `path` (under bench/results/) and prints it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
