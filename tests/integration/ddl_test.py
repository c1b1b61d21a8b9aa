#!/usr/bin/python3
"""Schema changes during a migration (issue 13): captured on the source by dts_decoding's event
triggers in the DDL's own transaction, replayed on the target at the same place in the stream.
Every test ends with equal rows *and* an equal schema (pg_dump --schema-only of both sides).

Usage: ddl_test.py [test_name ...]
"""
import json
import os
import re
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (APPLIER, AppPair, Migrate, check, check_equal, check_same_schema, lsn_value, main, rng,  # noqa: E402
                     run_sql, test, wait_for)

BASE_PORT = int(os.environ.get("DTS_DDL_TEST_PORT", "26700"))
FIGURES = []


def Pair(index):  # noqa: N802 - reads like the class it returns
    return AppPair(f"it_ddl{index}", BASE_PORT + 2 * index)


APP_SCHEMAS = "NOT IN ('pg_catalog', 'information_schema', 'dts', 'dts_decoding', 'pg_toast')"
ACLS = f"""
SELECT format('%s %s', c.oid::regclass, c.relacl) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname {APP_SCHEMAS} AND c.relacl IS NOT NULL
UNION ALL SELECT format('%s.%s %s', a.attrelid::regclass, a.attname, a.attacl) FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname {APP_SCHEMAS} AND a.attacl IS NOT NULL
UNION ALL SELECT format('%s %s', p.oid::regprocedure, p.proacl) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname {APP_SCHEMAS} AND p.proacl IS NOT NULL
UNION ALL SELECT format('%s %s', nspname, nspacl) FROM pg_namespace WHERE nspname {APP_SCHEMAS} AND nspacl IS NOT NULL
UNION ALL SELECT format('%s %s', t.oid::regtype, t.typacl) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname {APP_SCHEMAS} AND t.typacl IS NOT NULL
ORDER BY 1"""


def app_tables(server_or_conninfo):
    rows = run_sql(server_or_conninfo,
                   "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dts', "
                   "'dts_decoding', 'pg_toast') ORDER BY 1")
    return [r[0] for r in rows]


def run_verify(pair, *extra):
    return subprocess.run([APPLIER, "verify", "--source", pair.src.conninfo, "--target", pair.target, *extra],
                          capture_output=True, text=True, timeout=300)


def wait_resyncs_done(pair, timeout=180):
    def done():
        rows = pair.dst_app("SELECT count(*) FILTER (WHERE state NOT IN ('DONE', 'FAILED')), "
                            "count(*) FILTER (WHERE state = 'FAILED'), string_agg(error, '; ') FROM dts.resync")
        check(rows[0][1] == 0, f"a resync failed: {rows[0][2]}")
        return rows[0][0] == 0
    wait_for("the tables copied again after a rewrite to be copied", done, timeout)
    return pair.dst_app("SELECT count(*) FROM dts.resync")[0][0]


BASE_SCHEMA = """
CREATE EXTENSION dts_decoding;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int DEFAULT 0);
INSERT INTO items SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 2000) g;
CREATE TABLE busy (id bigserial PRIMARY KEY, v int, note text);
INSERT INTO busy (v, note) SELECT g, 'n' || g FROM generate_series(1, 5000) g;
CREATE TABLE events (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE events_n PARTITION OF events FOR VALUES IN ('n');
INSERT INTO events VALUES (1, 'n', 1);
CREATE TABLE events_s (id int NOT NULL, region text NOT NULL, v int);
ALTER TABLE events_s ADD PRIMARY KEY (id, region);
INSERT INTO events_s VALUES (2, 's', 2);
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE people (id int PRIMARY KEY, m mood);
INSERT INTO people VALUES (0, 'ok');
"""

