#!/usr/bin/python3
"""dts_applier migrate against real servers: snapshot copy then follow under live writes,
every table equal at the end; a copy killed with -9 and run again; SIGTERM and cancel at every
step of the copy leave no process and no session of the job behind.

Usage: migrate_test.py [test_name ...]
"""
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (scratch, read_json, APPLIER, AppPair, pgbench, Failure, lsn_value, check, check_equal, main, rng, run_sql,  # noqa: E402
                     test, wait_for)

BASE_PORT = int(os.environ.get("DTS_MIGRATE_TEST_PORT", "25560"))

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE parent (id serial PRIMARY KEY, v text);
CREATE TABLE child (id bigserial PRIMARY KEY, parent_id int REFERENCES parent, note text, m mood,
                    at timestamptz DEFAULT now(), doc jsonb);
CREATE TABLE events (id bigint, city text, v numeric, PRIMARY KEY (id, city)) PARTITION BY LIST (city);
CREATE TABLE events_a PARTITION OF events FOR VALUES IN ('a');
CREATE TABLE events_b PARTITION OF events FOR VALUES IN ('b');
CREATE TABLE log_nokey (at timestamptz DEFAULT now(), msg text);
CREATE TABLE gen (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED);
INSERT INTO parent (v) SELECT 'p' || g FROM generate_series(1, 500) g;
INSERT INTO child (parent_id, note, m, doc)
  SELECT g % 500 + 1, repeat('n', g % 50), (ARRAY['sad','ok','happy'])[g % 3 + 1]::mood, jsonb_build_object('g', g)
  FROM generate_series(1, 20000) g;
INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, g / 3.0 FROM generate_series(1, 10000) g;
INSERT INTO log_nokey (msg) SELECT 'm' || g FROM generate_series(1, 1000) g;
INSERT INTO gen (id, a) SELECT g, g FROM generate_series(1, 100) g;
"""

TABLES = ["parent", "child", "events", "log_nokey", "gen", "pgbench_accounts", "pgbench_branches",
          "pgbench_tellers", "pgbench_history"]


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_migrate{index}", BASE_PORT + 2 * index)


def migrate(pair, *extra, status=None):
    args = [APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target, "--jobs", "2",
            "--split-larger-than", "1MB", *extra]
    if status:
        args += ["--status-file", status]
    log = open(scratch("migrate.log"), "a")
    return subprocess.Popen(args, stdout=log, stderr=log)


status_of = read_json


def with_big_table(pair, rows):
    pair.src.sql(SCHEMA)
    pair.src.sql("CREATE TABLE big (id bigint PRIMARY KEY, v text); "
                 f"INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {rows}) g")


def running(p):
    """True while migrate runs; a migrate that ended before the awaited moment fails the test."""
    if p.poll() is not None:
        raise Failure(f"migrate exited with {p.returncode} before the awaited moment")
    return True


def wait_copy_started(pair, p):
    # Phase COPYING is recorded once the slot exists: the prechecks before it (which dump and
    # restore the schema as a trial) are not the copy.
    def copying():
        if not pair.dst_app("SELECT count(*) FROM pg_tables WHERE schemaname = 'dts' AND tablename = 'migration'")[0][0]:
            return False
        return pair.dst_app("SELECT count(*) FROM dts.migration WHERE phase = 'COPYING'")[0][0] > 0
    wait_for("the copy to start", lambda: running(p) and copying(), 60)


def wait_phase(p, status, phase, timeout=120):
    wait_for(phase, lambda: running(p) and (status_of(status) or {}).get("phase") == phase, timeout)


def fresh_status(tag):
    path = scratch(f"migrate-{tag}.json")
    if os.path.exists(path):
        os.unlink(path)
    return path


@test
def migrate_under_live_writes_then_follow():
    with Pair(0) as pair:
        pair.src.sql(SCHEMA)
        pgbench(pair.src, "-i", "-q", "-s", "3")
        status = fresh_status("live")
        bench = threading.Thread(target=pgbench, args=(pair.src, "-n", "-c", "2", "-j", "2", "-T", "10"))
        bench.start()
        writes_stop = threading.Event()

        def other_writes():
            i = 0
            while not writes_stop.is_set():
                i += 1
                pair.src.sql("INSERT INTO child (parent_id, note) VALUES (%s, 'live'); "
                             "UPDATE events SET v = v + 1 WHERE id = %s; INSERT INTO log_nokey (msg) VALUES ('live');",
                             (i % 500 + 1, i % 10000 + 1))
        w = threading.Thread(target=other_writes)
        w.start()
        p = migrate(pair, status=status)
        try:
            wait_phase(p, status, "STREAMING")
            check(p.poll() is None, f"migrate exited with {p.returncode}")
            bench.join()
            writes_stop.set()
            w.join()
            end = lsn_value(pair.src.lsn())
            wait_for("catch-up", lambda: lsn_value((status_of(status) or {}).get("applied_lsn", "0/0")) >= end, 120)
            copy = status_of(status)["copy"]
            tables = {t["table"]: t for t in copy["tables"]}
            check(copy["chunks_done"] == copy["chunks"] > len(tables), f"chunks {copy['chunks_done']}/{copy['chunks']}")
            check(tables["public.pgbench_accounts"]["chunks"] > 1, "pgbench_accounts was not split into chunks")
            check(tables["public.pgbench_accounts"]["copied_rows"] == 300000, f"{tables['public.pgbench_accounts']}")
            check(sum(t["copied_rows"] for t in copy["tables"]) == copy["rows_copied"], "row totals")
            acc = tables["public.pgbench_accounts"]["chunk_progress"]
            check(all(c["done"] and c["bytes"] > 0 for c in acc), f"chunks {acc}")
            check(sum(c["copied_rows"] for c in acc) == 300000, "chunk rows")
        finally:
            writes_stop.set()
            bench.join()
            p.terminate()
            p.wait(30)
        check(p.returncode == 0, f"migrate exit {p.returncode}")
        rows = check_equal(pair.src, pair.target_view(), TABLES)
        check(rows > 300000, f"{rows} rows compared")
        # Sequences are copied after the data (follow does not carry them; the cutover syncs
        # them again): at least the values of the snapshot.
        dst_seq = pair.dst_app("SELECT last_value FROM child_id_seq")[0][0]
        check(dst_seq >= 20000, f"child_id_seq on the target is {dst_seq}, below the snapshot's 20000")
        check(pair.dst_app("SELECT count(*) FROM pg_constraint WHERE contype = 'f'")[0][0] >= 1, "foreign key")
        check(pair.dst_app("SELECT count(*) FROM pg_indexes WHERE tablename = 'pgbench_accounts'")[0][0] >= 1, "index")


@test
def copy_killed_with_sigkill_then_run_again():
    with Pair(1) as pair:
        with_big_table(pair, 1500000)
        for _ in range(3):
            p = migrate(pair, "--mode", "full")
            wait_copy_started(pair, p)
            time.sleep(rng.uniform(0.1, 1.0))  # a random moment to kill at
            p.kill()
            p.wait()
        p = migrate(pair, "--mode", "full")
        check(p.wait(300) == 0, "the run after the kills failed")
        check_equal(pair.src, pair.target_view(), ["parent", "child", "events", "log_nokey", "gen", "big"])
        check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "slot left behind")
        check(pair.dst_app("SELECT phase FROM dts.migration")[0][0] == "DONE", "phase")


@test
def table_selection_with_wildcards_and_exclusions():
    with Pair(2) as pair:
        pair.src.sql("CREATE SCHEMA sales; CREATE SCHEMA audit; CREATE TYPE sales.state AS ENUM ('new', 'paid');"
                     "CREATE FUNCTION sales.next_note() RETURNS text LANGUAGE sql AS $$ SELECT 'note' $$;"
                     "CREATE TABLE sales.orders (id int PRIMARY KEY, v text, st sales.state DEFAULT 'new',"
                     "                           note text DEFAULT sales.next_note());"
                     "CREATE TABLE sales.order_lines (id int PRIMARY KEY, v text);"
                     "CREATE TABLE sales.scratch (id int PRIMARY KEY);"
                     "CREATE TABLE audit.trail (id int PRIMARY KEY);"
                     "CREATE TABLE public.other (id int PRIMARY KEY);"
                     "INSERT INTO sales.orders SELECT g, 'o' FROM generate_series(1, 100) g;"
                     "INSERT INTO sales.order_lines SELECT g, 'l' FROM generate_series(1, 300) g;"
                     "INSERT INTO sales.scratch SELECT generate_series(1, 10);"
                     "INSERT INTO audit.trail SELECT generate_series(1, 10);"
                     "INSERT INTO public.other SELECT generate_series(1, 10);")
        status = fresh_status("sel")
        p = migrate(pair, "--tables", "sales.*", "--exclude", "sales.scratch", status=status)
        try:
            wait_phase(p, status, "STREAMING", 60)
            pair.src.sql("INSERT INTO sales.orders (id, v, st) VALUES (1000, 'live', 'paid'); INSERT INTO sales.scratch VALUES (1000);"
                         "INSERT INTO public.other VALUES (1000)")
            end = lsn_value(pair.src.lsn())
            wait_for("catch-up", lambda: lsn_value((status_of(status) or {}).get("applied_lsn", "0/0")) >= end, 60)
        finally:
            p.terminate()
            p.wait(30)
        tables = {r[0] for r in pair.dst_app("SELECT schemaname || '.' || tablename FROM pg_tables "
                                             "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'dts')")}
        check(tables == {"sales.orders", "sales.order_lines"}, f"tables on the target: {sorted(tables)}")
        check_equal(pair.src, pair.target_view(), ["sales.orders", "sales.order_lines"])


@test
def a_failure_is_reported_in_the_status_file():
    with Pair(3) as pair:
        pair.src.sql("CREATE TABLE t (id int PRIMARY KEY)")
        pair.dst_app("CREATE TABLE t (id int PRIMARY KEY)")  # not an empty target: pre-data fails
        status = fresh_status("fail")
        p = migrate(pair, "--mode", "full", status=status)
        check(p.wait(60) == 2, f"exit code {p.returncode}")  # the precheck refuses first
        s = status_of(status)
        check(s["phase"] == "FAILED" and "prechecks FAILED: target_empty" in s["error"], f"status {s}")
        p = migrate(pair, "--mode", "full", "--skip-check", "target_empty", status=status)
        check(p.wait(60) == 1, f"exit code {p.returncode}")
        s = status_of(status)
        check(s["phase"] == "FAILED" and "already exists" in s["error"], f"status {s}")


def cancel(pair):
    return subprocess.run([APPLIER, "cancel", "--source", pair.src.conninfo, "--target", pair.target],
                          capture_output=True, text=True, timeout=60)


@test
def cancel_from_every_phase_leaves_no_slot():
    with Pair(4) as pair:
        with_big_table(pair, 1000000)
        slots = lambda: pair.src.value("SELECT count(*) FROM pg_replication_slots")  # noqa: E731
        # During the copy.
        p = migrate(pair)
        wait_copy_started(pair, p)
        out = cancel(pair)
        check(out.returncode == 0, f"cancel during the copy: {out.stderr}")
        rc = p.wait(120)
        check(rc != 0, "migrate went on as if nothing happened")
        check(slots() == 0, "slot left behind after a cancel during the copy")
        # While streaming (a fresh target database).
        pair.dst.sql("DROP DATABASE app WITH (FORCE)")
        pair.dst.sql("CREATE DATABASE app")
        status = fresh_status("cancel")
        p = migrate(pair, status=status)
        wait_phase(p, status, "STREAMING")
        out = cancel(pair)
        check(out.returncode == 0, f"cancel while streaming: {out.stderr}")
        rc = p.wait(120)
        check(rc != 0, "follow did not notice its slot was gone")
        check(slots() == 0, "slot left behind after a cancel while streaming")
        check(pair.dst_app("SELECT count(*) FROM pg_replication_origin")[0][0] == 0, "origin left on the target")
        check(pair.dst_app("SELECT count(*) FROM big")[0][0] == 1000000, "cancel touched the data")
        # After everything stopped, and again: nothing to do, still fine.
        for _ in range(2):
            out = cancel(pair)
            check(out.returncode == 0 and slots() == 0, f"cancel when stopped: {out.stderr}")


# Gates on the target that hold a migrate at a chosen step for as long as the test holds an
# advisory lock: pg_restore's CREATE TYPE (pre-data), the copy's rows of big past id 100000 (a
# row trigger the copy fires: ENABLE ALWAYS reaches its session_replication_role = replica),
# pg_restore -j's CREATE INDEX (post-data). Deterministic, unlike a copy merely made long.
# check's dry run of the schema restore (a rolled-back transaction) passes them.
GATE_PRE, GATE_COPY, GATE_POST = 4242, 4243, 4244
GATES = f"""
CREATE SCHEMA gate;
CREATE FUNCTION gate.hold_pre() RETURNS event_trigger LANGUAGE plpgsql AS
  $$ BEGIN IF current_setting('application_name') NOT LIKE 'dts_check:%' THEN
       PERFORM pg_advisory_xact_lock_shared({GATE_PRE}); END IF; END $$;
