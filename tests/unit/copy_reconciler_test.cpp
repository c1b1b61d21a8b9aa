// The copy's snapshots and the reconciliation of the stream with them.
#include <gtest/gtest.h>

#include <thread>

#include "apply/copy_reconciler.hpp"
#include "pg/snapshot.hpp"
#include "values.hpp"

using dts::apply::CopiedChunk;
using dts::apply::CopiedTable;
using dts::apply::CopyReconciler;
using dts::apply::RowFate;
using dts::pg::Snapshot;
using dts::test::int_value;
namespace proto = dts::protocol;

TEST(Snapshot, ParsesAndDecidesVisibility) {
  auto s = Snapshot::parse("100:110:103,105");
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->sees(99));    // before xmin
  EXPECT_TRUE(s->sees(104));   // between, not in progress
  EXPECT_FALSE(s->sees(103));  // in progress when taken
  EXPECT_FALSE(s->sees(110));  // at xmax: started after
  EXPECT_FALSE(s->sees(200));
  EXPECT_EQ(s->text(), "100:110:103,105");
}

TEST(Snapshot, WidensIdsAcrossAnEpoch) {
  // xmax just past 2^32: 32-bit ids near 2^32 are the previous epoch's, small ones this one's.
  uint64_t epoch = 1ull << 32;
  auto s = Snapshot::parse(std::to_string(epoch - 10) + ":" + std::to_string(epoch + 5) + ":" + std::to_string(epoch + 1));
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->sees(0xFFFFFFF8u));  // epoch - 8: committed
  EXPECT_TRUE(s->sees(0));            // epoch + 0
  EXPECT_FALSE(s->sees(1));           // epoch + 1: in progress
  EXPECT_FALSE(s->sees(5));           // xmax
}

TEST(Snapshot, RefusesMalformedText) {
  for (const char* bad : {"", "1", "1:2", "a:2:", "5:3:", "1:2:x", "1:2:3,,4"})
    EXPECT_FALSE(Snapshot::parse(bad).has_value()) << bad;
  EXPECT_TRUE(Snapshot::parse("1:2:").has_value());
}

namespace {

dts::decode::Relation relation() {
  dts::decode::Relation rel;
  rel.relid = 42;
  rel.schema = "public";
  rel.name = "t";
  dts::decode::Column id{"id", 23, -1, "int4", true};
  dts::decode::Column v{"v", 25, -1, "text", false};
  rel.columns = {id, v};
  rel.key_columns = {0};
  return rel;
}

CopiedChunk chunk(std::optional<int64_t> lo, std::optional<int64_t> hi, const char* snapshot) {
  CopiedChunk c;
  c.lo = lo;
  c.hi = hi;
  c.snapshot = *Snapshot::parse(snapshot);
  return c;
}

// Chunk [-inf, 100) read before transaction 500 committed, [100, +inf) after it.
void two_chunks(CopyReconciler& r) {
  CopiedTable t;
  t.key_column = "id";
  t.chunks = {chunk(100, std::nullopt, "400:600:"), chunk(std::nullopt, 100, "400:500:")};
  t.chunks[0].index = 1;
  r.add(42, t, 1000);
}

// Table 42 copied in one chunk, keyed on id, not read yet (a resync's, or a copy again's).
void one_pending_chunk(CopyReconciler& r, int64_t generation = 0) {
  CopiedTable t;
  t.key_column = "id";
  CopiedChunk pending;
  pending.state = dts::apply::ChunkState::kPending;
  t.chunks = {pending};
  t.generation = generation;
  r.add(42, t, 0);
}

}  // namespace

TEST(CopyReconciler, SkipsWhatTheRowsChunkSaw) {
  auto rel = relation();
  CopyReconciler r;
  two_chunks(r);
  dts::decode::Values row = {int_value(5), proto::Value{}};
  dts::decode::Values high = {int_value(150), proto::Value{}};
  r.begin(500, 900);
  EXPECT_FALSE(r.copied(rel, row, false));  // its chunk was read before 500 committed
  EXPECT_TRUE(r.copied(rel, high, false));  // this one after
  r.begin(450, 900);
  EXPECT_TRUE(r.copied(rel, row, false));
  r.begin(600, 950);
  EXPECT_FALSE(r.copied(rel, high, false));
  EXPECT_TRUE(r.active());
  r.begin(601, 1000);  // committed at the latest chunk's position: in no chunk
  EXPECT_FALSE(r.active());
}

