-- Large transactions: spilled to disk without streaming (logical_decoding_work_mem is 64kB
-- here), streamed in blocks with it, including aborted subtransactions and transactions.
\pset format unaligned
SET synchronous_commit = on;

CREATE TABLE big (id int PRIMARY KEY, v text);
SELECT 'init' FROM pg_create_logical_replication_slot('regress_stream', 'dts_decoding');

-- Stream blocks come and go with memory accounting: their count is not the point.
CREATE FUNCTION summary(VARIADIC opts text[]) RETURNS TABLE (action text, n text) LANGUAGE sql AS $$
  SELECT data::json->>'action',
         CASE WHEN data::json->>'action' IN ('stream_start', 'stream_stop') THEN 'some'
              ELSE count(*)::text END
    FROM pg_logical_slot_peek_changes('regress_stream', NULL, NULL, VARIADIC array['format', 'json'] || opts)
   GROUP BY 1 ORDER BY 1
$$;

INSERT INTO big SELECT g, repeat('v', 50) FROM generate_series(1, 5000) g;
SELECT * FROM summary(VARIADIC '{}');
SELECT spill_txns > 0 AS spilled FROM pg_stat_replication_slots WHERE slot_name = 'regress_stream';
SELECT * FROM summary('streaming', 'true');
SELECT stream_txns > 0 AS streamed FROM pg_stat_replication_slots WHERE slot_name = 'regress_stream';
-- The first block says so.
SELECT data FROM pg_logical_slot_peek_changes('regress_stream', NULL, NULL, 'format', 'json', 'streaming', 'true')
 WHERE data LIKE '%stream_start%' LIMIT 2;
SELECT 'skip' FROM pg_logical_slot_get_changes('regress_stream', NULL, NULL, 'format', 'json') LIMIT 0;
SELECT count(*) FROM pg_logical_slot_get_changes('regress_stream', NULL, NULL, 'format', 'json');

-- A subtransaction rolled back after its changes were streamed: a stream_abort naming it.
BEGIN;
INSERT INTO big SELECT g, repeat('w', 50) FROM generate_series(10001, 13000) g;
SAVEPOINT s1;
INSERT INTO big SELECT g, repeat('x', 50) FROM generate_series(20001, 23000) g;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO big VALUES (30000, 'after');
COMMIT;
-- How many of the rolled-back rows were streamed before the rollback depends on memory
-- accounting; the 3001 kept rows always are.
SELECT action, CASE WHEN action = 'insert' THEN (n::int >= 3001)::text ELSE n END AS n
  FROM summary('streaming', 'true');
SELECT (data::json->>'xid') <> (data::json->>'subxid') AS names_a_subtransaction
  FROM pg_logical_slot_peek_changes('regress_stream', NULL, NULL, 'format', 'json', 'streaming', 'true',
    'include_xids', 'true')
 WHERE data LIKE '%stream_abort%';
-- With xids shown, each change's subtransaction is announced when it switches.
SELECT count(*) > 0 AS announced FROM pg_logical_slot_peek_changes('regress_stream', NULL, NULL,
    'format', 'json', 'streaming', 'true', 'include_xids', 'true')
 WHERE data LIKE '%stream_xid%';
-- Without streaming the aborted subtransaction is simply absent.
SELECT * FROM summary(VARIADIC '{}');
SELECT count(*) FROM pg_logical_slot_get_changes('regress_stream', NULL, NULL, 'format', 'json');

-- A transaction already rolled back when decoding reaches it: PostgreSQL notices the abort at
-- its first catalog lookup and stops streaming it, so none of its changes is ever sent (at
-- most an empty stream block, depending on whose lookup notices first).
BEGIN;
INSERT INTO big SELECT g, repeat('y', 50) FROM generate_series(40001, 45000) g;
ROLLBACK;
SELECT count(*) AS changes_or_commits FROM summary('streaming', 'true')
 WHERE action NOT IN ('stream_start', 'stream_stop');
-- Without streaming an aborted transaction leaves nothing.
SELECT count(*) FROM pg_logical_slot_get_changes('regress_stream', NULL, NULL, 'format', 'json');

-- A long transaction whose changes are all filtered out still decodes to nothing at all.
INSERT INTO big SELECT g, 'z' FROM generate_series(50001, 60000) g;
SELECT count(*) FROM pg_logical_slot_get_changes('regress_stream', NULL, NULL, 'format', 'json',
  'exclude_tables', 'big');

SELECT pg_drop_replication_slot('regress_stream');
