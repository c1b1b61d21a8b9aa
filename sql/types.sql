-- Every built-in type family through the json format: values, NULLs, edge values, escaping.
\pset format unaligned
SET synchronous_commit = on;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';
SET lc_monetary = 'C';
SET extra_float_digits = 0;

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a integer, b text);
CREATE TABLE alltypes (
  id serial PRIMARY KEY,
  i2 int2, i4 int4, i8 int8, num numeric(12,3), numx numeric, f4 float4, f8 float8,
  t text, vc varchar(10), c char(5), "by" bytea, bo bool,
  d date, tm time, tmtz timetz, ts timestamp, tstz timestamptz, iv interval,
  u uuid, js json, jsb jsonb, arr int[], tarr text[], rng int4range, tsr tsrange,
  e mood, dom posint, comp pair, ip inet, net cidr, mac macaddr, mac8 macaddr8, m money,
  bi bit(4), vb varbit, tsv tsvector, x xml, o oid, nm name, pt point, ch "char"
);

SELECT 'init' FROM pg_create_logical_replication_slot('regress_types', 'dts_decoding');

INSERT INTO alltypes (i2, i4, i8, num, numx, f4, f8, t, vc, c, "by", bo, d, tm, tmtz, ts, tstz, iv,
  u, js, jsb, arr, tarr, rng, tsr, e, dom, comp, ip, net, mac, mac8, m, bi, vb, tsv, x, o, nm, pt, ch)
VALUES (1, 2, 3, 4.5, 6.75, 1.5, 2.25, 'text', 'varchar', 'ch', '\x00ff10', true,
  '2024-02-29', '12:34:56.789', '12:00:00+02', '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56+00',
  '1 year 2 mons 3 days 04:05:06',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": {"c": null}}', '{1,2,NULL}',
  '{"a b","c,d"}', '[1,10)', '[2024-01-01,2024-12-31)', 'happy', 7, '(1,"x y")', '192.168.0.1/24',
  '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', 12.34, B'1010', B'101',
  'a fat cat', '<r><v>1</v></r>', 42, 'a_name', '(1.5,2)', 'z');

-- Edge values: extremes, infinities, NaN, empty values and characters JSON must escape.
INSERT INTO alltypes (i2, i4, i8, num, numx, f4, f8, t, vc, c, "by", bo, d, tm, ts, tstz, iv,
  js, jsb, arr, tarr, rng, m, vb, tsv, nm, ch)
VALUES (-32768, -2147483648, -9223372036854775808, -99999999.999, 'NaN', '-Infinity', 'Infinity',
  E'quote " backslash \\ newline \n tab \t bell \x07 unicode é 😀', '', '', '', false,
  '-infinity', '24:00:00', 'infinity', '-infinity', '-178000000 years',
  '"str"', '[]', '{}', '{}', 'empty', -92233720368547758.08, B'', '', '', E'\\');
INSERT INTO alltypes (i2, i4, i8, numx, f4, f8, d, ts, tstz)
VALUES (32767, 2147483647, 9223372036854775807, 'Infinity', 'NaN', '-0', 'infinity', '-infinity',
  'infinity');
-- All NULL but the key.
INSERT INTO alltypes DEFAULT VALUES;

SELECT data FROM pg_logical_slot_get_changes('regress_types', NULL, NULL, 'format', 'json');

-- The same rows again through UPDATE: the new tuple carries every type once more.
UPDATE alltypes SET i4 = i4 WHERE id = 1;
SELECT data FROM pg_logical_slot_get_changes('regress_types', NULL, NULL, 'format', 'json');

SELECT pg_drop_replication_slot('regress_types');
