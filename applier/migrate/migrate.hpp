// `dts_applier migrate`: the online migration in one command. A slot with an exported snapshot;
// the schema's pre-data section restored with pg_dump/pg_restore in that snapshot; the data
// copied by parallel workers in the same snapshot; the post-data section (indexes,
// constraints, triggers) built after the data; sequence values; then follow from the slot's
// consistent point (mode incremental) or the slot dropped (mode full).
#ifndef DTS_APPLIER_MIGRATE_MIGRATE_HPP
#define DTS_APPLIER_MIGRATE_MIGRATE_HPP

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "follow/follow.hpp"
#include "pg/connection.hpp"

namespace dts::migrate {

struct MigrateOptions {
  std::string source;
  std::string target;
  std::string tables;   // the plugin's patterns (core/table_selection.hpp); empty: every table
  std::string exclude;
  int jobs = 2;
  uint64_t split_larger_than = 256ull * 1024 * 1024;  // bytes
  bool incremental = true;
  std::string slot = "dts_migrate";
  std::string status_file;
  std::optional<Lsn> until_lsn;  // incremental: stop following there
  std::string decoding_work_mem = "16MB";  // follow's stream options, as follow has them
  bool streaming = true;
  std::vector<std::string> skip_checks;
  double bandwidth_mb_per_s = 0;  // follow's read limit
  int apply_workers = 0;          // follow's target sessions (0: derived from the target)
  bool resume_auto = true;  // check items whose FAILED does not stop the start
  // Ownership and grants of the restored schema: by default every object keeps its source
  // owner (the target role must be able to assign it: check's `roles` item) and its grants.
  bool no_owner = false;       // pg_restore --no-owner: objects belong to the target role
  bool no_privileges = false;  // pg_restore --no-privileges: the source's GRANTs are left out
  bool roles = false;  // the source's roles on the target first (roles/roles.hpp)
};

int run_migrate(const MigrateOptions& options, const std::atomic<bool>& stop);

// Runs a program (no shell) and throws Error naming `what` with its stderr if it fails; its
// stdout goes to `out_path` if given. The password of a `-d` conninfo travels in PGPASSWORD.
void run_tool(std::vector<std::string> argv, const std::string& what, const std::string& private_dir,
              const std::string& out_path = "");

// Writes the list of a dump's entries for pg_restore -L (beside the dump) and returns its path:
// every entry but the grants on built-in (pg_catalog) objects, and the comments of extensions.
// Those grants are the server's administration, like roles (e.g. complete's EXECUTE on
// pg_reload_conf for the source role), and only a superuser could repeat them on the target;
// an extension's comment comes with CREATE EXTENSION, and only its owner may set it. Nor
// dts_decoding's extension and schema: the source's side of the migration, not the application's.
std::string restore_list(const std::string& dump);

// Sets every sequence of the target to the source's value plus `shift`; returns how many.
int copy_sequences(const pg::Connection& source, const pg::Connection& target, int64_t shift);

}  // namespace dts::migrate

#endif
