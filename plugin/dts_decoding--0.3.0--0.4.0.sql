-- dts_decoding 0.4.0: a rewrite record names the table and the partitioned tables above it,
-- nearest first; a domain's default is the catalog's expression, printed for the target.
\echo Use "ALTER EXTENSION dts_decoding UPDATE" to load this file. \quit

-- A command on a partitioned table rewrites its leaves at every level, and its own record lists
-- only the direct partitions: without the leaf's name and ancestors here, a leaf two levels down
-- was emptied on the target and never copied again.
CREATE OR REPLACE FUNCTION @extschema@.table_rewrite_record(tag text) RETURNS text
  LANGUAGE sql
  SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT jsonb_build_object('ddl', 'rewrite', 'tag', tag, 'relid', c.oid, 'reason', pg_event_trigger_table_rewrite_reason(),
                          'schema', n.nspname, 'name', c.relname,
                          'ancestors', (SELECT coalesce(jsonb_agg(a.relid::oid::bigint ORDER BY a.n), '[]')
                                          FROM pg_partition_ancestors(c.oid) WITH ORDINALITY AS a(relid, n)
                                         WHERE a.relid <> c.oid))::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = pg_event_trigger_table_rewrite_oid() AND c.relpersistence = 'p'
   AND c.relnamespace <> '@extschema@'::regnamespace
$fn$;

-- A domain's default was pg_type.typdefault, the text printed when the domain was made: in that
-- session's search_path (a function of another schema unqualified) and DateStyle. The
-- expression itself, printed here (search_path pg_catalog: every other name qualified; the
-- fixed styles of 0.3.0), means the same on the target. The rest is 0.2.0's, unchanged.
CREATE OR REPLACE FUNCTION @extschema@.describe_object(classid oid, objid oid, objsubid int) RETURNS jsonb
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
  SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = 3
AS $fn$
DECLARE
  result jsonb;
BEGIN
  CASE classid
  WHEN 'pg_class'::regclass THEN
    result := @extschema@.describe_relation(objid);
  WHEN 'pg_proc'::regclass THEN
    SELECT jsonb_build_object('functiondef', CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END)
      INTO result FROM pg_proc p WHERE p.oid = objid;
  WHEN 'pg_trigger'::regclass THEN
    SELECT jsonb_build_object('triggerdef', pg_get_triggerdef(t.oid), 'name', t.tgname, 'internal', t.tgisinternal,
                              'table', jsonb_build_object('relid', tc.oid, 'schema', tn.nspname, 'name', tc.relname))
      INTO result FROM pg_trigger t JOIN pg_class tc ON tc.oid = t.tgrelid
      JOIN pg_namespace tn ON tn.oid = tc.relnamespace WHERE t.oid = objid;
  WHEN 'pg_type'::regclass THEN
    SELECT jsonb_build_object('kind', t.typtype::text,
             'labels', (SELECT jsonb_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
             'attributes', CASE WHEN t.typtype = 'c' THEN
               (SELECT jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod)) ORDER BY a.attnum)
                  FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) END,
             'base', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
             'notnull', t.typnotnull, 'default', pg_get_expr(t.typdefaultbin, 0),
             'checks', (SELECT jsonb_agg(jsonb_build_object('name', k.conname, 'def', pg_get_constraintdef(k.oid)) ORDER BY k.conname)
                          FROM pg_constraint k WHERE k.contypid = t.oid))
      INTO result FROM pg_type t WHERE t.oid = objid;
  WHEN 'pg_namespace'::regclass THEN
    SELECT jsonb_build_object('name', nspname) INTO result FROM pg_namespace WHERE oid = objid;
  WHEN 'pg_extension'::regclass THEN
    SELECT jsonb_build_object('name', e.extname, 'version', e.extversion, 'in_schema', n.nspname)
      INTO result FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.oid = objid;
  ELSE
    result := '{}';
  END CASE;
  RETURN coalesce(result, '{}');
END
$fn$;
