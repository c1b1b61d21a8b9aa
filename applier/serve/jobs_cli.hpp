// `dts_applier jobs list|show|create|start|stop|resume|complete|verify|cancel`: the CLI of a
// running `serve`, over its HTTP API.
#ifndef DTS_APPLIER_SERVE_JOBS_CLI_HPP
#define DTS_APPLIER_SERVE_JOBS_CLI_HPP

#include <cstdint>
#include <string>

namespace dts::serve {

struct JobsCliOptions {
  std::string server = "http://127.0.0.1:8888";
  std::string token_file;  // without it: <work_dir>/api-token, sent only to a loopback server
  std::string ca_file;     // https: the CA (or self-signed certificate) to trust, PEM; default the system's
  std::string work_dir;    // serve's work directory (default ~/.dts-serve)
  std::string action;  // list, show, create, start, stop, resume, complete, verify, cancel, resync
  int64_t id = 0;
  // create
  std::string name, source, target, tables, exclude, mode = "incremental", start_time;
  int jobs = 2;
};

// 0 on success, 1 when the server refused (its message printed), 2 on bad use.
int run_jobs_cli(const JobsCliOptions& options);

}  // namespace dts::serve

#endif
