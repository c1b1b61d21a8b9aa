#!/usr/bin/python3
"""A least-privilege migration, as out of and into managed services: a source role with
REPLICATION and SELECT only (`mig_src`), a target role that owns the target database and is no
superuser (`mig_dst`), the application's objects owned by a third role (`app_owner`). check
FAILS before the grants, each FAILED item's fix is applied verbatim (as a superuser of the side
it names), check then has no FAILED item, and migrate (under writes), verify and complete all
succeed as those roles: data equal, owners kept, the source read-only afterwards. With
--no-owner / --no-privileges the objects belong to the target role instead.

Guards defect 12 of issue 11. Usage: leastpriv_test.py [test_name ...]
"""
import json
import os
import subprocess
import sys
import threading
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import scratch, read_json, APPLIER, AppPair, Failure, check, check_equal, main, run_sql, tail_file, test, wait_for  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_LEASTPRIV_TEST_PORT", "26500"))

SOURCE_SCHEMA = """
-- The plugin's SQL side (heartbeats) stays on the source; hstore is trusted, so the target
-- role can create it; pg_stat_statements is not: a superuser creates it there first.
CREATE EXTENSION dts_decoding;
CREATE EXTENSION hstore;
CREATE EXTENSION pg_stat_statements;
CREATE ROLE app_owner LOGIN;
CREATE ROLE app_reader;
CREATE ROLE mig_src LOGIN REPLICATION;
CREATE SCHEMA app AUTHORIZATION app_owner;
GRANT CREATE ON SCHEMA public TO app_owner;
SET ROLE app_owner;
CREATE TABLE app.items (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 0);
CREATE TABLE app.orders (id serial PRIMARY KEY, item_id bigint NOT NULL REFERENCES app.items, at timestamptz DEFAULT now());
CREATE INDEX orders_item ON app.orders (item_id);
CREATE VIEW app.busy AS SELECT * FROM app.items WHERE qty > 5;
CREATE FUNCTION app.bump(n int) RETURNS int LANGUAGE sql AS 'SELECT n + 1';
CREATE SEQUENCE app.tickets;
SELECT setval('app.tickets', 500);
CREATE TABLE public.events (id bigserial PRIMARY KEY, kind text, attrs hstore);
GRANT SELECT ON app.items, app.busy TO app_reader;
INSERT INTO app.items (name, qty) SELECT 'item ' || g, g % 10 FROM generate_series(1, 5000) g;
INSERT INTO app.orders (item_id) SELECT 1 + g % 5000 FROM generate_series(1, 2000) g;
INSERT INTO public.events (kind, attrs) SELECT 'e' || g, hstore('g', g::text) FROM generate_series(1, 300) g;
RESET ROLE;
-- What a least-privilege source role usually is given: it reads the tables.
GRANT USAGE ON SCHEMA app TO mig_src;
GRANT SELECT ON ALL TABLES IN SCHEMA app, public TO mig_src;
"""
TABLES = ["app.items", "app.orders", "public.events"]


class LeastPair(AppPair):
    """AppPair plus the roles: `src_mig` / `dst_mig` connect as mig_src and mig_dst."""

    def __init__(self, index):
        super().__init__(f"it_lp{index}", BASE_PORT + 2 * index)
        self.src.sql(SOURCE_SCHEMA)
        self.dst.sql("CREATE ROLE mig_dst LOGIN")
        self.dst.sql("ALTER DATABASE app OWNER TO mig_dst")
        self.src_mig = self.src.conninfo.replace("user=postgres", "user=mig_src")
        self.dst_mig = self.target.replace("user=postgres", "user=mig_dst")
        self.src_app = self.src.conninfo.replace("user=postgres", "user=app_owner")


def run_check(pair, *extra):
    out = subprocess.run([APPLIER, "check", "--source", pair.src_mig, "--target", pair.dst_mig, "--json", *extra],
                         capture_output=True, text=True, timeout=180)
    try:
        doc = json.loads(out.stdout)
    except ValueError:
        raise Failure(f"check printed no JSON (rc {out.returncode}): {out.stderr[-800:]}")
    return out.returncode, {i["name"]: i for i in doc["items"]}


def failed(items):
    return {k: v for k, v in items.items() if v["status"] == "FAILED"}


def apply_fixes(pair, items):
    """Runs every FAILED item's fix_sql as it is, as a superuser of the side it names."""
    applied = []
    for name, item in failed(items).items():
        sql = item.get("fix_sql")
        if not sql:
            # Only an item that follows from others may lack SQL (the trial restore).
            check(name == "schema_restore" and "first" in item["fix"], f"{name} FAILED without SQL: {item}")
            continue
        check(sql in item["fix"], f"{name}: fix_sql is not in the printed fix: {item}")
        side = {"source": pair.src.conninfo, "target": pair.target}[item["fix_on"]]
        run_sql(side, sql)
        applied.append((name, sql))
    return applied


