// The applier's decoder: typed events for every record, and a clear Error(kProtocol) with the
// byte offset — never a crash — for truncated or corrupt frames.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "decode/decoder.hpp"

namespace proto = dts::protocol;
using dts::decode::Decoder;
using dts::decode::Relation;
using dts::decode::RowChange;
using dts::decode::RowKind;

namespace {

struct Sink {
  std::vector<uint8_t> bytes;
  uint8_t* reserve(size_t n) {
    size_t at = bytes.size();
    bytes.resize(at + n);
    used = at;
    return bytes.data() + at;
  }
  void advance(size_t n) { bytes.resize(used + n); }
  size_t used = 0;
};

// Records events as text, one line each.
struct Recorder : dts::decode::EventHandler {
  std::vector<std::string> events;
  void on_begin(uint32_t xid, dts::Lsn lsn, int64_t) override {
    events.push_back("begin " + std::to_string(xid) + " " + dts::format_lsn(lsn));
  }
  void on_commit(dts::Lsn, dts::Lsn end, int64_t) override { events.push_back("commit " + dts::format_lsn(end)); }
  void on_origin(std::string_view name, dts::Lsn) override { events.push_back("origin " + std::string(name)); }
  void on_relation(const Relation& r) override {
    events.push_back("relation " + r.schema + "." + r.name + " cols=" + std::to_string(r.columns.size()) +
                     " keys=" + std::to_string(r.key_columns.size()));
  }
  void on_row(const RowChange& row) override {
    std::string k = row.kind == RowKind::kInsert ? "insert" : row.kind == RowKind::kUpdate ? "update" : "delete";
    events.push_back(k + " " + row.relation->name + " old=" + std::to_string(row.old_values->size()) +
                     " new=" + std::to_string(row.new_values->size()));
  }
  void on_truncate(const std::vector<const Relation*>& rels, bool cascade, bool restart) override {
    events.push_back("truncate " + std::to_string(rels.size()) + (cascade ? " cascade" : "") +
                     (restart ? " restart" : ""));
  }
  void on_message(bool tx, dts::Lsn, std::string_view prefix, std::string_view content) override {
    events.push_back(std::string("message ") + (tx ? "tx " : "") + std::string(prefix) + "=" + std::string(content));
  }
  void on_stream_start(uint32_t xid, bool first) override {
    events.push_back("stream_start " + std::to_string(xid) + (first ? " first" : ""));
  }
  void on_stream_stop() override { events.push_back("stream_stop"); }
  void on_stream_xid(uint32_t xid) override { events.push_back("stream_xid " + std::to_string(xid)); }
  void on_stream_commit(uint32_t xid, dts::Lsn, dts::Lsn, int64_t) override {
    events.push_back("stream_commit " + std::to_string(xid));
  }
  void on_stream_abort(uint32_t xid, uint32_t sub) override {
    events.push_back("stream_abort " + std::to_string(xid) + " " + std::to_string(sub));
  }
};

void relation(Sink& s, uint32_t relid, const char* name, proto::ReplicaIdentity ident = proto::ReplicaIdentity::kDefault) {
  proto::write_relation_header(s, relid, "public", name, ident, 2);
  proto::write_relation_column(s, proto::kColumnIsKey, "id", 23, -1, "integer");
  proto::write_relation_column(s, 0, "v", 25, -1, "text");
}

void row2(Sink& s, int64_t id, const char* v) {
  proto::write_tuple_header(s, 2);
  proto::write_value_int(s, id);
  proto::write_value_bytes(s, proto::ValueKind::kText, v, std::strlen(v));
}

std::vector<uint8_t> full_frame() {
  Sink s;
  proto::write_frame_header(s);
  proto::write_begin(s, 7, 0x100, 1);
  proto::write_origin(s, 5, "upstream");
  relation(s, 1, "t");
  proto::write_insert_header(s, 1);
  row2(s, 1, "a");
  proto::write_update_header(s, 1, proto::OldTuple::kKey);
  proto::write_tuple_header(s, 1);
  proto::write_value_int(s, 1);
  row2(s, 2, "b");
  proto::write_update_header(s, 1, proto::OldTuple::kNone);
  row2(s, 2, "c");
  proto::write_delete_header(s, 1, proto::OldTuple::kKey);
  proto::write_tuple_header(s, 1);
  proto::write_value_int(s, 2);
  relation(s, 2, "f", proto::ReplicaIdentity::kFull);
  proto::write_delete_header(s, 2, proto::OldTuple::kFull);
  row2(s, 3, "x");
  proto::write_truncate_header(s, proto::kTruncateCascade, 2);
  proto::put_varint(s, 1);
  proto::put_varint(s, 2);
  proto::write_message(s, true, 9, "dts.heartbeat", "now", 3);
  proto::write_commit(s, 0x100, 0x180, 1);
  proto::write_stream_start(s, 9, true);
  proto::write_stream_xid(s, 10);
  proto::write_insert_header(s, 1);
  row2(s, 5, "s");
  proto::write_stream_stop(s);
  proto::write_stream_abort(s, 9, 10);
  proto::write_stream_commit(s, 9, 0x200, 0x280, 2);
  return s.bytes;
}

}  // namespace

