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
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, AppPair, Pgbench, pgbench, check, check_equal, lsn_value as lsn, main, run_sql, test, wait_for  # noqa: E402
from serve_client import Serve, chromium_page  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_SERVE_TEST_PORT", "25620"))
HTTP_PORT = int(os.environ.get("DTS_SERVE_TEST_HTTP_PORT", os.environ.get("DTS_SERVE_HTTP_PORT", str(BASE_PORT + 50))))

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
    pgbench(pair.src, "-i", "-q", "-s", "1")


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
            bench = Pgbench(pair.src, rate=200)
            target_lsn = lsn(pair.src.lsn())
            wait_for("the applied LSN to pass the source's",
                     lambda: lsn(serve.job(job["id"])["realtimeProgress"]["appliedLsn"] or "0/0") >= target_lsn, 60)
            rt = serve.job(job["id"])["realtimeProgress"]
            check(rt["receivedLsn"] and rt["flushedLsn"] and rt["delayMillisecond"] >= 0, f"realtime: {rt}")

            # DNS rebinding: a page whose name now points at 127.0.0.1 has no token to send.
            status, body = serve.call("GET", "/api/jobs", token=None, headers={"Host": f"rebound.example:{HTTP_PORT}"})
            check(status == 401 and body["errorCode"] == 40100, f"rebinding: {status} {body}")

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

            # A table changed by hand on the target (and referenced by a foreign key), copied again
            # through the job while it streams.
            pair.dst_app("UPDATE items SET name = 'by hand' WHERE id % 1000 = 0")
            status, body = serve.call("POST", f"/api/jobs/{job['id']}/resync", {})
            check(status == 400 and "tables" in (body["errorMsg"] or ""), f"resync without tables: {status} {body}")
            status, body = serve.call("POST", f"/api/jobs/{job['id']}/resync", {"tables": "items", "chunks": 3})
            check(status == 400 and "unknown field" in (body["errorMsg"] or ""), f"resync, unknown field: {status} {body}")
            out = serve.jobs_cli("resync", str(job["id"]), "--tables", "items")
            check(out.returncode == 0, f"jobs resync: {out.stdout} {out.stderr}")
            wait_for("the resync to finish",
                     lambda: (serve.job(job["id"])["resync"] or {}).get("status") not in (None, "RUNNING"), 180)
            r = serve.job(job["id"])["resync"]
            check(r["status"] == "DONE" and "done" in r["result"], f"resync: {r}")
            check(pair.dst_app("SELECT count(*) FROM items WHERE name = 'by hand'")[0][0] == 0,
                  "the resync left the changes made by hand")

            status, body = serve.call("POST", f"/api/jobs/{job['id']}/complete", {"maxLagMs": 2000, "sequenceShift": 100})
            check(status == 200, f"complete: {status} {body}")
            done = serve.wait_status(job["id"], "COMPLETED")
            check(done["error"] is None, f"error: {done['error']}")
            bench.stop()
            check_equal(pair.src, pair.target_view(), TABLES)
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "slot left")

            # The jobs CLI with no token flag: it reads the token serve generated in its work directory.
            out = serve.jobs_cli("list")
            check(out.returncode == 0 and re.search(rf"^{job['id']} +test migration +COMPLETED", out.stdout, re.M),
                  f"jobs list: {out.stdout} {out.stderr}")
            out = serve.jobs_cli("show", "999")
            check(out.returncode == 1 and "404" in out.stderr and "no job 999" in out.stderr, out.stderr)
        finally:
            if bench:
                bench.stop()
            serve.cleanup()


