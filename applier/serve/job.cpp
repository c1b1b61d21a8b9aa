#include "serve/job.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <set>

#include "check/check.hpp"
#include "common/error.hpp"
#include "core/table_selection.hpp"
#include "pg/connection.hpp"

namespace dts::serve {
namespace {

constexpr const char* kStatusNames[] = {"PENDING",  "SCHEDULED", "PREPARING", "MIGRATE_HISTORY_DATA", "SYNCHRONIZE_REALTIME_DATA",
                                        "STOPPING", "STOPPED",   "COMPLETED", "FAILED"};

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// Readers of a status file written by another process: anything unexpected reads as 0 or "".
double double_of(const rapidjson::Value& v, const char* key) {
  if (!v.IsObject()) return 0;
  auto it = v.FindMember(key);
  double d = it != v.MemberEnd() && it->value.IsNumber() ? it->value.GetDouble() : 0;
  return std::isfinite(d) ? d : 0;
}
int64_t int_of(const rapidjson::Value& v, const char* key) {
  double d = double_of(v, key);
  return d > -9e18 && d < 9e18 ? static_cast<int64_t>(d) : 0;
}
std::string string_of(const rapidjson::Value& v, const char* key) {
  if (!v.IsObject()) return "";
  auto it = v.FindMember(key);
  return it != v.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}
const rapidjson::Value* array_of(const rapidjson::Value& v, const char* key) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(key);
  return it != v.MemberEnd() && it->value.IsArray() ? &it->value : nullptr;
}

}  // namespace

void key_string(Writer& w, const char* key, const std::string& value) {
  w.Key(key);
  w.String(value.c_str(), static_cast<rapidjson::SizeType>(value.size()));
}

void key_time(Writer& w, const char* key, int64_t t) {
  w.Key(key);
  if (t == 0) w.Null();
  else w.String(format_iso8601(t).c_str());
}

const char* status_name(JobStatus s) { return kStatusNames[static_cast<int>(s)]; }

std::optional<JobStatus> parse_status(const std::string& name) {
  for (size_t i = 0; i < sizeof(kStatusNames) / sizeof(kStatusNames[0]); ++i)
    if (name == kStatusNames[i]) return static_cast<JobStatus>(i);
  return std::nullopt;
}

bool is_running(JobStatus s) {
  return s == JobStatus::kPreparing || s == JobStatus::kMigrateHistoryData || s == JobStatus::kSynchronizeRealtimeData ||
         s == JobStatus::kStopping;
}

std::optional<int64_t> parse_iso8601(const std::string& text) {
  std::tm tm{};
  const char* rest = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) return std::nullopt;
  if (*rest == '.') {  // fractions of a second: ignored
    ++rest;
    while (*rest >= '0' && *rest <= '9') ++rest;
  }
  int64_t offset = 0;
  if (*rest == 'Z') {
    ++rest;
  } else if (*rest == '+' || *rest == '-') {
    // Exactly ±HH:MM.
    if (std::strlen(rest) != 6 || rest[3] != ':') return std::nullopt;
    for (int i : {1, 2, 4, 5})
      if (rest[i] < '0' || rest[i] > '9') return std::nullopt;
    int hh = (rest[1] - '0') * 10 + (rest[2] - '0'), mm = (rest[4] - '0') * 10 + (rest[5] - '0');
    if (hh > 23 || mm > 59) return std::nullopt;
    offset = (hh * 3600 + mm * 60) * (*rest == '+' ? 1 : -1);
    rest += 6;
  } else {
    return std::nullopt;  // a time without its zone is ambiguous
  }
  if (*rest != '\0') return std::nullopt;
  return static_cast<int64_t>(timegm(&tm)) - offset;
}

