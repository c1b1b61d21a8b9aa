-- The binary format, rendered from SQL with render(), reads exactly like the json format of
-- the same changes; and render() rejects bytes that are not a binary message.
\pset format unaligned
SET synchronous_commit = on;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET lc_monetary = 'C';

CREATE TYPE bmood AS ENUM ('sad', 'happy');
CREATE TABLE bin_types (
  id int PRIMARY KEY, i2 int2, i8 int8, num numeric, f4 float4, f8 float8, t text, vc varchar(8),
  c char(3), "by" bytea, bo bool, d date, tm time, tmtz timetz, ts timestamp, tstz timestamptz,
  iv interval, u uuid, js json, jsb jsonb, arr int[], tarr text[], rng int4range, e bmood,
  ip inet, mac macaddr, m money, bi bit(3), tsv tsvector, x xml, o oid, nm name, pt point
);
CREATE TABLE bin_toast (id int PRIMARY KEY, big text, other int);
ALTER TABLE bin_toast ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE bin_full (id int, v text);
ALTER TABLE bin_full REPLICA IDENTITY FULL;
CREATE TABLE bin_reg (id int PRIMARY KEY, r regclass, t regtype);
CREATE TABLE bin_part (id int, k text, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
CREATE TABLE bin_part_a PARTITION OF bin_part FOR VALUES IN ('a');

SELECT 'init' FROM pg_create_logical_replication_slot('regress_json', 'dts_decoding');
SELECT 'init' FROM pg_create_logical_replication_slot('regress_bin', 'dts_decoding');

INSERT INTO bin_types VALUES (1, 1, 2, 3.25, 1.5, -2.5, 'text é', 'vc', 'ab', '\xdeadbeef', true,
  '2024-01-02', '01:02:03', '01:02:03+04', '2024-01-02 03:04:05.678', '2024-01-02 03:04:05+00',
  '2 days 03:00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": 1}', '{"k": [1, 2]}', '{1,NULL,3}',
  '{"x y",z}', '[1,5)', 'happy', '10.1.2.3', '01:02:03:04:05:06', 1.23, B'101', 'cat sat', '<a/>', 7,
  'nm', '(1,2)');
INSERT INTO bin_types (id, num, f4, f8, d, ts, tstz) VALUES (2, 'NaN', 'Infinity', '-Infinity', 'infinity',
  '-infinity', 'infinity');
INSERT INTO bin_types (id) VALUES (3);
UPDATE bin_types SET id = 4, t = 'moved' WHERE id = 3;
DELETE FROM bin_types WHERE id = 2;
INSERT INTO bin_toast VALUES (1, repeat('q', 5000), 1);
UPDATE bin_toast SET other = 2;
INSERT INTO bin_full VALUES (1, 'a'), (1, 'a');
UPDATE bin_full SET v = NULL WHERE ctid = (SELECT min(ctid) FROM bin_full);
DELETE FROM bin_full WHERE v IS NULL;
INSERT INTO bin_part VALUES (1, 'a');
INSERT INTO bin_reg VALUES (1, 'pg_namespace', 'tsquery');
TRUNCATE bin_part, bin_full RESTART IDENTITY;
SELECT 'msg' FROM pg_logical_emit_message(true, 'dts.render', 'in a transaction');
SELECT 'msg' FROM pg_logical_emit_message(false, 'dts.render', E'\\x0102'::bytea);
-- numeric in every stored form: short and long headers, special values, extreme weights
-- and scales, negative zero scale, many digits.
CREATE TABLE bin_numeric (id serial PRIMARY KEY, v numeric, fixed numeric(20, 6));
INSERT INTO bin_numeric (v, fixed) VALUES (0, 0), (-0.0, -0.000001), (1, 1), (-1, -1), (0.5, 0.5),
  (12345678.9, 99999999999999.999999), ('NaN', NULL), ('Infinity', NULL), ('-Infinity', NULL),
  (1e300, 123.456), (-1e-300, -123.456), (10000, 10000), (0.0001, 0.0001),
  (123456789012345678901234567890.123456789012345678901234567890, 1.5),
  (repeat('9', 1000)::numeric, NULL), (('0.' || repeat('0', 500) || '1')::numeric, NULL),
  (1.000000000000000000000000000000000000000000000000000000000000000000000000000000, NULL),
  (-987654321.123456789, NULL);
-- A transaction larger than a message: several messages, one begin and one commit.
INSERT INTO bin_toast SELECT g, 'row ' || g, g FROM generate_series(2, 400) g;

CREATE TEMP TABLE from_json AS
  SELECT row_number() OVER () AS n, data FROM pg_logical_slot_get_changes('regress_json', NULL, NULL, 'format', 'json');
CREATE TEMP TABLE bin_messages AS
  SELECT row_number() OVER () AS m, data FROM pg_logical_slot_get_binary_changes('regress_bin', NULL, NULL,
    'message_bytes', '1024');
CREATE TEMP TABLE from_binary AS
  SELECT row_number() OVER () AS n, r::text AS data FROM bin_messages, dts_decoding.render(bin_messages.data) r;

SELECT (SELECT count(*) FROM from_json) AS json_records, (SELECT count(*) FROM from_binary) AS rendered_records;
-- No record differs.
SELECT n, j.data AS json, b.data AS rendered FROM from_json j FULL JOIN from_binary b USING (n)
 WHERE j.data IS DISTINCT FROM b.data;
-- Fewer messages than records: small transactions travel as one message.
SELECT (SELECT count(*) FROM bin_messages) < (SELECT count(*) FROM from_binary) / 3 AS packed;
-- Every message starts with the protocol version.
SELECT DISTINCT get_byte(data, 0) AS version FROM bin_messages;
-- And binary is smaller than json.
SELECT (SELECT sum(length(data)) FROM bin_messages) < (SELECT sum(octet_length(data)) FROM from_json) AS smaller;
-- reg* values travel as names, not as OIDs that mean nothing on another server.
SELECT bool_or(position(convert_to('pg_namespace', 'UTF8') in data) > 0) AS regclass_by_name,
       bool_or(position(convert_to('tsquery', 'UTF8') in data) > 0) AS regtype_by_name
  FROM bin_messages;
-- A sample, to see what it looks like.
SELECT data FROM from_binary WHERE n <= 3;

-- Streamed transactions render like their json too.
-- (Temp tables: the copies are not decoded themselves.)
SELECT 'init' FROM pg_create_logical_replication_slot('regress_json_s', 'dts_decoding');
SELECT 'init' FROM pg_create_logical_replication_slot('regress_bin_s', 'dts_decoding');
BEGIN;
INSERT INTO bin_toast SELECT g, repeat('s', 60), g FROM generate_series(1000, 3000) g;
SAVEPOINT sp;
DELETE FROM bin_toast WHERE id < 1500;
ROLLBACK TO SAVEPOINT sp;
COMMIT;
CREATE TEMP TABLE sj AS SELECT row_number() OVER () AS n, data FROM pg_logical_slot_get_changes('regress_json_s', NULL, NULL,
  'format', 'json', 'streaming', 'on', 'include_xids', 'on');
CREATE TEMP TABLE sb AS SELECT row_number() OVER () AS n, r::text AS data
  FROM pg_logical_slot_get_binary_changes('regress_bin_s', NULL, NULL, 'streaming', 'on') c,
       dts_decoding.render(c.data, include_xids => true) r;
SELECT (SELECT count(*) FROM sj) = (SELECT count(*) FROM sb) AS same_count,
       (SELECT count(*) FROM sj WHERE data LIKE '%stream_abort%') AS aborts;
SELECT count(*) AS differing FROM sj FULL JOIN sb USING (n) WHERE sj.data IS DISTINCT FROM sb.data;
SELECT pg_drop_replication_slot('regress_json_s');
SELECT pg_drop_replication_slot('regress_bin_s');

-- Bytes that are not a message: clear errors with the byte offset.
SELECT * FROM dts_decoding.render('\x');
SELECT * FROM dts_decoding.render('\x09');
SELECT * FROM dts_decoding.render('\x0142');
SELECT * FROM dts_decoding.render('\x017a');
SELECT * FROM dts_decoding.render('\x0149ffffffff0f00');
SELECT * FROM dts_decoding.render('\x0142ffffffffffffffffffff01');
SELECT * FROM dts_decoding.render('\x014d000003616263ff');
-- A row of a relation never described in this backend.
SELECT * FROM dts_decoding.render('\x0149e807010401');
-- A tuple whose column count disagrees with its relation record.
SELECT * FROM dts_decoding.render('\x015201016101616401000178170100490102040200');
SELECT * FROM dts_decoding.render('\x01490102040104');
SELECT * FROM dts_decoding.render(NULL);
-- A relation record describing more columns than a table can have is refused, and the
-- relation's previous description stays in use.
SELECT * FROM dts_decoding.render('\x01524d00006401000178170100');
SELECT * FROM dts_decoding.render(decode('01524d000064d00f' || repeat('0000170100', 2000), 'hex'));
SELECT * FROM dts_decoding.render('\x01494d01040e');
-- Text claiming to be a number is emitted as a JSON number only if it is one.
SELECT * FROM dts_decoding.render('\x01524e00006402000178170100000179a40d0100');
SELECT * FROM dts_decoding.render('\x01494e0204020207312c2278223a32');

SELECT pg_drop_replication_slot('regress_json');
SELECT pg_drop_replication_slot('regress_bin');