# Each entry runs as one query string (several statements in one string are one transaction).
DDL_STEPS = [
    "ALTER TABLE items ADD COLUMN price numeric(10,2) DEFAULT 1.50; INSERT INTO items (id, name, price) VALUES (5001, 'new', 9.99)",
    "BEGIN; UPDATE items SET price = 2 WHERE id < 10; ALTER TABLE items RENAME COLUMN qty TO quantity; "
    "UPDATE items SET quantity = 42 WHERE id = 1; COMMIT",
    "ALTER TABLE items ALTER COLUMN name DROP NOT NULL; INSERT INTO items (id, name) VALUES (5002, NULL)",
    "ALTER TABLE items ALTER COLUMN quantity SET DEFAULT 7; INSERT INTO items (id, name) VALUES (5003, 'd')",
    "ALTER TABLE items ADD CONSTRAINT items_quantity_check CHECK (quantity >= 0) NOT VALID",
    "ALTER TABLE items VALIDATE CONSTRAINT items_quantity_check",
    "ALTER TABLE items ADD CONSTRAINT items_name_key UNIQUE (name)",
    "ALTER TABLE busy ALTER COLUMN v TYPE bigint",  # a rewrite under the writer: copied again
    "ALTER TABLE items ADD COLUMN token float8 DEFAULT random()",  # volatile default: copied again
    "CREATE TABLE fresh (id int PRIMARY KEY, body text); INSERT INTO fresh SELECT g, md5(g::text) FROM generate_series(1, 500) g",
    "CREATE TABLE fresh_like (LIKE fresh INCLUDING ALL); INSERT INTO fresh_like VALUES (1, 'x')",
    "CREATE TABLE summary AS SELECT id % 10 AS bucket, count(*) AS n FROM items GROUP BY 1",
    "SELECT * INTO fresh_copy FROM fresh WHERE id <= 100",
    "CREATE INDEX items_price ON items (price)",
    "CREATE INDEX CONCURRENTLY busy_note ON busy (note)",
    "DROP INDEX items_price",
    "ALTER TABLE fresh RENAME TO fresher",
    "CREATE SCHEMA archive; ALTER TABLE fresher SET SCHEMA archive; INSERT INTO archive.fresher VALUES (501, 'moved')",
    "CREATE TABLE events_e PARTITION OF events FOR VALUES IN ('e'); INSERT INTO events VALUES (3, 'e', 3)",
    "ALTER TABLE events ATTACH PARTITION events_s FOR VALUES IN ('s'); INSERT INTO events VALUES (4, 's', 4)",
    "ALTER TABLE events DETACH PARTITION events_n; INSERT INTO events_n VALUES (5, 'n', 5)",
    "ALTER TYPE mood ADD VALUE 'happy'",
    "INSERT INTO people VALUES (1, 'happy')",
    "CREATE VIEW busy_view AS SELECT id, v FROM busy WHERE v > 0",
    "CREATE FUNCTION bump(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 1'",
    "ALTER FUNCTION bump(int) RENAME TO bumped",
    "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.note := coalesce(NEW.note, 'stamped'); "
    "RETURN NEW; END$$; CREATE TRIGGER busy_stamp BEFORE INSERT ON busy FOR EACH ROW EXECUTE FUNCTION stamp()",
    "COMMENT ON TABLE items IS 'things we sell'; COMMENT ON COLUMN items.price IS 'in euros'",
    "CREATE DOMAIN posint AS int CHECK (VALUE > 0); CREATE TABLE counts (id int PRIMARY KEY, n posint); "
    "INSERT INTO counts VALUES (1, 5)",
    "CREATE SEQUENCE tickets START 100; CREATE TABLE tickets_t (id int PRIMARY KEY DEFAULT nextval('tickets'), v text); "
    "INSERT INTO tickets_t (v) VALUES ('a')",
    "BEGIN; CREATE TABLE ghost (id int); ALTER TABLE items ADD COLUMN ghostcol int; ROLLBACK",
    "BEGIN; SAVEPOINT a; ALTER TABLE items ADD COLUMN ghost2 int; ROLLBACK TO a; "
    "ALTER TABLE items ADD COLUMN kept int DEFAULT 3; UPDATE items SET kept = 4 WHERE id = 2; COMMIT",
    "DO $$BEGIN EXECUTE 'ALTER TABLE items ADD COLUMN from_fn text'; UPDATE items SET from_fn = 'fn' WHERE id = 3; END$$",
    "CREATE TABLE doomed (id int PRIMARY KEY); CREATE VIEW doomed_v AS SELECT * FROM doomed",
    "DROP TABLE doomed CASCADE",
    "DROP TABLE fresh_like",
    "ALTER TABLE items DROP COLUMN token",
    "ALTER TABLE summary REPLICA IDENTITY FULL; UPDATE summary SET n = n + 1 WHERE bucket = 1",
    "ALTER TABLE archive.fresher ADD COLUMN body_len int GENERATED ALWAYS AS (length(body)) STORED",
    "ALTER TABLE counts ADD COLUMN seq int GENERATED BY DEFAULT AS IDENTITY",
    "ALTER TABLE items ALTER COLUMN price TYPE numeric(12,2)",
    "CREATE TABLE orders (id int PRIMARY KEY, item_id int); "
    "ALTER TABLE orders ADD CONSTRAINT orders_item_fk FOREIGN KEY (item_id) REFERENCES items (id); INSERT INTO orders VALUES (1, 1)",
    "ALTER TABLE orders DROP CONSTRAINT orders_item_fk",
    "ALTER TABLE counts ADD CONSTRAINT counts_excl EXCLUDE USING btree (n WITH =)",
    "ALTER TABLE counts ALTER COLUMN n SET NOT NULL; CREATE UNIQUE INDEX counts_id_n ON counts (id, n); "
    "ALTER TABLE counts REPLICA IDENTITY USING INDEX counts_id_n; UPDATE counts SET n = 6 WHERE id = 1",
    "ALTER TABLE people ALTER COLUMN id TYPE bigint USING id::bigint + 0",
    "CREATE MATERIALIZED VIEW item_count AS SELECT count(*) AS n FROM items",
    "REFRESH MATERIALIZED VIEW item_count",
    "CREATE EXTENSION IF NOT EXISTS hstore",
    "CREATE TYPE pair AS (a int, b text); CREATE TABLE pairs (id int PRIMARY KEY, p pair); INSERT INTO pairs VALUES (1, (1, 'x'))",
    "CREATE PROCEDURE touch_items() LANGUAGE sql AS $$ UPDATE items SET name = name WHERE id = 1 $$",
    "CALL touch_items()",
    "ALTER TABLE items ADD COLUMN added_at timestamptz DEFAULT now()",
    "ALTER SCHEMA archive RENAME TO archived",
    "CREATE TABLE parent_t (id int PRIMARY KEY); CREATE TABLE child_t (id int PRIMARY KEY, parent_id int REFERENCES parent_t); "
    "INSERT INTO parent_t VALUES (1); INSERT INTO child_t VALUES (1, 1)",
    "ALTER TABLE parent_t RENAME COLUMN id TO pid",  # a key a foreign key depends on
    "ALTER TABLE parent_t RENAME CONSTRAINT parent_t_pkey TO parent_t_pk",
    "COMMENT ON CONSTRAINT parent_t_pk ON parent_t IS 'the key'",
    "ALTER TRIGGER busy_stamp ON busy RENAME TO busy_stamped",
    "BEGIN; CREATE TEMP TABLE scratch AS SELECT id FROM items WHERE id < 5; "
    "INSERT INTO items (id, name) SELECT id + 100000, 'via temp ' || id FROM scratch; COMMIT",
    "CREATE SEQUENCE seq_r; ALTER SEQUENCE seq_r RENAME TO seq_r2; ALTER SEQUENCE seq_r2 INCREMENT 5",
    "ALTER TABLE events ALTER COLUMN v TYPE bigint; INSERT INTO events VALUES (6, 'e', 6)",  # rewrites each partition
    "GRANT SELECT ON items, busy TO reader",
    "GRANT SELECT (name), UPDATE (name) ON items TO reader WITH GRANT OPTION",
    "GRANT USAGE ON SCHEMA archived TO reader; GRANT EXECUTE ON FUNCTION bumped(int) TO reader",
    "REVOKE SELECT ON busy FROM reader",
    "REVOKE EXECUTE ON FUNCTION bumped(int) FROM PUBLIC",
    "GRANT USAGE ON TYPE mood TO reader; GRANT USAGE, SELECT ON SEQUENCE tickets TO reader",
    "ALTER TYPE mood ADD VALUE 'awful' BEFORE 'sad'",
    "ALTER TYPE mood RENAME VALUE 'ok' TO 'fine'",
    "INSERT INTO people VALUES (2, 'awful'), (3, 'fine')",
]


def writer(pair, stop, counts):
    c = pair.src.connect()
    c.autocommit = True
    cur = c.cursor()
    while not stop.is_set():
        cur.execute("INSERT INTO busy (v, note) VALUES (%s, NULL)", (rng.randint(1, 1000),))
        cur.execute("UPDATE busy SET v = v + 1 WHERE id = %s", (rng.randint(1, 5000),))
        cur.execute("UPDATE items SET name = 'w' || %s WHERE id = %s", (counts["rounds"], rng.randint(10, 2000)))
        cur.execute("DELETE FROM busy WHERE id = %s", (rng.randint(1, 5000),))
        counts["rounds"] += 1
    c.close()


def concurrent_ddl(pair, table, n):
    c = pair.src.connect()
    c.autocommit = True
    cur = c.cursor()
    cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    for i in range(n):
        cur.execute(f"ALTER TABLE {table} ADD COLUMN c{i} int DEFAULT {i}; INSERT INTO {table} (id, v) VALUES ({i}, 'r{i}')")
    c.close()