CREATE FUNCTION gate.hold_post() RETURNS event_trigger LANGUAGE plpgsql AS
  $$ BEGIN IF current_setting('application_name') NOT LIKE 'dts_check:%' THEN
       PERFORM pg_advisory_xact_lock_shared({GATE_POST}); END IF; END $$;
CREATE FUNCTION gate.hold_row() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN IF NEW.id > 100000 THEN PERFORM pg_advisory_xact_lock_shared({GATE_COPY}); END IF; RETURN NEW; END $$;
CREATE FUNCTION gate.arm_copy() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('application_name') NOT LIKE 'dts_check:%' AND EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.big') THEN
    CREATE TRIGGER gate BEFORE INSERT ON public.big FOR EACH ROW EXECUTE FUNCTION gate.hold_row();
    ALTER TABLE public.big ENABLE ALWAYS TRIGGER gate;
  END IF;
END $$;
CREATE EVENT TRIGGER gate_pre ON ddl_command_start WHEN TAG IN ('CREATE TYPE') EXECUTE FUNCTION gate.hold_pre();
CREATE EVENT TRIGGER gate_copy ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION gate.arm_copy();
CREATE EVENT TRIGGER gate_post ON ddl_command_start WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION gate.hold_post();
"""
GATED_SOURCE = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE big (id bigint PRIMARY KEY, v text, m mood);
INSERT INTO big SELECT g, md5(g::text), 'ok' FROM generate_series(1, 200000) g;
CREATE INDEX big_v ON big (v);
CREATE TABLE small (id int PRIMARY KEY);
INSERT INTO small SELECT generate_series(1, 100);
"""