TEST(Decoder, EveryRecordBecomesItsEvent) {
  auto frame = full_frame();
  Decoder d;
  Recorder r;
  d.decode(frame.data(), frame.size(), 0x100, r);
  std::vector<std::string> expected = {
      "begin 7 0/100",        "origin upstream",   "relation public.t cols=2 keys=1", "insert t old=0 new=2",
      "update t old=1 new=2", "update t old=0 new=2", "delete t old=1 new=0",          "relation public.f cols=2 keys=1",
      "delete f old=2 new=0", "truncate 2 cascade", "message tx dts.heartbeat=now",    "commit 0/180",
      "stream_start 9 first", "stream_xid 10",     "insert t old=0 new=2",             "stream_stop",
      "stream_abort 9 10",    "stream_commit 9"};
  EXPECT_EQ(r.events, expected);
  ASSERT_NE(d.relation(1), nullptr);
  EXPECT_EQ(d.relation(1)->key_columns, std::vector<size_t>{0});
}

TEST(Decoder, ARelationVersionNamesItsShapeAcrossDecoders) {
  Sink s;
  proto::write_frame_header(s);
  relation(s, 1, "t");
  auto first = s.bytes;
  Sink other;
  proto::write_frame_header(other);
  relation(other, 1, "renamed");
  Decoder d;
  Recorder r;
  d.decode(first.data(), first.size(), 0, r);
  uint64_t v1 = d.relation(1)->version;
  // The same record again (the source's cache was invalidated): the same statements serve it.
  d.decode(first.data(), first.size(), 0, r);
  EXPECT_EQ(d.relation(1)->version, v1);
  // A spooled transaction's own decoder gets the same version for the same shape.
  Decoder replay;
  replay.decode(first.data(), first.size(), 0, r);
  EXPECT_EQ(replay.relation(1)->version, v1);
  // Another shape of the same relation replaces it, with another version.
  d.decode(other.bytes.data(), other.bytes.size(), 0, r);
  EXPECT_NE(d.relation(1)->version, v1);
  EXPECT_EQ(d.relation(1)->name, "renamed");
  EXPECT_EQ(d.relation_count(), 1u);
}

TEST(Decoder, EveryRecordsBytesReachTheHandlerBeforeItsEvent) {
  auto frame = full_frame();
  struct Raw : Recorder {
    std::vector<std::string> raws;
    void on_record(uint8_t version, std::string_view raw) override {
      EXPECT_EQ(version, proto::kVersion);
      raws.emplace_back(raw);
    }
  } r;
  Decoder d;
  d.decode(frame.data(), frame.size(), 0, r);
  size_t total = 0;
  for (const auto& raw : r.raws) total += raw.size();
  EXPECT_EQ(total + 1, frame.size());  // every byte but the version byte, once
  ASSERT_FALSE(r.raws.empty());
  // Records fed back one by one, as a spool replays them, give the same events.
  Recorder again;
  Decoder d2;
  for (const auto& raw : r.raws) {
    std::string one(1, static_cast<char>(proto::kVersion));
    one += raw;
    d2.decode(reinterpret_cast<const uint8_t*>(one.data()), one.size(), 0, again);
  }
  EXPECT_EQ(again.events, r.events);
}

TEST(Decoder, UnsupportedVersionIsRefusedClearly) {
  std::vector<uint8_t> frame = {9, 'B', 0, 0, 0};
  Decoder d;
  Recorder r;
  try {
    d.decode(frame.data(), frame.size(), 0, r);
    FAIL() << "no error";
  } catch (const dts::Error& e) {
    EXPECT_EQ(e.kind(), dts::ErrorKind::kProtocol);
    EXPECT_NE(std::string(e.what()).find("version 9"), std::string::npos) << e.what();
  }
}

TEST(Decoder, RowBeforeItsRelationAndWrongWidthAreErrors) {
  Sink s;
  proto::write_frame_header(s);
  proto::write_insert_header(s, 77);
  row2(s, 1, "a");
  Decoder d;
  Recorder r;
  EXPECT_THROW(d.decode(s.bytes.data(), s.bytes.size(), 0, r), dts::Error);

  Sink w;
  proto::write_frame_header(w);
  relation(w, 1, "t");
  proto::write_insert_header(w, 1);
  proto::write_tuple_header(w, 1);
  proto::write_value_int(w, 1);
  try {
    d.decode(w.bytes.data(), w.bytes.size(), 0x42, r);
    FAIL() << "no error";
  } catch (const dts::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("tuple has 1 values but its relation record describes 2"), std::string::npos) << m;
    EXPECT_NE(m.find("0/42"), std::string::npos) << m;
    EXPECT_NE(m.find("at byte"), std::string::npos) << m;
  }
}

TEST(Decoder, EveryTruncationIsAnErrorOrACleanPrefix) {
  auto frame = full_frame();
  size_t errors = 0;
  for (size_t cut = 0; cut < frame.size(); ++cut) {
    std::vector<uint8_t> part(frame.begin(), frame.begin() + static_cast<long>(cut));
    Decoder d;
    Recorder r;
    try {
      d.decode(part.data(), part.size(), 0, r);
    } catch (const dts::Error& e) {
      ++errors;
      EXPECT_EQ(e.kind(), dts::ErrorKind::kProtocol);
      EXPECT_NE(std::string(e.what()).find("at byte"), std::string::npos);
    }
  }
  // Most cuts fall inside a record: they must be reported, not read as a shorter frame.
  EXPECT_GT(errors, frame.size() / 2);
}

TEST(Decoder, RandomCorruptionNeverCrashes) {
  auto frame = full_frame();
  std::mt19937 rng(7);
  int errors = 0;
  for (int i = 0; i < 20000; ++i) {
    auto bad = frame;
    for (int k = 0; k < 3; ++k) bad[1 + rng() % (bad.size() - 1)] = static_cast<uint8_t>(rng());
    Decoder d;
    Recorder r;
    try {
      d.decode(bad.data(), bad.size(), 0, r);
    } catch (const dts::Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
}