@test
def schema_changes_replay_in_order_with_the_rows_around_them():
    """Every kind of schema change in the issue's list, one after another under a writer (in the
    same transaction as rows, in others, rolled back, in a function, concurrently in two
    sessions): the target ends with the same rows and the same schema; tables the source
    rewrote were copied again."""
    with Pair(0) as pair:
        pair.src.sql(BASE_SCHEMA)
        for side in (pair.src, pair.dst):
            side.sql("CREATE ROLE reader")  # roles are the server's: not migrated (yet)
        m = Migrate(pair, "ddl0").start()
        m.wait_phase("STREAMING")
        stop = threading.Event()
        counts = {"rounds": 0}
        w = threading.Thread(target=writer, args=(pair, stop, counts))
        w.start()
        try:
            for step in DDL_STEPS:
                c = pair.src.connect()
                c.autocommit = True
                c.cursor().execute(step)
                c.close()
                check(m.running(), "migrate stopped")
            pair_threads = [threading.Thread(target=concurrent_ddl, args=(pair, t, 8)) for t in ("side_a", "side_b")]
            for t in pair_threads:
                t.start()
            for t in pair_threads:
                t.join()
        finally:
            stop.set()
            w.join()
        pair.src.sql("INSERT INTO busy (v, note) VALUES (-1, 'last')")
        m.wait_applied(pair.src.lsn())
        resyncs = wait_resyncs_done(pair)
        m.wait_applied(pair.src.lsn())
        tables = app_tables(pair.src.conninfo)
        check(tables == app_tables(pair.target), f"tables differ: source {tables}, target {app_tables(pair.target)}")
        rows = check_equal(pair.src, pair.target_view(), tables)
        lines = check_same_schema(pair.src.conninfo, pair.target)
        acls = [r[0] for r in run_sql(pair.src.conninfo, ACLS)]
        check(acls == [r[0] for r in run_sql(pair.target, ACLS)],
              f"privileges differ: source {acls}, target {[r[0] for r in run_sql(pair.target, ACLS)]}")
        check(any("reader=" in a for a in acls), f"no grant to test: {acls}")
        check(resyncs >= 5, f"{resyncs} tables copied again: the rewrites and CREATE TABLE AS should have been")
        log = m.log()
        check(len(re.findall(r"schema change at ", log)) >= len(DDL_STEPS), "fewer statements replayed than steps")
        out = run_verify(pair)
        check(out.returncode == 0 and "schema equal" in out.stdout, f"verify: {out.stdout[-1500:]} {out.stderr[-800:]}")
        pair.dst_app("CREATE INDEX stray ON items (name)")  # by hand, on the target only
        out = run_verify(pair, "--json")
        report = json.loads(out.stdout)
        check(out.returncode == 1 and report["schema"]["result"] == "DIFFERENT" and
              any("stray" in s for s in report["schema"]["onlyTarget"]), f"verify missed the stray index: {out.stdout}")
        pair.dst_app("DROP INDEX stray")
        done = subprocess.run([APPLIER, "complete", "--source", pair.src.conninfo, "--target", pair.target, "--verify",
                               "--timeout", "300"], capture_output=True, text=True, timeout=400)
        check(done.returncode == 0 and "schema equal" in done.stdout, f"complete --verify: {done.stdout} {done.stderr[-1500:]}")
        check(m.proc.wait(120) == 0, f"migrate did not end at the cutover: {m.log()[-1500:]}")
        FIGURES.append(f"{len(DDL_STEPS)} DDL steps + 2x8 concurrent ones under a writer ({counts['rounds']} rounds): "
                       f"{len(tables)} tables, {rows} rows equal, schema equal ({lines} lines of pg_dump), "
                       f"{len(acls)} privilege lists equal, "
                       f"{resyncs} tables copied again after a rewrite or CREATE TABLE AS")


