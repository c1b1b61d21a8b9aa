"""Helpers of the fault suite: a TCP proxy the test can cut, a many-types workload that
updates TOASTed columns, and a row-by-row comparison that counts lost and duplicated rows."""
import collections
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import run_sql  # noqa: E402


class TcpProxy:
    """Forwards 127.0.0.1:listen_port to 127.0.0.1:target_port. cut() closes every open
    connection and refuses new ones (the network is gone); restore() lets them through."""

    def __init__(self, listen_port, target_port):
        self.target_port = target_port
        self.up = True
        self.conns = []
        self.lock = threading.Lock()
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", listen_port))
        self.server.listen(64)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.up = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.up = True

    def close(self):
        self.closed = True
        self.cut()
        self.server.close()


MANY_TYPES = """
CREATE TABLE many_types (id bigserial PRIMARY KEY, amount numeric(14,4), happened timestamptz, tags text[],
                         doc jsonb, blob bytea, big text, flag bool, uid uuid, span interval, f8 float8);
INSERT INTO many_types (amount, happened, tags, doc, blob, big, flag, uid, span, f8)
  SELECT g * 1.2345, '2024-01-01'::timestamptz + g * interval '1 s', ARRAY['a', g::text], jsonb_build_object('g', g),
         decode(md5(g::text), 'hex'), CASE WHEN g % 5 = 0 THEN repeat(md5(g::text), 400) ELSE 'small' END,
         g % 2 = 0, md5(g::text)::uuid, g * interval '1 min', g / 7.0
  FROM generate_series(1, 5000) g;
"""


class SourceWriter(threading.Thread):
    """Calls `write(cur)` on the source until stopped, `pause` seconds apart; errors of a
    read-only or restarting source are ridden out with a new connection."""

    pause = 0.002

    def __init__(self, server, seed):
        super().__init__(daemon=True)
        self.server, self.rng, self.stopping = server, random.Random(seed), False

    def write(self, cur):
        raise NotImplementedError

    def run(self):
        import psycopg2
        conn = None
        while not self.stopping:
            try:
                if conn is None:
                    conn = self.server.connect()
                with conn.cursor() as cur:
                    self.write(cur)
            except psycopg2.Error:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - already gone
                    pass
                conn = None
                time.sleep(0.05)
            time.sleep(self.pause)

    def stop(self):
        self.stopping = True
        self.join(30)


class ManyTypesWriter(SourceWriter):
    """Inserts, updates (often leaving the TOASTed column unchanged, sometimes rewriting it)
    and deletes many_types rows until stopped."""

    def __init__(self, server, seed=7):
        super().__init__(server, seed)
        self.ops = 0

    def write(self, cur):
        op = self.rng.random()
        rid = self.rng.randint(1, 5000)
        if op < 0.4:
            cur.execute("UPDATE many_types SET flag = NOT flag, amount = amount + 1 WHERE id = %s", (rid,))
        elif op < 0.55:
            cur.execute("UPDATE many_types SET big = repeat(md5(random()::text), 300) WHERE id = %s", (rid,))
        elif op < 0.9:
            cur.execute("INSERT INTO many_types (amount, happened, tags, doc, blob, big, flag, uid, span, f8) "
                        "VALUES (1.5, now(), ARRAY['x'], '{\"k\": 1}', '\\x00ff', repeat('z', 5000), true, "
                        "gen_random_uuid(), interval '1 day', 0.1)")
        else:
            cur.execute("DELETE FROM many_types WHERE id = %s", (rid,))
        self.ops += 1


class DdlWriter(SourceWriter):
    """A schema change every `every` seconds (a new table with rows, a new column on a busy
    table, an index, a type change that rewrites a table, a column renamed), with rows written
    to the new tables in between, until stopped. `tables` lists the tables it made, for the
    final comparison."""

    pause = 0.01

    def __init__(self, server, every=2.0, seed=11):
        super().__init__(server, seed)
        self.every, self.changes, self.tables = every, 0, []
        self.next_change = time.monotonic() + every

    def change(self, cur):
        n = self.changes
        kind = n % 5
        if kind == 0 or not self.tables:
            t = f"ddl_t{n}"
            cur.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v text); "
                        f"INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 500) g")
            self.tables.append(t)
        elif kind == 1:
            cur.execute(f"ALTER TABLE items ADD COLUMN extra{n} int DEFAULT {n}")
        elif kind == 2:
            cur.execute(f"CREATE INDEX ddl_i{n} ON {self.tables[-1]} (v)")
        elif kind == 3:
            cur.execute(f"ALTER TABLE {self.tables[-1]} ALTER COLUMN id TYPE bigint")  # a rewrite: copied again
        else:
            cur.execute(f"ALTER TABLE {self.tables[-1]} RENAME COLUMN v TO v{n}; "
                        f"UPDATE {self.tables[-1]} SET v{n} = 'renamed' WHERE id = 1")

    def write(self, cur):
        if time.monotonic() >= self.next_change:
            self.change(cur)
            self.changes += 1
            self.next_change = time.monotonic() + self.every
        elif self.tables:
            t = self.rng.choice(self.tables)
            cur.execute(f"INSERT INTO {t} (id) VALUES (%s) ON CONFLICT DO NOTHING", (self.rng.randint(501, 100000),))


def rows_of(conninfo, table):
    return collections.Counter(r[0] for r in run_sql(conninfo, f"SELECT t::text FROM {table} t"))


def compare_rows(source_conninfo, target_conninfo, tables):
    """Every row of every table, as text, on both sides: (rows compared, lost, duplicated),
    where a lost row is on the source but not the target, and a duplicated (or changed) one
    is on the target more often than on the source."""
    compared = lost = duplicated = 0
    details = []
    for t in tables:
        a, b = rows_of(source_conninfo, t), rows_of(target_conninfo, t)
        missing = a - b
        extra = b - a
        compared += sum(a.values())
        lost += sum(missing.values())
        duplicated += sum(extra.values())
        if missing or extra:
            details.append(f"{t}: {sum(missing.values())} lost, {sum(extra.values())} extra, "
                           f"e.g. {list(missing)[:1]} {list(extra)[:1]}")
    return compared, lost, duplicated, details

