// The private data of one decoding session, and the interface both output formats implement.
// Include after the PostgreSQL headers.
#ifndef DTS_PLUGIN_SESSION_HPP
#define DTS_PLUGIN_SESSION_HPP

#include "options.hpp"
#include "relation_cache.hpp"

namespace dts::plugin {

struct DecodingSession;

// One writer per format. Each call appends records to session->out; the session decides when
// a replication message is sent (decoding.cpp).
struct OutputOps {
  void (*begin)(DecodingSession* s, ReorderBufferTXN* txn);
  void (*commit)(DecodingSession* s, ReorderBufferTXN* txn, XLogRecPtr commit_lsn);
  void (*origin)(DecodingSession* s, XLogRecPtr origin_lsn, const char* name);
  void (*relation)(DecodingSession* s, const RelationEntry* e);
  void (*change)(DecodingSession* s, const RelationEntry* e, TupleDesc desc, ReorderBufferChange* change);
  void (*truncate)(DecodingSession* s, RelationEntry** entries, int n, bool cascade, bool restart_seqs);
  void (*message)(DecodingSession* s, XLogRecPtr lsn, bool transactional, const char* prefix, Size size,
                  const char* content);
  void (*stream_start)(DecodingSession* s, TransactionId xid, bool first_segment);
  void (*stream_stop)(DecodingSession* s);
  void (*stream_xid)(DecodingSession* s, TransactionId xid);
  void (*stream_commit)(DecodingSession* s, ReorderBufferTXN* txn, XLogRecPtr commit_lsn);
  void (*stream_abort)(DecodingSession* s, TransactionId xid, TransactionId subxid);
};

extern const OutputOps kBinaryOutput;
extern const OutputOps kJsonOutput;

struct DecodingSession {
  LogicalDecodingContext* ctx;
  MemoryContext cxt;         // lives as long as the session
  MemoryContext change_cxt;  // reset after every change
  DecodingOptions opts;
  const OutputOps* ops;
  RelationCache* relations;

  // Records not yet handed to the walsender. Binary: a frame (version byte + records) sent
  // once it reaches opts.message_bytes or the transaction ends. JSON: at most one record.
  StringInfoData out;
  int out_records;

  // Reused across changes so that deforming a tuple allocates nothing.
  Datum* values;
  bool* nulls;
  int values_capacity;

  bool xact_begun;  // begin (and origin) written for the current transaction
  bool in_stream;   // between stream start and stop
  TransactionId stream_xid;  // the (sub)transaction the last streamed change belonged to
  int held_xacts;            // finished transactions in `out`, not sent yet (pack_transactions)
  int changes_since_progress;
};

// Deforms `tuple` into s->values / s->nulls, growing them if needed.
void deform_tuple(DecodingSession* s, TupleDesc desc, HeapTuple tuple);

// JSON records are one message each: the record before this one is sent (as not the last
// write of the callback) and `out` is made ready for a new record.
void json_start_record(DecodingSession* s);

}  // namespace dts::plugin

#endif
