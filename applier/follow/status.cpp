#include "follow/status.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace dts::follow {

std::string status_json(const Status& s) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("phase");
  w.String(s.phase.c_str());
  w.Key("slot");
  w.String(s.slot.c_str());
  w.Key("received_lsn");
  w.String(format_lsn(s.received_lsn).c_str());
  w.Key("applied_lsn");
  w.String(format_lsn(s.applied_lsn).c_str());
  w.Key("flushed_lsn");
  w.String(format_lsn(s.flushed_lsn).c_str());
  w.Key("server_wal_end");
  w.String(format_lsn(s.server_wal_end).c_str());
  w.Key("lag_ms");
  w.Int64(s.lag_ms);
  w.Key("lag_bytes");
  w.Uint64(s.lag_bytes);
  w.Key("changes_per_second");
  w.Double(s.changes_per_second);
  w.Key("transactions_applied");
  w.Uint64(s.transactions_applied);
  w.Key("changes_applied");
  w.Uint64(s.changes_applied);
  w.Key("bytes_received");
  w.Uint64(s.bytes_received);
  w.Key("reconnects");
  w.Uint64(s.reconnects);
  w.Key("spooled_transactions");
  w.Uint64(s.spooled_transactions);
  w.Key("spool_peak_bytes");
  w.Uint64(s.spool_peak_bytes);
  w.Key("messages_received");
  w.Uint64(s.messages_received);
  w.Key("heartbeats");
  w.Uint64(s.heartbeats);
  w.Key("set_statements");
  w.Uint64(s.set_statements);
  w.Key("set_rows");
  w.Uint64(s.set_rows);
  w.Key("apply_workers");
  w.Uint64(s.apply_workers);
  w.Key("conflict_waits");
  w.Uint64(s.conflict_waits);
  w.Key("last_conflict_wait");
  w.String(s.last_conflict_wait.c_str());
  w.Key("apply_lanes");
  w.StartArray();
  for (const auto& l : s.lanes) {
    w.StartObject();
    w.Key("state");
    w.String(l.state);
    w.Key("unconfirmed");
    w.Uint64(l.unconfirmed);
    w.Key("group_end_lsn");
    w.String(l.group_end_lsn != 0 ? format_lsn(l.group_end_lsn).c_str() : "");
    w.EndObject();
  }
  w.EndArray();
  w.Key("parallel_retries");
  w.Uint64(s.parallel_retries);
  w.Key("schema_changes");
  w.Uint64(s.schema_changes);
  w.Key("last_schema_change");
  w.String(s.last_schema_change.c_str());
  w.Key("error");
  if (s.error.empty()) w.Null();
  else w.String(s.error.c_str());
  if (!s.copy_json.empty()) {
    w.Key("copy");
    w.RawValue(s.copy_json.c_str(), s.copy_json.size(), rapidjson::kObjectType);
  }
  w.Key("updated_at");
  char when[32];
  std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  w.String(when);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

bool write_status_file(const std::string& path, const Status& s) {
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return false;
  std::string json = status_json(s);
  bool ok = std::fwrite(json.data(), 1, json.size(), f) == json.size() && std::fputc('\n', f) != EOF;
  ok = (std::fclose(f) == 0) && ok;
  return ok && std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string status_file_problem(const std::string& path) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  struct stat st {};
  if (path.empty() || path.back() == '/') return "--status-file \"" + path + "\" names a directory, not a file";
  if (stat(dir.c_str(), &st) != 0)
    return "--status-file " + path + ": its directory " + dir + " cannot be used (" + std::strerror(errno) +
           "); create it or choose another path";
  if (!S_ISDIR(st.st_mode)) return "--status-file " + path + ": " + dir + " is not a directory; choose another path";
  if (access(dir.c_str(), W_OK | X_OK) != 0)
    return "--status-file " + path + ": cannot write in " + dir + " (" + std::strerror(errno) + ")";
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    return "--status-file " + path + " is a directory; give the path of a file";
  return "";
}

std::string status_line(const Status& s) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s received %s applied %s flushed %s lag %lld ms %llu B %.0f changes/s %llu txns",
                s.phase.c_str(), format_lsn(s.received_lsn).c_str(), format_lsn(s.applied_lsn).c_str(),
                format_lsn(s.flushed_lsn).c_str(), static_cast<long long>(s.lag_ms),
                static_cast<unsigned long long>(s.lag_bytes), s.changes_per_second,
                static_cast<unsigned long long>(s.transactions_applied));
  return buf;
}

}  // namespace dts::follow
