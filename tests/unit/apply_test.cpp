// The statement builder (quoting of hostile identifiers), parameters and LSNs.
#include <gtest/gtest.h>

#include <cstring>

#include "apply/params.hpp"
#include "apply/sql_builder.hpp"
#include "common/lsn.hpp"
#include "follow/throttle.hpp"

using dts::apply::quote_ident;
using dts::decode::Column;
using dts::decode::Relation;
namespace proto = dts::protocol;

namespace {

Relation hostile() {
  Relation r;
  r.relid = 1;
  r.schema = "My \"Schema\"";
  r.name = "tâble; DROP TABLE x; --";
  r.columns = {{"Id", 23, -1, "integer", true}, {"a \"b\" c", 25, -1, "text", false}, {"doc", 114, -1, "json", false}};
  r.key_columns = {0};
  return r;
}

}  // namespace

TEST(Quoting, IdentifiersAreAlwaysQuotedWithQuotesDoubled) {
  EXPECT_EQ(quote_ident("plain"), "\"plain\"");
  EXPECT_EQ(quote_ident("Mixed Case"), "\"Mixed Case\"");
  EXPECT_EQ(quote_ident("a\"b"), "\"a\"\"b\"");
  EXPECT_EQ(quote_ident("\"\""), "\"\"\"\"\"\"");
  EXPECT_EQ(quote_ident("ünï cødé"), "\"ünï cødé\"");
  EXPECT_EQ(dts::apply::quote_literal("it's"), "'it''s'");
  EXPECT_EQ(dts::apply::quote_literal("a\\b"), "E'a\\\\b'");
}

TEST(SqlBuilder, InsertNamesEveryColumnAndNumbersRows) {
  Relation r = hostile();
  EXPECT_EQ(dts::apply::build_insert(r, 2),
            "INSERT INTO \"My \"\"Schema\"\"\".\"tâble; DROP TABLE x; --\" (\"Id\", \"a \"\"b\"\" c\", \"doc\") "
            "OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3), ($4, $5, $6)");
}

TEST(SqlBuilder, InsertWithoutColumnsInsertsRowsOfDefaults) {
  // A table with zero columns, or only generated ones (the source sends none of them).
  Relation r;
  r.schema = "public";
  r.name = "z";
  EXPECT_EQ(dts::apply::build_insert(r, 1), "INSERT INTO \"public\".\"z\" DEFAULT VALUES");
  EXPECT_EQ(dts::apply::build_insert(r, 3), "INSERT INTO \"public\".\"z\" SELECT FROM generate_series(1, 3)");
}

TEST(SqlBuilder, UpdateByKeySetsThenMatches) {
  Relation r = hostile();
  dts::apply::RowMatch m{{0}, {false}, false};
  EXPECT_EQ(dts::apply::build_update(r, {1, 2}, m),
            "UPDATE \"My \"\"Schema\"\"\".\"tâble; DROP TABLE x; --\" SET \"a \"\"b\"\" c\" = $1, \"doc\" = $2 "
            "WHERE \"Id\" = $3");
}

TEST(SqlBuilder, FullIdentityMatchesNullSafelyOneRowAndJsonAsText) {
  Relation r = hostile();
  dts::apply::RowMatch m{{0, 1, 2}, {false, true, false}, true};
  std::string sql = dts::apply::build_delete(r, m);
  EXPECT_EQ(sql,
            "DELETE FROM \"My \"\"Schema\"\"\".\"tâble; DROP TABLE x; --\" WHERE (tableoid, ctid) = (SELECT tableoid, "
            "ctid FROM \"My \"\"Schema\"\"\".\"tâble; DROP TABLE x; --\" WHERE \"Id\" = $1 AND \"a \"\"b\"\" c\" IS NULL "
            "AND \"doc\"::text = $2::text LIMIT 1)");
}

TEST(SqlBuilder, UpdateOfManyRowsJoinsValuesOnTheKey) {
  Relation r = hostile();
  EXPECT_EQ(dts::apply::build_update_rows(r, 2),
            "UPDATE \"My \"\"Schema\"\"\".\"tâble; DROP TABLE x; --\" AS t SET \"a \"\"b\"\" c\" = v.\"a \"\"b\"\" c\", "
            "\"doc\" = v.\"doc\" FROM (VALUES ($1::integer, $2::text, $3::json), ($4, $5, $6)) AS v (\"Id\", "
            "\"a \"\"b\"\" c\", \"doc\") WHERE t.\"Id\" = v.\"Id\"");
}

TEST(SqlBuilder, Truncate) {
  Relation a = hostile(), b = hostile();
  b.name = "b";
  EXPECT_EQ(dts::apply::build_truncate({&a, &b}, {false, true}, true, true),
            "TRUNCATE ONLY \"My \"\"Schema\"\"\".\"tâble; DROP TABLE x; --\", \"My \"\"Schema\"\"\".\"b\" RESTART IDENTITY "
            "CASCADE");
  EXPECT_EQ(dts::apply::build_truncate({&b}, {}, false, false), "TRUNCATE ONLY \"My \"\"Schema\"\"\".\"b\"");
}

