// A job: a migration with its settings and its state, as `serve` runs it and the API shows it.
#ifndef DTS_APPLIER_SERVE_JOB_HPP
#define DTS_APPLIER_SERVE_JOB_HPP

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dts::serve {

enum class JobStatus {
  kPending,    // created, waits for a free run slot (or for `start` when created with start=false)
  kScheduled,  // waits for its start time
  kPreparing,
  kMigrateHistoryData,       // schema and snapshot copy
  kSynchronizeRealtimeData,  // streaming changes
  kStopping,
  kStopped,
  kCompleted,
  kFailed,
};

// What every JSON answer of serve writes: a key and its string, a key and an ISO 8601 time (null
// for 0).
void key_string(rapidjson::Writer<rapidjson::StringBuffer>& w, const char* key, const std::string& value);
void key_time(rapidjson::Writer<rapidjson::StringBuffer>& w, const char* key, int64_t unix_seconds);

const char* status_name(JobStatus s);
std::optional<JobStatus> parse_status(const std::string& name);
// A child process runs for the job in these states.
bool is_running(JobStatus s);

struct JobSettings {
  std::string name;
  std::string source;  // conninfo, may hold a password: never shown
  std::string target;
  std::string tables;
  std::string exclude;
  bool incremental = true;
  int jobs = 2;
  int64_t split_size_mb = 256;
  double bandwidth_limit_mb_per_s = 0;
  int apply_workers = 0;  // 0: derived from the target (migrate's --apply-workers)
  bool resume_auto = true;
  int64_t start_time = 0;  // Unix seconds; 0: at once
  bool start = true;       // queue at once (false: wait for POST .../start)
  // Several databases as one job (server/databases.hpp): names, or every one ("databases": "*");
  // the source's roles first ("roles", implied by several databases).
  std::vector<std::string> databases;
  bool all_databases = false;
  bool roles = false;
  // Check items (check::item_names()) whose FAILED does not stop the job's start (--skip-check).
  std::vector<std::string> skip_checks;
  // The Huawei-style task routes (huawei_tasks.hpp): the project that sees the job, its
  // description, the names of the registered connections its instances came from, and whether
  // it is a task created without its instances yet (a draft: it cannot start until configured).
  std::string project;
  std::string description;
  std::string source_connection;
  std::string target_connection;
  bool draft = false;
  // The command-line options that say which databases (--databases a,b / --all-databases).
  std::vector<std::string> database_args() const;
};

// Reads settings from a JSON object. On a bad request returns false with `error` naming the
// field and what it must be; unknown fields are refused (a typo must not be ignored).
bool parse_settings(const rapidjson::Value& body, JobSettings& out, std::string& error);
// Settings as stored (conninfos included: the store is the target database, readable by the
// migration's owner only) and as shown (conninfos with their passwords removed).
std::string settings_json(const JobSettings& s, bool for_display);
// ISO 8601 ("2026-11-21T10:00:00Z" or with +hh:mm); nullopt if not one.
std::optional<int64_t> parse_iso8601(const std::string& text);
std::string format_iso8601(int64_t unix_seconds);

struct VerifyState {
  std::string status;  // "", RUNNING, EQUAL, DIFFERENT, ERROR
  std::string report;  // verify's JSON output
  int64_t at = 0;
};

struct Job {
  int64_t id = 0;
  JobSettings settings;
  JobStatus status = JobStatus::kPending;
  bool queued = false;     // will run when a slot is free
  bool cancelled = false;  // cancel removed its slot: it cannot be resumed
  std::string error;
  int64_t error_at = 0;
  int64_t created_at = 0;
  int64_t updated_at = 0;
  int64_t started_at = 0;  // when its migration last started
  int64_t stop_requested_at = 0;  // in memory: when stop or cancel sent SIGTERM
  bool removing = false;  // in memory: deleted, once its cancel (slot, origin, state) is done
  // In memory, for the console: each status the job went through and when (its timeline), and
  // its recent lag and rates, one sample per progress read (the last kHistory).
  struct Phase {
    JobStatus status;
    int64_t at;
  };
  std::vector<Phase> timeline;
  struct Sample {
    int64_t at_ms;
    int64_t lag_ms;
    double changes_per_second;
    int64_t rows_copied;
  };
  static constexpr size_t kHistory = 600;
  std::vector<Sample> history;  // a ring once full: history_next is the oldest
  size_t history_next = 0;
  std::string progress;  // the migrate status file's JSON, last read
  VerifyState verify;
  VerifyState resync;  // the last resync: RUNNING, DONE or FAILED, and what it said (not persisted)
  std::string slot() const { return "dts_job_" + std::to_string(id); }
};

// The job model of the API: status, per-table and per-chunk history progress, realtime
// progress (delay, received and applied LSN), rates, and the error with its time.
void write_job_model(rapidjson::Writer<rapidjson::StringBuffer>& w, const Job& job);
// The job's recent samples, oldest first: [{t (ms), lagMs, changesPerSecond, rowsCopied}].
void write_job_history(rapidjson::Writer<rapidjson::StringBuffer>& w, const Job& job);

}  // namespace dts::serve

#endif
