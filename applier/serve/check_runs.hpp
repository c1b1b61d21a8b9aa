// Prechecks run in the background for the API, step by step as a console shows them (the
// Tencent DTS "check task"): each step not started, running, then passed, warning or failed with
// its items. Kept in memory, the last kKeep runs; a job's last check decides whether it may start.
#ifndef DTS_APPLIER_SERVE_CHECK_RUNS_HPP
#define DTS_APPLIER_SERVE_CHECK_RUNS_HPP

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "check/check.hpp"

namespace dts::serve {

class CheckRuns {
 public:
  static constexpr size_t kMaxRunning = 4;
  static constexpr size_t kKeep = 32;

  CheckRuns() = default;
  ~CheckRuns();  // waits for the checks still running
  CheckRuns(const CheckRuns&) = delete;
  CheckRuns& operator=(const CheckRuns&) = delete;

  // Starts a check (of a job when job_id > 0); nullopt when kMaxRunning are running already.
  std::optional<int64_t> start(const check::CheckOptions& options, int64_t job_id);
  // The run as JSON ({id, jobId, status, result, steps: [{name, state, items}]}), if kept.
  std::optional<std::string> model(int64_t id);
  // For a job about to start: "" if its last check let it, else why not (a check still running,
  // or its FAILED items that `skipped` does not name).
  std::string blocking(int64_t job_id, const std::vector<std::string>& skipped);
  // The id of a job's last check (0: none).
  int64_t last_of(int64_t job_id);

 private:
  struct Step {
    std::string name;
    std::string state = "notStarted";  // running, passed, warning, failed
    std::vector<check::Item> items;
  };
  struct Run {
    int64_t id = 0;
    int64_t job_id = 0;
    bool finished = false;
    int64_t started_at = 0;
    int64_t finished_at = 0;
    std::vector<Step> steps;
    std::thread thread;
  };
  void run(Run* r, check::CheckOptions options);
  const Run* last_run_of(int64_t job_id) const;  // with mu_ held
  std::string model_of(const Run& r) const;
  void evict();

  std::mutex mu_;
  std::map<int64_t, std::unique_ptr<Run>> runs_;
  int64_t next_id_ = 1;
};

}  // namespace dts::serve

#endif
