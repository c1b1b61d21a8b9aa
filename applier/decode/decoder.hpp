// Decoding of dts_decoding's binary frames into typed events: pure, no I/O. Every read is
// bounds-checked by include/dts/protocol.h; malformed input raises an Error(kProtocol) that
// names the byte offset and the LSN of the message.
#ifndef DTS_APPLIER_DECODE_DECODER_HPP
#define DTS_APPLIER_DECODE_DECODER_HPP

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/lsn.hpp"
#include "dts/protocol.h"

namespace dts::decode {

namespace proto = dts::protocol;

struct Column {
  std::string name;
  uint32_t type_oid = 0;
  int32_t typmod = -1;
  std::string type_name;
  bool is_key = false;
};

// What a relation record said. Rows refer to it by relid; a newer record replaces it (and
// changes `version` when the shape changed, so cached statements built for the old shape are not reused).
struct Relation {
  uint32_t relid = 0;
  std::string schema;
  std::string name;
  proto::ReplicaIdentity identity = proto::ReplicaIdentity::kDefault;
  std::vector<Column> columns;
  std::vector<size_t> key_columns;  // indexes into columns, in column order
  // The same for the same relation record in every Decoder of the process, different for any
  // other: statements cached for one shape serve exactly that shape.
  uint64_t version = 0;
  std::string raw;  // the relation record's bytes, to write ahead of its rows in a spool file
};

using Values = std::vector<proto::Value>;  // views into the frame being decoded

enum class RowKind { kInsert, kUpdate, kDelete };

struct RowChange {
  RowKind kind;
  const Relation* relation;
  proto::OldTuple old_kind;  // kNone, kKey (values of key_columns only) or kFull
  const Values* old_values;  // empty unless old_kind != kNone
  const Values* new_values;  // empty for a delete
};

// Receives the events of a frame in order. Views (values, strings) are valid only during
// the call; copy what must outlive it.
class EventHandler {
 public:
  virtual ~EventHandler() = default;
  // Every record's bytes, just before its event: a handler that spools a transaction writes
  // them as they are.
  virtual void on_record(uint8_t version, std::string_view raw) {
    (void)version;
    (void)raw;
  }
  virtual void on_begin(uint32_t xid, Lsn final_lsn, int64_t commit_time) = 0;
  virtual void on_commit(Lsn commit_lsn, Lsn end_lsn, int64_t commit_time) = 0;
  virtual void on_origin(std::string_view name, Lsn origin_lsn) = 0;
  // Called before the new description replaces the old one (which is destroyed after).
  virtual void on_relation(const Relation& relation) = 0;
  virtual void on_row(const RowChange& row) = 0;
  virtual void on_truncate(const std::vector<const Relation*>& relations, bool cascade, bool restart_identity) = 0;
  virtual void on_message(bool transactional, Lsn lsn, std::string_view prefix, std::string_view content) = 0;
  virtual void on_stream_start(uint32_t xid, bool first_segment) = 0;
  virtual void on_stream_stop() = 0;
  virtual void on_stream_xid(uint32_t xid) = 0;
  virtual void on_stream_commit(uint32_t xid, Lsn commit_lsn, Lsn end_lsn, int64_t commit_time) = 0;
  virtual void on_stream_abort(uint32_t xid, uint32_t subxid) = 0;
};

class Decoder {
 public:
  // Decodes one frame (one replication message); `wal_start` is only used in error messages.
  void decode(const uint8_t* data, size_t len, Lsn wal_start, EventHandler& handler);
  const Relation* relation(uint32_t relid) const;
  size_t relation_count() const { return relations_.size(); }

 private:
  [[noreturn]] void fail(const proto::DecodeError& err, Lsn wal_start) const;
  [[noreturn]] void fail(size_t offset, const std::string& what, Lsn wal_start) const;
  void read_values(const proto::TupleView& t, size_t expected, Values& out, Lsn wal_start);
  const Relation& relation_for_row(const proto::Record& rec, Lsn wal_start) const;
  void remember_relation(const proto::Record& rec, std::string_view raw, Lsn wal_start, EventHandler& handler);

  std::unordered_map<uint32_t, std::unique_ptr<Relation>> relations_;
  Values old_values_;
  Values new_values_;
  std::vector<const Relation*> truncated_;
};

}  // namespace dts::decode

#endif
