-- dts_decoding 0.4.0: a rewrite record names the table and the partitioned tables above it,
-- nearest first.
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
