// The binary format: the records of include/dts/protocol.h, written into the session's frame.
extern "C" {
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "port/pg_bswap.h"
#include "replication/logical.h"
#include "replication/reorderbuffer.h"
#include "utils/uuid.h"
}

#include "dts/protocol.h"
#include "session.hpp"

namespace dts::plugin {
namespace {

namespace proto = dts::protocol;

// The protocol's writers append through this.
struct FrameSink {
  StringInfo s;
  uint8_t* reserve(size_t n) {
    // Inline room check: enlargeStringInfo is a call per byte otherwise (5% of decoding).
    if (static_cast<size_t>(s->maxlen - s->len) <= n) enlargeStringInfo(s, static_cast<int>(n));
    return reinterpret_cast<uint8_t*>(s->data + s->len);
  }
  void advance(size_t n) { s->len += static_cast<int>(n); }
};

FrameSink sink_of(DecodingSession* s) {
  s->out_records++;
  return FrameSink{&s->out};
}

void put_big_endian(FrameSink& sink, uint64 v) {
  uint64 be = pg_hton64(v);
  proto::write_value_bytes(sink, proto::ValueKind::kBinary, &be, sizeof(be));
}

void put_big_endian(FrameSink& sink, uint32 v) {
  uint32 be = pg_hton32(v);
  proto::write_value_bytes(sink, proto::ValueKind::kBinary, &be, sizeof(be));
}

// numeric's send format (ndigits, weight, sign, dscale, then the base-10000 digits, each a
// big-endian int16) read straight off the stored value. numeric_send gets there through a
// detoasted copy and a StringInfo grown two bytes at a time: a quarter of our decoding cost.
// The stored layout is PostgreSQL's on-disk format (numeric.c): a uint16 header that is
// either short (flag 0x8000: sign 0x2000, dscale bits 0x1F80, weight sign 0x0040 and bits
// 0x003F), special (flags 0xC000: NaN, +Inf 0xD000, -Inf 0xF000), or long (sign 0xC000
// mask and dscale 0x3FFF, followed by an int16 weight).
void write_numeric(FrameSink& sink, Datum d) {
  struct varlena* v = pg_detoast_datum_packed(reinterpret_cast<struct varlena*>(DatumGetPointer(d)));
  const char* p = VARDATA_ANY(v);
  size_t len = VARSIZE_ANY_EXHDR(v);
  uint16 header;
  memcpy(&header, p, sizeof(header));  // packed values are not aligned
  uint16 sign, dscale;
  int16 weight;
  size_t digits_at;
  if ((header & 0xC000) == 0xC000) {  // NaN or an infinity: no digits
    sign = header & 0xF000;
    weight = 0;
    dscale = 0;
    digits_at = len;
  } else if (header & 0x8000) {
    sign = (header & 0x2000) ? 0x4000 : 0x0000;
    dscale = (header & 0x1F80) >> 7;
    weight = static_cast<int16>(((header & 0x0040) ? ~0x003F : 0) | (header & 0x003F));
    digits_at = sizeof(uint16);
  } else {
    sign = header & 0xC000;
    dscale = header & 0x3FFF;
    memcpy(&weight, p + sizeof(uint16), sizeof(weight));
    digits_at = 2 * sizeof(uint16);
  }
  size_t ndigits = (len - digits_at) / sizeof(int16);
  size_t size = (4 + ndigits) * sizeof(int16);
  proto::put_u8(sink, static_cast<uint8_t>(proto::ValueKind::kBinary));
  proto::put_varint(sink, size);
  auto* out = reinterpret_cast<uint16*>(sink.reserve(size));
  uint16 head[4] = {pg_hton16(static_cast<uint16>(ndigits)), pg_hton16(static_cast<uint16>(weight)),
                    pg_hton16(sign), pg_hton16(dscale)};
  memcpy(out, head, sizeof(head));
  for (size_t i = 0; i < ndigits; ++i) {
    uint16 digit;
    memcpy(&digit, p + digits_at + i * sizeof(int16), sizeof(digit));
    digit = pg_hton16(digit);
    memcpy(reinterpret_cast<char*>(out) + (4 + i) * sizeof(int16), &digit, sizeof(digit));
  }
  sink.advance(size);
}

void write_value(FrameSink& sink, const ColumnOutput* c, Datum d) {
  switch (c->encoding) {
    case ColumnEncoding::kInt2: proto::write_value_int(sink, DatumGetInt16(d)); return;
    case ColumnEncoding::kInt4: proto::write_value_int(sink, DatumGetInt32(d)); return;
    case ColumnEncoding::kInt8: proto::write_value_int(sink, DatumGetInt64(d)); return;
    case ColumnEncoding::kOid: proto::write_value_int(sink, DatumGetObjectId(d)); return;
    case ColumnEncoding::kBool: proto::write_value_bool(sink, DatumGetBool(d)); return;
    case ColumnEncoding::kFloat4: {
      float4 f = DatumGetFloat4(d);
      uint32 bits;
      memcpy(&bits, &f, sizeof(bits));
      put_big_endian(sink, bits);
      return;
    }
    case ColumnEncoding::kFloat8: {
      float8 f = DatumGetFloat8(d);
      uint64 bits;
      memcpy(&bits, &f, sizeof(bits));
      put_big_endian(sink, bits);
      return;
    }
    case ColumnEncoding::kFixed8: put_big_endian(sink, static_cast<uint64>(DatumGetInt64(d))); return;
    case ColumnEncoding::kFixed4: put_big_endian(sink, static_cast<uint32>(DatumGetInt32(d))); return;
    case ColumnEncoding::kUuid:
      proto::write_value_bytes(sink, proto::ValueKind::kBinary, DatumGetUUIDP(d)->data, UUID_LEN);
      return;
    case ColumnEncoding::kNumeric: write_numeric(sink, d); return;
    case ColumnEncoding::kTextBytes:
    case ColumnEncoding::kByteaBytes: {
      struct varlena* v = pg_detoast_datum_packed(reinterpret_cast<struct varlena*>(DatumGetPointer(d)));
      proto::write_value_bytes(sink,
                               c->encoding == ColumnEncoding::kTextBytes ? proto::ValueKind::kText
                                                                         : proto::ValueKind::kBinary,
                               VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
      return;
    }
    case ColumnEncoding::kName: {
      const char* name = NameStr(*DatumGetName(d));
      proto::write_value_bytes(sink, proto::ValueKind::kText, name, strlen(name));
      return;
    }
    case ColumnEncoding::kSend: {
      bytea* b = SendFunctionCall(const_cast<FmgrInfo*>(&c->send_fn), d);
      proto::write_value_bytes(sink, proto::ValueKind::kBinary, VARDATA(b), VARSIZE(b) - VARHDRSZ);
      return;
    }
    case ColumnEncoding::kOutput: {
      char* text = OutputFunctionCall(const_cast<FmgrInfo*>(&c->output_fn), d);
      proto::write_value_bytes(sink, proto::ValueKind::kText, text, strlen(text));
      return;
    }
  }
}

// Writes a tuple: every column, or only the key columns for an old key.
void write_tuple(DecodingSession* s, FrameSink& sink, const RelationEntry* e, TupleDesc desc,
                 ReorderBufferTupleBuf* tuple, bool key_only) {
  deform_tuple(s, desc, &tuple->tuple);
  proto::write_tuple_header(sink, static_cast<uint32_t>(key_only ? e->nkeys : e->ncols));
  for (int i = 0; i < e->ncols; ++i) {
    const ColumnOutput* c = &e->cols[i];
    if (key_only && !c->is_key) continue;
    int idx = c->attnum - 1;
    if (s->nulls[idx]) {
      proto::write_value_kind(sink, proto::ValueKind::kNull);
    } else if (c->is_varlena && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(s->values[idx]))) {
      // Not in the WAL because it did not change: the applier leaves the target's value alone.
      proto::write_value_kind(sink, proto::ValueKind::kUnchangedToast);
    } else {
      write_value(sink, c, s->values[idx]);
    }
  }
}

proto::ReplicaIdentity identity_of(char relreplident) {
  switch (relreplident) {
    case REPLICA_IDENTITY_NOTHING: return proto::ReplicaIdentity::kNothing;
    case REPLICA_IDENTITY_FULL: return proto::ReplicaIdentity::kFull;
    case REPLICA_IDENTITY_INDEX: return proto::ReplicaIdentity::kIndex;
    default: return proto::ReplicaIdentity::kDefault;
  }
}

// The old tuple of an UPDATE or DELETE, as the replica identity left it in the WAL.
proto::OldTuple old_kind_of(const RelationEntry* e, ReorderBufferTupleBuf* old) {
  if (old == nullptr) return proto::OldTuple::kNone;
  if (e->replica_identity == REPLICA_IDENTITY_FULL) return proto::OldTuple::kFull;
  // A partition published as a root without a key: no column identifies the row.
  return e->nkeys > 0 ? proto::OldTuple::kKey : proto::OldTuple::kNone;
}

void binary_begin(DecodingSession* s, ReorderBufferTXN* txn) {
  FrameSink sink = sink_of(s);
  proto::write_begin(sink, txn->xid, txn->final_lsn, txn->xact_time.commit_time);
}

void binary_commit(DecodingSession* s, ReorderBufferTXN* txn, XLogRecPtr commit_lsn) {
  FrameSink sink = sink_of(s);
  proto::write_commit(sink, commit_lsn, txn->end_lsn, txn->xact_time.commit_time);
}

void binary_origin(DecodingSession* s, XLogRecPtr origin_lsn, const char* name) {
  FrameSink sink = sink_of(s);
  proto::write_origin(sink, origin_lsn, name);
}

void binary_relation(DecodingSession* s, const RelationEntry* e) {
  FrameSink sink = sink_of(s);
  proto::write_relation_header(sink, e->publish_relid, e->schema, e->table, identity_of(e->replica_identity),
                               static_cast<uint32_t>(e->ncols));
  for (int i = 0; i < e->ncols; ++i) {
    const ColumnOutput* c = &e->cols[i];
    proto::write_relation_column(sink, c->is_key ? proto::kColumnIsKey : 0, c->name, c->type_oid, c->typmod,
                                 c->type_name);
  }
}

void binary_change(DecodingSession* s, const RelationEntry* e, TupleDesc desc, ReorderBufferChange* change) {
  FrameSink sink = sink_of(s);
  ReorderBufferTupleBuf* oldtup = change->data.tp.oldtuple;
  ReorderBufferTupleBuf* newtup = change->data.tp.newtuple;
  switch (change->action) {
    case REORDER_BUFFER_CHANGE_INSERT:
      proto::write_insert_header(sink, e->publish_relid);
      write_tuple(s, sink, e, desc, newtup, false);
      return;
    case REORDER_BUFFER_CHANGE_UPDATE: {
      proto::OldTuple kind = old_kind_of(e, oldtup);
      proto::write_update_header(sink, e->publish_relid, kind);
      if (kind != proto::OldTuple::kNone) write_tuple(s, sink, e, desc, oldtup, kind == proto::OldTuple::kKey);
      write_tuple(s, sink, e, desc, newtup, false);
      return;
    }
    case REORDER_BUFFER_CHANGE_DELETE: {
      proto::OldTuple kind = old_kind_of(e, oldtup);
      proto::write_delete_header(sink, e->publish_relid, kind);
      if (kind != proto::OldTuple::kNone) write_tuple(s, sink, e, desc, oldtup, kind == proto::OldTuple::kKey);
      return;
    }
    default:
      elog(ERROR, "dts_decoding: unexpected change action %d", static_cast<int>(change->action));
  }
}

void binary_truncate(DecodingSession* s, RelationEntry** entries, int n, bool cascade, bool restart_seqs) {
  FrameSink sink = sink_of(s);
  uint8_t flags = (cascade ? proto::kTruncateCascade : 0) | (restart_seqs ? proto::kTruncateRestartIdentity : 0);
  proto::write_truncate_header(sink, flags, static_cast<uint32_t>(n));
  for (int i = 0; i < n; ++i) proto::put_varint(sink, entries[i]->publish_relid);
}

void binary_message(DecodingSession* s, XLogRecPtr lsn, bool transactional, const char* prefix, Size size,
                    const char* content) {
  FrameSink sink = sink_of(s);
  proto::write_message(sink, transactional, lsn, prefix, content, size);
}

void binary_stream_start(DecodingSession* s, TransactionId xid, bool first_segment) {
  FrameSink sink = sink_of(s);
  proto::write_stream_start(sink, xid, first_segment);
}

void binary_stream_stop(DecodingSession* s) {
  FrameSink sink = sink_of(s);
  proto::write_stream_stop(sink);
}

void binary_stream_xid(DecodingSession* s, TransactionId xid) {
  FrameSink sink = sink_of(s);
  proto::write_stream_xid(sink, xid);
}

void binary_stream_commit(DecodingSession* s, ReorderBufferTXN* txn, XLogRecPtr commit_lsn) {
  FrameSink sink = sink_of(s);
  proto::write_stream_commit(sink, txn->xid, commit_lsn, txn->end_lsn, txn->xact_time.commit_time);
}

void binary_stream_abort(DecodingSession* s, TransactionId xid, TransactionId subxid) {
  FrameSink sink = sink_of(s);
  proto::write_stream_abort(sink, xid, subxid);
}

}  // namespace

const OutputOps kBinaryOutput = {
    binary_begin,        binary_commit,      binary_origin,        binary_relation,
    binary_change,       binary_truncate,    binary_message,       binary_stream_start,
    binary_stream_stop,  binary_stream_xid,  binary_stream_commit, binary_stream_abort,
};

}  // namespace dts::plugin
