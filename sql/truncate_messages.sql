-- TRUNCATE with its options, and logical messages.
\pset format unaligned
SET synchronous_commit = on;

CREATE TABLE parent (id serial PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE lone (id int PRIMARY KEY);

SELECT 'init' FROM pg_create_logical_replication_slot('regress_trunc', 'dts_decoding');

TRUNCATE lone;
TRUNCATE parent, lone RESTART IDENTITY CASCADE;
TRUNCATE parent CASCADE;
BEGIN;
INSERT INTO lone VALUES (1);
TRUNCATE lone;
INSERT INTO lone VALUES (2);
COMMIT;
SELECT data FROM pg_logical_slot_get_changes('regress_trunc', NULL, NULL, 'format', 'json');

-- Messages: transactional ones inside their transaction, others on their own at once;
-- content that is not text in hex.
SELECT 'msg' FROM pg_logical_emit_message(false, 'dts.test', 'outside');
BEGIN;
SELECT 'msg' FROM pg_logical_emit_message(true, 'dts.test', 'rolled back');
SELECT 'msg' FROM pg_logical_emit_message(false, 'dts.test', 'not rolled back');
ROLLBACK;
BEGIN;
SELECT 'msg' FROM pg_logical_emit_message(true, 'other', 'kept');
SELECT 'msg' FROM pg_logical_emit_message(true, 'other', E'\\x00ff'::bytea);
SELECT 'msg' FROM pg_logical_emit_message(true, 'dts.quote', E'"\n');
COMMIT;
SELECT data FROM pg_logical_slot_peek_changes('regress_trunc', NULL, NULL, 'format', 'json');
-- heartbeat() is flushed at once, so decoding sees it with nothing written after it.
SELECT 'hb' FROM dts_decoding.heartbeat();
SELECT count(*) AS heartbeats FROM pg_logical_slot_peek_changes('regress_trunc', NULL, NULL, 'format', 'json')
 WHERE data ~ '^\{"action":"message","transactional":false,"prefix":"dts.heartbeat","content":"\d{4}-';
-- Only the prefixes asked for.
SELECT data FROM pg_logical_slot_peek_changes('regress_trunc', NULL, NULL, 'format', 'json',
  'messages', 'dts.t*, other');
SELECT data FROM pg_logical_slot_get_changes('regress_trunc', NULL, NULL, 'format', 'json',
  'messages', '');

SELECT pg_drop_replication_slot('regress_trunc');
