-- NULLs and TOAST: changed values are sent whole, unchanged out-of-line values are marked as
-- such and not sent.
\pset format unaligned
SET synchronous_commit = on;

CREATE TABLE toasty (id int PRIMARY KEY, big text, small text, other int);
-- EXTERNAL: out of line and uncompressed, so a repeated string really is toasted.
ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE toasty_full (id int PRIMARY KEY, big text, other int);
ALTER TABLE toasty_full ALTER COLUMN big SET STORAGE EXTERNAL;
ALTER TABLE toasty_full REPLICA IDENTITY FULL;

SELECT 'init' FROM pg_create_logical_replication_slot('regress_toast', 'dts_decoding');

-- Long values are shown by length so the expected output stays readable.
CREATE FUNCTION show_changes(slot text) RETURNS SETOF text LANGUAGE sql AS $$
  SELECT regexp_replace(data, '"([a-z])\1{100,}"',
                        '"<' || '\1' || ' x ' || '...>"', 'g')
    FROM pg_logical_slot_get_changes(slot, NULL, NULL, 'format', 'json')
$$;

INSERT INTO toasty VALUES (1, repeat('a', 10000), 's', 1);
INSERT INTO toasty VALUES (2, NULL, NULL, NULL);
-- big is not touched: unchanged TOAST, not sent.
UPDATE toasty SET other = 2 WHERE id = 1;
-- big is changed: sent whole.
UPDATE toasty SET big = repeat('b', 10000) WHERE id = 1;
-- Set to NULL and back from NULL.
UPDATE toasty SET small = NULL WHERE id = 1;
UPDATE toasty SET small = 'back', big = repeat('c', 3000) WHERE id = 2;
-- Key change with an unchanged toasted column.
UPDATE toasty SET id = 10 WHERE id = 1;
DELETE FROM toasty WHERE id = 10;
SELECT * FROM show_changes('regress_toast');

-- REPLICA IDENTITY FULL: the old row is complete, toasted value included.
INSERT INTO toasty_full VALUES (1, repeat('d', 10000), 1);
UPDATE toasty_full SET other = 2;
DELETE FROM toasty_full;
SELECT * FROM show_changes('regress_toast');

-- The length of a decoded toasted value is exact.
INSERT INTO toasty VALUES (3, repeat('e', 200000), NULL, NULL);
SELECT length(data::json->'new'->>'big')
  FROM pg_logical_slot_get_changes('regress_toast', NULL, NULL, 'format', 'json')
 WHERE data::json->>'action' = 'insert';

SELECT pg_drop_replication_slot('regress_toast');
