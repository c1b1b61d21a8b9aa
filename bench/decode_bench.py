#!/usr/bin/env python3
"""Decoding benchmark: dts_decoding against pgoutput, wal2json, test_decoding and the floor.

Every plugin decodes the same WAL in the same run: all slots are created before a workload
runs, then each is read through the SQL interface (pg_logical_slot_peek_binary_changes, with
logical_decoding_work_mem at its default, so large transactions spill, and at 2GB) and through
the replication protocol (pg_recvlogical into /dev/null, as the applier reads it). The floor is
pgoutput with a publication that holds no table: the whole decoding path, no output.

Prints a Markdown table of seconds, changes/s, bytes/change and ratios, and checks the targets
of the plugin issue. Usage: bench/decode_bench.py [--rows N] [--txns N] [--repeat N] [--out FILE]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(REPO, "scripts", "pg-cluster.sh")
PORT = int(os.environ.get("DTS_BENCH_PORT", "25440"))
CONN = f"host=127.0.0.1 port={PORT} user=postgres dbname=postgres"

# name -> (plugin, {option: value}) ; the options are given to both paths.
PLUGINS = {
    "dts_decoding binary": ("dts_decoding", {}),
    "dts_decoding json": ("dts_decoding", {"format": "json"}),
    "pgoutput text": ("pgoutput", {"proto_version": "1", "publication_names": "bench_pub"}),
    "pgoutput binary": ("pgoutput", {"proto_version": "1", "publication_names": "bench_pub", "binary": "true"}),
    "wal2json v2": ("wal2json", {"format-version": "2"}),
    "test_decoding": ("test_decoding", {"skip-empty-xacts": "1"}),
    "floor": ("pgoutput", {"proto_version": "1", "publication_names": "floor_pub"}),
}
# Streaming of in-progress transactions (default work mem, so large transactions stream).
STREAMING = {
    "dts_decoding binary streaming": ("dts_decoding", {"streaming": "on"}),
    "pgoutput binary streaming": ("pgoutput", {"proto_version": "2", "publication_names": "bench_pub",
                                               "binary": "true", "streaming": "on"}),
    "floor streaming": ("pgoutput", {"proto_version": "2", "publication_names": "floor_pub", "streaming": "on"}),
}
WORK_MEMS = ["64MB", "2GB"]
# The SQL functions collect every output row in a tuplestore, which spills to a temp file past
# work_mem (4MB by default). That file's I/O then competes with the reorder buffer's spill
# files and is measured as if it were decoding cost. Every plugin gets the same setting; the
# floor writes nothing and gains nothing from it. --sql-work-mem 4MB measures the default.
SQL_WORK_MEM = "1GB"


def psql(sql, conn=CONN):
    out = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", conn, "-c", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"decode_bench: psql failed: {out.stderr.strip()}\n  in: {sql[:200]}")
    return out.stdout.strip()


def setup_schema():
    psql("DROP TABLE IF EXISTS bench_t; DROP PUBLICATION IF EXISTS bench_pub; DROP PUBLICATION IF EXISTS floor_pub")
    # An OLTP-like row: a key, an int, a short text, a timestamp and a numeric.
    psql("CREATE TABLE bench_t (id bigint PRIMARY KEY, k int, v text, ts timestamptz, n numeric)")
    psql("CREATE PUBLICATION bench_pub FOR TABLE bench_t; CREATE PUBLICATION floor_pub")


def drop_slots():
    psql("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'b\\_%'")


def runs():
    """(name, plugin, options, work_mem) of every measured configuration."""
    for name, (plugin, opts) in PLUGINS.items():
        for wm in WORK_MEMS:
            yield name, plugin, opts, wm
    for name, (plugin, opts) in STREAMING.items():
        yield name, plugin, opts, WORK_MEMS[0]


def slot_name(path, name, work_mem):
    # The SQL path peeks, which does not advance a slot: one slot serves every work_mem there.
    suffix = "" if path == "sql" else "_" + work_mem.lower()
    return "b_" + path + "_" + name.replace(" ", "_") + suffix


def create_slots():
    made = set()
    for path in ("sql", "rep"):
        for name, plugin, _opts, wm in runs():
            slot = slot_name(path, name, wm)
            if slot not in made:
                psql(f"SELECT 'x' FROM pg_create_logical_replication_slot('{slot}', '{plugin}')")
                made.add(slot)


def run_workload(workload, rows, txns):
    if workload == "insert_1txn":
        psql(f"INSERT INTO bench_t SELECT g, g % 1000, md5(g::text), '2024-01-01'::timestamptz + g * interval '1 s', "
             f"g / 7.0 FROM generate_series(1, {rows}) g")
        return rows
    if workload == "small_txns":
        script = "/tmp/dts_bench_small.sql"
        with open(script, "w") as f:
            f.write("\\set id random(1, 1000000000000)\n"
                    "INSERT INTO bench_t VALUES (:id, :id % 1000, md5(:id::text), now(), :id / 7.0) "
                    "ON CONFLICT DO NOTHING;\n")
        per_client = txns // 2
        subprocess.run(["pgbench", "-n", "-c", "2", "-j", "2", "-t", str(per_client), "-f", script,
                        "-h", "127.0.0.1", "-p", str(PORT), "-U", "postgres", "postgres"],
                       check=True, capture_output=True)
        return int(psql("SELECT count(*) FROM bench_t"))
    if workload == "update_delete":
        psql("UPDATE bench_t SET k = k + 1, v = md5(v)")
        psql("DELETE FROM bench_t")
        return 2 * rows
    raise ValueError(workload)


def preload(rows):
    psql(f"INSERT INTO bench_t SELECT g, g % 1000, md5(g::text), '2024-01-01'::timestamptz + g * interval '1 s', "
         f"g / 7.0 FROM generate_series(1, {rows}) g")
    psql("VACUUM ANALYZE bench_t")


def options_sql(opts):
    return "".join(f", '{k}', '{v}'" for k, v in opts.items())


def time_sql(slot, opts, wm, end_lsn, repeat):
    """Median seconds and output bytes of decoding the slot through the SQL interface."""
    times, nbytes = [], 0
    for _ in range(repeat):
        t0 = time.monotonic()
        out = psql(f"SET logical_decoding_work_mem = '{wm}'; SET work_mem = '{SQL_WORK_MEM}'; "
                   f"SELECT coalesce(sum(length(data)), 0) FROM pg_logical_slot_peek_binary_changes("
                   f"'{slot}', '{end_lsn}', NULL{options_sql(opts)})")
        times.append(time.monotonic() - t0)
        nbytes = int(out.splitlines()[-1])
    return statistics.median(times), nbytes


def time_replication(slot, opts, wm, end_lsn):
    cmd = ["pg_recvlogical", "-d", f"{CONN} options='-c logical_decoding_work_mem={wm}'", "--slot", slot,
           "--start", "-E", end_lsn, "-f", "/dev/null", "--no-loop", "-s", "10"]
    for k, v in opts.items():
        cmd += ["-o", f"{k}={v}"]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"decode_bench: pg_recvlogical failed for {slot}: {out.stderr.strip()}")
    return elapsed


def fmt_rate(changes, seconds):
    return f"{changes / seconds / 1e6:.3f}M" if seconds > 0 else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the large transactions")
    ap.add_argument("--txns", type=int, default=100_000, help="single-row transactions, from 2 clients")
    ap.add_argument("--repeat", type=int, default=3, help="SQL-path runs per configuration (median)")
    ap.add_argument("--workloads", default="insert_1txn,small_txns,update_delete")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "decode.md"))
    ap.add_argument("--keep-cluster", action="store_true")
    ap.add_argument("--sql-work-mem", default=SQL_WORK_MEM, help="work_mem of the SQL-path sessions")
    args = ap.parse_args()
    globals()["SQL_WORK_MEM"] = args.sql_work_mem

    subprocess.run([CLUSTER, "start", "bench", str(PORT), "max_replication_slots=64", "max_wal_senders=40",
                    "wal_sender_timeout=0"], check=True)
    results = []  # (workload, path, work_mem, name, seconds, changes, bytes)
    try:
        for workload in args.workloads.split(","):
            setup_schema()
            drop_slots()
            if workload == "update_delete":
                preload(args.rows)
            create_slots()
            changes = run_workload(workload, args.rows, args.txns)
            psql("CHECKPOINT")
            end_lsn = psql("SELECT pg_current_wal_lsn()")
            print(f"== {workload}: {changes} changes, decoding up to {end_lsn}", file=sys.stderr)
            byte_counts = {}
            for name, _plugin, opts, wm in runs():
                secs, nbytes = time_sql(slot_name("sql", name, wm), opts, wm, end_lsn, args.repeat)
                byte_counts[name] = nbytes
                results.append((workload, "sql", wm, name, secs, changes, nbytes))
                print(f"   sql {wm:5} {name:32} {secs:7.2f}s", file=sys.stderr)
            for name, _plugin, opts, wm in runs():
                secs = time_replication(slot_name("rep", name, wm), opts, wm, end_lsn)
                results.append((workload, "replication", wm, name, secs, changes, byte_counts.get(name, 0)))
                print(f"   rep {wm:5} {name:32} {secs:7.2f}s", file=sys.stderr)
            drop_slots()
    finally:
        if not args.keep_cluster:
            subprocess.run([CLUSTER, "destroy", "bench"], check=False)

    lines, verdicts = report(results)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines + [""] + verdicts) + "\n")
    print("\n".join(lines + [""] + verdicts))


def report(results):
    by_key = {(w, p, m, n): (s, c, b) for w, p, m, n, s, c, b in results}
    lines = ["| workload | path | work_mem | plugin | seconds | changes/s | bytes/change | vs pgoutput | vs floor |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    verdicts = ["Targets:"]
    for (w, p, m, n), (s, c, b) in by_key.items():
        floor_name = "floor streaming" if n.endswith("streaming") else "floor"
        pgo_name = "pgoutput binary streaming" if n.endswith("streaming") else "pgoutput text"
        floor = by_key.get((w, p, m, floor_name))
        pgo = by_key.get((w, p, m, pgo_name))
        vs_pgo = f"{pgo[0] / s:.2f}x" if pgo else "-"
        vs_floor = f"{floor[0] / s:.0%}" if floor else "-"
        bpc = f"{b / c:.0f}" if b and c else "-"
        lines.append(f"| {w} | {p} | {m} | {n} | {s:.2f} | {fmt_rate(c, s)} | {bpc} | {vs_pgo} | {vs_floor} |")

    def check(label, ok, detail):
        verdicts.append(f"- {'MET ' if ok else 'MISS'} {label}: {detail}")

    for w in sorted({r[0] for r in results}):
        dts_sql_spill = by_key.get((w, "sql", "64MB", "dts_decoding binary"))
        floor_sql_spill = by_key.get((w, "sql", "64MB", "floor"))
        if dts_sql_spill and floor_sql_spill:
            r = floor_sql_spill[0] / dts_sql_spill[0]
            check(f"{w} SQL path, spilling, >= 90% of the floor", r >= 0.9, f"{r:.0%}")
        dts_sql = by_key.get((w, "sql", "2GB", "dts_decoding binary"))
        floor_sql = by_key.get((w, "sql", "2GB", "floor"))
        if dts_sql and floor_sql:
            r = floor_sql[0] / dts_sql[0]
            check(f"{w} SQL path, no spill, >= 70% of the floor", r >= 0.7, f"{r:.0%}")
        for m in WORK_MEMS:
            dts_rep = by_key.get((w, "replication", m, "dts_decoding binary"))
            pgo_rep = by_key.get((w, "replication", m, "pgoutput text"))
            if dts_rep and pgo_rep:
                r = pgo_rep[0] / dts_rep[0]
                check(f"{w} replication path ({m}) >= 2x pgoutput", r >= 2.0, f"{r:.2f}x")
        dts_b = by_key.get((w, "sql", "64MB", "dts_decoding binary"))
        pgo_b = by_key.get((w, "sql", "64MB", "pgoutput text"))
        if dts_b and pgo_b and pgo_b[2]:
            r = dts_b[2] / pgo_b[2]
            check(f"{w} bytes/change <= 0.8x pgoutput", r <= 0.8, f"{r:.2f}x")
        j = by_key.get((w, "sql", "2GB", "dts_decoding json"))
        w2j = by_key.get((w, "sql", "2GB", "wal2json v2"))
        if j and w2j:
            check(f"{w} JSON beats wal2json v2 (changes/s, SQL, no spill)", j[0] < w2j[0],
                  f"{w2j[0] / j[0]:.2f}x")
            check(f"{w} JSON beats wal2json v2 (bytes)", j[2] < w2j[2], f"{j[2] / max(w2j[2], 1):.2f}x")
    return lines, verdicts


if __name__ == "__main__":
    main()
