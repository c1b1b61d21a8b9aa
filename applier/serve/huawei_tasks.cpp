#include "serve/huawei_tasks.hpp"

#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.hpp"
#include "common/parse.hpp"
#include "pg/connection.hpp"
#include "serve/job_manager.hpp"

namespace dts::serve {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

constexpr const char* kProject = R"(/v2/([A-Za-z0-9_-]{1,64}))";

// The manual's statuses: MIGRATING while it prepares, FULLMIGRATING during the copy,
// INCRMIGRATING while changes stream, SUCCESS once cut over (or a full copy done), TERMINATING /
// TERMINATED when stopped, FAILED; CREATED for a task whose instances are not given yet.
const char* task_status(const Job& j) {
  if (j.settings.draft) return "CREATED";
  switch (j.status) {
    case JobStatus::kPending:
    case JobStatus::kScheduled:
    case JobStatus::kPreparing: return "MIGRATING";
    case JobStatus::kMigrateHistoryData: return "FULLMIGRATING";
    case JobStatus::kSynchronizeRealtimeData: return "INCRMIGRATING";
    case JobStatus::kStopping: return "TERMINATING";
    case JobStatus::kStopped: return "TERMINATED";
    case JobStatus::kCompleted: return "SUCCESS";
    case JobStatus::kFailed: return "FAILED";
  }
  return "FAILED";
}

void reply_json(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body + "\n", "application/json");
}

// {id, name, status, error}: what configure, create and stop answer.
std::string task_brief(const Job& j) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  key_string(w, "id", std::to_string(j.id));
  key_string(w, "name", j.settings.name);
  key_string(w, "status", task_status(j));
  key_string(w, "error", j.error);
  w.EndObject();
  return buf.GetString();
}

// host:port,host:port of a conninfo, for showing an instance (never its password).
std::string addrs_of(const std::string& conninfo) {
  std::string hosts = pg::conninfo_option(conninfo, "host");
  if (hosts.empty()) hosts = pg::conninfo_option(conninfo, "hostaddr");
  std::string ports = pg::conninfo_option(conninfo, "port");
  std::vector<std::string> h, p;
  for (std::stringstream s(hosts); s.good();) h.emplace_back(), std::getline(s, h.back(), ',');
  for (std::stringstream s(ports); s.good();) p.emplace_back(), std::getline(s, p.back(), ',');
  std::string out;
  for (size_t i = 0; i < h.size(); ++i) {
    std::string port = i < p.size() ? p[i] : (p.size() == 1 ? p[0] : "");
    out += (i > 0 ? "," : "") + h[i] + ":" + (port.empty() ? "5432" : port);
  }
  return out;
}

void write_instance(Writer& w, const char* key, const std::string& conninfo, const std::string& connection) {
  w.Key(key);
  w.StartObject();
  w.Key("id");
  if (connection.empty()) w.Null();
  else w.String(connection.c_str());
  key_string(w, "addrs", addrs_of(conninfo));
  w.EndObject();
}

std::string task_detail(const Job& j) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  key_string(w, "task_id", std::to_string(j.id));
  key_string(w, "task_name", j.settings.name);
  key_string(w, "description", j.settings.description);
  key_string(w, "status", task_status(j));
  key_string(w, "migration_type", "online_migration");
  key_string(w, "migration_method", j.settings.incremental ? "incremental_migration" : "full_amount_migration");
  key_string(w, "resume_mode", j.settings.resume_auto ? "auto" : "manual");
  key_string(w, "bandwidth_limit_mb", j.settings.bandwidth_limit_mb_per_s > 0
                                          ? std::to_string(static_cast<int64_t>(j.settings.bandwidth_limit_mb_per_s))
                                          : "");
  if (!j.settings.draft) {
    write_instance(w, "source_instance", j.settings.source, j.settings.source_connection);
    write_instance(w, "target_instance", j.settings.target, j.settings.target_connection);
  }
  key_string(w, "created_at", format_iso8601(j.created_at));
  key_string(w, "updated_at", format_iso8601(j.updated_at));
  key_string(w, "error", j.error);
  w.EndObject();
  return buf.GetString();
}

