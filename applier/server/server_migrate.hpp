// `dts_applier migrate --databases a,b | --all-databases`: one job over several databases.
// The source's roles first (the databases' owners and grants need them), then each database
// created on the target as the source has it, then one `migrate` per database — its own slot,
// copy, replicator and state in that database's dts schema — run as child processes of this
// one, which stops them all when it stops or when one of them fails, and writes their progress
// as one status file (per database and in total). `complete --databases` cuts them over in one
// read-only window (complete/complete.cpp).
#ifndef DTS_APPLIER_SERVER_SERVER_MIGRATE_HPP
#define DTS_APPLIER_SERVER_SERVER_MIGRATE_HPP

#include <atomic>
#include <string>
#include <vector>

#include "migrate/migrate.hpp"
#include "server/databases.hpp"

namespace dts::server {

int run_server_migrate(const migrate::MigrateOptions& options, const DatabaseScope& scope,
                       const std::atomic<bool>& stop);

// The arguments of one database's migrate (everything but the connections, slot and status
// file, which come per database: the connections through the environment).
std::vector<std::string> child_arguments(const migrate::MigrateOptions& o);

// The databases' status files as one: "phase" the least advanced of theirs (FAILED if any
// failed, or its migrate exited with a non-zero code in `failed_codes`), totals, and
// "databases" with each one's status.
std::string combined_status(const std::vector<SourceDatabase>& dbs, const std::vector<std::string>& statuses,
                            const std::string& slot, const std::vector<int>& failed_codes);

}  // namespace dts::server

#endif
