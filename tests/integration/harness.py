"""Shared pieces of the integration suites: throwaway servers, the applier as a process,
table comparison, polling with a deadline (never sleeping to synchronise), and a small test
runner that ends with "N passed, N failed".

Run with Debian's /usr/bin/python3 (it has python3-psycopg2).
"""
import difflib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import psycopg2  # noqa: F401 (also used by the suites through the harness)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(REPO, "scripts", "pg-cluster.sh")
APPLIER = os.environ.get("DTS_APPLIER", os.path.join(REPO, "build", "dts_applier"))


class Failure(Exception):
    pass


_scratch_dir = None


def scratch(name):
    """A path for a log, status file or script in this run's private directory (mkdtemp,
    0700): removed when every test passed, kept and named when one failed."""
    global _scratch_dir
    if _scratch_dir is None:
        _scratch_dir = tempfile.mkdtemp(prefix="dts-it-")
    return os.path.join(_scratch_dir, name)


class Skip(Exception):
    """Raised by a test that cannot run on this machine: reported as skipped, not passed."""


def check(cond, what):
    if not cond:
        raise Failure(what)


def wait_for(what, fn, timeout=60, interval=0.05):
    """Polls fn() until it returns a true value; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run_sql(conninfo, query, args=None):
    """One statement (or a script) in autocommit on a connection of its own; its rows, if any."""
    # Not `with connect()`: psycopg2 wraps that in a transaction block, even in autocommit.
    c = psycopg2.connect(conninfo)
    c.autocommit = True
    try:
        with c.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else None
    finally:
        c.close()


class Server:
    """A throwaway PostgreSQL server on loopback, started by scripts/pg-cluster.sh."""

    def __init__(self, name, port, *settings):
        self.name, self.port = name, port
        subprocess.run([CLUSTER, "destroy", name], capture_output=True)
        out = subprocess.run([CLUSTER, "start", name, str(port), *settings], capture_output=True, text=True)
        if out.returncode != 0:
            raise Failure(f"could not start server {name}: {out.stderr}")
        self.conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"

    def connect(self):
        c = psycopg2.connect(self.conninfo)
        c.autocommit = True
        return c

    def sql(self, query, args=None):
        return run_sql(self.conninfo, query, args)

    def value(self, query, args=None):
        rows = self.sql(query, args)
        return rows[0][0] if rows else None

    def lsn(self):
        return self.value("SELECT pg_current_wal_lsn()::text")

    def restart(self):
        subprocess.run([CLUSTER, "stop", self.name], check=True, capture_output=True)
        subprocess.run([CLUSTER, "start", self.name, str(self.port)], check=True, capture_output=True)

    def destroy(self):
        if os.environ.get("DTS_KEEP_SERVERS"):
            subprocess.run([CLUSTER, "stop", self.name], capture_output=True)
            return
        subprocess.run([CLUSTER, "destroy", self.name], capture_output=True)


class AppPair:
    """A source server and a target server with an empty database `app` to migrate into."""

    def __init__(self, prefix, port):
        self.src = Server(f"{prefix}_src", port)
        self.dst = Server(f"{prefix}_dst", port + 1)
        self.dst.sql("CREATE DATABASE app")
        self.target = f"host=127.0.0.1 port={port + 1} user=postgres dbname=app"

    def dst_app(self, query):
        return run_sql(self.target, query)

    def target_view(self):
        """The target database seen like a Server (value()), for check_equal."""
        pair = self

        class View:
            def value(self, query, args=None):
                rows = pair.dst_app(query)
                return rows[0][0] if rows else None
        return View()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.src.destroy()
        self.dst.destroy()


def command_lines():
    """Every process's command line at this moment (a process that ends meanwhile is skipped)."""
    import glob
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                yield f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue


def read_json(path):
    """A JSON file as written atomically by the applier (status files), or None if absent or torn."""
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class SlotPair:
    """A source and a target server of a suite (`prefix`, ports from `port`), with a slot maker."""

    def __init__(self, prefix, index, port, *settings):
        self.src = Server(f"{prefix}_src{index}", port, *settings)
        self.dst = Server(f"{prefix}_dst{index}", port + 1, *settings)

    def slot(self, name="it"):
        self.src.sql("SELECT pg_create_logical_replication_slot(%s, 'dts_decoding')", (name,))
        return name

    def origin_lsn(self, slot="it"):
        """Where the target's origin stands (in memory: what the next start resumes from)."""
        v = self.dst.value("SELECT remote_lsn::text FROM pg_replication_origin_status WHERE external_id = %s",
                           (f"dts_{slot}",))
        return lsn_value(v) if v else 0

    def close(self):
        self.src.destroy()
        self.dst.destroy()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def lsn_value(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class Applier:
    """dts_applier follow as a child process, with its status file and peak memory."""

    started = []  # every applier a test started, stopped when the test ends
    counter = 0

    def __init__(self, source, target, slot, *extra, status_file=None, log=None, env=None):
        Applier.counter += 1
        tag = f"{slot}-{os.getpid()}-{Applier.counter}"
        self.status_file = status_file or scratch(f"{tag}.json")
        self.log_path = log or scratch(f"{tag}.log")
        self.args = [APPLIER, "follow", "--source", source.conninfo, "--target", target.conninfo, "--slot", slot,
                     "--status-file", self.status_file, *extra]
        self.proc = None
        self.peak_rss_kb = 0
        self.env = env

    def start(self):
        if os.path.exists(self.status_file):
            os.unlink(self.status_file)
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log,
                                     env=None if self.env is None else {**os.environ, **self.env})
        Applier.started.append(self)
        threading.Thread(target=self._watch_memory, daemon=True).start()
        return self

    def _watch_memory(self):
        path = f"/proc/{self.proc.pid}/status"
        while self.proc.poll() is None:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_rss_kb = max(self.peak_rss_kb, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.05)

    def status(self):
        return read_json(self.status_file)

    def wait_applied(self, lsn_text, timeout=120):
        target = lsn_value(lsn_text)

        def done():
            if self.proc.poll() is not None:
                raise Failure(f"applier exited with {self.proc.returncode}: {self.tail()}")
            s = self.status()
            return s and (lsn_value(s["applied_lsn"]) >= target or
                          (lsn_value(s["received_lsn"]) >= target and s["lag_bytes"] == 0))
        wait_for(f"the applier to apply up to {lsn_text}", done, timeout)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise Failure("applier did not stop within 30 s of SIGTERM")
        return self.proc.returncode

    def wait_exit(self, timeout=60):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"applier still running after {timeout}s: {self.tail()}")

    def tail(self, n=15):
        return tail_file(self.log_path, n)


class Migrate:
    """dts_applier migrate in a process group of its own, its log kept for the test to read."""

    def __init__(self, pair, tag, *extra):
        self.log_path = scratch(f"migrate-{tag}.log")
        self.status = scratch(f"migrate-{tag}.json")
        for p in (self.log_path, self.status):
            if os.path.exists(p):
                os.unlink(p)
        self.args = [APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                     "--status-file", self.status, *extra]
        self.proc = None

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, start_new_session=True)
        Applier.started.append(self)  # stopped when the test ends, even a failed one
        return self

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def status_json(self):
        return read_json(self.status) or {}

    def running(self):
        check(self.proc.poll() is None, f"migrate exited with {self.proc.returncode}: {self.log()[-1500:]}")
        return True

    def wait_phase(self, phase, timeout=300):
        wait_for(phase, lambda: self.running() and self.status_json().get("phase") == phase, timeout)

    def wait_applied(self, lsn_text, timeout=300):
        end = lsn_value(lsn_text)
        wait_for("catch-up", lambda: self.running() and
                 lsn_value(self.status_json().get("applied_lsn", "0/0")) >= end, timeout)

    def stop(self):
        self.proc.terminate()
        return self.proc.wait(60)


def password_logins(server):
    """The server's pg_hba.conf asks every role but postgres for its password (md5: SCRAM
    verifiers answer it too)."""
    data = server.value("SHOW data_directory")
    server.sql("COPY (SELECT unnest(ARRAY['local all all trust', 'host all postgres 127.0.0.1/32 trust', "
               "'host replication all 127.0.0.1/32 trust', 'host all all 127.0.0.1/32 md5'])) TO %s",
               (os.path.join(data, "pg_hba.conf"),))
    server.sql("SELECT pg_reload_conf()")


