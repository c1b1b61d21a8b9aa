// The dts record format: the one definition shared by the dts_decoding plugin (writer) and
// dts_applier (reader). Documented in docs/protocol.md; keep the two in step.
//
// This header must compile inside a PostgreSQL backend as well as in the applier, so it
// uses no PostgreSQL headers, never throws, and never allocates: writers go through a sink
// the caller provides, and the reader hands out views into the caller's buffer.
#ifndef DTS_PROTOCOL_H
#define DTS_PROTOCOL_H

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace dts::protocol {

// Every replication message starts with this byte. An applier refuses a message whose version
// it does not know, so format changes must bump it.
constexpr uint8_t kVersion = 1;
constexpr uint8_t kMinSupportedVersion = 1;
constexpr uint8_t kMaxSupportedVersion = 1;

// Prefix of the logical messages written by the extension (heartbeat, cutover marker).
constexpr const char* kMessagePrefix = "dts";
constexpr const char* kHeartbeatPrefix = "dts.heartbeat";
// Transactional messages the applier writes through the slot (verify, complete): a marker only
// needs its transaction applied; a stop marker also ends the applier once it is.
constexpr const char* kMarkerPrefix = "dts_marker";
constexpr const char* kStopMarkerPrefix = "dts_stop";

enum class RecordType : uint8_t {
  kBegin = 'B',
  kCommit = 'C',
  kOrigin = 'O',
  kRelation = 'R',
  kInsert = 'I',
  kUpdate = 'U',
  kDelete = 'D',
  kTruncate = 'T',
  kMessage = 'M',
  kStreamStart = 'S',
  kStreamStop = 'E',
  kStreamXid = 'X',
  kStreamCommit = 'c',
  kStreamAbort = 'A',
};

// How one column value is carried inside a tuple.
enum class ValueKind : uint8_t {
  kNull = 0,
  kUnchangedToast = 1,  // not sent: the target keeps its current value
  kText = 2,            // length + the type's text output, in the source's server encoding
  kBinary = 3,          // length + the type's binary send format
  kInt = 4,             // zigzag varint: int2, int4, int8, oid
  kFalse = 5,           // bool false, no payload
  kTrue = 6,            // bool true, no payload
};

enum class ReplicaIdentity : uint8_t {
  kDefault = 'd',
  kNothing = 'n',
  kFull = 'f',
  kIndex = 'i',
};

// What an UPDATE or DELETE carries of the old row.
enum class OldTuple : uint8_t {
  kNone = 0,  // nothing: the row cannot be identified (no replica identity, or key unchanged)
  kKey = 'K',  // only the key columns, in relation column order
  kFull = 'O',  // every column (REPLICA IDENTITY FULL)
};

constexpr uint8_t kColumnIsKey = 0x01;
constexpr uint8_t kTruncateCascade = 0x01;
constexpr uint8_t kTruncateRestartIdentity = 0x02;
constexpr uint8_t kMessageTransactional = 0x01;

// ---------------------------------------------------------------------------------------------
// Writing. A Sink has `uint8_t* reserve(size_t n)` (room for at least n bytes) and
// `void advance(size_t n)` (n bytes of that room were written).

constexpr size_t kMaxVarintBytes = 10;

inline uint64_t zigzag_encode(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t zigzag_decode(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

inline size_t encode_varint(uint8_t* out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  out[n++] = static_cast<uint8_t>(v);
  return n;
}

template <class Sink>
inline void put_u8(Sink& sink, uint8_t v) {
  *sink.reserve(1) = v;
  sink.advance(1);
}

template <class Sink>
inline void put_varint(Sink& sink, uint64_t v) {
  sink.advance(encode_varint(sink.reserve(kMaxVarintBytes), v));
}

template <class Sink>
inline void put_zigzag(Sink& sink, int64_t v) {
  put_varint(sink, zigzag_encode(v));
}

template <class Sink>
inline void put_raw(Sink& sink, const void* data, size_t len) {
  if (len == 0) return;
  std::memcpy(sink.reserve(len), data, len);
  sink.advance(len);
}

// A length-prefixed byte string (strings are not NUL-terminated on the wire).
template <class Sink>
inline void put_bytes(Sink& sink, const void* data, size_t len) {
  put_varint(sink, len);
  put_raw(sink, data, len);
}

template <class Sink>
inline void put_string(Sink& sink, const char* s) {
  put_bytes(sink, s, std::strlen(s));
}

template <class Sink>
inline void put_type(Sink& sink, RecordType t) {
  put_u8(sink, static_cast<uint8_t>(t));
}

template <class Sink>
inline void write_frame_header(Sink& sink, uint8_t version = kVersion) {
  put_u8(sink, version);
}

template <class Sink>
inline void write_begin(Sink& sink, uint32_t xid, uint64_t final_lsn, int64_t commit_time) {
  put_type(sink, RecordType::kBegin);
  put_varint(sink, xid);
  put_varint(sink, final_lsn);
  put_zigzag(sink, commit_time);
}

template <class Sink>
inline void write_commit(Sink& sink, uint64_t commit_lsn, uint64_t end_lsn, int64_t commit_time) {
  put_type(sink, RecordType::kCommit);
  put_varint(sink, commit_lsn);
  put_varint(sink, end_lsn);
  put_zigzag(sink, commit_time);
}

template <class Sink>
inline void write_origin(Sink& sink, uint64_t origin_lsn, const char* name) {
  put_type(sink, RecordType::kOrigin);
  put_varint(sink, origin_lsn);
  put_string(sink, name);
}

// A relation record is followed by exactly `ncols` calls to write_relation_column.
template <class Sink>
inline void write_relation_header(Sink& sink, uint32_t relid, const char* schema, const char* name,
                                  ReplicaIdentity ident, uint32_t ncols) {
  put_type(sink, RecordType::kRelation);
  put_varint(sink, relid);
  put_string(sink, schema);
  put_string(sink, name);
  put_u8(sink, static_cast<uint8_t>(ident));
  put_varint(sink, ncols);
}

template <class Sink>
inline void write_relation_column(Sink& sink, uint8_t flags, const char* name, uint32_t type_oid,
                                  int32_t typmod, const char* type_name) {
  put_u8(sink, flags);
  put_string(sink, name);
  put_varint(sink, type_oid);
  put_zigzag(sink, typmod);
  put_string(sink, type_name);
}

// Row records: the header, then a tuple (write_tuple_header + one value per column).
template <class Sink>
inline void write_insert_header(Sink& sink, uint32_t relid) {
  put_type(sink, RecordType::kInsert);
  put_varint(sink, relid);
}

// An UPDATE: header, the old tuple when `old` is not kNone, then the new tuple.
template <class Sink>
inline void write_update_header(Sink& sink, uint32_t relid, OldTuple old) {
  put_type(sink, RecordType::kUpdate);
  put_varint(sink, relid);
  put_u8(sink, static_cast<uint8_t>(old));
}

// A DELETE: header, then the old tuple when `old` is not kNone.
template <class Sink>
inline void write_delete_header(Sink& sink, uint32_t relid, OldTuple old) {
  put_type(sink, RecordType::kDelete);
  put_varint(sink, relid);
  put_u8(sink, static_cast<uint8_t>(old));
}

template <class Sink>
inline void write_tuple_header(Sink& sink, uint32_t ncols) {
  put_varint(sink, ncols);
}

template <class Sink>
inline void write_value_kind(Sink& sink, ValueKind kind) {  // kNull, kUnchangedToast
  put_u8(sink, static_cast<uint8_t>(kind));
}

template <class Sink>
inline void write_value_int(Sink& sink, int64_t v) {
  put_u8(sink, static_cast<uint8_t>(ValueKind::kInt));
  put_zigzag(sink, v);
}

template <class Sink>
inline void write_value_bool(Sink& sink, bool v) {
  put_u8(sink, static_cast<uint8_t>(v ? ValueKind::kTrue : ValueKind::kFalse));
}

template <class Sink>
inline void write_value_bytes(Sink& sink, ValueKind kind, const void* data, size_t len) {
  put_u8(sink, static_cast<uint8_t>(kind));
  put_bytes(sink, data, len);
}

// A truncate record is followed by `nrels` relids (put_varint).
template <class Sink>
inline void write_truncate_header(Sink& sink, uint8_t flags, uint32_t nrels) {
  put_type(sink, RecordType::kTruncate);
  put_u8(sink, flags);
  put_varint(sink, nrels);
}

template <class Sink>
inline void write_message(Sink& sink, bool transactional, uint64_t lsn, const char* prefix,
                          const void* content, size_t len) {
  put_type(sink, RecordType::kMessage);
  put_u8(sink, transactional ? kMessageTransactional : 0);
  put_varint(sink, lsn);
  put_string(sink, prefix);
  put_bytes(sink, content, len);
}

template <class Sink>
inline void write_stream_start(Sink& sink, uint32_t xid, bool first_segment) {
  put_type(sink, RecordType::kStreamStart);
  put_varint(sink, xid);
  put_u8(sink, first_segment ? 1 : 0);
}

template <class Sink>
inline void write_stream_stop(Sink& sink) {
  put_type(sink, RecordType::kStreamStop);
}

// Inside a stream block: the changes that follow belong to this (sub)transaction.
template <class Sink>
inline void write_stream_xid(Sink& sink, uint32_t xid) {
  put_type(sink, RecordType::kStreamXid);
  put_varint(sink, xid);
}

template <class Sink>
inline void write_stream_commit(Sink& sink, uint32_t xid, uint64_t commit_lsn, uint64_t end_lsn,
                                int64_t commit_time) {
  put_type(sink, RecordType::kStreamCommit);
  put_varint(sink, xid);
  put_varint(sink, commit_lsn);
  put_varint(sink, end_lsn);
  put_zigzag(sink, commit_time);
}

template <class Sink>
inline void write_stream_abort(Sink& sink, uint32_t xid, uint32_t subxid) {
  put_type(sink, RecordType::kStreamAbort);
  put_varint(sink, xid);
  put_varint(sink, subxid);
}

// ---------------------------------------------------------------------------------------------
// Reading. Every read is bounds-checked; a failure records the byte offset and a static
// message and makes every later read fail too, so callers may check once at the end.

struct Bytes {
  const uint8_t* data = nullptr;
  size_t len = 0;
};

struct DecodeError {
  size_t offset = 0;            // from the start of the buffer given to the Reader
  const char* what = nullptr;   // static text; nullptr means no error
};

class Reader {
 public:
  Reader(const uint8_t* data, size_t len) : begin_(data), pos_(data), end_(data + len) {}
  Reader(const uint8_t* data, size_t len, size_t base_offset)
      : begin_(data), pos_(data), end_(data + len), base_(base_offset) {}

  bool ok() const { return error_.what == nullptr; }
  bool at_end() const { return pos_ == end_; }
  size_t offset() const { return base_ + static_cast<size_t>(pos_ - begin_); }
  size_t remaining() const { return static_cast<size_t>(end_ - pos_); }
  const uint8_t* position() const { return pos_; }
  const DecodeError& error() const { return error_; }

  bool fail(const char* what) {
    if (ok()) error_ = DecodeError{offset(), what};
    pos_ = end_;
    return false;
  }

  bool u8(uint8_t& out) {
    if (!ok()) return false;
    if (pos_ == end_) return fail("unexpected end of data reading a byte");
    out = *pos_++;
    return true;
  }

  bool varint(uint64_t& out) {
    if (!ok()) return false;
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      if (pos_ == end_) return fail("unexpected end of data inside a varint");
      uint8_t b = *pos_++;
      if (shift == 63 && (b & 0x7e) != 0) return fail("varint overflows 64 bits");
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        out = v;
        return true;
      }
    }
    return fail("varint longer than 10 bytes");
  }

  bool varint32(uint32_t& out) {
    uint64_t v = 0;
    if (!varint(v)) return false;
    if (v > 0xffffffffu) return fail("value does not fit in 32 bits");
    out = static_cast<uint32_t>(v);
    return true;
  }

  bool zigzag(int64_t& out) {
    uint64_t v = 0;
    if (!varint(v)) return false;
    out = zigzag_decode(v);
    return true;
  }

  bool zigzag32(int32_t& out) {
    int64_t v = 0;
    if (!zigzag(v)) return false;
    if (v < INT32_MIN || v > INT32_MAX) return fail("value does not fit in 32 bits");
    out = static_cast<int32_t>(v);
    return true;
  }

  bool raw(size_t len, Bytes& out) {
    if (!ok()) return false;
    if (len > remaining()) return fail("length runs past the end of the data");
    out = Bytes{pos_, len};
    pos_ += len;
    return true;
  }

  bool bytes(Bytes& out) {
    uint64_t len = 0;
    if (!varint(len)) return false;
    if (len > remaining()) return fail("length runs past the end of the data");
    return raw(static_cast<size_t>(len), out);
  }

 private:
  const uint8_t* begin_;
  const uint8_t* pos_;
  const uint8_t* end_;
  size_t base_ = 0;
  DecodeError error_;
};

struct Value {
  ValueKind kind = ValueKind::kNull;
  int64_t int_value = 0;  // kInt
  Bytes bytes;            // kText, kBinary
};

inline bool read_value(Reader& r, Value& v) {
  uint8_t k = 0;
  if (!r.u8(k)) return false;
  v.kind = static_cast<ValueKind>(k);
  v.bytes = Bytes{};
  switch (v.kind) {
    case ValueKind::kNull:
    case ValueKind::kUnchangedToast:
    case ValueKind::kFalse:
    case ValueKind::kTrue:
      return true;
    case ValueKind::kInt:
      return r.zigzag(v.int_value);
    case ValueKind::kText:
    case ValueKind::kBinary:
      return r.bytes(v.bytes);
  }
  return r.fail("unknown value kind");
}

// A tuple already checked by read_record; iterate it with TupleCursor.
struct TupleView {
  uint32_t ncols = 0;
  Bytes values;  // the encoded values, without the column count
  size_t offset = 0;  // of `values` in the frame, for error messages
};

class TupleCursor {
 public:
  explicit TupleCursor(const TupleView& t)
      : reader_(t.values.data, t.values.len, t.offset), left_(t.ncols) {}
  // Returns false at the end of the tuple (or on a malformed value: check ok()).
  bool next(Value& v) {
    if (left_ == 0) return false;
    --left_;
    return read_value(reader_, v);
  }
  bool ok() const { return reader_.ok(); }
  const DecodeError& error() const { return reader_.error(); }

 private:
  Reader reader_;
  uint32_t left_;
};

struct ColumnInfo {
  uint8_t flags = 0;
  Bytes name;
  uint32_t type_oid = 0;
  int32_t typmod = -1;
  Bytes type_name;
};

struct ColumnsView {
  uint32_t ncols = 0;
  Bytes encoded;
  size_t offset = 0;
};

inline bool read_column(Reader& r, ColumnInfo& c) {
  return r.u8(c.flags) && r.bytes(c.name) && r.varint32(c.type_oid) && r.zigzag32(c.typmod) &&
         r.bytes(c.type_name);
}

class ColumnCursor {
 public:
  explicit ColumnCursor(const ColumnsView& c)
      : reader_(c.encoded.data, c.encoded.len, c.offset), left_(c.ncols) {}
  bool next(ColumnInfo& c) {
    if (left_ == 0) return false;
    --left_;
    return read_column(reader_, c);
  }
  bool ok() const { return reader_.ok(); }
  const DecodeError& error() const { return reader_.error(); }

 private:
  Reader reader_;
  uint32_t left_;
};

// One decoded record. Which fields are meaningful depends on `type` (see docs/protocol.md).
struct Record {
  RecordType type = RecordType::kBegin;
  size_t offset = 0;  // of the record's type byte in the frame
  uint32_t xid = 0;       // Begin, StreamStart, StreamXid, StreamCommit, StreamAbort
  uint32_t subxid = 0;    // StreamAbort
  uint64_t lsn = 0;       // Begin: final LSN; Commit/StreamCommit: commit LSN; Origin, Message
  uint64_t end_lsn = 0;   // Commit, StreamCommit
  int64_t commit_time = 0;  // Begin, Commit, StreamCommit (microseconds since 2000-01-01 UTC)
  bool first_segment = false;  // StreamStart
  uint32_t relid = 0;     // Relation, Insert, Update, Delete
  Bytes schema, name;     // Relation; Origin (name); Message (name = prefix)
  ReplicaIdentity replica_identity = ReplicaIdentity::kDefault;  // Relation
  ColumnsView columns;    // Relation
  OldTuple old_kind = OldTuple::kNone;  // Update, Delete
  TupleView old_tuple;    // Update, Delete when old_kind != kNone
  TupleView new_tuple;    // Insert, Update
  uint8_t flags = 0;      // Truncate, Message
  uint32_t nrels = 0;     // Truncate
  Bytes relids;           // Truncate: nrels varints; see TruncateCursor
  Bytes content;          // Message
};

// Reads and validates a tuple, leaving a view of it.
inline bool read_tuple(Reader& r, TupleView& t) {
  if (!r.varint32(t.ncols)) return false;
  t.offset = r.offset();
  const uint8_t* start = r.position();
  Value v;
  for (uint32_t i = 0; i < t.ncols; ++i) {
    if (!read_value(r, v)) return false;
  }
  t.values = Bytes{start, static_cast<size_t>(r.position() - start)};
  return true;
}

// Reads the frame's version byte and checks that this reader supports it.
inline bool read_frame_header(Reader& r, uint8_t& version) {
  if (!r.u8(version)) return false;
  if (version < kMinSupportedVersion || version > kMaxSupportedVersion)
    return r.fail("unsupported protocol version");
  return true;
}

inline bool read_old_kind(Reader& r, OldTuple& kind) {
  uint8_t k = 0;
  if (!r.u8(k)) return false;
  kind = static_cast<OldTuple>(k);
  if (kind != OldTuple::kNone && kind != OldTuple::kKey && kind != OldTuple::kFull)
    return r.fail("unknown old tuple kind");
  return true;
}

inline bool read_replica_identity(Reader& r, ReplicaIdentity& ident) {
  uint8_t k = 0;
  if (!r.u8(k)) return false;
  ident = static_cast<ReplicaIdentity>(k);
  switch (ident) {
    case ReplicaIdentity::kDefault:
    case ReplicaIdentity::kNothing:
    case ReplicaIdentity::kFull:
    case ReplicaIdentity::kIndex:
      return true;
  }
  return r.fail("unknown replica identity");
}

// Reads the next record. Returns false at the end of the frame (r.at_end()) or on an error
// (!r.ok()).
inline bool read_record(Reader& r, Record& rec) {
  if (!r.ok() || r.at_end()) return false;
  rec.offset = r.offset();
  uint8_t t = 0;
  if (!r.u8(t)) return false;
  rec.type = static_cast<RecordType>(t);
  switch (rec.type) {
    case RecordType::kBegin:
      return r.varint32(rec.xid) && r.varint(rec.lsn) && r.zigzag(rec.commit_time);
    case RecordType::kCommit:
      return r.varint(rec.lsn) && r.varint(rec.end_lsn) && r.zigzag(rec.commit_time);
    case RecordType::kOrigin:
      return r.varint(rec.lsn) && r.bytes(rec.name);
    case RecordType::kRelation: {
      if (!(r.varint32(rec.relid) && r.bytes(rec.schema) && r.bytes(rec.name) &&
            read_replica_identity(r, rec.replica_identity) && r.varint32(rec.columns.ncols)))
        return false;
      rec.columns.offset = r.offset();
      const uint8_t* start = r.position();
      ColumnInfo c;
      for (uint32_t i = 0; i < rec.columns.ncols; ++i) {
        if (!read_column(r, c)) return false;
      }
      rec.columns.encoded = Bytes{start, static_cast<size_t>(r.position() - start)};
      return true;
    }
    case RecordType::kInsert:
      rec.old_kind = OldTuple::kNone;
      return r.varint32(rec.relid) && read_tuple(r, rec.new_tuple);
    case RecordType::kUpdate:
      if (!(r.varint32(rec.relid) && read_old_kind(r, rec.old_kind))) return false;
      if (rec.old_kind != OldTuple::kNone && !read_tuple(r, rec.old_tuple)) return false;
      return read_tuple(r, rec.new_tuple);
    case RecordType::kDelete:
      if (!(r.varint32(rec.relid) && read_old_kind(r, rec.old_kind))) return false;
      return rec.old_kind == OldTuple::kNone || read_tuple(r, rec.old_tuple);
    case RecordType::kTruncate: {
      if (!(r.u8(rec.flags) && r.varint32(rec.nrels))) return false;
      const uint8_t* start = r.position();
      uint64_t relid = 0;
      for (uint32_t i = 0; i < rec.nrels; ++i) {
        if (!r.varint(relid)) return false;
        if (relid > 0xffffffffu) return r.fail("value does not fit in 32 bits");
      }
      rec.relids = Bytes{start, static_cast<size_t>(r.position() - start)};
      return true;
    }
    case RecordType::kMessage:
      return r.u8(rec.flags) && r.varint(rec.lsn) && r.bytes(rec.name) && r.bytes(rec.content);
    case RecordType::kStreamStart: {
      uint8_t first = 0;
      if (!(r.varint32(rec.xid) && r.u8(first))) return false;
      rec.first_segment = first != 0;
      return true;
    }
    case RecordType::kStreamStop:
      return true;
    case RecordType::kStreamXid:
      return r.varint32(rec.xid);
    case RecordType::kStreamCommit:
      return r.varint32(rec.xid) && r.varint(rec.lsn) && r.varint(rec.end_lsn) &&
             r.zigzag(rec.commit_time);
    case RecordType::kStreamAbort:
      return r.varint32(rec.xid) && r.varint32(rec.subxid);
  }
  return r.fail("unknown record type");
}

// Iterates the relids of a truncate record (already validated by read_record).
inline bool next_truncate_relid(Reader& relids, uint32_t& relid) {
  if (relids.at_end()) return false;
  return relids.varint32(relid);
}

}  // namespace dts::protocol

#endif  // DTS_PROTOCOL_H
