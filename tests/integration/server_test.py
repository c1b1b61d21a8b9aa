#!/usr/bin/python3
"""A whole server as one job (issue 15): migrate --all-databases copies the roles, creates every
database on the target as the source has it (owner, encoding, settings, privileges), migrates
each with its own slot while pgbench writes in two of them, survives a kill of the job, cuts all
of them over in one read-only window (complete --all-databases), and verify --all-databases finds
every database equal. Roles log in to their databases with their source passwords.

Usage: server_test.py [test_name ...]
"""
import json
import os
import signal
import subprocess
import sys
import threading

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (APPLIER, AppPair, Migrate, check, check_equal, main, password_logins, run_sql,  # noqa: E402
                     test, wait_for)

BASE_PORT = int(os.environ.get("DTS_SERVER_TEST_PORT", "26950"))


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_server{index}", BASE_PORT + 2 * index)


def on(server_or_pair_conninfo, db):
    return f"{server_or_pair_conninfo.rsplit('dbname=', 1)[0]}dbname='{db}'"


class DbView:
    """One database of a server, read like a Server (value()), for check_equal."""

    def __init__(self, conninfo):
        self.conninfo = conninfo

    def value(self, query, args=None):
        rows = run_sql(self.conninfo, query, args)
        return rows[0][0] if rows else None


SOURCE = """
CREATE ROLE shop_owner LOGIN PASSWORD 'shop pw';
CREATE ROLE analyst LOGIN PASSWORD 'analyst pw';
CREATE ROLE clerk LOGIN PASSWORD 'clerk pw' IN ROLE analyst;
CREATE ROLE staff NOLOGIN;
CREATE ROLE "Auditor" LOGIN PASSWORD 'audit pw' CONNECTION LIMIT 3 IN ROLE staff;
CREATE ROLE batch LOGIN PASSWORD 'batch pw' VALID UNTIL '2031-01-01 00:00:00+00';
GRANT staff TO shop_owner WITH ADMIN OPTION;
ALTER ROLE clerk SET statement_timeout = '30s';
ALTER ROLE batch SET search_path = shop, public;
CREATE DATABASE shop OWNER shop_owner;
CREATE DATABASE analytics;
CREATE DATABASE "Mixed DB" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
ALTER DATABASE shop SET work_mem = '6MB';
ALTER ROLE batch IN DATABASE shop SET work_mem = '7MB';
REVOKE CONNECT ON DATABASE analytics FROM PUBLIC;
GRANT CONNECT ON DATABASE analytics TO analyst;
"""
MIXED = """
CREATE EXTENSION dts_decoding;
CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."Orders" ("Id" int PRIMARY KEY, "Note" text);
INSERT INTO "Sales"."Orders" SELECT g, 'order ' || g FROM generate_series(1, 3000) g;
CREATE SEQUENCE "Sales"."Seq" START 50;
SELECT nextval('"Sales"."Seq"');
"""
# A large object of 3 MB (copied in pieces), one owned by a role with a grant, one to remove.
LARGE_OBJECTS = """
SELECT lo_from_bytea(1001, convert_to(string_agg(md5(g::text), ''), 'UTF8')) FROM generate_series(1, 100000) g;
SELECT lo_from_bytea(1002, 'to be removed');
SELECT lo_from_bytea(1003, 'owned');
ALTER LARGE OBJECT 1003 OWNER TO shop_owner;
GRANT SELECT ON LARGE OBJECT 1003 TO analyst;
"""
PGBENCH_TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def pgbench_db(pair, db, *args):
    out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(pair.src.port), "-U", "postgres", *args, db],
                         capture_output=True, text=True)
    check(out.returncode == 0, f"pgbench {args} in {db} failed: {out.stderr[-500:]}")



