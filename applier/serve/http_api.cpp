#include "serve/http_api.hpp"

#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <strings.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <thread>

#include "check/check.hpp"
#include "common/error.hpp"
#include "common/parse.hpp"
#include "core/table_selection.hpp"
#include "serve/check_runs.hpp"
#include "serve/huawei_tasks.hpp"
#include "serve/job_manager.hpp"
#include "serve/sharding_sphere.hpp"
#include "serve/token.hpp"
#include "status_page.hpp"

namespace dts::serve {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void reply_result(httplib::Response& res, const ActionResult& r, const std::string& model = "null") {
  if (r.failed()) reply(res, r.http_status, r.error_code, r.message);
  else reply(res, 200, 0, "", model);
}

std::string job_json(const Job& job) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  write_job_model(w, job);
  return std::string(buf.GetString(), buf.GetSize());
}

// Parses a JSON body; false after replying 400 with the parser's reason and offset.
bool parse_body(const httplib::Request& req, httplib::Response& res, rapidjson::Document& doc, bool allow_empty) {
  if (req.body.empty() && allow_empty) {
    doc.SetObject();
    return true;
  }
  doc.Parse(req.body.c_str(), req.body.size());
  if (doc.HasParseError()) {
    reply(res, 400, kErrBadJson,
          std::string("the body is not valid JSON: ") + rapidjson::GetParseError_En(doc.GetParseError()) + " at offset " +
              std::to_string(doc.GetErrorOffset()));
    return false;
  }
  if (!doc.IsObject()) {
    reply(res, 400, kErrBadJson, "the body must be a JSON object");
    return false;
  }
  return true;
}

int64_t id_of(const httplib::Request& req) {
  const std::string& s = req.matches[1];
  if (s.size() > 15) return -1;  // no such job, and no overflow
  return parse_int64(s, "the job id in the path", ErrorKind::kConfig);
}

// The token of an `Authorization: Bearer <token>` header (the scheme in any case, RFC 6750);
// empty if the header is missing or another scheme. The Huawei-style routes also take it as
// their clients send a token: `X-Auth-Token`.
std::string bearer_token(const httplib::Request& req) {
  if (is_huawei_path(req.path) && req.has_header("X-Auth-Token")) return req.get_header_value("X-Auth-Token");
  std::string auth = req.get_header_value("Authorization");
  if (auth.size() < 7 || strncasecmp(auth.c_str(), "Bearer ", 7) != 0) return "";
  size_t start = auth.find_first_not_of(' ', 7);
  return start == std::string::npos ? "" : auth.substr(start);
}

// 401 in the envelope of the route's family: JSON for the API, metrics and ShardingSphere routes
// (and for any non-browser client of /); the sign-in page for a browser that opens /, which then
// fetches the status page with the token.
httplib::Server::HandlerResponse refuse(const httplib::Request& req, httplib::Response& res) {
  res.set_header("WWW-Authenticate", "Bearer realm=\"dts\"");
  bool page = req.method == "GET" && req.path == "/";
  if (page && req.get_header_value("Accept").find("text/html") != std::string::npos) {
    res.status = 401;
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Content-Security-Policy", "frame-ancestors 'none'");
    res.set_header("Cache-Control", "no-store");
    res.set_content(kSignInPage, "text/html; charset=utf-8");
    return httplib::Server::HandlerResponse::Handled;
  }
  bool has_header = !req.get_header_value("Authorization").empty() || req.has_header("X-Auth-Token");
  if (is_huawei_path(req.path)) {
    huawei_error(res, 401, "DTS.4010",
                 "this server needs its API token: send X-Auth-Token: <token> (or Authorization: Bearer <token>), the "
                 "token serve wrote to api-token in its work directory or the one in its --token-file");
    return httplib::Server::HandlerResponse::Handled;
  }
  reply(res, 401, kErrUnauthorized,
        has_header ? "the token is not valid (send Authorization: Bearer <token>, the token serve wrote to api-token "
                     "in its work directory or the one in its --token-file)"
                   : "this server needs its API token: send Authorization: Bearer <token>, the token serve wrote to "
                     "api-token in its work directory (default ~/.dts-serve) or the one in its --token-file");
  return httplib::Server::HandlerResponse::Handled;
}

