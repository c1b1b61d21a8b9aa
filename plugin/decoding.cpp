// What happens at each decoding callback: filtering, the relation records, progress reports
// and when buffered records become a replication message.
extern "C" {
#include "postgres.h"

#include "access/xlog.h"
#include "lib/stringinfo.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "replication/reorderbuffer.h"
#include "replication/walsender.h"
#include "utils/memutils.h"
#include "utils/rel.h"
}

#include "decoding.hpp"
#include "dts/protocol.h"
#include "session.hpp"

namespace dts::plugin {
namespace {

// pack_transactions: finished transactions held in one message at most (besides message_bytes).
constexpr int kMaxHeldXacts = 1000;

// PG15 leaves progress reports to the plugin: without them a long transaction whose changes
// are all filtered out makes the walsender time out. pgoutput reports every 100 changes.
constexpr int kChangesPerProgressReport = 100;

// A frame that grew past this (one huge value) is given back rather than kept for the session.
constexpr int kFrameKeepBytes = 8 * 1024 * 1024;

DecodingSession* session_of(LogicalDecodingContext* ctx) {
  return static_cast<DecodingSession*>(ctx->output_plugin_private);
}

bool is_binary(const DecodingSession* s) { return s->opts.format == OutputFormat::kBinary; }

void reset_out(DecodingSession* s) {
  if (s->out.maxlen > kFrameKeepBytes) {
    pfree(s->out.data);
    MemoryContext old = MemoryContextSwitchTo(s->cxt);
    initStringInfo(&s->out);
    MemoryContextSwitchTo(old);
  }
  resetStringInfo(&s->out);
  s->out_records = 0;
  s->held_xacts = 0;
  if (is_binary(s)) appendStringInfoChar(&s->out, static_cast<char>(dts::protocol::kVersion));
}

void send_out(DecodingSession* s, bool last_write) {
  if (s->out_records == 0) return;
  LogicalDecodingContext* ctx = s->ctx;
  OutputPluginPrepareWrite(ctx, last_write);
  appendBinaryStringInfo(ctx->out, s->out.data, s->out.len);
  OutputPluginWrite(ctx, last_write);
  reset_out(s);
}

// Ends a callback: JSON sends its record; binary sends the frame when asked to or when it is
// big enough, so a small transaction travels as one message.
void end_callback(DecodingSession* s, bool force) {
  if (!is_binary(s) || force || s->out.len >= s->opts.message_bytes) send_out(s, true);
}

void report_progress(DecodingSession* s, bool force, bool skipped_xact) {
  if (force || ++s->changes_since_progress >= kChangesPerProgressReport) {
    s->changes_since_progress = 0;
    OutputPluginUpdateProgress(s->ctx, skipped_xact);
  }
}

// Every callback works inside change_cxt and resets it at the end. That includes the writes:
// the SQL interface copies each message in the current memory context, so a write made
// outside it would leak one copy of every message for as long as the session lasts.
MemoryContext enter(DecodingSession* s) { return MemoryContextSwitchTo(s->change_cxt); }

void leave(DecodingSession* s, MemoryContext old) {
  MemoryContextSwitchTo(old);
  MemoryContextReset(s->change_cxt);
}

void ensure_begin(DecodingSession* s, ReorderBufferTXN* txn) {
  if (s->xact_begun || s->in_stream) return;
  s->xact_begun = true;
  s->ops->begin(s, txn);
  if (txn->origin_id != InvalidRepOriginId) {
    char* name = nullptr;
    if (replorigin_by_oid(txn->origin_id, true, &name)) s->ops->origin(s, txn->origin_lsn, name);
  }
}

void note_stream_xid(DecodingSession* s, ReorderBufferTXN* change_txn) {
  if (!s->in_stream || change_txn == nullptr || change_txn->xid == s->stream_xid) return;
  s->stream_xid = change_txn->xid;
  s->ops->stream_xid(s, change_txn->xid);
}

// While a transaction is streamed, any catalog lookup can fail because the transaction was
// aborted meanwhile; PostgreSQL catches that error, sends stream_stop and decodes on. A record
// half written when it struck must not be sent, and relation records rolled back with it must
// be sent again.
struct OutputMark {
  int len;
  int records;
};

OutputMark mark_output(const DecodingSession* s) { return OutputMark{s->out.len, s->out_records}; }

void rollback_output(DecodingSession* s, OutputMark m) {
  if (s->out.len == m.len) return;
  s->out.len = m.len;
  s->out.data[m.len] = '\0';
  s->out_records = m.records;
  relation_cache_forget_sent(s->relations);
  s->stream_xid = InvalidTransactionId;  // announce the subtransaction again
}

void ensure_relation(DecodingSession* s, RelationEntry* e) {
  RelationEntry* pub = relation_cache_published(s->relations, e);
  if (pub->schema_sent) return;
  s->ops->relation(s, e);
  pub->schema_sent = true;
}

Relation find_relation(Relation* relations, int n, Oid relid) {
  for (int i = 0; i < n; ++i) {
    if (RelationGetRelid(relations[i]) == relid) return relations[i];
  }
  return nullptr;
}

}  // namespace

void deform_tuple(DecodingSession* s, TupleDesc desc, HeapTuple tuple) {
  if (desc->natts > s->values_capacity) {
    int n = Max(desc->natts, 2 * s->values_capacity);
    if (s->values != nullptr) {
      pfree(s->values);
      pfree(s->nulls);
    }
    s->values = static_cast<Datum*>(MemoryContextAlloc(s->cxt, sizeof(Datum) * n));
    s->nulls = static_cast<bool*>(MemoryContextAlloc(s->cxt, sizeof(bool) * n));
    s->values_capacity = n;
  }
  heap_deform_tuple(tuple, desc, s->values, s->nulls);
}

void json_start_record(DecodingSession* s) {
  send_out(s, false);
  s->out_records = 1;
}

void startup(LogicalDecodingContext* ctx, OutputPluginOptions* opt, bool is_init) {
  auto* s = static_cast<DecodingSession*>(MemoryContextAllocZero(ctx->context, sizeof(DecodingSession)));
  s->ctx = ctx;
  s->cxt = AllocSetContextCreate(ctx->context, "dts_decoding session", ALLOCSET_DEFAULT_SIZES);
  s->change_cxt = AllocSetContextCreate(ctx->context, "dts_decoding change", ALLOCSET_DEFAULT_SIZES);
  s->opts = DecodingOptions{};
  ctx->output_plugin_private = s;

  MemoryContext old = MemoryContextSwitchTo(s->cxt);
  // While the slot is being created the options are those of the creating command, not of a
  // decoding client: nothing is decoded then, so they are not checked.
  if (!is_init) parse_options(ctx->output_plugin_options, &s->opts);
  initStringInfo(&s->out);
  MemoryContextSwitchTo(old);

  s->ops = is_binary(s) ? &kBinaryOutput : &kJsonOutput;
  opt->output_type = is_binary(s) ? OUTPUT_PLUGIN_BINARY_OUTPUT : OUTPUT_PLUGIN_TEXTUAL_OUTPUT;
  opt->receive_rewrites = false;

  // Registering the stream callbacks turned streaming on for the context: keep it only if
  // the client asked for it.
  if (!is_init && s->opts.streaming && !ctx->streaming)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("streaming of in-progress transactions is not available in this session"),
                    errdetail("The server did not enable streaming for this decoding context."),
                    errhint("Drop the \"streaming\" option.")));
  ctx->streaming = ctx->streaming && s->opts.streaming;
  // Over the SQL functions, the slot moves to the last record read when the call returns,
  // and a transaction still held would be skipped.
  if (!is_init && s->opts.pack_transactions && (!am_walsender || !is_binary(s)))
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("option \"pack_transactions\" needs the replication protocol and format binary"),
                    errdetail("Through the SQL functions a transaction held for the next message would be skipped."),
                    errhint("Drop the option, or decode with START_REPLICATION.")));

  s->relations = relation_cache_create(s->cxt, &s->opts);
  reset_out(s);
}

