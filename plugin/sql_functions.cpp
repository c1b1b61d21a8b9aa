// SQL-callable functions of the extension: version() and render(), which shows binary records
// as the json format would have written them.
extern "C" {
#include "postgres.h"

#include "access/xlog.h"
#include "access/xloginsert.h"
#include "access/xlogdefs.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "replication/message.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"
#include "access/htup_details.h"

PG_FUNCTION_INFO_V1(dts_decoding_version);
PG_FUNCTION_INFO_V1(dts_decoding_render);
PG_FUNCTION_INFO_V1(dts_decoding_heartbeat);
}

#include "dts/protocol.h"
#include "dts/version.h"
#include "json_format.hpp"

namespace proto = dts::protocol;

namespace dts::plugin {
namespace {

// What render() remembers of a relation record, per backend: rows refer to their relation by
// OID, and the relation record came earlier in the stream (maybe in an earlier call).
struct RenderColumn {
  char* name;
  char* json_key;
  char* type_name;
  Oid type_oid;
  int32 typmod;
  bool is_key;
  JsonStyle style;
  bool io_ready;
  FmgrInfo receive_fn;
  FmgrInfo output_fn;
  Oid typioparam;
};

struct RenderRelation {
  Oid relid;  // hash key
  MemoryContext cxt;
  char* json_names;
  int ncols;
  int nkeys;
  RenderColumn* cols;
};

HTAB* g_render_relations = nullptr;

char* copy_string(const proto::Bytes& b) {
  return pnstrdup(reinterpret_cast<const char*>(b.data), b.len);
}

void fail_malformed(const proto::DecodeError& err) {
  ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                  errmsg("malformed dts_decoding record at byte %zu: %s", err.offset, err.what),
                  errhint("Pass render() one message exactly as pg_logical_slot_get_binary_changes() "
                          "returned it.")));
}

// A relation record describes at most as many columns as a table can have.
constexpr uint32_t kMaxColumns = MaxTupleAttributeNumber;
// Each described relation keeps a small context for the backend's life: bound them.
constexpr long kMaxRenderRelations = 10000;

void remember_relation(const proto::Record& rec) {
  if (rec.columns.ncols > kMaxColumns)
    ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                    errmsg("relation record at byte %zu describes %u columns, more than a table can have",
                           rec.offset, rec.columns.ncols)));
  if (g_render_relations == nullptr || hash_get_num_entries(g_render_relations) >= kMaxRenderRelations) {
    if (g_render_relations != nullptr) {
      HASH_SEQ_STATUS seq;
      hash_seq_init(&seq, g_render_relations);
      while (auto* r = static_cast<RenderRelation*>(hash_seq_search(&seq))) MemoryContextDelete(r->cxt);
      hash_destroy(g_render_relations);
    }
    HASHCTL ctl;
    ctl.keysize = sizeof(Oid);
    ctl.entrysize = sizeof(RenderRelation);
    ctl.hcxt = TopMemoryContext;
    g_render_relations = hash_create("dts_decoding render relations", 64, &ctl,
                                     HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
  }
  // Built completely in a context of its own, then swapped in: an ERROR halfway leaves the
  // previous description (or none) in place, never half of a new one.
  MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "dts_decoding render relation", ALLOCSET_SMALL_SIZES);
  MemoryContext old = MemoryContextSwitchTo(cxt);
  RenderRelation built{};
  built.relid = rec.relid;
  built.cxt = cxt;
  StringInfoData names;
  initStringInfo(&names);
  appendStringInfoString(&names, "\"schema\":");
  escape_json(&names, copy_string(rec.schema));
  appendStringInfoString(&names, ",\"table\":");
  escape_json(&names, copy_string(rec.name));
  built.json_names = names.data;
  built.cols = static_cast<RenderColumn*>(palloc0(sizeof(RenderColumn) * Max(rec.columns.ncols, 1)));
  proto::ColumnCursor cursor(rec.columns);
  proto::ColumnInfo info;
  while (cursor.next(info)) {
    RenderColumn* c = &built.cols[built.ncols++];
    c->name = copy_string(info.name);
    StringInfoData key;
    initStringInfo(&key);
    escape_json(&key, c->name);
    appendStringInfoChar(&key, ':');
    c->json_key = key.data;
    c->type_name = copy_string(info.type_name);
    c->type_oid = info.type_oid;
    c->typmod = info.typmod;
    c->is_key = (info.flags & proto::kColumnIsKey) != 0;
    c->style = json_style_for_type(info.type_oid);
    if (c->is_key) built.nkeys++;
  }
  MemoryContextSwitchTo(old);
  if (!cursor.ok()) {
    MemoryContextDelete(cxt);
    fail_malformed(cursor.error());
  }
  bool found = false;
  auto* r = static_cast<RenderRelation*>(hash_search(g_render_relations, &rec.relid, HASH_ENTER, &found));
  if (found) MemoryContextDelete(r->cxt);
  *r = built;
}

