#include "cancel/cancel.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "follow/follow.hpp"
#include "migrate/job_lock.hpp"
#include "pg/connection.hpp"

namespace dts::cancel {

bool drop_slot(const pg::Connection& source, const std::string& slot, std::chrono::seconds timeout) {
  // Whoever streams from the slot goes first (a running follow stops with an error); then the
  // slot, which an active walsender would keep.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    source.exec_params("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                       "WHERE slot_name = $1 AND active_pid IS NOT NULL", {slot});
    if (source.query_value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", {slot}) == "0")
      return false;
    try {
      source.exec_params("SELECT pg_drop_replication_slot($1)", {slot});
      return true;
    } catch (const Error&) {
      // Active again for a moment (a follow reconnecting): retry until the deadline.
      if (std::chrono::steady_clock::now() > deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

void drop_origin(const pg::Connection& target, const std::string& origin, std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    try {
      target.exec_params("SELECT pg_replication_origin_drop($1) WHERE pg_replication_origin_oid($1) IS NOT NULL",
                         {origin});
      return;
    } catch (const Error&) {
      // Still held by an applier session that is ending.
      if (std::chrono::steady_clock::now() > deadline) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

void stop_migrate(const pg::Connection& target, const std::string& slot, std::chrono::seconds timeout) {
  // A running migrate holds the job's lock on the target for as long as it runs; ending that
  // session is its signal to stop its copy workers and tools and exit (see
  // migrate/job_lock.hpp). This reaches a migrate on any host, and a migrate that is not ours.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int stopped = 0;
  while (!migrate::try_job_lock(target, slot)) {
    int holder = migrate::job_lock_holder(target, slot);
    if (holder != 0 && holder != stopped) {
      spdlog::info("stopping the migrate of slot \"{}\" that is running (its session on the target: pid {})", slot,
                   holder);
      target.exec_params("SELECT pg_terminate_backend($1::int)", {std::to_string(holder)});
      stopped = holder;
    }
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(ErrorKind::kInternal, "the migrate of slot \"" + slot + "\" still holds its lock on the target after " +
                                            std::to_string(timeout.count()) + " s; run cancel again");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void end_job_sessions(const pg::Connection& source, const pg::Connection& target, const std::string& slot,
                      std::chrono::seconds grace, std::chrono::seconds timeout) {
  // A stopped migrate's copy workers and tools leave within a second or two. Sessions still
  // there after `grace` have no process to end them (a migrate killed with -9 leaves its
  // pg_restore workers' CREATE INDEX running): they are terminated.
  auto start = std::chrono::steady_clock::now();
  bool warned = false;
  for (;;) {
    size_t left = migrate::job_sessions(source, slot).size() + migrate::job_sessions(target, slot).size();
    if (left == 0) return;
    auto waited = std::chrono::steady_clock::now() - start;
    if (waited > timeout)
      throw Error(ErrorKind::kInternal, std::to_string(left) + " sessions with application_name \"" +
                                            migrate::job_application_name(slot) + "\" are still on the servers after " +
                                            std::to_string(timeout.count()) + " s; run cancel again");
    if (waited > grace) {
      if (!warned) spdlog::warn("terminating {} sessions the job left on the servers", left);
      warned = true;
      migrate::terminate_job_sessions(source, slot);
      migrate::terminate_job_sessions(target, slot);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int run_cancel(const CancelOptions& o) {
  try {
    // First the process: a migrate still copying would otherwise go on, and write its state
    // again after we removed it. Then, holding the job's lock (no migrate of this slot starts
    // meanwhile): the slot, what is left of the job's sessions, the origin and the state.
    pg::Connection target = pg::Connection::open(o.target, "target");
    stop_migrate(target, o.slot, std::chrono::seconds(30));
    pg::Connection source = pg::Connection::open(o.source, "source");
    bool dropped = drop_slot(source, o.slot, std::chrono::seconds(30));
    spdlog::info(dropped ? "dropped replication slot \"{}\" on the source" : "no replication slot \"{}\" on the source",
                 o.slot);
    end_job_sessions(source, target, o.slot, std::chrono::seconds(10), std::chrono::seconds(30));
    // A migrate stopped while creating its slot drops it itself; one that went away (killed)
    // between creating it and noticing the stop leaves it: nothing of the job runs any more now.
    if (drop_slot(source, o.slot, std::chrono::seconds(30)))
      spdlog::info("dropped replication slot \"{}\", created while the migrate was stopping", o.slot);
    std::string origin = "dts_" + o.slot;
    drop_origin(target, origin, std::chrono::seconds(30));
    if (target.query_value("SELECT to_regclass('dts.migration') IS NOT NULL") == "t")
      target.exec_params("DELETE FROM dts.migration WHERE slot = $1", {o.slot});
    if (target.query_value("SELECT to_regclass('dts.copy_chunk') IS NOT NULL") == "t")
      target.exec_params("DELETE FROM dts.copy_chunk WHERE slot = $1", {o.slot});
    spdlog::info("removed origin \"{}\" and the migration's state on the target; no table was touched", origin);
    return follow::kExitOk;
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return e.kind() == ErrorKind::kConfig ? follow::kExitUsage : follow::kExitFailed;
  }
}

}  // namespace dts::cancel
