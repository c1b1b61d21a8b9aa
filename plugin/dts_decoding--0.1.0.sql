-- The SQL side of dts_decoding. The output plugin itself needs none of this: it is loaded by
-- name (pg_recvlogical -P dts_decoding) whether or not the extension is installed.
\echo Use "CREATE EXTENSION dts_decoding" to load this file. \quit

-- The role a migration runs as is usually not a superuser: it must be able to check the
-- source. heartbeat() checks its caller's privileges itself.
GRANT USAGE ON SCHEMA @extschema@ TO PUBLIC;

CREATE FUNCTION @extschema@.version() RETURNS text
  AS 'MODULE_PATHNAME', 'dts_decoding_version'
  LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.version() IS 'release of dts_decoding and its record format version';

-- One JSON document per record of a binary message, exactly as format 'json' would have shown
-- it. Rows name their relation by OID: render the messages of a session in order so that
-- their relation records are seen first.
CREATE FUNCTION @extschema@.render(data bytea, include_xids boolean DEFAULT false,
                                   include_lsn boolean DEFAULT false,
                                   include_timestamps boolean DEFAULT false)
  RETURNS SETOF json
  AS 'MODULE_PATHNAME', 'dts_decoding_render'
  LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION @extschema@.render(bytea, boolean, boolean, boolean)
  IS 'renders one binary dts_decoding message as JSON, one row per record';

-- A non-transactional logical message, flushed at once: it reaches every slot, so an idle
-- slot's confirmed position can advance and the applier can measure lag with no writes going
-- on. (PostgreSQL 15's pg_logical_emit_message does not flush a non-transactional message, so
-- decoders would not see it until something else flushed the WAL.)
CREATE FUNCTION @extschema@.heartbeat() RETURNS pg_lsn
  AS 'MODULE_PATHNAME', 'dts_decoding_heartbeat'
  LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.heartbeat() IS 'emits and flushes a dts.heartbeat logical message; returns its LSN';

-- Is this server ready to be the source of a migration? One row per item.
CREATE FUNCTION @extschema@.check_source(
    OUT item text, OUT status text, OUT detail text, OUT fix text)
  RETURNS SETOF record
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  n bigint;
  cap bigint;
  names text;
BEGIN
  item := 'wal_level';
  IF current_setting('wal_level') = 'logical' THEN
    status := 'PASSED'; detail := 'wal_level is logical'; fix := NULL;
  ELSE
    status := 'FAILED';
    detail := format('wal_level is %s; logical decoding needs logical', current_setting('wal_level'));
    fix := 'ALTER SYSTEM SET wal_level = logical; then restart the server';
  END IF;
  RETURN NEXT;

  -- PostgreSQL 15.19 and later load only the output plugins this setting lists.
  item := 'output_plugin_libraries';
  BEGIN
    names := current_setting('output_plugin_libraries', true);
  EXCEPTION WHEN insufficient_privilege THEN
    names := '<unreadable>';
  END;
  IF names = '<unreadable>' THEN
    status := 'WARNING';
    detail := format('role %s may not read output_plugin_libraries, so whether the server loads dts_decoding is unknown', current_user);
    fix := format('GRANT pg_read_all_settings TO %I; or have a superuser check that output_plugin_libraries lists dts_decoding', current_user);
  ELSIF names IS NULL THEN
    status := 'PASSED'; detail := 'this server version loads any output plugin'; fix := NULL;
  ELSIF 'dts_decoding' = ANY (string_to_array(replace(names, ' ', ''), ',')) THEN
    status := 'PASSED'; detail := format('output_plugin_libraries lists dts_decoding (%s)', names); fix := NULL;
  ELSE
    status := 'FAILED';
    detail := format('output_plugin_libraries is ''%s'': the server refuses to load dts_decoding', names);
    fix := format('ALTER SYSTEM SET output_plugin_libraries = %L; SELECT pg_reload_conf();',
                  CASE WHEN names = '' THEN 'dts_decoding' ELSE names || ', dts_decoding' END);
  END IF;
  RETURN NEXT;

  item := 'replication_slots';
  cap := current_setting('max_replication_slots')::bigint;
  SELECT count(*) INTO n FROM pg_replication_slots;
  IF cap - n >= 1 THEN
    status := 'PASSED'; detail := format('%s of %s replication slots free', cap - n, cap); fix := NULL;
  ELSE
    status := 'FAILED';
    detail := format('all %s replication slots are in use', cap);
    fix := format('ALTER SYSTEM SET max_replication_slots = %s; then restart the server, or drop an unused slot', cap + 4);
  END IF;
  RETURN NEXT;

  item := 'wal_senders';
  cap := current_setting('max_wal_senders')::bigint;
  SELECT count(*) INTO n FROM pg_stat_replication;
  IF cap - n >= 1 THEN
    status := 'PASSED'; detail := format('%s of %s WAL senders free', cap - n, cap); fix := NULL;
  ELSE
    status := 'FAILED';
    detail := format('all %s WAL senders are in use', cap);
    fix := format('ALTER SYSTEM SET max_wal_senders = %s; then restart the server', cap + 4);
  END IF;
  RETURN NEXT;

  item := 'replication_privilege';
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolreplication OR rolsuper)) THEN
    status := 'PASSED'; detail := format('role %s may replicate', current_user); fix := NULL;
  ELSE
    status := 'FAILED';
    detail := format('role %s has neither REPLICATION nor SUPERUSER', current_user);
    fix := format('ALTER ROLE %I REPLICATION;', current_user);
  END IF;
  RETURN NEXT;

  -- Without a primary key or replica identity index (and not FULL), UPDATE and DELETE reach
  -- the decoder without the old row's key, and the target cannot find the row.
  item := 'replica_identity';
  SELECT count(*), string_agg(format('%I.%I', nspname, relname), ', ' ORDER BY nspname, relname)
    INTO n, names
    FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
   WHERE c.relkind = 'r' AND c.relpersistence = 'p'
     AND ns.nspname NOT IN ('pg_catalog', 'information_schema') AND ns.nspname NOT LIKE 'pg\_%'
     AND (c.relreplident = 'n'
          OR (c.relreplident = 'd' AND NOT EXISTS (
                SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
          OR (c.relreplident = 'i' AND NOT EXISTS (
                SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)));
  IF n = 0 THEN
    status := 'PASSED'; detail := 'every table has a usable replica identity'; fix := NULL;
  ELSE
    status := 'WARNING';
    detail := format('%s table(s) without a usable replica identity: their UPDATE and DELETE cannot be replayed: %s', n, names);
    fix := 'add a primary key, or ALTER TABLE ... REPLICA IDENTITY USING INDEX <unique index>, or ALTER TABLE ... REPLICA IDENTITY FULL';
  END IF;
  RETURN NEXT;

  item := 'unlogged_tables';
  SELECT count(*), string_agg(format('%I.%I', nspname, relname), ', ' ORDER BY nspname, relname)
    INTO n, names
    FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'u';
  IF n = 0 THEN
    status := 'PASSED'; detail := 'no unlogged tables'; fix := NULL;
  ELSE
    status := 'WARNING';
    detail := format('%s unlogged table(s) are not in the WAL, so their changes are not migrated: %s', n, names);
    fix := 'ALTER TABLE ... SET LOGGED, or exclude these tables and copy them during the cutover';
  END IF;
  RETURN NEXT;
END
$fn$;
COMMENT ON FUNCTION @extschema@.check_source()
  IS 'source readiness for a dts migration: one row per item, PASSED / WARNING / FAILED, with the fix';
