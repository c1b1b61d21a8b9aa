#include "decode/decoder.hpp"

#include <mutex>

#include "common/error.hpp"

namespace dts::decode {
namespace {

std::string_view view(const proto::Bytes& b) {
  return std::string_view(reinterpret_cast<const char*>(b.data), b.len);
}

// One version per distinct relation record in the process: a spooled transaction replayed
// through a decoder of its own gets the versions the stream's decoder has for the same shapes,
// so statements prepared for them are reused rather than prepared again at every replay.
uint64_t relation_version(std::string_view raw) {
  static std::mutex mutex;
  static std::unordered_map<std::string, uint64_t> versions;
  static uint64_t next = 1;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = versions.find(std::string(raw));
  if (it != versions.end()) return it->second;
  // Bounded: past this many shapes start afresh (versions are never reused, so a shape seen
  // again only gets its statements prepared again).
  if (versions.size() >= 10000) versions.clear();
  versions.emplace(std::string(raw), next);
  return next++;
}

}  // namespace

void Decoder::fail(const proto::DecodeError& err, Lsn wal_start) const {
  fail(err.offset, err.what != nullptr ? err.what : "malformed record", wal_start);
}

void Decoder::fail(size_t offset, const std::string& what, Lsn wal_start) const {
  throw Error(ErrorKind::kProtocol, "malformed dts_decoding record at byte " + std::to_string(offset) +
                                        " of the message at " + format_lsn(wal_start) + ": " + what);
}

const Relation* Decoder::relation(uint32_t relid) const {
  auto it = relations_.find(relid);
  return it == relations_.end() ? nullptr : it->second.get();
}

void Decoder::read_values(const proto::TupleView& t, size_t expected, Values& out, Lsn wal_start) {
  if (t.ncols != expected)
    fail(t.offset, "tuple has " + std::to_string(t.ncols) + " values but its relation record describes " +
                       std::to_string(expected),
         wal_start);
  out.clear();
  proto::TupleCursor cursor(t);
  proto::Value v;
  while (cursor.next(v)) out.push_back(v);
  if (!cursor.ok()) fail(cursor.error(), wal_start);
}

const Relation& Decoder::relation_for_row(const proto::Record& rec, Lsn wal_start) const {
  const Relation* rel = relation(rec.relid);
  if (rel == nullptr)
    fail(rec.offset, "row for relation " + std::to_string(rec.relid) + " before any relation record for it",
         wal_start);
  return *rel;
}

void Decoder::remember_relation(const proto::Record& rec, std::string_view raw, Lsn wal_start,
                                EventHandler& handler) {
  auto rel = std::make_unique<Relation>();
  rel->relid = rec.relid;
  rel->schema = std::string(view(rec.schema));
  rel->name = std::string(view(rec.name));
  rel->identity = rec.replica_identity;
  rel->version = relation_version(raw);
  rel->raw = std::string(raw);
  proto::ColumnCursor cursor(rec.columns);
  proto::ColumnInfo info;
  while (cursor.next(info)) {
    Column c;
    c.name = std::string(view(info.name));
    c.type_oid = info.type_oid;
    c.typmod = info.typmod;
    c.type_name = std::string(view(info.type_name));
    c.is_key = (info.flags & proto::kColumnIsKey) != 0;
    if (c.is_key) rel->key_columns.push_back(rel->columns.size());
    rel->columns.push_back(std::move(c));
  }
  if (!cursor.ok()) fail(cursor.error(), wal_start);
  // The handler sees the new shape while the old one still exists: rows it holds of the old
  // shape can still be written out.
  handler.on_relation(*rel);
  relations_[rec.relid] = std::move(rel);
}

void Decoder::decode(const uint8_t* data, size_t len, Lsn wal_start, EventHandler& handler) {
  proto::Reader reader(data, len);
  uint8_t version = 0;
  if (!reader.u8(version)) fail(reader.error(), wal_start);
  if (version < proto::kMinSupportedVersion || version > proto::kMaxSupportedVersion)
    throw Error(ErrorKind::kProtocol,
                "the source's dts_decoding writes record format version " + std::to_string(version) +
                    ", but this dts_applier reads versions " + std::to_string(proto::kMinSupportedVersion) + " to " +
                    std::to_string(proto::kMaxSupportedVersion) +
                    "; install matching releases of dts_decoding and dts_applier");
  proto::Record rec;
  const uint8_t* record_start = reader.position();
  while (proto::read_record(reader, rec)) {
    std::string_view raw(reinterpret_cast<const char*>(record_start),
                         static_cast<size_t>(reader.position() - record_start));
    record_start = reader.position();
    handler.on_record(version, raw);
    switch (rec.type) {
      case proto::RecordType::kBegin: handler.on_begin(rec.xid, rec.lsn, rec.commit_time); break;
      case proto::RecordType::kCommit: handler.on_commit(rec.lsn, rec.end_lsn, rec.commit_time); break;
      case proto::RecordType::kOrigin: handler.on_origin(view(rec.name), rec.lsn); break;
      case proto::RecordType::kRelation: remember_relation(rec, raw, wal_start, handler); break;
      case proto::RecordType::kInsert:
      case proto::RecordType::kUpdate:
      case proto::RecordType::kDelete: {
        const Relation& rel = relation_for_row(rec, wal_start);
        RowChange row{};
        row.relation = &rel;
        row.old_kind = rec.old_kind;
        old_values_.clear();
        new_values_.clear();
        if (rec.old_kind == proto::OldTuple::kKey) read_values(rec.old_tuple, rel.key_columns.size(), old_values_, wal_start);
        if (rec.old_kind == proto::OldTuple::kFull) read_values(rec.old_tuple, rel.columns.size(), old_values_, wal_start);
        if (rec.type != proto::RecordType::kDelete) read_values(rec.new_tuple, rel.columns.size(), new_values_, wal_start);
        row.kind = rec.type == proto::RecordType::kInsert   ? RowKind::kInsert
                   : rec.type == proto::RecordType::kUpdate ? RowKind::kUpdate
                                                            : RowKind::kDelete;
        row.old_values = &old_values_;
        row.new_values = &new_values_;
        handler.on_row(row);
        break;
      }
      case proto::RecordType::kTruncate: {
        truncated_.clear();
        proto::Reader ids(rec.relids.data, rec.relids.len, rec.offset);
        uint32_t relid = 0;
        while (proto::next_truncate_relid(ids, relid)) {
          const Relation* rel = relation(relid);
          if (rel == nullptr)
            fail(rec.offset, "truncate of relation " + std::to_string(relid) + " before any relation record for it",
                 wal_start);
          truncated_.push_back(rel);
        }
        handler.on_truncate(truncated_, (rec.flags & proto::kTruncateCascade) != 0,
                            (rec.flags & proto::kTruncateRestartIdentity) != 0);
        break;
      }
      case proto::RecordType::kMessage:
        handler.on_message((rec.flags & proto::kMessageTransactional) != 0, rec.lsn, view(rec.name), view(rec.content));
        break;
      case proto::RecordType::kStreamStart: handler.on_stream_start(rec.xid, rec.first_segment); break;
      case proto::RecordType::kStreamStop: handler.on_stream_stop(); break;
      case proto::RecordType::kStreamXid: handler.on_stream_xid(rec.xid); break;
      case proto::RecordType::kStreamCommit:
        handler.on_stream_commit(rec.xid, rec.lsn, rec.end_lsn, rec.commit_time);
        break;
      case proto::RecordType::kStreamAbort: handler.on_stream_abort(rec.xid, rec.subxid); break;
    }
    rec = proto::Record{};
  }
  if (!reader.ok()) fail(reader.error(), wal_start);
}

}  // namespace dts::decode
