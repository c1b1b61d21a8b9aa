// Schema-change records (dts.ddl) and the statements that replay them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.hpp"
#include "ddl/record_signature.hpp"
#include "ddl/schema_change.hpp"

namespace dts::ddl {
namespace {

std::string relation_json(const std::string& name, const std::string& columns, const std::string& constraints = "[]",
                          const std::string& schema = "public") {
  return R"~({"relid": "16402", "schema": ")~" + schema + R"~(", "name": ")~" + name +
         R"~(", "kind": "r", "persistence": "p", "replica_identity": "d", "partitions": [], "columns": )~" + columns +
         R"~(, "constraints": )~" + constraints + "}";
}

const char* kIdA = R"~({"attnum": 1, "name": "id", "type": "integer", "notnull": true, "local": true})~";
const char* kColA = R"~({"attnum": 2, "name": "a", "type": "text", "notnull": false, "local": true})~";
const char* kPk = R"~([{"name": "t_pkey", "type": "p", "def": "PRIMARY KEY (id)", "validated": true}])~";

std::string command(const std::string& tag, const std::string& after, const std::string& before = "null") {
  return R"~({"ddl": "command", "tag": ")~" + tag + R"~(", "object_type": "table", "identity": "public.t", "objid": "16402", "definition": )~" +
         after + R"~(, "before": )~" + before + "}";
}

std::vector<std::string> replay(const std::string& json, bool rewritten = false) {
  return replay_statements(parse_schema_change(json), rewritten);
}

TEST(SchemaChange, CreateTableCarriesColumnsAndConstraints) {
  auto out = replay(command("CREATE TABLE", relation_json("t", std::string("[") + kIdA + ", " + kColA + "]", kPk)));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], R"~(CREATE TABLE IF NOT EXISTS "public"."t" ("id" integer NOT NULL, "a" text, CONSTRAINT "t_pkey" PRIMARY KEY (id)))~");
}

TEST(SchemaChange, RenamedColumnIsRenamedNotDroppedAndAdded) {
  std::string before = relation_json("t", std::string("[") + kIdA + ", " + kColA + "]", kPk);
  std::string after = relation_json("t", std::string("[") + kIdA + R"~(, {"attnum": 2, "name": "b", "type": "text"}])~", kPk);
  auto out = replay(command("ALTER TABLE", after, before));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], R"~(ALTER TABLE "public"."t" RENAME COLUMN "a" TO "b")~");
}

TEST(SchemaChange, TableRenamedAndMovedIsNamedByItsNewNameAfterward) {
  std::string cols = std::string("[") + kIdA + "]";
  auto out = replay(command("ALTER TABLE", relation_json("T 2", cols, "[]", "s2"), relation_json("t", cols)));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0], R"~(ALTER TABLE "public"."t" SET SCHEMA "s2")~");
  EXPECT_EQ(out[1], R"~(ALTER TABLE "s2"."t" RENAME TO "T 2")~");
}

TEST(SchemaChange, ColumnChangesInOrderConstraintsDroppedFirstAddedLast) {
  std::string before = relation_json("t", std::string("[") + kIdA + ", " + kColA + "]", kPk);
  std::string after = relation_json(
      "t",
      std::string("[") + kIdA +
          R"~(, {"attnum": 2, "name": "a", "type": "bigint", "notnull": true, "default": "5"}, {"attnum": 3, "name": "c", "type": "date", "default": "now()"}])~",
      R"~([{"name": "t_a_check", "type": "c", "def": "CHECK (a > 0) NOT VALID", "validated": false}])~");
  auto out = replay(command("ALTER TABLE", after, before), true);
  std::vector<std::string> want = {
      R"~(ALTER TABLE "public"."t" DROP CONSTRAINT IF EXISTS "t_pkey")~",
      R"~(ALTER TABLE "public"."t" ALTER COLUMN "a" TYPE bigint USING NULL::bigint)~",
      R"~(ALTER TABLE "public"."t" ALTER COLUMN "a" SET DEFAULT 5)~",
      R"~(ALTER TABLE "public"."t" ALTER COLUMN "a" SET NOT NULL)~",
      R"~(ALTER TABLE "public"."t" ADD COLUMN "c" date DEFAULT now())~",
      R"~(ALTER TABLE "public"."t" ADD CONSTRAINT "t_a_check" CHECK (a > 0) NOT VALID)~",
  };
  EXPECT_EQ(out, want);
}