@test
def a_table_renamed_into_the_selection_is_created_and_copied():
    """With --tables, a table renamed from outside the selection into it — the swap of a table
    filled beside the live one, in one transaction: orders becomes orders_old, staging_orders
    becomes orders — is made on the target under its new name, copied and followed from there.
    (follow stopped on the replayed RENAME of a table the target never had.) The table renamed
    out of the selection keeps its rows under its new name; its later changes are not followed."""
    with Pair(14) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE orders (id int PRIMARY KEY, v text); "
                     "INSERT INTO orders SELECT g, 'old' FROM generate_series(1, 100) g; "
                     "CREATE TABLE staging_orders (id int PRIMARY KEY, v text, extra int NOT NULL DEFAULT 0)")
        m = Migrate(pair, "swap", "--tables", "public.orders").start()
        m.wait_phase("STREAMING")
        pair.src.sql("INSERT INTO staging_orders SELECT g, 'new', g FROM generate_series(1, 5000) g")
        pair.src.sql("BEGIN; ALTER TABLE orders RENAME TO orders_old; ALTER TABLE staging_orders RENAME TO orders; "
                     "INSERT INTO orders VALUES (5001, 'after', 1); UPDATE orders_old SET v = 'unfollowed'; COMMIT")
        pair.src.sql("UPDATE orders SET v = 'changed' WHERE id % 50 = 0; DELETE FROM orders WHERE id % 77 = 0")
        # Out of the selection and back, in one transaction and in two: the target has the
        # table under its old name (uncommitted, then committed), so the renames are replayed.
        pair.src.sql("BEGIN; ALTER TABLE orders RENAME TO orders_tmp; ALTER TABLE orders_tmp RENAME TO orders; "
                     "UPDATE orders SET v = 'back' WHERE id = 1; COMMIT")
        pair.src.sql("ALTER TABLE orders RENAME TO orders_tmp")
        pair.src.sql("ALTER TABLE orders_tmp RENAME TO orders; UPDATE orders SET v = 'back again' WHERE id = 2")
        m.wait_applied(pair.src.lsn())
        resyncs = wait_resyncs_done(pair)
        m.wait_applied(pair.src.lsn())
        check(m.running(), f"migrate stopped: {m.log()[-1500:]}")
        rows = check_equal(pair.src, pair.target_view(), ["orders"])
        check(rows == 5001 - 5001 // 77, f"{rows} rows in orders")
        old = pair.dst_app("SELECT count(*), count(*) FILTER (WHERE v = 'old') FROM orders_old")[0]
        check(old == (100, 100), f"the table renamed out of the selection: {old} rows (all 'old' expected)")
        check(resyncs == 1, f"{resyncs} tables copied: the one that entered the selection should have been")
        m.stop()
        FIGURES.append(f"a table swapped into the selection by rename: {rows} rows equal, copied once")


@test
def a_rewrite_reaches_excluded_partitions_and_inheritance_children_safely():
    """A rewrite of a tree whose partition --exclude left out emptied that partition by name on
    the target, which never had it: follow stopped. And a rewrite of an inheritance parent (its
    children rewritten too, but not partitions: no record names them as its own) emptied only the
    parent, then replayed the type change USING NULL, which the target applied to the children's
    rows as well: their values were gone. The partition left out is not touched now, and the
    command converts the rows of every table it reaches that was not emptied."""
    with Pair(18) as pair:
        pair.src.sql("""CREATE EXTENSION dts_decoding;
CREATE TABLE m (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE m_a PARTITION OF m FOR VALUES IN ('a');
CREATE TABLE m_x PARTITION OF m FOR VALUES IN ('x');
INSERT INTO m SELECT g, r, g FROM generate_series(1, 300) g, unnest(ARRAY['a', 'x']) r;
CREATE TABLE base (id int PRIMARY KEY, v int);
CREATE TABLE kid (note text) INHERITS (base);
ALTER TABLE kid ADD PRIMARY KEY (id);
INSERT INTO base SELECT g, g FROM generate_series(1, 200) g;
INSERT INTO kid SELECT g, g, 'k' FROM generate_series(1001, 1200) g""")
        m = Migrate(pair, "excl", "--exclude", "public.m_x").start()
        m.wait_phase("STREAMING")
        pair.src.sql("ALTER TABLE m ALTER COLUMN v TYPE bigint; INSERT INTO m VALUES (9001, 'a', 1)")
        pair.src.sql("ALTER TABLE base ALTER COLUMN v TYPE bigint; UPDATE base SET v = v + 1 WHERE id % 10 = 0")
        m.wait_applied(pair.src.lsn())
        wait_resyncs_done(pair)
        m.wait_applied(pair.src.lsn())
        check(m.running(), f"migrate stopped: {m.log()[-1500:]}")
        check(pair.dst_app("SELECT to_regclass('public.m_x')")[0][0] is None, "the excluded partition appeared")
        nulls = pair.dst_app("SELECT count(*) FROM kid WHERE v IS NULL")[0][0]
        check(nulls == 0, f"{nulls} rows of the inheritance child lost their value")
        rows = check_equal(pair.src, pair.target_view(), ["m_a", "kid"])
        q = "SELECT count(*), sum(v) FROM ONLY base"
        src_base, dst_base = tuple(pair.src.sql(q)[0]), tuple(pair.dst_app(q)[0])
        check(src_base == dst_base, f"ONLY base differs: source {src_base}, target {dst_base}")
        m.stop()
        FIGURES.append(f"rewrites past an excluded partition and into an inheritance child: {rows} rows equal")


@test
def a_temporary_table_made_by_create_table_as_hides_no_rows():
    """CREATE TABLE pg_temp.x AS (or with pg_temp first in search_path) makes a temporary table
    whose rows are never decoded. dts_decoding took it for a permanent one and told the applier
    to set aside the rows of a table of that name until its record, which never came: rows of
    the permanent table of the same name written later in that transaction were lost."""
    with Pair(15) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE scratch (id int PRIMARY KEY, v text)")
        m = Migrate(pair, "tempas").start()
        m.wait_phase("STREAMING")
        pair.src.sql("BEGIN; CREATE TABLE pg_temp.scratch AS SELECT 1 AS id; "
                     "INSERT INTO public.scratch VALUES (1, 'after a qualified temp'); COMMIT")
        pair.src.sql("BEGIN; SET LOCAL search_path = pg_temp, public; CREATE TABLE scratch AS SELECT 2 AS id; "
                     "INSERT INTO public.scratch VALUES (2, 'after a temp by search_path'); COMMIT")
        pair.src.sql("BEGIN; CREATE TEMP TABLE scratch AS SELECT 3 AS id; "
                     "INSERT INTO public.scratch VALUES (3, 'after a TEMP'); COMMIT")
        m.wait_applied(pair.src.lsn())
        rows = check_equal(pair.src, pair.target_view(), ["scratch"])
        check(rows == 3, f"{rows} rows in scratch, 3 expected")
        check(pair.dst_app("SELECT count(*) FROM dts.resync")[0][0] == 0, "a temporary table was copied")
        m.stop()


@test
def a_domain_default_keeps_its_meaning_on_the_target():
    """A domain's default travelled as pg_type.typdefault, the text printed when the domain was
    made: in that session's search_path (a function of another schema unqualified) and DateStyle
    (a date under 'SQL, DMY' read as month first on the target). Since 0.4.0 it is the catalog's
    expression printed for the target."""
    with Pair(16) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE SCHEMA util; "
                     "CREATE FUNCTION util.seven() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 7'")
        m = Migrate(pair, "domdef").start()
        m.wait_phase("STREAMING")
        pair.src.sql("SET search_path = util, public; SET DateStyle = 'SQL, DMY'; "
                     "CREATE DOMAIN public.lucky AS int DEFAULT seven(); "
                     "CREATE DOMAIN public.due AS date DEFAULT '01/04/2026'; "
                     "CREATE TABLE public.t (id int PRIMARY KEY, a public.lucky, b public.due); "
                     "INSERT INTO public.t (id) VALUES (1)")
        m.wait_applied(pair.src.lsn())
        check_equal(pair.src, pair.target_view(), ["t"])
        pair.dst_app("INSERT INTO t (id) VALUES (2)")  # the target's own defaults
        row = pair.dst_app("SELECT a, b::text FROM t WHERE id = 2")[0]
        check(row == (7, "2026-04-01"), f"the domains' defaults on the target gave {row}")
        pair.dst_app("DELETE FROM t WHERE id = 2")
        check_same_schema(pair.src.conninfo, pair.target)
        m.stop()


@test
def a_copy_under_way_goes_before_a_request_queued_earlier():
    """A resync asked by hand is queued; then a rewrite's copy is recorded (its table emptied in
    the rewrite's own target transaction) and follow stops before it is read. On the next start
    the resync driver took the lower id first: it emptied and copied the table in a plan of its
    own, and the rewrite's copy, resumed after it, wrote the rows a second time. The copy under
    way goes first now; the request then copies the table once more; no row twice."""
    with Pair(17) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE t (id int PRIMARY KEY, v text); "
                     "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3000) g")
        m = Migrate(pair, "queued").start()
        m.wait_phase("STREAMING")
        check(m.stop() == 0, f"migrate did not stop cleanly: {m.log()[-800:]}")
        slot = pair.dst_app("SELECT slot FROM dts.migration")[0][0]
        relid = pair.src.value("SELECT 'public.t'::regclass::oid")
        # As `dts_applier resync --tables public.t` leaves it, then as a replayed rewrite does.
        pair.dst_app(f"INSERT INTO dts.resync (slot, tables) VALUES ('{slot}', 'public.t')")
        pair.dst_app(f"""BEGIN; DELETE FROM ONLY t;
WITH r AS (INSERT INTO dts.resync (slot, tables, state, chunks) VALUES ('{slot}', '"public"."t"', 'COPYING', 1)
           RETURNING id)
INSERT INTO dts.copy_chunk (slot, relid, generation, chunk, table_name, key_column)
SELECT '{slot}', {relid}, r.id, 0, '"public"."t"', '' FROM r; COMMIT""")
        pair.src.sql("UPDATE t SET v = 'later' WHERE id % 100 = 0; INSERT INTO t VALUES (3001, 'new')")
        m.start()
        m.wait_applied(pair.src.lsn())
        resyncs = wait_resyncs_done(pair)
        m.wait_applied(pair.src.lsn())
        check(m.running(), f"migrate stopped: {m.log()[-1500:]}")
        rows = check_equal(pair.src, pair.target_view(), ["t"])
        order = [r[0] for r in pair.dst_app("SELECT state FROM dts.resync ORDER BY done_at")]
        check(resyncs == 2 and rows == 3001 and order == ["DONE", "DONE"], f"{resyncs} resyncs, {rows} rows, {order}")
        first = pair.dst_app("SELECT tables FROM dts.resync ORDER BY done_at LIMIT 1")[0][0]
        check(first == '"public"."t"', f"the request queued earlier went first: {first}")
        # After a restart the reconciler knows a table by the highest generation of its chunks:
        # that must be the copy made last (the request's, with the lower id), not the other.
        gens = [r[0] for r in pair.dst_app(f"SELECT DISTINCT generation FROM dts.copy_chunk WHERE relid = {relid}")]
        last = pair.dst_app("SELECT id FROM dts.resync ORDER BY done_at DESC LIMIT 1")[0][0]
        check(gens == [last], f"chunks of generations {gens} left for t; only the last copy's ({last}) should be")
        check(m.stop() == 0, f"migrate did not stop cleanly: {m.log()[-800:]}")
        pair.src.sql("UPDATE t SET v = 'after restart' WHERE id % 7 = 0; INSERT INTO t VALUES (3002, 'newer')")
        m.start()
        m.wait_applied(pair.src.lsn())
        check_equal(pair.src, pair.target_view(), ["t"])
        m.stop()


