#include "serve/job_manager.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/error.hpp"
#include "core/migration.hpp"

extern char** environ;

namespace dts::serve {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kTick{250};
constexpr int64_t kStopGrace = 60;  // seconds

int64_t now_unix() { return static_cast<int64_t>(std::time(nullptr)); }

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The last error line a child logged, without its timestamp: what the job shows as its error.
std::string last_error(const std::string& log_path) {
  std::ifstream f(log_path);
  std::string line, found;
  while (std::getline(f, line)) {
    auto at = line.find(" error ");
    if (at != std::string::npos) found = line.substr(at + 7);
  }
  return found.size() > 2000 ? found.substr(0, 2000) + "..." : found;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

JobManager::JobManager(std::unique_ptr<JobStore> store, std::string work_dir, std::string executable, int max_running)
    : store_(std::move(store)), work_dir_(std::move(work_dir)), executable_(std::move(executable)),
      max_running_(max_running) {}

JobManager::~JobManager() { shutdown(); }

void JobManager::start() {
  std::lock_guard<std::mutex> lock(mu_);
  for (Job& j : store_->load_all()) {
    if (j.status == JobStatus::kStopping) {
      j.status = JobStatus::kStopped;
    } else if (is_running(j.status) && !j.cancelled) {
      // It was running when serve went away: migrate resumes it from the target's state.
      spdlog::info("job {} was {}: resuming it", j.id, status_name(j.status));
      j.status = JobStatus::kPending;
      j.queued = true;
    }
    if (j.verify.status == "RUNNING") {
      j.verify.status = "ERROR";
      j.verify.report = "";
    }
    store_->save(j);
    jobs_.emplace(j.id, std::move(j));
  }
  scheduler_ = std::thread([this] { run_scheduler(); });
}

void JobManager::shutdown() {
  if (stopping_.exchange(true)) return;
  wake_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, c] : children_) kill(c.pid, SIGTERM);
  auto deadline = Clock::now() + std::chrono::seconds(30);
  for (auto& [id, c] : children_) {
    int st = 0;
    while (waitpid(c.pid, &st, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    auto it = jobs_.find(id);
    if (it != jobs_.end()) {
      read_progress(it->second);
      persist(it->second);  // never throws: shutdown runs in the destructor, where a throw is std::terminate
    }
  }
  children_.clear();
}

void JobManager::run_scheduler() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_.load()) {
    try {
      tick();
    } catch (const std::exception& e) {
      spdlog::error("scheduler: {}", e.what());  // the store may be away: try again next tick
    } catch (...) {  // an exception leaving a thread's body is std::terminate
      spdlog::error("scheduler: an unknown exception; trying again next tick");
    }
    wake_.wait_for(lock, kTick);
  }
}

std::string JobManager::status_path(const Job& job) const {
  return work_dir_ + "/job-" + std::to_string(job.id) + ".json";
}

