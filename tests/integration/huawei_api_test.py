#!/usr/bin/python3
"""Huawei Cloud-style online migration tasks (issue 16): the manual's routes and bodies, adapted
to PostgreSQL addresses, as views over serve's jobs. A task's life from configure to SUCCESS under
pgbench; a task created whole, stopped (TERMINATED) and deleted (its slot dropped); every field of
the configure body wrong in turn, every error in the manual's envelope with its status; project
scoping; passwords in no answer and no log.

Usage: huawei_api_test.py [test_name ...]
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import scratch, AppPair, Pgbench, check, check_equal, main, pgbench, test, wait_for  # noqa: E402
from serve_client import Serve  # noqa: E402

BASE_PORT = int(os.environ.get("DTS_HUAWEI_TEST_PORT", "26890"))
HTTP_PORT = BASE_PORT + 50
PASSWORD = "pw-Huawei-7f3a"  # given in bodies: must come back in no answer and no log
TABLES = ["items", "pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"]


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_hw{index}", BASE_PORT + 2 * index)


def setup(pair):
    pair.src.sql("CREATE TABLE items (id bigint PRIMARY KEY, name text);"
                 "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20000) g")
    pgbench(pair.src, "-i", "-q", "-s", "1")


def serve_with_connections(pair, port):
    """serve with a registered connection "new-cluster" (the target) that tasks name by id."""
    base = scratch(f"hw-conn-{port}.json")
    fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"new-cluster": pair.target}, f)
    return Serve(pair.target, port, "--connections", base), base


def source_instance(pair):
    return {"id": None, "addrs": f"127.0.0.1:{pair.src.port}", "password": PASSWORD}


def configure_body(pair, **extra):
    """The manual's example request, with PostgreSQL addresses."""
    body = {"migration_method": "incremental_migration", "bandwidth_limit_mb": 123, "resume_mode": "auto",
            "source_instance": source_instance(pair),
            "target_instance": {"id": "new-cluster", "addrs": None, "password": None}}
    body.update(extra)
    return body


def error_body(status, body, http, code, *words):
    check(status == http, f"expected HTTP {http}, got {status}: {body}")
    check(isinstance(body, dict) and set(body) == {"error_msg", "error_code", "error_ext_msg"},
          f"not the manual's error envelope: {body}")
    check(body["error_code"] == code and body["error_ext_msg"] is None, f"expected {code}: {body}")
    for w in words:
        check(w in body["error_msg"], f"the error does not name {w!r}: {body}")


def task_of(serve, project, task_id):
    status, body = serve.call("GET", f"/v2/{project}/migration-task/{task_id}")
    check(status == 200, f"show: {status} {body}")
    return body


