#!/usr/bin/python3
"""Live lag: pgbench writing as fast as the source allows while dts_applier follow (and, in a
run of its own, native logical replication: binary, streaming on) applies.

Each side gets the same run: pgbench tpcb-like at scale 10 with --clients clients for --seconds
seconds on the source, the follower started just before. A probe row on the source is stamped
with clock_timestamp() every 0.05 s in a transaction of its own; every 0.1 s the target's copy
of it is read, and the lag is the time since that stamp (both servers run on this machine, one
clock; the stamp's own age, up to 0.05 s, is included). Reported: the lag's p50, p99 and max during the run, the time to drain once pgbench
ends (until the last stamp is on the target), and the source's transactions per second. A lag
that stays bounded is what is wanted; one that grows for the whole run is a follower slower
than the source.

Usage: bench/live_bench.py [--seconds N] [--clients N] [--fsync on|off]
"""
import argparse
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (APPLIER, DST_PORT, REPO, SRC_PORT, conninfo, sql, start_servers,  # noqa: E402
                      stop_servers, write_report)

PROBE = "CREATE TABLE lag_probe (id int PRIMARY KEY, stamped timestamptz)"


def pgbench(port, *args, db="postgres", wait=True):
    cmd = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", *args, db]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"live_bench: pgbench {' '.join(args)} failed: {out.stderr[-400:]}")
    return out.stdout


def prepare(side, scale):
    db = f"{side}_target"
    sql(DST_PORT, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    sql(DST_PORT, f"CREATE DATABASE {db}")
    sql(SRC_PORT, "DROP TABLE IF EXISTS lag_probe, pgbench_accounts, pgbench_branches, pgbench_tellers, "
                  "pgbench_history")
    for port, d in ((SRC_PORT, "postgres"), (DST_PORT, db)):
        pgbench(port, "-i", "-q", "-s", str(scale), db=d)
        sql(port, PROBE, d)
    # The probe row is on both sides before the follower starts; on the target it has no stamp
    # until the first one arrives.
    sql(SRC_PORT, "INSERT INTO lag_probe VALUES (1, clock_timestamp())")
    sql(DST_PORT, "INSERT INTO lag_probe VALUES (1, NULL)", db)
    return db


def start_follower(side, db):
    """The follower, from the source's current position (the tables are equal on both sides)."""
    if side == "dts":
        sql(SRC_PORT, "SELECT pg_create_logical_replication_slot('live_dts', 'dts_decoding')")
        log = open("/tmp/dts_live_bench.log", "w")
        return subprocess.Popen([APPLIER, "follow", "--source", conninfo(SRC_PORT), "--target",
                                 conninfo(DST_PORT, db), "--slot", "live_dts"], stdout=log, stderr=log)
    sql(SRC_PORT, "DROP PUBLICATION IF EXISTS live_pub; CREATE PUBLICATION live_pub FOR TABLES IN SCHEMA public")
    sql(SRC_PORT, "SELECT pg_create_logical_replication_slot('live_native', 'pgoutput')")
    sql(DST_PORT, f"CREATE SUBSCRIPTION live_sub CONNECTION '{conninfo(SRC_PORT)}' PUBLICATION live_pub "
                  "WITH (create_slot = false, slot_name = 'live_native', copy_data = false, binary = true, "
                  "streaming = on)", db)
    return None


def stop_follower(side, db, proc):
    if side == "dts":
        proc.terminate()
        proc.wait(60)
        sql(SRC_PORT, "SELECT pg_drop_replication_slot('live_dts')")
        return
    sql(DST_PORT, "ALTER SUBSCRIPTION live_sub DISABLE", db)
    sql(DST_PORT, "ALTER SUBSCRIPTION live_sub SET (slot_name = NONE)", db)
    sql(DST_PORT, "DROP SUBSCRIPTION live_sub", db)
    deadline = time.monotonic() + 30
    while sql(SRC_PORT, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'live_native' AND active")[0][0]:
        if time.monotonic() > deadline:
            sys.exit("live_bench: native's walsender did not let go of its slot")
        time.sleep(0.2)
    sql(SRC_PORT, "SELECT pg_drop_replication_slot('live_native')")


def stamp_until(stop):
    while not stop.is_set():
        sql(SRC_PORT, "UPDATE lag_probe SET stamped = clock_timestamp() WHERE id = 1")
        time.sleep(0.05)


def target_lag(db):
    """Seconds since the stamp the target holds (None before the probe row arrived)."""
    rows = sql(DST_PORT, "SELECT extract(epoch FROM clock_timestamp() - stamped) FROM lag_probe WHERE id = 1", db)
    return float(rows[0][0]) if rows and rows[0][0] is not None else None


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def run_side(side, args):
    db = prepare(side, args.scale)
    sql(SRC_PORT, "CHECKPOINT")
    proc = start_follower(side, db)
    # The probe row reaches the target through the follower: its first stamp marks it running.
    sql(SRC_PORT, "UPDATE lag_probe SET stamped = clock_timestamp() WHERE id = 1")
    deadline = time.monotonic() + 60
    while target_lag(db) is None:
        if time.monotonic() > deadline:
            sys.exit(f"live_bench: {side} did not start applying within 60 s")
        time.sleep(0.1)
    stop = threading.Event()
    stamper = threading.Thread(target=stamp_until, args=(stop,), daemon=True)
    stamper.start()
    bench = pgbench(SRC_PORT, "-n", "-c", str(args.clients), "-j", "2", "-T", str(args.seconds), wait=False)
    lags = []
    while bench.poll() is None:
        lag = target_lag(db)
        if lag is not None:
            lags.append(lag)
        time.sleep(0.1)
    out = bench.communicate()[0]
    stop.set()
    stamper.join()
    final = sql(SRC_PORT, "SELECT stamped FROM lag_probe WHERE id = 1")[0][0]
    ended = time.monotonic()
    while sql(DST_PORT, "SELECT stamped FROM lag_probe WHERE id = 1", db)[0][0] < final:
        if time.monotonic() - ended > 1800:
            sys.exit(f"live_bench: {side} did not drain within 30 minutes")
        time.sleep(0.05)
    drain = time.monotonic() - ended
    stop_follower(side, db, proc)
    tps = [line for line in out.splitlines() if line.startswith("tps")]
    tps = float(tps[0].split("=")[1].split()[0]) if tps else 0.0
    return {"side": side, "p50": percentile(lags, 50), "p99": percentile(lags, 99), "max": max(lags, default=0),
            "drain": drain, "tps": tps, "samples": len(lags)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--fsync", choices=["on", "off"], default="off")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "live.md"))
    args = ap.parse_args()
    start_servers("max_replication_slots=10", "max_wal_senders=10", "wal_retrieve_retry_interval=100ms",
                  f"fsync={args.fsync}", f"full_page_writes={args.fsync}")
    results = []
    try:
        sql(SRC_PORT, "CREATE EXTENSION dts_decoding")  # heartbeats, so transactions travel packed
        for side in ("native", "dts"):
            r = run_side(side, args)
            print(f"== {side}: {r}", file=sys.stderr)
            results.append(r)
    finally:
        stop_servers()
    lines = [f"pgbench tpcb-like, scale {args.scale}, {args.clients} clients, {args.seconds} s, fsync {args.fsync}",
             "",
             "| follower | source tps | lag p50 s | lag p99 s | lag max s | drain s | samples |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['side']} | {r['tps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | "
                     f"{r['drain']:.2f} | {r['samples']} |")
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
