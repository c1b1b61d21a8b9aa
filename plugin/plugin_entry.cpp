// The extern "C" face of dts_decoding: the module magic, the output plugin's init function and
// thin shims for each callback.
//
// No C++ exception can reach PostgreSQL: the plugin is compiled with -fno-exceptions, uses no
// library that throws and allocates only with palloc. No object with a destructor lives in
// plugin code, so an ereport's longjmp never skips one.
extern "C" {
#include "postgres.h"

#include "fmgr.h"
#include "replication/logical.h"
#include "replication/output_plugin.h"
#include "replication/reorderbuffer.h"
#include "utils/rel.h"

PG_MODULE_MAGIC;

extern PGDLLEXPORT void _PG_output_plugin_init(OutputPluginCallbacks* cb);
}

#include "decoding.hpp"

namespace plugin = dts::plugin;

extern "C" {

static void dts_startup(LogicalDecodingContext* ctx, OutputPluginOptions* opt, bool is_init) {
  plugin::startup(ctx, opt, is_init);
}

static void dts_shutdown(LogicalDecodingContext* ctx) { plugin::shutdown(ctx); }

static void dts_begin(LogicalDecodingContext* ctx, ReorderBufferTXN* txn) { plugin::begin_txn(ctx, txn); }

static void dts_commit(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr commit_lsn) {
  plugin::commit_txn(ctx, txn, commit_lsn);
}

static void dts_change(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, Relation rel,
                       ReorderBufferChange* change) {
  plugin::change(ctx, txn, rel, change);
}

static void dts_truncate(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, int nrelations,
                         Relation relations[], ReorderBufferChange* change) {
  plugin::truncate(ctx, txn, nrelations, relations, change);
}

static void dts_message(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr lsn,
                        bool transactional, const char* prefix, Size size, const char* content) {
  plugin::message(ctx, txn, lsn, transactional, prefix, size, content);
}

static bool dts_filter_by_origin(LogicalDecodingContext* ctx, RepOriginId origin_id) {
  return plugin::filter_by_origin(ctx, origin_id);
}

static void dts_stream_start(LogicalDecodingContext* ctx, ReorderBufferTXN* txn) {
  plugin::stream_start(ctx, txn);
}

static void dts_stream_stop(LogicalDecodingContext* ctx, ReorderBufferTXN* txn) {
  plugin::stream_stop(ctx, txn);
}

static void dts_stream_abort(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr abort_lsn) {
  plugin::stream_abort(ctx, txn, abort_lsn);
}

static void dts_stream_commit(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr commit_lsn) {
  plugin::stream_commit(ctx, txn, commit_lsn);
}

void _PG_output_plugin_init(OutputPluginCallbacks* cb) {
  cb->startup_cb = dts_startup;
  cb->begin_cb = dts_begin;
  cb->change_cb = dts_change;
  cb->truncate_cb = dts_truncate;
  cb->commit_cb = dts_commit;
  cb->message_cb = dts_message;
  cb->filter_by_origin_cb = dts_filter_by_origin;
  cb->shutdown_cb = dts_shutdown;
  // No two-phase callbacks: registering any would turn two-phase decoding on.
  cb->stream_start_cb = dts_stream_start;
  cb->stream_stop_cb = dts_stream_stop;
  cb->stream_abort_cb = dts_stream_abort;
  cb->stream_commit_cb = dts_stream_commit;
  cb->stream_change_cb = dts_change;
  cb->stream_message_cb = dts_message;
  cb->stream_truncate_cb = dts_truncate;
}

}  // extern "C"
