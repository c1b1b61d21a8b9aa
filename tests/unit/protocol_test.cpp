// The record format: every writer has its reader; truncated or corrupt bytes give an error
// with an offset, never a crash or an over-read (the tests run under ASan/UBSan).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dts/protocol.h"

namespace proto = dts::protocol;

namespace {

struct VectorSink {
  std::vector<uint8_t> bytes;
  size_t len = 0;
  uint8_t* reserve(size_t n) {
    if (bytes.size() < len + n) bytes.resize(len + n);
    return bytes.data() + len;
  }
  void advance(size_t n) { len += n; }
  std::vector<uint8_t> data() const { return {bytes.begin(), bytes.begin() + static_cast<long>(len)}; }
};

std::string str(const proto::Bytes& b) { return std::string(reinterpret_cast<const char*>(b.data), b.len); }

// One frame with every record type, and every value kind.
std::vector<uint8_t> sample_frame() {
  VectorSink s;
  proto::write_frame_header(s);
  proto::write_begin(s, 742, 0x16B3748, 789456123456789LL);
  proto::write_origin(s, 0xABCDEF, "node_a");
  proto::write_relation_header(s, 16384, "public", "orders", proto::ReplicaIdentity::kDefault, 3);
  proto::write_relation_column(s, proto::kColumnIsKey, "id", 20, -1, "bigint");
  proto::write_relation_column(s, 0, "note", 25, -1, "text");
  proto::write_relation_column(s, 0, "price", 1700, 655366, "numeric(10,2)");
  proto::write_insert_header(s, 16384);
  proto::write_tuple_header(s, 3);
  proto::write_value_int(s, -9223372036854775807LL - 1);
  proto::write_value_bytes(s, proto::ValueKind::kText, "héllo", 6);
  const uint8_t numeric[] = {0, 1, 0, 0, 0, 0, 0, 2, 0, 12};
  proto::write_value_bytes(s, proto::ValueKind::kBinary, numeric, sizeof(numeric));
  proto::write_update_header(s, 16384, proto::OldTuple::kKey);
  proto::write_tuple_header(s, 1);
  proto::write_value_int(s, 7);
  proto::write_tuple_header(s, 3);
  proto::write_value_int(s, 8);
  proto::write_value_kind(s, proto::ValueKind::kUnchangedToast);
  proto::write_value_kind(s, proto::ValueKind::kNull);
  proto::write_delete_header(s, 16384, proto::OldTuple::kFull);
  proto::write_tuple_header(s, 3);
  proto::write_value_bool(s, true);
  proto::write_value_bool(s, false);
  proto::write_value_bytes(s, proto::ValueKind::kText, "", 0);
  proto::write_delete_header(s, 16384, proto::OldTuple::kNone);
  proto::write_truncate_header(s, proto::kTruncateCascade | proto::kTruncateRestartIdentity, 2);
  proto::put_varint(s, 16384);
  proto::put_varint(s, 4294967295u);
  proto::write_message(s, true, 0x16B3000, "dts.heartbeat", "2026-01-01", 10);
  proto::write_commit(s, 0x16B3748, 0x16B3780, 789456123456789LL);
  proto::write_stream_start(s, 900, true);
  proto::write_stream_xid(s, 901);
  proto::write_stream_stop(s);
  proto::write_stream_commit(s, 900, 0x2000000, 0x2000040, -5);
  proto::write_stream_abort(s, 900, 901);
  return s.data();
}

}  // namespace

TEST(Varint, RoundTripsBoundaries) {
  const uint64_t values[] = {0, 1, 127, 128, 16383, 16384, 0xffffffffull, 0x7fffffffffffffffull,
                             0xffffffffffffffffull};
  for (uint64_t v : values) {
    uint8_t buf[proto::kMaxVarintBytes];
    size_t n = proto::encode_varint(buf, v);
    proto::Reader r(buf, n);
    uint64_t out = 0;
    ASSERT_TRUE(r.varint(out)) << v;
    EXPECT_EQ(out, v);
    EXPECT_TRUE(r.at_end());
  }
  EXPECT_EQ(proto::encode_varint(std::vector<uint8_t>(10).data(), 127), 1u);
}

TEST(Varint, ZigzagRoundTripsExtremes) {
  const int64_t values[] = {0, -1, 1, INT32_MIN, INT32_MAX, INT64_MIN, INT64_MAX};
  for (int64_t v : values) EXPECT_EQ(proto::zigzag_decode(proto::zigzag_encode(v)), v);
  EXPECT_EQ(proto::zigzag_encode(-1), 1u);
  EXPECT_EQ(proto::zigzag_encode(1), 2u);
}

