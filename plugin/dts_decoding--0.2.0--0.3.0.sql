-- dts_decoding 0.3.0: the catalog text of schema-change records no longer depends on the
-- settings of the session that ran the DDL.
\echo Use "ALTER EXTENSION dts_decoding UPDATE" to load this file. \quit

-- Constants in defaults, CHECKs, partition bounds, function definitions and the value a new
-- column gives existing rows are printed in the session's DateStyle, IntervalStyle and float
-- precision: under DateStyle 'SQL, DMY' a bound of 3 April travelled as '03/04/2026' and the
-- target, reading MDY, made it 4 March. Fixed here to what reads the same on every server.
ALTER FUNCTION @extschema@.describe_relation(oid)
  SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = 3;
ALTER FUNCTION @extschema@.describe_object(oid, oid, int)
  SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = 3;