TEST(CopyReconciler, AnUpdateMovingARowBetweenChunksBecomesTheMissingHalf) {
  auto rel = relation();
  CopyReconciler r;
  two_chunks(r);
  r.begin(500, 900);
  dts::decode::Values low = {int_value(5), proto::Value{}};
  dts::decode::Values high = {int_value(150), proto::Value{}};
  dts::decode::Values low_key = {int_value(5)};
  dts::decode::Values high_key = {int_value(150)};
  // 5 -> 150: the high chunk holds the new row, the low one still the old: delete the old.
  dts::decode::RowChange up{dts::decode::RowKind::kUpdate, &rel, proto::OldTuple::kKey, &low_key, &high};
  EXPECT_EQ(r.fate(up), RowFate::kDeleteOld);
  // 150 -> 5: the high chunk has lost the row, the low one does not have it yet: insert it.
  dts::decode::RowChange down{dts::decode::RowKind::kUpdate, &rel, proto::OldTuple::kKey, &high_key, &low};
  EXPECT_EQ(r.fate(down), RowFate::kInsertNew);
  dts::decode::RowChange same{dts::decode::RowKind::kUpdate, &rel, proto::OldTuple::kNone, nullptr, &low};
  EXPECT_EQ(r.fate(same), RowFate::kApply);
}

TEST(CopyReconciler, ATruncateKeepsTheChunksThatSawIt) {
  auto rel = relation();
  CopyReconciler r;
  two_chunks(r);
  std::vector<const dts::decode::Relation*> rels = {&rel};
  r.begin(500, 900);
  std::vector<std::string> deletes = r.truncate(rels);
  EXPECT_TRUE(rels.empty());
  ASSERT_EQ(deletes.size(), 1u);
  EXPECT_EQ(deletes[0], "DELETE FROM ONLY \"public\".\"t\" WHERE \"id\" < 100");
  rels = {&rel};
  r.begin(700, 950);  // seen by neither: the whole table goes
  EXPECT_TRUE(r.truncate(rels).empty());
  EXPECT_EQ(rels.size(), 1u);
}

TEST(CopyReconciler, TablesOutsideTheCopyAreApplied) {
  auto rel = relation();
  rel.relid = 7;
  CopyReconciler r;
  two_chunks(r);
  r.begin(450, 900);
  dts::decode::Values row = {int_value(5), proto::Value{}};
  dts::decode::RowChange ins{dts::decode::RowKind::kInsert, &rel, proto::OldTuple::kNone, nullptr, &row};
  EXPECT_EQ(r.fate(ins), RowFate::kApply);
}

TEST(CopyReconciler, AChunkNotReadYetSkipsAndItsSnapshotMustSeeWhatItSkipped) {
  auto rel = relation();
  CopyReconciler r;
  one_pending_chunk(r);
  dts::decode::Values row = {int_value(5), proto::Value{}};
  r.begin(700, 900);
  EXPECT_TRUE(r.copied(rel, row, false));  // skipped: the chunk, read later, will hold it
  EXPECT_FALSE(r.start_reading(42, 0, 0, *Snapshot::parse("650:700:"), 950));  // does not see 700 yet
  EXPECT_TRUE(r.start_reading(42, 0, 0, *Snapshot::parse("650:750:"), 950));
  r.begin(720, 960);  // seen by the snapshot: in the chunk
  EXPECT_TRUE(r.copied(rel, row, false));
  r.begin(760, 970);  // not seen: wait until the chunk is written
  dts::decode::RowChange ins{dts::decode::RowKind::kInsert, &rel, proto::OldTuple::kNone, nullptr, &row};
  EXPECT_EQ(r.fate(ins), RowFate::kWait);
  EXPECT_FALSE(r.settled(42));
  r.finish_reading(42, 0, 0);
  r.wait_for_chunk();  // returns at once
  EXPECT_EQ(r.fate(ins), RowFate::kApply);
  EXPECT_TRUE(r.settled(42));
}

