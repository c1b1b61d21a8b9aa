// Progress of follow: written as JSON to --status-file (atomically: a temp file renamed over
// it) and as one line on stderr when that is a terminal.
#ifndef DTS_APPLIER_FOLLOW_STATUS_HPP
#define DTS_APPLIER_FOLLOW_STATUS_HPP

#include <cstdint>
#include <string>
#include <vector>

#include "common/lsn.hpp"
#include "core/applier.hpp"

namespace dts::follow {

struct Status {
  std::string phase = "STARTING";  // STARTING, STREAMING, RECONNECTING, STOPPED, FAILED
  std::string slot;
  Lsn received_lsn = 0;
  Lsn applied_lsn = 0;
  Lsn flushed_lsn = 0;
  Lsn server_wal_end = 0;
  int64_t lag_ms = 0;
  uint64_t lag_bytes = 0;
  double changes_per_second = 0;
  uint64_t bytes_received = 0;
  uint64_t reconnects = 0;
  uint64_t messages_received = 0;  // with data (transactions travel several to one when packed)
  uint64_t heartbeats = 0;         // asked of the source while quiet (packing)
  // The applier's counters at the last report (core::ApplyStats: transactions, changes, spool,
  // set-based statements, apply workers and their waits, schema changes).
  core::ApplyStats apply;
  // Refusals met with several workers, after which what had been received was applied again
  // on one session (ParallelState in apply_engine.hpp).
  uint64_t parallel_retries = 0;
  std::string error;
  std::string copy_json;  // migrate: the copy's per-table summary (a JSON object), kept in view
};

std::string status_json(const Status& s);
// Writes the file atomically; returns false (and leaves the old file) if it cannot.
bool write_status_file(const std::string& path, const Status& s);
// Why a status file cannot be written at `path`, "" if it can: checked before a command starts,
// so that a wrong path is a clear error rather than a run without progress reports.
std::string status_file_problem(const std::string& path);
std::string status_line(const Status& s);

}  // namespace dts::follow

#endif
