// Pieces of the JSON format shared by the json output and the render() SQL function, so that
// a binary stream rendered from SQL reads exactly like the json format of the same changes.
// Include after the PostgreSQL headers.
#ifndef DTS_PLUGIN_JSON_FORMAT_HPP
#define DTS_PLUGIN_JSON_FORMAT_HPP

#include "relation_cache.hpp"

namespace dts::plugin {

struct JsonFlags {
  bool xids;
  bool lsn;
  bool timestamps;
};

JsonStyle json_style_for_type(Oid type_oid);
// Appends a value: bare for finite numbers and booleans, a JSON string otherwise; `text` is
// the type's text output (nullptr for SQL NULL).
void json_append_value(StringInfo out, JsonStyle style, const char* text);
void json_append_lsn(StringInfo out, const char* key, XLogRecPtr lsn);
const char* json_replica_identity(char relreplident);

void json_write_begin(StringInfo out, const JsonFlags& f, TransactionId xid, XLogRecPtr final_lsn,
                      TimestampTz commit_time);
void json_write_commit(StringInfo out, const JsonFlags& f, XLogRecPtr commit_lsn, XLogRecPtr end_lsn,
                       TimestampTz commit_time);
void json_write_origin(StringInfo out, const JsonFlags& f, const char* name, XLogRecPtr origin_lsn);
void json_write_message(StringInfo out, const JsonFlags& f, XLogRecPtr lsn, bool transactional,
                        const char* prefix, const char* content, Size size);
void json_write_stream_start(StringInfo out, const JsonFlags& f, TransactionId xid, bool first_segment);
void json_write_stream_stop(StringInfo out);
void json_write_stream_xid(StringInfo out, TransactionId xid);
void json_write_stream_commit(StringInfo out, const JsonFlags& f, TransactionId xid, XLogRecPtr commit_lsn,
                              XLogRecPtr end_lsn, TimestampTz commit_time);
void json_write_stream_abort(StringInfo out, const JsonFlags& f, TransactionId xid, TransactionId subxid);

// The action name of a row record: insert, update or delete.
const char* json_row_action(char record_type);
// The key under which an old tuple appears: "key" (key columns) or "old" (whole row).
const char* json_old_key(bool full);

}  // namespace dts::plugin

#endif
