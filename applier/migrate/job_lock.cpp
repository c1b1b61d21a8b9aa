#include "migrate/job_lock.hpp"

#include <unistd.h>

#include <thread>

#include "common/error.hpp"

namespace dts::migrate {
namespace {

// The advisory lock's first key ('dts' in ASCII): keeps clear of locks the application takes
// with a single bigint key, which pg_locks shows with objsubid 1, not 2.
constexpr const char* kLockSpace = "1685353216";

std::string lock_key(const std::string& slot) { return "dts_migrate:" + slot; }

}  // namespace

std::string job_application_name(const std::string& slot) { return lock_key(slot).substr(0, 63); }

std::string run_application_name(const std::string& slot) {
  // PostgreSQL keeps 63 bytes: the job's name gives way, the run's pid stays whole.
  std::string pid = "#" + std::to_string(getpid());
  return lock_key(slot).substr(0, 63 - pid.size()) + pid;
}

bool try_job_lock(const pg::Connection& target, const std::string& slot) {
  return target.query_value(std::string("SELECT pg_try_advisory_lock(") + kLockSpace + ", hashtext($1))",
                            {lock_key(slot)}) == "t";
}

int job_lock_holder(const pg::Connection& target, const std::string& slot) {
  std::string pid = target.query_value(
      std::string("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
                  "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                  "AND classid = ") + kLockSpace + "::bigint::oid AND objid = (hashtext($1)::bigint & 4294967295)::oid "
                  "LIMIT 1",
      {lock_key(slot)});
  return pid.empty() ? 0 : std::atoi(pid.c_str());
}

void take_job_lock(const pg::Connection& target, const std::string& slot, std::chrono::seconds wait) {
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (!try_job_lock(target, slot)) {
    if (std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    int holder = job_lock_holder(target, slot);
    std::string who = holder == 0 ? "" : target.query_value(
        "SELECT format('pid %s on the target: %s from %s, %s', pid, coalesce(nullif(application_name, ''), 'no name'), "
        "coalesce(client_addr::text, 'a local socket'), usename) FROM pg_stat_activity WHERE pid = $1",
        {std::to_string(holder)});
    throw Error(ErrorKind::kConfig, "another migrate or cancel of slot \"" + slot + "\" is running" +
                                        (who.empty() ? "" : " (its session: " + who + ")") +
                                        "; wait for it to end, or stop it with dts_applier cancel");
  }
}

bool connection_lost(const pg::Connection& c) {
  PGconn* conn = c.get();
  return conn == nullptr || PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK;
}

namespace {

// The job's sessions, any run's (cancel) or this run's only (a migrate that stops: another
// run of the job may be starting, and its sessions are not ours to end).
// Any run's: the name the job's sessions had before runs were named, or "<job>#<pid>", the
// job's name cut to make room for the pid when the whole is 63 bytes (only then may a cut name
// stand for a longer one).
const char* kJobSessions = "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND CASE WHEN $3 THEN "
                           "application_name = $2 ELSE application_name = $1 OR "
                           "substring(application_name FROM '^(.*)#[0-9]+$') = $1 OR (length(application_name) = 63 "
                           "AND left($1, length(substring(application_name FROM '^(.*)#[0-9]+$'))) = "
                           "substring(application_name FROM '^(.*)#[0-9]+$')) END";

std::vector<std::string> session_params(const std::string& slot, bool this_run) {
  return {job_application_name(slot), run_application_name(slot), this_run ? "true" : "false"};
}

}  // namespace

std::vector<int> job_sessions(const pg::Connection& c, const std::string& slot, bool this_run) {
  pg::Result r = c.exec_params(std::string("SELECT pid ") + kJobSessions, session_params(slot, this_run));
  std::vector<int> pids;
  for (int i = 0; i < PQntuples(r.get()); ++i) pids.push_back(std::atoi(PQgetvalue(r.get(), i, 0)));
  return pids;
}

int terminate_job_sessions(const pg::Connection& c, const std::string& slot, bool this_run) {
  return std::atoi(c.query_value(std::string("SELECT count(pg_terminate_backend(pid)) ") + kJobSessions,
                                 session_params(slot, this_run)).c_str());
}

}  // namespace dts::migrate