@test
def every_error_has_its_status_and_body_and_tokens_are_enforced():
    with Pair(1) as pair:
        token = "t0ken-" + "x" * 26
        serve = Serve(pair.target, HTTP_PORT + 1, token=token)
        try:
            def expect(status, code, what, call):
                got, body = call
                check(got == status and isinstance(body, dict) and body["success"] is False
                      and body["errorCode"] == code and body["model"] is None and what in (body["errorMsg"] or ""),
                      f"expected {status}/{code} with {what!r}, got {got} {body}")

            check(serve.call("GET", "/health", token=None)[0] == 200, "health needs no token")
            expect(401, 40100, "Authorization: Bearer", serve.call("GET", "/api/jobs", token=None))
            expect(401, 40100, "not valid", serve.call("GET", "/api/jobs", token="wrong" * 8))
            expect(401, 40100, "not valid", serve.call("GET", "/metrics", token="wrong" * 8))
            check(serve.call("GET", "/api/jobs")[0] == 200, "the right token is accepted")

            expect(400, 40001, "offset", serve.call("POST", "/api/jobs", raw=b'{"source": '))
            expect(400, 40001, "JSON object", serve.call("POST", "/api/jobs", raw=b'[1, 2]'))
            expect(400, 40002, '"sourse"', serve.call("POST", "/api/jobs", {"sourse": "x", "target": "y"}))
            base = job_body(pair)
            for field, value, what in [("jobs", 0, '"jobs" must be an integer from 1 to 64'),
                                       ("jobs", "2", '"jobs" must be an integer'),
                                       ("jobs", 2.5, '"jobs" must be an integer'),
                                       ("mode", "fast", '"mode" must be "full" or "incremental"'),
                                       ("source", 123, '"source" must be a string'),
                                       ("source", "host=x port", '"source" is not a libpq conninfo'),
                                       ("name", "n" * 300, '"name" must be 1 to 200 characters'),
                                       ("startTime", "tomorrow", '"startTime" must be an ISO 8601 time'),
                                       ("bandwidthLimitMBps", -1, '"bandwidthLimitMBps" must be a number'),
                                       ("resumeMode", "sometimes", '"resumeMode" must be "auto" or "manual"'),
                                       ("start", "yes", '"start" must be true or false'),
                                       ("target", ["x"], '"target" must be a string'),
                                       ("target", "", '"target" must be 1 to 4096 characters'),
                                       ("tables", 5, '"tables" must be a string'),
                                       ("exclude", "x" * 9000, '"exclude" must be 1 to 8192 characters'),
                                       ("splitSizeMB", 0, '"splitSizeMB" must be an integer'),
                                       ("splitSizeMB", None, '"splitSizeMB" must be an integer'),
                                       ("name", {"a": 1}, '"name" must be a string'),
                                       ("source", "x" * 5000, '"source" must be 1 to 4096 characters')]:
                expect(400, 40003, what, serve.call("POST", "/api/jobs", dict(base, **{field: value})))
            missing = dict(base)
            del missing["target"]
            expect(400, 40003, '"target" is required', serve.call("POST", "/api/jobs", missing))
            expect(413, 41300, "larger than 1 MB", serve.call("POST", "/api/jobs", raw=b'{"name": "' + b"a" * (2 << 20) + b'"}'))

            expect(404, 40401, "no job 999", serve.call("GET", "/api/jobs/999"))
            expect(404, 40401, "no job 999", serve.call("POST", "/api/jobs/999/stop"))
            expect(404, 40400, "no route GET /api/nothing", serve.call("GET", "/api/nothing"))
            expect(403, 40300, "origin http://evil.example", serve.call("POST", "/api/jobs", base,
                                                                         headers={"Origin": "http://evil.example"}))

            # A job that waits for start: the transitions it does not allow are 409s.
            secret = pair.src.conninfo + " password=s3cr3t-pw"
            status, body = serve.call("POST", "/api/jobs", dict(base, source=secret, start=False))
            check(status == 201 and body["model"]["status"] == "PENDING" and body["model"]["queued"] is False, f"{body}")
            jid = body["model"]["id"]
            for action, what in [("complete", "complete cuts over a job in SYNCHRONIZE_REALTIME_DATA"),
                                 ("resume", "only a STOPPED or FAILED job can be resumed"),
                                 ("verify", "verify compares a job that streams")]:
                expect(409, 40900, what, serve.call("POST", f"/api/jobs/{jid}/{action}"))
            expect(400, 40002, '"maxlag"', serve.call("POST", f"/api/jobs/{jid}/complete", {"maxlag": 1}))
            expect(400, 40003, '"maxLagMs" must be an integer', serve.call("POST", f"/api/jobs/{jid}/complete",
                                                                            {"maxLagMs": "soon"}))
            expect(400, 40002, "stop takes no fields", serve.call("POST", f"/api/jobs/{jid}/stop", {"now": True}))
            check(serve.call("POST", f"/api/jobs/{jid}/stop")[1]["model"]["status"] == "STOPPED", "stop a pending job")
            expect(409, 40900, "only a pending, scheduled or running job can be stopped",
                   serve.call("POST", f"/api/jobs/{jid}/stop"))
            expect(409, 40900, "start applies to a PENDING job", serve.call("POST", f"/api/jobs/{jid}/start"))
            check(serve.call("POST", f"/api/jobs/{jid}/cancel")[0] == 200, "cancel a stopped job")
            wait_for("the cancel to end", lambda: serve.job(jid)["cancelled"], 60)
            expect(409, 40900, "cancelled", serve.call("POST", f"/api/jobs/{jid}/resume"))
            expect(409, 40900, "nothing left to cancel", serve.call("POST", f"/api/jobs/{jid}/cancel"))

            # The password is in none of the answers, and not in the log.
            for path in ("/api/jobs", f"/api/jobs/{jid}", f"/scaling/job/progress/{jid}", "/scaling/job/list",
                         "/metrics"):
                check("s3cr3t-pw" not in json.dumps(serve.call("GET", path)[1]), f"password in {path}")
            check("s3cr3t-pw" not in serve.tail(1000), "password in serve's log")

            # The jobs CLI with the token file serve was given.
            out = serve.jobs_cli("show", str(jid), "--token-file", os.path.join(serve.base, "token"))
            check(out.returncode == 0 and '"cancelled": true' in out.stdout, f"jobs show: {out.stdout} {out.stderr}")
        finally:
            serve.cleanup()


