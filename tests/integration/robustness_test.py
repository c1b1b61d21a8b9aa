#!/usr/bin/python3
"""Failures that are not the project's own errors (issue 11):

- defect 8: exceptions that ended in std::terminate (an abort, exit status -6 / 134): a
  library's exception, filesystem errors, unusable paths. Every one must end in a clear message
  and the documented exit code.

Usage: robustness_test.py [test_name ...]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import APPLIER, AppPair, Failure, check, main, test  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_ROBUSTNESS_TEST_PORT", "26120"))

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text);
INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100000) g;
CREATE TABLE notes (id serial PRIMARY KEY, msg text);
INSERT INTO notes (msg) SELECT 'note ' || g FROM generate_series(1, 1000) g;
"""


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_robust{index}", BASE_PORT + 2 * index)


def applier(*args, env=None, timeout=180):
    """Runs a command to its end; an abort (std::terminate) fails the test whatever it expected."""
    try:
        out = subprocess.run([APPLIER, *args], capture_output=True, text=True, timeout=timeout,
                             env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired as e:
        raise Failure(f"{args[0]} still running after {timeout}s, where it should have stopped: {e.stderr}")
    check(out.returncode not in (-6, 134) and "terminate called" not in out.stderr,
          f"{args[0]} aborted (exit {out.returncode}): {out.stderr[-800:]}")
    return out


def expect_failure(out, rc, *phrases):
    text = out.stdout + out.stderr
    check(out.returncode == rc, f"exit code {out.returncode}, documented {rc}: {text[-800:]}")
    for p in phrases:
        check(p in text, f"the message does not say {p!r}: {text[-800:]}")


def slots(pair):
    return pair.src.value("SELECT count(*) FROM pg_replication_slots")


@test
def exceptions_end_in_a_clear_message_and_the_documented_exit_code_never_an_abort():
    with Pair(0) as pair:
        pair.src.sql(SCHEMA)
        work = tempfile.mkdtemp(prefix="dts-it-robust-")
        try:
            a_file = os.path.join(work, "a-file")
            with open(a_file, "w") as f:
                f.write("not a directory\n")
            conn = ["--source", pair.src.conninfo, "--target", pair.target]

            # Status files where no file can be: refused before anything is created.
            # (They used to run without one, silently: a short timeout.)
            follow = ["follow", *conn, "--slot", "s1", "--create-slot"]
            out = applier(*follow, "--status-file", a_file + "/status.json", timeout=30)
            expect_failure(out, 2, a_file, "is not a directory")
            out = applier("migrate", *conn, "--status-file", os.path.join(work, "no-such-dir", "status.json"),
                          timeout=30)
            expect_failure(out, 2, "no-such-dir", "No such file or directory")
            out = applier(*follow, "--status-file", work, timeout=30)
            expect_failure(out, 2, "is a directory")
            check(slots(pair) == 0, "a refused command created a slot")
            check(pair.dst_app("SELECT to_regclass('dts.migration') IS NULL")[0][0], "a refused migrate wrote state")

            # serve's work directory where a file is.
            out = applier("serve", "--listen", f"127.0.0.1:{BASE_PORT + 15}", "--state", pair.target, "--work-dir",
                          a_file, timeout=60)
            expect_failure(out, 2, "--work-dir", a_file)

            # A library's exception in the middle of a command (libpqxx: a role that may not read
            # pg_settings) used to escape every handler and abort the process.
            pair.src.sql("CREATE ROLE weak LOGIN REPLICATION; REVOKE SELECT ON pg_catalog.pg_settings FROM PUBLIC")
            weak = f"host=127.0.0.1 port={pair.src.port} user=weak dbname=postgres"
            out = applier("check", "--source", weak, "--target", pair.target)
            expect_failure(out, 2, "check failed", "permission denied", "pg_settings")
            status = os.path.join(work, "migrate.json")
            out = applier("migrate", "--source", weak, "--target", pair.target, "--status-file", status)
            expect_failure(out, 1, "migrate failed", "permission denied", "pg_settings")
            with open(status) as f:
                doc = json.load(f)
            check(doc["phase"] == "FAILED" and "pg_settings" in (doc["error"] or ""), f"status file: {doc}")
            check(slots(pair) == 0, "the failed prechecks left a slot")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main("robustness_test")
