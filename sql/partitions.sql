-- Partitioned tables: changes under the partition's name, or under the root's with
-- publish_via_partition_root; filters match a partition through its ancestors.
\pset format unaligned
SET synchronous_commit = on;

CREATE TABLE measure (id int, city text, v int, PRIMARY KEY (id, city)) PARTITION BY LIST (city);
CREATE TABLE measure_oslo PARTITION OF measure FOR VALUES IN ('oslo');
CREATE TABLE measure_rome PARTITION OF measure FOR VALUES IN ('rome') PARTITION BY RANGE (id);
CREATE TABLE measure_rome_low PARTITION OF measure_rome FOR VALUES FROM (0) TO (100);
-- A partition whose columns are in another order, with a dropped column in between.
CREATE TABLE measure_bern (junk int, v int, city text NOT NULL, id int NOT NULL);
ALTER TABLE measure_bern DROP COLUMN junk;
ALTER TABLE measure ATTACH PARTITION measure_bern FOR VALUES IN ('bern');
CREATE TABLE other (id int PRIMARY KEY);

SELECT 'init' FROM pg_create_logical_replication_slot('regress_part', 'dts_decoding');

INSERT INTO measure VALUES (1, 'oslo', 10), (2, 'rome', 20), (3, 'bern', 30);
-- Moves a row to another partition: a delete and an insert.
UPDATE measure SET city = 'bern' WHERE id = 1;
UPDATE measure SET v = v + 1 WHERE id = 3;
INSERT INTO other VALUES (1);
TRUNCATE measure;

SELECT data FROM pg_logical_slot_peek_changes('regress_part', NULL, NULL, 'format', 'json');
SELECT data FROM pg_logical_slot_peek_changes('regress_part', NULL, NULL, 'format', 'json',
  'publish_via_partition_root', 'true');
-- Selecting the root selects its partitions.
SELECT data FROM pg_logical_slot_peek_changes('regress_part', NULL, NULL, 'format', 'json',
  'include_tables', 'public.measure');
-- Excluding a sub-partitioned branch excludes its leaves.
SELECT data FROM pg_logical_slot_get_changes('regress_part', NULL, NULL, 'format', 'json',
  'publish_via_partition_root', 'true', 'exclude_tables', 'measure_rome');

-- With publish_via_partition_root a partition truncated alone is not sent as its root (that
-- would empty every partition): a warning says so.
INSERT INTO measure VALUES (5, 'oslo', 1), (6, 'bern', 2);
TRUNCATE measure_oslo;
SELECT data FROM pg_logical_slot_get_changes('regress_part', NULL, NULL, 'format', 'json',
  'publish_via_partition_root', 'true');

-- Only a partition selected, published as its root: the root's TRUNCATE stands for it.
INSERT INTO measure VALUES (7, 'oslo', 1);
TRUNCATE measure;
SELECT data FROM pg_logical_slot_get_changes('regress_part', NULL, NULL, 'format', 'json',
  'publish_via_partition_root', 'true', 'include_tables', 'measure_oslo');

-- A partition whose replica identity lacks the root's key cannot have its old rows published
-- as the root's: a clear ERROR, not a wrong key. Without publishing via the root it is fine.
CREATE TABLE pm (id int, code text, alt int NOT NULL, PRIMARY KEY (id, code)) PARTITION BY LIST (code);
CREATE TABLE pm_a PARTITION OF pm FOR VALUES IN ('a');
CREATE UNIQUE INDEX pm_a_alt ON pm_a (alt);
ALTER TABLE pm_a REPLICA IDENTITY USING INDEX pm_a_alt;
INSERT INTO pm VALUES (1, 'a', 10);
DELETE FROM pm;
-- The CONTEXT line names an LSN, which any change of WAL volume moves.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT data FROM pg_logical_slot_peek_changes('regress_part', NULL, NULL, 'format', 'json',
  'publish_via_partition_root', 'true', 'include_tables', 'pm');
\set SHOW_CONTEXT errors
SELECT data FROM pg_logical_slot_get_changes('regress_part', NULL, NULL, 'format', 'json',
  'include_tables', 'pm');

SELECT pg_drop_replication_slot('regress_part');