@test
def a_restart_of_serve_mid_job_resumes_it_and_it_ends_equal():
    with Pair(2) as pair:
        setup(pair)
        serve = Serve(pair.target, HTTP_PORT + 2)
        bench = Pgbench(pair.src, rate=200)
        try:
            status, body = serve.call("POST", "/api/jobs", job_body(pair))
            jid = body["model"]["id"]
            serve.wait_status(jid, "SYNCHRONIZE_REALTIME_DATA")
            applied = lsn(serve.job(jid)["realtimeProgress"]["appliedLsn"] or "0/0")
            serve.kill9()  # its migrate process goes with it (parent-death signal)
            wait_for("the migration process to go", lambda: pair.src.value(
                "SELECT count(*) FROM pg_replication_slots WHERE active") == 0, 30)
            serve.start()
            m = serve.wait_status(jid, "SYNCHRONIZE_REALTIME_DATA")
            target_lsn = lsn(pair.src.lsn())
            wait_for("the resumed job to apply past the restart",
                     lambda: lsn(serve.job(jid)["realtimeProgress"]["appliedLsn"] or "0/0") >= target_lsn, 60)
            check(lsn(serve.job(jid)["realtimeProgress"]["appliedLsn"]) > applied, "no progress after the restart")
            check(m["historyProgress"]["syncedRows"] >= 301000, "the copy's progress was lost in the restart")
            serve.call("POST", f"/api/jobs/{jid}/complete", {"maxLagMs": 2000})
            serve.wait_status(jid, "COMPLETED")
            bench.stop()
            check_equal(pair.src, pair.target_view(), TABLES)
        finally:
            bench.stop()
            serve.cleanup()


