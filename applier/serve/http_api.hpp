// `dts_applier serve`: the jobs and their HTTP API (cpp-httplib, JSON with RapidJSON), the
// Prometheus metrics, the status page, and the ShardingSphere-Scaling routes.
#ifndef DTS_APPLIER_SERVE_HTTP_API_HPP
#define DTS_APPLIER_SERVE_HTTP_API_HPP

#include <atomic>
#include <string>

namespace httplib {
struct Response;
}

namespace dts::serve {

// Every answer of the API: {success, errorCode, errorMsg, model}; `model` is raw JSON.
void reply(httplib::Response& res, int status, int code, const std::string& message, const std::string& model = "null");

struct ServeOptions {
  std::string listen = "127.0.0.1:8888";
  std::string token_file;  // the API token; without it, serve's own in <work_dir>/api-token
  std::string state;       // conninfo of the database that keeps the jobs (schema dts)
  std::string work_dir;    // status files and logs of the jobs' processes, the API token (0700)
  int max_jobs = 4;        // jobs running at once; more wait, queued
  // HTTPS: the certificate (chain) and its private key, PEM; both or neither.
  std::string tls_cert;
  std::string tls_key;
  // Connections a Huawei-style task's instance may name by id: a JSON object of name: conninfo,
  // readable by its owner only.
  std::string connections_file;
};

// Runs until `stop`; returns the exit code (2: bad options, 1: could not serve).
int run_serve(const ServeOptions& options, const std::atomic<bool>& stop);

// Whether a listen host is a loopback address (127.0.0.0/8, ::1, localhost).
bool is_loopback(const std::string& host);

}  // namespace dts::serve

#endif