TEST(SchemaChange, ColumnAddedWithADefaultEvaluatedOnceKeepsTheSourcesValue) {
  std::string before = relation_json("t", std::string("[") + kIdA + "]");
  std::string after = relation_json("t", std::string("[") + kIdA +
      R"~(, {"attnum": 2, "name": "at", "type": "timestamp with time zone", "default": "now()", "missing": "2026-11-30 14:00:00+00"}])~");
  std::vector<std::string> want = {
      R"~(ALTER TABLE "public"."t" ADD COLUMN "at" timestamp with time zone DEFAULT '2026-11-30 14:00:00+00'::timestamp with time zone)~",
      R"~(ALTER TABLE "public"."t" ALTER COLUMN "at" SET DEFAULT now())~"};
  EXPECT_EQ(replay(command("ALTER TABLE", after, before)), want);
}

TEST(SchemaChange, AConstraintKeepsItsIdentityThroughRenames) {
  // The primary key's column renamed and the constraint renamed: one constraint (same OID), so
  // no drop and add (which a foreign key depending on it would refuse).
  std::string before = relation_json("t", std::string("[") + kIdA + "]",
      R"~([{"oid": "9", "name": "t_pkey", "type": "p", "def": "PRIMARY KEY (id)", "validated": true},
          {"oid": "10", "name": "t_chk", "type": "c", "def": "CHECK (id > 0) NOT VALID", "validated": false}])~");
  std::string after = relation_json("t", R"~([{"attnum": 1, "name": "key", "type": "integer", "notnull": true}])~",
      R"~([{"oid": "9", "name": "t_key", "type": "p", "def": "PRIMARY KEY (key)", "validated": true},
          {"oid": "10", "name": "t_chk", "type": "c", "def": "CHECK (key > 0)", "validated": true}])~");
  std::vector<std::string> want = {
      R"~(ALTER TABLE "public"."t" RENAME COLUMN "id" TO "key")~",
      R"~(ALTER TABLE "public"."t" RENAME CONSTRAINT "t_pkey" TO "t_key")~",
      R"~(ALTER TABLE "public"."t" VALIDATE CONSTRAINT "t_chk")~"};
  EXPECT_EQ(replay(command("ALTER TABLE", after, before)), want);
}

TEST(SchemaChange, GrantsAndRevokesAreTheSourcesStatementAgain) {
  auto grant = replay(R"~({"ddl": "grant", "is_grant": true, "keyword": "TABLE", "objects": ["public.t", "s.\"U\""],
      "relations": [{"schema": "public", "name": "t"}], "privileges": ["SELECT", "UPDATE (a, \"B\")"],
      "grantees": ["reader", "\"Writer\""], "grant_option": true, "cascade": false})~");
  ASSERT_EQ(grant.size(), 1u);
  EXPECT_EQ(grant[0], R"~(GRANT SELECT, UPDATE (a, "B") ON TABLE public.t, s."U" TO reader, "Writer" WITH GRANT OPTION)~");
  auto revoke = replay(R"~({"ddl": "grant", "is_grant": false, "keyword": "ROUTINE", "objects": ["public.f(integer)"],
      "privileges": ["EXECUTE"], "grantees": ["PUBLIC"], "grant_option": false, "cascade": true})~");
  ASSERT_EQ(revoke.size(), 1u);
  EXPECT_EQ(revoke[0], "REVOKE EXECUTE ON ROUTINE public.f(integer) FROM PUBLIC CASCADE");
}

TEST(SchemaChange, DropsOnlyWhatTheCommandDroppedItself) {
  auto out = replay(R"~({"ddl": "drop", "tag": "DROP TABLE", "objects": [
      {"object_type": "table", "identity": "public.u", "original": true},
      {"object_type": "type", "identity": "public.u", "original": false},
      {"object_type": "sequence", "identity": "public.u_id_seq", "original": false},
      {"object_type": "table column", "identity": "public.t.a", "original": true}]})~");
  std::vector<std::string> want = {"DROP TABLE IF EXISTS public.u CASCADE"};
  EXPECT_EQ(out, want);
}