RenderRelation* find_relation(uint32_t relid) {
  RenderRelation* r = nullptr;
  if (g_render_relations != nullptr) {
    Oid key = relid;
    r = static_cast<RenderRelation*>(hash_search(g_render_relations, &key, HASH_FIND, nullptr));
  }
  if (r == nullptr)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("relation %u has not been described to render()", relid),
                    errdetail("Rows refer to a relation record sent earlier in the same decoding session."),
                    errhint("Render every message of the session in order, from its first.")));
  return r;
}

const char* render_binary(RenderRelation* r, RenderColumn* c, const proto::Bytes& b) {
  if (!c->io_ready) {
    Oid recv_fn = InvalidOid;
    Oid out_fn = InvalidOid;
    bool is_varlena = false;
    getTypeBinaryInputInfo(c->type_oid, &recv_fn, &c->typioparam);
    getTypeOutputInfo(c->type_oid, &out_fn, &is_varlena);
    fmgr_info_cxt(recv_fn, &c->receive_fn, r->cxt);
    fmgr_info_cxt(out_fn, &c->output_fn, r->cxt);
    c->io_ready = true;
  }
  StringInfoData buf;
  initStringInfo(&buf);
  appendBinaryStringInfo(&buf, reinterpret_cast<const char*>(b.data), static_cast<int>(b.len));
  Datum d = ReceiveFunctionCall(&c->receive_fn, &buf, c->typioparam, c->typmod);
  return OutputFunctionCall(&c->output_fn, d);
}

void render_tuple(StringInfo out, const char* key, RenderRelation* r, const proto::TupleView& t,
                  bool key_only, StringInfo unchanged) {
  int expected = key_only ? r->nkeys : r->ncols;
  if (static_cast<int>(t.ncols) != expected)
    ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                    errmsg("tuple at byte %zu has %u columns, but its relation record describes %d", t.offset, t.ncols, expected)));
  appendStringInfo(out, ",\"%s\":{", key);
  proto::TupleCursor cursor(t);
  proto::Value v;
  bool first = true;
  char buf[32];
  for (int i = 0; i < r->ncols; ++i) {
    RenderColumn* c = &r->cols[i];
    if (key_only && !c->is_key) continue;
    if (!cursor.next(v)) break;
    if (v.kind == proto::ValueKind::kUnchangedToast) {
      if (unchanged->len > 0) appendStringInfoChar(unchanged, ',');
      escape_json(unchanged, c->name);
      continue;
    }
    if (!first) appendStringInfoChar(out, ',');
    first = false;
    appendStringInfoString(out, c->json_key);
    const char* text = nullptr;
    switch (v.kind) {
      case proto::ValueKind::kNull: break;
      case proto::ValueKind::kInt: pg_lltoa(v.int_value, buf); text = buf; break;
      case proto::ValueKind::kTrue: text = "t"; break;
      case proto::ValueKind::kFalse: text = "f"; break;
      case proto::ValueKind::kText: text = copy_string(v.bytes); break;
      case proto::ValueKind::kBinary: text = render_binary(r, c, v.bytes); break;
      case proto::ValueKind::kUnchangedToast: break;
    }
    json_append_value(out, c->style, text);
  }
  if (!cursor.ok()) fail_malformed(cursor.error());
  appendStringInfoChar(out, '}');
}

