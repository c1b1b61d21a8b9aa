-- Every option, and every way to get one wrong.
\pset format unaligned
SET synchronous_commit = on;
SET timezone = 'UTC';

CREATE TABLE opt_a (id int PRIMARY KEY);
CREATE TABLE opt_b (id int PRIMARY KEY);
CREATE TABLE opt_long_name (id int PRIMARY KEY);
CREATE SCHEMA audit;
CREATE TABLE audit.events (id int PRIMARY KEY);
CREATE SCHEMA "Audit";
CREATE TABLE "Audit"."Log" (id int PRIMARY KEY);
CREATE TABLE "Audit"."a*b" (id int PRIMARY KEY);
CREATE TABLE "Audit"."axb" (id int PRIMARY KEY);

SELECT 'init' FROM pg_create_logical_replication_slot('regress_opts', 'dts_decoding');

INSERT INTO opt_a VALUES (1);
INSERT INTO opt_b VALUES (1);
INSERT INTO opt_long_name VALUES (1);
INSERT INTO audit.events VALUES (1);
INSERT INTO "Audit"."Log" VALUES (1);
INSERT INTO "Audit"."a*b" VALUES (1);
INSERT INTO "Audit"."axb" VALUES (1);
BEGIN;  -- an empty transaction
COMMIT;
CREATE TABLE opt_ddl_only (id int);  -- a transaction with no row changes

-- Table patterns (rows only, to keep it short).
CREATE FUNCTION tables_seen(VARIADIC opts text[]) RETURNS SETOF text LANGUAGE sql AS $$
  SELECT string_agg((data::json->>'schema') || '.' || (data::json->>'table'), ' ' ORDER BY lsn)
    FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, VARIADIC array['format', 'json'] || opts)
   WHERE data::json->>'action' = 'insert'
$$;
SELECT tables_seen(VARIADIC '{}');
SELECT tables_seen('include_tables', 'public.*');
SELECT tables_seen('include_tables', 'opt_?');
SELECT tables_seen('include_tables', '*.events, "Audit".*');
SELECT tables_seen('include_tables', 'AUDIT.*');
SELECT tables_seen('include_tables', '"Audit"."a*b"');
SELECT tables_seen('include_tables', '"Audit".a*b');
SELECT tables_seen('exclude_tables', 'public.opt_*');
SELECT tables_seen('include_tables', 'public.*', 'exclude_tables', 'opt_b');
-- include_tables given twice adds up.
SELECT tables_seen('include_tables', 'opt_a', 'include_tables', 'opt_b');
SELECT tables_seen('include_tables', 'nothing_matches');

-- Empty transactions: skipped by default, shown when asked.
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json',
  'include_tables', 'nothing_matches');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json',
  'include_tables', 'nothing_matches', 'skip_empty_xacts', 'false');

-- xids, LSNs and commit times, shown with their values masked.
SELECT regexp_replace(regexp_replace(regexp_replace(data,
         '"(xid|subxid)":[0-9]+', '"\1":N', 'g'),
         '"(lsn|end_lsn)":"[0-9A-F]+/[0-9A-F]+"', '"\1":"X/X"', 'g'),
         '"commit_time":"[0-9]{4}-[0-9-]+ [0-9:.]+\+00"', '"commit_time":"T"', 'g')
  FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json',
    'include_tables', 'opt_a', 'include_xids', 'true', 'include_lsn', 'on', 'include-timestamps', '1');

-- Origins: changes made under a replication origin carry it, and origin 'none' skips them
-- (so a target can be decoded without echoing what was applied to it).
SELECT 'origin' FROM pg_replication_origin_create('regress_origin');
SELECT 'setup' FROM pg_replication_origin_session_setup('regress_origin');
INSERT INTO opt_a VALUES (2);
SELECT 'reset' FROM pg_replication_origin_session_reset();
INSERT INTO opt_a VALUES (3);
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json',
  'include_tables', 'opt_a');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json',
  'include_tables', 'opt_a', 'origin', 'none');
SELECT pg_replication_origin_drop('regress_origin');

-- Accepted and harmless here: protocol version, message size, streaming, partition root.
SELECT count(*) FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json',
  'proto_version', '1', 'message_bytes', '1024', 'streaming', 'false', 'publish_via_partition_root', 'false');
SELECT count(*) FROM pg_logical_slot_peek_binary_changes('regress_opts', NULL, NULL, 'format', 'binary');

-- Bad options: each one an ERROR that names the option and what it accepts.
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'nonsense', '1');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'xml');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'skip_empty_xacts', 'maybe');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'proto_version', '2');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'proto_version', 'one');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'include_tables', '"unterminated');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'include_tables', 'a.b.c');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'include_tables', 'bad name');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'include_tables', '');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'exclude_tables', 'public.,x');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'exclude_tables', 'public.');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'exclude_tables', 'a,');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'origin', 'some');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'message_bytes', '10');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'message_bytes', '99999999999');
-- packing holds finished transactions for the next message: the SQL functions would skip them
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'pack_transactions', 'on');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'pack_transactions', 'maybe');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'messages', 'a,,b');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'streaming', 'yes please');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'include_xids', '2');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'include_timestamps', '');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'include_lsn', 'on please');
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL, 'format', 'json', 'publish_via_partition_root', 'root');
-- The binary format needs the *_binary_changes functions.
SELECT data FROM pg_logical_slot_peek_changes('regress_opts', NULL, NULL);

-- Loaded by name, with or without the extension.
SELECT 'init' FROM pg_create_logical_replication_slot('regress_opts_noext', 'dts_decoding');
SELECT pg_drop_replication_slot('regress_opts_noext');

SELECT pg_drop_replication_slot('regress_opts');
