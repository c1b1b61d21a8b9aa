// The decoding callbacks, called by the extern "C" shims in plugin_entry.cpp.
// Include after the PostgreSQL headers.
#ifndef DTS_PLUGIN_DECODING_HPP
#define DTS_PLUGIN_DECODING_HPP

namespace dts::plugin {

void startup(LogicalDecodingContext* ctx, OutputPluginOptions* opt, bool is_init);
void shutdown(LogicalDecodingContext* ctx);
void begin_txn(LogicalDecodingContext* ctx, ReorderBufferTXN* txn);
void commit_txn(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr commit_lsn);
void change(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, Relation rel, ReorderBufferChange* change);
void truncate(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, int nrelations, Relation* relations,
              ReorderBufferChange* change);
void message(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr lsn, bool transactional,
             const char* prefix, Size size, const char* content);
bool filter_by_origin(LogicalDecodingContext* ctx, RepOriginId origin_id);
void stream_start(LogicalDecodingContext* ctx, ReorderBufferTXN* txn);
void stream_stop(LogicalDecodingContext* ctx, ReorderBufferTXN* txn);
void stream_abort(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr abort_lsn);
void stream_commit(LogicalDecodingContext* ctx, ReorderBufferTXN* txn, XLogRecPtr commit_lsn);

}  // namespace dts::plugin

#endif
