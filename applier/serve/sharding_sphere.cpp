#include "serve/sharding_sphere.hpp"

#include <httplib.h>
#include <cstring>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/parse.hpp"
#include "pg/connection.hpp"
#include "serve/http_api.hpp"
#include "serve/job_manager.hpp"

namespace dts::serve {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// A value of `key:` in the YAML text ShardingSphere sends as sourceDatasource (one level is
// enough: jdbcUrl, username and password are plain scalars, maybe quoted).
std::string yaml_scalar(const std::string& yaml, const std::string& key) {
  size_t pos = 0;
  while ((pos = yaml.find(key + ":", pos)) != std::string::npos) {
    bool at_line_start = pos == 0 || yaml[pos - 1] == ' ' || yaml[pos - 1] == '\n';
    pos += key.size() + 1;
    if (!at_line_start) continue;
    size_t end = yaml.find('\n', pos);
    std::string v = yaml.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    while (!v.empty() && v.front() == ' ') v.erase(0, 1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\r')) v.pop_back();
    if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) {
      char q = v.front();
      v = v.substr(1, v.size() - 2);
      if (q == '\'') {  // YAML doubles a single quote inside single quotes
        for (size_t i = v.find("''"); i != std::string::npos; i = v.find("''", i + 1)) v.erase(i, 1);
      }
    }
    return v;
  }
  return "";
}

// ShardingSphere's job states: a job is RUNNING or STOPPED; its task shows the phase.
const char* task_status(JobStatus s) {
  switch (s) {
    case JobStatus::kPending:
    case JobStatus::kScheduled:
    case JobStatus::kPreparing: return "PREPARING";
    case JobStatus::kMigrateHistoryData: return "MIGRATE_HISTORY_DATA";
    case JobStatus::kSynchronizeRealtimeData: return "SYNCHRONIZE_REALTIME_DATA";
    case JobStatus::kStopping: return "STOPPING";
    default: return "STOPPED";
  }
}
const char* job_status(JobStatus s) {
  return s == JobStatus::kStopped || s == JobStatus::kCompleted || s == JobStatus::kFailed ? "STOPPED" : "RUNNING";
}

std::string progress_model(const Job& job) {
  // The job model has it all; reshape it as ShardingSphere's progress.
  rapidjson::StringBuffer full;
  Writer fw(full);
  write_job_model(fw, job);
  rapidjson::Document m;
  m.Parse(full.GetString());
  if (m.HasParseError()) return "null";
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("id");
  w.Int64(job.id);
  w.Key("jobName");
  w.String(job.settings.name.c_str());
  w.Key("status");
  w.String(job_status(job.status));
  w.Key("syncTaskProgress");
  w.StartArray();
  w.StartObject();
  w.Key("id");
  w.String(("task-" + std::to_string(job.id)).c_str());
  w.Key("status");
  w.String(task_status(job.status));
  w.Key("historySyncTaskProgress");
  w.StartArray();
  for (const auto& t : m["historyProgress"]["tables"].GetArray()) {
    for (const auto& c : t["chunkProgress"].GetArray()) {
      w.StartObject();
      w.Key("id");
      w.String(c["id"].GetString());
      w.Key("estimatedRows");
      w.Int64(c["estimatedRows"].GetInt64());
      w.Key("syncedRows");
      w.Int64(c["syncedRows"].GetInt64());
      w.EndObject();
    }
  }
  w.EndArray();
  w.Key("realTimeSyncTaskProgress");
  w.StartObject();
  w.Key("id");
  w.String(("realtime-" + std::to_string(job.id)).c_str());
  w.Key("delayMillisecond");
  w.Int64(m["realtimeProgress"]["delayMillisecond"].GetInt64());
  w.Key("position");
  w.StartObject();
  w.Key("lsn");
  w.String(m["realtimeProgress"]["appliedLsn"].GetString());
  w.EndObject();
  w.EndObject();
  w.EndObject();
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace

std::optional<std::string> conninfo_from_jdbc(const std::string& url, const std::string& user,
                                              const std::string& password, std::string& error) {
  const std::string prefix = "jdbc:postgresql://";
  if (url.rfind(prefix, 0) != 0) {
    error = "the URL must start with jdbc:postgresql:// (got \"" + url.substr(0, 40) + "\")";
    return std::nullopt;
  }
  std::string rest = url.substr(prefix.size());
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  std::string db = slash == std::string::npos ? "" : rest.substr(slash + 1);
  std::string query = db.find('?') == std::string::npos ? "" : db.substr(db.find('?') + 1);
  db = db.substr(0, db.find('?'));
  // The JDBC driver's TLS settings keep their meaning: sslmode=verify-full must not be dropped.
  std::string tls;
  for (size_t start = 0; start <= query.size();) {
    size_t end = query.find('&', start);
    std::string kv = query.substr(start, end == std::string::npos ? std::string::npos : end - start);
    for (const char* key : {"sslmode", "sslrootcert", "sslcert", "sslkey"})
      if (kv.rfind(std::string(key) + "=", 0) == 0)
        pg::append_conninfo_option(tls, key, kv.substr(std::strlen(key) + 1));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  std::string host = hostport, port;
  size_t colon = hostport.rfind(':');
  if (colon != std::string::npos && hostport.find(']') == std::string::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
  }
  if (host.empty() || db.empty()) {
    error = "the URL needs a host and a database: jdbc:postgresql://host:5432/dbname";
    return std::nullopt;
  }
  std::string c;
  pg::append_conninfo_option(c, "host", host);
  pg::append_conninfo_option(c, "dbname", db);
  if (!port.empty()) pg::append_conninfo_option(c, "port", port);
  if (!user.empty()) pg::append_conninfo_option(c, "user", user);
  if (!password.empty()) pg::append_conninfo_option(c, "password", password);
  return tls.empty() ? c : c + " " + tls;
}

void add_sharding_sphere_routes(httplib::Server& svr, JobManager& jobs) {
  svr.Post("/scaling/job/start", [&](const httplib::Request& req, httplib::Response& res) {
    rapidjson::Document d;
    d.Parse(req.body.c_str(), req.body.size());
    if (d.HasParseError() || !d.IsObject()) return reply(res, 400, kErrBadJson, "the body is not a JSON object", "null");
    auto str = [](const rapidjson::Value& o, const char* k) {
      auto it = o.FindMember(k);
      return it != o.MemberEnd() && it->value.IsString() ? std::string(it->value.GetString()) : std::string();
    };
    if (!d.HasMember("ruleConfiguration") || !d["ruleConfiguration"].IsObject())
      return reply(res, 400, kErrInvalidField, "field \"ruleConfiguration\" (an object) is required", "null");
    const auto& rule = d["ruleConfiguration"];
    std::string yaml = str(rule, "sourceDatasource");
    if (yaml.empty())
      return reply(res, 400, kErrInvalidField, "field \"ruleConfiguration.sourceDatasource\" (a string) is required", "null");
    if (!rule.HasMember("destinationDataSources") || !rule["destinationDataSources"].IsObject())
      return reply(res, 400, kErrInvalidField, "field \"ruleConfiguration.destinationDataSources\" (an object) is required",
                      "null");
    const auto& dst = rule["destinationDataSources"];
    std::string error;
    auto source = conninfo_from_jdbc(yaml_scalar(yaml, "jdbcUrl"), yaml_scalar(yaml, "username"),
                                     yaml_scalar(yaml, "password"), error);
    if (!source) return reply(res, 400, kErrInvalidField, "ruleConfiguration.sourceDatasource jdbcUrl: " + error, "null");
    auto target = conninfo_from_jdbc(str(dst, "url"), str(dst, "username"), str(dst, "password"), error);
    if (!target) return reply(res, 400, kErrInvalidField, "ruleConfiguration.destinationDataSources.url: " + error, "null");
    // Through the same validation as POST /api/jobs: what is stored must load again.
    rapidjson::Document body(rapidjson::kObjectType);
    auto& a = body.GetAllocator();
    body.AddMember("source", rapidjson::Value(source->c_str(), a), a);
    body.AddMember("target", rapidjson::Value(target->c_str(), a), a);
    if (!str(dst, "name").empty()) body.AddMember("name", rapidjson::Value(("scaling to " + str(dst, "name")).c_str(), a), a);
    if (d.HasMember("jobConfiguration") && d["jobConfiguration"].IsObject() &&
        d["jobConfiguration"].HasMember("concurrency"))
      body.AddMember("jobs", rapidjson::Value(d["jobConfiguration"]["concurrency"], a), a);
    JobSettings s;
    if (!parse_settings(body, s, error)) {
      for (auto [ours, theirs] : {std::pair<std::string, std::string>{"\"jobs\"", "\"jobConfiguration.concurrency\""},
                                  {"\"name\"", "\"ruleConfiguration.destinationDataSources.name\""}}) {
        auto at = error.find(ours);
        if (at != std::string::npos) error.replace(at, ours.size(), theirs);
      }
      return reply(res, 400, kErrInvalidField, error, "null");
    }
    Job created;
    ActionResult r = jobs.create(std::move(s), created);
    if (r.failed()) return reply(res, r.http_status, r.error_code, r.message, "null");
    reply(res, 200, 0, "", "null");
  });
  svr.Get(R"(/scaling/job/progress/(\d+))", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string& id = req.matches[1];
    auto job = id.size() > 15 ? std::nullopt : jobs.get(parse_int64(id, "the job id in the path", ErrorKind::kConfig));
    if (!job) return reply(res, 404, kErrJobNotFound, "no job " + id, "null");
    reply(res, 200, 0, "", progress_model(*job));
  });
  svr.Get("/scaling/job/list", [&](const httplib::Request&, httplib::Response& res) {
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartArray();
    for (const auto& j : jobs.list()) {
      w.StartObject();
      w.Key("jobId");
      w.Int64(j.id);
      w.Key("jobName");
      w.String(j.settings.name.c_str());
      w.Key("status");
      w.String(job_status(j.status));
      w.EndObject();
    }
    w.EndArray();
    reply(res, 200, 0, "", std::string(buf.GetString(), buf.GetSize()));
  });
  svr.Post("/scaling/job/stop", [&](const httplib::Request& req, httplib::Response& res) {
    rapidjson::Document d;
    d.Parse(req.body.c_str(), req.body.size());
    if (d.HasParseError() || !d.IsObject()) return reply(res, 400, kErrBadJson, "the body is not a JSON object", "null");
    if (!d.HasMember("jobId") || !d["jobId"].IsInt64())
      return reply(res, 400, kErrInvalidField, "field \"jobId\" (an integer) is required", "null");
    ActionResult r = jobs.stop(d["jobId"].GetInt64());
    if (r.failed()) return reply(res, r.http_status, r.error_code, r.message, "null");
    reply(res, 200, 0, "", "null");
  });
}

}  // namespace dts::serve