@test
def sharding_sphere_scaling_routes_answer_in_their_shapes():
    with Pair(3) as pair:
        pair.src.sql(SCHEMA)
        serve = Serve(pair.target, HTTP_PORT + 3)
        try:
            source_yaml = ("ds_0: !!org.apache.shardingsphere.governance.core.common.yaml.config.YamlDataSourceConfiguration\n"
                           "  dataSourceClassName: com.zaxxer.hikari.HikariDataSource\n  props:\n"
                           f"    jdbcUrl: jdbc:postgresql://127.0.0.1:{pair.src.port}/postgres?sslmode=disable\n"
                           "    username: postgres\n    password: ''\n")
            status, body = serve.call("POST", "/scaling/job/start", {
                "ruleConfiguration": {"sourceDatasource": source_yaml, "sourceRule": "tables: {}",
                                      "destinationDataSources": {"name": "dt_0", "username": "postgres", "password": "",
                                                                 "url": f"jdbc:postgresql://127.0.0.1:{pair.dst.port}/app"}},
                "jobConfiguration": {"concurrency": 3}})
            check(status == 200 and body == {"success": True, "errorCode": 0, "errorMsg": None, "model": None},
                  f"start: {status} {body}")
            status, body = serve.call("GET", "/scaling/job/list")
            check(status == 200 and body["success"] and len(body["model"]) == 1, f"list: {body}")
            job = body["model"][0]
            check(set(job) == {"jobId", "jobName", "status"} and job["status"] == "RUNNING", f"list item {job}")

            def streaming():
                b = serve.call("GET", f"/scaling/job/progress/{job['jobId']}")[1]
                return b["model"]["syncTaskProgress"][0]["status"] == "SYNCHRONIZE_REALTIME_DATA"
            wait_for("the task to synchronize realtime data", streaming, 120)
            model = serve.call("GET", f"/scaling/job/progress/{job['jobId']}")[1]["model"]
            check(model["id"] == job["jobId"] and model["status"] == "RUNNING", f"{model}")
            task = model["syncTaskProgress"][0]
            history = task["historySyncTaskProgress"]
            check(history and all(set(h) == {"id", "estimatedRows", "syncedRows"} for h in history), f"{history}")
            check(sum(h["syncedRows"] for h in history) == 201000, f"rows {sum(h['syncedRows'] for h in history)}")
            check(set(task["realTimeSyncTaskProgress"]) == {"id", "delayMillisecond", "position"}, f"{task}")
            check(serve.job(job["jobId"])["settings"]["jobs"] == 3, "concurrency is the copy's workers")

            status, body = serve.call("POST", "/scaling/job/stop", {"jobId": job["jobId"]})
            check(status == 200 and body["success"], f"stop: {body}")
            serve.wait_status(job["jobId"], "STOPPED")
            check(serve.call("GET", "/scaling/job/list")[1]["model"][0]["status"] == "STOPPED", "listed as stopped")
            status, body = serve.call("POST", "/scaling/job/stop", {"jobId": "one"})
            check(status == 400 and body["errorCode"] == 40003 and "jobId" in body["errorMsg"], f"{body}")
            status, body = serve.call("GET", "/scaling/job/progress/77")
            check(status == 404 and body["errorCode"] == 40401, f"{body}")
        finally:
            serve.cleanup()


