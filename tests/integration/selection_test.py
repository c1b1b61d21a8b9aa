#!/usr/bin/python3
"""One --tables / --exclude value, with mixed-case, quoted, comma-in-name and glob patterns,
selects the same tables in check, migrate (schema and rows), follow (the plugin's stream),
verify and complete: the set written down by hand below (issue 11, defect 4).

Usage: selection_test.py [test_name ...]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (read_json, APPLIER, AppPair, Applier, Failure, check, lsn_value, main, run_sql, tail_file, test,  # noqa: E402
                     wait_for)

BASE_PORT = int(os.environ.get("DTS_SELECTION_TEST_PORT", "26400"))

# Every table has (id, k, v); the partitioned one is split on k.
SCHEMA = '''
CREATE SCHEMA "My.Schema"; CREATE SCHEMA s2; CREATE SCHEMA "S2";
CREATE TABLE public."Orders" (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE public.orders (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE public."Other" (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE "My.Schema"."a,b" (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE "My.Schema".a (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE "My.Schema".b (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE public."weird ""q""" (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE s2.t_1 (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE s2.t_10 (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE s2.t_2 (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE "S2".t_1 (id int, k text, v text, PRIMARY KEY (id));
CREATE TABLE public.meas (id int, k text, v text, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
CREATE TABLE public.meas_a PARTITION OF public.meas FOR VALUES IN ('a');
CREATE TABLE public.meas_b PARTITION OF public.meas FOR VALUES IN ('b');
'''

# The tables with rows of their own, (schema, name): every write goes to each.
ROW_TABLES = [("public", "Orders"), ("public", "orders"), ("public", "Other"), ("My.Schema", "a,b"),
              ("My.Schema", "a"), ("My.Schema", "b"), ("public", 'weird "q"'), ("s2", "t_1"), ("s2", "t_10"),
              ("s2", "t_2"), ("S2", "t_1"), ("public", "meas_a"), ("public", "meas_b")]

TABLES = 'public."Orders", "My.Schema"."a,b", "weird ""q""", S2.T_?, public.MEAS'
EXCLUDE = "s2.t_2 ,meas_b"

# By hand: "Orders" but not orders (quoted keeps case); the one table whose name holds a comma
# (not "My.Schema".a or .b); the quoted-quote name in any schema; S2.T_? folds to s2.t_? (one
# character: t_1 and t_2, not t_10, not "S2".t_1), less t_2; meas brings its partitions, less
# meas_b.
EXPECTED_ROWS = {("public", "Orders"), ("My.Schema", "a,b"), ("public", 'weird "q"'), ("s2", "t_1"),
                 ("public", "meas_a")}
EXPECTED = EXPECTED_ROWS | {("public", "meas")}


def ident(name):
    return '"' + name.replace('"', '""') + '"'


def qualified(schema, name):
    return f"{ident(schema)}.{ident(name)}"


def populate(conninfo, first, last):
    """Rows first..last in every table (for meas: in both partitions)."""
    stmts = []
    for schema, name in ROW_TABLES:
        k = "'b'" if name == "meas_b" else "'a'"
        target = "public.meas" if name.startswith("meas_") else qualified(schema, name)
        stmts.append(f"INSERT INTO {target} SELECT g, {k}, md5(g::text || {ident(name)!r}) "
                     f"FROM generate_series({first}, {last}) g")
    run_sql(conninfo, ";".join(stmts))


def digest(conninfo, schema, name):
    return run_sql(conninfo, f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                             f"FROM {qualified(schema, name)} t")[0][0]


def user_tables(conninfo, kinds="'r', 'p'"):
    rows = run_sql(conninfo, "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                             f"WHERE c.relkind IN ({kinds}) AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dts') "
                             "AND n.nspname NOT LIKE 'pg\\_%'")
    return {(r[0], r[1]) for r in rows}


def run(*args, timeout=180):
    return subprocess.run([APPLIER, *args], capture_output=True, text=True, timeout=timeout)


status_of = read_json


class Work:
    """A private directory (0700) for status files and logs."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="dts-it-selection-")
        return self

    def path(self, name):
        return os.path.join(self.dir, name)

    def __exit__(self, *exc):
        shutil.rmtree(self.dir, ignore_errors=True)


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_selection{index}", BASE_PORT + 2 * index)


def checked_selection(pair):
    out = run("check", "--source", pair.src.conninfo, "--target", pair.target, "--json", "--tables", TABLES,
              "--exclude", EXCLUDE)
    doc = json.loads(out.stdout)
    items = {i["name"]: i for i in doc["items"]}
    check(items["table_selection"]["status"] == "PASSED", f"table_selection: {items['table_selection']}")
    kinds = {(t["schema"], t["name"]): t["kind"] for t in doc["tables"]}
    check(set(kinds) == EXPECTED, f"check selected {sorted(kinds)}, expected {sorted(EXPECTED)}")
    check(kinds[("public", "meas")] == "partitioned" and kinds[("public", "meas_a")] == "table", f"kinds {kinds}")


def verified_tables(pair, *extra):
    out = run("verify", "--source", pair.src.conninfo, "--target", pair.target, "--json", *extra)
    try:
        doc = json.loads(out.stdout)
    except ValueError:
        raise Failure(f"verify exited {out.returncode} without JSON: {out.stderr[-800:]}")
    results = {t["table"]: t["result"] for t in doc["tables"]}
    check(out.returncode == 0 and all(r == "EQUAL" for r in results.values()),
          f"verify rc {out.returncode}: {results} {out.stderr[-500:]}")
    return set(results)


@test
def one_selection_in_check_migrate_follow_verify_and_complete():
    with Pair(0) as pair, Work() as work:
        pair.src.sql(SCHEMA)
        # A plain follow into a target that has every table: which tables the plugin streams.
        pair.dst.sql(SCHEMA)
        pair.src.sql("SELECT pg_create_logical_replication_slot('sel_follow', 'dts_decoding')")
        follow = Applier(pair.src, pair.dst, "sel_follow", "--tables", TABLES, "--exclude", EXCLUDE,
                         status_file=work.path("follow.json"), log=work.path("follow.log")).start()
        populate(pair.src.conninfo, 1, 50)

        checked_selection(pair)

        status, log = work.path("migrate.json"), work.path("migrate.log")
        with open(log, "a") as logf:
            migrate = subprocess.Popen([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                                        "--tables", TABLES, "--exclude", EXCLUDE, "--status-file", status],
                                       stdout=logf, stderr=logf)
        try:
            def streaming():
                if migrate.poll() is not None:
                    raise Failure(f"migrate exited with {migrate.returncode}: {tail_file(log)}")
                return (status_of(status) or {}).get("phase") == "STREAMING"
            wait_for("migrate to stream", streaming, 180)
            # Schema: exactly the selection reached the target, with its rows.
            got = user_tables(pair.target)
            check(got == EXPECTED, f"migrate created {sorted(got)}, expected {sorted(EXPECTED)}")

            # Changes after the copy, to every table.
            populate(pair.src.conninfo, 1000, 1009)
            pair.src.sql('UPDATE public."Orders" SET v = \'changed\' WHERE id <= 5; DELETE FROM s2.t_1 WHERE id = 7;'
                         'DELETE FROM public.orders WHERE id = 7')
            end = pair.src.lsn()
            wait_for("migrate to apply the writes",
                     lambda: streaming() and lsn_value((status_of(status) or {}).get("applied_lsn", "0/0")) >= lsn_value(end),
                     120)
            follow.wait_applied(end)
            for schema, name in EXPECTED_ROWS:
                a, b = digest(pair.src.conninfo, schema, name), digest(pair.target, schema, name)
                check(a == b, f"migrate: {schema}.{name} differs: source {a}, target {b}")
            # Follow: the tables whose changes streamed are those with rows on its target.
            streamed = {t for t in ROW_TABLES if digest(pair.dst.conninfo, *t) != "0:"}
            check(streamed == EXPECTED_ROWS, f"follow streamed {sorted(streamed)}, expected {sorted(EXPECTED_ROWS)}")
            for schema, name in EXPECTED_ROWS:
                a, b = digest(pair.src.conninfo, schema, name), digest(pair.dst.conninfo, schema, name)
                check(a == b, f"follow: {schema}.{name} differs: source {a}, target {b}")
            check(follow.stop() == 0, f"follow did not stop cleanly: {follow.tail()}")

            # verify: the migration's selection by default, or the same patterns given again.
            names = {r[0] for r in run_sql(pair.src.conninfo, "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
                                                              "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE (n.nspname, c.relname) IN ("
                                                              + ",".join("(%s, %s)" for _ in EXPECTED_ROWS) + ")",
                                                 [x for t in sorted(EXPECTED_ROWS) for x in t])}
            check(len(names) == len(EXPECTED_ROWS), f"names {names}")
            got = verified_tables(pair, "--slot", "dts_migrate")
            check(got == names, f"verify compared {sorted(got)}, expected {sorted(names)}")
            got = verified_tables(pair, "--tables", TABLES, "--exclude", EXCLUDE)
            check(got == names, f"verify --tables compared {sorted(got)}, expected {sorted(names)}")

            # complete --verify compares the same tables, then the migration ends.
            out = run("complete", "--source", pair.src.conninfo, "--target", pair.target, "--verify",
                      "--read-only-scope", "database", timeout=300)
            check(out.returncode == 0, f"complete exited {out.returncode}: {out.stderr[-1500:]}")
            check(f"verify: all {len(EXPECTED_ROWS)} tables equal" in out.stdout, f"complete said: {out.stdout}")
            check(migrate.wait(60) == 0, f"migrate exited {migrate.returncode}: {tail_file(log)}")
        finally:
            if migrate.poll() is None:
                migrate.kill()
                migrate.wait()


@test
def a_partition_alone_brings_its_parent_but_not_its_siblings():
    with Pair(1) as pair, Work() as work:
        pair.src.sql(SCHEMA)
        populate(pair.src.conninfo, 1, 20)
        out = run("check", "--source", pair.src.conninfo, "--target", pair.target, "--json", "--tables", "MEAS_A")
        doc = json.loads(out.stdout)
        listed = {(t["schema"], t["name"]) for t in doc["tables"]}
        check(listed == {("public", "meas_a")}, f"check selected {listed}")
        log = work.path("migrate.log")
        with open(log, "a") as logf:
            rc = subprocess.run([APPLIER, "migrate", "--source", pair.src.conninfo, "--target", pair.target,
                                 "--tables", "MEAS_A", "--mode", "full"], stdout=logf, stderr=logf, timeout=180).returncode
        check(rc == 0, f"migrate exited {rc}: {tail_file(log)}")
        got = user_tables(pair.target)
        check(got == {("public", "meas"), ("public", "meas_a")}, f"target tables {sorted(got)}")
        a, b = digest(pair.src.conninfo, "public", "meas_a"), digest(pair.target, "public", "meas_a")
        check(a == b and a.startswith("20:"), f"meas_a: source {a}, target {b}")


@test
def malformed_patterns_are_refused_by_every_command_naming_the_pattern():
    with Pair(2) as pair:
        pair.src.sql(SCHEMA)
        bad = 'public."Orders", my table'
        out = run("check", "--source", pair.src.conninfo, "--target", pair.target, "--json", "--tables", bad)
        items = {i["name"]: i for i in json.loads(out.stdout)["items"]}
        item = items["table_selection"]
        check(out.returncode == 2 and item["status"] == "FAILED", f"check rc {out.returncode}: {item}")
        check('"my table"' in item["reason"] and "double quotes" in item["reason"], f"reason {item['reason']}")
        none = run("check", "--source", pair.src.conninfo, "--target", pair.target, "--json", "--tables", "nosuch.*")
        item = {i["name"]: i for i in json.loads(none.stdout)["items"]}["table_selection"]
        check(item["status"] == "FAILED" and "select no table" in item["reason"], f"no table: {item}")
        for args in (["migrate", "--tables", bad], ["verify", "--exclude", bad],
                     ["complete", "--verify", "--tables", bad]):
            out = run(args[0], "--source", pair.src.conninfo, "--target", pair.target, *args[1:], timeout=60)
            check(out.returncode == 2, f"{args[0]} exited {out.returncode}: {out.stderr[-500:]}")
            check('"my table"' in out.stderr and "cannot contain spaces" in out.stderr, f"{args[0]}: {out.stderr[-500:]}")
        out = run("follow", "--source", pair.src.conninfo, "--target", pair.target, "--slot", "nosuch", "--tables", bad,
                  timeout=60)
        check(out.returncode == 2 and '"my table"' in out.stderr, f"follow exited {out.returncode}: {out.stderr[-500:]}")
        # Nothing was created on either side.
        check(pair.src.value("SELECT count(*) FROM pg_replication_slots") == 0, "a slot was created")
        check(pair.dst_app("SELECT to_regclass('dts.migration') IS NULL")[0][0], "migrate created its state table")


# Names that stress the glob and quoting rules, on top of SCHEMA's.
EXTRA = """
CREATE TABLE public."té" (id int PRIMARY KEY); CREATE TABLE public."t_*" (id int PRIMARY KEY);
CREATE TABLE public."a\\b" (id int PRIMARY KEY); CREATE TABLE s2."T_1" (id int PRIMARY KEY);
"""
PIECES_UNQUOTED = ["orders", "Orders", "ORDERS", "t_1", "T_1", "t_10", "meas", "MEAS", "meas_a", "a", "b", "s2", "S2",
                   "public", "Public", "other"]
PIECES_GLOB = ["*", "t_?", "T_*", "meas*", "*a*", "?", "s?", '"t_*"', '"T"*', "t?", "t??", "*_1", '"My.Schema"*', "*\\*"]
PIECES_NOISE = ['"', '""', " ", "a b", "\\", ".", ",", '"a', "\u00e9", "\t", '""""']


def random_list(rng):
    """A list of 1 to 3 patterns, mostly well formed, some not."""
    def part():
        r = rng.random()
        if r < 0.3:
            return ident(rng.choice([n for t in ROW_TABLES + [("public", "té"), ("public", "t_*"), ("s2", "T_1")]
                                     for n in t]))
        if r < 0.55:
            return rng.choice(PIECES_UNQUOTED)
        if r < 0.8:
            return rng.choice(PIECES_GLOB)
        if r < 0.9:
            return rng.choice(PIECES_NOISE)
        return rng.choice(PIECES_UNQUOTED) + rng.choice(PIECES_GLOB)

    def pattern():
        text = part() if rng.random() < 0.4 else part() + "." + part()
        return rng.choice(["", " "]) + text + rng.choice(["", " "])
    return rng.choice([",", ", "]).join(pattern() for _ in range(rng.randint(1, 3)))


@test
def the_plugin_and_the_applier_agree_on_random_patterns():
    """The plugin is the authority for the stream: for random --tables / --exclude values, the
    tables whose inserts it decodes are the tables check lists, and it refuses exactly the
    values the applier refuses."""
    import random
    rng = random.Random(int(os.environ.get("DTS_TEST_SEED", "20261121")))
    with Pair(3) as pair:
        pair.src.sql(SCHEMA + EXTRA)
        pair.src.sql("SELECT pg_create_logical_replication_slot('probe', 'dts_decoding')")
        populate(pair.src.conninfo, 1, 1)
        pair.src.sql('INSERT INTO public."té" VALUES (1); INSERT INTO public."t_*" VALUES (1); '
                     'INSERT INTO public."a\\b" VALUES (1); INSERT INTO s2."T_1" VALUES (1)')
        cases = [('public."Orders"', ""), ('"My.Schema"."a,b"', ""), ('"weird ""q"""', ""), ("S2.T_?", "s2.t_2"),
                 ("public.MEAS", "meas_b"), ("t?", ""), ("t??", ""), ('"t_*"', ""), ("a\\b", ""), ("", "*.*"),
                 ("public. orders", ""), ("a,,b", ""), ('"x', "")]
        # 20 random lists in the test command; `make soak` runs 150.
        n = int(os.environ.get("DTS_SELECTION_RANDOM_LISTS", "20"))
        cases += [(random_list(rng), random_list(rng) if rng.random() < 0.4 else "") for _ in range(n)]
        agreed = refused = 0
        for tables, exclude in cases:
            options = ["format", "json"]
            if tables:
                options += ["include_tables", tables]
            if exclude:
                options += ["exclude_tables", exclude]
            try:
                rows = pair.src.sql("SELECT DISTINCT data::json->>'schema', data::json->>'table' FROM "
                                    "pg_logical_slot_peek_changes('probe', NULL, NULL, VARIADIC %s) "
                                    "WHERE data::json->>'action' = 'insert'", (options,))
                plugin = {(r[0], r[1]) for r in rows}
            except Exception as e:  # noqa: BLE001 - the plugin's refusal is an ERROR
                if "invalid value" not in str(e):
                    raise
                plugin = None
            args = ["check", "--source", pair.src.conninfo, "--target", pair.target, "--json"]
            args += ["--tables", tables] if tables else []
            args += ["--exclude", exclude] if exclude else []
            doc = json.loads(run(*args).stdout)
            item = {i["name"]: i for i in doc["items"]}["table_selection"]
            if item["reason"].startswith("invalid "):
                applier = None
            else:
                applier = {(t["schema"], t["name"]) for t in doc["tables"] if t["kind"] == "table"}
            check(plugin == applier, f"--tables {tables!r} --exclude {exclude!r}: plugin "
                                     f"{'refuses' if plugin is None else sorted(plugin)}, applier "
                                     f"{item['reason'] if applier is None else sorted(applier)}")
            agreed += 1
            refused += plugin is None
        check(0 < refused < agreed / 2, f"{refused} of {agreed} refused: the generator is off")
        print(f"    {agreed} selections agree, {refused} of them refused by both", flush=True)


if __name__ == "__main__":
    main("selection_test")
