#!/usr/bin/python3
"""dts_applier check: each FAILED and WARNING item provoked on purpose and reported with its
fix; a clean pair passes with exit code 0; JSON output.

Usage: check_test.py [test_name ...]
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import APPLIER, AppPair, check, main, test  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_CHECK_TEST_PORT", "25580"))


def run_check(source, target, *extra):
    out = subprocess.run([APPLIER, "check", "--source", source, "--target", target, "--json", *extra],
                         capture_output=True, text=True, timeout=120)
    doc = json.loads(out.stdout)
    return out.returncode, {i["name"]: i for i in doc["items"]}, doc


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_check{index}", BASE_PORT + 2 * index)


@test
def a_ready_pair_passes():
    with Pair(0) as pair:
        pair.src.sql("ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'")
        pair.src.sql("SELECT pg_reload_conf()")
        pair.src.sql("CREATE EXTENSION dts_decoding")  # a ready source captures schema changes
        pair.src.sql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        rc, items, doc = run_check(pair.src.conninfo, pair.target)
        bad = {k: v for k, v in items.items() if v["status"] != "PASSED"}
        check(rc == 0 and doc["result"] == "PASSED" and not bad, f"rc {rc}, not passed: {bad}")
        check(len(items) >= 20, f"only {len(items)} items")


@test
def every_problem_is_reported_with_its_fix():
    with Pair(1) as pair:
        pair.src.sql("""
            CREATE ROLE alice; CREATE ROLE plain LOGIN;
            CREATE TABLE nokey_updated (a int, b text); INSERT INTO nokey_updated VALUES (1, 'x');
            CREATE TABLE nokey_inserts (a int);
            CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
            CREATE TABLE parent (id int PRIMARY KEY);
            CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
            CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
            CREATE TABLE owned (id int PRIMARY KEY); ALTER TABLE owned OWNER TO alice;
            CREATE TABLE "Users" (id int PRIMARY KEY); CREATE TABLE users (id int PRIMARY KEY);
            SELECT lo_create(0);
        """)
        pair.src.sql("ALTER SYSTEM SET wal_sender_timeout = 0")
        pair.src.sql("ALTER SYSTEM SET output_plugin_libraries = 'pgoutput'")
        pair.src.sql("SELECT pg_reload_conf()")
        pair.src.sql("UPDATE nokey_updated SET b = 'y'")
        pair.dst.sql("DROP DATABASE app")
        pair.dst.sql("CREATE DATABASE app ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        pair.dst_app("CREATE TABLE already_here (id int)")

        rc, items, doc = run_check(pair.src.conninfo, pair.target)
        check(rc == 2 and doc["result"] == "FAILED", f"rc {rc}")
        expect = {
            "replica_identity": ("FAILED", "nokey_updated", "REPLICA IDENTITY FULL"),
            "unlogged_tables": ("WARNING", "scratch", "SET LOGGED"),
            "large_objects": ("PASSED", "1 large objects", ""),  # copied, and again in the window
            "identity_columns": ("WARNING", "ident", "sequence"),
            "wal_sender_timeout": ("WARNING", "is 0", "wal_sender_timeout = '60s'"),
            "output_plugin": ("FAILED", "output_plugin_libraries", "output_plugin_libraries"),
            "target_empty": ("FAILED", "already_here", "empty database"),
            "encoding": ("FAILED", "LATIN1", "ENCODING 'UTF8'"),
            "collation": ("WARNING", "C.UTF-8", "LC_COLLATE"),
            "roles": ("FAILED", "alice", "pg_dumpall --roles-only"),
            "name_clash": ("WARNING", '"Users"', "quote these names"),
        }
        for name, (status, reason, fix) in expect.items():
            item = items[name]
            check(item["status"] == status, f"{name}: {item['status']}, expected {status}")
            check(reason in item["reason"], f"{name}: reason {item['reason']!r} lacks {reason!r}")
            check(fix in (item["fix"] or ""), f"{name}: fix {item['fix']!r} lacks {fix!r}")

        # A selection that leaves a referenced table out; an insert-only table without a key.
        rc, items, _ = run_check(pair.src.conninfo, pair.target, "--tables", "public.child,public.nokey_inserts")
        check(rc == 2, f"rc {rc} with a FAILED item")
        check(items["foreign_keys"]["status"] == "FAILED" and "child -> parent" in items["foreign_keys"]["reason"],
              f"foreign_keys: {items['foreign_keys']}")
        check(items["replica_identity"]["status"] == "WARNING" and "nokey_inserts" in items["replica_identity"]["reason"],
              f"replica_identity: {items['replica_identity']}")

        # A role that may not replicate.
        plain = pair.src.conninfo.replace("user=postgres", "user=plain")
        rc, items, _ = run_check(plain, pair.target)
        check(rc == 2, f"rc {rc} with a FAILED item")
        check(items["replication_privilege"]["status"] == "FAILED" and "REPLICATION" in items["replication_privilege"]["fix"],
              f"{items['replication_privilege']}")
        check(items["replication_connection"]["status"] == "FAILED", f"{items['replication_connection']}")
        check(items["read_privilege"]["status"] == "FAILED" and "nokey_updated" in items["read_privilege"]["reason"]
              and "GRANT SELECT" in items["read_privilege"]["fix"], f"{items['read_privilege']}")


@test
def an_unreachable_target_is_one_clear_item():
    with Pair(2) as pair:
        rc, items, _ = run_check(pair.src.conninfo, "host=127.0.0.1 port=1 user=postgres dbname=app connect_timeout=3")
        check(rc == 2 and items["target_reachable"]["status"] == "FAILED", f"{items.get('target_reachable')}")
        check("pg_hba.conf" in items["target_reachable"]["fix"], "fix")


if __name__ == "__main__":
    main("check_test")
