-- Schema changes as dts.ddl transactional messages (dts_decoding 0.2.0's event triggers): one
-- per object a command made or changed, the objects a command dropped, and a table rewrite;
-- gone with a rollback. OIDs differ between runs: the records are shown without them.
SET dts_decoding.capture_ddl = on;
SELECT 'init' FROM pg_create_logical_replication_slot('regress_ddl', 'dts_decoding');
CREATE TABLE dt (id int PRIMARY KEY, a text NOT NULL DEFAULT 'x');
INSERT INTO dt VALUES (1, 'one');
BEGIN;
ALTER TABLE dt RENAME COLUMN a TO b;
UPDATE dt SET b = 'uno';
COMMIT;
ALTER TABLE dt ALTER COLUMN id TYPE bigint;
BEGIN; CREATE TABLE gone (x int); ROLLBACK;
CREATE TABLE made AS SELECT 1 AS n;
DROP TABLE made;
CREATE INDEX dt_b ON dt (b);
CREATE FUNCTION dt_f(x int) RETURNS int LANGUAGE sql AS 'SELECT x';
ALTER FUNCTION dt_f(int) RENAME TO dt_g;
SET dts_decoding.capture_ddl = off;
CREATE TABLE unseen (x int);
-- Each record is signed: "<HMAC-SHA256, hex> <record>".
CREATE TEMP TABLE captured AS
  SELECT n, data::jsonb AS d FROM pg_logical_slot_get_changes('regress_ddl', NULL, NULL, 'format', 'json')
         WITH ORDINALITY AS c(lsn, xid, data, n);
SELECT count(*) AS records, count(*) FILTER (WHERE d->>'content' ~ '^[0-9a-f]{64} [{]') AS signed
  FROM captured WHERE d->>'prefix' = 'dts.ddl';
UPDATE captured SET d = jsonb_set(d, '{content}', to_jsonb(substr(d->>'content', 66))) WHERE d->>'prefix' = 'dts.ddl';
WITH m AS (SELECT n, d FROM captured)
SELECT d->>'action' AS action,
       CASE WHEN d->>'action' = 'message' THEN
         concat_ws(' | ', (d->>'content')::jsonb->>'ddl', (d->>'content')::jsonb->>'tag',
                   (d->>'content')::jsonb->>'object_type', (d->>'content')::jsonb->>'identity',
                   (SELECT string_agg(c->>'name' || ' ' || (c->>'type'), ', ')
                      FROM jsonb_array_elements((d->>'content')::jsonb->'definition'->'columns') c),
                   (SELECT 'before: ' || string_agg(c->>'name', ', ')
                      FROM jsonb_array_elements((d->>'content')::jsonb->'before'->'columns') c),
                   (d->>'content')::jsonb->'before'->>'identity',
                   (SELECT 'dropped: ' || string_agg((o->>'object_type') || ' ' || (o->>'identity'), ', ')
                      FROM jsonb_array_elements((d->>'content')::jsonb->'objects') o WHERE (o->>'original')::bool))
       ELSE coalesce(d->>'table', '') END AS what
  FROM m ORDER BY n;
SELECT pg_drop_replication_slot('regress_ddl');
-- The key is no ordinary role's: not readable, and ddl_signing_key() gives it only to roles
-- that may replicate.
CREATE ROLE regress_ddl_plain LOGIN;
CREATE ROLE regress_ddl_repl LOGIN REPLICATION;
SET SESSION AUTHORIZATION regress_ddl_plain;
SELECT count(*) FROM dts_decoding.ddl_key;
SELECT dts_decoding.ddl_signing_key() IS NULL AS no_key;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_ddl_repl;
SELECT length(dts_decoding.ddl_signing_key()) AS key_bytes;
RESET SESSION AUTHORIZATION;
-- An event trigger's function cannot be called to sign a record of one's own.
SELECT dts_decoding.capture_ddl_end();
DROP ROLE regress_ddl_plain;
DROP ROLE regress_ddl_repl;
-- A rewrite of a partition tree: one record per leaf, at every level, naming the leaf and the
-- partitioned tables above it (0.4.0).
SET dts_decoding.capture_ddl = on;
CREATE TABLE pt (id int, r int, v int) PARTITION BY LIST (r);
CREATE TABLE pt_1 PARTITION OF pt FOR VALUES IN (1);
CREATE TABLE pt_2 PARTITION OF pt FOR VALUES IN (2) PARTITION BY LIST (id);
CREATE TABLE pt_2x PARTITION OF pt_2 DEFAULT;
SELECT 'init' FROM pg_create_logical_replication_slot('regress_ddl_tree', 'dts_decoding');
ALTER TABLE pt ALTER COLUMN v TYPE bigint;
SELECT c->>'name' AS leaf,
       (SELECT string_agg(a::oid::regclass::text, ' < ' ORDER BY o) FROM jsonb_array_elements_text(c->'ancestors')
          WITH ORDINALITY AS x(a, o)) AS ancestors
  FROM (SELECT substr(data::jsonb->>'content', 66)::jsonb AS c
          FROM pg_logical_slot_get_changes('regress_ddl_tree', NULL, NULL, 'format', 'json')
         WHERE data::jsonb->>'prefix' = 'dts.ddl') m
 WHERE c->>'ddl' = 'rewrite' ORDER BY 1;
SELECT pg_drop_replication_slot('regress_ddl_tree');
DROP TABLE pt;
SET dts_decoding.capture_ddl = off;