// A chunk handed back by its copy worker (the target's columns were behind the source's) is
// pending again: the applier waiting for it goes on, skipping its changes, and the chunk's next
// snapshot must see them.
TEST(CopyReconciler, AChunkGivenBackIsPendingAgain) {
  auto rel = relation();
  CopyReconciler r;
  one_pending_chunk(r);
  ASSERT_TRUE(r.start_reading(42, 0, 0, *Snapshot::parse("650:700:"), 950));
  dts::decode::Values row = {int_value(5), proto::Value{}};
  dts::decode::RowChange ins{dts::decode::RowKind::kInsert, &rel, proto::OldTuple::kNone, nullptr, &row};
  r.begin(710, 960);  // not seen by the snapshot being read
  EXPECT_EQ(r.fate(ins), RowFate::kWait);
  std::thread worker([&r] { r.give_back(42, 0, 0); });
  r.wait_for_chunk();  // returns once the chunk is given back, not written
  worker.join();
  EXPECT_FALSE(r.settled(42));
  EXPECT_TRUE(r.copied(rel, row, false));  // skipped now: the chunk read later holds it
  EXPECT_FALSE(r.start_reading(42, 0, 0, *Snapshot::parse("650:700:"), 970));  // does not see 710
  EXPECT_TRUE(r.start_reading(42, 0, 0, *Snapshot::parse("720:720:"), 980));
}

// A copy again the stream asked for is known by its generation once the driver adopts it: a
// worker of an earlier, superseded copy of the table reads nothing of it and writes nothing
// into its state.
TEST(CopyReconciler, AnEarlierCopysWorkerDoesNotTouchTheNewCopy) {
  CopyReconciler r;
  one_pending_chunk(r, dts::apply::kUnknownGeneration);
  EXPECT_TRUE(r.start_reading(42, 7, 0, *Snapshot::parse("650:700:"), 950));  // generation 7's: not this copy
  r.finish_reading(42, 7, 0);
  EXPECT_FALSE(r.settled(42));
  r.adopt(42, 9);
  r.adopt(42, 10);  // adopted once
  r.finish_reading(42, 10, 0);
  EXPECT_FALSE(r.settled(42));
  ASSERT_TRUE(r.start_reading(42, 9, 0, *Snapshot::parse("650:700:"), 950));
  r.wait_not_reading(43);  // another table: at once
  r.finish_reading(42, 9, 0);
  EXPECT_TRUE(r.settled(42));
  r.wait_not_reading(42);  // written: at once
}

// A truncate of a table whose chunks are not read yet: they hold nothing to delete, and each
// must be read in a snapshot that sees the truncate.
TEST(CopyReconciler, ATruncateOfChunksNotReadYetIsSeenByTheirSnapshots) {
  auto rel = relation();
  CopyReconciler r;
  CopiedTable t;
  t.key_column = "id";
  t.chunks = {chunk(std::nullopt, 100, "400:500:")};  // read, before transaction 800
  CopiedChunk pending;
  pending.index = 1;
  pending.lo = 100;
  pending.state = dts::apply::ChunkState::kPending;
  t.chunks.push_back(pending);
  r.add(42, t, 0);
  r.begin(800, 900);
  std::vector<const dts::decode::Relation*> relations = {&rel};
  std::vector<std::string> deletes = r.truncate(relations);
  ASSERT_EQ(deletes.size(), 1u);  // the read chunk's range only
  EXPECT_NE(deletes[0].find("\"id\" < 100"), std::string::npos) << deletes[0];
  EXPECT_TRUE(relations.empty());
  EXPECT_FALSE(r.start_reading(42, 0, 1, *Snapshot::parse("790:800:"), 950));  // does not see the truncate
  EXPECT_TRUE(r.start_reading(42, 0, 1, *Snapshot::parse("801:801:"), 960));
}