class Writer:
    """The application: small transactions as app_owner on the source until stopped, bounded
    in time; refusals (the read-only source) counted, not fatal."""

    def __init__(self, conninfo, limit_s=300):
        self.conninfo, self.limit_s = conninfo, limit_s
        self.stop_event = threading.Event()
        self.commits = self.refused = 0
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + self.limit_s
        conn = None
        n = 0
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = psycopg2.connect(self.conninfo)
                    conn.autocommit = True
                n += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO app.items (name, qty) VALUES (%s, %s) RETURNING id", (f"new {n}", n % 10))
                    new_id = cur.fetchone()[0]
                    cur.execute("UPDATE app.items SET qty = qty + 1 WHERE id = %s", (1 + n % 5000,))
                    cur.execute("INSERT INTO app.orders (item_id) VALUES (%s)", (new_id,))
                    cur.execute("INSERT INTO public.events (kind, attrs) VALUES ('w', hstore('n', %s))", (str(n),))
                    cur.execute("SELECT nextval('app.tickets')")
                self.commits += 1
            except psycopg2.Error as e:
                if e.pgcode == "25006":  # read-only transaction: the cutover happened
                    self.refused += 1
                else:
                    self.error = self.error or str(e)
                if conn is not None and conn.closed:
                    conn = None
            self.stop_event.wait(0.02)  # a modest rate, not synchronisation
        if conn is not None:
            conn.close()

    def stop(self):
        self.stop_event.set()
        self.thread.join(30)


def start_migrate(pair, tag, *extra):
    status = scratch(f"lp-{tag}.json")
    log_path = scratch(f"lp-{tag}.log")
    for p in (status, log_path):
        if os.path.exists(p):
            os.unlink(p)
    log = open(log_path, "a")
    proc = subprocess.Popen([APPLIER, "migrate", "--source", pair.src_mig, "--target", pair.dst_mig,
                             "--status-file", status, *extra], stdout=log, stderr=log)
    return proc, status, log_path


read_status = read_json


@test
def check_fails_before_the_grants_with_every_grant_in_its_fix():
    with LeastPair(0) as pair:
        rc, items = run_check(pair)
        bad = failed(items)
        check(rc == 2, f"check exited {rc} for roles without the grants; FAILED: {list(bad)}")
        for name in ("read_privilege", "read_only_switch", "target_privileges", "extension_create", "roles",
                     "grant_roles"):
            check(name in bad, f"{name} did not FAIL: {items.get(name)}")
            check(bad[name].get("fix_sql"), f"{name} has no runnable fix: {bad[name]}")
        tp = bad["target_privileges"]["fix_sql"]
        for needed in ("pg_replication_origin_oid(text)", "pg_replication_origin_session_reset()",
                       "pg_replication_origin_drop(text)", "pg_replication_origin_xact_setup(pg_lsn, timestamptz)",
                       "GRANT SET ON PARAMETER session_replication_role"):
            check(needed in tp, f"target_privileges' fix lacks {needed}: {tp}")
        ro = bad["read_only_switch"]["fix_sql"]
        for needed in ("GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only", "pg_reload_conf()",
                       "pg_read_all_stats", "pg_signal_backend"):
            check(needed in ro, f"read_only_switch's fix lacks {needed}: {ro}")
        check("app.tickets" in bad["read_privilege"]["reason"], f"unreadable sequence not named: {bad['read_privilege']}")
        check("app_owner" in bad["roles"]["reason"] and "--no-owner" in bad["roles"]["fix"], f"{bad['roles']}")
        check("app_reader" in bad["grant_roles"]["reason"], f"{bad['grant_roles']}")
        ext = bad["extension_create"]["fix_sql"]
        check("pg_stat_statements" in ext and "hstore" not in ext and "dts_decoding" not in ext, f"extension_create: {ext}")

        # migrate refuses, and creates nothing on either side.
        proc, _, log_path = start_migrate(pair, "refused")
        rc = proc.wait(180)
        check(rc == 2, f"migrate exited {rc} instead of refusing: {tail_file(log_path)}")
        check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "migrate left a slot behind")

        # complete refuses before touching the source, naming the grants.
        out = subprocess.run([APPLIER, "complete", "--source", pair.src_mig, "--target", pair.dst_mig, "--timeout", "5"],
                             capture_output=True, text=True, timeout=60)
        check(out.returncode == 2 and "GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only" in out.stderr,
              f"complete did not refuse for want of the grants: {out.returncode} {out.stderr[-1000:]}")
        check(pair.src.value("SHOW default_transaction_read_only") == "off", "the source was left read-only")


