#!/usr/bin/python3
"""Every command given postgresql:// URIs, with query parameters and a password, for source and
target (issue 11, defect 3: `replication=database` was appended to the URI text, which broke
every replication connection, and `check` reported a false pg_hba failure).

The servers make the role `migrator` give its password (scram in pg_hba), so a command that
lost the password on the way (to pg_dump, pg_restore, the replication connection, a job's
process) fails. The password holds characters that must be percent-encoded in a URI. It must
appear in no log, status file, output, API answer or command line.

Usage: conninfo_test.py [test_name ...]
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (scratch, APPLIER, AppPair, Failure, check, check_equal, command_lines, lsn_value, main, pgbench, run_sql,  # noqa: E402
                     tail_file, test, wait_for)

BASE_PORT = int(os.environ.get("DTS_CONNINFO_TEST_PORT", "26100"))
HTTP_PORT = BASE_PORT + 10
PASSWORD = "Uri s3cret/@:77"
ENCODED = urllib.parse.quote(PASSWORD, safe="")
SECRETS = (PASSWORD, ENCODED, "s3cret")
QUERY = "application_name=dts_it&connect_timeout=10"

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2));
INSERT INTO items SELECT g, 'item ' || g, g / 7.0 FROM generate_series(1, 50000) g;
CREATE TABLE notes (id serial PRIMARY KEY, msg text);
INSERT INTO notes (msg) SELECT 'note ' || g FROM generate_series(1, 500) g;
CREATE TABLE quiet (id int PRIMARY KEY);
"""
TABLES = ["items", "notes", "quiet", "pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_conninfo{index}", BASE_PORT + 2 * index)


def require_passwords(server):
    """pg_hba: `migrator` must give its password (scram), for SQL and replication alike."""
    server.sql(f"CREATE ROLE migrator LOGIN SUPERUSER REPLICATION PASSWORD '{PASSWORD}'")
    hba = server.value("SHOW hba_file")
    with open(hba) as f:
        rules = f.read()
    with open(hba, "w") as f:
        f.write("host all migrator 127.0.0.1/32 scram-sha-256\n"
                "host replication migrator 127.0.0.1/32 scram-sha-256\n" + rules)
    server.sql("SELECT pg_reload_conf()")


def uri(port, db, *extra):
    return f"postgresql://migrator:{ENCODED}@127.0.0.1:{port}/{db}?" + "&".join((QUERY,) + extra)


def setup(pair):
    pair.src.sql(SCHEMA)
    pgbench(pair.src, "-i", "-q", "-s", "1")
    for s in (pair.src, pair.dst):
        require_passwords(s)
    src = uri(pair.src.port, "postgres")
    dst = uri(pair.dst.port, "app", "sslmode=disable")
    # Without the password, the servers now refuse migrator: what the applier gets must carry it.
    try:
        run_sql(f"host=127.0.0.1 port={pair.src.port} user=migrator dbname=postgres", "SELECT 1")
        raise Failure("the source let migrator in without a password")
    except Exception as e:  # noqa: BLE001 - psycopg2's error
        check("password" in str(e), f"unexpected refusal: {e}")
    return src, dst


def check_no_secret(what, text):
    for s in SECRETS:
        check(s not in text, f"the password ({s!r}) is in {what}: ...{text[max(0, text.find(s) - 200):][:400]}")


class TitleWatch:
    """Samples every process's command line while it runs: the password must be in none."""

    def __init__(self):
        self.seen, self.sampled, self.stop = [], 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            for cmd in command_lines():
                self.sampled += 1
                if any(s in cmd for s in SECRETS):
                    self.seen.append(cmd[:300])
            time.sleep(0.005)

    def finish(self):
        self.stop.set()
        self.thread.join(5)
        check(not self.seen, f"the password is in a command line: {self.seen[:3]}")
        check(self.sampled > 100, "the command-line watcher did not run")


def run(*args, uris=None, timeout=300):
    """A command to its end; `uris` (source, target) go in its environment, off its command line."""
    env = dict(os.environ, DTS_SOURCE=uris[0], DTS_TARGET=uris[1]) if uris else None
    out = subprocess.run([APPLIER, *args], capture_output=True, text=True, timeout=timeout, env=env)
    check(out.returncode not in (-6, 134), f"{args[0]} aborted: {out.stderr[-800:]}")
    check_no_secret(f"the output of {args[0]}", out.stdout + out.stderr)
    return out


