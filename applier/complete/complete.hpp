// `dts_applier complete`: the cutover, in one command, next to a running migrate. It waits
// until a marker written through the slot comes back applied within --max-lag; makes the
// source read-only (reversibly) and lets the transactions that started before finish; writes
// a stop marker and waits until the applier has applied it, so that from then on source and
// target are equal; copies the sequences (plus a shift); optionally verifies; and removes the
// slot and origin. It prints the read-only window in milliseconds and what to do next.
#ifndef DTS_APPLIER_COMPLETE_COMPLETE_HPP
#define DTS_APPLIER_COMPLETE_COMPLETE_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "server/databases.hpp"

namespace dts::complete {

enum class ReadOnlyScope {
  kCluster,   // ALTER SYSTEM: every database of the source, existing sessions included
  kDatabase,  // ALTER DATABASE: this database only; its other sessions are disconnected
};

struct CompleteOptions {
  std::string source;
  std::string target;
  std::string slot = "dts_migrate";
  std::chrono::milliseconds max_lag{1000};
  int64_t sequence_shift = 0;
  bool verify = false;
  // With verify: the tables, as follow was given them; both empty: the migration's (dts.migration).
  std::string tables;
  std::string exclude;
  ReadOnlyScope scope = ReadOnlyScope::kCluster;
  std::chrono::seconds timeout{600};       // for the lag to come down
  std::chrono::seconds drain_timeout{30};  // for transactions begun before read-only to end
  // Several databases (server/databases.hpp): each one's migration, all in one read-only window.
  server::DatabaseScope databases;
};

// 0 done; 1 failed (the source is writable again if the failure came before the target was
// ready); 2 bad options or state.
// `interrupted` (SIGINT/SIGTERM) ends the waits; before the target is ready, that undoes the
// read-only switch like any other failure.
int run_complete(const CompleteOptions& options, const std::atomic<bool>& interrupted);

}  // namespace dts::complete

#endif
