#include "cancel/cancel.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "follow/follow.hpp"
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

int run_cancel(const CancelOptions& o) {
  try {
    pg::Connection source = pg::Connection::open(o.source, "source");
    bool dropped = drop_slot(source, o.slot, std::chrono::seconds(30));
    spdlog::info(dropped ? "dropped replication slot \"{}\" on the source" : "no replication slot \"{}\" on the source",
                 o.slot);
    pg::Connection target = pg::Connection::open(o.target, "target");
    std::string origin = "dts_" + o.slot;
    drop_origin(target, origin, std::chrono::seconds(30));
    if (target.query_value("SELECT to_regclass('dts.migration') IS NOT NULL") == "t")
      target.exec_params("DELETE FROM dts.migration WHERE slot = $1", {o.slot});
    spdlog::info("removed origin \"{}\" and the migration's state on the target; no table was touched", origin);
    return follow::kExitOk;
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return e.kind() == ErrorKind::kConfig ? follow::kExitUsage : follow::kExitFailed;
  }
}

}  // namespace dts::cancel
