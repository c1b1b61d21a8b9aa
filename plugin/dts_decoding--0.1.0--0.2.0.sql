-- dts_decoding 0.2.0: schema changes captured in the WAL, in order with the rows around them.
-- Event triggers write one transactional logical message (prefix dts.ddl) per command inside
-- the command's own transaction: a rollback takes it away, and the decoder sees it at its place
-- among the transaction's changes. The record carries, per object, its identity and its
-- definition as the catalog holds it after the command (and, for renames and ALTER TABLE, as it
-- was before), never the query text: one query string may hold several statements, and DDL may
-- run inside functions. docs/protocol.md describes the record.
\echo Use "ALTER EXTENSION dts_decoding UPDATE TO '0.2.0'" to load this file. \quit

-- A relation as the catalog holds it now: columns by attnum (a rename keeps the attnum), local
-- constraints, replica identity, partitioning, and the definition of indexes, views and
-- sequences.
CREATE FUNCTION @extschema@.describe_relation(rel oid) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT jsonb_build_object(
  'relid', c.oid, 'schema', n.nspname, 'name', c.relname, 'kind', c.relkind::text,
  'persistence', c.relpersistence::text, 'replica_identity', c.relreplident::text,
  'replica_index', (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                     WHERE i.indrelid = c.oid AND i.indisreplident),
  'partition_key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
  'parent', (SELECT jsonb_build_object('relid', p.oid, 'schema', pn.nspname, 'name', p.relname)
               FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhparent
               JOIN pg_namespace pn ON pn.oid = p.relnamespace
              WHERE h.inhrelid = c.oid AND c.relispartition),
  'bound', CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
  'partitions', (SELECT coalesce(jsonb_agg(jsonb_build_object('relid', k.oid, 'schema', kn.nspname, 'name', k.relname,
                                                             'bound', pg_get_expr(k.relpartbound, k.oid)) ORDER BY k.oid), '[]')
                   FROM pg_inherits h JOIN pg_class k ON k.oid = h.inhrelid
                   JOIN pg_namespace kn ON kn.oid = k.relnamespace
                  WHERE h.inhparent = c.oid AND k.relispartition),
  'columns', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                 'attnum', a.attnum, 'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                 'notnull', a.attnotnull, 'local', a.attislocal,
                 'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                 'generated', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                 'identity', nullif(a.attidentity::text, ''),
                 -- ADD COLUMN with a non-volatile default (now(), a constant) evaluates it once,
                 -- for the rows already there: that value, not the expression, is what they hold.
                 'missing', CASE WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END,
                 'collation', CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0 THEN
                   (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
                      JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END)
               ORDER BY a.attnum), '[]')
                FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  'constraints', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                     'oid', k.oid, 'name', k.conname, 'type', k.contype::text, 'def', pg_get_constraintdef(k.oid),
                     'validated', k.convalidated) ORDER BY k.conname), '[]')
                    FROM pg_constraint k WHERE k.conrelid = c.oid AND k.conislocal),
  'indexdef', CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) END,
  'index_table', (SELECT jsonb_build_object('relid', tc.oid, 'schema', tn.nspname, 'name', tc.relname)
                    FROM pg_index i JOIN pg_class tc ON tc.oid = i.indrelid
                    JOIN pg_namespace tn ON tn.oid = tc.relnamespace WHERE i.indexrelid = c.oid),
  'constraint_index', EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid AND k.contype IN ('p', 'u', 'x')),
  'viewdef', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
  'sequence', (SELECT jsonb_build_object('type', format_type(s.seqtypid, NULL), 'start', s.seqstart,
                                         'increment', s.seqincrement, 'min', s.seqmin, 'max', s.seqmax,
                                         'cache', s.seqcache, 'cycle', s.seqcycle,
                                         'owned_by', (SELECT format('%I.%I.%I', tn.nspname, tc.relname, a.attname)
                                                        FROM pg_depend d JOIN pg_class tc ON tc.oid = d.refobjid
                                                        JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                                                        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                                       WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                                         AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'),
                                         'identity', EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                                              AND d.objid = c.oid AND d.deptype = 'i'))
                 FROM pg_sequence s WHERE s.seqrelid = c.oid))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = rel
$fn$;

-- What the applier needs to make an object of another kind as it is now.
CREATE FUNCTION @extschema@.describe_object(classid oid, objid oid, objsubid int) RETURNS jsonb
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
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
             'notnull', t.typnotnull, 'default', t.typdefault,
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

CREATE FUNCTION @extschema@.capture_ddl_start() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'dts_decoding_capture_ddl_start'
  LANGUAGE C;

CREATE FUNCTION @extschema@.ddl_before(objid oid) RETURNS text
  AS 'MODULE_PATHNAME', 'dts_decoding_ddl_before'
  LANGUAGE C STRICT VOLATILE;

-- dts_decoding.capture_ddl = off (a setting of the session, the database or the server) turns
-- the capture off: for this extension's own regression suites, which are not about schema
-- changes. A migration that meets a schema change it was not told about stops at its first row
-- of the new shape.
--
-- Objects of the extension itself, temporary ones and those of an extension's own script are
-- not the application's schema.
CREATE FUNCTION @extschema@.grant_record(command pg_ddl_command) RETURNS text
  AS 'MODULE_PATHNAME', 'dts_decoding_grant_record'
  LANGUAGE C STRICT STABLE;