TEST(Varint, RejectsOverlongAndOverflow) {
  const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  uint64_t out = 0;
  proto::Reader r1(eleven, sizeof(eleven));
  EXPECT_FALSE(r1.varint(out));
  EXPECT_STREQ(r1.error().what, "varint longer than 10 bytes");
  const uint8_t overflow[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
  proto::Reader r2(overflow, sizeof(overflow));
  EXPECT_FALSE(r2.varint(out));
  EXPECT_EQ(r2.error().offset, 10u);
  const uint8_t big32[] = {0x80, 0x80, 0x80, 0x80, 0x10};
  proto::Reader r3(big32, sizeof(big32));
  uint32_t out32 = 0;
  EXPECT_FALSE(r3.varint32(out32));
  EXPECT_STREQ(r3.error().what, "value does not fit in 32 bits");
}

TEST(Frame, EveryRecordTypeRoundTrips) {
  std::vector<uint8_t> frame = sample_frame();
  proto::Reader r(frame.data(), frame.size());
  uint8_t version = 0;
  ASSERT_TRUE(proto::read_frame_header(r, version));
  EXPECT_EQ(version, proto::kVersion);
  proto::Record rec;

  ASSERT_TRUE(proto::read_record(r, rec));
  EXPECT_EQ(rec.type, proto::RecordType::kBegin);
  EXPECT_EQ(rec.offset, 1u);
  EXPECT_EQ(rec.xid, 742u);
  EXPECT_EQ(rec.lsn, 0x16B3748u);
  EXPECT_EQ(rec.commit_time, 789456123456789LL);

  ASSERT_TRUE(proto::read_record(r, rec));
  EXPECT_EQ(rec.type, proto::RecordType::kOrigin);
  EXPECT_EQ(rec.lsn, 0xABCDEFu);
  EXPECT_EQ(str(rec.name), "node_a");

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kRelation);
  EXPECT_EQ(rec.relid, 16384u);
  EXPECT_EQ(str(rec.schema), "public");
  EXPECT_EQ(str(rec.name), "orders");
  EXPECT_EQ(rec.replica_identity, proto::ReplicaIdentity::kDefault);
  {
    proto::ColumnCursor cols(rec.columns);
    proto::ColumnInfo c;
    std::vector<std::string> names, types;
    std::vector<int32_t> typmods;
    std::vector<bool> keys;
    while (cols.next(c)) {
      names.push_back(str(c.name));
      types.push_back(str(c.type_name));
      typmods.push_back(c.typmod);
      keys.push_back(c.flags & proto::kColumnIsKey);
    }
    ASSERT_TRUE(cols.ok());
    EXPECT_EQ(names, (std::vector<std::string>{"id", "note", "price"}));
    EXPECT_EQ(types, (std::vector<std::string>{"bigint", "text", "numeric(10,2)"}));
    EXPECT_EQ(typmods, (std::vector<int32_t>{-1, -1, 655366}));
    EXPECT_EQ(keys, (std::vector<bool>{true, false, false}));
  }

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kInsert);
  EXPECT_EQ(rec.relid, 16384u);
  {
    proto::TupleCursor t(rec.new_tuple);
    proto::Value v;
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.kind, proto::ValueKind::kInt);
    EXPECT_EQ(v.int_value, INT64_MIN);
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.kind, proto::ValueKind::kText);
    EXPECT_EQ(str(v.bytes), "héllo");
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.kind, proto::ValueKind::kBinary);
    EXPECT_EQ(v.bytes.len, 10u);
    EXPECT_FALSE(t.next(v));
    EXPECT_TRUE(t.ok());
  }

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kUpdate);
  EXPECT_EQ(rec.old_kind, proto::OldTuple::kKey);
  EXPECT_EQ(rec.old_tuple.ncols, 1u);
  EXPECT_EQ(rec.new_tuple.ncols, 3u);
  {
    proto::TupleCursor t(rec.new_tuple);
    proto::Value v;
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.int_value, 8);
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.kind, proto::ValueKind::kUnchangedToast);
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.kind, proto::ValueKind::kNull);
  }

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kDelete);
  EXPECT_EQ(rec.old_kind, proto::OldTuple::kFull);
  {
    proto::TupleCursor t(rec.old_tuple);
    proto::Value v;
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.kind, proto::ValueKind::kTrue);
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.kind, proto::ValueKind::kFalse);
    ASSERT_TRUE(t.next(v));
    EXPECT_EQ(v.kind, proto::ValueKind::kText);
    EXPECT_EQ(v.bytes.len, 0u);
  }

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kDelete);
  EXPECT_EQ(rec.old_kind, proto::OldTuple::kNone);

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kTruncate);
  EXPECT_EQ(rec.flags, proto::kTruncateCascade | proto::kTruncateRestartIdentity);
  {
    proto::Reader ids(rec.relids.data, rec.relids.len);
    uint32_t id = 0;
    std::vector<uint32_t> got;
    while (proto::next_truncate_relid(ids, id)) got.push_back(id);
    EXPECT_EQ(got, (std::vector<uint32_t>{16384u, 4294967295u}));
  }

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kMessage);
  EXPECT_EQ(rec.flags, proto::kMessageTransactional);
  EXPECT_EQ(rec.lsn, 0x16B3000u);
  EXPECT_EQ(str(rec.name), "dts.heartbeat");
  EXPECT_EQ(str(rec.content), "2026-01-01");

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kCommit);
  EXPECT_EQ(rec.lsn, 0x16B3748u);
  EXPECT_EQ(rec.end_lsn, 0x16B3780u);

  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kStreamStart);
  EXPECT_EQ(rec.xid, 900u);
  EXPECT_TRUE(rec.first_segment);
  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kStreamXid);
  EXPECT_EQ(rec.xid, 901u);
  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kStreamStop);
  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kStreamCommit);
  EXPECT_EQ(rec.xid, 900u);
  EXPECT_EQ(rec.lsn, 0x2000000u);
  EXPECT_EQ(rec.end_lsn, 0x2000040u);
  EXPECT_EQ(rec.commit_time, -5);
  ASSERT_TRUE(proto::read_record(r, rec));
  ASSERT_EQ(rec.type, proto::RecordType::kStreamAbort);
  EXPECT_EQ(rec.xid, 900u);
  EXPECT_EQ(rec.subxid, 901u);

  EXPECT_FALSE(proto::read_record(r, rec));
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(r.at_end());
}