def pgbench_args(server, *args, dbname="postgres"):
    return ["pgbench", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", *args, dbname]


def pgbench(server, *args, dbname="postgres"):
    """Runs pgbench to its end (initialising, or a timed run); a failure fails the test."""
    out = subprocess.run(pgbench_args(server, *args, dbname=dbname), capture_output=True, text=True)
    if out.returncode != 0:
        raise Failure(f"pgbench {' '.join(args)} failed: {out.stderr[-500:]}")
    return out


class Pgbench:
    """pgbench writing in the background, at a fixed rate, until stopped (or refused)."""

    def __init__(self, server, clients=2, rate=300, dbname="postgres"):
        self.server, self.clients, self.rate, self.proc, self.dbname = server, clients, rate, None, dbname
        self.start()

    def start(self):
        self.output = None
        self.proc = subprocess.Popen(pgbench_args(self.server, "-n", "-c", str(self.clients), "-T", "3600", "-R",
                                                  str(self.rate), dbname=self.dbname),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def ensure(self):
        """Clients end on errors (a restarted source): start it again."""
        if self.proc.poll() is not None:
            self.start()

    def stop(self):
        """Its output (refusals show there); stopping twice is harmless."""
        if self.output is None:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.output = self.proc.communicate(timeout=60)[0] or ""
        return self.output


def tail_file(path, n=20):
    """The last lines of a log, for failure messages ("" if there is none)."""
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def run_to(source, target, slot, lsn_text, *extra, timeout=120):
    """Runs follow --until-lsn and checks it ends well."""
    a = Applier(source, target, slot, "--until-lsn", lsn_text, *extra).start()
    rc = a.wait_exit(timeout)
    check(rc == 0, f"follow --until-lsn exited with {rc}: {a.tail()}")
    return a


def table_digest(server, table):
    return server.value(f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                        f"FROM {table} t")


def check_equal(source, target, tables):
    rows = 0
    for t in tables:
        a, b = table_digest(source, t), table_digest(target, t)
        check(a == b, f"{t} differs: source {a}, target {b}")
        rows += int(a.split(":")[0])
    return rows


def schema_of(conninfo):
    """The application's schema as pg_dump writes it, without what is the migration's own."""
    out = subprocess.run(["/usr/lib/postgresql/15/bin/pg_dump", "--schema-only", "--no-owner", "--no-privileges", "-N", "dts", "-N", "dts_decoding",
                          "-d", conninfo], capture_output=True, text=True, timeout=120)
    check(out.returncode == 0, f"pg_dump failed: {out.stderr}")
    lines = []
    for line in out.stdout.splitlines():
        if not line.strip() or line.startswith(("--", "SET ", "\\restrict", "\\unrestrict")) or "set_config" in line:
            continue
        if "dts_decoding" in line:
            continue
        lines.append(line)
    return lines


def check_same_schema(source_conninfo, target_conninfo):
    """Both schemas equal as pg_dump --schema-only writes them; returns the number of lines."""
    a, b = schema_of(source_conninfo), schema_of(target_conninfo)
    if a != b:
        diff = "\n".join(list(difflib.unified_diff(a, b, "source", "target", lineterm="", n=1))[:60])
        check(False, f"the schemas differ:\n{diff}")
    return len(a)


def create_on_both(source, target, ddl):
    for s in (source, target):
        s.sql(ddl)


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def main(name, epilogue=None):
    """Runs the tests (or those named on the command line); `epilogue` prints a suite's
    figures before the summary line, which stays last for scripts/test.sh."""
    only = sys.argv[1:]
    passed = failed = skipped = 0
    for fn in TESTS:
        if only and fn.__name__ not in only:
            continue
        t0 = time.monotonic()
        try:
            try:
                fn()
            finally:
                for a in Applier.started:
                    if a.proc.poll() is None:
                        a.proc.kill()
                        a.proc.wait()
                Applier.started.clear()
            passed += 1
            print(f"  ok   {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Skip as e:
            skipped += 1
            print(f"  skip {fn.__name__}: {e}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"  FAIL {fn.__name__}: {e}", flush=True)
            if not isinstance(e, Failure):
                traceback.print_exc()
    if epilogue:
        epilogue()
    if _scratch_dir is not None:
        if failed:
            print(f"{name}: logs kept in {_scratch_dir}")
        else:
            shutil.rmtree(_scratch_dir, ignore_errors=True)
    if skipped:
        print(f"{name}: {skipped} skipped")
    print(f"{name}: {passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


rng = random.Random(int(os.environ.get("DTS_TEST_SEED", "20261121")))
