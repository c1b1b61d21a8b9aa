#!/usr/bin/python3
"""The fault suite: a migration beaten on while pgbench and a many-types workload write.

- crash soak: the applier killed with SIGKILL during the copy, the index build, streaming
  (mid-transaction, between commit and feedback) and the cutover, and restarted, N times
  (DTS_SOAK_KILLS, 10 here, >= 50 in `make soak`); every row compared at the end;
- connection faults: walsender terminated, target and source restarted, the network cut by a
  TCP proxy; auto recovers, manual stops cleanly;
- source faults: the slot dropped or invalidated under the applier, the target's disk full, a
  table altered on the source mid-stream;
- hostile identifiers end to end; passwords kept out of logs, status files and process
  titles; TLS to both servers; bad values for every command-line flag.

Prints its figures at the end. Usage: fault_test.py [test_name ...]
"""
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from faultlib import MANY_TYPES, DdlWriter, ManyTypesWriter, TcpProxy, compare_rows  # noqa: E402
from harness import (scratch, APPLIER, AppPair, Applier, Failure, Pgbench, Skip, check, check_same_schema, command_lines,  # noqa: E402
                     lsn_value, main, pgbench, tail_file, test, wait_for)

BASE_PORT = int(os.environ.get("DTS_FAULT_TEST_PORT", "25700"))
KILLS = int(os.environ.get("DTS_SOAK_KILLS", "10"))
SEED = int(os.environ.get("DTS_SOAK_SEED", "20261121"))
FIGURES = []

TABLES = ["items", "many_types", "pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_fault{index}", BASE_PORT + 2 * index)


def setup(pair, items=300000, scale=2):
    pair.src.sql(MANY_TYPES)
    pair.src.sql(f"CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2)); "
                 f"INSERT INTO items SELECT g, 'item ' || g, g / 7.0 FROM generate_series(1, {items}) g")
    pgbench(pair.src, "-i", "-q", "-s", str(scale))


