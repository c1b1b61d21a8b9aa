// Runs the jobs: each migration is a `dts_applier migrate` child process with its own status
// file (so a failing job cannot take serve down, and stop is a signal); complete, verify and
// cancel are children of their own. A scheduler tick starts scheduled and queued jobs (at most
// max_running at once), reads the children's progress, reaps them and stores every change.
#ifndef DTS_APPLIER_SERVE_JOB_MANAGER_HPP
#define DTS_APPLIER_SERVE_JOB_MANAGER_HPP

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "serve/job.hpp"
#include "serve/job_store.hpp"

namespace dts::serve {

// The outcome of an API action: 0 for success, else the HTTP status and a stable error code.
struct ActionResult {
  int http_status = 200;
  int error_code = 0;
  std::string message;
  static ActionResult ok() { return {}; }
  bool failed() const { return error_code != 0; }
};

// Stable error codes of the API (the HTTP status times 100, plus a detail).
constexpr int kErrBadJson = 40001;
constexpr int kErrUnknownField = 40002;
constexpr int kErrInvalidField = 40003;
constexpr int kErrUnauthorized = 40100;
constexpr int kErrForbiddenOrigin = 40300;
constexpr int kErrNotFound = 40400;
constexpr int kErrJobNotFound = 40401;
constexpr int kErrInvalidState = 40900;
constexpr int kErrTooLarge = 41300;
constexpr int kErrInternal = 50000;

struct CompleteRequest {
  int64_t max_lag_ms = 1000;
  int64_t sequence_shift = 0;
  bool verify = false;
};

class JobManager {
 public:
  JobManager(std::unique_ptr<JobStore> store, std::string work_dir, std::string executable, int max_running);
  ~JobManager();

  // Loads the stored jobs (those that were running are queued again: they resume) and starts
  // the scheduler.
  void start();
  // Stops the children, leaving the jobs' states as they were, so a new serve resumes them.
  void shutdown();

  ActionResult create(JobSettings settings, Job& created);
  std::vector<Job> list();
  std::optional<Job> get(int64_t id);
  ActionResult start_job(int64_t id);
  ActionResult stop(int64_t id);
  ActionResult resume(int64_t id);
  ActionResult complete(int64_t id, const CompleteRequest& request);
  ActionResult verify(int64_t id);
  // Copies tables of a streaming job again while it goes on streaming (dts_applier resync).
  ActionResult resync(int64_t id, const std::string& tables, const std::string& exclude);
  ActionResult cancel(int64_t id);
  // A draft job (created without its instances) gets its settings and starts.
  ActionResult configure(int64_t id, JobSettings settings);
  // Forgets a job that is not running; one that may still have a slot on the source is
  // cancelled first (slot, origin, state dropped) and forgotten when that is done.
  ActionResult remove(int64_t id);
  // Counters for /metrics.
  int64_t errors_seen(int64_t id);

 private:
  enum class ChildKind { kMigrate, kComplete, kVerify, kCancel, kResync };
  struct Child {
    pid_t pid = 0;
    ChildKind kind = ChildKind::kMigrate;
    std::string out_path;  // stdout (verify's JSON report)
    std::string log_path;  // stderr
  };

  void run_scheduler();
  void tick();
  void spawn(Job& job, ChildKind kind, std::vector<std::string> args);
  void launch_migrate(Job& job);
  void on_exit(Job& job, const Child& child, int exit_code);
  void read_progress(Job& job);
  void fail(Job& job, const std::string& message);
  void persist(Job& job);
  void forget(int64_t id);
  std::string status_path(const Job& job) const;
  Job* find(int64_t id);
  bool has_child(int64_t id, ChildKind kind) const;
  void signal_migrate(int64_t id, int sig) const;
  int running_count() const;

  std::unique_ptr<JobStore> store_;
  std::string work_dir_;
  std::string executable_;
  int max_running_;
  std::mutex mu_;
  std::map<int64_t, Job> jobs_;
  std::multimap<int64_t, Child> children_;
  std::map<int64_t, int64_t> errors_;
  std::atomic<bool> stopping_{false};
  std::condition_variable wake_;
  std::thread scheduler_;
};

}  // namespace dts::serve

#endif