@test
def a_refused_schema_change_stops_with_the_statement_and_resumes_after_the_fix():
    """The target refuses a replayed constraint (a row there breaks it): nothing of the source
    transaction is committed, the origin stays, the error names the statement and the LSN; once
    the row is fixed a restart replays it."""
    with Pair(1) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE t (id int PRIMARY KEY, qty int)")
        pair.src.sql("INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")
        m = Migrate(pair, "refused").start()
        m.wait_phase("STREAMING")
        pair.dst_app("INSERT INTO t VALUES (1000, -5)")  # by hand, on the target only
        c = pair.src.connect()
        c.autocommit = True
        c.cursor().execute("BEGIN; UPDATE t SET qty = 0 WHERE id = 1; "
                           "ALTER TABLE t ADD CONSTRAINT t_qty_check CHECK (qty >= 0); COMMIT")
        c.close()
        lsn = pair.src.value("SELECT pg_current_wal_lsn()::text")
        wait_for("migrate to stop on the refused schema change", lambda: m.proc.poll() is not None, 120)
        log = m.log()
        check("the schema change `ALTER TABLE" in log and "t_qty_check" in log, f"the statement is not named: {log[-1500:]}")
        check("SQLSTATE 23514" in log, f"the reason's SQLSTATE is missing: {log[-800:]}")
        named = re.search(r"source transaction committed at ([0-9A-F]+/[0-9A-F]+)", log)
        check(named, "the LSN is not named")
        check(pair.dst_app("SELECT qty FROM t WHERE id = 1")[0][0] == 1, "the row change before the DDL was committed")
        check(pair.dst_app("SELECT count(*) FROM pg_constraint WHERE conname = 't_qty_check'")[0][0] == 0,
              "the constraint was committed")
        origin_now = pair.dst_app("SELECT max(remote_lsn)::text FROM pg_replication_origin_status")[0][0]
        check(lsn_value(origin_now) < lsn_value(named.group(1)),
              f"the origin ({origin_now}) moved past the refused transaction ({named.group(1)})")
        pair.dst_app("DELETE FROM t WHERE id = 1000")
        m = Migrate(pair, "refused2").start()
        m.wait_applied(lsn)
        check(pair.dst_app("SELECT qty FROM t WHERE id = 1")[0][0] == 0, "the row change was not applied after the fix")
        check_equal(pair.src, pair.target_view(), ["t"])
        check_same_schema(pair.src.conninfo, pair.target)
        m.stop()


@test
def schema_changes_follow_the_table_selection():
    """With --tables, changes of unselected tables are not replayed, and a new table that matches
    the patterns is created on the target and followed from its first row."""
    with Pair(2) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE app_a (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)")
        m = Migrate(pair, "sel", "--tables", "public.app_*").start()
        m.wait_phase("STREAMING")
        pair.src.sql("ALTER TABLE other ADD COLUMN x int")
        pair.src.sql("CREATE TABLE app_new (id int PRIMARY KEY, v text); INSERT INTO app_new VALUES (1, 'first')")
        pair.src.sql("CREATE TABLE skipped_new (id int PRIMARY KEY); INSERT INTO skipped_new VALUES (1)")
        pair.src.sql("ALTER TABLE app_a ADD COLUMN y text; INSERT INTO app_a VALUES (1, 'y')")
        pair.src.sql("CREATE TABLE app_gone (id int PRIMARY KEY); DROP TABLE other")
        pair.src.sql("DROP TABLE app_gone")
        # A dropped index names no table: a unique one left on the target would refuse the
        # duplicates the source now takes (it was not replayed under --tables).
        pair.src.sql("CREATE UNIQUE INDEX app_new_v ON app_new (v)")
        pair.src.sql("DROP INDEX app_new_v; INSERT INTO app_new VALUES (2, 'first')")
        m.wait_applied(pair.src.lsn())
        check(pair.dst_app("SELECT to_regclass('public.app_new_v')")[0][0] is None, "a dropped index stayed")
        check(pair.dst_app("SELECT to_regclass('public.app_gone')")[0][0] is None, "a selected table dropped stayed")
        check(pair.dst_app("SELECT to_regclass('public.other')")[0][0] is None, "an unselected table was created")
        check(pair.dst_app("SELECT to_regclass('public.skipped_new')")[0][0] is None, "an unselected new table was created")
        check_equal(pair.src, pair.target_view(), ["app_a", "app_new"])
        m.stop()


@test
def a_large_create_table_as_and_a_rewrite_stream_among_other_transactions():
    """A CREATE TABLE AS of 200k rows and a rewriting ALTER, each large enough to be streamed
    (a small --decoding-work-mem) while another session commits rows in between: the new
    table's rows arrive once (copied after it exists), the rewritten table is copied again,
    the other session's rows are all applied."""
    with Pair(5) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE other (id serial PRIMARY KEY, v int); "
                     "CREATE TABLE wide (id int PRIMARY KEY, v int); "
                     "INSERT INTO wide SELECT g, g FROM generate_series(1, 100000) g")
        m = Migrate(pair, "streamed", "--decoding-work-mem", "1MB").start()
        m.wait_phase("STREAMING")
        stop = threading.Event()

        def other():
            c = pair.src.connect()
            c.autocommit = True
            while not stop.is_set():
                c.cursor().execute("INSERT INTO other (v) VALUES (1)")
            c.close()
        t = threading.Thread(target=other)
        t.start()
        try:
            pair.src.sql("CREATE TABLE big_as AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200000) g")
            pair.src.sql("BEGIN; UPDATE wide SET v = v + 1 WHERE id <= 50000; "
                         "ALTER TABLE wide ADD COLUMN r float8 DEFAULT random(); UPDATE wide SET v = 0 WHERE id = 1; COMMIT")
        finally:
            stop.set()
            t.join()
        m.wait_applied(pair.src.lsn())
        wait_resyncs_done(pair)
        m.wait_applied(pair.src.lsn())
        rows = check_equal(pair.src, pair.target_view(), ["big_as", "wide", "other"])
        check_same_schema(pair.src.conninfo, pair.target)
        streamed = pair.src.value("SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 'dts_migrate'")
        check(streamed and streamed >= 2, f"{streamed} transactions streamed: the test streams nothing")
        m.stop()
        FIGURES.append(f"CREATE TABLE AS of 200k rows and a rewrite, {streamed} transactions streamed among other "
                       f"commits: {rows} rows equal")


