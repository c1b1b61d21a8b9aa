// `dts_applier cancel`: stops a migration at any phase and removes what it left behind — the
// running migrate (stopped through its job lock, see migrate/job_lock.hpp), the slot on the
// source (its walsender terminated first), the origin and the state on the target — never
// touching any table's data.
#ifndef DTS_APPLIER_CANCEL_CANCEL_HPP
#define DTS_APPLIER_CANCEL_CANCEL_HPP

#include <chrono>
#include <string>

#include "pg/connection.hpp"

namespace dts::cancel {

struct CancelOptions {
  std::string source;
  std::string target;
  std::string slot = "dts_migrate";
};

int run_cancel(const CancelOptions& options);

// Drops the slot, terminating whoever streams from it; false if there was none.
bool drop_slot(const pg::Connection& source, const std::string& slot, std::chrono::seconds timeout);
// Drops the origin once no session holds it any more.
void drop_origin(const pg::Connection& target, const std::string& origin, std::chrono::seconds timeout);
// Stops a running migrate of `slot` (ends the session holding its lock, which it watches) and
// takes the lock: no migrate of this slot runs until `target` is closed.
void stop_migrate(const pg::Connection& target, const std::string& slot, std::chrono::seconds timeout);
// Waits until no session of the job is left on either server, terminating those still there
// after `grace`.
void end_job_sessions(const pg::Connection& source, const pg::Connection& target, const std::string& slot,
                      std::chrono::seconds grace, std::chrono::seconds timeout);

}  // namespace dts::cancel

#endif