def gated_pair(index):
    """A pair whose target holds migrate at each gate while the returned session holds its lock."""
    pair = Pair(index)
    pair.src.sql(GATED_SOURCE)
    pair.dst_app(GATES)
    import psycopg2
    holder = psycopg2.connect(pair.target + " application_name=dts_test")
    holder.autocommit = True
    with holder.cursor() as cur:
        cur.execute(f"SELECT pg_advisory_lock({GATE_PRE}), pg_advisory_lock({GATE_COPY}), pg_advisory_lock({GATE_POST})")
    return pair, holder


JOBS = []  # started by the current test; whatever a failed test leaves is killed


def start_job(pair, *extra):
    """migrate in a session of its own: its process group is the job's, as serve or a shell gives it."""
    args = [APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target, "--jobs", "2",
            "--split-larger-than", "1MB", *extra]
    log = open(scratch("migrate.log"), "a")
    p = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
    JOBS.append(p)
    return p


def kill_jobs():
    for p in JOBS:
        if p.poll() is None:
            for pgid in {info[2] for info in job_processes(p.pid).values()}:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
            p.wait()
    JOBS.clear()


def processes():
    """pid -> (state, ppid, process group, start time) of every process."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        table[int(d)] = (rest[0], int(rest[1]), int(rest[2]), int(rest[19]), comm)
    return table


def job_processes(root):
    """The job: migrate and every descendant (the tools and their workers), as now."""
    table = processes()
    members, grew = {root}, True
    while grew:
        grew = False
        for pid, info in table.items():
            if info[1] in members and pid not in members:
                members.add(pid)
                grew = True
    return {pid: table[pid] for pid in members if pid in table}


def left_of(job):
    """Processes of a job that are still there: the same ones, or any in their process groups."""
    groups = {info[2] for info in job.values()}
    return [f"{pid} {info[4]}" for pid, info in processes().items() if info[0] != "Z" and
            ((pid in job and job[pid][3] == info[3]) or info[2] in groups)]


def foreign_sessions(conninfo):
    """Client sessions and walsenders on a server other than the test's own."""
    return run_sql(conninfo, "SELECT pid, application_name, left(query, 60) FROM pg_stat_activity "
                             "WHERE backend_type IN ('client backend', 'walsender') AND pid <> pg_backend_pid() "
                             "AND application_name <> 'dts_test'")