class Migrate:
    """dts_applier migrate with the URIs in its environment (the way to keep them off `ps`)."""

    def __init__(self, src, dst, tag):
        self.status = scratch(f"conninfo-{tag}.json")
        self.log_path = scratch(f"conninfo-{tag}.log")
        for p in (self.status, self.log_path):
            if os.path.exists(p):
                os.unlink(p)
        env = dict(os.environ, DTS_SOURCE=src, DTS_TARGET=dst)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([APPLIER, "migrate", "--status-file", self.status, "--split-larger-than", "1MB",
                                          "--jobs", "2"], env=env, stdout=log, stderr=log)

    def state(self):
        if self.proc.poll() is not None:
            raise Failure(f"migrate exited with {self.proc.returncode}: {tail_file(self.log_path)}")
        try:
            with open(self.status) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def wait_applied(self, lsn_text, timeout=120):
        want = lsn_value(lsn_text)

        def done():
            s = self.state()
            return s and s["phase"] in ("STREAMING", "CATCHING_UP") and lsn_value(s["applied_lsn"]) >= want
        wait_for(f"migrate to apply up to {lsn_text}", done, timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        return self.proc.returncode

    def files(self):
        with open(self.log_path) as f:
            log = f.read()
        with open(self.status) as f:
            status = f.read()
        return log, status


@test
def every_command_works_with_postgresql_uris_with_query_parameters_and_a_password():
    with Pair(0) as pair:
        src, dst = setup(pair)
        # check: the replication connection (pg_hba) and the plugin, through the URI; given on
        # the command line (blanked once parsed, but visible until then: not watched).
        out = run("check", "--source", src, "--target", dst, "--json")
        doc = json.loads(out.stdout)
        items = {i["name"]: i for i in doc["items"]}
        for name in ("source_reachable", "replication_connection", "output_plugin", "target_reachable"):
            check(items[name]["status"] == "PASSED", f"check {name}: {items[name]}")
        check(out.returncode in (0, 1), f"check exited {out.returncode}: {out.stdout}")

        uris = (src, dst)
        titles = TitleWatch()
        m = m2 = None
        try:
            out = run("check", uris=uris)
            check(out.returncode in (0, 1) and "replication_connection" in out.stdout, f"check: {out.stdout}")

            # migrate: copy (pg_dump / pg_restore get the password), then follow until caught up.
            m = Migrate(src, dst, "migrate")
            wait_for("the migration to stream", lambda: (m.state() or {}).get("phase") in ("STREAMING", "CATCHING_UP"),
                     180)
            # The URI's query parameters reach every session, the replication connection included.
            check(pair.src.value("SELECT application_name FROM pg_stat_replication") == "dts_it",
                  f"replication connection: {pair.src.sql('SELECT application_name FROM pg_stat_replication')}")
            pair.src.sql("INSERT INTO notes (msg) SELECT 'later ' || g FROM generate_series(1, 100) g;"
                         "UPDATE items SET price = price + 1 WHERE id % 10 = 0")
            m.wait_applied(pair.src.lsn())
            check_equal(pair.src, pair.target_view(), TABLES)

            # verify, while migrate applies.
            out = run("verify", "--json", uris=uris)
            check(out.returncode == 0, f"verify exited {out.returncode}: {out.stdout[-500:]} {out.stderr[-800:]}")
            check(json.loads(out.stdout)["result"] == "EQUAL", f"verify: {out.stdout[-500:]}")

            # follow: the same slot and origin, migrate stopped for it.
            check(m.stop() == 0, f"migrate did not stop cleanly: {tail_file(m.log_path)}")
            pair.src.sql("INSERT INTO notes (msg) VALUES ('for follow')")
            status = scratch("conninfo-follow.json")
            out = run("follow", "--slot", "dts_migrate", "--until-lsn", pair.src.lsn(), "--status-file", status,
                      uris=uris)
            check(out.returncode == 0, f"follow exited {out.returncode}: {out.stderr[-800:]}")
            check(pair.dst_app("SELECT count(*) FROM notes WHERE msg = 'for follow'")[0][0] == 1, "follow's row")
            with open(status) as f:
                check_no_secret("follow's status file", f.read())
            os.unlink(status)

            # cancel: a second slot (made by follow --create-slot over a URI replication connection).
            out = run("follow", "--slot", "second", "--create-slot", "--tables", "public.quiet", "--until-lsn",
                      pair.src.lsn(), uris=uris)
            check(out.returncode == 0, f"follow --create-slot exited {out.returncode}: {out.stderr[-800:]}")
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'second'") == 1,
                  "follow --create-slot made no slot")
            out = run("cancel", "--slot", "second", uris=uris)
            check(out.returncode == 0, f"cancel exited {out.returncode}: {out.stderr[-800:]}")
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'second'") == 0,
                  "cancel left the slot")
            check(pair.dst_app("SELECT count(*) FROM pg_replication_origin WHERE roname = 'dts_second'")[0][0] == 0,
                  "cancel left the origin")

            # complete, next to migrate resumed (streaming again from the origin).
            m2 = Migrate(src, dst, "resumed")
            wait_for("the resumed migration to stream",
                     lambda: (m2.state() or {}).get("phase") in ("STREAMING", "CATCHING_UP"), 120)
            pair.src.sql("INSERT INTO notes (msg) VALUES ('before the cutover')")
            out = run("complete", "--max-lag", "3000", "--verify", uris=uris)
            check(out.returncode == 0, f"complete exited {out.returncode}: {out.stderr[-1500:]}")
            check(m2.proc.wait(60) == 0, f"migrate did not end at the cutover: {tail_file(m2.log_path)}")
            check_equal(pair.src, pair.target_view(), TABLES)
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "a slot is left")
        finally:
            titles.stop.set()
            for p in (m, m2):
                if p:
                    p.stop()
        titles.finish()
        for p, tag in ((m, "migrate"), (m2, "resumed migrate")):
            log, status = p.files()
            check_no_secret(f"the log of {tag}", log)
            check_no_secret(f"the status file of {tag}", status)
        print(f"    {titles.sampled} command lines sampled, none with the password")