// The manual's fields of a task body, read into job settings; false after answering 400.
class TaskBody {
 public:
  TaskBody(const rapidjson::Value& body, httplib::Response& res, const Connections& connections)
      : body_(body), res_(res), connections_(connections) {}

  bool read_configuration(JobSettings& s) {
    std::string method, resume;
    if (!text("migration_method", method, true) || !text("resume_mode", resume, true)) return false;
    if (method != "full_amount_migration" && method != "incremental_migration")
      return bad("migration_method", "must be full_amount_migration or incremental_migration");
    if (resume != "auto" && resume != "manual") return bad("resume_mode", "must be auto or manual");
    s.incremental = method == "incremental_migration";
    s.resume_auto = resume == "auto";
    if (!bandwidth(s)) return false;
    return instance("source_instance", s.source, s.source_connection) &&
           instance("target_instance", s.target, s.target_connection);
  }

  bool text(const char* key, std::string& out, bool required, size_t max = 1024) {
    auto it = body_.FindMember(key);
    if (it == body_.MemberEnd() || it->value.IsNull()) return !required || bad(key, "is required");
    if (!it->value.IsString()) return bad(key, "must be a string");
    if (it->value.GetStringLength() == 0 && required) return bad(key, "must not be empty");
    if (it->value.GetStringLength() > max) return bad(key, "must be at most " + std::to_string(max) + " characters");
    out.assign(it->value.GetString(), it->value.GetStringLength());
    if (out.find('\0') != std::string::npos) return bad(key, "must not contain NUL characters");
    return true;
  }

  bool bad(const std::string& field, const std::string& what) {
    huawei_error(res_, 400, "DTS.4001", "field \"" + field + "\" " + what);
    return false;
  }

 private:
  // A string or a number, an integer from 1 to 10240 (MB/s).
  bool bandwidth(JobSettings& s) {
    auto it = body_.FindMember("bandwidth_limit_mb");
    if (it == body_.MemberEnd() || it->value.IsNull()) return true;
    int64_t v = 0;
    if (it->value.IsInt64()) {
      v = it->value.GetInt64();
    } else if (it->value.IsString() && it->value.GetStringLength() > 0 && it->value.GetStringLength() <= 6 &&
               std::string(it->value.GetString()).find_first_not_of("0123456789") == std::string::npos) {
      v = std::stoll(it->value.GetString());
    } else {
      return bad("bandwidth_limit_mb", "must be an integer from 1 to 10240 (MB/s), as a number or a string");
    }
    if (v < 1 || v > 10240) return bad("bandwidth_limit_mb", "must be from 1 to 10240 (MB/s)");
    s.bandwidth_limit_mb_per_s = static_cast<double>(v);
    return true;
  }

  // {id, addrs, password} (plus user and database, PostgreSQL's): `id` names a connection
  // registered with serve, `addrs` lists host:port pairs; one of the two.
  bool instance(const char* key, std::string& conninfo, std::string& connection) {
    auto it = body_.FindMember(key);
    if (it == body_.MemberEnd() || !it->value.IsObject()) return bad(key, "is required: {id, addrs, password}");
    const rapidjson::Value& v = it->value;
    std::string field = key;
    for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
      std::string k = m->name.GetString();
      if (k != "id" && k != "addrs" && k != "password" && k != "user" && k != "database")
        return bad(field + "." + k.substr(0, 64), "is not a field of an instance (id, addrs, password, user, database)");
      if (!m->value.IsNull() && (!m->value.IsString() || m->value.GetStringLength() > 4096))
        return bad(field + "." + k, "must be a string of at most 4096 characters");
    }
    auto get = [&](const char* k) {
      auto m = v.FindMember(k);
      return m != v.MemberEnd() && m->value.IsString() ? std::string(m->value.GetString(), m->value.GetStringLength())
                                                       : std::string();
    };
    std::string id = get("id"), addrs = get("addrs"), password = get("password");
    std::string user = get("user"), database = get("database");
    if (id.empty() == addrs.empty())
      return bad(field, "needs either \"id\" (a connection registered with serve) or \"addrs\" (host:port,...), not " +
                            std::string(id.empty() ? "neither" : "both"));
    if (!id.empty()) {
      auto found = connections_.find(id);
      if (found == connections_.end())
        return bad(field + ".id", "names no connection registered with serve (serve --connections FILE)");
      conninfo = found->second;
      connection = id;
      if (!password.empty()) pg::append_conninfo_option(conninfo, "password", password);
      return true;
    }
    std::string error;
    auto c = conninfo_from_addrs(addrs, user.empty() ? "postgres" : user, database.empty() ? "postgres" : database,
                                 password, error);
    if (!c) return bad(field + ".addrs", error);
    conninfo = *c;
    return true;
  }

  const rapidjson::Value& body_;
  httplib::Response& res_;
  const Connections& connections_;
};