@test
def a_whole_server_moves_in_one_job_with_one_cutover():
    with Pair(0) as pair:
        for statement in SOURCE.strip().split(";\n"):
            pair.src.sql(statement)
        for db in ("shop", "analytics"):
            run_sql(on(pair.src.conninfo, db), "CREATE EXTENSION dts_decoding")
            pgbench_db(pair, db, "-i", "-s", "2", "-q")
        run_sql(on(pair.src.conninfo, "shop"), "ALTER TABLE pgbench_accounts OWNER TO shop_owner")
        run_sql(on(pair.src.conninfo, "shop"), LARGE_OBJECTS)
        run_sql(on(pair.src.conninfo, "Mixed DB"), MIXED)
        m = Migrate(pair, "server", "--all-databases", "--split-larger-than", "1MB")
        stop = threading.Event()
        writers = [threading.Thread(target=lambda db=db: [pgbench_db(pair, db, "-T", "2", "-c", "2") for _ in range(60)
                                                           if not stop.is_set()]) for db in ("shop", "analytics")]
        for w in writers:
            w.start()
        try:
            m.start()
            wait_for("the job to copy", lambda: m.running() and m.status_json().get("phase") in
                     ("COPYING", "BUILDING_INDEXES", "CATCHING_UP", "STREAMING"), 120)
            os.killpg(m.proc.pid, signal.SIGKILL)  # the job's process; its databases' migrates follow it down
            m.proc.wait(30)
            wait_for("the databases' migrates to stop", lambda: not any(
                r[0] for r in pair.src.sql("SELECT count(*) FILTER (WHERE active) FROM pg_replication_slots")), 60)
            m.start()
            m.wait_phase("STREAMING", 300)
            st = m.status_json()
            names = sorted(d["database"] for d in st["databases"])
            check(names == ["Mixed DB", "analytics", "postgres", "shop"], f"databases in the status: {names}")
        finally:
            stop.set()
            for w in writers:
                w.join()
        # The stream does not carry large objects: changed, removed and new ones after the copy.
        run_sql(on(pair.src.conninfo, "shop"), "SELECT lo_put(1001, 10, 'changed'); SELECT lo_unlink(1002); "
                                               "SELECT lo_from_bytea(1004, 'new one')")
        out = subprocess.run([APPLIER, "complete", "--source", pair.src.conninfo, "--target", pair.target,
                              "--all-databases", "--verify"], capture_output=True, text=True, timeout=600)
        check(out.returncode == 0 and "(4 databases)" in out.stdout,
              f"complete failed ({out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")
        check(m.proc.wait(120) == 0, f"the job did not end after the cutover: {m.log()[-1500:]}")
        rows = 0
        for db in ("shop", "analytics"):
            rows += check_equal(DbView(on(pair.src.conninfo, db)), DbView(on(pair.target, db)), PGBENCH_TABLES)
        rows += check_equal(DbView(on(pair.src.conninfo, "Mixed DB")), DbView(on(pair.target, "Mixed DB")),
                            ['"Sales"."Orders"'])
        objects = ("SELECT oid, pg_get_userbyid(lomowner), lomacl::text, md5(lo_get(oid)) FROM pg_largeobject_metadata "
                   "ORDER BY oid")
        los = run_sql(on(pair.target, "shop"), objects)
        check(run_sql(on(pair.src.conninfo, "shop"), objects) == los and [r[0] for r in los] == [1001, 1003, 1004],
              f"large objects on the target: {[r[:3] for r in los]}")
        check("3 large objects brought up to date" in out.stdout, f"complete's window: {out.stdout[-800:]}")
        seq = run_sql(on(pair.target, "Mixed DB"), 'SELECT last_value FROM "Sales"."Seq"')
        check(seq == [(50,)], f"the sequence on the target: {seq}")
        facts = ("SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, "
                 "(SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid AND setrole = 0), "
                 "has_database_privilege('analyst', d.oid, 'CONNECT'), has_database_privilege('public', d.oid, 'CONNECT') "
                 "FROM pg_database d WHERE datname IN ('shop', 'analytics', 'Mixed DB') ORDER BY 1")
        check(pair.src.sql(facts) == pair.dst.sql(facts), f"databases differ: {pair.dst.sql(facts)}")
        verify = subprocess.run([APPLIER, "verify", "--source", pair.src.conninfo, "--target", pair.target,
                                 "--all-databases", "--json", "--slot", "dts_migrate"],
                                capture_output=True, text=True, timeout=300)
        check(verify.returncode == 0, f"verify --all-databases: {verify.stdout[-1500:]} {verify.stderr[-800:]}")
        report = json.loads(verify.stdout)
        check(len(report["databases"]) == 4, f"verify reported {len(report['databases'])} databases")
        password_logins(pair.dst)
        for role, password, db in (("shop_owner", "shop pw", "shop"), ("analyst", "analyst pw", "analytics"),
                                   ("clerk", "clerk pw", "analytics"), ("Auditor", "audit pw", "shop"),
                                   ("batch", "batch pw", "Mixed DB")):
            psycopg2.connect(host="127.0.0.1", port=pair.dst.port, dbname=db, user=role, password=password).close()
        roles = ("SELECT r.rolname, r.rolcanlogin, r.rolconnlimit, r.rolvaliduntil, s.setconfig, "
                 "array(SELECT g.rolname || ':' || m.admin_option FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                 "WHERE m.member = r.oid ORDER BY 1) FROM pg_roles r LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid "
                 "AND s.setdatabase = 0 WHERE r.rolname IN ('shop_owner', 'analyst', 'clerk', 'staff', 'Auditor', 'batch') "
                 "ORDER BY 1")
        check(pair.src.sql(roles) == pair.dst.sql(roles), f"roles differ: {pair.dst.sql(roles)}")
        in_db = ("SELECT r.rolname, d.datname, s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                 "JOIN pg_database d ON d.oid = s.setdatabase ORDER BY 1, 2")
        check(pair.dst.sql(in_db) == [("batch", "shop", ["work_mem=7MB"])], f"per-database role settings: {pair.dst.sql(in_db)}")
        slots = pair.src.value("SELECT count(*) FROM pg_replication_slots")
        check(slots == 0, f"{slots} slots left on the source")
        pair.src.sql("ALTER SYSTEM RESET default_transaction_read_only")
        pair.src.sql("SELECT pg_reload_conf()")
        print(f"  figure: 4 databases, {rows} rows equal after a kill and one cutover")


@test
def databases_the_source_lacks_are_refused_by_name():
    with Pair(1) as pair:
        out = subprocess.run([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                              "--databases", "postgres,nosuch,other"], capture_output=True, text=True, timeout=60)
        check(out.returncode == 2 and "nosuch, other" in out.stderr,
              f"exit {out.returncode}: {out.stderr[-800:]}")
        check(pair.dst.value("SELECT count(*) FROM pg_roles WHERE rolname !~ '^pg_'") == 1, "something was created")


@test
def cancel_over_several_databases_removes_every_slot_origin_and_state():
    """migrate --databases a,b streaming, then cancel --databases a,b: the job stops, every
    database's slot is gone from the source, its origin and dts.migration row from the target."""
    with Pair(3) as pair:
        for db in ("a", "b"):
            pair.src.sql(f"CREATE DATABASE {db}")
            run_sql(on(pair.src.conninfo, db), "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        m = Migrate(pair, "cancel", "--databases", "a,b").start()
        m.wait_phase("STREAMING", 180)
        check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 2, "not one slot per database")
        out = subprocess.run([APPLIER, "cancel", "--source", pair.src.conninfo, "--target", pair.target,
                              "--databases", "a,b"], capture_output=True, text=True, timeout=300)
        check(out.returncode == 0, f"cancel --databases: {out.returncode} {out.stderr[-1200:]}")
        wait_for("the job to end", lambda: m.proc.poll() is not None, 60)
        check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "slots left on the source")
        for db in ("a", "b"):
            left = run_sql(on(pair.target, db), "SELECT (SELECT count(*) FROM pg_replication_origin), "
                                                "to_regclass('dts.migration') IS NOT NULL AND "
                                                "(SELECT count(*) FROM dts.migration) > 0")
            check(left == [(0, False)], f"{db}: origin or state left on the target: {left}")


