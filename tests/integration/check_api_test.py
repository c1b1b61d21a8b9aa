#!/usr/bin/python3
"""The check as a console shows it (issue 16, Tencent DTS's "check task"): POST /api/checks
answers at once with every step not started, GET shows each step running, then passed / warning
/ failed with its items; a job's own check (POST /api/jobs/{id}/check) with a FAILED item keeps
the job from starting until the item is fixed or skipped by name.

Usage: check_api_test.py [test_name ...]
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, AppPair, check, main, test, wait_for  # noqa: E402
import tempfile

from serve_client import Serve, chromium_page, self_signed  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_CHECK_API_TEST_PORT", "26930"))
HTTP_PORT = BASE_PORT + 50
STEPS = ["source", "tables", "read privileges", "read-only switch", "target", "target privileges", "extensions",
         "schema restore", "whole server"]
STATES = {"notStarted", "running", "passed", "warning", "failed"}


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_chk{index}", BASE_PORT + 2 * index)


def finished(serve, path):
    body = {}

    def done():
        nonlocal body
        status, b = serve.call("GET", path)
        check(status == 200, f"GET {path}: {status} {b}")
        body = b["model"]
        check([s["name"] for s in body["steps"]] == STEPS, f"steps: {body['steps']}")
        check(all(s["state"] in STATES for s in body["steps"]), f"states: {body['steps']}")
        return body["status"] == "finished"
    wait_for(f"{path} to finish", done, 120)
    return body


@test
def steps_go_from_not_started_through_running_to_their_result():
    with Pair(0) as pair:
        pair.src.sql("CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE nokey (v text)")
        serve = Serve(pair.target, HTTP_PORT)
        locker = pair.src.connect()
        try:
            # A table locked on the source: a step that reads it waits (the schema dump at the
            # latest), and is seen running, the steps before it done, the ones after not started.
            locker.autocommit = False
            locker.cursor().execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            status, body = serve.call("POST", "/api/checks", {"source": pair.src.conninfo, "target": pair.target})
            check(status == 202 and body["success"], f"POST /api/checks: {status} {body}")
            first = body["model"]
            check(first["status"] == "running" and first["result"] is None, f"{first}")
            check([s["state"] for s in first["steps"]] == ["notStarted"] * len(STEPS), f"{first['steps']}")
            path = f"/api/checks/{first['id']}"

            def waiting_step():
                states = [s["state"] for s in serve.call("GET", path)[1]["model"]["steps"]]
                return "running" in states and states
            wait_for("a step to be running", waiting_step, 60)
            states = waiting_step()
            at = states.index("running")
            check(all(s in ("passed", "warning", "failed") for s in states[:at]), f"earlier steps: {states}")
            check(all(s == "notStarted" for s in states[at + 1:]), f"a later step started: {states}")
            check(serve.call("GET", path)[1]["model"]["status"] == "running", "the check ended while blocked")
            locker.rollback()
            done = finished(serve, path)
            items = {i["name"]: i for s in done["steps"] for i in s["items"]}
            check(done["result"] == "warning", f"result {done['result']}: {done['steps']}")
            check(items["replica_identity"]["state"] == "warning" and "nokey" in items["replica_identity"]["reason"],
                  f"replica_identity: {items.get('replica_identity')}")
            check(items["schema_restore"]["state"] == "passed" and items["schema_restore"]["group"] == "databases",
                  f"schema_restore: {items.get('schema_restore')}")
            check(all(i["fix"] for i in items.values() if i["state"] != "passed"), "an item without its fix")
            status, body = serve.call("GET", "/api/checks/999")
            check(status == 404 and body["errorCode"] == 40400, f"{status} {body}")
            status, body = serve.call("POST", "/api/checks", {"source": pair.src.conninfo})
            check(status == 400 and "target" in body["errorMsg"], f"{status} {body}")
            print(f"       {len(items)} items over {len(STEPS)} steps, result {done['result']}")
        finally:
            locker.close()
            serve.cleanup()


@test
def a_job_whose_check_failed_starts_only_once_the_item_is_skipped():
    with Pair(1) as pair:
        pair.src.sql("CREATE TABLE items (id int PRIMARY KEY, v text)")
        pair.dst_app("CREATE TABLE items (id int PRIMARY KEY, v text)")  # target_empty FAILS
        serve = Serve(pair.target, HTTP_PORT + 1)
        try:
            status, body = serve.call("POST", "/api/jobs", {"name": "t", "source": pair.src.conninfo,
                                                            "target": pair.target, "start": False})
            check(status == 201, f"create: {body}")
            jid = body["model"]["id"]
            status, body = serve.call("GET", f"/api/jobs/{jid}/check")
            check(status == 404, f"a check before any was run: {status} {body}")
            status, body = serve.call("POST", f"/api/jobs/{jid}/check")
            check(status == 202 and body["model"]["jobId"] == jid, f"{status} {body}")
            done = finished(serve, f"/api/jobs/{jid}/check")
            check(done["result"] == "failed", f"{done}")
            status, body = serve.call("POST", f"/api/jobs/{jid}/start")
            check(status == 409 and "target_empty" in body["errorMsg"] and "skipChecks" in body["errorMsg"],
                  f"start with a FAILED item: {status} {body}")
            check(serve.job(jid)["status"] == "PENDING", "the refused start changed the job")
            # The same job, created again with the item skipped by name, may start.
            status, body = serve.call("POST", "/api/jobs", {"name": "t2", "source": pair.src.conninfo,
                                                            "target": pair.target, "start": False,
                                                            "skipChecks": ["target_empty"]})
            jid2 = body["model"]["id"]
            serve.call("POST", f"/api/jobs/{jid2}/check")
            check(finished(serve, f"/api/jobs/{jid2}/check")["result"] == "failed", "the second check")
            status, body = serve.call("POST", f"/api/jobs/{jid2}/start")
            check(status == 200, f"start with the FAILED item skipped: {status} {body}")
            serve.call("POST", f"/api/jobs/{jid2}/stop")
            print("       start refused while target_empty FAILED, allowed once skipped by name")
        finally:
            serve.cleanup()


@test
def the_console_fits_1280_pixels_and_shows_a_job_page():
    """Headless Chromium at 1,280 x 800, over HTTPS with a certificate made here: no horizontal
    overflow, the lag chart drawn from serve's history, only the actions the status allows
    enabled, the job page with its check report, timeline and schema changes. Screenshots in
    build/test-artifacts."""
    with Pair(2) as pair:
        pair.src.sql("CREATE TABLE items (id int PRIMARY KEY, v text);"
                     "INSERT INTO items SELECT g, repeat('x', 50) FROM generate_series(1, 50000) g;"
                     "CREATE EXTENSION dts_decoding")
        certs = tempfile.mkdtemp(prefix="dts-it-console-")
        serve = Serve(pair.target, HTTP_PORT + 2, tls=self_signed(certs))
        try:
            status, body = serve.call("POST", "/api/jobs", {"name": "a migration with a rather long name to wrap",
                                                            "source": pair.src.conninfo, "target": pair.target,
                                                            "splitSizeMB": 1})
            jid = body["model"]["id"]
            serve.wait_status(jid, "SYNCHRONIZE_REALTIME_DATA", 180)
            pair.src.sql("ALTER TABLE items ADD COLUMN note text")
            wait_for("the schema change to be applied", lambda: serve.job(jid)["realtimeProgress"]["schemaChanges"] >= 1, 60)
            status, body = serve.call("POST", f"/api/jobs/{jid}/check")
            check(status == 202, f"{status} {body}")
            finished(serve, f"/api/jobs/{jid}/check")
            wait_for("two history samples", lambda: len(serve.call("GET", f"/api/jobs/{jid}/history")[1]["model"]) >= 2, 30)
            artifacts = os.path.join(REPO, "build", "test-artifacts")
            os.makedirs(artifacts, exist_ok=True)
            dom = chromium_page(serve, f"#token={serve.token}&job={jid}", os.path.join(artifacts, "console-1280.png"))
            check('data-overflow="false"' in dom, f"the console overflows 1,280 px: {dom[:300]}")
            row = re.search(rf'<tr class="job[^"]*" data-job-id="{jid}" data-status="SYNCHRONIZE_REALTIME_DATA">(.*?)</tr>',
                            dom, re.S)
            check(row, f"no streaming row for job {jid}")
            buttons = dict(re.findall(r'<button data-action="([a-z]+)"( disabled="")?', row.group(1)))
            check(buttons == {"start": ' disabled=""', "stop": "", "resume": ' disabled=""', "complete": "", "verify": "",
                              "cancel": ""}, f"the enabled actions of a streaming job: {buttons}")
            points = re.search(r'class="lag" width="160" height="40" data-job-id="\d+" data-points="(\d+)"', row.group(1))
            check(points and int(points.group(1)) >= 2, "the lag chart has no points from serve's history")
            page = re.search(rf'<section class="panel" id="job-page" data-job-id="{jid}">(.*?)</section>', dom, re.S)
            check(page, "the job page is not open")
            check('class="list check-report"' in page.group(1) and 'data-step="schema restore"' in page.group(1),
                  "the job page has no check report")
            check(re.search(r'<li data-status="(PREPARING|PENDING)">', page.group(1)) and
                  '<li data-status="SYNCHRONIZE_REALTIME_DATA">' in page.group(1), "the timeline lacks the phases")
            check('class="history-lag" width="480" height="80" data-points=' in page.group(1), "no lag history chart")
            check('<table class="list lanes"><tr data-lane="1" data-state=' in page.group(1),
                  "the job page does not show the apply workers")
            shown = re.search(r'class="num schema-changes">([^<]*)<', page.group(1))
            check(shown and "ADD COLUMN" in shown.group(1) and "note" in shown.group(1),
                  f"the job page does not show the schema change: {shown and shown.group(1)}")
            print(f"       screenshot {os.path.join(artifacts, 'console-1280.png')}")
        finally:
            serve.cleanup()
            subprocess.run(["rm", "-rf", certs])


if __name__ == "__main__":
    main("check_api_test")