bool parse_object(const httplib::Request& req, httplib::Response& res, rapidjson::Document& d) {
  d.Parse(req.body.c_str(), req.body.size());
  if (d.HasParseError() || !d.IsObject()) {
    huawei_error(res, 400, "DTS.4000", "the body must be a JSON object");
    return false;
  }
  return true;
}

// The task of the path, if it is one of the project's; false after answering 404.
bool find_task(JobManager& jobs, const std::string& project, const std::string& id_text, httplib::Response& res,
               Job& out) {
  std::optional<Job> job;
  if (!id_text.empty() && id_text.size() <= 15 && id_text.find_first_not_of("0123456789") == std::string::npos)
    job = jobs.get(parse_int64(id_text, "the task id in the path", ErrorKind::kConfig));
  if (!job || job->settings.project != project) {
    huawei_error(res, 404, "DTS.4040", "no task " + id_text.substr(0, 20) + " in project " + project);
    return false;
  }
  out = *job;
  return true;
}

void answer_action(httplib::Response& res, JobManager& jobs, const ActionResult& r, int64_t id) {
  if (r.failed()) {
    int status = r.http_status == 409 ? 400 : r.http_status;  // the manual has no 409
    return huawei_error(res, status, "DTS." + std::to_string(r.error_code / 10), r.message);
  }
  auto job = jobs.get(id);
  if (!job) return reply_json(res, 200, "{}");
  reply_json(res, 200, task_brief(*job));
}

void add_create_routes(httplib::Server& svr, JobManager& jobs, const Connections& connections) {
  // A task with its name only: configured later.
  svr.Post(std::string(kProject) + "/migration/instance", [&](const httplib::Request& req, httplib::Response& res) {
    rapidjson::Document d;
    if (!parse_object(req, res, d)) return;
    TaskBody body(d, res, connections);
    JobSettings s;
    s.project = req.matches[1];
    s.draft = true;
    s.start = false;
    if (!body.text("task_name", s.name, true, 64) || !body.text("description", s.description, false)) return;
    Job created;
    ActionResult r = jobs.create(std::move(s), created);
    answer_action(res, jobs, r, created.id);
  });
  svr.Post(std::string(kProject) + R"(/migration/([^/]{1,64})/task)",
           [&](const httplib::Request& req, httplib::Response& res) {
             Job job;
             if (!find_task(jobs, req.matches[1], req.matches[2], res, job)) return;
             rapidjson::Document d;
             if (!parse_object(req, res, d)) return;
             TaskBody body(d, res, connections);
             JobSettings s;
             if (!body.read_configuration(s)) return;
             answer_action(res, jobs, jobs.configure(job.id, std::move(s)), job.id);
           });
  // Everything at once: created and started.
  svr.Post(std::string(kProject) + "/migration-task", [&](const httplib::Request& req, httplib::Response& res) {
    rapidjson::Document d;
    if (!parse_object(req, res, d)) return;
    TaskBody body(d, res, connections);
    JobSettings s;
    s.project = req.matches[1];
    std::string type;
    if (!body.text("task_name", s.name, true, 64) || !body.text("description", s.description, false) ||
        !body.text("migration_type", type, false))
      return;
    if (!type.empty() && type != "online_migration")
      return (void)body.bad("migration_type", "must be online_migration (dts migrates a live database, not a backup file)");
    if (!body.read_configuration(s)) return;
    Job created;
    ActionResult r = jobs.create(std::move(s), created);
    answer_action(res, jobs, r, created.id);
  });
}

