// Several databases of one server as one migration (`--databases a,b`, `--all-databases`):
// which databases, the conninfo of each, the slot of each, and each created on the target as
// the source has it (encoding, locale, owner, settings, privileges).
//
// Every command names a database's migration the same way, from the source database's OID (a
// database renamed meanwhile keeps its slot): slot `<slot>_db<oid>`.
#ifndef DTS_APPLIER_SERVER_DATABASES_HPP
#define DTS_APPLIER_SERVER_DATABASES_HPP

#include <string>
#include <vector>

#include "pg/connection.hpp"

namespace dts::server {

struct DatabaseScope {
  std::vector<std::string> names;  // --databases (comma-separated on the command line)
  bool all = false;                // --all-databases
  bool several() const { return all || !names.empty(); }
};

struct SourceDatabase {
  std::string name;
  uint32_t oid = 0;
  std::string slot;    // this database's migration
  std::string source;  // conninfos with dbname set to it
  std::string target;
};

// The databases the scope names on the source, in name order. --all-databases: every one that
// accepts connections but the templates. Throws Error(kConfig) for a name the source lacks.
std::vector<SourceDatabase> resolve(const DatabaseScope& scope, const std::string& source, const std::string& target,
                                    const std::string& slot);

// The same connection with another database (a conninfo or a postgresql:// URI; the result is a
// conninfo, with the password if the original had one: pass it through the environment).
std::string with_dbname(const std::string& conninfo, const std::string& dbname);

// Creates the database on the target as the source has it, if the target lacks it; returns
// whether it was created. Settings (ALTER DATABASE ... SET) and privileges come with a new one;
// an existing one is left as it is.
bool create_on_target(const pg::Connection& source, const pg::Connection& target, const SourceDatabase& db);

}  // namespace dts::server

#endif
