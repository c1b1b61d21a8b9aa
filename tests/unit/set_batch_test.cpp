// Set-based UPDATE and DELETE: which changes may share a batch, their statements and array
// parameters.
#include <gtest/gtest.h>

#include "apply/params.hpp"
#include "apply/set_batch.hpp"
#include "apply/sql_builder.hpp"
#include "values.hpp"

using dts::apply::SetBatch;
using dts::apply::SetShape;
using dts::decode::Relation;
using dts::decode::RowChange;
using dts::decode::RowKind;
using dts::decode::Values;
using dts::test::int_value;
using dts::test::text_value;
using dts::test::value_of_kind;
namespace proto = dts::protocol;

namespace {

Relation keyed() {
  Relation r;
  r.relid = 7;
  r.schema = "public";
  r.name = "t";
  r.columns = {{"id", 23, -1, "integer", true}, {"v", 25, -1, "text", false}, {"doc", 114, -1, "json", false}};
  r.key_columns = {0};
  return r;
}

Relation full_identity() {
  Relation r = keyed();
  r.identity = proto::ReplicaIdentity::kFull;
  r.key_columns.clear();
  r.columns[0].is_key = false;
  return r;
}

}  // namespace

TEST(SetBatch, UpdatesKeepingTheirKeyShareABatchUntilAKeyRepeats) {
  Relation r = keyed();
  Values a{int_value(1), text_value("x"), text_value("{}")}, b{int_value(2), text_value("y"), text_value("{}")};
  RowChange ua{RowKind::kUpdate, &r, proto::OldTuple::kNone, nullptr, &a};
  RowChange ub{RowKind::kUpdate, &r, proto::OldTuple::kNone, nullptr, &b};
  SetShape shape;
  ASSERT_TRUE(SetBatch::shape_of(ua, shape));
  EXPECT_EQ(shape.match, (std::vector<size_t>{0}));
  EXPECT_EQ(shape.set, (std::vector<size_t>{1, 2}));  // the key is not set again
  SetBatch batch;
  batch.add(shape, ua, 100);
  ASSERT_TRUE(SetBatch::shape_of(ub, shape));
  EXPECT_TRUE(batch.accepts(shape, ub));
  batch.add(shape, ub, 100);
  // Row 1 again: applied at once, the second image could win or lose; it waits for the next batch.
  ASSERT_TRUE(SetBatch::shape_of(ua, shape));
  EXPECT_FALSE(batch.accepts(shape, ua));
  EXPECT_EQ(batch.rows(), 2u);
  EXPECT_EQ(batch.stride(), 3u);
  EXPECT_EQ(batch.statement(),
            "UPDATE \"public\".\"t\" AS t SET \"v\" = v.s0, \"doc\" = v.s1 FROM unnest($1::integer[], $2::text[], "
            "$3::json[]) AS v(m0, s0, s1) WHERE t.\"id\" = v.m0");
}

TEST(SetBatch, AnUpdateOfTheKeyOrAnotherShapeDoesNotJoin) {
  Relation r = keyed();
  Values oldkey{int_value(1)};
  Values row{int_value(2), text_value("y"), text_value("{}")};
  Values partial{int_value(3), text_value("z"), value_of_kind(proto::ValueKind::kUnchangedToast)};
  SetShape shape;
  EXPECT_FALSE(SetBatch::shape_of(RowChange{RowKind::kUpdate, &r, proto::OldTuple::kKey, &oldkey, &row}, shape));
  SetBatch batch;
  RowChange whole{RowKind::kUpdate, &r, proto::OldTuple::kNone, nullptr, &row};
  ASSERT_TRUE(SetBatch::shape_of(whole, shape));
  batch.add(shape, whole, 1);
  // An unchanged large value is left out of the SET list: another shape, another batch.
  RowChange toast{RowKind::kUpdate, &r, proto::OldTuple::kNone, nullptr, &partial};
  ASSERT_TRUE(SetBatch::shape_of(toast, shape));
  EXPECT_EQ(shape.set, (std::vector<size_t>{1}));
  EXPECT_FALSE(batch.accepts(shape, toast));
  // A delete by key.
  RowChange del{RowKind::kDelete, &r, proto::OldTuple::kKey, &oldkey, nullptr};
  ASSERT_TRUE(SetBatch::shape_of(del, shape));
  EXPECT_TRUE(shape.is_delete);
  EXPECT_FALSE(batch.accepts(shape, del));
}

