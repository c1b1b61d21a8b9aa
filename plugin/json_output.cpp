// The json format: one JSON object per message, every value with its type. For people using
// pg_recvlogical and for the regression tests; the applier reads the binary format.
extern "C" {
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "replication/logical.h"
#include "replication/reorderbuffer.h"
#include "utils/builtins.h"
#include "utils/json.h"
}

#include "json_format.hpp"
#include "session.hpp"

namespace dts::plugin {
namespace {

JsonFlags flags_of(const DecodingSession* s) {
  return JsonFlags{s->opts.include_xids, s->opts.include_lsn, s->opts.include_timestamps};
}

const char* value_text(const ColumnOutput* c, Datum d, char* buf) {
  switch (c->encoding) {
    case ColumnEncoding::kInt2: pg_ltoa(DatumGetInt16(d), buf); return buf;
    case ColumnEncoding::kInt4: pg_ltoa(DatumGetInt32(d), buf); return buf;
    case ColumnEncoding::kInt8: pg_lltoa(DatumGetInt64(d), buf); return buf;
    case ColumnEncoding::kBool: return DatumGetBool(d) ? "t" : "f";
    case ColumnEncoding::kTextBytes: return text_to_cstring(DatumGetTextPP(d));
    case ColumnEncoding::kName: return NameStr(*DatumGetName(d));
    default: return OutputFunctionCall(const_cast<FmgrInfo*>(&c->output_fn), d);
  }
}

void write_tuple(DecodingSession* s, const char* key, const RelationEntry* e, TupleDesc desc,
                 ReorderBufferTupleBuf* tuple, bool key_only, StringInfo unchanged) {
  StringInfo out = &s->out;
  deform_tuple(s, desc, &tuple->tuple);
  appendStringInfo(out, ",\"%s\":{", key);
  bool first = true;
  char buf[32];
  for (int i = 0; i < e->ncols; ++i) {
    const ColumnOutput* c = &e->cols[i];
    if (key_only && !c->is_key) continue;
    int idx = c->attnum - 1;
    bool is_null = s->nulls[idx];
    if (!is_null && c->is_varlena && VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(s->values[idx]))) {
      if (unchanged->len > 0) appendStringInfoChar(unchanged, ',');
      escape_json(unchanged, c->name);
      continue;
    }
    if (!first) appendStringInfoChar(out, ',');
    first = false;
    appendStringInfoString(out, c->json_key);
    json_append_value(out, c->json_style, is_null ? nullptr : value_text(c, s->values[idx], buf));
  }
  appendStringInfoChar(out, '}');
}

void write_types(StringInfo out, const RelationEntry* e, bool key_only) {
  appendStringInfoString(out, ",\"types\":{");
  bool first = true;
  for (int i = 0; i < e->ncols; ++i) {
    const ColumnOutput* c = &e->cols[i];
    if (key_only && !c->is_key) continue;
    if (!first) appendStringInfoChar(out, ',');
    first = false;
    appendStringInfoString(out, c->json_key);
    escape_json(out, c->type_name);
  }
  appendStringInfoChar(out, '}');
}

void json_begin(DecodingSession* s, ReorderBufferTXN* txn) {
  json_start_record(s);
  json_write_begin(&s->out, flags_of(s), txn->xid, txn->final_lsn, txn->xact_time.commit_time);
}

void json_commit(DecodingSession* s, ReorderBufferTXN* txn, XLogRecPtr commit_lsn) {
  json_start_record(s);
  json_write_commit(&s->out, flags_of(s), commit_lsn, txn->end_lsn, txn->xact_time.commit_time);
}

void json_origin(DecodingSession* s, XLogRecPtr origin_lsn, const char* name) {
  json_start_record(s);
  json_write_origin(&s->out, flags_of(s), name, origin_lsn);
}

void json_relation(DecodingSession* s, const RelationEntry* e) {
  json_start_record(s);
  StringInfo out = &s->out;
  appendStringInfo(out, "{\"action\":\"relation\",%s,\"replica_identity\":\"%s\",\"columns\":[", e->json_names,
                   json_replica_identity(e->replica_identity));
  for (int i = 0; i < e->ncols; ++i) {
    const ColumnOutput* c = &e->cols[i];
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

void json_change(DecodingSession* s, const RelationEntry* e, TupleDesc desc, ReorderBufferChange* change) {
  json_start_record(s);
  StringInfo out = &s->out;
  StringInfoData unchanged;
  initStringInfo(&unchanged);
  ReorderBufferTupleBuf* oldtup = change->data.tp.oldtuple;
  bool full = e->replica_identity == REPLICA_IDENTITY_FULL;
  char type = change->action == REORDER_BUFFER_CHANGE_INSERT ? 'I'
              : change->action == REORDER_BUFFER_CHANGE_UPDATE ? 'U' : 'D';
  appendStringInfo(out, "{\"action\":\"%s\",%s", json_row_action(type), e->json_names);
  bool has_old = oldtup != nullptr && (full || e->nkeys > 0);  // as the binary format decides
  if (type != 'I' && has_old) write_tuple(s, json_old_key(full), e, desc, oldtup, !full, &unchanged);
  if (type != 'D') write_tuple(s, "new", e, desc, change->data.tp.newtuple, false, &unchanged);
  // A delete that carries only the key lists the key columns' types; otherwise all.
  write_types(out, e, type == 'D' && !full);
  if (unchanged.len > 0) appendStringInfo(out, ",\"unchanged_toast\":[%s]", unchanged.data);
  appendStringInfoChar(out, '}');
}

void json_truncate(DecodingSession* s, RelationEntry** entries, int n, bool cascade, bool restart_seqs) {
  json_start_record(s);
  StringInfo out = &s->out;
  appendStringInfoString(out, "{\"action\":\"truncate\",\"tables\":[");
  for (int i = 0; i < n; ++i) {
    appendStringInfo(out, "%s{%s}", i > 0 ? "," : "", entries[i]->json_names);
  }
  appendStringInfo(out, "],\"cascade\":%s,\"restart_identity\":%s}", cascade ? "true" : "false",
                   restart_seqs ? "true" : "false");
}

void json_message(DecodingSession* s, XLogRecPtr lsn, bool transactional, const char* prefix, Size size,
                  const char* content) {
  json_start_record(s);
  json_write_message(&s->out, flags_of(s), lsn, transactional, prefix, content, size);
}

void json_stream_start(DecodingSession* s, TransactionId xid, bool first_segment) {
  json_start_record(s);
  json_write_stream_start(&s->out, flags_of(s), xid, first_segment);
}

void json_stream_stop(DecodingSession* s) {
  json_start_record(s);
  json_write_stream_stop(&s->out);
}

// Which subtransaction a streamed change belongs to is shown only with include_xids.
void json_stream_xid(DecodingSession* s, TransactionId xid) {
  if (!s->opts.include_xids) return;
  json_start_record(s);
  json_write_stream_xid(&s->out, xid);
}

void json_stream_commit(DecodingSession* s, ReorderBufferTXN* txn, XLogRecPtr commit_lsn) {
  json_start_record(s);
  json_write_stream_commit(&s->out, flags_of(s), txn->xid, commit_lsn, txn->end_lsn,
                           txn->xact_time.commit_time);
}

void json_stream_abort(DecodingSession* s, TransactionId xid, TransactionId subxid) {
  json_start_record(s);
  json_write_stream_abort(&s->out, flags_of(s), xid, subxid);
}

}  // namespace

const OutputOps kJsonOutput = {
    json_begin,       json_commit,     json_origin,        json_relation,
    json_change,      json_truncate,   json_message,       json_stream_start,
    json_stream_stop, json_stream_xid, json_stream_commit, json_stream_abort,
};

}  // namespace dts::plugin