@test
def check_reports_the_runbooks_groups():
    """check's server-wide items, each in its group: roles the target lacks and one it cannot
    take, a login role the target's pg_hba.conf has no line for (tried: a warning, since the
    application's logins, not the migration, would fail), the databases of each side, large objects with their window cost,
    an event trigger and a foreign server."""
    with Pair(2) as pair:
        pair.src.sql("CREATE ROLE web LOGIN PASSWORD 'web pw'")
        pair.src.sql("CREATE ROLE ops SUPERUSER")
        pair.src.sql("CREATE DATABASE extra")
        pair.src.sql("SELECT lo_from_bytea(0, 'abc')")
        pair.src.sql("CREATE FUNCTION noop() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$")
        pair.src.sql("CREATE EVENT TRIGGER audit ON ddl_command_end EXECUTE FUNCTION noop()")
        pair.src.sql("CREATE EXTENSION postgres_fdw")
        pair.src.sql("CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'example.invalid')")
        data = pair.dst.value("SHOW data_directory")
        pair.dst.sql("COPY (SELECT unnest(ARRAY['local all all trust', 'host all postgres 127.0.0.1/32 trust', "
                     "'host replication all 127.0.0.1/32 trust', 'host all admin 127.0.0.1/32 trust'])) TO %s",
                     (os.path.join(data, "pg_hba.conf"),))
        pair.dst.sql("SELECT pg_reload_conf()")
        out = subprocess.run([APPLIER, "check", "--source", pair.src.conninfo, "--target", pair.target, "--json"],
                             capture_output=True, text=True, timeout=120)
        items = {i["name"]: i for i in json.loads(out.stdout)["items"]}
        expect = {"users": ("WARNING", "users", "ops, web"), "hba": ("WARNING", "hba", "web"),
                  "databases": ("PASSED", "databases", "extra"), "large_objects": ("PASSED", "misc", "1 large objects"),
                  "event_triggers": ("WARNING", "misc", "audit"), "foreign_servers": ("WARNING", "misc", "elsewhere"),
                  "replica_identity": ("PASSED", "replica identity", "")}
        for name, (status, group, words) in expect.items():
            i = items.get(name)
            check(i is not None and i["status"] == status and i["group"] == group and words in i["reason"],
                  f"check item {name}: {i}")
        check(out.returncode == 1, f"check exited {out.returncode} with warnings and no FAILED item")
        text = subprocess.run([APPLIER, "check", "--source", pair.src.conninfo, "--target", pair.target],
                              capture_output=True, text=True, timeout=120).stdout
        groups = [line for line in text.splitlines() if line.startswith("[")]
        check(groups == ["[source]", "[users]", "[databases]", "[hba]", "[replica identity]", "[misc]"],
              f"the table's groups: {groups}")


if __name__ == "__main__":
    main("server_test")