TEST(SetBatch, FullIdentityTakesDuplicatesButNotARowItChanged) {
  Relation r = full_identity();
  Values one{int_value(1), value_of_kind(proto::ValueKind::kNull), text_value("{}")};
  Values two{int_value(2), value_of_kind(proto::ValueKind::kNull), text_value("{}")};
  SetShape shape;
  RowChange d1{RowKind::kDelete, &r, proto::OldTuple::kFull, &one, nullptr};
  ASSERT_TRUE(SetBatch::shape_of(d1, shape));
  EXPECT_TRUE(shape.full);
  EXPECT_EQ(shape.match, (std::vector<size_t>{0, 1, 2}));
  SetBatch deletes;
  deletes.add(shape, d1, 1);
  EXPECT_TRUE(deletes.accepts(shape, d1));  // two identical rows deleted: each change takes one
  deletes.add(shape, d1, 1);
  EXPECT_NE(deletes.statement().find("row_number() OVER (PARTITION BY v.img ORDER BY v.n)"), std::string::npos);
  EXPECT_NE(deletes.statement().find("ROW(\"id\"::text, \"v\"::text, \"doc\"::text)::text"), std::string::npos);

  // 1 -> 2, then 2 -> 1: the second finds the row the first made, so it waits.
  SetBatch updates;
  RowChange u12{RowKind::kUpdate, &r, proto::OldTuple::kFull, &one, &two};
  RowChange u21{RowKind::kUpdate, &r, proto::OldTuple::kFull, &two, &one};
  ASSERT_TRUE(SetBatch::shape_of(u12, shape));
  EXPECT_EQ(shape.set, (std::vector<size_t>{0, 1, 2}));
  updates.add(shape, u12, 1);
  EXPECT_TRUE(updates.accepts(shape, u12));  // a duplicate of the same old row: another row
  ASSERT_TRUE(SetBatch::shape_of(u21, shape));
  EXPECT_FALSE(updates.accepts(shape, u21));
  // A FULL update that leaves a large value unchanged has no complete new image.
  Values partial{int_value(3), text_value("z"), value_of_kind(proto::ValueKind::kUnchangedToast)};
  EXPECT_FALSE(SetBatch::shape_of(RowChange{RowKind::kUpdate, &r, proto::OldTuple::kFull, &one, &partial}, shape));
}

TEST(SetBatch, IsBoundedInRows) {
  Relation r = keyed();
  SetBatch batch;
  SetShape shape;
  std::vector<Values> rows;
  rows.reserve(SetBatch::kMaxRows);
  for (size_t i = 0; i < SetBatch::kMaxRows; ++i) {
    rows.push_back(Values{int_value(static_cast<int64_t>(i)), text_value("v"), text_value("{}")});
    RowChange u{RowKind::kUpdate, &r, proto::OldTuple::kNone, nullptr, &rows.back()};
    ASSERT_TRUE(SetBatch::shape_of(u, shape));
    ASSERT_TRUE(batch.accepts(shape, u));
    batch.add(shape, u, 1);
  }
  EXPECT_TRUE(batch.full());
  batch.clear();
  EXPECT_TRUE(batch.empty());
}

TEST(SqlBuilder, SetDeleteByKeyJoinsTheUnnestedKeys) {
  Relation r = keyed();
  EXPECT_EQ(dts::apply::build_delete_set(r, {0}, false),
            "DELETE FROM \"public\".\"t\" AS t USING unnest($1::integer[]) AS v(m0) WHERE t.\"id\" = v.m0");
  // Types without equality are compared as text.
  EXPECT_EQ(dts::apply::build_delete_set(r, {2}, false),
            "DELETE FROM \"public\".\"t\" AS t USING unnest($1::json[]) AS v(m0) WHERE t.\"doc\"::text = v.m0::text");
}

TEST(Params, ArrayParametersBinaryTextAndNull) {
  Relation r = keyed();
  dts::apply::ParamSet p;
  // Two rows of (id, v): ints go binary, text goes binary (text's binary form is its bytes).
  p.add(r.columns[0], int_value(5));
  p.add(r.columns[1], text_value("a\"b"));
  p.add(r.columns[0], int_value(6));
  p.add(r.columns[1], value_of_kind(proto::ValueKind::kNull));
  std::string out;
  int format = -1;
  ASSERT_TRUE(dts::apply::array_param(r.columns[0], p, 2, 2, 0, out, format));
  EXPECT_EQ(format, 1);
  // ndim 1, no nulls, int4, 2 elements from 1, then 4-byte lengths and values.
  const char want[] = "\0\0\0\1\0\0\0\0\0\0\0\x17\0\0\0\2\0\0\0\1\0\0\0\4\0\0\0\5\0\0\0\4\0\0\0\6";
  EXPECT_EQ(out, std::string(want, sizeof want - 1));
  ASSERT_TRUE(dts::apply::array_param(r.columns[1], p, 2, 2, 1, out, format));
  EXPECT_EQ(format, 1);
  EXPECT_EQ(out.substr(4, 4), std::string("\0\0\0\1", 4));  // has a NULL
  EXPECT_EQ(out.substr(out.size() - 4), std::string("\xff\xff\xff\xff", 4));

  // Values of a type without a binary form travel as text: a quoted array literal.
  dts::decode::Column mood{"m", 16400, -1, "public.mood", false};
  dts::apply::ParamSet q;
  q.add(mood, text_value("ha\"p\\py"));
  q.add(mood, value_of_kind(proto::ValueKind::kNull));
  q.add(mood, text_value("a,b}"));
  ASSERT_TRUE(dts::apply::array_param(mood, q, 3, 1, 0, out, format));
  EXPECT_EQ(format, 0);
  EXPECT_EQ(out, "{\"ha\\\"p\\\\py\",NULL,\"a,b}\"}");
  // Mixed formats cannot share an array.
  dts::decode::Column numeric{"n", 1700, -1, "numeric", false};
  dts::apply::ParamSet m;
  m.add(numeric, int_value(1));  // an integer value of a non-integer column goes as text
  proto::Value bin;
  bin.kind = proto::ValueKind::kBinary;
  bin.bytes = proto::Bytes{reinterpret_cast<const uint8_t*>("\0\0"), 2};
  m.add(numeric, bin);
  EXPECT_FALSE(dts::apply::array_param(numeric, m, 2, 1, 0, out, format));
}