std::string label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string metrics_text(JobManager& jobs) {
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  std::vector<Job> all = jobs.list();
  struct Row {
    std::string labels;
    rapidjson::Document progress;
    const Job* job;
  };
  std::vector<Row> rows;
  for (const auto& j : all) {
    Row r;
    r.labels = "job=\"" + std::to_string(j.id) + "\",name=\"" + label(j.settings.name) + "\"";
    r.progress.Parse(j.progress.c_str());
    if (r.progress.HasParseError() || !r.progress.IsObject()) r.progress.SetObject();
    r.job = &j;
    rows.push_back(std::move(r));
  }
  auto num = [](const rapidjson::Value& v, const char* k) {
    auto it = v.FindMember(k);
    return it != v.MemberEnd() && it->value.IsNumber() ? it->value.GetDouble() : 0.0;
  };
  auto emit = [&](const char* name, const char* type, const char* help, auto value) {
    family(name, type, help);
    for (const auto& r : rows) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.17g", static_cast<double>(value(r)));
      out += std::string(name) + "{" + r.labels + "} " + buf + "\n";
    }
  };
  emit("dts_job_lag_milliseconds", "gauge", "Age of the last applied source commit while behind (0 when caught up).",
       [&](const Row& r) { return num(r.progress, "lag_ms"); });
  emit("dts_job_lag_bytes", "gauge", "Source WAL not yet applied.", [&](const Row& r) { return num(r.progress, "lag_bytes"); });
  emit("dts_job_changes_per_second", "gauge", "Rows applied per second, last interval.",
       [&](const Row& r) { return num(r.progress, "changes_per_second"); });
  emit("dts_job_changes_applied_total", "counter", "Rows applied since the applier started.",
       [&](const Row& r) { return num(r.progress, "changes_applied"); });
  emit("dts_job_apply_workers", "gauge", "Target sessions applying changes at once.",
       [&](const Row& r) { return num(r.progress, "apply_workers"); });
  emit("dts_job_conflict_waits_total", "counter",
       "Groups that waited for an earlier group in flight touching the same rows (parallel apply).",
       [&](const Row& r) { return num(r.progress, "conflict_waits"); });
  emit("dts_job_rows_copied_total", "counter", "Rows copied by the snapshot copy.", [&](const Row& r) {
    auto it = r.progress.FindMember("copy");
    return it != r.progress.MemberEnd() && it->value.IsObject() ? num(it->value, "rows_copied") : 0.0;
  });
  emit("dts_job_errors_total", "counter", "Errors the job reported since serve started.",
       [&](const Row& r) { return static_cast<double>(jobs.errors_seen(r.job->id)); });
  family("dts_job_status", "gauge", "1 for the job's current status.");
  for (const auto& r : rows)
    out += "dts_job_status{" + r.labels + ",status=\"" + status_name(r.job->status) + "\"} 1\n";
  return out;
}

// What every request passes before its route: the token, the origin; and the envelope of
// errors that no route answered. `token` must outlive the server.
// HTTP, or HTTPS with the certificate and key given (OpenSSL through cpp-httplib, which Debian
// builds with it). Null, with the reason logged, when the files cannot be used.
std::unique_ptr<httplib::Server> make_server(const ServeOptions& o) {
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    spdlog::error("--tls-cert and --tls-key go together: give both (PEM files), or neither for plain HTTP");
    return nullptr;
  }
  if (o.tls_cert.empty()) return std::make_unique<httplib::Server>();
  for (const auto* f : {&o.tls_cert, &o.tls_key}) {
    if (access(f->c_str(), R_OK) != 0) {
      spdlog::error("{} {}: cannot be read ({})", f == &o.tls_cert ? "--tls-cert" : "--tls-key", *f, std::strerror(errno));
      return nullptr;
    }
  }
  auto svr = std::make_unique<httplib::SSLServer>(o.tls_cert.c_str(), o.tls_key.c_str());
  if (!svr->is_valid()) {
    spdlog::error("--tls-cert {} / --tls-key {}: not a PEM certificate and its private key (or they do not match)",
                  o.tls_cert, o.tls_key);
    return nullptr;
  }
  return svr;
}