std::string format_iso8601(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// "databases": an array of names, or "*" for every one; "roles": a boolean.
bool parse_databases(const rapidjson::Value& body, JobSettings& s, std::string& error) {
  auto d = body.FindMember("databases");
  if (d != body.MemberEnd()) {
    if (d->value.IsString() && std::string(d->value.GetString()) == "*") {
      s.all_databases = true;
    } else if (d->value.IsArray() && !d->value.Empty() && d->value.Size() <= 1000) {
      for (const auto& v : d->value.GetArray()) {
        std::string name = v.IsString() ? v.GetString() : "";
        if (name.empty() || name.size() > 63 || name.find(',') != std::string::npos ||
            name.find('\0') != std::string::npos) {
          error = "field \"databases\" must hold database names (1 to 63 characters, no commas)";
          return false;
        }
        s.databases.push_back(name);
      }
    } else {
      error = "field \"databases\" must be an array of database names, or \"*\" for every database of the source";
      return false;
    }
  }
  auto k = body.FindMember("skipChecks");
  if (k != body.MemberEnd()) {
    const auto& names = check::item_names();
    if (!k->value.IsArray() || k->value.Size() > names.size()) {
      error = "field \"skipChecks\" must be an array of check item names";
      return false;
    }
    for (const auto& v : k->value.GetArray()) {
      std::string name = v.IsString() ? v.GetString() : "";
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        error = "field \"skipChecks\" names no check item \"" + name.substr(0, 64) + "\"; the items are those "
                "POST /api/check reports (\"name\")";
        return false;
      }
      s.skip_checks.push_back(name);
    }
  }
  auto r = body.FindMember("roles");
  if (r != body.MemberEnd()) {
    if (!r->value.IsBool()) {
      error = "field \"roles\" must be true or false";
      return false;
    }
    s.roles = r->value.GetBool();
  }
  return true;
}

std::vector<std::string> JobSettings::database_args() const {
  if (all_databases) return {"--all-databases"};
  if (databases.empty()) return {};
  std::string list;
  for (const auto& d : databases) list += (list.empty() ? "" : ",") + d;
  return {"--databases", list};
}