void add_task_routes(httplib::Server& svr, JobManager& jobs) {
  svr.Get(std::string(kProject) + R"(/migration-task/([^/]{1,64}))", [&](const httplib::Request& req, httplib::Response& res) {
    Job job;
    if (find_task(jobs, req.matches[1], req.matches[2], res, job)) reply_json(res, 200, task_detail(job));
  });
  svr.Get(std::string(kProject) + "/migration-tasks", [&](const httplib::Request& req, httplib::Response& res) {
    auto number = [&](const char* key, int64_t dflt, int64_t lo, int64_t hi, int64_t& out) {
      out = dflt;
      if (!req.has_param(key)) return true;
      std::string v = req.get_param_value(key);
      if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos ||
          std::stoll(v) < lo || std::stoll(v) > hi) {
        huawei_error(res, 400, "DTS.4001", "parameter \"" + std::string(key) + "\" must be an integer from " +
                                              std::to_string(lo) + " to " + std::to_string(hi));
        return false;
      }
      out = std::stoll(v);
      return true;
    };
    int64_t offset = 0, limit = 10;
    if (!number("offset", 0, 0, 1000000, offset) || !number("limit", 10, 1, 1000, limit)) return;
    std::string name = req.has_param("name") ? req.get_param_value("name") : "";
    std::string project = req.matches[1];
    std::vector<Job> mine;
    for (auto& j : jobs.list())
      if (j.settings.project == project && (name.empty() || j.settings.name.find(name) != std::string::npos))
        mine.push_back(std::move(j));
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    w.Key("count");
    w.Int64(static_cast<int64_t>(mine.size()));
    w.Key("migration_tasks");
    w.StartArray();
    for (size_t i = static_cast<size_t>(offset); i < mine.size() && i < static_cast<size_t>(offset + limit); ++i) {
      std::string one = task_detail(mine[i]);
      w.RawValue(one.c_str(), one.size(), rapidjson::kObjectType);
    }
    w.EndArray();
    w.EndObject();
    reply_json(res, 200, buf.GetString());
  });
  svr.Post(std::string(kProject) + R"(/migration-task/([^/]{1,64})/stop)", [&](const httplib::Request& req, httplib::Response& res) {
    Job job;
    if (find_task(jobs, req.matches[1], req.matches[2], res, job)) answer_action(res, jobs, jobs.stop(job.id), job.id);
  });
  svr.Delete(std::string(kProject) + R"(/migration-task/([^/]{1,64}))", [&](const httplib::Request& req, httplib::Response& res) {
    Job job;
    if (!find_task(jobs, req.matches[1], req.matches[2], res, job)) return;
    ActionResult r = jobs.remove(job.id);
    if (r.failed()) return answer_action(res, jobs, r, job.id);
    reply_json(res, 200, "{\"task_id\":\"" + std::to_string(job.id) + "\",\"result\":\"success\"}");
  });
  // The manual's batch form: {"task_id_list": ["1", "2"]}, each answered on its own.
  svr.Delete(std::string(kProject) + "/migration-tasks/delete", [&](const httplib::Request& req, httplib::Response& res) {
    rapidjson::Document d;
    if (!parse_object(req, res, d)) return;
    if (!d.HasMember("task_id_list") || !d["task_id_list"].IsArray() || d["task_id_list"].Empty() ||
        d["task_id_list"].Size() > 100)
      return huawei_error(res, 400, "DTS.4001", "field \"task_id_list\" must be an array of 1 to 100 task ids");
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    w.Key("results");
    w.StartArray();
    for (const auto& v : d["task_id_list"].GetArray()) {
      std::string id = v.IsString() ? v.GetString() : "";
      httplib::Response scratch;
      Job job;
      std::string outcome = "success", why;
      if (!find_task(jobs, req.matches[1], id, scratch, job)) {
        outcome = "failed";
        why = "no such task in this project";
      } else if (ActionResult r = jobs.remove(job.id); r.failed()) {
        outcome = "failed";
        why = r.message;
      }
      w.StartObject();
      key_string(w, "task_id", id.substr(0, 64));
      key_string(w, "result", outcome);
      if (!why.empty()) key_string(w, "error_msg", why);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    reply_json(res, 200, buf.GetString());
  });
}

}  // namespace