def no_password_anywhere(serve, answers):
    for a in answers:
        check(PASSWORD not in json.dumps(a), f"the password came back in an answer: {a}")
    for path in [serve.log_path] + glob.glob(os.path.join(serve.work, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, errors="replace") as f:
                check(PASSWORD not in f.read(), f"the password is in {path}")


@test
def a_task_lives_from_configure_to_success_under_pgbench():
    with Pair(0) as pair:
        setup(pair)
        serve, conn_file = serve_with_connections(pair, HTTP_PORT)
        answers = []
        bench = Pgbench(pair.src, rate=50)
        try:
            status, created = serve.call("POST", "/v2/proj-a/migration/instance",
                                         {"task_name": "dcs-migration-1db7", "description": "orders to the new cluster"})
            answers.append(created)
            check(status == 200 and set(created) == {"id", "name", "status", "error"}, f"create: {status} {created}")
            check(created["status"] == "CREATED" and created["name"] == "dcs-migration-1db7", f"{created}")
            tid = created["id"]
            status, configured = serve.call("POST", f"/v2/proj-a/migration/{tid}/task", configure_body(pair))
            answers.append(configured)
            check(status == 200 and configured["id"] == tid and configured["error"] == "", f"{status} {configured}")
            check(configured["status"] in ("MIGRATING", "FULLMIGRATING", "INCRMIGRATING"), f"{configured}")
            seen = []

            def incremental():
                s = task_of(serve, "proj-a", tid)["status"]
                if not seen or seen[-1] != s:
                    seen.append(s)
                check(s != "FAILED", f"the task failed: {task_of(serve, 'proj-a', tid)}")
                return s == "INCRMIGRATING"
            wait_for("the task to migrate incrementally", incremental, 180)
            shown = task_of(serve, "proj-a", tid)
            answers.append(shown)
            check(shown["migration_method"] == "incremental_migration" and shown["resume_mode"] == "auto" and
                  shown["bandwidth_limit_mb"] == "123" and shown["description"] == "orders to the new cluster",
                  f"{shown}")
            check(shown["source_instance"] == {"id": None, "addrs": f"127.0.0.1:{pair.src.port}"}, f"{shown}")
            check(shown["target_instance"]["id"] == "new-cluster", f"{shown}")
            check(serve.job(int(tid))["settings"]["bandwidthLimitMBps"] == 123, "the bandwidth limit reached the job")
            status, listed = serve.call("GET", "/v2/proj-a/migration-tasks")
            answers.append(listed)
            check(status == 200 and listed["count"] == 1 and listed["migration_tasks"][0]["task_id"] == tid, f"{listed}")
            check(serve.call("GET", "/v2/proj-b/migration-tasks")[1] == {"count": 0, "migration_tasks": []},
                  "another project sees the task")
            error_body(*serve.call("GET", f"/v2/proj-b/migration-task/{tid}"), 404, "DTS.4040", tid, "proj-b")
            # The cutover is dts's own (the manual has none): then the task is SUCCESS.
            wait_for("pgbench rows to stream", lambda: pair.dst_app("SELECT count(*) FROM pgbench_history")[0][0] > 50, 60)
            bench.stop()
            status, body = serve.call("POST", f"/api/jobs/{tid}/complete", {"maxLagMs": 60000})
            check(status == 200, f"complete: {body}")
            wait_for("SUCCESS", lambda: task_of(serve, "proj-a", tid)["status"] == "SUCCESS", 180)
            rows = check_equal(pair.src, pair.target_view(), TABLES)
            check(seen[0] in ("MIGRATING", "FULLMIGRATING") and "INCRMIGRATING" in seen, f"statuses seen: {seen}")
            status, body = serve.call("DELETE", f"/v2/proj-a/migration-task/{tid}")
            check(status == 200 and body == {"task_id": tid, "result": "success"}, f"delete: {status} {body}")
            error_body(*serve.call("GET", f"/v2/proj-a/migration-task/{tid}"), 404, "DTS.4040")
            no_password_anywhere(serve, answers)
            print(f"       statuses {' -> '.join(seen)} -> SUCCESS, {rows} rows equal")
        finally:
            bench.stop()
            serve.cleanup()
            os.unlink(conn_file)


@test
def every_field_wrong_in_turn_and_a_created_task_stopped_and_deleted():
    with Pair(1) as pair:
        setup(pair)
        serve, conn_file = serve_with_connections(pair, HTTP_PORT + 1)
        answers = []
        try:
            status, created = serve.call("POST", "/v2/p1/migration/instance", {"task_name": "t"})
            tid = created["id"]
            path = f"/v2/p1/migration/{tid}/task"
            good = configure_body(pair)
            wrong = [
                ("migration_method", None, "is required"), ("migration_method", "fast", "full_amount_migration"),
                ("resume_mode", None, "is required"), ("resume_mode", "sometimes", "auto or manual"),
                ("bandwidth_limit_mb", 0, "1 to 10240"), ("bandwidth_limit_mb", 10241, "1 to 10240"),
                ("bandwidth_limit_mb", "12a", "integer"), ("bandwidth_limit_mb", 1.5, "integer"),
                ("bandwidth_limit_mb", True, "integer"),
                ("source_instance", None, "is required"), ("source_instance", "127.0.0.1:5432", "is required"),
                ("source_instance", {"id": "new-cluster", "addrs": "127.0.0.1:1"}, "not both"),
                ("source_instance", {"password": PASSWORD}, "not neither"),
                ("source_instance", {"id": "old-cluster"}, "no connection registered"),
                ("source_instance", {"addrs": "nohost"}, "host:port"),
                ("source_instance", {"addrs": "127.0.0.1:99999"}, "host:port"),
                ("source_instance", {"addrs": "127.0.0.1:5432", "port": "5432"}, "not a field"),
                ("source_instance", {"addrs": 5432}, "must be a string"),
                ("target_instance", None, "is required"), ("target_instance", {"id": "nope"}, "no connection registered"),
            ]
            for field, value, words in wrong:
                body = dict(good)
                if value is None:
                    del body[field]
                else:
                    body[field] = value
                status, answer = serve.call("POST", path, body)
                answers.append(answer)
                error_body(status, answer, 400, "DTS.4001", field, words)
            error_body(*serve.call("POST", path, raw=b"{not json"), 400, "DTS.4000")
            error_body(*serve.call("POST", "/v2/p1/migration/999/task", good), 404, "DTS.4040", "999")
            error_body(*serve.call("POST", f"/v2/p2/migration/{tid}/task", good), 404, "DTS.4040", "p2")
            error_body(*serve.call("POST", path, good, token=None), 401, "DTS.4010", "X-Auth-Token")
            error_body(*serve.call("POST", path, good, token=None, headers={"X-Auth-Token": "wrong"}), 401, "DTS.4010")
            error_body(*serve.call("POST", path, good, headers={"Origin": "https://evil.example"}), 403, "DTS.4030")
            error_body(*serve.call("GET", "/v2/p1/no-such-route"), 404, "DTS.4040", "no route")
            error_body(*serve.call("POST", "/v2/p1/migration-task", dict(good, task_name="x",
                                                                         migration_type="backupfile_import")),
                       400, "DTS.4001", "migration_type")
            error_body(*serve.call("POST", "/v2/p1/migration-task", good), 400, "DTS.4001", "task_name")
            error_body(*serve.call("GET", "/v2/p1/migration-tasks?limit=0"), 400, "DTS.4001", "limit")
            error_body(*serve.call("GET", "/v2/p1/migration-tasks?offset=x"), 400, "DTS.4001", "offset")
            error_body(*serve.call("GET", "/v2/p1/migration-task/77"), 404, "DTS.4040", "77")
            error_body(*serve.call("POST", "/v2/p1/migration-task/77/stop"), 404, "DTS.4040", "77")
            error_body(*serve.call("DELETE", "/v2/p1/migration-task/77"), 404, "DTS.4040", "77")
            error_body(*serve.call("DELETE", "/v2/p1/migration-tasks/delete", {"task_id_list": "1"}), 400, "DTS.4001",
                       "task_id_list")
            error_body(*serve.call("DELETE", "/v2/p1/migration-tasks/delete", {}), 400, "DTS.4001", "task_id_list")
            error_body(*serve.call("POST", "/v2/p1/migration/instance", {"description": "no name"}), 400, "DTS.4001",
                       "task_name")
            error_body(*serve.call("POST", "/v2/bad$project/migration-tasks"), 404, "DTS.4040")
            # Nothing of the refused bodies was kept: the draft is still a draft.
            check(task_of(serve, "p1", tid)["status"] == "CREATED", "a refused configure changed the task")

            # The X-Auth-Token header is the manual's clients' way: a task created whole starts.
            status, whole = serve.call("POST", "/v2/p1/migration-task",
                                       dict(good, task_name="whole", migration_type="online_migration",
                                            bandwidth_limit_mb="50"),
                                       token=None, headers={"X-Auth-Token": serve.token})
            answers.append(whole)
            check(status == 200 and set(whole) == {"id", "name", "status", "error"}, f"{status} {whole}")
            wid = whole["id"]
            error_body(*serve.call("POST", f"/v2/p1/migration/{wid}/task", good), 400, "DTS.4090", "already configured")
            wait_for("the whole task to migrate incrementally",
                     lambda: task_of(serve, "p1", wid)["status"] == "INCRMIGRATING", 180)
            check(pair.src.value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                                 (f"dts_job_{wid}",)) == 1, "the task has no slot on the source")
            error_body(*serve.call("DELETE", f"/v2/p1/migration-task/{wid}"), 400, "DTS.4090", "stop it first")
            status, stopped = serve.call("POST", f"/v2/p1/migration-task/{wid}/stop")
            answers.append(stopped)
            check(status == 200 and stopped["status"] in ("TERMINATING", "TERMINATED"), f"stop: {status} {stopped}")
            wait_for("TERMINATED", lambda: task_of(serve, "p1", wid)["status"] == "TERMINATED", 60)
            # Deleting a stopped task drops what it left on the servers, then forgets it.
            status, deleted = serve.call("DELETE", "/v2/p1/migration-tasks/delete",
                                         {"task_id_list": [wid, tid, "404"]})
            check(status == 200 and [r["result"] for r in deleted["results"]] == ["success", "success", "failed"],
                  f"batch delete: {deleted}")
            wait_for("the stopped task's slot to be dropped", lambda: pair.src.value(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (f"dts_job_{wid}",)) == 0, 60)
            wait_for("both tasks to be gone", lambda: serve.call("GET", "/v2/p1/migration-tasks")[1]["count"] == 0, 60)
            no_password_anywhere(serve, answers)
            print(f"       {len(wrong)} wrong fields answered 400 by name; stopped, deleted, slot dropped")
        finally:
            serve.cleanup()
            os.unlink(conn_file)


if __name__ == "__main__":
    main("huawei_api_test")
