#include "serve/jobs_cli.hpp"

#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdio>

#include "common/error.hpp"
#include "serve/http_api.hpp"
#include "serve/token.hpp"

namespace dts::serve {
namespace {

std::string create_body(const JobsCliOptions& o) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  auto field = [&](const char* k, const std::string& v) {
    if (v.empty()) return;
    w.Key(k);
    w.String(v.c_str());
  };
  field("name", o.name);
  field("source", o.source);
  field("target", o.target);
  field("tables", o.tables);
  field("exclude", o.exclude);
  field("mode", o.mode);
  field("startTime", o.start_time);
  w.Key("jobs");
  w.Int(o.jobs);
  w.EndObject();
  return buf.GetString();
}

std::string resync_body(const JobsCliOptions& o) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("tables");
  w.String(o.tables.c_str());
  if (!o.exclude.empty()) {
    w.Key("exclude");
    w.String(o.exclude.c_str());
  }
  w.EndObject();
  return buf.GetString();
}

void print_list(const rapidjson::Value& jobs) {
  std::printf("%-6s %-28s %-26s %14s %10s\n", "id", "name", "status", "rows copied", "lag ms");
  if (!jobs.IsArray()) return;
  for (const auto& j : jobs.GetArray()) {
    std::printf("%-6lld %-28.28s %-26s %14lld %10lld\n", static_cast<long long>(j["id"].GetInt64()),
                j["jobName"].GetString(), j["status"].GetString(),
                static_cast<long long>(j["historyProgress"]["syncedRows"].GetInt64()),
                static_cast<long long>(j["realtimeProgress"]["delayMillisecond"].GetInt64()));
  }
}

// The host of a URL like http://127.0.0.1:8888/path ([::1] keeps its brackets).
std::string url_host(const std::string& url) {
  auto scheme = url.find("://");
  std::string rest = scheme == std::string::npos ? url : url.substr(scheme + 3);
  rest = rest.substr(0, rest.find_first_of("/?#"));
  auto at = rest.rfind('@');
  if (at != std::string::npos) rest = rest.substr(at + 1);
  if (!rest.empty() && rest[0] == '[') return rest.substr(0, rest.find(']') + 1);
  return rest.substr(0, rest.find(':'));
}

}  // namespace

int run_jobs_cli(const JobsCliOptions& o) {
  std::string token;
  try {
    if (!o.token_file.empty()) {
      token = read_token_file(o.token_file);
    } else if (is_loopback(url_host(o.server))) {
      token = read_work_dir_token(o.work_dir);
    } else {
      // The work directory's token belongs to this host's serve: never send it to another server.
      std::fprintf(stderr, "--server %s is not a loopback address: pass --token-file with that server's token\n",
                   o.server.c_str());
      return 2;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  httplib::Client cli(o.server);
  if (!cli.is_valid()) {
    std::fprintf(stderr, "--server %s is not a URL like http://127.0.0.1:8888 or https://host:8888\n", o.server.c_str());
    return 2;
  }
  if (o.server.rfind("https://", 0) == 0) {
    // The server's certificate is always verified: against --ca-file, or the system's CAs.
    cli.enable_server_certificate_verification(true);
    if (!o.ca_file.empty()) cli.set_ca_cert_path(o.ca_file.c_str());
  } else if (!o.ca_file.empty()) {
    std::fprintf(stderr, "--ca-file is for an https:// --server\n");
    return 2;
  }
  cli.set_connection_timeout(5);
  cli.set_read_timeout(120);
  httplib::Headers headers{{"Authorization", "Bearer " + token}};
  std::string id = std::to_string(o.id);
  httplib::Result res = o.action == "list"     ? cli.Get("/api/jobs", headers)
                        : o.action == "show"   ? cli.Get(("/api/jobs/" + id).c_str(), headers)
                        : o.action == "create" ? cli.Post("/api/jobs", headers, create_body(o), "application/json")
                        : o.action == "resync" ? cli.Post(("/api/jobs/" + id + "/resync").c_str(), headers,
                                                          resync_body(o), "application/json")
                                               : cli.Post(("/api/jobs/" + id + "/" + o.action).c_str(), headers, "",
                                                          "application/json");
  if (!res && res.error() == httplib::Error::SSLServerVerification) {
    std::fprintf(stderr, "%s: its TLS certificate could not be verified%s; pass --ca-file with the CA that signed it "
                 "(or, self-signed, the certificate itself)\n", o.server.c_str(),
                 o.ca_file.empty() ? " against the system's CAs" : (" against " + o.ca_file).c_str());
    return 1;
  }
  if (!res) {
    std::fprintf(stderr, "cannot reach %s (%s): is `dts_applier serve` running there?\n", o.server.c_str(),
                 httplib::to_string(res.error()).c_str());
    return 1;
  }
  rapidjson::Document d;
  d.Parse(res->body.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("success") || !d["success"].IsBool() ||
      !d.HasMember("errorCode") || !d["errorCode"].IsInt() || !d.HasMember("model")) {
    std::fprintf(stderr, "%s answered HTTP %d without the API's envelope\n", o.server.c_str(), res->status);
    return 1;
  }
  if (!d["success"].GetBool()) {
    std::fprintf(stderr, "HTTP %d, error %d: %s\n", res->status, d["errorCode"].GetInt(),
                 d["errorMsg"].IsString() ? d["errorMsg"].GetString() : "");
    return 1;
  }
  if (o.action == "list") {
    print_list(d["model"]);
    return 0;
  }
  rapidjson::StringBuffer buf;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
  d["model"].Accept(w);
  std::printf("%s\n", buf.GetString());
  return 0;
}

}  // namespace dts::serve