void render_types(StringInfo out, const RenderRelation* r, bool key_only) {
  appendStringInfoString(out, ",\"types\":{");
  bool first = true;
  for (int i = 0; i < r->ncols; ++i) {
    const RenderColumn* c = &r->cols[i];
    if (key_only && !c->is_key) continue;
    if (!first) appendStringInfoChar(out, ',');
    first = false;
    appendStringInfoString(out, c->json_key);
    escape_json(out, c->type_name);
  }
  appendStringInfoChar(out, '}');
}

void render_row(StringInfo out, const proto::Record& rec) {
  RenderRelation* r = find_relation(rec.relid);
  StringInfoData unchanged;
  initStringInfo(&unchanged);
  char type = static_cast<char>(rec.type);
  bool full = rec.old_kind == proto::OldTuple::kFull;
  appendStringInfo(out, "{\"action\":\"%s\",%s", json_row_action(type), r->json_names);
  if (rec.old_kind != proto::OldTuple::kNone)
    render_tuple(out, json_old_key(full), r, rec.old_tuple, !full, &unchanged);
  if (rec.type != proto::RecordType::kDelete) render_tuple(out, "new", r, rec.new_tuple, false, &unchanged);
  render_types(out, r, rec.type == proto::RecordType::kDelete && !full);
  if (unchanged.len > 0) appendStringInfo(out, ",\"unchanged_toast\":[%s]", unchanged.data);
  appendStringInfoChar(out, '}');
}

void render_relation(StringInfo out, const proto::Record& rec) {
  remember_relation(rec);
  RenderRelation* r = find_relation(rec.relid);
  appendStringInfo(out, "{\"action\":\"relation\",%s,\"replica_identity\":\"%s\",\"columns\":[", r->json_names,
                   json_replica_identity(static_cast<char>(rec.replica_identity)));
  for (int i = 0; i < r->ncols; ++i) {
    const RenderColumn* c = &r->cols[i];
    if (i > 0) appendStringInfoChar(out, ',');
    appendStringInfoString(out, "{\"name\":");
    escape_json(out, c->name);
    appendStringInfoString(out, ",\"type\":");
    escape_json(out, c->type_name);
    if (c->is_key) appendStringInfoString(out, ",\"key\":true");
    appendStringInfoChar(out, '}');
  }
  appendStringInfoString(out, "]}");
}

void render_truncate(StringInfo out, const proto::Record& rec) {
  appendStringInfoString(out, "{\"action\":\"truncate\",\"tables\":[");
  proto::Reader relids(rec.relids.data, rec.relids.len);
  uint32_t relid = 0;
  for (int i = 0; proto::next_truncate_relid(relids, relid); ++i)
    appendStringInfo(out, "%s{%s}", i > 0 ? "," : "", find_relation(relid)->json_names);
  appendStringInfo(out, "],\"cascade\":%s,\"restart_identity\":%s}",
                   (rec.flags & proto::kTruncateCascade) ? "true" : "false",
                   (rec.flags & proto::kTruncateRestartIdentity) ? "true" : "false");
}

// Renders one record; returns false for records the json format does not show.
bool render_record(StringInfo out, const proto::Record& rec, const JsonFlags& f) {
  switch (rec.type) {
    case proto::RecordType::kBegin: json_write_begin(out, f, rec.xid, rec.lsn, rec.commit_time); return true;
    case proto::RecordType::kCommit:
      json_write_commit(out, f, rec.lsn, rec.end_lsn, rec.commit_time);
      return true;
    case proto::RecordType::kOrigin: json_write_origin(out, f, copy_string(rec.name), rec.lsn); return true;
    case proto::RecordType::kRelation: render_relation(out, rec); return true;
    case proto::RecordType::kInsert:
    case proto::RecordType::kUpdate:
    case proto::RecordType::kDelete: render_row(out, rec); return true;
    case proto::RecordType::kTruncate: render_truncate(out, rec); return true;
    case proto::RecordType::kMessage:
      json_write_message(out, f, rec.lsn, (rec.flags & proto::kMessageTransactional) != 0, copy_string(rec.name),
                         reinterpret_cast<const char*>(rec.content.data), rec.content.len);
      return true;
    case proto::RecordType::kStreamStart: json_write_stream_start(out, f, rec.xid, rec.first_segment); return true;
    case proto::RecordType::kStreamStop: json_write_stream_stop(out); return true;
    case proto::RecordType::kStreamXid:
      if (!f.xids) return false;
      json_write_stream_xid(out, rec.xid);
      return true;
    case proto::RecordType::kStreamCommit:
      json_write_stream_commit(out, f, rec.xid, rec.lsn, rec.end_lsn, rec.commit_time);
      return true;
    case proto::RecordType::kStreamAbort: json_write_stream_abort(out, f, rec.xid, rec.subxid); return true;
  }
  return false;
}

}  // namespace
}  // namespace dts::plugin

