#!/usr/bin/python3
"""dts_applier serve over real HTTP, with real servers: the life of a job (create, copy,
stream, verify, complete) with its progress model checked at each phase; every error status
with its body; tokens; a restart of serve mid-job; the ShardingSphere-Scaling routes; the
queue and scheduled starts; the jobs CLI; the status page in headless Chromium.

Usage: serve_test.py [test_name ...]
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import APPLIER, AppPair, Failure, check, check_equal, main, test, wait_for  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_SERVE_TEST_PORT", "25620"))
HTTP_PORT = BASE_PORT + 50

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(12,2));
INSERT INTO items SELECT g, 'item ' || g, g / 7.0 FROM generate_series(1, 200000) g;
CREATE TABLE orders (id serial PRIMARY KEY, item_id bigint REFERENCES items, qty int);
INSERT INTO orders (item_id, qty) SELECT g, g % 5 FROM generate_series(1, 1000) g;
"""
TABLES = ["items", "orders", "pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_serve{index}", BASE_PORT + 2 * index)


def setup(pair):
    pair.src.sql(SCHEMA)
    subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(pair.src.port), "-U", "postgres", "-i", "-q", "-s", "1",
                    "postgres"], check=True, capture_output=True)


class Serve:
    """dts_applier serve as a child process, and a small HTTP client for it."""

    def __init__(self, state, port, *extra, token=None):
        self.port, self.token, self.state, self.extra = port, token, state, extra
        self.work = tempfile.mkdtemp(prefix=f"dts-it-serve-{port}-")
        self.log_path = os.path.join(self.work, "serve.log")
        self.proc = None
        self.start()

    def start(self):
        args = [APPLIER, "serve", "--listen", f"127.0.0.1:{self.port}", "--state", self.state,
                "--work-dir", self.work, *self.extra]
        if self.token:
            path = os.path.join(self.work, "token")
            with open(path, "w") as f:
                f.write(self.token + "\n")
            args += ["--token-file", path]
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        wait_for("serve to answer", lambda: self._alive() and self.call("GET", "/health")[0] == 200, 30)

    def _alive(self):
        if self.proc.poll() is not None:
            raise Failure(f"serve exited with {self.proc.returncode}: {self.tail()}")
        return True

    def call(self, method, path, body=None, token="default", raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        tok = self.token if token == "default" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as e:
            text, status = e.read().decode(), e.code
        except (urllib.error.URLError, ConnectionError):
            return 0, None
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def job(self, job_id):
        status, body = self.call("GET", f"/api/jobs/{job_id}")
        check(status == 200 and body["success"], f"GET job {job_id}: {status} {body}")
        return body["model"]

    def wait_status(self, job_id, wanted, timeout=180, seen=None):
        def reached():
            self._alive()
            m = self.job(job_id)
            if seen is not None and (not seen or seen[-1] != m["status"]):
                seen.append(m["status"])
            if m["status"] == "FAILED" and wanted != "FAILED":
                raise Failure(f"job {job_id} failed: {m['error']}")
            return m["status"] == wanted
        wait_for(f"job {job_id} to be {wanted}", reached, timeout)
        return self.job(job_id)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def tail(self, n=20):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)