def blocked_at(pair, p, gate, sessions=1):
    """Waits until `sessions` of the job wait at the gate; returns their application_names."""
    def waiting():
        running(p)
        rows = pair.dst_app("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                            f"WHERE l.locktype = 'advisory' AND NOT l.granted AND l.objid = {gate}")
        return rows if len(rows) >= sessions else None
    return {r[0] for r in wait_for(f"the job to wait at gate {gate}", waiting, 120)}


def check_nothing_left(pair, job, what):
    wait_for(f"no process of the job after {what}", lambda: not left_of(job), 15)
    for side, conninfo in (("source", pair.src.conninfo), ("target", pair.dst.conninfo)):
        wait_for(f"no session of the job on the {side} after {what}", lambda: not foreign_sessions(conninfo), 15)


@test
def stopping_stops_the_copy():
    """SIGTERM while pg_restore restores pre-data, while the workers copy, while pg_restore -j
    builds indexes: migrate stops every tool, worker and session of its job and exits 0; the
    same command then completes the migration."""
    pair, holder = gated_pair(5)
    with pair:
        try:
            for gate, tool, sessions in ((GATE_PRE, "pg_restore", 1), (GATE_COPY, None, 2),
                                         (GATE_POST, "pg_restore", 1)):
                p = start_job(pair, "--mode", "full")
                names = blocked_at(pair, p, gate, sessions)
                check(names == {f"dts_migrate:dts_migrate#{p.pid}"}, f"the job's sessions at gate {gate} are named {names}")
                job = job_processes(p.pid)
                comms = sorted(info[4] for info in job.values())
                check(tool is None or tool in comms, f"no {tool} among the job's processes at gate {gate}: {comms}")
                p.send_signal(signal.SIGTERM)
                try:
                    rc = p.wait(30)
                except subprocess.TimeoutExpired:
                    raise Failure(f"migrate still runs 30 s after SIGTERM at gate {gate} (processes {comms})")
                check(rc == 0, f"migrate stopped at gate {gate} exited with {rc}")
                check_nothing_left(pair, job, f"SIGTERM at gate {gate}")
                holder.cursor().execute(f"SELECT pg_advisory_unlock({gate})")
                pair.dst_app({GATE_PRE: "DROP EVENT TRIGGER gate_pre", GATE_COPY: "DROP EVENT TRIGGER gate_copy",
                              GATE_POST: "DROP EVENT TRIGGER gate_post"}[gate])
            p = start_job(pair, "--mode", "full")
            check(p.wait(300) == 0, "the same command after the stops failed")
            check_equal(pair.src, pair.target_view(), ["big", "small"])
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "slot left behind")
            check(pair.dst_app("SELECT count(*) FROM pg_indexes WHERE indexname = 'big_v'")[0][0] == 1, "index big_v")
        finally:
            kill_jobs()
            holder.close()


@test
def cancel_stops_a_live_copy():
    """cancel while the workers copy: the migrate stops (tools, workers, sessions), then the
    slot, origin and state go; the rows already copied stay."""
    pair, holder = gated_pair(6)
    with pair:
        try:
            holder.cursor().execute(f"SELECT pg_advisory_unlock({GATE_PRE})")
            p = start_job(pair)
            blocked_at(pair, p, GATE_COPY, 2)
            copied = pair.dst_app("SELECT count(*) FROM big")[0][0]
            check(0 < copied <= 100000, f"{copied} rows of big committed before the gate")
            job = job_processes(p.pid)
            out = cancel(pair)
            check(out.returncode == 0, f"cancel during the copy: {out.stderr}")
            check("stopping the migrate" in out.stderr, f"cancel did not stop the migrate: {out.stderr}")
            try:
                rc = p.wait(30)
            except subprocess.TimeoutExpired:
                raise Failure("migrate still runs 30 s after cancel")
            check(rc == 1, f"migrate exited with {rc} after cancel")
            check_nothing_left(pair, job, "cancel")
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "slot left behind")
            check(pair.dst_app("SELECT count(*) FROM pg_replication_origin")[0][0] == 0, "origin left behind")
            check(pair.dst_app("SELECT count(*) FROM dts.migration")[0][0] == 0, "state left behind")
            check(pair.dst_app("SELECT count(*) FROM big")[0][0] == copied, "cancel touched the rows already copied")
        finally:
            kill_jobs()
            holder.close()


if __name__ == "__main__":
    main("migrate_test")