void add_guards(httplib::Server& svr, const std::string& token) {
  svr.set_pre_routing_handler([&token](const httplib::Request& req, httplib::Response& res) {
    // Only the liveness probe is open: everything else, the status page too, needs the token.
    if (req.path == "/health" && (req.method == "GET" || req.method == "HEAD"))
      return httplib::Server::HandlerResponse::Unhandled;
    if (!token_matches(bearer_token(req), token)) return refuse(req, res);
    // A browser on another site must not drive the API through the user's own loopback server.
    std::string origin = req.get_header_value("Origin");
    if (req.method != "GET" && !origin.empty()) {
      auto scheme = origin.find("://");
      std::string origin_host = scheme == std::string::npos ? origin : origin.substr(scheme + 3);
      if (origin_host != req.get_header_value("Host")) {
        std::string why = "requests from origin " + origin.substr(0, 200) + " are not allowed";
        if (is_huawei_path(req.path)) huawei_error(res, 403, "DTS.4030", why);
        else reply(res, 403, kErrForbiddenOrigin, why);
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours already
    if (is_huawei_path(req.path)) {
      huawei_error(res, res.status,
                   "DTS." + std::to_string(res.status * 10),
                   res.status == 404 ? "no route " + req.method + " " + req.path.substr(0, 200)
                                     : res.status == 413 ? "the body is larger than 1 MB" : "the request failed");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (res.status == 404) reply(res, 404, kErrNotFound, "no route " + req.method + " " + req.path.substr(0, 200));
    else if (res.status == 413) reply(res, 413, kErrTooLarge, "the body is larger than 1 MB");
    else reply(res, res.status, res.status * 100, "the request failed");
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    spdlog::error("request failed: {}", what);
    if (is_huawei_path(req.path)) huawei_error(res, 500, "DTS.5000", what);
    else reply(res, 500, kErrInternal, what);
  });
}

// {source, target, tables?, exclude?} of a check request; false after answering 400.
bool parse_check_options(const rapidjson::Document& doc, check::CheckOptions& o, httplib::Response& res) {
  for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
    std::string k = it->name.GetString();
    std::string* dst = k == "source" ? &o.source : k == "target" ? &o.target : k == "tables" ? &o.tables
                                                 : k == "exclude" ? &o.exclude : nullptr;
    if (dst == nullptr) {
      reply(res, 400, kErrUnknownField, "unknown field \"" + k.substr(0, 64) + "\"; the fields are source, target, tables, exclude");
      return false;
    }
    if (!it->value.IsString() || it->value.GetStringLength() > 8192) {
      reply(res, 400, kErrInvalidField, "field \"" + k + "\" must be a string of at most 8192 characters");
      return false;
    }
    *dst = it->value.GetString();
  }
  if (o.source.empty() || o.target.empty()) {
    reply(res, 400, kErrInvalidField, std::string("field \"") + (o.source.empty() ? "source" : "target") + "\" is required");
    return false;
  }
  return true;
}

void start_check(httplib::Response& res, CheckRuns& checks, const check::CheckOptions& o, int64_t job_id) {
  auto id = checks.start(o, job_id);
  if (!id)
    return reply(res, 409, kErrInvalidState,
                 std::to_string(CheckRuns::kMaxRunning) + " checks are running already; wait for one to finish");
  reply(res, 202, 0, "", checks.model(*id).value_or("null"));
}

// Checks step by step in the background: POST answers at once (every step notStarted), GET
// shows each step's state while it runs; a job's last check decides whether it may start.
void add_check_routes(httplib::Server& svr, JobManager& jobs, CheckRuns& checks) {
  svr.Post("/api/checks", [&](const httplib::Request& req, httplib::Response& res) {
    rapidjson::Document doc;
    check::CheckOptions o;
    if (!parse_body(req, res, doc, false) || !parse_check_options(doc, o, res)) return;
    start_check(res, checks, o, 0);
  });
  svr.Get(R"(/api/checks/(\d+))", [&](const httplib::Request& req, httplib::Response& res) {
    auto model = checks.model(id_of(req));
    if (!model) return reply(res, 404, kErrNotFound, "no check " + std::string(req.matches[1]) + " (serve keeps the last 32)");
    reply(res, 200, 0, "", *model);
  });
  svr.Post(R"(/api/jobs/(\d+)/check)", [&](const httplib::Request& req, httplib::Response& res) {
    auto job = jobs.get(id_of(req));
    if (!job) return reply(res, 404, kErrJobNotFound, "no job " + std::string(req.matches[1]));
    if (job->settings.draft) return reply(res, 409, kErrInvalidState, "the job has no source and target yet");
    rapidjson::Document doc;
    if (!parse_body(req, res, doc, true)) return;
    if (doc.MemberCount() > 0) return reply(res, 400, kErrUnknownField, "check takes no fields; send an empty body or {}");
    check::CheckOptions o;
    o.source = job->settings.source;
    o.target = job->settings.target;
    o.tables = job->settings.tables;
    o.exclude = job->settings.exclude;
    start_check(res, checks, o, job->id);
  });
  svr.Get(R"(/api/jobs/(\d+)/check)", [&](const httplib::Request& req, httplib::Response& res) {
    int64_t id = id_of(req);
    auto model = checks.model(checks.last_of(id));
    if (!model) return reply(res, 404, kErrNotFound, "job " + std::string(req.matches[1]) + " has no check yet");
    reply(res, 200, 0, "", *model);
  });
}

void add_job_routes(httplib::Server& svr, JobManager& jobs, CheckRuns& checks) {
  svr.Post("/api/jobs", [&](const httplib::Request& req, httplib::Response& res) {
    rapidjson::Document doc;
    if (!parse_body(req, res, doc, false)) return;
    JobSettings s;
    std::string error;
    if (!parse_settings(doc, s, error)) {
      reply(res, 400, error.rfind("unknown field", 0) == 0 ? kErrUnknownField : kErrInvalidField, error);
      return;
    }
    Job created;
    ActionResult r = jobs.create(std::move(s), created);
    if (r.failed()) return reply_result(res, r);
    reply(res, 201, 0, "", job_json(created));
  });
  svr.Get("/api/jobs", [&](const httplib::Request&, httplib::Response& res) {
    std::string model = "[";
    for (const auto& j : jobs.list()) model += (model.size() > 1 ? "," : "") + job_json(j);
    reply(res, 200, 0, "", model + "]");
  });
  svr.Get(R"(/api/jobs/(\d+))", [&](const httplib::Request& req, httplib::Response& res) {
    int64_t id = id_of(req);
    auto job = jobs.get(id);
    if (!job) return reply(res, 404, kErrJobNotFound, "no job " + std::string(req.matches[1]));
    reply(res, 200, 0, "", job_json(*job));
  });
  svr.Get(R"(/api/jobs/(\d+)/history)", [&](const httplib::Request& req, httplib::Response& res) {
    auto job = jobs.get(id_of(req));
    if (!job) return reply(res, 404, kErrJobNotFound, "no job " + std::string(req.matches[1]));
    rapidjson::StringBuffer buf;
    Writer w(buf);
    write_job_history(w, *job);
    reply(res, 200, 0, "", buf.GetString());
  });
  svr.Post(R"(/api/jobs/(\d+)/(start|stop|resume|complete|verify|cancel|resync))",
           [&](const httplib::Request& req, httplib::Response& res) {
             int64_t id = id_of(req);
             std::string action = req.matches[2];
             rapidjson::Document doc;
             if (!parse_body(req, res, doc, true)) return;
             CompleteRequest cr;
             std::string tables, exclude;
             if (action == "resync") {
               for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
                 std::string k = it->name.GetString();
                 if ((k == "tables" || k == "exclude") && !it->value.IsString())
                   return reply(res, 400, kErrInvalidField, "field \"" + k + "\" must be a string of table patterns");
                 if (k == "tables") tables = it->value.GetString();
                 else if (k == "exclude") exclude = it->value.GetString();
                 else
                   return reply(res, 400, kErrUnknownField,
                                "unknown field \"" + k.substr(0, 64) + "\"; the fields are tables, exclude");
               }
               if (tables.empty()) return reply(res, 400, kErrInvalidField, "field \"tables\" is required");
               try {
                 core::TableSelection(tables, exclude);
               } catch (const Error& e) {
                 return reply(res, 400, kErrInvalidField, e.what());
               }
             } else if (action == "complete") {
               for (auto it = doc.MemberBegin(); it != doc.MemberEnd(); ++it) {
                 std::string k = it->name.GetString();
                 const auto& v = it->value;
                 if (k == "maxLagMs" && v.IsInt64() && v.GetInt64() >= 1 && v.GetInt64() <= 3600000) cr.max_lag_ms = v.GetInt64();
                 else if (k == "sequenceShift" && v.IsInt64() && v.GetInt64() >= 0 && v.GetInt64() <= (int64_t{1} << 40))
                   cr.sequence_shift = v.GetInt64();
                 else if (k == "verify" && v.IsBool()) cr.verify = v.GetBool();
                 else if (k == "maxLagMs" || k == "sequenceShift" || k == "verify")
                   return reply(res, 400, kErrInvalidField,
                                "field \"" + k + "\" must be " +
                                    (k == "verify" ? "true or false"
                                                   : k == "maxLagMs" ? "an integer from 1 to 3600000"
                                                                     : "an integer from 0 to 1099511627776"));
                 else
                   return reply(res, 400, kErrUnknownField,
                                "unknown field \"" + k.substr(0, 64) + "\"; the fields are maxLagMs, sequenceShift, verify");
               }
             } else if (doc.MemberCount() > 0) {
               return reply(res, 400, kErrUnknownField, action + " takes no fields; send an empty body or {}");
             }
             if (action == "start" || action == "resume") {
               auto job = jobs.get(id);
               std::string why = job ? checks.blocking(id, job->settings.skip_checks) : "";
               if (!why.empty())
                 return reply(res, 409, kErrInvalidState, "job " + std::to_string(id) + " cannot " + action + ": " + why);
             }
             ActionResult r = action == "start"      ? jobs.start_job(id)
                              : action == "stop"     ? jobs.stop(id)
                              : action == "resume"   ? jobs.resume(id)
                              : action == "complete" ? jobs.complete(id, cr)
                              : action == "verify"   ? jobs.verify(id)
                              : action == "resync"   ? jobs.resync(id, tables, exclude)
                                                     : jobs.cancel(id);
             if (r.failed()) return reply_result(res, r);
             auto job = jobs.get(id);
             reply(res, 200, 0, "", job ? job_json(*job) : "null");
           });
  svr.Post("/api/check", [&](const httplib::Request& req, httplib::Response& res) {
    rapidjson::Document doc;
    check::CheckOptions o;
    if (!parse_body(req, res, doc, false) || !parse_check_options(doc, o, res)) return;
    std::vector<core::SelectedRelation> selected;
    std::vector<check::Item> items = check::run_checks(o, &selected);
    std::string json = check::render_json(items, &selected);
    while (!json.empty() && json.back() == '\n') json.pop_back();
    reply(res, 200, 0, "", json);
  });
}

}  // namespace