// Reads a whole frame, walking into every tuple and column list, as a consumer would.
bool read_all(const uint8_t* data, size_t len, proto::DecodeError* err) {
  proto::Reader r(data, len);
  uint8_t version = 0;
  if (!proto::read_frame_header(r, version)) {
    *err = r.error();
    return false;
  }
  proto::Record rec;
  while (proto::read_record(r, rec)) {
    proto::Value v;
    for (const proto::TupleView* t : {&rec.old_tuple, &rec.new_tuple}) {
      proto::TupleCursor c(*t);
      while (c.next(v)) {
      }
      if (!c.ok()) {
        *err = c.error();
        return false;
      }
    }
    proto::ColumnCursor cols(rec.columns);
    proto::ColumnInfo info;
    while (cols.next(info)) {
    }
    if (!cols.ok()) {
      *err = cols.error();
      return false;
    }
    rec = proto::Record{};
  }
  *err = r.error();
  return r.ok();
}

TEST(Frame, EveryTruncationIsAnErrorWithAnOffsetInside) {
  std::vector<uint8_t> frame = sample_frame();
  // Records end at many points, so only cuts that fall inside a record must fail; every cut
  // must stay within the buffer (ASan checks that) and report an offset inside the data.
  size_t failures = 0;
  for (size_t cut = 0; cut < frame.size(); ++cut) {
    std::vector<uint8_t> part(frame.begin(), frame.begin() + static_cast<long>(cut));
    proto::DecodeError err;
    if (!read_all(part.data(), part.size(), &err)) {
      ++failures;
      ASSERT_NE(err.what, nullptr);
      EXPECT_LE(err.offset, cut);
    }
  }
  EXPECT_GT(failures, frame.size() / 2);
}

TEST(Frame, RejectsUnknownVersionTypeAndKinds) {
  proto::DecodeError err;
  const uint8_t v2[] = {2, 'B', 0, 0, 0};
  EXPECT_FALSE(read_all(v2, sizeof(v2), &err));
  EXPECT_STREQ(err.what, "unsupported protocol version");
  EXPECT_EQ(err.offset, 1u);
  const uint8_t bad_type[] = {1, 'Z'};
  EXPECT_FALSE(read_all(bad_type, sizeof(bad_type), &err));
  EXPECT_STREQ(err.what, "unknown record type");
  const uint8_t bad_kind[] = {1, 'I', 1, 1, 9};
  EXPECT_FALSE(read_all(bad_kind, sizeof(bad_kind), &err));
  EXPECT_STREQ(err.what, "unknown value kind");
  EXPECT_EQ(err.offset, 5u);
  const uint8_t bad_old[] = {1, 'D', 1, 'Q'};
  EXPECT_FALSE(read_all(bad_old, sizeof(bad_old), &err));
  EXPECT_STREQ(err.what, "unknown old tuple kind");
  const uint8_t bad_ident[] = {1, 'R', 1, 0, 0, 'z', 0};
  EXPECT_FALSE(read_all(bad_ident, sizeof(bad_ident), &err));
  EXPECT_STREQ(err.what, "unknown replica identity");
  // A length that claims more than there is.
  const uint8_t long_text[] = {1, 'I', 1, 1, 2, 0x90, 0x4e, 'a'};
  EXPECT_FALSE(read_all(long_text, sizeof(long_text), &err));
  EXPECT_STREQ(err.what, "length runs past the end of the data");
  // A column count far beyond the data.
  const uint8_t many_cols[] = {1, 'I', 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 0};
  EXPECT_FALSE(read_all(many_cols, sizeof(many_cols), &err));
}

TEST(Frame, RandomCorruptionNeverCrashes) {
  std::vector<uint8_t> frame = sample_frame();
  std::mt19937 rng(12345);
  size_t rejected = 0;
  for (int round = 0; round < 20000; ++round) {
    std::vector<uint8_t> bad = frame;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) bad[1 + rng() % (bad.size() - 1)] = static_cast<uint8_t>(rng());
    proto::DecodeError err;
    if (!read_all(bad.data(), bad.size(), &err)) {
      ++rejected;
      ASSERT_NE(err.what, nullptr);
      ASSERT_LE(err.offset, bad.size());
    }
  }
  EXPECT_GT(rejected, 0u);
}
