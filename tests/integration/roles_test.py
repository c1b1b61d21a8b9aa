#!/usr/bin/python3
"""The source's roles on the target (issue 15): attributes, password verifiers (SCRAM and md5),
memberships and settings copied, so every role logs in to the target with its source password;
a role the target already has is checked, never changed; a source that hides pg_authid (a
managed service) and a target role that is not a superuser get a report with the statements
to run; migrate --roles creates the schema's owners before the schema.

Usage: roles_test.py [test_name ...]
"""
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import APPLIER, AppPair, Migrate, check, main, password_logins, run_sql, test  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_ROLES_TEST_PORT", "26900"))

SOURCE_ROLES = """
CREATE ROLE app_owner LOGIN CREATEDB CONNECTION LIMIT 5 PASSWORD 'owner secret';
CREATE ROLE reader NOLOGIN;
CREATE ROLE app_user LOGIN PASSWORD 'user secret' IN ROLE reader;
GRANT reader TO app_owner WITH ADMIN OPTION;
GRANT pg_read_all_data TO reader;
ALTER ROLE app_user SET search_path = app, "My Schema", public;
ALTER ROLE app_user SET statement_timeout = '5s';
ALTER ROLE app_user IN DATABASE postgres SET work_mem = '8MB';
CREATE ROLE "Mixed Case" LOGIN PASSWORD 'it''s "quoted"' VALID UNTIL '2030-01-01 00:00:00+00';
SET password_encryption = 'md5';
CREATE ROLE legacy LOGIN PASSWORD 'legacy pw';
RESET password_encryption;
CREATE ROLE repl LOGIN REPLICATION BYPASSRLS PASSWORD 'repl pw';
"""
PASSWORDS = {"app_owner": "owner secret", "app_user": "user secret", "Mixed Case": "it's \"quoted\"",
             "legacy": "legacy pw", "repl": "repl pw"}
ATTRIBUTES = ("SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
              "rolbypassrls, rolconnlimit, rolvaliduntil FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1")
MEMBERSHIPS = ("SELECT r.rolname, m.rolname, am.admin_option FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid "
               "JOIN pg_roles m ON m.oid = am.member WHERE m.rolname = ANY(%s) ORDER BY 1, 2")


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_roles{index}", BASE_PORT + 2 * index)



def run_roles(source, target, *extra):
    out = subprocess.run([APPLIER, "roles", "--source", source, "--target", target, "--json", *extra],
                         capture_output=True, text=True, timeout=120)
    check(out.returncode in (0, 1), f"roles failed ({out.returncode}): {out.stderr}")
    return out.returncode, json.loads(out.stdout), out.stdout + out.stderr


def notes(report, kind):
    return {n["role"]: n for n in report["notes"] if n["kind"] == kind}


def no_secret_in(text, verifiers):
    for secret in list(PASSWORDS.values()) + verifiers:
        check(secret not in text, "the report shows a password or a verifier")