Job* JobManager::find(int64_t id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

bool JobManager::has_child(int64_t id, ChildKind kind) const {
  auto range = children_.equal_range(id);
  for (auto it = range.first; it != range.second; ++it)
    if (it->second.kind == kind) return true;
  return false;
}

void JobManager::signal_migrate(int64_t id, int sig) const {
  auto range = children_.equal_range(id);
  for (auto it = range.first; it != range.second; ++it)
    if (it->second.kind == ChildKind::kMigrate) kill(it->second.pid, sig);
}

int JobManager::running_count() const {
  int n = 0;
  for (const auto& [id, j] : jobs_) n += is_running(j.status) ? 1 : 0;
  return n;
}

// A store that is away for a moment must not turn into a job's failure: the state in memory
// is the truth, and the next save writes it.
void JobManager::persist(Job& job) {
  job.updated_at = now_unix();
  if (job.timeline.empty() || job.timeline.back().status != job.status) {
    if (job.timeline.size() >= 64) job.timeline.erase(job.timeline.begin());
    job.timeline.push_back(Job::Phase{job.status, job.updated_at});
  }
  try {
    store_->save(job);
  } catch (const std::exception& e) {
    spdlog::warn("job {}: could not save its state ({}); saving again later", job.id, e.what());
  }
}

void JobManager::fail(Job& job, const std::string& message) {
  job.error = message.empty() ? "failed without a message; see the job's log in " + work_dir_ : message;
  job.error_at = now_unix();
  errors_[job.id]++;
}

void JobManager::spawn(Job& job, ChildKind kind, std::vector<std::string> args) {
  static const char* kNames[] = {"migrate", "complete", "verify", "cancel", "resync"};
  std::string base = work_dir_ + "/job-" + std::to_string(job.id) + "-" + kNames[static_cast<int>(kind)];
  Child c{0, kind, base + ".out", base + ".log"};
  // Everything the child needs is built before fork: after it, only exec-safe calls.
  args.insert(args.begin(), executable_);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Conninfos travel in the environment, not argv: /proc/<pid>/environ is private to the user.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (std::strncmp(*e, "DTS_SOURCE=", 11) != 0 && std::strncmp(*e, "DTS_TARGET=", 11) != 0) env.emplace_back(*e);
  env.push_back("DTS_SOURCE=" + job.settings.source);
  env.push_back("DTS_TARGET=" + job.settings.target);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  int out = open(c.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int err = open(c.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out < 0 || err < 0) {
    if (out >= 0) close(out);
    if (err >= 0) close(err);
    throw Error(ErrorKind::kInternal, "cannot write the job's log files in " + work_dir_ + ": " + std::strerror(errno));
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // The child goes when serve goes: a restarted serve must not meet an orphan on the slot.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    dup2(out, STDOUT_FILENO);
    dup2(err, STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    // httplib's sockets are not close-on-exec: a child must not keep serve's port.
    close_range(3, ~0U, 0);
    execve(executable_.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(out);
  close(err);
  if (pid < 0) throw Error(ErrorKind::kInternal, std::string("fork failed: ") + std::strerror(errno));
  c.pid = pid;
  children_.emplace(job.id, c);
  spdlog::info("job {}: started {} (pid {})", job.id, kNames[static_cast<int>(kind)], pid);
}

void JobManager::launch_migrate(Job& job) {
  const JobSettings& s = job.settings;
  std::vector<std::string> args = {"migrate", "--slot", job.slot(), "--status-file", status_path(job),
                                   "--mode", s.incremental ? "incremental" : "full", "--jobs", std::to_string(s.jobs),
                                   "--split-larger-than", std::to_string(s.split_size_mb) + "MB",
                                   "--resume-mode", s.resume_auto ? "auto" : "manual"};
  if (!s.tables.empty()) args.insert(args.end(), {"--tables", s.tables});
  if (!s.exclude.empty()) args.insert(args.end(), {"--exclude", s.exclude});
  if (s.bandwidth_limit_mb_per_s > 0)
    args.insert(args.end(), {"--bandwidth-limit", std::to_string(s.bandwidth_limit_mb_per_s)});
  if (s.apply_workers > 0) args.insert(args.end(), {"--apply-workers", std::to_string(s.apply_workers)});
  std::vector<std::string> dbs = s.database_args();
  args.insert(args.end(), dbs.begin(), dbs.end());
  if (s.roles) args.push_back("--roles");
  for (const auto& c : s.skip_checks) args.insert(args.end(), {"--skip-check", c});
  spawn(job, ChildKind::kMigrate, args);
  job.status = JobStatus::kPreparing;
  job.started_at = now_unix();
  job.queued = false;
  job.error.clear();
  job.error_at = 0;
  persist(job);
}

void JobManager::read_progress(Job& job) {
  std::string text = read_file(status_path(job));
  rapidjson::Document d;
  d.Parse(text.c_str());
  if (d.HasParseError() || !d.IsObject()) return;
  job.progress = trim(text);
  auto num = [&d](const char* k) { return d.HasMember(k) && d[k].IsNumber() ? d[k].GetDouble() : 0.0; };
  double rows = d.HasMember("copy") && d["copy"].IsObject() && d["copy"].HasMember("rows_copied") &&
                        d["copy"]["rows_copied"].IsNumber()
                    ? d["copy"]["rows_copied"].GetDouble()
                    : 0.0;
  Job::Sample sample{static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                              std::chrono::system_clock::now().time_since_epoch())
                                              .count()),
                     static_cast<int64_t>(num("lag_ms")), num("changes_per_second"), static_cast<int64_t>(rows)};
  if (job.history.size() < Job::kHistory) {
    job.history.push_back(sample);
  } else {
    job.history[job.history_next] = sample;
    job.history_next = (job.history_next + 1) % Job::kHistory;
  }
  if (job.status == JobStatus::kStopping || !is_running(job.status)) return;
  auto phase = core::parse_phase(d.HasMember("phase") && d["phase"].IsString() ? d["phase"].GetString() : "");
  JobStatus next = job.status;
  using core::Phase;
  if (phase == Phase::kPreparing) next = JobStatus::kPreparing;
  else if (phase == Phase::kCopying || phase == Phase::kBuildingIndexes) next = JobStatus::kMigrateHistoryData;
  else if (phase == Phase::kStreaming || phase == Phase::kCatchingUp || phase == Phase::kReconnecting ||
           phase == Phase::kStarting)
    next = JobStatus::kSynchronizeRealtimeData;
  if (next != job.status) {
    job.status = next;
    persist(job);
  }
}

void JobManager::on_exit(Job& job, const Child& child, int code) {
  switch (child.kind) {
    case ChildKind::kMigrate: {
      read_progress(job);
      rapidjson::Document d;
      d.Parse(job.progress.c_str());
      std::string phase = !d.HasParseError() && d.IsObject() && d.HasMember("phase") && d["phase"].IsString()
                              ? d["phase"].GetString() : "";
      if (job.status == JobStatus::kStopping || job.cancelled) {
        job.status = JobStatus::kStopped;
      } else if (code == 0) {
        job.status = (core::parse_phase(phase) == core::Phase::kCompleted || !job.settings.incremental)
                         ? JobStatus::kCompleted
                         : JobStatus::kStopped;
      } else {
        job.status = JobStatus::kFailed;
        fail(job, last_error(child.log_path));
      }
      break;
    }
    case ChildKind::kComplete:
      if (code == 0) {
        if (!has_child(job.id, ChildKind::kMigrate)) job.status = JobStatus::kCompleted;
      } else {
        fail(job, "complete: " + last_error(child.log_path));
      }
      break;
    case ChildKind::kVerify:
      job.verify.status = code == 0 ? "EQUAL" : code == 1 ? "DIFFERENT" : "ERROR";
      job.verify.report = trim(read_file(child.out_path));
      job.verify.at = now_unix();
      if (code > 1) fail(job, "verify: " + last_error(child.log_path));
      break;
    case ChildKind::kResync:
      job.resync.status = code == 0 ? "DONE" : "FAILED";
      job.resync.report = trim(code == 0 ? read_file(child.out_path) : last_error(child.log_path));
      job.resync.at = now_unix();
      break;
    case ChildKind::kCancel:
      if (code == 0 && job.removing) {
        forget(job.id);  // `job` is gone
        return;
      }
      job.removing = false;
      if (code == 0) {
        job.cancelled = true;
        job.queued = false;
        if (!has_child(job.id, ChildKind::kMigrate)) job.status = JobStatus::kStopped;
      } else {
        fail(job, "cancel: " + last_error(child.log_path));
        if (!has_child(job.id, ChildKind::kMigrate)) job.status = JobStatus::kFailed;
      }
      break;
  }
  persist(job);
}

void JobManager::tick() {
  for (auto it = children_.begin(); it != children_.end();) {
    int st = 0;
    pid_t r = waitpid(it->second.pid, &st, WNOHANG);
    if (r == 0) {
      ++it;
      continue;
    }
    if (r < 0) st = 255 << 8;  // lost track of it: not a success
    Child child = it->second;
    int64_t id = it->first;
    it = children_.erase(it);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (Job* job = find(id)) on_exit(*job, child, code);
  }
  int64_t now = now_unix();
  for (auto& [id, job] : jobs_) {
    // A migrate stops its tools and copy workers within seconds of SIGTERM; one that has not
    // within a minute is killed (its tools then get SIGTERM from the kernel: parent-death
    // signal). The next run resumes from the target's state either way.
    if (job.status == JobStatus::kStopping && job.stop_requested_at != 0 && now - job.stop_requested_at > kStopGrace)
      signal_migrate(id, SIGKILL);
    if (has_child(id, ChildKind::kMigrate)) {
      std::string before = job.progress;
      read_progress(job);
      if (job.progress != before && now - job.updated_at >= 2) persist(job);
    }
    if (job.status == JobStatus::kScheduled && now >= job.settings.start_time) {
      job.status = JobStatus::kPending;
      job.queued = true;
      persist(job);
    }
  }
  for (auto& [id, job] : jobs_) {
    if (running_count() >= max_running_) break;
    if (job.status == JobStatus::kPending && job.queued && !job.cancelled && !has_child(id, ChildKind::kCancel)) {
      try {
        launch_migrate(job);
      } catch (const Error& e) {  // the process could not be started
        job.status = JobStatus::kFailed;
        fail(job, e.what());
        persist(job);
      }
    }
  }
}

ActionResult JobManager::create(JobSettings settings, Job& created) {
  std::lock_guard<std::mutex> lock(mu_);
  Job job;
  job.settings = std::move(settings);
  if (job.settings.start_time > now_unix()) {
    job.status = JobStatus::kScheduled;
  } else {
    job.status = JobStatus::kPending;
    job.queued = job.settings.start;
  }
  store_->insert(job);
  if (job.settings.name.empty()) job.settings.name = "job " + std::to_string(job.id);
  persist(job);
  created = job;
  jobs_.emplace(job.id, std::move(job));
  wake_.notify_all();
  return ActionResult::ok();
}

std::vector<Job> JobManager::list() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Job> out;
  for (const auto& [id, j] : jobs_) out.push_back(j);
  return out;
}

std::optional<Job> JobManager::get(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  return j == nullptr ? std::nullopt : std::optional<Job>(*j);
}

int64_t JobManager::errors_seen(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  return errors_[id];
}

namespace {
ActionResult not_found(int64_t id) { return {404, kErrJobNotFound, "no job " + std::to_string(id)}; }
ActionResult conflict(const Job& j, const std::string& why) {
  return {409, kErrInvalidState, "job " + std::to_string(j.id) + " is " + status_name(j.status) + ": " + why};
}
}  // namespace

ActionResult JobManager::start_job(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (j->cancelled || has_child(id, ChildKind::kCancel)) return conflict(*j, "it is cancelled; create a new job");
  if (j->settings.draft) return conflict(*j, "it has no source and target yet; configure it first");
  if (j->status != JobStatus::kPending || j->queued)
    return conflict(*j, "start applies to a PENDING job created with \"start\": false (use resume for a STOPPED one)");
  j->queued = true;
  persist(*j);
  wake_.notify_all();
  return ActionResult::ok();
}

ActionResult JobManager::stop(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (j->status == JobStatus::kPending || j->status == JobStatus::kScheduled) {
    j->status = JobStatus::kStopped;
    j->queued = false;
  } else if (is_running(j->status) && j->status != JobStatus::kStopping) {
    signal_migrate(id, SIGTERM);
    j->status = JobStatus::kStopping;
    j->stop_requested_at = now_unix();
  } else {
    return conflict(*j, "only a pending, scheduled or running job can be stopped");
  }
  persist(*j);
  return ActionResult::ok();
}

ActionResult JobManager::resume(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (j->cancelled || has_child(id, ChildKind::kCancel))
    return conflict(*j, "it was cancelled (its slot is gone); create a new job");
  if (j->status != JobStatus::kStopped && j->status != JobStatus::kFailed)
    return conflict(*j, "only a STOPPED or FAILED job can be resumed");
  if (j->settings.draft) return conflict(*j, "it has no source and target yet; configure it first");
  j->status = JobStatus::kPending;
  j->queued = true;
  persist(*j);
  wake_.notify_all();
  return ActionResult::ok();
}

ActionResult JobManager::complete(int64_t id, const CompleteRequest& r) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (j->status != JobStatus::kSynchronizeRealtimeData || !j->settings.incremental)
    return conflict(*j, "complete cuts over a job in SYNCHRONIZE_REALTIME_DATA (mode incremental)");
  if (has_child(id, ChildKind::kComplete) || has_child(id, ChildKind::kCancel))
    return conflict(*j, "a complete or cancel is already running for it");
  std::vector<std::string> args = {"complete", "--slot", j->slot(), "--max-lag", std::to_string(r.max_lag_ms),
                                   "--sequence-shift", std::to_string(r.sequence_shift)};
  if (r.verify) args.push_back("--verify");
  std::vector<std::string> dbs = j->settings.database_args();
  args.insert(args.end(), dbs.begin(), dbs.end());
  spawn(*j, ChildKind::kComplete, args);
  return ActionResult::ok();
}

ActionResult JobManager::verify(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (j->status != JobStatus::kSynchronizeRealtimeData && j->status != JobStatus::kCompleted)
    return conflict(*j, "verify compares a job that streams (SYNCHRONIZE_REALTIME_DATA) or is COMPLETED");
  if (has_child(id, ChildKind::kVerify)) return conflict(*j, "a verify is already running for it");
  std::vector<std::string> args = {"verify", "--slot", j->slot(), "--json"};
  std::vector<std::string> dbs = j->settings.database_args();
  args.insert(args.end(), dbs.begin(), dbs.end());
  spawn(*j, ChildKind::kVerify, args);
  j->verify.status = "RUNNING";
  j->verify.report.clear();
  persist(*j);
  return ActionResult::ok();
}

ActionResult JobManager::resync(int64_t id, const std::string& tables, const std::string& exclude) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (j->status != JobStatus::kSynchronizeRealtimeData)
    return conflict(*j, "resync copies tables of a job that streams (SYNCHRONIZE_REALTIME_DATA) again");
  if (has_child(id, ChildKind::kResync)) return conflict(*j, "a resync is already running for it");
  if (!j->settings.database_args().empty())
    return conflict(*j, "a job over several databases: run dts_applier resync against the table's database, "
                        "with its slot (" + j->slot() + "_db<oid of the database>)");
  std::vector<std::string> args = {"resync", "--slot", j->slot(), "--tables", tables};
  if (!exclude.empty()) args.insert(args.end(), {"--exclude", exclude});
  spawn(*j, ChildKind::kResync, args);
  j->resync.status = "RUNNING";
  j->resync.report.clear();
  j->resync.at = now_unix();
  return ActionResult::ok();
}