bool parse_settings(const rapidjson::Value& body, JobSettings& s, std::string& error) {
  if (!body.IsObject()) {
    error = "the body must be a JSON object";
    return false;
  }
  static const std::set<std::string> known = {"name", "source", "target", "tables", "exclude", "mode", "jobs",
                                              "splitSizeMB", "bandwidthLimitMBps", "applyWorkers", "resumeMode", "startTime",
                                              "start", "databases", "roles", "skipChecks", "project", "description",
                                              "sourceConnection", "targetConnection", "draft"};
  for (auto it = body.MemberBegin(); it != body.MemberEnd(); ++it) {
    std::string key = it->name.GetString();
    if (known.count(key) == 0) {
      error = "unknown field \"" + key.substr(0, 64) + "\"; the fields are name, source, target, tables, exclude, mode, "
              "jobs, splitSizeMB, bandwidthLimitMBps, applyWorkers, resumeMode, startTime, start, databases, roles, "
              "skipChecks, project, description, sourceConnection, targetConnection, draft";
      return false;
    }
  }
  auto text = [&](const char* key, std::string& out, bool required, size_t max) {
    auto it = body.FindMember(key);
    if (it == body.MemberEnd()) {
      if (required) error = std::string("field \"") + key + "\" is required";
      return !required;
    }
    if (!it->value.IsString()) {
      error = std::string("field \"") + key + "\" must be a string";
      return false;
    }
    if (it->value.GetStringLength() > max || (required && it->value.GetStringLength() == 0)) {
      error = std::string("field \"") + key + "\" must be 1 to " + std::to_string(max) + " characters long";
      return false;
    }
    out = it->value.GetString();
    if (out.find('\0') != std::string::npos) {
      error = std::string("field \"") + key + "\" must not contain NUL characters";
      return false;
    }
    return true;
  };
  auto number = [&](const char* key, double lo, double hi, bool integer, double& out) {
    auto it = body.FindMember(key);
    if (it == body.MemberEnd()) return true;
    if (!it->value.IsNumber() || (integer && !(it->value.IsInt64() || it->value.IsUint64())) ||
        it->value.GetDouble() < lo || it->value.GetDouble() > hi || std::isnan(it->value.GetDouble())) {
      char buf[160];
      std::snprintf(buf, sizeof(buf), "field \"%s\" must be %s from %g to %g", key, integer ? "an integer" : "a number",
                    lo, hi);
      error = buf;
      return false;
    }
    out = it->value.GetDouble();
    return true;
  };
  auto draft = body.FindMember("draft");
  if (draft != body.MemberEnd()) {
    if (!draft->value.IsBool()) {
      error = "field \"draft\" must be true or false";
      return false;
    }
    s.draft = draft->value.GetBool();
  }
  std::string mode = "incremental", resume = "auto", start_time;
  double jobs = s.jobs, split = static_cast<double>(s.split_size_mb), bw = s.bandwidth_limit_mb_per_s;
  double workers = s.apply_workers;
  if (!text("project", s.project, false, 64) || !text("description", s.description, false, 1024) ||
      !text("sourceConnection", s.source_connection, false, 64) ||
      !text("targetConnection", s.target_connection, false, 64))
    return false;
  if (s.project.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != std::string::npos) {
    error = "field \"project\" must be letters, digits, - and _";
    return false;
  }
  // A draft (a task created before its instances are given) has no conninfos yet.
  if (!text("name", s.name, false, 200) || !text("source", s.source, !s.draft, 4096) ||
      !text("target", s.target, !s.draft, 4096) ||
      !text("tables", s.tables, false, 8192) || !text("exclude", s.exclude, false, 8192) ||
      !text("mode", mode, false, 32) || !text("resumeMode", resume, false, 32) ||
      !text("startTime", start_time, false, 64) || !number("jobs", 1, 64, true, jobs) ||
      !number("splitSizeMB", 1, 1 << 20, true, split) || !number("bandwidthLimitMBps", 0, 1e6, false, bw) ||
      !number("applyWorkers", 0, 16, true, workers))
    return false;
  if (mode != "full" && mode != "incremental") {
    error = "field \"mode\" must be \"full\" or \"incremental\"";
    return false;
  }
  if (resume != "auto" && resume != "manual") {
    error = "field \"resumeMode\" must be \"auto\" or \"manual\"";
    return false;
  }
  if (!start_time.empty()) {
    auto t = parse_iso8601(start_time);
    if (!t) {
      error = "field \"startTime\" must be an ISO 8601 time with its zone, e.g. 2026-11-21T22:00:00Z";
      return false;
    }
    s.start_time = *t;
  }
  if (!parse_databases(body, s, error)) return false;
  auto st = body.FindMember("start");
  if (st != body.MemberEnd()) {
    if (!st->value.IsBool()) {
      error = "field \"start\" must be true or false";
      return false;
    }
    s.start = st->value.GetBool();
  }
  s.incremental = mode == "incremental";
  s.resume_auto = resume == "auto";
  s.jobs = static_cast<int>(jobs);
  s.split_size_mb = static_cast<int64_t>(split);
  s.bandwidth_limit_mb_per_s = bw;
  s.apply_workers = static_cast<int>(workers);
  // Bad patterns and conninfos are refused here rather than when the job runs.
  try {
    core::TableSelection(s.tables, s.exclude, "field \"tables\"", "field \"exclude\"");
  } catch (const Error& e) {
    error = e.what();
    return false;
  }
  for (const auto* c : {&s.source, &s.target}) {
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(c->c_str(), &err);
    if (opts == nullptr) {
      std::string why = err != nullptr ? err : "unparsable";
      PQfreemem(err);
      while (!why.empty() && why.back() == '\n') why.pop_back();
      error = std::string("field \"") + (c == &s.source ? "source" : "target") + "\" is not a libpq conninfo: " + why;
      return false;
    }
    PQconninfoFree(opts);
  }
  return true;
}