@test
def schema_changes_during_the_copy_end_equal():
    """Columns added (and updated), renamed, dropped and retyped on four tables while the copy
    reads them in chunks: chunks read before and after each change, the copy's column list
    fixed before it; every table ends equal, schema included (each is copied again once its
    change reaches the stream)."""
    with Pair(6) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding;" + "".join(
            f"CREATE TABLE big{i} (id bigint PRIMARY KEY, v text, n int); "
            f"INSERT INTO big{i} SELECT g, repeat(md5(g::text), 3), g FROM generate_series(1, 120000) g;" for i in range(4)))
        m = Migrate(pair, "during", "--jobs", "1", "--split-larger-than", "1MB").start()

        def chunks_done():
            rows = pair.dst_app("SELECT count(*) FROM pg_tables WHERE schemaname = 'dts' AND tablename = 'copy_chunk'")
            return rows[0][0] and pair.dst_app("SELECT count(*) FROM dts.copy_chunk WHERE snapshot IS NOT NULL")[0][0]
        wait_for("the copy to be under way", lambda: m.running() and chunks_done() >= 4, 180)
        before = chunks_done()
        pair.src.sql("ALTER TABLE big0 ADD COLUMN x int DEFAULT 7; UPDATE big0 SET x = 8 WHERE id % 1000 = 0")
        pair.src.sql("ALTER TABLE big1 RENAME COLUMN v TO w; UPDATE big1 SET w = 'renamed' WHERE id % 777 = 0")
        pair.src.sql("ALTER TABLE big2 DROP COLUMN v; INSERT INTO big2 VALUES (-5, -5)")
        pair.src.sql("ALTER TABLE big3 ALTER COLUMN n TYPE bigint; UPDATE big3 SET n = n * 1000000000 WHERE id % 999 = 0")
        during = chunks_done()
        m.wait_phase("STREAMING")
        pair.src.sql("INSERT INTO big0 (id) VALUES (0)")
        m.wait_applied(pair.src.lsn())
        wait_resyncs_done(pair)
        m.wait_applied(pair.src.lsn())
        rows = check_equal(pair.src, pair.target_view(), [f"big{i}" for i in range(4)])
        check_same_schema(pair.src.conninfo, pair.target)
        total = pair.dst_app("SELECT count(*) FROM dts.copy_chunk WHERE generation = 0")[0][0]
        check(before < total // 4 and during < total,
              f"the changes came after the copy ({before}-{during} of {total} chunks): the test proves nothing")
        m.stop()
        FIGURES.append(f"4 tables changed while the copy was between chunk {before} and {during} of {total}: "
                       f"{rows} rows equal, schema equal")


def changed_while_copied_again(index, tag, changes, filler_rows=300000):
    """Follow stopped, the source rewrites t (so it is copied again), then a large transaction of
    another table, then `changes` of t; follow started again: the copy again reads the source
    after `changes` while the stream is still behind them. Returns the applier's log and rows."""
    with Pair(index) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE t (id int PRIMARY KEY, v text, pad text); "
                     "INSERT INTO t SELECT g, 'v' || g, repeat(md5(g::text), 4) FROM generate_series(1, 500000) g; "
                     "CREATE TABLE filler (id int, v text)")
        m = Migrate(pair, tag)
        m.start().wait_phase("STREAMING")
        check(m.stop() == 0, f"migrate did not stop cleanly: {m.log()[-800:]}")
        pair.src.sql("ALTER TABLE t ALTER COLUMN id TYPE bigint")  # a rewrite: t is copied again
        pair.src.sql(f"INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, {filler_rows}) g")
        for sql in changes:
            pair.src.sql(sql)
        m.start()
        m.wait_applied(pair.src.lsn())
        wait_resyncs_done(pair)
        m.wait_applied(pair.src.lsn())
        rows = check_equal(pair.src, pair.target_view(), ["t", "filler"])
        check_same_schema(pair.src.conninfo, pair.target)
        m.stop()
        return m.log(), rows


@test
def columns_changed_while_the_table_is_copied_again_keep_their_values():
    """While t is copied again, the source renames one of its columns and adds another, filled by
    an UPDATE: the copy must wait for the stream to bring them (not copy the columns both sides
    have, which would leave the renamed one NULL for good, as the long crash soak once found)."""
    # A larger filler: the stream must still be behind the changes when the copy first reads
    # (300,000 rows were applied before it, now and then, on tmpfs).
    log, rows = changed_while_copied_again(7, "reshaped", [
        "ALTER TABLE t RENAME COLUMN v TO w",
        "ALTER TABLE t ADD COLUMN extra int; UPDATE t SET extra = id WHERE id % 1000 = 0"], filler_rows=1000000)
    deferred = log.count("the source has columns the target lacks yet")
    check(deferred >= 1, "the copy again never read the source ahead of the target: the test proves nothing")
    FIGURES.append(f"columns renamed and added while the table was copied again: {rows} rows equal, "
                   f"{deferred} chunk reads waited for the stream's schema change")


@test
def rewrites_while_the_table_is_copied_again_neither_duplicate_nor_hang():
    """While t is copied again, the source rewrites it a second time (the emptying waits for the
    chunk in flight, which would otherwise commit its rows beside the new copy's: duplicate key);
    then one transaction adds a column (its replay takes t's lock in the applier's open
    transaction) and rewrites t, which waits for the chunk being read — whose COPY needs that
    lock, so it must give way (lock_timeout) rather than deadlock; then one transaction rewrites
    t twice, the second before the first's copy can start (the earlier request is withdrawn,
    not waited for: waiting hung the applier). t ends equal, schema too."""
    log, rows = changed_while_copied_again(8, "rewritten", [
        "ALTER TABLE t ALTER COLUMN pad TYPE varchar(200); UPDATE t SET v = 'again' WHERE id % 500 = 0",
        "BEGIN; ALTER TABLE t ADD COLUMN z int; ALTER TABLE t ALTER COLUMN id TYPE numeric(20); COMMIT",
        "BEGIN; ALTER TABLE t ALTER COLUMN id TYPE bigint; ALTER TABLE t ALTER COLUMN id TYPE numeric(22); "
        "UPDATE t SET v = 'twice' WHERE id % 999 = 0; COMMIT"])
    copies = log.count("is copied again after this schema change")
    check(copies >= 5, f"{copies} copies again asked for (a type change that is no rewrite?): the test proves nothing")
    FIGURES.append(f"t rewritten again while copied again, then a lock the copy needs, then two rewrites in one "
                   f"transaction: {rows} rows equal, {log.count('withdrawn')} chunks of earlier copies withdrawn")


