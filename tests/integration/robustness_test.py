#!/usr/bin/python3
"""Failures that are not the project's own errors, and temporary files (issue 11):

- defect 8: exceptions that ended in std::terminate (an abort, exit status -6 / 134): a
  library's exception, filesystem errors, unusable paths. Every one must end in a clear message
  and the documented exit code;
- defect 9: migrate's schema dumps went to /tmp/dts-migrate-<pid>, an existing directory or a
  planted link accepted. They now go to a new private directory (mkdtemp, 0700) that nobody
  can predict, removed at the end, on errors too.

Usage: robustness_test.py [test_name ...]
"""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import APPLIER, REPO, AppPair, Failure, check, main, tail_file, test, wait_for  # noqa: E402

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


class DirWatch:
    """Everything that appears in a directory while a process runs, with its mode."""

    def __init__(self, base):
        self.base, self.seen = base, {}

    def poll(self):
        for name in os.listdir(self.base):
            try:
                st = os.lstat(os.path.join(self.base, name))
            except OSError:
                continue
            self.seen.setdefault(name, st.st_mode)
        return self.seen


def start_migrate(pair, base, tag, *extra):
    status = os.path.join(base, "..", f"{os.path.basename(base)}-{tag}.json")
    log = os.path.join(base, "..", f"{os.path.basename(base)}-{tag}.log")
    with open(log, "w") as f:
        p = subprocess.Popen([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                              "--status-file", status, *extra], env=dict(os.environ, TMPDIR=base), stdout=f, stderr=f)
    return p, os.path.abspath(status), os.path.abspath(log)


def named_dir(log_path):
    m = re.search(r"private directory (\S+)", tail_file(log_path, 10000))
    return m.group(1) if m else None


@test
def migrate_dumps_into_a_new_private_directory_nobody_can_predict_and_removes_it():
    with Pair(1) as pair:
        pair.src.sql(SCHEMA)
        parent = tempfile.mkdtemp(prefix="dts-it-robust-tmp-")
        base = os.path.join(parent, "tmp")
        os.mkdir(base)
        os.chmod(base, 0o1777)  # like /tmp: anyone may create entries in it
        p = None
        try:
            p, status, log = start_migrate(pair, base, "ok", "--jobs", "2")
            watch = DirWatch(base)

            def streaming():
                watch.poll()
                if p.poll() is not None:
                    raise Failure(f"migrate exited with {p.returncode}: {tail_file(log)}")
                try:
                    with open(status) as f:
                        return json.load(f)["phase"] in ("STREAMING", "CATCHING_UP")
                except (OSError, ValueError):
                    return False
            wait_for("the migration to stream", streaming, 180, interval=0.005)
            used = named_dir(log)
            check(used and os.path.dirname(used) == base, f"the log names no directory under TMPDIR: {used}")
            name = os.path.basename(used)
            check(name in watch.seen, f"{name} was never seen in {base}: {watch.seen}")
            mode = watch.seen[name]
            check(stat.S_ISDIR(mode) and not stat.S_ISLNK(mode), f"{name} is not a plain directory: {oct(mode)}")
            check(stat.S_IMODE(mode) == 0o700, f"{name} has mode {oct(stat.S_IMODE(mode))}, not 0700")
            check(re.fullmatch(r"dts-migrate-[A-Za-z0-9]{6}", name) and name != f"dts-migrate-{p.pid}",
                  f"{name}: a name derived from the pid can be planted in advance")
            check(os.listdir(base) == [], f"left in TMPDIR after the copy: {os.listdir(base)}")
            p.terminate()
            p.wait(60)

            # A copy that fails (pre-data meets the tables already there) removes it too.
            p, status, log = start_migrate(pair, base, "failing", "--slot", "second", "--skip-check", "target_empty")
            rc = p.wait(180)
            check(rc == 1, f"the failing migrate exited {rc}: {tail_file(log)}")
            check("pg_restore of the schema" in tail_file(log, 100), f"it failed elsewhere: {tail_file(log)}")
            used = named_dir(log)
            check(used and not os.path.exists(used), f"the failed copy left {used}")
            check(os.listdir(base) == [], f"left in TMPDIR after a failed copy: {os.listdir(base)}")
            pair.src.sql("SELECT pg_drop_replication_slot('second')")

            # A TMPDIR that cannot hold a directory: a clear error, before any slot is made.
            a_file = os.path.join(parent, "a-file")
            open(a_file, "w").close()
            before = pair.src.value("SELECT count(*) FROM pg_replication_slots")
            out = applier("migrate", "--source", pair.src.conninfo, "--target", pair.target, "--slot", "third",
                          "--skip-check", "target_empty", env={"TMPDIR": a_file})
            expect_failure(out, 2, "private temporary directory", a_file, "TMPDIR")
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == before, "a slot was made anyway")
        finally:
            if p and p.poll() is None:
                p.kill()
                p.wait()
            shutil.rmtree(parent, ignore_errors=True)


@test
def no_code_path_builds_a_predictable_temporary_path():
    """Temporary files and directories come from mkstemp / mkdtemp only: no fixed or pid-derived
    name under /tmp (which another user can create first, as a link), in any source file."""
    forbidden = [
        (re.compile(r"\btemp_directory_path\b"), "std::filesystem::temp_directory_path (names built on it)"),
        (re.compile(r"\b(tmpnam|tempnam|mktemp)\s*\("), "tmpnam / tempnam / mktemp"),
        (re.compile(r"\"/(var/)?tmp/(?![^\"]*XXXXXX)[^\"]*\""), "a fixed path under /tmp"),
        (re.compile(r"getpid\(\).*(/|dts-)|(/|dts-).*getpid\(\)"), "a path derived from the pid"),
    ]
    found, scanned = [], 0
    for root, _, files in os.walk(os.path.join(REPO, "applier")):
        for name in files:
            if not name.endswith((".cpp", ".hpp", ".h")):
                continue
            path = os.path.join(root, name)
            scanned += 1
            with open(path, errors="replace") as f:
                for no, line in enumerate(f, 1):
                    code = line.split("//")[0]
                    for rx, what in forbidden:
                        if rx.search(code):
                            found.append(f"{os.path.relpath(path, REPO)}:{no}: {what}: {line.strip()}")
    check(scanned > 20, f"only {scanned} files scanned")
    check(not found, "predictable temporary paths:\n" + "\n".join(found))


if __name__ == "__main__":
    main("robustness_test")
