// Which process runs a migration, as every host that can reach the target can tell.
//
// A migrate holds a session-level advisory lock, keyed on its slot, on its first target
// connection for as long as it runs: a second migrate of the same slot cannot start, and the
// session holding the lock is the migrate's lifeline. `cancel` stops a running migrate by
// terminating that session (migrate notices within a fraction of a second, stops its copy
// workers and tools and exits), then takes the lock itself so that none starts while it
// removes the slot, origin and state. Every session of the job — migrate's own and those of
// the pg_dump and pg_restore it runs — carries the application_name run_application_name(slot),
// the job's name and the run's pid, which lets cancel wait for (and, when the process is gone,
// end) what is left of the job, and a stopping run end what its tools left without touching
// the sessions of the next run of the job, which may already be starting.
#ifndef DTS_APPLIER_MIGRATE_JOB_LOCK_HPP
#define DTS_APPLIER_MIGRATE_JOB_LOCK_HPP

#include <chrono>
#include <string>
#include <vector>

#include "pg/connection.hpp"

namespace dts::migrate {

// "dts_migrate:<slot>" (PostgreSQL keeps the first 63 bytes): the job's name.
std::string job_application_name(const std::string& slot);
// "dts_migrate:<slot>#<pid>": what this run's sessions (its tools' too) are called.
std::string run_application_name(const std::string& slot);

// Takes the job's lock on `target`, waiting up to `wait` for a holder that is going away (a
// migrate killed a moment ago); throws Error(kConfig) naming the session that holds it.
void take_job_lock(const pg::Connection& target, const std::string& slot, std::chrono::seconds wait);
// True if the lock is now ours (not waiting).
bool try_job_lock(const pg::Connection& target, const std::string& slot);
// The backend pid of the session holding the job's lock in this database (0: none).
int job_lock_holder(const pg::Connection& target, const std::string& slot);

// True once the server has closed `c` (pg_terminate_backend, a restart). Does not wait: it
// reads what has arrived, and is cheap enough to ask every few tens of milliseconds.
bool connection_lost(const pg::Connection& c);

// Backend pids of the job's sessions on this server (any run's, or `this_run`'s only), other
// than `c`'s own.
std::vector<int> job_sessions(const pg::Connection& c, const std::string& slot, bool this_run = false);
// Terminates them; returns how many were asked to end.
int terminate_job_sessions(const pg::Connection& c, const std::string& slot, bool this_run = false);

}  // namespace dts::migrate

#endif