TEST(Params, IntegersTakeTheirColumnsWidthAndTextIsNulTerminated) {
  dts::apply::ParamSet p;
  proto::Value v;
  v.kind = proto::ValueKind::kInt;
  v.int_value = -2;
  p.add(Column{"a", 21, -1, "smallint", false}, v);
  p.add(Column{"b", 20, -1, "bigint", false}, v);
  proto::Value t;
  t.kind = proto::ValueKind::kText;
  const char raw[] = "happyXXXX";
  t.bytes = proto::Bytes{reinterpret_cast<const uint8_t*>(raw), 5};
  p.add(Column{"mood", 16500, -1, "mood", false}, t);  // user-defined: text parameter
  p.add(Column{"t", 25, -1, "text", false}, t);        // text: raw bytes as binary, no copy
  proto::Value n;
  p.add(Column{"n", 25, -1, "text", false}, n);
  ASSERT_EQ(p.size(), 5);
  EXPECT_EQ(p.lengths()[0], 2);
  EXPECT_EQ(std::memcmp(p.values()[0], "\xff\xfe", 2), 0);
  EXPECT_EQ(p.lengths()[1], 8);
  EXPECT_EQ(p.formats()[1], 1);
  EXPECT_STREQ(p.values()[2], "happy");
  EXPECT_EQ(p.formats()[2], 0);
  EXPECT_EQ(p.values()[3], raw);
  EXPECT_EQ(p.formats()[3], 1);
  EXPECT_EQ(p.values()[4], nullptr);
  EXPECT_EQ(dts::apply::param_type_for(Column{"x", 16500, -1, "mood", false}), 0u);
  EXPECT_EQ(dts::apply::param_type_for(Column{"x", 1700, -1, "numeric", false}), 1700u);
}

TEST(Params, AllBinaryIgnoresNullsAndCountsTextValuesUntilCleared) {
  dts::apply::ParamSet p;
  proto::Value v;
  v.kind = proto::ValueKind::kInt;
  v.int_value = 7;
  p.add(Column{"a", 23, -1, "integer", false}, v);
  p.add(Column{"n", 25, -1, "text", false}, proto::Value{});  // NULL: no format, still binary COPY
  EXPECT_TRUE(p.all_binary());
  proto::Value t;
  t.kind = proto::ValueKind::kText;
  const char raw[] = "happy";
  t.bytes = proto::Bytes{reinterpret_cast<const uint8_t*>(raw), 5};
  p.add(Column{"mood", 16500, -1, "mood", false}, t);  // user-defined: a text parameter
  EXPECT_FALSE(p.all_binary());
  p.clear();
  EXPECT_TRUE(p.all_binary());
}

TEST(Params, TextArrayLiteralQuotesEveryElement) {
  EXPECT_EQ(dts::apply::text_array_literal({}), "{}");
  EXPECT_EQ(dts::apply::text_array_literal({"public.t", "a \"b\"\\, {c}"}),
            "{\"public.t\",\"a \\\"b\\\"\\\\, {c}\"}");
}

TEST(Params, ManyValuesStayValidUntilCleared) {
  dts::apply::ParamSet p;
  proto::Value v;
  v.kind = proto::ValueKind::kInt;
  for (int i = 0; i < 50000; ++i) {
    v.int_value = i;
    p.add(Column{"a", 23, -1, "integer", false}, v);
  }
  for (int i = 0; i < 50000; ++i) {
    const auto* b = reinterpret_cast<const unsigned char*>(p.values()[i]);
    int got = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
    ASSERT_EQ(got, i);
  }
}

TEST(Lsn, ParsesAndFormatsLikePostgres) {
  EXPECT_EQ(dts::format_lsn(0x16B374D848ull), "16/B374D848");
  EXPECT_EQ(dts::parse_lsn("16/B374D848").value(), 0x16B374D848ull);
  EXPECT_EQ(dts::parse_lsn("0/0").value(), 0u);
  EXPECT_FALSE(dts::parse_lsn("nonsense"));
  EXPECT_FALSE(dts::parse_lsn("1/"));
  EXPECT_FALSE(dts::parse_lsn("/1"));
  EXPECT_FALSE(dts::parse_lsn("123456789/0"));
  EXPECT_FALSE(dts::parse_lsn("0/G"));
}

TEST(Throttle, WaitsUntilTheBytesFitTheRate) {
  using dts::follow::throttle_wait;
  EXPECT_EQ(throttle_wait(10e6, 0, 0.1), 0);                 // no limit
  EXPECT_DOUBLE_EQ(throttle_wait(2e6, 1e6, 1.5), 0.5);       // 2 MB at 1 MB/s is due at 2 s
  EXPECT_EQ(throttle_wait(1e6, 1e6, 3.0), 0);                // behind the rate: no wait
  EXPECT_DOUBLE_EQ(throttle_wait(100e6, 1e6, 1.0), 1.0);     // capped, so feedback keeps flowing
}
