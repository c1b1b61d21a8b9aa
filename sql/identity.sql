-- Every replica identity: what UPDATE and DELETE carry of the old row.
\pset format unaligned
SET synchronous_commit = on;

CREATE TABLE ri_pk (id int PRIMARY KEY, v text);
CREATE TABLE ri_pk2 (a int, b text, v text, PRIMARY KEY (b, a));
CREATE TABLE ri_index (id int NOT NULL, code text NOT NULL, v text);
CREATE UNIQUE INDEX ri_index_code ON ri_index (code);
ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_code;
CREATE TABLE ri_full (id int PRIMARY KEY, v text);
ALTER TABLE ri_full REPLICA IDENTITY FULL;
CREATE TABLE ri_full_nokey (id int, v text);
ALTER TABLE ri_full_nokey REPLICA IDENTITY FULL;
CREATE TABLE ri_nothing (id int PRIMARY KEY, v text);
ALTER TABLE ri_nothing REPLICA IDENTITY NOTHING;
CREATE TABLE ri_nokey (id int, v text);

SELECT 'init' FROM pg_create_logical_replication_slot('regress_identity', 'dts_decoding');

INSERT INTO ri_pk VALUES (1, 'a');
UPDATE ri_pk SET v = 'b';
UPDATE ri_pk SET id = 2;
DELETE FROM ri_pk;
INSERT INTO ri_pk2 VALUES (1, 'x', 'a');
UPDATE ri_pk2 SET a = 2, v = 'b';
DELETE FROM ri_pk2;
INSERT INTO ri_index VALUES (1, 'c1', 'a');
UPDATE ri_index SET v = 'b';
UPDATE ri_index SET code = 'c2';
DELETE FROM ri_index;
INSERT INTO ri_full VALUES (1, 'a');
UPDATE ri_full SET v = 'b';
DELETE FROM ri_full;
INSERT INTO ri_full_nokey VALUES (1, NULL);
UPDATE ri_full_nokey SET v = 'b';
DELETE FROM ri_full_nokey;
INSERT INTO ri_nothing VALUES (1, 'a');
UPDATE ri_nothing SET v = 'b';
DELETE FROM ri_nothing;
INSERT INTO ri_nokey VALUES (1, 'a');
UPDATE ri_nokey SET v = 'b';
DELETE FROM ri_nokey;

SELECT data FROM pg_logical_slot_get_changes('regress_identity', NULL, NULL, 'format', 'json');

-- Columns: generated columns are left out, dropped ones are never sent, added ones appear
-- after a new relation record.
CREATE TABLE cols (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED, gone text);
INSERT INTO cols (id, a, gone) VALUES (1, 1, 'x');
ALTER TABLE cols DROP COLUMN gone;
INSERT INTO cols (id, a) VALUES (2, 2);
ALTER TABLE cols ADD COLUMN added text DEFAULT 'new';
INSERT INTO cols (id, a) VALUES (3, 3);
UPDATE cols SET a = 4 WHERE id = 1;
SELECT data FROM pg_logical_slot_get_changes('regress_identity', NULL, NULL, 'format', 'json');

-- Names that need quoting travel as they are.
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Table ""quoted"", with comma" ("Col 1" int PRIMARY KEY, "ü" text);
INSERT INTO "Odd Schema"."Table ""quoted"", with comma" VALUES (1, 'x');
SELECT data FROM pg_logical_slot_get_changes('regress_identity', NULL, NULL, 'format', 'json');

SELECT pg_drop_replication_slot('regress_identity');
