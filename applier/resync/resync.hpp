// `dts_applier resync`: copies tables of a running migration again while its stream goes on,
// ending with them equal to the source. The request goes to the applier that follows the
// migration (resync_driver.hpp); if none is streaming from the slot, this command runs one
// until the copy is done.
#ifndef DTS_APPLIER_RESYNC_RESYNC_HPP
#define DTS_APPLIER_RESYNC_RESYNC_HPP

#include <atomic>
#include <cstdint>
#include <string>

#include "pg/connection.hpp"

namespace dts::resync {

struct ResyncOptions {
  std::string source;
  std::string target;
  std::string slot = "dts_migrate";
  std::string tables;  // the plugin's patterns (core/table_selection.hpp)
  std::string exclude;
  int timeout_s = 3600;
  uint64_t chunk_bytes = 64ull * 1024 * 1024;
};

// Records a request (dts.resync); returns its id. The tables must be followed by the migration.
int64_t request_resync(const pg::Connection& target, const std::string& slot, const std::string& tables,
                       const std::string& exclude, uint64_t chunk_bytes = 64ull * 1024 * 1024);

// The request's state: REQUESTED, COPYING, DONE or FAILED (with its error).
struct ResyncState {
  std::string state;
  std::string error;
  int64_t chunks = 0;
  int64_t rows = 0;
};
ResyncState resync_state(const pg::Connection& target, int64_t id);

int run_resync(const ResyncOptions& options, const std::atomic<bool>& stop);

}  // namespace dts::resync

#endif