std::string settings_json(const JobSettings& s, bool for_display) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  key_string(w, "name", s.name);
  key_string(w, "source", for_display ? pg::redact_conninfo(s.source) : s.source);
  key_string(w, "target", for_display ? pg::redact_conninfo(s.target) : s.target);
  key_string(w, "tables", s.tables);
  key_string(w, "exclude", s.exclude);
  key_string(w, "mode", s.incremental ? "incremental" : "full");
  w.Key("jobs");
  w.Int(s.jobs);
  w.Key("splitSizeMB");
  w.Int64(s.split_size_mb);
  w.Key("bandwidthLimitMBps");
  w.Double(s.bandwidth_limit_mb_per_s);
  w.Key("applyWorkers");
  w.Int(s.apply_workers);
  key_string(w, "resumeMode", s.resume_auto ? "auto" : "manual");
  if (s.start_time != 0) key_string(w, "startTime", format_iso8601(s.start_time));
  if (s.all_databases) {
    key_string(w, "databases", "*");
  } else if (!s.databases.empty()) {
    w.Key("databases");
    w.StartArray();
    for (const auto& d : s.databases) w.String(d.c_str());
    w.EndArray();
  }
  if (s.roles) {
    w.Key("roles");
    w.Bool(true);
  }
  if (!s.skip_checks.empty()) {
    w.Key("skipChecks");
    w.StartArray();
    for (const auto& c : s.skip_checks) w.String(c.c_str());
    w.EndArray();
  }
  for (auto [key, value] : {std::pair{"project", &s.project}, {"description", &s.description},
                             {"sourceConnection", &s.source_connection}, {"targetConnection", &s.target_connection}})
    if (!value->empty()) key_string(w, key, *value);
  if (s.draft) {
    w.Key("draft");
    w.Bool(true);
  }
  if (!for_display) {
    w.Key("start");
    w.Bool(s.start);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

void write_job_history(Writer& w, const Job& job) {
  w.StartArray();
  for (size_t k = 0; k < job.history.size(); ++k) {
    const Job::Sample& s = job.history[(job.history_next + k) % job.history.size()];
    w.StartObject();
    w.Key("t");
    w.Int64(s.at_ms);
    w.Key("lagMs");
    w.Int64(s.lag_ms);
    w.Key("changesPerSecond");
    w.Double(std::isfinite(s.changes_per_second) ? s.changes_per_second : 0);
    w.Key("rowsCopied");
    w.Int64(s.rows_copied);
    w.EndObject();
  }
  w.EndArray();
}

// A job over several databases: each one's phase, lag and error (its status file's).
void write_databases(Writer& w, const rapidjson::Value* progress) {
  const rapidjson::Value* list = progress != nullptr ? array_of(*progress, "databases") : nullptr;
  if (list == nullptr) return;
  w.Key("databases");
  w.StartArray();
  for (const auto& d : list->GetArray()) {
    if (!d.IsObject()) continue;
    const rapidjson::Value* st = d.HasMember("status") && d["status"].IsObject() ? &d["status"] : nullptr;
    w.StartObject();
    key_string(w, "database", string_of(d, "database"));
    key_string(w, "slot", string_of(d, "slot"));
    key_string(w, "phase", st != nullptr ? string_of(*st, "phase") : "PREPARING");
    w.Key("delayMillisecond");
    w.Int64(st != nullptr ? int_of(*st, "lag_ms") : 0);
    w.Key("lagBytes");
    w.Int64(st != nullptr ? int_of(*st, "lag_bytes") : 0);
    key_string(w, "appliedLsn", st != nullptr ? string_of(*st, "applied_lsn") : "");
    key_string(w, "error", st != nullptr ? string_of(*st, "error") : "");
    w.EndObject();
  }
  w.EndArray();
}

void write_job_model(Writer& w, const Job& job) {
  rapidjson::Document p;
  p.Parse(job.progress.c_str());
  bool has = !p.HasParseError() && p.IsObject();
  w.StartObject();
  w.Key("id");
  w.Int64(job.id);
  key_string(w, "jobName", job.settings.name);
  w.Key("status");
  w.String(status_name(job.status));
  w.Key("queued");
  w.Bool(job.queued);
  w.Key("cancelled");
  w.Bool(job.cancelled);
  w.Key("settings");
  std::string settings = settings_json(job.settings, true);
  w.RawValue(settings.c_str(), settings.size(), rapidjson::kObjectType);
  key_time(w, "createdAt", job.created_at);
  key_time(w, "updatedAt", job.updated_at);
  key_time(w, "scheduledAt", job.settings.start_time);
  key_time(w, "startedAt", job.started_at);

  // History: per table, per chunk (ids as ShardingSphere writes them: history-<table>#<n>).
  w.Key("historyProgress");
  w.StartObject();
  const rapidjson::Value* copy = nullptr;
  if (has && p.HasMember("copy") && p["copy"].IsObject()) copy = &p["copy"];
  int64_t est_total = 0, synced_total = 0;
  w.Key("tables");
  w.StartArray();
  if (const rapidjson::Value* list = copy != nullptr ? array_of(*copy, "tables") : nullptr) {
    for (const auto& t : list->GetArray()) {
      if (!t.IsObject()) continue;
      std::string table = string_of(t, "table");
      int64_t synced = int_of(t, "copied_rows");
      // The estimate is the planner's, 0 before ANALYZE: never show less than what was copied.
      int64_t est = std::max(int_of(t, "estimated_rows"), synced);
      est_total += est;
      synced_total += synced;
      w.StartObject();
      key_string(w, "table", table);
      w.Key("estimatedRows");
      w.Int64(est);
      w.Key("syncedRows");
      w.Int64(synced);
      w.Key("chunks");
      w.Int64(int_of(t, "chunks"));
      w.Key("chunksDone");
      w.Int64(int_of(t, "chunks_done"));
      w.Key("chunkProgress");
      w.StartArray();
      if (const rapidjson::Value* chunks = array_of(t, "chunk_progress")) {
        int n = 0;
        for (const auto& c : chunks->GetArray()) {
          if (!c.IsObject()) continue;
          int64_t cs = int_of(c, "copied_rows");
          w.StartObject();
          key_string(w, "id", "history-" + table + "#" + std::to_string(n++));
          key_string(w, "range", string_of(c, "range"));  // of the key, or "all"
          w.Key("estimatedRows");
          w.Int64(std::max(int_of(c, "estimated_rows"), cs));
          w.Key("syncedRows");
          w.Int64(cs);
          w.Key("done");
          w.Bool(c.HasMember("done") && c["done"].IsBool() && c["done"].GetBool());
          w.Key("redone");  // copied again after a restart
          w.Bool(c.HasMember("redone") && c["redone"].IsBool() && c["redone"].GetBool());
          w.EndObject();
        }
      }
      w.EndArray();
      w.EndObject();
    }
  }
  w.EndArray();
  w.Key("estimatedRows");
  w.Int64(est_total);
  w.Key("syncedRows");
  w.Int64(synced_total);
  w.Key("bytesCopied");
  w.Int64(copy != nullptr ? int_of(*copy, "bytes_copied") : 0);
  w.Key("seconds");
  w.Double(copy != nullptr ? double_of(*copy, "seconds") : 0);
  w.Key("chunksRedone");
  w.Int64(copy != nullptr ? int_of(*copy, "chunks_redone") : 0);
  w.Key("longestSnapshotSeconds");  // the longest a snapshot was held on the source during the copy
  w.Double(copy != nullptr ? double_of(*copy, "longest_snapshot_seconds") : 0);
  w.EndObject();

  write_databases(w, has ? &p : nullptr);
  w.Key("realtimeProgress");
  w.StartObject();
  w.Key("delayMillisecond");
  w.Int64(has ? int_of(p, "lag_ms") : 0);
  w.Key("lagBytes");
  w.Int64(has ? int_of(p, "lag_bytes") : 0);
  for (auto [key, field] : {std::pair{"receivedLsn", "received_lsn"}, {"appliedLsn", "applied_lsn"},
                            {"flushedLsn", "flushed_lsn"}, {"serverWalEnd", "server_wal_end"}})
    key_string(w, key, has ? string_of(p, field) : "");
  w.Key("transactionsApplied");
  w.Int64(has ? int_of(p, "transactions_applied") : 0);
  w.Key("changesApplied");
  w.Int64(has ? int_of(p, "changes_applied") : 0);
  w.Key("reconnects");
  w.Int64(has ? int_of(p, "reconnects") : 0);
  // Parallel apply: target sessions at work, groups that waited for an earlier one sharing rows,
  // refusals applied again on one session.
  w.Key("applyWorkers");
  w.Int64(has ? int_of(p, "apply_workers") : 0);
  w.Key("conflictWaits");
  w.Int64(has ? int_of(p, "conflict_waits") : 0);
  w.Key("parallelRetries");
  w.Int64(has ? int_of(p, "parallel_retries") : 0);
  key_string(w, "lastConflictWait", has ? string_of(p, "last_conflict_wait") : "");
  w.Key("applyLanes");  // each worker: state (idle, building, applying, committing), unconfirmed, groupEndLsn
  w.StartArray();
  if (const rapidjson::Value* lanes = has ? array_of(p, "apply_lanes") : nullptr) {
    for (const auto& l : lanes->GetArray()) {
      w.StartObject();
      key_string(w, "state", string_of(l, "state"));
      w.Key("unconfirmed");
      w.Int64(int_of(l, "unconfirmed"));
      key_string(w, "groupEndLsn", string_of(l, "group_end_lsn"));
      w.EndObject();
    }
  }
  w.EndArray();
  // Schema changes replayed: how many, and the last one.
  w.Key("schemaChanges");
  w.Int64(has ? int_of(p, "schema_changes") : 0);
  key_string(w, "lastSchemaChange", has ? string_of(p, "last_schema_change") : "");
  w.EndObject();

  w.Key("rates");
  w.StartObject();
  w.Key("changesPerSecond");
  w.Double(has ? double_of(p, "changes_per_second") : 0);
  double secs = copy != nullptr ? double_of(*copy, "seconds") : 0;
  w.Key("copyRowsPerSecond");
  double rate = secs > 0 ? static_cast<double>(synced_total) / secs : 0;
  w.Double(std::isfinite(rate) ? rate : 0);
  w.EndObject();

  // The statuses it went through, with their times (since serve started).
  w.Key("timeline");
  w.StartArray();
  for (const auto& p : job.timeline) {
    w.StartObject();
    key_string(w, "status", status_name(p.status));
    key_time(w, "at", p.at);
    w.EndObject();
  }
  w.EndArray();
  w.Key("error");
  if (job.error.empty()) {
    w.Null();
  } else {
    w.StartObject();
    key_string(w, "message", job.error);
    key_time(w, "at", job.error_at);
    w.EndObject();
  }
  w.Key("resync");
  if (job.resync.status.empty()) {
    w.Null();
  } else {
    w.StartObject();
    key_string(w, "status", job.resync.status);
    key_time(w, "at", job.resync.at);
    key_string(w, "result", job.resync.report);
    w.EndObject();
  }
  w.Key("verify");
  if (job.verify.status.empty()) {
    w.Null();
  } else {
    w.StartObject();
    key_string(w, "status", job.verify.status);
    key_time(w, "at", job.verify.at);
    w.Key("result");
    rapidjson::Document v;
    v.Parse(job.verify.report.c_str());
    if (!v.HasParseError() && v.IsObject()) w.RawValue(job.verify.report.c_str(), job.verify.report.size(), rapidjson::kObjectType);
    else w.Null();
    w.EndObject();
  }
  w.EndObject();
}

}  // namespace dts::serve