@test
def jobs_queue_beyond_max_jobs_and_scheduled_ones_wait_for_their_time():
    with Pair(4) as pair:
        pair.src.sql(SCHEMA)
        for db in ("app2", "app3"):
            pair.dst.sql(f"CREATE DATABASE {db}")
        serve = Serve(pair.target, HTTP_PORT + 4, "--max-jobs", "1")
        try:
            ids = []
            for db in ("app", "app2"):
                status, body = serve.call("POST", "/api/jobs", job_body(pair, mode="full",
                                                                         target=pair.target.replace("dbname=app", f"dbname={db}")))
                check(status == 201, f"create: {body}")
                ids.append(body["model"]["id"])
            start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4))
            status, body = serve.call("POST", "/api/jobs", job_body(
                pair, mode="full", startTime=start, target=pair.target.replace("dbname=app", "dbname=app3")))
            check(status == 201 and body["model"]["status"] == "SCHEDULED" and body["model"]["scheduledAt"] == start,
                  f"scheduled: {body['model']['status']} {body['model']['scheduledAt']}")
            scheduled = body["model"]["id"]
            wait_for("the first job to run", lambda: serve.job(ids[0])["status"] not in ("PENDING",), 30)
            if serve.job(ids[0])["status"] != "COMPLETED":
                second = serve.job(ids[1])
                check(second["status"] == "PENDING" and second["queued"], f"second job ran beside the first: {second['status']}")
            for jid in ids:
                serve.wait_status(jid, "COMPLETED", 120)
            done = serve.wait_status(scheduled, "COMPLETED", 120)
            check(done["startedAt"] >= start, f"the scheduled job started before its time: {done['startedAt']} < {start}")
            first = serve.job(ids[0])
            check(serve.job(ids[1])["startedAt"] >= first["updatedAt"], "the queued job started before the first ended")
            check_equal(pair.src, pair.target_view(), ["items", "orders"])
            for db in ("app2", "app3"):
                rows = run_sql(pair.target.replace("dbname=app", f"dbname={db}"), "SELECT count(*) FROM items")
                check(rows[0][0] == 200000, f"{db} was not migrated")
        finally:
            serve.cleanup()


@test
def a_job_over_every_database_streams_each_and_cuts_over_once():
    """A job with "databases": "*" and "roles": the model shows each database's phase and lag, the
    status page a row per database; verify compares every database, complete cuts them all over;
    bad database fields answer 400 naming the field."""
    with Pair(5) as pair:
        pair.src.sql("CREATE ROLE owner_a LOGIN PASSWORD 'a pw'")
        pair.src.sql("CREATE DATABASE db_a OWNER owner_a")
        pair.src.sql("CREATE DATABASE db_b")
        for db in ("db_a", "db_b"):
            run_sql(pair.src.conninfo.replace("dbname=postgres", f"dbname={db}"),
                    "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
        serve = Serve(pair.target, HTTP_PORT)
        try:
            for bad in ({"databases": "db_a"}, {"databases": []}, {"databases": ["a,b"]}, {"roles": "yes"}):
                status, body = serve.call("POST", "/api/jobs", job_body(pair, **bad))
                field = next(iter(bad))
                check(status == 400 and f'field "{field}"' in (body["errorMsg"] or ""), f"{bad}: {status} {body}")
            status, body = serve.call("POST", "/api/jobs", job_body(pair, databases="*", roles=True))
            check(status == 201 and body["model"]["settings"]["databases"] == "*", f"create: {status} {body}")
            job = body["model"]
            serve.wait_status(job["id"], "SYNCHRONIZE_REALTIME_DATA")
            wait_for("every database to stream", lambda: all(
                d["phase"] == "STREAMING" for d in serve.job(job["id"]).get("databases", [{"phase": ""}])), 120)
            model = serve.job(job["id"])
            dbs = {d["database"]: d for d in model.get("databases", [])}
            check(set(dbs) == {"db_a", "db_b", "postgres"} and all(d["phase"] == "STREAMING" for d in dbs.values()),
                  f"databases in the model: {model.get('databases')}")
            run_sql(pair.src.conninfo.replace("dbname=postgres", "dbname=db_b"), "INSERT INTO t VALUES (0, 'late')")
            dom = chromium_page(serve, f"#token={serve.token}", os.path.join(serve.base, "dbs.png"))
            shown = set(re.findall(r'data-database="([^"]+)"', dom))
            check(shown == {"db_a", "db_b", "postgres"}, f"databases on the status page: {shown}")
            status, body = serve.call("POST", f"/api/jobs/{job['id']}/verify")
            wait_for("verify to finish", lambda: serve.job(job["id"])["verify"]["status"] != "RUNNING", 180)
            v = serve.job(job["id"])["verify"]
            check(v["status"] == "EQUAL" and len(v["result"]["databases"]) == 3, f"verify: {v}")
            status, body = serve.call("POST", f"/api/jobs/{job['id']}/complete", {"maxLagMs": 2000})
            check(status == 200, f"complete: {status} {body}")
            done = serve.wait_status(job["id"], "COMPLETED")
            check(done["error"] is None, f"error: {done['error']}")
            for db in ("db_a", "db_b"):
                src = pair.src.conninfo.replace("dbname=postgres", f"dbname={db}")
                dst = pair.target.replace("dbname=app", f"dbname={db}")
                a = run_sql(src, "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t")
                check(a == run_sql(dst, "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t"), f"{db} differs")
            owner = pair.dst.value("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'db_a'")
            check(owner == "owner_a", f"db_a belongs to {owner} on the target")
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "slots left")
        finally:
            pair.src.sql("ALTER SYSTEM RESET default_transaction_read_only")
            pair.src.sql("SELECT pg_reload_conf()")
            serve.cleanup()