def rewrite_a_partition_tree(index, version):
    """ALTER COLUMN TYPE on the root of a tree three levels deep, under rows before and after;
    returns how many tables were copied again and the rows compared."""
    with Pair(index) as pair:
        pair.src.sql(f"""CREATE EXTENSION dts_decoding VERSION '{version}';
CREATE TABLE m (id int, region text, sub int, v int, PRIMARY KEY (id, region, sub)) PARTITION BY LIST (region);
CREATE TABLE m_a PARTITION OF m FOR VALUES IN ('a');
CREATE TABLE m_b PARTITION OF m FOR VALUES IN ('b') PARTITION BY RANGE (sub);
CREATE TABLE m_b1 PARTITION OF m_b FOR VALUES FROM (0) TO (100);
CREATE TABLE m_b2 PARTITION OF m_b FOR VALUES FROM (100) TO (200) PARTITION BY LIST (id);
CREATE TABLE m_b2x PARTITION OF m_b2 DEFAULT;
CREATE TABLE solo (id int PRIMARY KEY, v int);
INSERT INTO m SELECT g, 'a', 0, g FROM generate_series(1, 500) g;
INSERT INTO m SELECT g, 'b', g % 200, g FROM generate_series(1, 2000) g;
INSERT INTO solo SELECT g, g FROM generate_series(1, 100) g""")
        m = Migrate(pair, "ptree").start()
        m.wait_phase("STREAMING")
        pair.src.sql("ALTER TABLE m ALTER COLUMN v TYPE bigint; INSERT INTO m VALUES (9001, 'b', 150, 1)")
        pair.src.sql("UPDATE m SET v = v + 1 WHERE id % 100 = 0; INSERT INTO m VALUES (9002, 'b', 5, 2)")
        m.wait_applied(pair.src.lsn())
        resyncs = wait_resyncs_done(pair)
        m.wait_applied(pair.src.lsn())
        leaves = ["m_a", "m_b1", "m_b2x", "solo"]
        counts = {t: pair.dst_app(f"SELECT count(*) FROM {t}")[0][0] for t in leaves}
        check(all(n > 0 for n in counts.values()), f"a leaf was left empty on the target: {counts}")
        rows = check_equal(pair.src, pair.target_view(), leaves)
        check_same_schema(pair.src.conninfo, pair.target)
        check(m.running(), f"migrate stopped: {m.log()[-1500:]}")
        m.stop()
        warned = "older than 0.4.0" in m.log()
        check(warned == (version != "0.4.0"), f"the warning about unnamed partitions: {warned} with {version}")
        return resyncs, rows


@test
def a_rewrite_of_a_partition_tree_copies_every_level_again():
    """ALTER COLUMN TYPE on the root of a partition tree three levels deep rewrites every leaf on
    the source; the target must end with every leaf's rows. The record listed the root's direct
    partitions only: the emptying (DELETE FROM the root) reached the deeper leaves, the copy did
    not, and their rows were gone from the target for good (here: follow then stopped on an
    UPDATE of a row that was no longer there). dts_decoding 0.4.0 names every leaf rewritten and
    its ancestors, so all three are copied again; with 0.3.0 only the leaves copied again are
    emptied, and the replayed command converts the deeper one on the target."""
    resyncs, rows = rewrite_a_partition_tree(12, "0.4.0")
    check(resyncs == 3, f"{resyncs} tables copied again: each of the three leaves should have been")
    old_resyncs, old_rows = rewrite_a_partition_tree(13, "0.3.0")
    check(old_resyncs == 1, f"{old_resyncs} tables copied again with 0.3.0: its record names the direct partitions only")
    FIGURES.append(f"a rewrite of a partition tree three levels deep: {rows} rows equal in its leaves, "
                   f"{resyncs} leaves copied again (0.3.0 records: {old_rows} rows equal, {old_resyncs} copied again)")


@test
def a_forged_schema_change_message_is_not_replayed():
    """Any role may write a dts.ddl message with pg_logical_emit_message. One that drops a table,
    unsigned or with a made-up signature, is ignored (with a warning naming its LSN); the
    table stays on the target and a real schema change after it is replayed, and after the
    extension is created again with a new key."""
    with Pair(4) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE t (id int PRIMARY KEY); "
                     "INSERT INTO t VALUES (1); CREATE ROLE mallory LOGIN; GRANT ALL ON t TO mallory")
        pair.dst.sql("CREATE ROLE mallory LOGIN")  # roles are the server's: not migrated
        m = Migrate(pair, "forged").start()
        m.wait_phase("STREAMING")
        forged = '{"ddl": "drop", "tag": "DROP TABLE", "objects": [{"object_type": "table", "identity": "public.t", "original": true}]}'
        mallory = pair.src.conninfo.replace("user=postgres", "user=mallory")
        run_sql(mallory, "SELECT pg_logical_emit_message(true, 'dts.ddl', %s)", (forged,))
        run_sql(mallory, "SELECT pg_logical_emit_message(true, 'dts.ddl', %s)", ("0" * 64 + " " + forged,))
        pair.src.sql("ALTER TABLE t ADD COLUMN after_forgery text; INSERT INTO t VALUES (2, 'real')")
        m.wait_applied(pair.src.lsn())
        check(pair.dst_app("SELECT to_regclass('public.t') IS NOT NULL")[0][0], "a forged record dropped the table")
        check_equal(pair.src, pair.target_view(), ["t"])
        warned = re.findall(r"dts.ddl message at [0-9A-F]+/[0-9A-F]+ is not signed", m.log())
        check(len(warned) == 2, f"{len(warned)} warnings for 2 forged records: {m.log()[-1500:]}")
        # The extension dropped and created again (as an error's hint suggests): a new key, read
        # again at once (it was read only while none was known, and at most every 30 s).
        pair.src.sql("DROP EXTENSION dts_decoding")
        pair.src.sql("CREATE EXTENSION dts_decoding")
        pair.src.sql("ALTER TABLE t ADD COLUMN after_new_key int; INSERT INTO t VALUES (3, 'new key', 3)")
        m.wait_applied(pair.src.lsn())
        check_equal(pair.src, pair.target_view(), ["t"])
        warned = re.findall(r"dts.ddl message at [0-9A-F]+/[0-9A-F]+ is not signed", m.log())
        check(len(warned) == 2, f"a record signed with the new key was taken for a forgery: {m.log()[-1500:]}")
        m.stop()