ActionResult JobManager::cancel(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (j->cancelled || j->status == JobStatus::kCompleted) return conflict(*j, "there is nothing left to cancel");
  if (has_child(id, ChildKind::kCancel)) return conflict(*j, "a cancel is already running for it");
  if (has_child(id, ChildKind::kComplete))
    return conflict(*j, "its cutover (complete) is running; cancelling now would leave the source read-only");
  signal_migrate(id, SIGTERM);
  if (is_running(j->status)) {
    j->status = JobStatus::kStopping;
    j->stop_requested_at = now_unix();
  }
  j->queued = false;
  std::vector<std::string> args = {"cancel", "--slot", j->slot()};
  std::vector<std::string> dbs = j->settings.database_args();
  args.insert(args.end(), dbs.begin(), dbs.end());
  spawn(*j, ChildKind::kCancel, args);
  persist(*j);
  return ActionResult::ok();
}

ActionResult JobManager::configure(int64_t id, JobSettings settings) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (!j->settings.draft)
    return {400, kErrInvalidState, "job " + std::to_string(id) + " is already configured; create a new one"};
  settings.name = j->settings.name;
  settings.description = j->settings.description;
  settings.project = j->settings.project;
  settings.draft = false;
  settings.start = true;
  j->settings = std::move(settings);
  j->status = JobStatus::kPending;
  j->queued = true;
  persist(*j);
  wake_.notify_all();
  return ActionResult::ok();
}

ActionResult JobManager::remove(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  Job* j = find(id);
  if (j == nullptr) return not_found(id);
  if (j->removing) return ActionResult::ok();
  if (is_running(j->status) || has_child(id, ChildKind::kMigrate) || has_child(id, ChildKind::kComplete))
    return conflict(*j, "stop it first");
  // Never started (a draft, or pending) or already cleaned up: nothing is left on the servers.
  bool clean = j->settings.draft || j->cancelled || j->status == JobStatus::kCompleted || j->started_at == 0;
  if (clean && !has_child(id, ChildKind::kCancel)) {
    forget(id);
    return ActionResult::ok();
  }
  j->removing = true;
  j->queued = false;
  if (!has_child(id, ChildKind::kCancel)) {
    std::vector<std::string> args = {"cancel", "--slot", j->slot()};
    std::vector<std::string> dbs = j->settings.database_args();
    args.insert(args.end(), dbs.begin(), dbs.end());
    spawn(*j, ChildKind::kCancel, args);
  }
  return ActionResult::ok();
}

void JobManager::forget(int64_t id) {
  store_->remove(id);
  jobs_.erase(id);
  errors_.erase(id);
}

}  // namespace dts::serve