@test
def fixes_applied_verbatim_then_migrate_verify_complete_as_those_roles():
    with LeastPair(1) as pair:
        rc, items = run_check(pair)
        check(rc == 2, f"check exited {rc} before the grants")
        applied = apply_fixes(pair, items)
        check(len(applied) >= 6, f"only these fixes were applied: {applied}")
        rc, items = run_check(pair)
        check(not failed(items), f"FAILED after the printed fixes were applied: {failed(items)}")
        check(items["schema_restore"]["status"] == "PASSED" and "tried" in items["schema_restore"]["reason"],
              f"{items['schema_restore']}")
        check("keep their source owners" in items["roles"]["reason"], f"{items['roles']}")

        writer = Writer(pair.src_app)
        proc = None
        try:
            proc, status, log_path = start_migrate(pair, "main")

            def streaming():
                if proc.poll() is not None:
                    raise Failure(f"migrate exited with {proc.returncode}: {tail_file(log_path)}")
                s = read_status(status)
                return s and s.get("phase") in ("STREAMING", "CATCHING_UP")
            wait_for("the migration to stream", streaming, 240)
            wait_for("the writer to commit during the stream", lambda: writer.commits > 50, 60)
            check(writer.error is None, f"the writer failed: {writer.error}")
            summary = read_status(status).get("copy") or {}
            check("their source owners" in json.dumps(summary), f"the copy summary does not say who owns: {summary}")

            out = subprocess.run([APPLIER, "verify", "--source", pair.src_mig, "--target", pair.dst_mig],
                                 capture_output=True, text=True, timeout=300)
            check(out.returncode == 0, f"verify as the roles exited {out.returncode}: {out.stdout[-1500:]} {out.stderr[-1500:]}")

            out = subprocess.run([APPLIER, "complete", "--source", pair.src_mig, "--target", pair.dst_mig, "--verify"],
                                 capture_output=True, text=True, timeout=300)
            check(out.returncode == 0, f"complete as the roles exited {out.returncode}: {out.stdout[-1500:]} {out.stderr[-2000:]}")
            check("cutover complete" in out.stdout, out.stdout)
            check(proc.wait(60) == 0, f"migrate did not end well after the cutover: {tail_file(log_path)}")
            wait_for("the writer to be refused by the read-only source", lambda: writer.refused > 0, 30)
        finally:
            writer.stop()
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        check(writer.error is None, f"the writer failed: {writer.error}")
        check(writer.commits > 50, f"only {writer.commits} commits during the migration")

        rows = check_equal(pair.src, pair.target_view(), TABLES)
        check(rows > 7300, f"only {rows} rows compared")
        src_seq = pair.src.value("SELECT last_value FROM app.tickets")
        dst_seq = pair.target_view().value("SELECT last_value FROM app.tickets")
        check(dst_seq == src_seq and src_seq > 500, f"sequence app.tickets: source {src_seq}, target {dst_seq}")
        owner = pair.target_view().value("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'app.items'::regclass")
        check(owner == "app_owner", f"app.items is owned by {owner} on the target, not by its source owner")
        reader = pair.target_view().value("SELECT has_table_privilege('app_reader', 'app.items', 'SELECT')")
        check(reader is True, "the source's grant to app_reader did not travel")
        exts = pair.dst_app("SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension")[0][0]
        check(exts == "hstore,pg_stat_statements,plpgsql", f"extensions on the target: {exts} (dts_decoding stays behind)")

        # The source is read-only for the application, and writable again once undone.
        try:
            run_sql(pair.src_app, "INSERT INTO public.events (kind) VALUES ('after')")
            raise Failure("the source accepted a write after complete")
        except psycopg2.Error as e:
            check(e.pgcode == "25006", f"expected a read-only refusal, got {e.pgcode}: {e}")
        run_sql(pair.src.conninfo, "ALTER SYSTEM RESET default_transaction_read_only")
        run_sql(pair.src.conninfo, "SELECT pg_reload_conf()")
        wait_for("the source to be writable again",
                 lambda: run_sql(pair.src_app, "SHOW default_transaction_read_only")[0][0] == "off", 30)
        run_sql(pair.src_app, "INSERT INTO public.events (kind) VALUES ('writable again')")


@test
def no_owner_and_no_privileges_give_every_object_to_the_target_role():
    with LeastPair(2) as pair:
        # Only what these options leave to fix: no role is created on the target.
        rc, items = run_check(pair, "--no-owner", "--no-privileges")
        check(items["roles"]["status"] == "PASSED" and "--no-owner" in items["roles"]["reason"], f"{items['roles']}")
        check(items["grant_roles"]["status"] == "PASSED", f"{items['grant_roles']}")
        apply_fixes(pair, items)
        rc, items = run_check(pair, "--no-owner", "--no-privileges")
        check(not failed(items), f"FAILED after the fixes: {failed(items)}")
        check(pair.dst.value("SELECT count(*) FROM pg_roles WHERE rolname IN ('app_owner', 'app_reader')") == 0,
              "the fixes created the source's roles on the target")
        proc, status, log_path = start_migrate(pair, "noowner", "--no-owner", "--no-privileges", "--mode", "full")
        rc = proc.wait(300)
        check(rc == 0, f"migrate --no-owner exited {rc}: {tail_file(log_path)}")
        check_equal(pair.src, pair.target_view(), TABLES)
        owners = pair.dst_app("SELECT DISTINCT relowner::regrole::text FROM pg_class c JOIN pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE n.nspname IN ('app', 'public') AND NOT EXISTS "
                              "(SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')")  # extensions
        check(owners == [("mig_dst",)], f"owners on the target: {owners}")
        summary = json.dumps(read_status(status).get("copy") or {})
        check("mig_dst (--no-owner)" in summary and "--no-privileges" in summary, f"summary: {summary}")


if __name__ == "__main__":
    main("leastpriv_test")