@test
def roles_keep_their_attributes_passwords_memberships_and_settings():
    """Five roles created with their attributes and verifiers (SCRAM and md5, a mixed-case name,
    a VALID UNTIL), memberships with admin option and in a predefined role, settings for every
    database and for the migrated one; each logs in to the target with its source password.
    `reader`, which the target has with other attributes, is reported and left alone; a second
    run creates nothing."""
    with Pair(0) as pair:
        pair.src.sql(SOURCE_ROLES)
        pair.dst.sql("CREATE ROLE reader LOGIN")
        names = list(PASSWORDS)
        verifiers = [r[0] for r in pair.src.sql("SELECT rolpassword FROM pg_authid WHERE rolname = ANY(%s)", (names,))]
        rc, dry, text = run_roles(pair.src.conninfo, pair.target, "--dry-run")
        check(dry["created"] == 5 and not pair.dst.sql("SELECT 1 FROM pg_roles WHERE rolname = 'app_owner'"),
              f"a dry run created roles, or would create {dry['created']} not 5")
        rc, report, text = run_roles(pair.src.conninfo, pair.target)
        check(rc == 1 and report["created"] == 5 and report["verifiersReadable"], f"report: {report}")
        differs = notes(report, "differs")
        check("reader" in differs and differs["reader"]["statement"] == 'ALTER ROLE "reader" NOLOGIN;',
              f"the existing role's difference is not reported with its fix: {differs}")
        check(pair.dst.value("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'reader'") is True,
              "an existing role was changed")
        no_secret_in(text, verifiers)
        check(pair.src.sql(ATTRIBUTES, (names,)) == pair.dst.sql(ATTRIBUTES, (names,)), "attributes differ")
        verify = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s) ORDER BY 1"
        check(pair.src.sql(verify, (names,)) == pair.dst.sql(verify, (names,)), "password verifiers differ")
        members = names + ["reader"]
        check(pair.src.sql(MEMBERSHIPS, (members,)) == pair.dst.sql(MEMBERSHIPS, (members,)),
              f"memberships differ: {pair.dst.sql(MEMBERSHIPS, (members,))}")
        settings = ("SELECT coalesce(d.datname, '*'), s.setconfig FROM pg_db_role_setting s LEFT JOIN pg_database d "
                    "ON d.oid = s.setdatabase WHERE s.setrole = 'app_user'::regrole ORDER BY 1")
        got = pair.dst.sql(settings)
        want = [("*", ['search_path=app, "My Schema", public', "statement_timeout=5s"]), ("app", ["work_mem=8MB"])]
        check(got == want, f"settings on the target: {got}")
        password_logins(pair.dst)
        for role, password in PASSWORDS.items():
            c = psycopg2.connect(host="127.0.0.1", port=pair.dst.port, dbname="app", user=role, password=password)
            c.close()
        try:
            psycopg2.connect(host="127.0.0.1", port=pair.dst.port, dbname="app", user="app_user", password="wrong").close()
            check(False, "a wrong password was accepted: the test proves nothing")
        except psycopg2.OperationalError:
            pass
        rc, again, _ = run_roles(pair.src.conninfo, pair.target)
        check(again["created"] == 0 and again["existing"] >= 6, f"a second run: {again}")


@test
def a_source_that_hides_pg_authid_and_a_target_that_is_not_superuser_get_the_statements():
    """A managed-style source (the migrating role has CREATEROLE, not pg_authid) and a managed-style
    target (not a superuser): roles are created without passwords and without superuser-only
    attributes, and the report lists each with the statement to run."""
    with Pair(1) as pair:
        pair.src.sql("CREATE ROLE admin LOGIN CREATEROLE; GRANT pg_read_all_settings TO admin; "
                     "CREATE ROLE web LOGIN PASSWORD 'web pw'; CREATE ROLE ops SUPERUSER NOLOGIN; CREATE ROLE batch NOLOGIN")
        pair.dst.sql("CREATE ROLE tadmin LOGIN CREATEROLE")
        source = f"host=127.0.0.1 port={pair.src.port} user=admin dbname=postgres"
        target = f"host=127.0.0.1 port={pair.dst.port} user=tadmin dbname=app"
        rc, report, text = run_roles(source, target)
        check(rc == 1 and not report["verifiersReadable"], f"report: {report}")
        missing = notes(report, "no_password")
        check(set(missing) == {"admin", "web"} and missing["web"]["statement"] == "ALTER ROLE \"web\" PASSWORD '<its password>';",
              f"password report: {missing}")
        refused = notes(report, "refused")
        check("ops" in refused and refused["ops"]["statement"] == 'ALTER ROLE "ops" SUPERUSER;', f"refused: {refused}")
        got = pair.dst.sql("SELECT rolname, rolsuper, rolcanlogin, rolpassword IS NULL FROM pg_authid "
                           "WHERE rolname IN ('web', 'ops', 'batch') ORDER BY 1")
        check(got == [("batch", False, False, True), ("ops", False, False, True), ("web", False, True, True)],
              f"roles on the target: {got}")
        check("web pw" not in text, "the report shows a password")


GRANTS = ("SELECT 'parameter', parname::text, grantee::regrole::text, privilege_type, is_grantable "
          "FROM pg_parameter_acl, aclexplode(paracl) WHERE grantee <> 10 UNION ALL "
          "SELECT 'tablespace', spcname::text, CASE grantee WHEN 0 THEN 'PUBLIC' ELSE grantee::regrole::text END, "
          "privilege_type, is_grantable FROM pg_tablespace t, aclexplode(spcacl) WHERE grantee <> spcowner "
          "ORDER BY 1, 2, 3, 4")