Connections load_connections(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    throw Error(ErrorKind::kConfig, "--connections " + path + ": " + std::strerror(errno));
  if ((st.st_mode & 077) != 0)
    throw Error(ErrorKind::kConfig, "--connections " + path + " can be read by other users and holds passwords: chmod 600 " +
                                        path);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  rapidjson::Document d;
  d.Parse(text.str().c_str());
  if (d.HasParseError() || !d.IsObject())
    throw Error(ErrorKind::kConfig, "--connections " + path + " must be a JSON object of name: conninfo");
  Connections out;
  for (auto it = d.MemberBegin(); it != d.MemberEnd(); ++it) {
    std::string name = it->name.GetString();
    if (!it->value.IsString())
      throw Error(ErrorKind::kConfig, "--connections " + path + ": \"" + name.substr(0, 64) + "\" must be a conninfo string");
    std::string password;
    pg::conninfo_without_password(it->value.GetString(), password);  // throws, without the text, if it does not parse
    out[name] = it->value.GetString();
  }
  return out;
}

std::optional<std::string> conninfo_from_addrs(const std::string& addrs, const std::string& user,
                                               const std::string& database, const std::string& password,
                                               std::string& error) {
  std::string hosts, ports;
  std::stringstream list(addrs);
  for (std::string one; std::getline(list, one, ',');) {
    size_t colon = one.rfind(':');
    bool bracketed = !one.empty() && one.front() == '[';
    std::string host = colon == std::string::npos ? "" : one.substr(0, colon);
    std::string port = colon == std::string::npos ? "" : one.substr(colon + 1);
    if (bracketed && host.size() > 2 && host.back() == ']') host = host.substr(1, host.size() - 2);  // [::1]:5432
    bool port_ok = !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos &&
                   std::stoi(port) >= 1 && std::stoi(port) <= 65535;
    if (host.empty() || host.find_first_of(", '\"\\") != std::string::npos || !port_ok) {
      error = "must be host:port pairs separated by commas, e.g. 10.0.0.5:5432,10.0.0.6:5432 (got \"" +
              one.substr(0, 80) + "\")";
      return std::nullopt;
    }
    hosts += (hosts.empty() ? "" : ",") + host;
    ports += (ports.empty() ? "" : ",") + port;
  }
  if (hosts.empty()) {
    error = "must list at least one host:port";
    return std::nullopt;
  }
  std::string c;
  pg::append_conninfo_option(c, "host", hosts);
  pg::append_conninfo_option(c, "port", ports);
  pg::append_conninfo_option(c, "user", user);
  pg::append_conninfo_option(c, "dbname", database);
  // Several addresses are a primary and its standbys: the primary is the source of the changes,
  // and the only target that can take them. ("primary", not "read-write": the cutover makes the
  // source read-only, and its last connections must still find it.)
  pg::append_conninfo_option(c, "target_session_attrs", "primary");
  if (!password.empty()) pg::append_conninfo_option(c, "password", password);
  return c;
}

bool is_huawei_path(const std::string& path) { return path.rfind("/v2/", 0) == 0; }

void huawei_error(httplib::Response& res, int status, const std::string& code, const std::string& message) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  key_string(w, "error_msg", message);
  key_string(w, "error_code", code);
  w.Key("error_ext_msg");
  w.Null();
  w.EndObject();
  reply_json(res, status, buf.GetString());
}

void add_huawei_routes(httplib::Server& svr, JobManager& jobs, const Connections& connections) {
  add_create_routes(svr, jobs, connections);
  add_task_routes(svr, jobs);
}

}  // namespace dts::serve