void reply(httplib::Response& res, int status, int code, const std::string& message, const std::string& model) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("success");
  w.Bool(code == 0);
  w.Key("errorCode");
  w.Int(code);
  w.Key("errorMsg");
  if (code == 0) w.Null();
  else w.String(message.c_str(), static_cast<rapidjson::SizeType>(message.size()));
  w.Key("model");
  w.RawValue(model.c_str(), model.size(), rapidjson::kObjectType);
  w.EndObject();
  res.status = status;
  res.set_content(std::string(buf.GetString(), buf.GetSize()) + "\n", "application/json");
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

int run_serve(const ServeOptions& o, const std::atomic<bool>& stop) {
  auto colon = o.listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    spdlog::error("--listen \"{}\" must be HOST:PORT, e.g. 127.0.0.1:8888", o.listen);
    return 2;
  }
  std::string host = o.listen.substr(0, colon);
  int port = -1;
  try {
    int64_t p = parse_int64(o.listen.substr(colon + 1), "--listen's port", ErrorKind::kConfig);
    if (p >= 1 && p <= 65535) port = static_cast<int>(p);
  } catch (const Error&) {
  }
  if (port < 1 || port > 65535) {
    spdlog::error("--listen \"{}\": the port must be a number from 1 to 65535", o.listen);
    return 2;
  }
  // The jobs' logs and status files and the API token: a directory only this user can enter, so
  // nobody else can read the token, plant links or forge progress in it. serve always needs a
  // token: without --token-file it makes one there on its first start and keeps it.
  std::string token, token_source;
  try {
    prepare_work_dir(o.work_dir);
    token = o.token_file.empty() ? load_or_create_token(o.work_dir) : read_token_file(o.token_file);
    token_source = o.token_file.empty() ? o.work_dir + "/" + kTokenFileName : o.token_file;
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return e.kind() == ErrorKind::kConfig ? 2 : 1;
  }
  // TLS files checked before anything starts.
  std::unique_ptr<httplib::Server> server_owner = make_server(o);
  if (!server_owner) return 2;
  Connections connections;
  try {
    if (!o.connections_file.empty()) connections = load_connections(o.connections_file);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
  // The jobs' processes are this same binary.
  char exe[PATH_MAX] = {0};
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  std::unique_ptr<JobManager> jobs;
  try {
    jobs = std::make_unique<JobManager>(std::make_unique<JobStore>(o.state), o.work_dir,
                                        n > 0 ? std::string(exe, static_cast<size_t>(n)) : "/proc/self/exe", o.max_jobs);
    jobs->start();
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return e.kind() == ErrorKind::kConfig ? 2 : 1;
  }

  CheckRuns checks;  // after jobs' creation: its threads end before the jobs go
  httplib::Server& svr = *server_owner;
  const char* scheme = o.tls_cert.empty() ? "http" : "https";
  svr.set_payload_max_length(1 << 20);
  add_guards(svr, token);
  svr.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    reply(res, 200, 0, "", "{\"status\":\"ok\"}");
  });
  svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
    // Its buttons act: no other site may frame it.
    res.set_header("X-Frame-Options", "DENY");
    res.set_header("Content-Security-Policy", "frame-ancestors 'none'");
    res.set_content(kStatusPage, "text/html; charset=utf-8");
  });
  svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(*jobs), "text/plain; version=0.0.4");
  });
  add_job_routes(svr, *jobs, checks);
  add_check_routes(svr, *jobs, checks);
  add_sharding_sphere_routes(svr, *jobs);
  add_huawei_routes(svr, *jobs, connections);

  if (!svr.bind_to_port(host, port)) {
    spdlog::error("cannot listen on {}:{} (in use, or not an address of this machine)", host, port);
    jobs->shutdown();
    return 1;
  }
  spdlog::info("serving on {}://{}:{}, jobs kept in {}", scheme, host, port, pg::redact_conninfo(o.state));
  // Where the token is, never the token itself: the log may be read by others.
  spdlog::info("every request but GET /health needs Authorization: Bearer <the token in {}>; the jobs CLI reads it "
               "{}; the status page: {}://{}:{}/#token=<that token>",
               token_source, o.token_file.empty() ? "from there" : "with --token-file", scheme, host, port);
  // Nothing may escape a thread's body (std::terminate). A server that ends by itself ends
  // serve as a stop would, with a failure's exit code.
  std::atomic<bool> server_ended{false};
  std::thread server([&] {
    try {
      svr.listen_after_bind();
    } catch (const std::exception& e) {
      spdlog::error("the HTTP server failed: {}", e.what());
    } catch (...) {
      spdlog::error("the HTTP server failed with an unknown exception");
    }
    server_ended = true;
  });
  while (!stop.load() && !server_ended.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  bool failed = !stop.load();
  spdlog::info("stopping: the jobs' processes stop and resume when serve starts again");
  svr.stop();
  server.join();
  jobs->shutdown();
  return failed ? 1 : 0;
}

}  // namespace dts::serve