TEST(SchemaChange, RenamedFunctionByItsIdentityBefore) {
  auto out = replay(R"~({"ddl": "command", "tag": "ALTER FUNCTION", "object_type": "function", "identity": "public.g(integer)",
      "objid": "16427", "definition": {"functiondef": "CREATE OR REPLACE FUNCTION public.g(x integer) ..."},
      "before": {"identity": "public.f(integer)", "rename_to": "g"}})~");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], R"~(ALTER FUNCTION public.f(integer) RENAME TO "g")~");
}

TEST(SchemaChange, MalformedRecordsNameWhatIsWrong) {
  for (const char* bad : {"not json", R"~({"ddl": "weird"})~", R"~({"ddl": "command", "tag": "X"})~",
                          R"~({"ddl": "drop", "tag": "DROP TABLE"})~"}) {
    try {
      parse_schema_change(bad);
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kProtocol);
      EXPECT_NE(std::string(e.what()).find("schema-change record"), std::string::npos) << e.what();
    }
  }
}

TEST(SchemaChange, ARewriteNamesItsTableAndAncestorsSince040) {
  SchemaChange c = parse_schema_change(
      R"~({"ddl": "rewrite", "tag": "ALTER TABLE", "relid": 16500, "reason": 4, "schema": "public", "name": "m_b2x",)~"
      R"~( "ancestors": [16490, 16480]})~");
  EXPECT_EQ(c.kind, ChangeKind::kRewrite);
  EXPECT_EQ(c.objid, 16500u);
  ASSERT_TRUE(c.rewritten.has_value());
  EXPECT_EQ(c.rewritten->qualified(), R"~("public"."m_b2x")~");
  EXPECT_EQ(c.ancestors, (std::vector<uint32_t>{16490, 16480}));
  // 0.3.0 and before: the relid only.
  SchemaChange old = parse_schema_change(R"~({"ddl": "rewrite", "tag": "ALTER TABLE", "relid": 16500, "reason": 4})~");
  EXPECT_FALSE(old.rewritten.has_value());
  EXPECT_TRUE(old.ancestors.empty());
  EXPECT_THROW(parse_schema_change(R"~({"ddl": "rewrite", "tag": "ALTER TABLE", "relid": 1, "ancestors": ["x"]})~"),
               Error);
}

TEST(SchemaChange, TablesOfAnIndexIsItsTable) {
  SchemaChange c = parse_schema_change(R"~({"ddl": "command", "tag": "CREATE INDEX", "object_type": "index", "identity": "public.i",
      "objid": "1", "definition": {"relid": "1", "schema": "public", "name": "i", "kind": "i",
      "indexdef": "CREATE INDEX i ON public.t USING btree (a)", "index_table": {"relid": "2", "schema": "public", "name": "t"}}})~");
  auto tables = tables_of(c);
  ASSERT_EQ(tables.size(), 1u);
  EXPECT_EQ(tables[0].name, "t");
  EXPECT_EQ(replay_statements(c, false)[0], "CREATE INDEX IF NOT EXISTS i ON public.t USING btree (a)");
}

}  // namespace
}  // namespace dts::ddl

namespace dts::ddl {
namespace {

TEST(RecordSignature, OnlyTheKeysSignatureVerifies) {
  std::string key(32, 'k');
  std::string record = R"({"ddl": "create_as"})";
  std::string signed_record = sign_record(record, key);
  auto ok = verified_record(signed_record, key);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, record);
  EXPECT_FALSE(verified_record(signed_record, std::string(32, 'x')).has_value()) << "another key";
  std::string tampered = signed_record;
  tampered.back() = ' ';
  EXPECT_FALSE(verified_record(tampered, key).has_value()) << "a changed record";
  EXPECT_FALSE(verified_record(record, key).has_value()) << "unsigned";
  EXPECT_FALSE(verified_record(signed_record, "").has_value()) << "no key";
  EXPECT_FALSE(verified_record(std::string(64, 'z') + " {}", key).has_value()) << "not hex";
}

}  // namespace
}  // namespace dts::ddl
