#!/usr/bin/python3
"""Writes the decoder's seed corpus: real binary frames from dts_decoding on a throwaway
server (relations, every base type, NULLs, unchanged TOAST, old keys and full old rows,
truncate, messages, a streamed transaction with a subtransaction). One frame per file,
named by its SHA-1. Run it again when the record format changes:
    /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import Server  # noqa: E402

WORKLOAD = """
CREATE TABLE t (id int PRIMARY KEY, i2 int2, i8 int8, f4 float4, f8 float8, n numeric, b bool, tx text, bt bytea,
                ts timestamptz, d date, u uuid, j jsonb, a int[], iv interval, big text);
ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE full_id (a int, b text); ALTER TABLE full_id REPLICA IDENTITY FULL;
INSERT INTO t VALUES (1, 2, 3, 1.5, 2.25, 12345.6789, true, 'text', '\\x00ff', '2024-01-01 10:00+00', '2024-01-01',
                      'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2]}', '{1,2,3}', '1 day 2 hours', repeat('x', 5000));
INSERT INTO t (id) VALUES (2);
UPDATE t SET tx = 'changed' WHERE id = 1;
UPDATE t SET id = 10 WHERE id = 2;
DELETE FROM t WHERE id = 10;
INSERT INTO full_id VALUES (1, 'a'), (1, 'a');
UPDATE full_id SET b = 'b' WHERE a = 1;
DELETE FROM full_id;
TRUNCATE full_id;
SELECT pg_logical_emit_message(true, 'dts_marker', 'wait');
SELECT pg_logical_emit_message(false, 'dts.heartbeat', '2026-11-21');
"""


def main():
    out = os.path.join(HERE, "corpus")
    os.makedirs(out, exist_ok=True)
    s = Server("fuzz_corpus", int(os.environ.get("DTS_CORPUS_PORT", "25790")))
    try:
        s.sql("SELECT pg_create_logical_replication_slot('corpus', 'dts_decoding')")
        for statement in WORKLOAD.split(";\n"):
            if statement.strip():
                s.sql(statement)
        s.sql("SET logical_decoding_work_mem = '64kB'")
        frames = [r[0] for r in s.sql(
            "SELECT data FROM pg_logical_slot_get_binary_changes('corpus', NULL, NULL, 'format', 'binary', 'message_bytes', '4096')")]
        # A transaction large enough to be streamed, with a rolled-back subtransaction.
        c = s.connect()
        c.autocommit = False
        with c.cursor() as cur:
            cur.execute("SET logical_decoding_work_mem = '64kB'")
            cur.execute("INSERT INTO t (id, tx) SELECT g, repeat('s', 100) FROM generate_series(100, 3000) g")
            cur.execute("SAVEPOINT s1")
            cur.execute("INSERT INTO t (id) VALUES (5000)")
            cur.execute("ROLLBACK TO s1")
        c.commit()
        c.close()
        c = s.connect()
        with c.cursor() as cur:
            cur.execute("SET logical_decoding_work_mem = '64kB'")
            cur.execute("SELECT data FROM pg_logical_slot_get_binary_changes('corpus', NULL, NULL, 'format', 'binary', "
                        "'streaming', 'on', 'message_bytes', '4096')")
            streamed = [r[0] for r in cur.fetchall()]
        c.close()
        print(f"make_corpus: {len(streamed)} frames of the streamed transaction")
        frames += streamed[:12] + streamed[-4:]
        kept = 0
        for f in frames:
            data = bytes(f)
            path = os.path.join(out, hashlib.sha1(data).hexdigest())
            if not os.path.exists(path):
                with open(path, "wb") as fh:
                    fh.write(data)
                kept += 1
        print(f"make_corpus: {len(frames)} frames, {kept} new files in {out}")
    finally:
        s.destroy()


if __name__ == "__main__":
    main()