@test
def a_job_with_a_failed_check_starts_only_when_the_item_is_skipped_by_name():
    """The target already holds a table: check's target_empty item FAILS, so the job fails
    before it creates anything, naming the item; the same job with "skipChecks":
    ["target_empty"] runs. Unknown item names and wrong types answer 400."""
    with Pair(6) as pair:
        pair.src.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
        pair.dst_app("CREATE TABLE already_here (id int)")
        serve = Serve(pair.target, HTTP_PORT)
        try:
            for bad in ({"skipChecks": ["nope"]}, {"skipChecks": "target_empty"}, {"skipChecks": [1]}):
                status, body = serve.call("POST", "/api/jobs", job_body(pair, **bad))
                check(status == 400 and 'field "skipChecks"' in (body["errorMsg"] or ""), f"{bad}: {status} {body}")
            status, body = serve.call("POST", "/api/jobs", job_body(pair))
            failed = serve.wait_status(body["model"]["id"], "FAILED")
            check("target_empty" in (failed["error"] or {}).get("message", ""), f"the failure: {failed['error']}")
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "a failed check left a slot")
            status, body = serve.call("POST", "/api/jobs", job_body(pair, skipChecks=["target_empty"]))
            check(status == 201 and body["model"]["settings"]["skipChecks"] == ["target_empty"], f"{status} {body}")
            serve.wait_status(body["model"]["id"], "SYNCHRONIZE_REALTIME_DATA")
            check(pair.dst_app("SELECT count(*) FROM t")[0][0] == 1, "the skipped check's job copied nothing")
        finally:
            serve.cleanup()


def status_page(serve, job_id):
    """The page in headless Chromium, opened with the token in its fragment as a user would: a
    screenshot, and the job's row and bars from the DOM."""
    shot = os.path.join(serve.base, "status.png")
    dom = chromium_page(serve, f"#token={serve.token}", shot)
    check(os.path.exists(shot) and os.path.getsize(shot) > 5000, "no screenshot")
    row = re.search(rf'<tr class="job" data-job-id="{job_id}" data-status="([A-Z_]+)">(.*?)</tr>', dom, re.S)
    check(row is not None, f"no row for job {job_id} in the DOM: {dom[:800]}")
    check(row.group(1) == "SYNCHRONIZE_REALTIME_DATA", f"row status {row.group(1)}")
    bars = dict(re.findall(r'class="bar" data-table="([^"]+)" data-percent="(\d+)"', row.group(2)))
    check(bars.get("public.items") == "100" and bars.get("public.pgbench_accounts") == "100", f"bars {bars}")
    check('data-action="complete"' in row.group(2) and 'class="lag"' in row.group(2), "buttons or chart missing")
    kept = os.path.join(REPO, "build", "dts-status-page.png")  # to look at after a run
    shutil.copy(shot, kept)
    print(f"    status page: {len(bars)} progress bars, screenshot {os.path.getsize(shot)} bytes ({kept})")


if __name__ == "__main__":
    main("serve_test")