extern "C" {

Datum dts_decoding_version(PG_FUNCTION_ARGS) {
  char buf[64];
  snprintf(buf, sizeof(buf), "dts_decoding %s (protocol %d)", DTS_VERSION, dts::protocol::kVersion);
  PG_RETURN_TEXT_P(cstring_to_text(buf));
}

Datum dts_decoding_heartbeat(PG_FUNCTION_ARGS) {
  if (!superuser() && !has_rolreplication(GetUserId()))
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied to emit a heartbeat"),
                    errdetail("Only roles with the REPLICATION attribute or superusers may write to the WAL "
                              "for replication."),
                    errhint("Run it as the role the migration uses, or ALTER ROLE ... REPLICATION.")));
  const char* now = timestamptz_to_str(GetCurrentTimestamp());
  // LogLogicalMessage's record, marked unimportant: a heartbeat on an idle server must not
  // count as activity, or the standby snapshot and checkpoint it provokes would be WAL past
  // it, and the next heartbeat would follow (one every few seconds, forever).
  xl_logical_message xlrec;
  xlrec.dbId = MyDatabaseId;
  xlrec.transactional = false;
  xlrec.prefix_size = strlen(dts::protocol::kHeartbeatPrefix) + 1;
  xlrec.message_size = strlen(now);
  XLogBeginInsert();
  XLogRegisterData(reinterpret_cast<char*>(&xlrec), SizeOfLogicalMessage);
  XLogRegisterData(const_cast<char*>(dts::protocol::kHeartbeatPrefix), xlrec.prefix_size);
  XLogRegisterData(const_cast<char*>(now), xlrec.message_size);
  XLogSetRecordFlags(XLOG_INCLUDE_ORIGIN | XLOG_MARK_UNIMPORTANT);
  XLogRecPtr lsn = XLogInsert(RM_LOGICALMSG_ID, XLOG_LOGICAL_MESSAGE);
  XLogFlush(lsn);
  PG_RETURN_LSN(lsn);
}

// render(data bytea, include_xids bool, include_lsn bool, include_timestamps bool) returns setof json
Datum dts_decoding_render(PG_FUNCTION_ARGS) {
  bytea* data = PG_GETARG_BYTEA_PP(0);
  dts::plugin::JsonFlags flags{PG_GETARG_BOOL(1), PG_GETARG_BOOL(2), PG_GETARG_BOOL(3)};
  InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
  auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);

  proto::Reader reader(reinterpret_cast<const uint8_t*>(VARDATA_ANY(data)), VARSIZE_ANY_EXHDR(data));
  uint8_t version = 0;
  if (!reader.u8(version)) dts::plugin::fail_malformed(reader.error());
  if (version < proto::kMinSupportedVersion || version > proto::kMaxSupportedVersion)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("unsupported dts_decoding protocol version %d", version),
                    errdetail("This build renders protocol versions %d to %d.", proto::kMinSupportedVersion,
                              proto::kMaxSupportedVersion),
                    errhint("Install the dts_decoding release that wrote the data.")));
  proto::Record rec;
  StringInfoData out;
  initStringInfo(&out);
  while (proto::read_record(reader, rec)) {
    resetStringInfo(&out);
    if (!dts::plugin::render_record(&out, rec, flags)) continue;
    Datum value = CStringGetTextDatum(out.data);
    bool isnull = false;
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
  }
  if (!reader.ok()) dts::plugin::fail_malformed(reader.error());
  return (Datum)0;
}

}  // extern "C"