void shutdown(LogicalDecodingContext* ctx) {
  DecodingSession* s = session_of(ctx);
  if (s != nullptr && s->relations != nullptr) relation_cache_detach(s->relations);
}

void begin_txn(LogicalDecodingContext* ctx, ReorderBufferTXN* txn) {
  DecodingSession* s = session_of(ctx);
  s->xact_begun = false;
  if (!s->opts.skip_empty_xacts) {
    MemoryContext old = enter(s);
    ensure_begin(s, txn);
    end_callback(s, false);
    leave(s, old);
  }
}

// pack_transactions: a finished transaction waits for the next ones while the WAL already
// holds more past its commit (a backlog): each replication message costs the walsender and
// the client a round of system calls. Whatever comes next sends it (a transaction, a
// message, a stream block); the client that asked for this emits a heartbeat message when
// it waits, rather than trust a keepalive's position, which may be past a held transaction.
bool hold_finished(const DecodingSession* s, const ReorderBufferTXN* txn) {
  return s->opts.pack_transactions && s->held_xacts < kMaxHeldXacts && txn->end_lsn < GetFlushRecPtr(nullptr);
}

void commit_txn(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr commit_lsn) {
  DecodingSession* s = session_of(ctx);
  report_progress(s, true, !s->xact_begun);
  if (!s->xact_begun) return;
  MemoryContext old = enter(s);
  s->ops->commit(s, txn, commit_lsn);
  s->xact_begun = false;
  bool hold = hold_finished(s, txn);
  if (hold) s->held_xacts++;
  end_callback(s, !hold);
  leave(s, old);
}