class Serve:
    """dts_applier serve with its state database given as a URI."""

    def __init__(self, state, port):
        self.port, self.state = port, state
        self.work = tempfile.mkdtemp(prefix=f"dts-it-conninfo-serve-{port}-")
        self.token = "conninfo-test-token-0123456789"
        token_file = os.path.join(self.work, "token")
        with open(token_file, "w") as f:
            f.write(self.token + "\n")
        os.chmod(token_file, 0o600)  # serve refuses a token every account can read
        self.log_path = os.path.join(self.work, "serve.log")
        env = dict(os.environ, DTS_STATE=state)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([APPLIER, "serve", "--listen", f"127.0.0.1:{port}", "--token-file", token_file,
                                          "--work-dir", os.path.join(self.work, "jobs")],
                                         env=env, stdout=log, stderr=log)
        wait_for("serve to answer", lambda: self.call("GET", "/health")[0] == 200, 30)

    def call(self, method, path, body=None):
        if self.proc.poll() is not None:
            raise Failure(f"serve exited with {self.proc.returncode}: {tail_file(self.log_path)}")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text, status = r.read().decode(), r.status
        except urllib.error.HTTPError as e:
            text, status = e.read().decode(), e.code
        except (urllib.error.URLError, ConnectionError):
            return 0, None, ""
        try:
            return status, json.loads(text), text
        except ValueError:
            return status, text, text

    def job(self, jid):
        status, body, text = self.call("GET", f"/api/jobs/{jid}")
        check(status == 200, f"GET job {jid}: {status} {text[:300]}")
        check_no_secret("serve's answer", text)
        return body["model"]

    def wait_status(self, jid, wanted, timeout=180):
        def reached():
            m = self.job(jid)
            if m["status"] == "FAILED":
                raise Failure(f"job {jid} failed: {m['error']}")
            return m["status"] == wanted
        wait_for(f"job {jid} to be {wanted}", reached, timeout)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        shutil.rmtree(self.work, ignore_errors=True)

    def logs(self):
        text = ""
        for path in glob.glob(os.path.join(self.work, "**", "*"), recursive=True):
            if os.path.isfile(path) and not path.endswith("token"):
                with open(path, errors="replace") as f:
                    text += f"--- {path}\n" + f.read()
        return text


@test
def serve_runs_a_job_given_uris_and_keeps_the_password_out_of_its_answers_and_logs():
    with Pair(1) as pair:
        src, dst = setup(pair)
        serve = Serve(dst, HTTP_PORT)
        try:
            status, body, text = serve.call("POST", "/api/jobs", {"name": "uri job", "source": src, "target": dst,
                                                                  "jobs": 2})
            check(status == 201, f"create: {status} {text[:500]}")
            check_no_secret("serve's answer to create", text)
            jid = body["model"]["id"]
            serve.wait_status(jid, "SYNCHRONIZE_REALTIME_DATA")
            check(pair.src.value("SELECT application_name FROM pg_stat_replication") == "dts_it",
                  "the job's replication connection lost the URI's query parameters")
            pair.src.sql("INSERT INTO notes (msg) VALUES ('through serve')")
            want = lsn_value(pair.src.lsn())
            wait_for("the job to apply the insert", lambda: lsn_value(
                serve.job(jid)["realtimeProgress"]["appliedLsn"] or "0/0") >= want, 60)
            status, body, text = serve.call("POST", f"/api/jobs/{jid}/verify")
            check(status == 200, f"verify: {status} {text[:300]}")
            wait_for("verify to finish", lambda: serve.job(jid)["verify"]["status"] != "RUNNING", 180)
            v = serve.job(jid)["verify"]
            check(v["status"] == "EQUAL", f"verify: {v}")
            status, body, text = serve.call("POST", f"/api/jobs/{jid}/complete", {"maxLagMs": 3000})
            check(status == 200, f"complete: {status} {text[:300]}")
            serve.wait_status(jid, "COMPLETED")
            check_equal(pair.src, pair.target_view(), TABLES)
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "a slot is left")
            for path in ("/api/jobs", "/metrics", f"/scaling/job/progress/{jid}"):
                check_no_secret(f"serve's answer to {path}", serve.call("GET", path)[2])
            check_no_secret("serve's and the jobs' logs", serve.logs())
        finally:
            serve.cleanup()


if __name__ == "__main__":
    main("conninfo_test")