def tablespace_dir():
    """A directory the servers' user can make a tablespace in."""
    d = tempfile.mkdtemp(prefix="dts-ts-")
    if os.geteuid() == 0:
        pw = pwd.getpwnam(os.environ.get("DTS_PG_USER", "dts"))
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


@test
def grants_on_parameters_and_tablespaces_come_with_the_roles():
    """GRANT SET / ALTER SYSTEM ON PARAMETER (a custom parameter among them, with grant option)
    and GRANT CREATE ON TABLESPACE (to a role and to PUBLIC): what pg_dumpall --globals-only
    brings and pg_dump does not. A tablespace the target lacks is reported with the statement;
    a second run grants nothing."""
    dirs = [tablespace_dir() for _ in range(3)]
    try:
        with Pair(3) as pair:
            pair.src.sql(f"CREATE TABLESPACE fast LOCATION '{dirs[0]}'")  # not in a transaction block
            pair.src.sql(f"CREATE TABLESPACE archive LOCATION '{dirs[1]}'")
            pair.src.sql("CREATE ROLE app LOGIN; CREATE ROLE \"Ops Team\"; "
                         "GRANT SET ON PARAMETER work_mem TO app; "
                         "GRANT SET, ALTER SYSTEM ON PARAMETER log_min_duration_statement TO \"Ops Team\" WITH GRANT OPTION; "
                         "GRANT SET ON PARAMETER \"myext.mode\" TO app; "
                         "GRANT CREATE ON TABLESPACE fast TO app, PUBLIC; GRANT CREATE ON TABLESPACE archive TO \"Ops Team\"")
            pair.dst.sql(f"CREATE TABLESPACE fast LOCATION '{dirs[2]}'")
            rc, dry, _ = run_roles(pair.src.conninfo, pair.target, "--dry-run")
            check(dry["grants"] == 6 and not pair.dst.sql(GRANTS), f"a dry run granted, or would grant {dry['grants']} not 6")
            rc, report, text = run_roles(pair.src.conninfo, pair.target)
            check(report["grants"] == 6, f"grants made: {report['grants']}: {text}")
            refused = [n for n in report["notes"] if n["kind"] == "refused"]
            check(len(refused) == 1 and "archive is not on the target" in refused[0]["detail"] and
                  refused[0]["statement"] == 'GRANT CREATE ON TABLESPACE "archive" TO "Ops Team";', f"refused: {refused}")
            src = [g for g in pair.src.sql(GRANTS) if g[1] != "archive"]
            check(pair.dst.sql(GRANTS) == src, f"grants on the target: {pair.dst.sql(GRANTS)}, on the source {src}")
            rc, again, _ = run_roles(pair.src.conninfo, pair.target)
            check(again["grants"] == 0, f"a second run granted {again['grants']}")
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


@test
def migrate_with_roles_keeps_the_source_owners():
    """migrate --roles on a target without the schema's owners: the roles come first, so the
    ownership check passes and every object keeps its source owner."""
    with Pair(2) as pair:
        pair.src.sql(SOURCE_ROLES + "CREATE TABLE owned (id int PRIMARY KEY, v text); ALTER TABLE owned OWNER TO app_owner; "
                     "INSERT INTO owned VALUES (1, 'a'); GRANT SELECT ON owned TO reader")
        m = Migrate(pair, "roles", "--roles", "--mode", "full").start()
        rc = m.proc.wait(300)
        check(rc == 0, f"migrate --roles failed: {m.log()[-1500:]}")
        owner = run_sql(pair.target, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'")
        check(owner == [("app_owner",)], f"owner on the target: {owner}")
        check(run_sql(pair.target, "SELECT has_table_privilege('app_user', 'owned', 'SELECT')") == [(True,)],
              "the grant to reader does not reach its member app_user")
        check("roles: 6 created" in m.log(), f"migrate did not report the roles: {m.log()[-1500:]}")


if __name__ == "__main__":
    main("roles_test")
