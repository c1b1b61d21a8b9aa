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
  auto text = [&w](const char* key, const std::string& v) {
    w.Key(key);
    w.String(v.c_str(), static_cast<rapidjson::SizeType>(v.size()));
  };
  auto count = [&w](const char* key, uint64_t v) {
    w.Key(key);
    w.Uint64(v);
  };
  const core::ApplyStats& a = s.apply;
  w.StartObject();
  text("phase", s.phase);
  text("slot", s.slot);
  text("received_lsn", format_lsn(s.received_lsn));
  text("applied_lsn", format_lsn(s.applied_lsn));
  text("flushed_lsn", format_lsn(s.flushed_lsn));
  text("server_wal_end", format_lsn(s.server_wal_end));
  w.Key("lag_ms");
  w.Int64(s.lag_ms);
  count("lag_bytes", s.lag_bytes);
  w.Key("changes_per_second");
  w.Double(s.changes_per_second);
  count("transactions_applied", a.transactions);
  count("changes_applied", a.changes);
  count("bytes_received", s.bytes_received);
  count("reconnects", s.reconnects);
  count("spooled_transactions", a.spooled_transactions);
  count("spool_peak_bytes", a.spool_peak_bytes);
  count("messages_received", s.messages_received);
  count("heartbeats", s.heartbeats);
  count("set_statements", a.set_statements);
  count("set_rows", a.set_rows);
  count("apply_workers", a.apply_workers);
  count("conflict_waits", a.conflict_waits);
  text("last_conflict_wait", a.last_conflict_wait);
  w.Key("apply_lanes");
  w.StartArray();
  for (const auto& l : a.lanes) {
    w.StartObject();
    text("state", l.state);
    count("unconfirmed", l.unconfirmed);
    text("group_end_lsn", l.group_end_lsn != 0 ? format_lsn(l.group_end_lsn) : "");
    w.EndObject();
  }
  w.EndArray();
  count("parallel_retries", s.parallel_retries);
  count("schema_changes", a.schema_changes);
  text("last_schema_change", a.last_schema_change);
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
                static_cast<unsigned long long>(s.apply.transactions));
  return buf;
}

}  // namespace dts::follow