class Migration:
    """dts_applier migrate as a child process, with its status file and log."""

    counter = 0

    def __init__(self, source, target, *extra):
        Migration.counter += 1
        tag = f"{os.getpid()}-{Migration.counter}"
        self.status_path = scratch(f"fault-{tag}.json")
        self.log_path = scratch(f"fault-{tag}.log")
        defaults = [] if "--jobs" in extra else ["--jobs", "2", "--split-larger-than", "2MB"]
        self.args = [APPLIER, "migrate", "--source", source, "--target", target, *defaults,
                     "--status-file", self.status_path, *extra]
        self.proc = None

    def start(self):
        if os.path.exists(self.status_path):
            os.unlink(self.status_path)
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log)
        Applier.started.append(self)  # the harness kills what a test left running
        return self

    def phase(self):
        import json
        try:
            with open(self.status_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def wait_phase(self, phases, timeout=180):
        def reached():
            if self.proc.poll() is not None:
                raise Failure(f"migrate exited with {self.proc.returncode}: {self.tail()}")
            return self.phase().get("phase") in phases
        wait_for(f"migrate to reach {phases}", reached, timeout, interval=0.02)
        return self.phase().get("phase")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def wait_exit(self, timeout=120):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"migrate still running after {timeout}s: {self.tail()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def tail(self, n=15):
        return tail_file(self.log_path, n)


def complete(pair, *extra, source=None, target=None):
    return subprocess.run([APPLIER, "complete", "--source", source or pair.src.conninfo, "--target",
                           target or pair.target, "--max-lag", "3000", *extra],
                          capture_output=True, text=True, timeout=600)


def read_only(server):
    try:
        c = server.connect()
        with c.cursor() as cur:
            cur.execute("SHOW default_transaction_read_only")
            on = cur.fetchone()[0] == "on"
        c.close()
        return on
    except Exception:  # noqa: BLE001 - restarting
        return False


def lag_caught_up(pair, m):
    lsn = pair.src.lsn()
    want = lsn_value(lsn)

    def done():
        s = m.phase()
        if m.proc.poll() is not None:
            raise Failure(f"migrate exited with {m.proc.returncode}: {m.tail()}")
        return bool(s.get("applied_lsn")) and lsn_value(s["applied_lsn"]) >= want
    wait_for(f"the applier to apply up to {lsn}", done, 120)


def finish_and_compare(pair, m, writers, what):
    """complete, stop the writers, and count rows lost and duplicated."""
    out = complete(pair)
    check(out.returncode == 0, f"complete after {what}: {out.stderr[-1500:]}")
    for w in writers:
        w.stop()
    check(m.wait_exit(60) == 0, f"migrate did not end at the cutover: {m.tail()}")
    compared, lost, duplicated, details = compare_rows(pair.src.conninfo, pair.target, TABLES)
    check(lost == 0 and duplicated == 0, f"after {what}: {lost} rows lost, {duplicated} duplicated: {details}")
    return compared


@test
def crash_soak_kills_the_applier_at_random_moments():
    rng = random.Random(SEED)
    with Pair(0) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding")  # schema changes are captured
        setup(pair, items=600000)
        bench = Pgbench(pair.src)
        writer = ManyTypesWriter(pair.src)
        writer.start()
        # Schema changes from the first kill in the stream on (one during the first copy of
        # its table is not replayed yet: README, "Schema changes during a migration").
        ddl = DdlWriter(pair.src, every=0.5)
        kills = collections.Counter()
        m = None
        try:
            # One copy worker and small chunks: a copy long enough to be killed in; four apply
            # workers (hot pgbench rows, independent many-types rows, schema changes between).
            m = Migration(pair.src.conninfo, pair.target, "--jobs", "1", "--split-larger-than", "1MB",
                          "--apply-workers", "4")
            # The copy resumes: several kills at random moments of it, each redoing at most the
            # one chunk in flight (one worker).
            copy_kills = max(2, KILLS // 4)
            for i in range(max(KILLS - 1, 0)):
                m.start()
                if i < copy_kills:
                    at = m.wait_phase(("COPYING", "BUILDING_INDEXES", "STREAMING", "CATCHING_UP"))
                    deadline = time.monotonic() + rng.uniform(0, 1.0)
                    while time.monotonic() < deadline and m.proc.poll() is None:
                        time.sleep(0.01)
                    at = m.phase().get("phase", at)
                elif i == copy_kills:
                    at = m.wait_phase(("BUILDING_INDEXES", "STREAMING", "CATCHING_UP"))
                else:
                    at = m.wait_phase(("STREAMING", "CATCHING_UP"))
                    if not ddl.is_alive():
                        ddl.start()
                    # Anywhere in the stream: mid-transaction, mid-group, between a commit and
                    # its feedback.
                    deadline = time.monotonic() + rng.uniform(0, 2.0)
                    while time.monotonic() < deadline and m.proc.poll() is None:
                        time.sleep(0.01)
                m.kill9()
                kills[{"COPYING": "copy", "BUILDING_INDEXES": "index build"}.get(at, "streaming")] += 1
            chunks, redone = pair.dst_app("SELECT count(*), coalesce(sum(attempts - 1), 0) FROM dts.copy_chunk")[0]
            # Each kill aimed at the copy may catch one chunk in flight (one worker), even when
            # the status file, written every few hundred ms, did not say COPYING yet.
            check(redone <= copy_kills, f"{redone} chunks redone after {copy_kills} kills aimed at the copy "
                  f"({kills['copy']} seen in it) with one worker: finished chunks were copied again")
            # The last one during the cutover: complete has made the source read-only and waits
            # for its stop marker when the applier dies; the restarted applier applies it.
            m.start()
            m.wait_phase(("STREAMING", "CATCHING_UP"))
            cutover = subprocess.Popen([APPLIER, "complete", "--source", pair.src.conninfo, "--target", pair.target,
                                        "--max-lag", "3000", "--timeout", "300"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_for("the source to turn read-only", lambda: read_only(pair.src) or cutover.poll() is not None, 120)
            m.kill9()
            kills["cutover"] += 1
            m.start()
            out, err = cutover.communicate(timeout=300)
            check(cutover.returncode == 0, f"complete through a killed applier: {err[-1500:]}")
            check("read-only window" in out, out)
            check(m.wait_exit(120) == 0, f"migrate did not end at the stop marker: {m.tail()}")
            bench.stop()
            writer.stop()
            ddl.stop()
            compared, lost, duplicated, details = compare_rows(pair.src.conninfo, pair.target, TABLES + ddl.tables)
            schema_lines = check_same_schema(pair.src.conninfo, pair.target)
            total = sum(kills.values())
            line = (f"crash soak: {total} kills survived ({', '.join(f'{k} {v}' for k, v in sorted(kills.items()))}), "
                    f"{compared} rows compared, {lost} lost, {duplicated} duplicated, "
                    f"{writer.ops} many-types writes, {ddl.changes} schema changes ({len(ddl.tables)} new tables), "
                    f"schema equal ({schema_lines} lines); copy of {chunks} chunks, {redone} redone after "
                    f"{kills['copy']} kills in it")
            FIGURES.append(line)
            print("    " + line)
            check(lost == 0 and duplicated == 0, f"{line}: {details}")
        finally:
            bench.stop()
            writer.stop()
            if ddl.is_alive():
                ddl.stop()
            if m:
                m.stop()


def kill_job(m):
    """SIGKILL to a job over several databases: each database's migrate first, then the job."""
    children = subprocess.run(["pgrep", "-P", str(m.proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    m.kill9()


@test
def crash_soak_over_two_databases_with_one_cutover():
    """One job over two databases (migrate --databases), pgbench writing in both: the job and
    its databases' migrates killed with SIGKILL at random moments of the copy and the stream,
    restarted each time; then one cutover for both, and every row compared in each."""
    rng = random.Random(SEED + 2)
    dbs = ("db_a", "db_b")
    with Pair(9) as pair:
        conn = {db: (pair.src.conninfo.replace("dbname=postgres", f"dbname={db}"),
                     pair.target.replace("dbname=app", f"dbname={db}")) for db in dbs}
        for db in dbs:
            pair.src.sql(f"CREATE DATABASE {db}")
            subprocess.run(["psql", "-qX", "-d", conn[db][0], "-c", "CREATE EXTENSION dts_decoding",
                            "-c", "CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2))",
                            "-c", "INSERT INTO items SELECT g, 'item ' || g, g / 7.0 FROM generate_series(1, 200000) g"],
                           check=True, capture_output=True)
            pgbench(pair.src, "-i", "-q", "-s", "2", dbname=db)
        benches = [Pgbench(pair.src, rate=150, dbname=db) for db in dbs]
        kills = collections.Counter()
        m = Migration(pair.src.conninfo, pair.target, "--databases", ",".join(dbs), "--jobs", "1",
                      "--split-larger-than", "1MB")
        try:
            # 3 kills in the test command, half the soak's in `make soak`.
            for i in range(3 if KILLS <= 10 else KILLS // 2):
                m.start()
                phases = ("COPYING", "BUILDING_INDEXES", "STREAMING", "CATCHING_UP") if i < 2 else ("STREAMING", "CATCHING_UP")
                at = m.wait_phase(phases, 300)
                deadline = time.monotonic() + rng.uniform(0, 1.5)
                while time.monotonic() < deadline and m.proc.poll() is None:
                    time.sleep(0.01)
                at = m.phase().get("phase", at)
                kill_job(m)
                kills[{"COPYING": "copy", "BUILDING_INDEXES": "index build"}.get(at, "streaming")] += 1
                # The databases' migrates are gone with the job: none holds its slot any more.
                wait_for("the killed job's slots to be free", lambda: pair.src.value(
                    "SELECT count(*) FROM pg_replication_slots WHERE active") == 0, 60)
            m.start()
            m.wait_phase(("STREAMING",), 300)
            out = complete(pair, "--databases", ",".join(dbs))
            check(out.returncode == 0 and "(2 databases)" in out.stdout, f"complete: {out.stdout[-800:]} {out.stderr[-1500:]}")
            check(m.wait_exit(120) == 0, f"the job did not end at the cutover: {m.tail()}")
            for b in benches:
                b.stop()
            compared = 0
            for db in dbs:
                tables = ["items", "pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]
                n, lost, duplicated, details = compare_rows(conn[db][0], conn[db][1], tables)
                check(lost == 0 and duplicated == 0, f"{db}: {lost} rows lost, {duplicated} duplicated: {details}")
                compared += n
            line = (f"crash soak over two databases: {sum(kills.values())} kills of the job "
                    f"({', '.join(f'{k} {v}' for k, v in sorted(kills.items()))}), one cutover, {compared} rows "
                    f"compared, 0 lost, 0 duplicated")
            FIGURES.append(line)
            print("    " + line)
        finally:
            for b in benches:
                b.stop()
            m.stop()
            pair.src.sql("ALTER SYSTEM RESET default_transaction_read_only")
            pair.src.sql("SELECT pg_reload_conf()")


@test
def connection_faults_recover_in_auto_mode_and_stop_cleanly_in_manual():
    with Pair(1) as pair:
        setup(pair, items=20000, scale=1)
        proxy = TcpProxy(BASE_PORT + 50, pair.src.port)
        via_proxy = pair.src.conninfo.replace(f"port={pair.src.port}", f"port={BASE_PORT + 50}")
        bench = Pgbench(pair.src)
        writer = ManyTypesWriter(pair.src)
        writer.start()
        m = Migration(via_proxy, pair.target).start()
        try:
            m.wait_phase(("STREAMING", "CATCHING_UP"))
            faults = []

            def survived(what, reconnects_before):
                wait_for(f"a reconnect after {what}", lambda: m.phase().get("reconnects", 0) > reconnects_before, 90)
                bench.ensure()
                lag_caught_up(pair, m)
                faults.append(what)

            r = m.phase().get("reconnects", 0)
            pair.src.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active")
            survived("walsender terminated", r)

            r = m.phase().get("reconnects", 0)
            pair.dst.restart()
            survived("target restarted", r)

            r = m.phase().get("reconnects", 0)
            pair.src.restart()
            survived("source restarted", r)

            r = m.phase().get("reconnects", 0)
            proxy.cut()
            wait_for("the applier to notice the cut", lambda: m.phase().get("reconnects", 0) > r
                     or m.phase().get("phase") == "RECONNECTING", 90)
            proxy.restore()
            survived("network cut and restored", r)

            # Manual mode: the same cut stops it, with a clear message and exit code 3.
            m.stop()
            manual = Migration(via_proxy, pair.target, "--resume-mode", "manual").start()
            manual.wait_phase(("STREAMING", "CATCHING_UP"))
            proxy.cut()
            code = manual.wait_exit(90)
            proxy.restore()
            check(code == 3 and "resume mode is manual" in manual.tail(), f"manual: exit {code}: {manual.tail()}")
            faults.append("network cut in manual mode: exit 3")

            m = Migration(via_proxy, pair.target).start()
            m.wait_phase(("STREAMING", "CATCHING_UP"))
            bench.stop()
            compared = finish_and_compare(pair, m, [writer], "connection faults")
            line = f"connection faults: {len(faults)} survived ({'; '.join(faults)}), {compared} rows compared, 0 lost, 0 duplicated"
            FIGURES.append(line)
            print("    " + line)
        finally:
            bench.stop()
            writer.stop()
            m.stop()
            proxy.close()


@test
def a_slot_dropped_or_invalidated_under_the_applier_is_a_clear_error():
    with Pair(2) as pair:
        setup(pair, items=1000, scale=1)
        m = Migration(pair.src.conninfo, pair.target).start()
        m.wait_phase(("STREAMING", "CATCHING_UP"))

        def drop():
            pair.src.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active")
            try:
                pair.src.sql("SELECT pg_drop_replication_slot('dts_migrate')")
            except Exception:  # noqa: BLE001 - the applier was back on it first
                pass
            return pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0
        wait_for("the slot to be dropped", drop, 30)
        code = m.wait_exit(60)
        status = m.phase()
        check(code == 1 and status.get("phase") == "FAILED" and "does not exist" in (status.get("error") or ""),
              f"dropped slot: exit {code}, status {status.get('error')}")

        # Invalidated: a slot left behind by more WAL than max_slot_wal_keep_size.
        subprocess.run([APPLIER, "cancel", "--source", pair.src.conninfo, "--target", pair.target],
                       capture_output=True, timeout=60)
        pair.dst.sql("DROP DATABASE app")
        pair.dst.sql("CREATE DATABASE app")
        m = Migration(pair.src.conninfo, pair.target).start()
        m.wait_phase(("STREAMING", "CATCHING_UP"))
        m.stop()
        pair.src.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        pair.src.sql("SELECT pg_reload_conf()")

        def lost():
            pair.src.sql("INSERT INTO items SELECT g, repeat('w', 200), 0 FROM generate_series(1000001, 1040000) g "
                         "ON CONFLICT (id) DO UPDATE SET name = excluded.name || 'x'")
            pair.src.sql("SELECT pg_switch_wal()")
            pair.src.sql("CHECKPOINT")
            return pair.src.value("SELECT wal_status FROM pg_replication_slots") == "lost"
        wait_for("the slot to be invalidated", lost, 120, interval=0.2)
        m = Migration(pair.src.conninfo, pair.target).start()
        code = m.wait_exit(120)
        status = m.phase()
        check(code == 1 and status.get("phase") == "FAILED" and status.get("reconnects", 0) == 0,
              f"invalidated slot: exit {code}, status {status}")
        check("can no longer get changes" in (status.get("error") or "") or "invalidated" in (status.get("error") or ""),
              f"the error does not say the slot is invalidated: {status.get('error')}")
        FIGURES.append("source faults: slot dropped -> exit 1 'does not exist'; slot invalidated -> exit 1, no retry loop")


@test
def a_table_altered_on_the_source_mid_stream_stops_with_its_name_and_resumes_after_the_fix():
    with Pair(3) as pair:
        setup(pair, items=1000, scale=1)
        m = Migration(pair.src.conninfo, pair.target).start()
        m.wait_phase(("STREAMING", "CATCHING_UP"))
        pair.src.sql("ALTER TABLE items ADD COLUMN colour text DEFAULT 'red'")
        pair.src.sql("INSERT INTO items (id, name, price, colour) VALUES (5000001, 'new', 1, 'blue')")
        code = m.wait_exit(60)
        err = m.phase().get("error") or ""
        check(code == 1 and "items" in err and "colour" in err and "42703" in err, f"exit {code}: {err}")
        pair.dst_app("ALTER TABLE items ADD COLUMN colour text DEFAULT 'red'")
        m = Migration(pair.src.conninfo, pair.target).start()
        m.wait_phase(("STREAMING", "CATCHING_UP"))
        writer = ManyTypesWriter(pair.src)
        writer.start()
        finish_and_compare(pair, m, [writer], "an ALTER TABLE on the source")
        check(pair.dst_app("SELECT colour FROM items WHERE id = 5000001")[0][0] == "blue", "the new row")


@test
def a_full_target_disk_stops_the_copy_clearly_and_it_resumes_once_there_is_room():
    mnt = tempfile.mkdtemp(prefix="dts-tiny-")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M,mode=0700", "tmpfs", mnt], capture_output=True).returncode != 0:
        os.rmdir(mnt)
        raise Skip("this machine cannot mount a tmpfs (needs CAP_SYS_ADMIN); see tests/fault/README.md")
    try:
        subprocess.run(["chown", "dts:dts", mnt], check=True)
        with Pair(4) as pair:
            setup(pair, items=400000, scale=1)
            pair.dst.sql(f"CREATE TABLESPACE tiny LOCATION '{mnt}'")
            pair.dst.sql("DROP DATABASE app")
            pair.dst.sql("CREATE DATABASE app TABLESPACE tiny")
            m = Migration(pair.src.conninfo, pair.target).start()
            code = m.wait_exit(180)
            err = m.phase().get("error") or ""
            check(code == 1 and "No space left on device" in err, f"exit {code}: {err[:400]}")
            subprocess.run(["mount", "-o", "remount,size=400M", mnt], check=True)
            m = Migration(pair.src.conninfo, pair.target).start()
            m.wait_phase(("STREAMING", "CATCHING_UP"))
            writer = ManyTypesWriter(pair.src)
            writer.start()
            finish_and_compare(pair, m, [writer], "a full disk")
            FIGURES.append("target disk full: copy stopped with 'No space left on device', resumed after the remount, equal")
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


HOSTILE = '''
CREATE SCHEMA "Sch ""quoted"" ü";
CREATE TABLE "Sch ""quoted"" ü"."t; DROP TABLE items; --" ("id ""k""" int PRIMARY KEY, "naïve çolumn" text,
  "select" int, "a,b" text, "x.y" text);
CREATE TABLE public."Mixed Case" ("Key" text PRIMARY KEY, "Value" jsonb);
CREATE TABLE public."a.b" (id int PRIMARY KEY, "😀" text);
INSERT INTO "Sch ""quoted"" ü"."t; DROP TABLE items; --" SELECT g, 'ç' || g, g, 'a,b', 'x.y' FROM generate_series(1, 500) g;
INSERT INTO public."Mixed Case" SELECT 'k' || g, jsonb_build_object('v', g) FROM generate_series(1, 200) g;
INSERT INTO public."a.b" SELECT g, repeat('😀', g % 5) FROM generate_series(1, 100) g;
'''
HOSTILE_TABLES = ['"Sch ""quoted"" ü"."t; DROP TABLE items; --"', 'public."Mixed Case"', 'public."a.b"', "items"]


@test
def hostile_identifiers_go_through_a_migration_end_to_end():
    with Pair(5) as pair:
        setup(pair, items=1000, scale=1)
        pair.src.sql(HOSTILE)
        m = Migration(pair.src.conninfo, pair.target).start()
        m.wait_phase(("STREAMING", "CATCHING_UP"))
        pair.src.sql('''
            UPDATE "Sch ""quoted"" ü"."t; DROP TABLE items; --" SET "naïve çolumn" = 'changed', "select" = -1 WHERE "id ""k""" % 7 = 0;
            DELETE FROM "Sch ""quoted"" ü"."t; DROP TABLE items; --" WHERE "id ""k""" % 11 = 0;
            INSERT INTO public."Mixed Case" VALUES ('new''quote', '{"q": "\\"x\\""}');
            UPDATE public."a.b" SET "😀" = 'ok' WHERE id < 10;
            TRUNCATE public."a.b";
            INSERT INTO public."a.b" VALUES (1, 'again');''')
        out = subprocess.run([APPLIER, "verify", "--source", pair.src.conninfo, "--target", pair.target],
                             capture_output=True, text=True, timeout=300)
        check(out.returncode == 0 and "all 9 tables are equal" in out.stdout, f"verify: {out.stdout} {out.stderr[-500:]}")
        out = complete(pair)
        check(out.returncode == 0, out.stderr[-800:])
        check(m.wait_exit(60) == 0, m.tail())
        compared, lost, duplicated, details = compare_rows(pair.src.conninfo, pair.target, HOSTILE_TABLES)
        check(lost == 0 and duplicated == 0 and compared > 1000, f"{compared} {lost} {duplicated} {details}")
        check(pair.dst_app("SELECT count(*) FROM items")[0][0] == 1000, "the table named in the hostile name is intact")


PASSWORD = "Pw-s3cret-42"


def require_passwords(server):
    """pg_hba: the user `migrator` must give its password (scram), everyone else as before."""
    server.sql(f"CREATE ROLE migrator LOGIN SUPERUSER REPLICATION PASSWORD '{PASSWORD}'")
    hba = server.value("SHOW hba_file")
    subprocess.run(["bash", "-c", f"printf 'host all migrator 127.0.0.1/32 scram-sha-256\\nhost replication migrator "
                    f"127.0.0.1/32 scram-sha-256\\n' | cat - {hba} > {hba}.new && mv {hba}.new {hba} && "
                    f"chown dts {hba}"], check=True)
    server.sql("SELECT pg_reload_conf()")


@test
def passwords_never_reach_logs_status_files_or_process_titles():
    with Pair(6) as pair:
        setup(pair, items=200000, scale=1)
        for s in (pair.src, pair.dst):
            require_passwords(s)
        src = f"host=127.0.0.1 port={pair.src.port} user=migrator dbname=postgres password={PASSWORD}"
        dst = f"postgresql://migrator:{PASSWORD}@127.0.0.1:{pair.dst.port}/app"
        # Conninfos through the environment: the way to keep them out of every command line.
        env = dict(os.environ, DTS_SOURCE=src, DTS_TARGET=dst)
        seen, sampled = [], [0]
        stop = threading.Event()

        def watch_titles():
            while not stop.is_set():
                for cmd in command_lines():
                    sampled[0] += 1
                    if PASSWORD in cmd:
                        seen.append(cmd[:200])
                time.sleep(0.005)
        t = threading.Thread(target=watch_titles, daemon=True)
        t.start()
        status = scratch("fault-pw.json")
        log_path = scratch("fault-pw.log")
        with open(log_path, "w") as log:
            p = subprocess.Popen([APPLIER, "migrate", "--status-file", status, "--split-larger-than", "2MB"],
                                 env=env, stdout=log, stderr=log)
        try:
            def streaming():
                if p.poll() is not None:
                    raise Failure(f"migrate exited {p.returncode}")
                try:
                    with open(status) as f:
                        return '"STREAMING"' in f.read()
                except OSError:
                    return False
            wait_for("the migration to stream", streaming, 180)
            pair.src.sql("INSERT INTO items VALUES (9999999, 'x', 1)")
            bad = subprocess.run([APPLIER, "check", "--json"], env=dict(env, DTS_SOURCE=src.replace(PASSWORD, "wrong")),
                                 capture_output=True, text=True, timeout=120)
            out = subprocess.run([APPLIER, "complete", "--max-lag", "3000"], env=env, capture_output=True, text=True,
                                 timeout=300)
            check(out.returncode == 0, out.stderr[-800:])
            check(p.wait(60) == 0, "migrate did not end at the cutover")
        finally:
            stop.set()
            t.join(5)
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        check(not seen, f"the password is in a command line: {seen[:3]}")
        check(sampled[0] > 100, "the command-line watcher did not run")
        with open(log_path) as f:
            log = f.read()
        with open(status) as f:
            status_text = f.read()
        for what, text in (("migrate's log", log), ("the status file", status_text),
                           ("complete's output", out.stdout + out.stderr), ("check's output", bad.stdout + bad.stderr)):
            check(PASSWORD not in text, f"the password is in {what}")
        check("password authentication failed" in bad.stdout, f"check did not report the wrong password: {bad.stdout[:300]}")

        # Given on the command line anyway, the applier blanks it in its argv once parsed.
        p = subprocess.Popen([APPLIER, "follow", "--source", src, "--target", dst, "--slot", "none_such"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def scrubbed():
                with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
                return "********" in cmd and PASSWORD not in cmd
            wait_for("argv to be scrubbed", lambda: p.poll() is None and scrubbed(), 10, interval=0.001)
        finally:
            p.kill()
            p.wait()
        FIGURES.append(f"security: password absent from logs, status file, complete/check output and "
                       f"{sampled[0]} sampled command lines (pg_dump and pg_restore included); argv scrubbed")


@test
def tls_to_source_and_target_with_a_self_signed_certificate():
    with Pair(7) as pair:
        setup(pair, items=5000, scale=1)
        work = tempfile.mkdtemp(prefix="dts-tls-")
        try:
            crt, key = f"{work}/server.crt", f"{work}/server.key"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True)
            for s in (pair.src, pair.dst):
                data = os.path.dirname(s.value("SHOW hba_file"))
                for f in (crt, key):
                    shutil.copy(f, data)
                    subprocess.run(["chown", "dts", os.path.join(data, os.path.basename(f))], check=True)
                    os.chmod(os.path.join(data, os.path.basename(f)), 0o600)
                s.sql("ALTER SYSTEM SET ssl = on")
                s.sql("SELECT pg_reload_conf()")
            tls = f" sslmode=verify-full sslrootcert={crt}"
            m = Migration(pair.src.conninfo + tls, pair.target + tls).start()
            m.wait_phase(("STREAMING", "CATCHING_UP"))
            pair.src.sql("UPDATE items SET price = price + 1 WHERE id < 100")
            walsender_tls = pair.src.value("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                                           "WHERE a.backend_type = 'walsender'")
            target_tls = pair.dst.value("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                                        "WHERE a.datname = 'app' AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()")
            check(walsender_tls is True and target_tls is True, f"TLS: walsender {walsender_tls}, target {target_tls}")
            out = complete(pair, source=pair.src.conninfo + tls, target=pair.target + tls)
            check(out.returncode == 0, out.stderr[-800:])
            check(m.wait_exit(60) == 0, m.tail())
            compared, lost, duplicated, _ = compare_rows(pair.src.conninfo, pair.target, TABLES)
            check(lost == 0 and duplicated == 0, f"{lost} lost, {duplicated} duplicated")
            FIGURES.append(f"TLS (verify-full, self-signed): walsender and target sessions encrypted, {compared} rows equal")
        finally:
            shutil.rmtree(work, ignore_errors=True)


BAD_FLAGS = [
    ("migrate", ["--jobs", "0"], "--jobs"), ("migrate", ["--jobs", "many"], "--jobs"),
    ("migrate", ["--split-larger-than", "lots"], "--split-larger-than"), ("migrate", ["--mode", "fast"], "--mode"),
    ("migrate", ["--until-lsn", "12/XYZ"], "--until-lsn"), ("migrate", ["--skip-check", "nope"], "--skip-check"),
    ("migrate", ["--bandwidth-limit", "-1"], "--bandwidth-limit"), ("migrate", ["--resume-mode", "later"], "--resume-mode"),
    ("follow", ["--slot", "s", "--resume-mode", "x"], "--resume-mode"), ("follow", ["--slot", "s", "--until-lsn", "1"], "--until-lsn"),
    ("follow", ["--slot", "s", "--bandwidth-limit", "fast"], "--bandwidth-limit"),
    ("follow", ["--slot", "s", "--apply-workers", "0"], "--apply-workers"),
    ("migrate", ["--apply-workers", "many"], "--apply-workers"), ("migrate", ["--apply-workers", "17"], "--apply-workers"),
    ("verify", ["--chunk-rows", "1"], "--chunk-rows"), ("verify", ["--wait-timeout", "0"], "--wait-timeout"),
    ("complete", ["--max-lag", "0"], "--max-lag"), ("complete", ["--sequence-shift", "-5"], "--sequence-shift"),
    ("complete", ["--read-only-scope", "world"], "--read-only-scope"), ("complete", ["--drain-timeout", "x"], "--drain-timeout"),
    ("check", ["--nonsense"], "--nonsense"), ("cancel", ["--slot"], "--slot"),
]


@test
def every_command_line_flag_refuses_bad_values_clearly():
    conn = ["--source", "host=127.0.0.1 port=1 dbname=x", "--target", "host=127.0.0.1 port=1 dbname=y"]
    for cmd, args, flag in BAD_FLAGS:
        out = subprocess.run([APPLIER, cmd, *conn, *args], capture_output=True, text=True, timeout=30)
        check(out.returncode == 2 and flag in out.stderr, f"{cmd} {args}: exit {out.returncode}: {out.stderr[-300:]}")
    for args, flag in [(["serve", "--state", "x", "--max-jobs", "0"], "--max-jobs"),
                       (["jobs", "dance"], "action"), (["jobs", "show", "-3"], "id"),
                       (["serve", "--state", "dbname=x", "--listen", "nowhere"], "--listen")]:
        out = subprocess.run([APPLIER, *args], capture_output=True, text=True, timeout=30)
        check(out.returncode == 2 and flag in out.stderr, f"{args}: exit {out.returncode}: {out.stderr[-300:]}")
    # Over-long and strange values: a clear error, never a crash.
    for cmd, args in [("follow", ["--slot", "s" * 100000]), ("follow", ["--slot", "Bad-Name"]), ("migrate", ["--slot", "x\"; DROP TABLE t; --"]),
                      ("migrate", ["--tables", "*" * 100000]), ("verify", ["--tables", "\x01\x02"])]:
        out = subprocess.run([APPLIER, cmd, *conn, *args], capture_output=True, text=True, timeout=60)
        check(0 < out.returncode < 64 and out.stderr.strip(), f"{cmd} {args[0]}: exit {out.returncode}")
    FIGURES.append(f"hostile input: {len(BAD_FLAGS) + 9} bad command lines refused with exit 2 or a clear error, none crashed")


def report():
    if FIGURES:
        print("\nfault suite figures:")
        for f in FIGURES:
            print("  " + f)


if __name__ == "__main__":
    main("fault_test", epilogue=report)
