// `dts_applier follow`: stream from a slot and apply to a target that already has the schema,
// resuming from the target's replication origin, reconnecting when resume mode is auto.
#ifndef DTS_APPLIER_FOLLOW_FOLLOW_HPP
#define DTS_APPLIER_FOLLOW_FOLLOW_HPP

#include <atomic>
#include <optional>
#include <string>

#include "common/lsn.hpp"
#include "core/migration.hpp"

namespace dts::follow {

struct FollowOptions {
  std::string source;
  std::string target;
  std::string slot;
  bool create_slot = false;
  std::string tables;   // include_tables patterns for the plugin
  std::string exclude;  // exclude_tables patterns
  double bandwidth_mb_per_s = 0;  // 0: unlimited
  // Target sessions applying ordinary transactions at once; 0: derived from the target
  // (apply_workers_for).
  int apply_workers = 0;
  bool resume_auto = true;
  std::optional<Lsn> until_lsn;
  std::string status_file;
  std::string origin;  // default: "dts_" + slot
  bool streaming = true;
  bool no_packing = false;  // one transaction per replication message, idle slot moved by keepalives
  std::string decoding_work_mem = "16MB";  // the walsender's logical_decoding_work_mem
  std::string copy_json;  // migrate: shown in the status file (see Status::copy_json)
  // migrate: watch dts.migration's stop_lsn for this slot, which complete records with its stop
  // marker, so that an applier restarted after applying the marker still ends there.
  bool watch_stop_lsn = false;
};

// Exit codes: the core's, shared by every command.
using core::kExitConnectionLost;
using core::kExitFailed;
using core::kExitOk;
using core::kExitUsage;

int run_follow(const FollowOptions& options, const std::atomic<bool>& stop);

}  // namespace dts::follow

#endif
