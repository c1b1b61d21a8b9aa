#!/usr/bin/python3
"""Small transactions packed several to a replication message while the source has a backlog
(issue 14): fewer messages, nothing lost or applied twice across kills, and a transaction held
by the plugin at the end of what the slot's database wrote is brought by a heartbeat rather than
skipped by trusting a keepalive's position.

Usage: packing_test.py [test_name ...]
"""
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (scratch, Applier, SlotPair, check, check_equal, lsn_value, main, run_sql, run_to, test,  # noqa: E402
                     wait_for)

BASE_PORT = int(os.environ.get("DTS_PACKING_TEST_PORT", "26850"))


class Pair(SlotPair):
    def __init__(self, index, *settings):
        super().__init__("it_pack", index, BASE_PORT + 2 * index, *settings)


def small_transactions(server, n, clients=2):
    """n one-row transactions from `clients` sessions."""
    script = scratch("pack.sql")
    with open(script, "w") as f:
        f.write("\\set id random(1, 1000000000)\n"
                "INSERT INTO s VALUES (:id, :client_id) ON CONFLICT (id) DO UPDATE SET v = s.v + 1;\n")
    out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-n", "-c",
                          str(clients), "-t", str(n // clients), "-f", script, "postgres"],
                         capture_output=True, text=True)
    os.unlink(script)
    check(out.returncode == 0, f"pgbench failed: {out.stderr[-400:]}")


def setup(pair):
    pair.src.sql("CREATE EXTENSION dts_decoding")  # heartbeats: packing is on
    for s in (pair.src, pair.dst):
        s.sql("CREATE TABLE s (id bigint PRIMARY KEY, v int)")
    return pair.slot()


@test
def a_backlog_travels_packed_and_survives_kills():
    with Pair(0) as pair:
        slot = setup(pair)
        small_transactions(pair.src, 20000)
        a = run_to(pair.src, pair.dst, slot, pair.src.lsn(), timeout=300)
        st = a.status()
        check(st["transactions_applied"] >= 20000, f"not every transaction was applied: {st}")
        check(st["messages_received"] * 5 < st["transactions_applied"],
              f"the backlog was not packed: {st['messages_received']} messages for "
              f"{st['transactions_applied']} transactions")
        packed = st["transactions_applied"] / max(1, st["messages_received"])
        check_equal(pair.src, pair.dst, ["s"])
        # Kills while a packed backlog is applied: each restart resumes at the origin.
        rng = random.Random(int(os.environ.get("DTS_TEST_SEED", "14")))
        small_transactions(pair.src, 20000)
        end = pair.src.lsn()
        for _ in range(4):
            k = Applier(pair.src, pair.dst, slot).start()
            time.sleep(rng.uniform(0.05, 0.6))  # a random moment to kill at, not a synchronisation
            k.kill9()
        run_to(pair.src, pair.dst, slot, end, timeout=300)
        rows = check_equal(pair.src, pair.dst, ["s"])
        print(f"       {packed:.0f} transactions per message; 4 kills, {rows} rows compared, 0 lost, 0 duplicated")


@test
def a_held_transaction_is_brought_by_a_heartbeat_not_skipped():
    """One transaction in the slot's database, then a lot of WAL from another database: the
    plugin holds the transaction (more WAL follows) and no later callback of its database
    comes. The walsender's keepalives soon report a position past it; a client that confirmed
    that position would skip it. follow must ask for a heartbeat and apply it."""
    with Pair(1) as pair:
        slot = setup(pair)
        pair.src.sql("CREATE DATABASE other")
        pair.src.sql("INSERT INTO s VALUES (1, 1)")
        commit = lsn_value(pair.src.lsn())
        other = pair.src.conninfo.replace("dbname=postgres", "dbname=other")
        check(other != pair.src.conninfo, f"cannot name the other database in {pair.src.conninfo}")
        run_sql(other, "CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g")
        end = pair.src.lsn()
        a = run_to(pair.src, pair.dst, slot, end, timeout=120)
        st = a.status()
        check(pair.dst.value("SELECT count(*) FROM s WHERE id = 1") == 1,
              f"the held transaction was skipped: {st}")
        check(st["heartbeats"] >= 1, f"follow reached the end without asking for a heartbeat: {st}")
        confirmed = lsn_value(pair.src.value("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                             "WHERE slot_name = %s", (slot,)))
        check(confirmed >= commit, f"the slot was not moved past the transaction: {confirmed:X} < {commit:X}")
        # Idle with nothing to send: the slot still moves to the end (by heartbeats), and a
        # restart applies nothing twice.
        a = Applier(pair.src, pair.dst, slot).start()
        wait_for("the slot to move past the other database's WAL", lambda: lsn_value(pair.src.value(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))) >=
            lsn_value(end), timeout=30)
        a.stop()
        check(pair.dst.value("SELECT count(*) FROM s") == 1, "a restart applied the transaction twice")


@test
def a_source_shutdown_is_not_held_up_by_packing():
    """A walsender shutting down waits until its client reports everything as replicated. With
    packing the client confirms only heartbeats and applied commits, and no heartbeat can be
    written during a shutdown: with wal_sender_timeout = 0 the source would never stop. Then
    follow reconnects and goes on."""
    with Pair(2, "wal_sender_timeout=0") as pair:
        slot = setup(pair)
        a = Applier(pair.src, pair.dst, slot).start()
        small_transactions(pair.src, 2000)
        a.wait_applied(pair.src.lsn())
        pair.src.restart()  # pg_ctl stop -m fast -w -t 60: fails if the walsender never ends
        pair.src.sql("INSERT INTO s VALUES (-1, -1)")
        a.wait_applied(pair.src.lsn())
        check(a.proc.poll() is None, f"follow did not survive the source's restart: {a.tail()}")
        a.stop()
        check_equal(pair.src, pair.dst, ["s"])


if __name__ == "__main__":
    main("packing_test")