void change(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, Relation rel, ReorderBufferChange* change) {
  DecodingSession* s = session_of(ctx);
  report_progress(s, false, false);
  RelationEntry* e = relation_cache_get(s->relations, rel);
  if (!e->publish) return;

  if (e->identity_mismatch && change->data.tp.oldtuple != nullptr)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("cannot publish the old row of partition \"%s\" as its root \"%s\"",
                           RelationGetRelationName(rel), e->table),
                    errdetail("The partition's replica identity does not include every column of the root's."),
                    errhint("Give the partition the root's replica identity, or decode without "
                            "publish_via_partition_root.")));

  MemoryContext old = enter(s);
  OutputMark mark = mark_output(s);
  PG_TRY();
  {
    ensure_begin(s, txn);
    note_stream_xid(s, change->txn);
    ensure_relation(s, e);
    s->ops->change(s, e, RelationGetDescr(rel), change);
  }
  PG_CATCH();
  {
    rollback_output(s, mark);
    PG_RE_THROW();
  }
  PG_END_TRY();
  end_callback(s, false);
  leave(s, old);
}

void truncate(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, int nrelations, Relation* relations,
              ReorderBufferChange* change) {
  DecodingSession* s = session_of(ctx);
  report_progress(s, false, false);
  MemoryContext old = enter(s);
  OutputMark mark = mark_output(s);
  PG_TRY();
  {
    auto** entries = static_cast<RelationEntry**>(palloc(sizeof(RelationEntry*) * Max(nrelations, 1)));
    int n = 0;
    for (int i = 0; i < nrelations; ++i) {
      RelationEntry* e = relation_cache_get(s->relations, relations[i]);
      if (!e->publish) continue;
      if (s->opts.publish_via_partition_root && relations[i]->rd_rel->relispartition) {
        // Its rows were published as the root's, so the root's TRUNCATE stands for it when
        // the root is in the list, even if the filters select only this partition. Sent as
        // the root alone, it would empty every partition on the target: then it is not sent.
        Relation root = find_relation(relations, nrelations, e->publish_relid);
        if (root == nullptr) {
          ereport(WARNING,
                  (errmsg("truncate of partition \"%s\" is not sent", RelationGetRelationName(relations[i])),
                   errdetail("With publish_via_partition_root, only a TRUNCATE of the partitioned table itself "
                             "is sent."),
                   errhint("Decode without publish_via_partition_root to replicate it.")));
          continue;
        }
        e = relation_cache_get(s->relations, root);
      }
      bool duplicate = false;
      for (int j = 0; j < n && !duplicate; ++j) duplicate = entries[j]->publish_relid == e->publish_relid;
      if (!duplicate) entries[n++] = e;
    }
    if (n > 0) {
      ensure_begin(s, txn);
      note_stream_xid(s, change->txn);
      for (int i = 0; i < n; ++i) ensure_relation(s, entries[i]);
      s->ops->truncate(s, entries, n, change->data.truncate.cascade, change->data.truncate.restart_seqs);
    }
  }
  PG_CATCH();
  {
    rollback_output(s, mark);
    PG_RE_THROW();
  }
  PG_END_TRY();
  end_callback(s, false);
  leave(s, old);
}