class Pgbench:
    def __init__(self, server, seconds=300):
        self.proc = subprocess.Popen(["pgbench", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-n",
                                      "-c", "2", "-T", str(seconds), "-R", "200", "postgres"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(60)


def lsn(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def job_body(pair, **extra):
    body = {"name": "test migration", "source": pair.src.conninfo, "target": pair.target, "jobs": 2,
            "splitSizeMB": 1}
    body.update(extra)
    return body


@test
def a_job_lives_from_create_through_copy_and_streaming_to_complete():
    with Pair(0) as pair:
        setup(pair)
        serve = Serve(pair.target, HTTP_PORT)
        bench = None
        try:
            status, body = serve.call("POST", "/api/jobs", job_body(pair))
            check(status == 201 and body["success"] and body["errorCode"] == 0 and body["errorMsg"] is None,
                  f"create: {status} {body}")
            job = body["model"]
            check(job["status"] in ("PENDING", "PREPARING") and job["queued"] is True, f"created: {job['status']}")
            check(job["settings"]["jobs"] == 2 and job["settings"]["mode"] == "incremental", f"{job['settings']}")
            seen = []
            model = serve.wait_status(job["id"], "SYNCHRONIZE_REALTIME_DATA", seen=seen)
            order = ["PENDING", "PREPARING", "MIGRATE_HISTORY_DATA", "SYNCHRONIZE_REALTIME_DATA"]
            check([s for s in order if s in seen] == seen, f"phases out of order: {seen}")

            # History progress: every table, every chunk, all rows.
            tables = {t["table"]: t for t in model["historyProgress"]["tables"]}
            check(set(f"public.{t}" for t in TABLES) <= set(tables), f"tables: {sorted(tables)}")
            items = tables["public.items"]
            check(items["syncedRows"] == 200000 and items["estimatedRows"] == 200000, f"items: {items}")
            check(items["chunks"] > 1 and items["chunksDone"] == items["chunks"], f"items chunks: {items}")
            check(items["chunkProgress"][0]["id"] == "history-public.items#0", f"{items['chunkProgress'][0]}")
            check(sum(c["syncedRows"] for c in items["chunkProgress"]) == 200000, "chunk rows")
            check(model["historyProgress"]["syncedRows"] >= 301000, f"{model['historyProgress']['syncedRows']}")

            # Realtime progress moves with the source.
            bench = Pgbench(pair.src)
            target_lsn = lsn(pair.src.lsn())
            wait_for("the applied LSN to pass the source's",
                     lambda: lsn(serve.job(job["id"])["realtimeProgress"]["appliedLsn"] or "0/0") >= target_lsn, 60)
            rt = serve.job(job["id"])["realtimeProgress"]
            check(rt["receivedLsn"] and rt["flushedLsn"] and rt["delayMillisecond"] >= 0, f"realtime: {rt}")

            status, metrics = serve.call("GET", "/metrics")
            check(status == 200 and f'dts_job_rows_copied_total{{job="{job["id"]}",name="test migration"}}' in metrics
                  and "dts_job_lag_milliseconds{" in metrics and 'status="SYNCHRONIZE_REALTIME_DATA"} 1' in metrics,
                  f"metrics: {metrics[:600]}")

            status_page(serve, job["id"])

            status, body = serve.call("POST", f"/api/jobs/{job['id']}/verify")
            check(status == 200 and body["model"]["verify"]["status"] == "RUNNING", f"verify: {status} {body}")
            wait_for("verify to finish", lambda: serve.job(job["id"])["verify"]["status"] != "RUNNING", 180)
            v = serve.job(job["id"])["verify"]
            check(v["status"] == "EQUAL" and v["result"]["result"] == "EQUAL", f"verify: {v}")

            status, body = serve.call("POST", f"/api/jobs/{job['id']}/complete", {"maxLagMs": 2000, "sequenceShift": 100})
            check(status == 200, f"complete: {status} {body}")
            done = serve.wait_status(job["id"], "COMPLETED")
            check(done["error"] is None, f"error: {done['error']}")
            bench.stop()
            check_equal(pair.src, pair.target_view(), TABLES)
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "slot left")

            out = subprocess.run([APPLIER, "jobs", "list", "--server", f"http://127.0.0.1:{HTTP_PORT}"],
                                 capture_output=True, text=True, timeout=30)
            check(out.returncode == 0 and re.search(rf"^{job['id']} +test migration +COMPLETED", out.stdout, re.M),
                  f"jobs list: {out.stdout} {out.stderr}")
            out = subprocess.run([APPLIER, "jobs", "show", "999", "--server", f"http://127.0.0.1:{HTTP_PORT}"],
                                 capture_output=True, text=True, timeout=30)
            check(out.returncode == 1 and "404" in out.stderr and "no job 999" in out.stderr, out.stderr)
        finally:
            if bench:
                bench.stop()
            serve.cleanup()


def status_page(serve, job_id):
    """The page in headless Chromium: a screenshot, and the job's row and bars from the DOM."""
    chromium = shutil.which("chromium")
    check(chromium is not None, "chromium is not installed (scripts/install-deps.sh installs it)")
    url = f"http://127.0.0.1:{serve.port}/"
    shot = os.path.join(serve.work, "status.png")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={serve.work}/chromium", "--virtual-time-budget=5000", "--window-size=1280,800"]
    subprocess.run(flags + [f"--screenshot={shot}", url], capture_output=True, timeout=120)
    check(os.path.exists(shot) and os.path.getsize(shot) > 5000, "no screenshot")
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    row = re.search(rf'<tr class="job" data-job-id="{job_id}" data-status="([A-Z_]+)">(.*?)</tr>', dom, re.S)
    check(row is not None, f"no row for job {job_id} in the DOM: {dom[:800]}")
    check(row.group(1) == "SYNCHRONIZE_REALTIME_DATA", f"row status {row.group(1)}")
    bars = dict(re.findall(r'class="bar" data-table="([^"]+)" data-percent="(\d+)"', row.group(2)))
    check(bars.get("public.items") == "100" and bars.get("public.pgbench_accounts") == "100", f"bars {bars}")
    check('data-action="complete"' in row.group(2) and 'class="lag"' in row.group(2), "buttons or chart missing")
    shutil.copy(shot, "/tmp/dts-status-page.png")
    print(f"    status page: {len(bars)} progress bars, screenshot {os.path.getsize(shot)} bytes "
          "(/tmp/dts-status-page.png)")


if __name__ == "__main__":
    main("serve_test")
