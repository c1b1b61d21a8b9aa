// Parallel apply's row keys: what makes a later group wait for an earlier one in flight.
#include <gtest/gtest.h>

#include "apply/row_keys.hpp"
#include "values.hpp"

using dts::apply::GroupKeys;
using dts::apply::key_hash;
using dts::apply::RowAccess;
using dts::decode::Relation;
using dts::decode::Values;
using dts::test::int_value;
using dts::test::text_value;

namespace {

Relation two_column_key(uint32_t relid) {
  Relation r;
  r.relid = relid;
  r.columns = {{"a", 25, -1, "text", true}, {"v", 23, -1, "integer", false}, {"b", 25, -1, "text", true}};
  r.key_columns = {0, 2};
  return r;
}

RowAccess keys(uint32_t relid, uint64_t k) { return RowAccess{RowAccess::Kind::kKeys, relid, {k, 0}, 1}; }

}  // namespace

TEST(RowKeys, AKeyIsTheSameFromAWholeRowAndFromAnOldKey) {
  Relation r = two_column_key(5);
  Values row = {text_value("x"), int_value(1), text_value("y")};
  Values old_key = {text_value("x"), text_value("y")};  // key columns only, in key order
  EXPECT_EQ(key_hash(r, row, false), key_hash(r, old_key, true));
  Values other_value = {text_value("x"), int_value(2), text_value("y")};
  EXPECT_EQ(key_hash(r, row, false), key_hash(r, other_value, false));  // not part of the key
}

TEST(RowKeys, KeysDifferByTableAndByWhereValuesSplit) {
  Relation r = two_column_key(5), s = two_column_key(6);
  Values ab_c = {text_value("ab"), int_value(1), text_value("c")};
  Values a_bc = {text_value("a"), int_value(1), text_value("bc")};
  EXPECT_NE(key_hash(r, ab_c, false), key_hash(r, a_bc, false));
  EXPECT_NE(key_hash(r, ab_c, false), key_hash(s, ab_c, false));
}

TEST(RowKeys, AGroupConflictsOnItsKeysItsWholeTablesAndTheTablesItTouched) {
  GroupKeys g;
  EXPECT_TRUE(g.empty());
  g.record(keys(1, 42));
  g.record(RowAccess{RowAccess::Kind::kAppend, 2, {0, 0}, 0});
  g.record(RowAccess{RowAccess::Kind::kTable, 3, {0, 0}, 0});
  EXPECT_TRUE(g.conflicts(keys(1, 42)));
  EXPECT_FALSE(g.conflicts(keys(1, 43)));
  // An UPDATE that moves a row: its old or its new key.
  EXPECT_TRUE(g.conflicts(RowAccess{RowAccess::Kind::kKeys, 1, {7, 42}, 2}));
  // Inserts into a table without unique index collide with nothing, except a table lock.
  EXPECT_FALSE(g.conflicts(RowAccess{RowAccess::Kind::kAppend, 2, {0, 0}, 0}));
  EXPECT_FALSE(g.conflicts(RowAccess{RowAccess::Kind::kAppend, 1, {0, 0}, 0}));
  EXPECT_TRUE(g.conflicts(RowAccess{RowAccess::Kind::kAppend, 3, {0, 0}, 0}));
  // A change of a table without key conflicts with anything the group did in that table.
  EXPECT_TRUE(g.conflicts(RowAccess{RowAccess::Kind::kTable, 1, {0, 0}, 0}));
  EXPECT_TRUE(g.conflicts(RowAccess{RowAccess::Kind::kTable, 2, {0, 0}, 0}));
  EXPECT_FALSE(g.conflicts(RowAccess{RowAccess::Kind::kTable, 4, {0, 0}, 0}));
  // Any key of a table the group changed as a whole.
  EXPECT_TRUE(g.conflicts(keys(3, 1)));
  g.clear();
  EXPECT_TRUE(g.empty());
  EXPECT_FALSE(g.conflicts(keys(1, 42)));
  EXPECT_FALSE(g.conflicts(RowAccess{RowAccess::Kind::kAppend, 3, {0, 0}, 0}));
}

TEST(RowKeys, AGroupWithMoreKeysThanItKeepsTurnsToItsTables) {
  GroupKeys g;
  for (uint64_t k = 0; k < 70000; ++k) g.record(keys(1, k * 7919));
  g.record(RowAccess{RowAccess::Kind::kAppend, 2, {0, 0}, 0});
  // Any key of its tables now, not only the ones it saw; other tables stay free.
  EXPECT_TRUE(g.conflicts(keys(1, 3)));
  EXPECT_TRUE(g.conflicts(RowAccess{RowAccess::Kind::kAppend, 2, {0, 0}, 0}));
  EXPECT_FALSE(g.conflicts(keys(3, 3)));
  g.clear();
  EXPECT_FALSE(g.conflicts(keys(1, 3)));
  g.record(keys(1, 5));
  EXPECT_TRUE(g.conflicts(keys(1, 5)));
  EXPECT_FALSE(g.conflicts(keys(1, 6)));
}
