// The tools migrate runs (pg_dump, pg_restore) as child processes that stop when migrate stops.
//
// Each tool runs in a process group of its own, led by the tool: one signal to the group
// reaches the workers it forks (pg_restore -j) too, without signalling migrate itself or the
// shell that started it. Stopping is SIGTERM first — pg_dump and pg_restore then cancel their
// running queries (PQcancel) and tell their workers to do the same — and SIGKILL after a grace
// period. A tool whose migrate dies without stopping it (kill -9) gets SIGTERM from the kernel
// (PR_SET_PDEATHSIG), so no tool outlives its migrate to build indexes into tables a resumed
// migrate is restoring again.
#ifndef DTS_APPLIER_MIGRATE_CHILD_PROCESS_HPP
#define DTS_APPLIER_MIGRATE_CHILD_PROCESS_HPP

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "migrate/stop.hpp"

namespace dts::migrate {

// Runs `argv` (its program as resolve_tool finds it) with exactly `env`, stdout to `out_path` and
// stderr to `err_path` (each inherited if empty), and returns its wait status. Throws Stopped once `should_stop` says so
// (the tool's group stopped as `stop_group` does), dts::Error if it cannot be started.
int run_child(const std::vector<std::string>& argv, const std::vector<std::string>& env, const std::string& out_path,
              const std::string& err_path, const StopCheck& should_stop);

// The program run for a tool named `name`: the first hit on PATH, unless it is Debian's
// pg_wrapper (/usr/bin/pg_dump, pg_restore...), a Perl script that picks a version and runs
// /usr/lib/postgresql/<version>/bin/<tool>, at 60-80 ms of Perl start-up per run (most of a second
// over a migrate's eleven runs); then the newest installed version's binary, which reads every
// older server. A name with a slash is kept.
std::string resolve_tool(const std::string& name);

// Stops the process group `leader` leads and reaps the leader: SIGTERM to the group, SIGKILL
// once `grace` has passed, then waits (a few seconds at most) until no member is left.
void stop_group(pid_t leader, std::chrono::milliseconds grace);

}  // namespace dts::migrate

#endif
