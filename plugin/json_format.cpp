// Shared pieces of the JSON format.
extern "C" {
#include "postgres.h"

#include "access/xlogdefs.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/timestamp.h"
}

#include "json_format.hpp"

namespace dts::plugin {

JsonStyle json_style_for_type(Oid type_oid) {
  switch (type_oid) {
    case INT2OID:
    case INT4OID:
    case INT8OID:
    case OIDOID:
    case FLOAT4OID:
    case FLOAT8OID:
    case NUMERICOID: return JsonStyle::kNumber;
    case BOOLOID: return JsonStyle::kBool;
    default: return JsonStyle::kString;
  }
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// -?digits(.digits)?([eE][+-]?digits)? : what a JSON number is (leading zeros allowed, as
// numeric and float output never write them anyway).
bool is_json_number(const char* p) {
  if (*p == '-') ++p;
  if (!is_digit(*p)) return false;
  while (is_digit(*p)) ++p;
  if (*p == '.') {
    ++p;
    if (!is_digit(*p)) return false;
    while (is_digit(*p)) ++p;
  }
  if (*p == 'e' || *p == 'E') {
    ++p;
    if (*p == '+' || *p == '-') ++p;
    if (!is_digit(*p)) return false;
    while (is_digit(*p)) ++p;
  }
  return *p == '\0';
}

}  // namespace

void json_append_value(StringInfo out, JsonStyle style, const char* text) {
  if (text == nullptr) {
    appendStringInfoString(out, "null");
    return;
  }
  switch (style) {
    case JsonStyle::kBool:
      appendStringInfoString(out, text[0] == 't' ? "true" : "false");
      return;
    case JsonStyle::kNumber:
      // NaN and the infinities have no JSON number: they stay strings, as does anything else
      // that is not one (render() may be handed any bytes).
      if (is_json_number(text)) {
        appendStringInfoString(out, text);
        return;
      }
      break;
    case JsonStyle::kString:
      break;
  }
  escape_json(out, text);
}

void json_append_lsn(StringInfo out, const char* key, XLogRecPtr lsn) {
  // Not LSN_FORMAT_ARGS: its type assertion uses a builtin that g++ lacks.
  appendStringInfo(out, ",\"%s\":\"%X/%X\"", key, static_cast<uint32>(lsn >> 32), static_cast<uint32>(lsn));
}

const char* json_replica_identity(char relreplident) {
  switch (relreplident) {
    case REPLICA_IDENTITY_NOTHING: return "nothing";
    case REPLICA_IDENTITY_FULL: return "full";
    case REPLICA_IDENTITY_INDEX: return "index";
    default: return "default";
  }
}

namespace {

void append_xid(StringInfo out, const char* key, TransactionId xid) {
  appendStringInfo(out, ",\"%s\":%u", key, xid);
}

void append_time(StringInfo out, TimestampTz t) {
  appendStringInfoString(out, ",\"commit_time\":");
  escape_json(out, timestamptz_to_str(t));
}

}  // namespace

void json_write_begin(StringInfo out, const JsonFlags& f, TransactionId xid, XLogRecPtr final_lsn,
                      TimestampTz commit_time) {
  appendStringInfoString(out, "{\"action\":\"begin\"");
  if (f.xids) append_xid(out, "xid", xid);
  if (f.lsn) json_append_lsn(out, "lsn", final_lsn);
  if (f.timestamps) append_time(out, commit_time);
  appendStringInfoChar(out, '}');
}

void json_write_commit(StringInfo out, const JsonFlags& f, XLogRecPtr commit_lsn, XLogRecPtr end_lsn,
                       TimestampTz commit_time) {
  appendStringInfoString(out, "{\"action\":\"commit\"");
  if (f.lsn) {
    json_append_lsn(out, "lsn", commit_lsn);
    json_append_lsn(out, "end_lsn", end_lsn);
  }
  if (f.timestamps) append_time(out, commit_time);
  appendStringInfoChar(out, '}');
}

void json_write_origin(StringInfo out, const JsonFlags& f, const char* name, XLogRecPtr origin_lsn) {
  appendStringInfoString(out, "{\"action\":\"origin\",\"name\":");
  escape_json(out, name);
  if (f.lsn) json_append_lsn(out, "lsn", origin_lsn);
  appendStringInfoChar(out, '}');
}

void json_write_message(StringInfo out, const JsonFlags& f, XLogRecPtr lsn, bool transactional,
                        const char* prefix, const char* content, Size size) {
  appendStringInfo(out, "{\"action\":\"message\",\"transactional\":%s,\"prefix\":",
                   transactional ? "true" : "false");
  escape_json(out, prefix);
  // Content is bytes: text when it is valid in the server encoding, hex otherwise.
  if (memchr(content, '\0', size) == nullptr && pg_verifymbstr(content, static_cast<int>(size), true)) {
    appendStringInfoString(out, ",\"content\":");
    escape_json(out, pnstrdup(content, size));
  } else {
    appendStringInfoString(out, ",\"content_hex\":\"");
    static const char kHex[] = "0123456789abcdef";
    for (Size i = 0; i < size; ++i) {
      auto b = static_cast<unsigned char>(content[i]);
      appendStringInfoChar(out, kHex[b >> 4]);
      appendStringInfoChar(out, kHex[b & 15]);
    }
    appendStringInfoChar(out, '"');
  }
  if (f.lsn) json_append_lsn(out, "lsn", lsn);
  appendStringInfoChar(out, '}');
}

void json_write_stream_start(StringInfo out, const JsonFlags& f, TransactionId xid, bool first_segment) {
  appendStringInfo(out, "{\"action\":\"stream_start\",\"first_segment\":%s", first_segment ? "true" : "false");
  if (f.xids) append_xid(out, "xid", xid);
  appendStringInfoChar(out, '}');
}

void json_write_stream_stop(StringInfo out) { appendStringInfoString(out, "{\"action\":\"stream_stop\"}"); }

void json_write_stream_xid(StringInfo out, TransactionId xid) {
  appendStringInfo(out, "{\"action\":\"stream_xid\",\"xid\":%u}", xid);
}

void json_write_stream_commit(StringInfo out, const JsonFlags& f, TransactionId xid, XLogRecPtr commit_lsn,
                              XLogRecPtr end_lsn, TimestampTz commit_time) {
  appendStringInfoString(out, "{\"action\":\"stream_commit\"");
  if (f.xids) append_xid(out, "xid", xid);
  if (f.lsn) {
    json_append_lsn(out, "lsn", commit_lsn);
    json_append_lsn(out, "end_lsn", end_lsn);
  }
  if (f.timestamps) append_time(out, commit_time);
  appendStringInfoChar(out, '}');
}

void json_write_stream_abort(StringInfo out, const JsonFlags& f, TransactionId xid, TransactionId subxid) {
  appendStringInfoString(out, "{\"action\":\"stream_abort\"");
  if (f.xids) {
    append_xid(out, "xid", xid);
    append_xid(out, "subxid", subxid);
  }
  appendStringInfoChar(out, '}');
}

const char* json_row_action(char record_type) {
  switch (record_type) {
    case 'I': return "insert";
    case 'U': return "update";
    default: return "delete";
  }
}

const char* json_old_key(bool full) { return full ? "old" : "key"; }

}  // namespace dts::plugin