CREATE FUNCTION @extschema@.ddl_end_records() RETURNS SETOF text
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  r record;
  body jsonb;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    IF r.command_tag IN ('GRANT', 'REVOKE') THEN
      body := @extschema@.grant_record(r.command)::jsonb;
      IF body IS NOT NULL THEN RETURN NEXT body::text; END IF;
      CONTINUE;
    END IF;
    CONTINUE WHEN r.in_extension OR r.schema_name = '@extschema@' OR r.schema_name LIKE 'pg\_temp%'
               OR r.schema_name = 'pg_toast' OR (r.object_type = 'schema' AND r.object_identity = '@extschema@');
    body := jsonb_build_object('ddl', 'command', 'tag', r.command_tag, 'object_type', r.object_type,
                               'identity', r.object_identity, 'schema', r.schema_name,
                               'objid', r.objid, 'subid', r.objsubid,
                               'definition', @extschema@.describe_object(r.classid, r.objid, r.objsubid),
                               'before', @extschema@.ddl_before(r.objid)::jsonb);
    IF r.command_tag = 'COMMENT' THEN
      body := body || jsonb_build_object('comment', (SELECT description FROM pg_description
                                                      WHERE objoid = r.objid AND classoid = r.classid AND objsubid = r.objsubid));
    END IF;
    RETURN NEXT body::text;
  END LOOP;
END
$fn$;

CREATE FUNCTION @extschema@.sql_drop_record(tag text) RETURNS text
  LANGUAGE sql
  SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT jsonb_build_object('ddl', 'drop', 'tag', tag,
                          'objects', jsonb_agg(jsonb_build_object(
                              'object_type', d.object_type, 'identity', d.object_identity, 'schema', d.schema_name,
                              'name', d.object_name, 'objid', d.objid, 'subid', d.objsubid,
                              'original', d.original, 'normal', d.normal)))::text
  FROM pg_event_trigger_dropped_objects() d
 WHERE NOT d.is_temporary AND d.schema_name IS DISTINCT FROM '@extschema@' AND d.schema_name IS DISTINCT FROM 'pg_toast'
HAVING count(*) > 0
$fn$;

-- The rows a rewrite writes are not decoded: the applier copies the table again.
CREATE FUNCTION @extschema@.table_rewrite_record(tag text) RETURNS text
  LANGUAGE sql
  SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT jsonb_build_object('ddl', 'rewrite', 'tag', tag, 'relid', c.oid, 'reason', pg_event_trigger_table_rewrite_reason())::text
  FROM pg_class c
 WHERE c.oid = pg_event_trigger_table_rewrite_oid() AND c.relpersistence = 'p'
   AND c.relnamespace <> '@extschema@'::regnamespace
$fn$;

-- The key that signs the records (ddl_capture.cpp): made here, readable by no ordinary role,
-- left out of dumps (an extension's table is), and handed only to roles that may replicate —
-- which can read everything the WAL holds anyway.
CREATE TABLE @extschema@.ddl_key (key bytea NOT NULL);
REVOKE ALL ON @extschema@.ddl_key FROM PUBLIC;
CREATE FUNCTION @extschema@.new_ddl_key() RETURNS bytea
  AS 'MODULE_PATHNAME', 'dts_decoding_new_ddl_key'
  LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION @extschema@.new_ddl_key() FROM PUBLIC;
INSERT INTO @extschema@.ddl_key SELECT @extschema@.new_ddl_key();

CREATE FUNCTION @extschema@.ddl_signing_key() RETURNS bytea
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
SELECT k.key FROM @extschema@.ddl_key k
 WHERE EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = session_user AND (r.rolreplication OR r.rolsuper))
$fn$;
COMMENT ON FUNCTION @extschema@.ddl_signing_key()
  IS 'the key that signs dts.ddl records, for roles with REPLICATION (NULL for others)';

CREATE FUNCTION @extschema@.capture_ddl_end() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'dts_decoding_capture_ddl_end'
  LANGUAGE C;
CREATE FUNCTION @extschema@.capture_sql_drop() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'dts_decoding_capture_sql_drop'
  LANGUAGE C;
CREATE FUNCTION @extschema@.capture_table_rewrite() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'dts_decoding_capture_table_rewrite'
  LANGUAGE C;

CREATE EVENT TRIGGER dts_decoding_ddl_start ON ddl_command_start
  EXECUTE FUNCTION @extschema@.capture_ddl_start();
CREATE EVENT TRIGGER dts_decoding_ddl_end ON ddl_command_end
  EXECUTE FUNCTION @extschema@.capture_ddl_end();
CREATE EVENT TRIGGER dts_decoding_sql_drop ON sql_drop
  EXECUTE FUNCTION @extschema@.capture_sql_drop();
CREATE EVENT TRIGGER dts_decoding_table_rewrite ON table_rewrite
  EXECUTE FUNCTION @extschema@.capture_table_rewrite();