@test
def a_unique_index_made_in_the_stream_is_seen_before_rows_are_merged():
    """A unique index created on the source, then changes that only that index orders, in its
    transaction and in two after it: a row moves email 'a' away, the next takes it. Rows
    merged per key go inserts first, which the new index refuses: what the target had besides
    the key was read (by a session that cannot see the uncommitted index) and kept, so the
    migration stopped for good on a legal workload. It must end equal."""
    with Pair(9) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE u (id int PRIMARY KEY, email text); "
                     "INSERT INTO u VALUES (1, 'a')")
        m = Migrate(pair, "uniq").start()
        m.wait_phase("STREAMING")
        check(m.stop() == 0, f"migrate did not stop cleanly: {m.log()[-800:]}")
        pair.src.sql("UPDATE u SET email = 'a' WHERE id = 1")  # what the target has is asked here
        pair.src.sql("BEGIN; CREATE UNIQUE INDEX u_email ON u (email); "
                     "UPDATE u SET email = 'b' WHERE id = 1; INSERT INTO u VALUES (2, 'a'); COMMIT")
        pair.src.sql("UPDATE u SET email = 'c' WHERE id = 2")
        pair.src.sql("INSERT INTO u VALUES (3, 'a')")
        m.start()
        m.wait_applied(pair.src.lsn())
        check_equal(pair.src, pair.target_view(), ["u"])
        check(pair.dst_app("SELECT to_regclass('public.u_email') IS NOT NULL")[0][0], "the index was not replayed")
        m.stop()


@test
def schema_text_does_not_depend_on_the_ddl_sessions_date_style():
    """A partition bound, column defaults and the value a new column gives existing rows, written
    by a session with DateStyle 'SQL, DMY' and IntervalStyle sql_standard: the catalog text
    travelled in those styles ('01/04/2026' for 1 April) and the target, reading MDY, made
    the partition start on 4 January."""
    with Pair(10) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; "
                     "CREATE TABLE ev (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at); "
                     "CREATE TABLE ev_mar PARTITION OF ev FOR VALUES FROM ('2026-03-01') TO ('2026-04-01'); "
                     "INSERT INTO ev VALUES (1, '2026-03-05')")
        m = Migrate(pair, "datestyle").start()
        m.wait_phase("STREAMING")
        pair.src.sql("SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard'; "
                     "CREATE TABLE ev_apr PARTITION OF ev FOR VALUES FROM ('01/04/2026') TO ('01/05/2026'); "
                     "ALTER TABLE ev ADD COLUMN due date DEFAULT '03/04/2026', "
                     "ADD COLUMN wait interval DEFAULT '1 day 2 hours'; "
                     "INSERT INTO ev (id, at) VALUES (2, '03/04/2026')")
        m.wait_applied(pair.src.lsn())
        bounds = "SELECT relname, pg_get_expr(relpartbound, oid) FROM pg_class WHERE relispartition ORDER BY 1"
        check(pair.dst_app(bounds) == pair.src.sql(bounds), f"partition bounds on the target: {pair.dst_app(bounds)}")
        defaults = ("SELECT column_name, column_default FROM information_schema.columns WHERE table_name = 'ev' "
                    "ORDER BY 1")
        check(pair.dst_app(defaults) == pair.src.sql(defaults), f"defaults on the target: {pair.dst_app(defaults)}")
        check_equal(pair.src, pair.target_view(), ["ev"])
        m.stop()


@test
def a_schema_change_rolled_back_to_its_savepoint_in_a_streamed_transaction_is_undone():
    """In a transaction streamed while in progress, a savepoint whose first statements are
    schema changes (DROP TABLE, ADD COLUMN) followed by rows, rolled back: the records came under
    the top-level transaction, the target's savepoint was made at the first row, after them,
    and the table stayed dropped there."""
    with Pair(11) as pair:
        pair.src.sql("CREATE EXTENSION dts_decoding; CREATE TABLE keep (id int PRIMARY KEY, v text); "
                     "CREATE TABLE big (id int PRIMARY KEY, v text); INSERT INTO keep VALUES (1, 'k')")
        m = Migrate(pair, "subddl", "--decoding-work-mem", "64kB").start()
        m.wait_phase("STREAMING")
        pair.src.sql("BEGIN; INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g; "
                     "SAVEPOINT s; DROP TABLE keep; ALTER TABLE big ADD COLUMN gone int; "
                     "INSERT INTO big SELECT g, 'z', g FROM generate_series(40001, 50000) g; ROLLBACK TO SAVEPOINT s; "
                     "SAVEPOINT t; ALTER TABLE big ADD COLUMN kept int; RELEASE SAVEPOINT t; "
                     "INSERT INTO big SELECT g, 'y', g FROM generate_series(20001, 30000) g; COMMIT")
        pair.src.sql("INSERT INTO keep VALUES (2, 'after')")
        m.wait_applied(pair.src.lsn())
        check(pair.dst_app("SELECT to_regclass('public.keep') IS NOT NULL")[0][0],
              "a table dropped in a rolled-back savepoint was dropped on the target")
        check_equal(pair.src, pair.target_view(), ["keep", "big"])
        check_same_schema(pair.src.conninfo, pair.target)
        m.stop()


def check_item(pair, name):
    out = subprocess.run([APPLIER, "check", "--source", pair.src.conninfo, "--target", pair.target],
                         capture_output=True, text=True, timeout=120)
    for i, line in enumerate(out.stdout.splitlines()):
        if line.startswith(name + " "):
            fix = out.stdout.splitlines()[i + 1] if i + 1 < len(out.stdout.splitlines()) else ""
            return line.split()[1], line, fix, out.returncode
    check(False, f"check printed no {name} item: {out.stdout[-1500:]} {out.stderr[-500:]}")


@test
def check_says_whether_schema_changes_are_captured():
    """check's ddl_capture item: a warning without the extension and with 0.3.0 (its rewrite
    records do not name deeper partitions), passed once updated, failed (exit 1, with the fix)
    when one of its event triggers is disabled."""
    with Pair(3) as pair:
        state, line, _, _ = check_item(pair, "ddl_capture")
        check(state == "WARNING" and "CREATE EXTENSION dts_decoding" in check_item(pair, "ddl_capture")[2],
              f"without the extension: {line}")
        pair.src.sql("CREATE EXTENSION dts_decoding VERSION '0.3.0'")
        state, line, fix, _ = check_item(pair, "ddl_capture")
        check(state == "WARNING" and "partition" in line and "ALTER EXTENSION dts_decoding UPDATE" in fix,
              f"with 0.3.0: {line} / {fix}")
        pair.src.sql("ALTER EXTENSION dts_decoding UPDATE")
        state, line, _, _ = check_item(pair, "ddl_capture")
        check(state == "PASSED" and "0.4.0" in line, f"with the extension updated: {line}")
        pair.src.sql("ALTER EVENT TRIGGER dts_decoding_table_rewrite DISABLE")
        state, line, fix, rc = check_item(pair, "ddl_capture")
        check(state == "FAILED" and "ENABLE" in fix and rc != 0, f"a trigger disabled: {line} / {fix} (exit {rc})")


if __name__ == "__main__":
    main("ddl_test", lambda: [print(f"  figure: {f}") for f in FIGURES])