void message(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr lsn, bool transactional,
             const char* prefix, Size size, const char* content) {
  DecodingSession* s = session_of(ctx);
  if (!message_prefix_wanted(&s->opts, prefix)) return;
  MemoryContext old = enter(s);
  if (transactional) {
    OutputMark mark = mark_output(s);
    PG_TRY();
    {
      ensure_begin(s, txn);
      note_stream_xid(s, txn);
      s->ops->message(s, lsn, true, prefix, size, content);
    }
    PG_CATCH();
    {
      rollback_output(s, mark);
      PG_RE_THROW();
    }
    PG_END_TRY();
    end_callback(s, false);
  } else {
    // Not part of any transaction: a message of its own, sent at once.
    send_out(s, false);
    s->ops->message(s, lsn, false, prefix, size, content);
    end_callback(s, true);
  }
  leave(s, old);
}

bool filter_by_origin(LogicalDecodingContext* ctx, RepOriginId origin_id) {
  DecodingSession* s = session_of(ctx);
  return s->opts.origin_none && origin_id != InvalidRepOriginId;
}

void stream_start(LogicalDecodingContext* ctx, ReorderBufferTXN* txn) {
  DecodingSession* s = session_of(ctx);
  bool first = !rbtxn_is_streamed(txn);
  MemoryContext old = enter(s);
  s->in_stream = true;
  s->stream_xid = txn->xid;
  s->ops->stream_start(s, txn->xid, first);
  if (first && txn->origin_id != InvalidRepOriginId) {
    char* name = nullptr;
    if (replorigin_by_oid(txn->origin_id, true, &name)) s->ops->origin(s, txn->origin_lsn, name);
  }
  end_callback(s, false);
  leave(s, old);
}

void stream_stop(LogicalDecodingContext* ctx, ReorderBufferTXN*) {
  DecodingSession* s = session_of(ctx);
  MemoryContext old = enter(s);
  s->ops->stream_stop(s);
  s->in_stream = false;
  end_callback(s, true);
  leave(s, old);
}

void stream_abort(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr) {
  DecodingSession* s = session_of(ctx);
  ReorderBufferTXN* top = txn->toptxn != nullptr ? txn->toptxn : txn;
  MemoryContext old = enter(s);
  s->ops->stream_abort(s, top->xid, txn->xid);
  end_callback(s, true);
  leave(s, old);
}

void stream_commit(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr commit_lsn) {
  DecodingSession* s = session_of(ctx);
  report_progress(s, true, false);
  MemoryContext old = enter(s);
  s->ops->stream_commit(s, txn, commit_lsn);
  end_callback(s, true);
  leave(s, old);
}

}  // namespace dts::plugin
