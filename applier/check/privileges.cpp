#include "check/privileges.hpp"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "common/private_dir.hpp"
#include "common/text.hpp"
#include "migrate/migrate.hpp"

namespace dts::check {
namespace {

using apply::quote_ident;

std::vector<std::string> column(const pqxx::result& r, int col = 0) {
  std::vector<std::string> out;
  for (const auto& row : r) out.emplace_back(row[col].c_str());
  return out;
}

// A FAILED (or WARNING) item whose fix is SQL for a superuser of one side: the statements
// appear in the fix as they are, followed by what else would do.
Item sql_item(std::string name, Status status, std::string reason, const std::string& side, const std::string& sql,
              const std::string& alternative = "") {
  Item i{std::move(name), status, std::move(reason), "on the " + side + ", as a superuser: " + sql, sql, side};
  if (!alternative.empty()) i.fix += " — or " + alternative;
  return i;
}

Item passed(std::string name, std::string reason) { return Item{std::move(name), Status::kPassed, std::move(reason), "", "", ""}; }

long version_of(pqxx::nontransaction& t) {
  return t.exec("SELECT current_setting('server_version_num')::int")[0][0].as<long>();
}

// A private directory for the schema dump, removed however the check ends.

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What pg_restore will create, as (classid, oid) pairs read from the dump's table of contents
// (`pg_restore -l`: "<id>; <classid> <oid> <kind> ..."); entries without a catalog row
// (comments, ACLs, data) have 0 0.
std::vector<std::pair<std::string, std::string>> toc_objects(const std::string& toc_path) {
  std::vector<std::pair<std::string, std::string>> out;
  std::ifstream in(toc_path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == ';') continue;
    std::istringstream words(line);
    std::string id, classid, oid;
    words >> id >> classid >> oid;
    bool numeric = !classid.empty() && !oid.empty() &&
                   classid.find_first_not_of("0123456789") == std::string::npos &&
                   oid.find_first_not_of("0123456789") == std::string::npos;
    if (numeric && classid != "0") out.emplace_back(classid, oid);
  }
  return out;
}

// The owners and the grantees of the objects in the dump, as the source's catalogs say, and
// the schemas their objects live in (a new owner needs CREATE there).
struct SchemaRoles {
  std::vector<std::string> owners;
  std::set<std::string> source_superusers;
  std::vector<std::string> grantees;  // named in grants, other than the object's own owner
  std::vector<std::pair<std::string, std::string>> owner_schemas;
};

SchemaRoles roles_of(pqxx::connection& src, const std::vector<std::pair<std::string, std::string>>& toc) {
  std::string classids, oids;
  for (const auto& [c, o] : toc) {
    classids += (classids.empty() ? "" : ",") + c;
    oids += (oids.empty() ? "" : ",") + o;
  }
  auto cat = [](const char* table, const char* owner, const char* acl, const char* nsp) {
    return std::string(" UNION ALL SELECT x.") + owner + ", " + acl + ", " + nsp + " FROM toc JOIN " + table +
           " x ON toc.classid = '" + table + "'::regclass AND x.oid = toc.objid";
  };
  std::string objects =
      "WITH toc AS (SELECT * FROM unnest('{" + classids + "}'::oid[], '{" + oids + "}'::oid[]) AS t(classid, objid)), "
      "obj(owner, acl, nsp) AS (SELECT c.relowner, a.attacl, NULL::oid FROM toc JOIN pg_class c ON toc.classid = "
      "'pg_class'::regclass AND c.oid = toc.objid JOIN pg_attribute a ON a.attrelid = c.oid AND a.attacl IS NOT NULL" +
      cat("pg_class", "relowner", "x.relacl", "x.relnamespace") + cat("pg_namespace", "nspowner", "x.nspacl", "NULL") +
      cat("pg_proc", "proowner", "x.proacl", "x.pronamespace") + cat("pg_type", "typowner", "x.typacl", "x.typnamespace") +
      cat("pg_default_acl", "defaclrole", "x.defaclacl", "NULL") + cat("pg_language", "lanowner", "x.lanacl", "NULL") +
      cat("pg_foreign_data_wrapper", "fdwowner", "x.fdwacl", "NULL") + cat("pg_foreign_server", "srvowner", "x.srvacl", "NULL") +
      cat("pg_collation", "collowner", "NULL", "x.collnamespace") + cat("pg_conversion", "conowner", "NULL", "x.connamespace") +
      cat("pg_operator", "oprowner", "NULL", "x.oprnamespace") + cat("pg_opclass", "opcowner", "NULL", "x.opcnamespace") +
      cat("pg_opfamily", "opfowner", "NULL", "x.opfnamespace") + cat("pg_ts_dict", "dictowner", "NULL", "x.dictnamespace") +
      cat("pg_ts_config", "cfgowner", "NULL", "x.cfgnamespace") + cat("pg_event_trigger", "evtowner", "NULL", "NULL") +
      cat("pg_publication", "pubowner", "NULL", "NULL") + cat("pg_statistic_ext", "stxowner", "NULL", "x.stxnamespace") + ") ";
  SchemaRoles out;
  pqxx::nontransaction t(src);
  for (const auto& row : t.exec(objects + "SELECT DISTINCT r.rolname, r.rolsuper FROM obj JOIN pg_roles r ON r.oid = obj.owner ORDER BY 1")) {
    out.owners.emplace_back(row[0].c_str());
    if (row[1].as<bool>()) out.source_superusers.insert(row[0].c_str());
  }
  out.grantees = column(t.exec(objects + "SELECT DISTINCT r.rolname FROM obj, aclexplode(obj.acl) a JOIN pg_roles r "
                                         "ON r.oid = a.grantee WHERE a.grantee <> obj.owner ORDER BY 1"));
  for (const auto& row : t.exec(objects + "SELECT DISTINCT r.rolname, n.nspname FROM obj JOIN pg_roles r ON r.oid = obj.owner "
                                          "JOIN pg_namespace n ON n.oid = obj.nsp ORDER BY 1, 2"))
    out.owner_schemas.emplace_back(row[0].c_str(), row[1].c_str());
  return out;
}

// roles: every owner must exist on the target and be one the target role may hand objects to
// (a member of it, with its privileges, for the copy and the apply); and it needs CREATE on a
// schema that already exists there (PostgreSQL's rule for a new owner). `created`: the roles
// whose CREATE ROLE this item's fix holds.
bool owners_item(const CheckOptions& o, const SchemaRoles& sr, pqxx::connection& tgt, std::vector<Item>& items,
                 std::set<std::string>& created) {
  pqxx::nontransaction t(tgt);
  std::string user = t.exec("SELECT current_user")[0][0].c_str();
  if (o.no_owner) {
    items.push_back(passed("roles", "every object will belong to " + user + " (--no-owner)" +
                                        (sr.owners.empty() ? "" : "; on the source they belong to " + shortened(sr.owners))));
    return true;
  }
  bool superuser = t.exec("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0][0].as<bool>();
  std::vector<std::string> problems, creates, grants, schema_grants, superusers;
  for (const auto& owner : sr.owners) {
    pqxx::result r = t.exec("SELECT rolsuper, pg_has_role(current_user, oid, 'USAGE') FROM pg_roles WHERE rolname = " +
                            t.quote(owner));
    bool missing = r.empty();
    bool target_super = !missing && r[0][0].as<bool>();
    if (superuser) {
      if (!missing) continue;
      creates.push_back("CREATE ROLE " + quote_ident(owner) + " NOLOGIN;");
      created.insert(owner);
      problems.push_back(owner + " (missing)");
    } else if ((missing && sr.source_superusers.count(owner) > 0) || target_super) {
      superusers.push_back(owner);
      problems.push_back(owner + " (a superuser)");
    } else if (missing || !r[0][1].as<bool>()) {
      if (missing) {
        creates.push_back("CREATE ROLE " + quote_ident(owner) + " NOLOGIN;");
        created.insert(owner);
      }
      grants.push_back("GRANT " + quote_ident(owner) + " TO " + quote_ident(user) + ";");
      problems.push_back(owner + (missing ? " (missing)" : " (" + user + " is not a member)"));
    }
  }
  for (const auto& [owner, schema] : sr.owner_schemas) {
    if (superuser || std::find(superusers.begin(), superusers.end(), owner) != superusers.end()) continue;
    bool exists = !t.exec("SELECT 1 FROM pg_roles WHERE rolname = " + t.quote(owner)).empty();
    pqxx::result s = t.exec("SELECT has_schema_privilege(" + t.quote(exists ? owner : "public") + ", oid, 'CREATE') "
                            "FROM pg_namespace WHERE nspname = " + t.quote(schema));
    if (s.empty() || s[0][0].as<bool>()) continue;  // created by the restore itself, or allowed
    schema_grants.push_back("GRANT CREATE ON SCHEMA " + quote_ident(schema) + " TO " + quote_ident(owner) + ";");
    problems.push_back(owner + " (no CREATE on schema " + schema + ")");
  }
  if (problems.empty()) {
    items.push_back(passed("roles", sr.owners.empty() ? "the schema has no owned objects"
                                                      : "objects keep their source owners, which " + user +
                                                            " may assign on the target: " + shortened(sr.owners)));
    return true;
  }
  std::string reason = "the source's objects belong to roles that " + user + " cannot make owners on the target: " +
                       shortened(problems);
  std::string no_owner = "migrate with --no-owner (every object then belongs to " + user + ")";
  if (!superusers.empty()) {
    items.push_back(Item{"roles", Status::kFailed, reason, no_owner + "; objects owned by a superuser (" +
                                                              joined(superusers) + ") cannot be given to it by " + user, "", ""});
    created.clear();
    return false;
  }
  std::vector<std::string> all = creates;
  all.insert(all.end(), grants.begin(), grants.end());
  all.insert(all.end(), schema_grants.begin(), schema_grants.end());
  items.push_back(sql_item("roles", Status::kFailed, reason, "target", joined(all, " "),
                           no_owner + " (pg_dumpall --roles-only on the source gives the roles' attributes)"));
  return false;
}

// grant_roles: the roles the source's GRANTs name must exist on the target.
bool grantees_item(const CheckOptions& o, const SchemaRoles& sr, pqxx::connection& tgt, std::vector<Item>& items,
                   const std::set<std::string>& created) {
  if (o.no_privileges) {
    items.push_back(passed("grant_roles", "the source's grants are left out (--no-privileges)"));
    return true;
  }
  pqxx::nontransaction t(tgt);
  std::vector<std::string> missing, creates;
  for (const auto& g : sr.grantees) {
    if (created.count(g) > 0 || !t.exec("SELECT 1 FROM pg_roles WHERE rolname = " + t.quote(g)).empty()) continue;
    missing.push_back(g);
    creates.push_back("CREATE ROLE " + quote_ident(g) + " NOLOGIN;");
  }
  if (missing.empty()) {
    items.push_back(passed("grant_roles", sr.grantees.empty() ? "the schema has no grants to roles"
                                                              : "every role the source's grants name exists on the target"));
    return true;
  }
  items.push_back(sql_item("grant_roles", Status::kFailed,
                           "the source's grants name roles missing on the target: " + shortened(missing), "target",
                           joined(creates, " "), "migrate with --no-privileges (the source's grants are then left out)"));
  return false;
}

// The SQL pg_restore would run, without psql's meta-commands (\restrict).
std::string restore_script(const CheckOptions& o, const std::string& dump, const std::string& dir, const char* section) {
  std::string out_path = dir + "/" + section + ".sql";
  std::vector<std::string> args = {"pg_restore", std::string("--section=") + section, "-f", out_path, "-L",
                                   migrate::restore_list(dump)};
  if (o.no_owner) args.emplace_back("--no-owner");
  if (o.no_privileges) args.emplace_back("--no-privileges");
  args.push_back(dump);
  migrate::run_tool(args, std::string("pg_restore --section=") + section + " to a file", dir);
  std::istringstream in(read_file(out_path));
  std::string line, script;
  while (std::getline(in, line))
    if (line.empty() || line[0] != '\\') script += line + "\n";
  return script;
}

// A failed trial's fix, from PostgreSQL's message, where it names what is missing.
Item trial_failure(const std::string& message, const std::string& user, bool others_ok) {
  std::string reason = "restoring the schema as " + user + " failed (tried, rolled back): " + message;
  if (!others_ok)
    return Item{"schema_restore", Status::kFailed, reason,
                "fix the roles, grant_roles and extension_create items first; this follows from them",
                "", ""};
  std::smatch m;
  if (std::regex_search(message, m, std::regex("must be member of role \"([^\"]+)\"")))
    return sql_item("schema_restore", Status::kFailed, reason, "target", "GRANT " + quote_ident(m[1].str()) + " TO " +
                    quote_ident(user) + ";", "migrate with --no-owner");
  if (std::regex_search(message, m, std::regex("role \"([^\"]+)\" does not exist")))
    return sql_item("schema_restore", Status::kFailed, reason, "target", "CREATE ROLE " + quote_ident(m[1].str()) +
                    " NOLOGIN;", "migrate with --no-privileges and --no-owner");
  return Item{"schema_restore", Status::kFailed, reason,
              "grant " + user + " what the message names on the target, or migrate with --no-owner / --no-privileges", "", ""};
}

}  // namespace

void check_extension_create(std::vector<Item>& items, pqxx::connection& src, pqxx::connection& tgt) {
  std::vector<std::pair<std::string, std::string>> wanted;  // name, statement
  {
    pqxx::nontransaction s(src);
    pqxx::nontransaction t(tgt);
    for (const auto& row : s.exec("SELECT e.extname, e.extrelocatable, n.nspname FROM pg_extension e "
                                  "JOIN pg_namespace n ON n.oid = e.extnamespace "
                                  "WHERE e.extname NOT IN ('plpgsql', 'dts_decoding') ORDER BY 1")) {  // (not restored)
      std::string name = row[0].c_str(), schema = row[2].c_str();
      if (!t.exec("SELECT 1 FROM pg_extension WHERE extname = " + t.quote(name)).empty()) continue;
      if (t.exec("SELECT 1 FROM pg_available_extensions WHERE name = " + t.quote(name)).empty()) continue;  // extensions
      bool in_place = row[1].as<bool>() && !t.exec("SELECT 1 FROM pg_namespace WHERE nspname = " + t.quote(schema)).empty();
      wanted.emplace_back(name, "CREATE EXTENSION IF NOT EXISTS " + quote_ident(name) +
                                    (in_place ? " WITH SCHEMA " + quote_ident(schema) : "") + " CASCADE;");
    }
  }
  std::vector<std::string> refused, statements;
  std::string why;
  for (const auto& [name, sql] : wanted) {
    try {
      pqxx::work w(tgt);
      w.exec(sql);
      w.abort();
    } catch (const pqxx::sql_error& e) {
      refused.push_back(name);
      statements.push_back(sql);
      if (why.empty()) why = first_line(e.what());
    }
  }
  if (refused.empty()) {
    items.push_back(passed("extension_create", wanted.empty() ? "the target has every extension of the source already"
                                                              : "the target role can create the source's extensions (tried)"));
    return;
  }
  items.push_back(sql_item("extension_create", Status::kFailed,
                           "the target role may not create these extensions of the source: " + joined(refused) + " (" + why +
                               ")", "target", joined(statements, " ")));
}

void check_schema_restore(const CheckOptions& o, std::vector<Item>& items, pqxx::connection& src, pqxx::connection& tgt) {
  std::string user;
  bool has_tables;
  {
    pqxx::nontransaction t(tgt);
    user = t.exec("SELECT current_user")[0][0].c_str();
    has_tables = !t.exec("SELECT 1 FROM pg_stat_user_tables WHERE schemaname <> 'dts' LIMIT 1").empty();
  }
  PrivateDir dir("dts-check");
  std::string dump = dir.path + "/schema.dump";
  std::vector<std::string> args = {"pg_dump", "-d", o.source, "--schema-only", "-Fc", "-f", dump};
  if (!o.tables.empty() || !o.exclude.empty()) {
    pqxx::nontransaction t(src);
    // As migrate does: everything but the tables that are left out.
    for (const auto& name : core::left_out_of_dump(compile_selection(o, t))) args.insert(args.end(), {"-T", name});
  }
  std::vector<std::pair<std::string, std::string>> toc;
  try {
    migrate::run_tool(args, "pg_dump --schema-only", dir.path);
    toc = toc_objects(migrate::restore_list(dump));  // what migrate restores
  } catch (const Error& e) {
    items.push_back(Item{"schema_restore", Status::kFailed, "dumping the schema as the source role failed: " +
                         first_line(e.what()), "fix read_privilege first: the source role must be able to read what it dumps",
                         "", ""});
    return;
  }
  SchemaRoles sr = roles_of(src, toc);
  // read_privilege's fix grants the source role SELECT on what it dumps: its grants then travel
  // with the schema, and the role must exist on the target too.
  for (const auto& i : items) {
    if (i.name != "read_privilege" || i.status != Status::kFailed || i.fix_sql.empty()) continue;
    pqxx::nontransaction t(src);
    std::string me = t.exec("SELECT current_user")[0][0].c_str();
    if (std::find(sr.grantees.begin(), sr.grantees.end(), me) == sr.grantees.end()) sr.grantees.push_back(me);
  }
  std::set<std::string> created;
  bool owners_ok = owners_item(o, sr, tgt, items, created);
  bool grantees_ok = grantees_item(o, sr, tgt, items, created);
  if (o.resuming || has_tables) {
    items.push_back(passed("schema_restore", o.resuming ? "not tried: a migration is resuming (its first run restored it)"
                                                        : "not tried: the target already has tables (see target_empty)"));
    return;
  }
  std::string script = restore_script(o, dump, dir.path, "pre-data") + restore_script(o, dump, dir.path, "post-data");
  try {
    pqxx::work w(tgt);
    // Named for what it is, in pg_stat_activity and for the target's own event triggers.
    w.exec("SET LOCAL application_name = 'dts_check:schema_restore'");
    w.exec(script);
    w.abort();
  } catch (const pqxx::sql_error& e) {
    if (e.sqlstate() == "53200") {  // a very large schema: more locks than one transaction may hold
      items.push_back(Item{"schema_restore", Status::kWarning, "not tried: the schema needs more locks than one "
                           "transaction may take on the target (" + first_line(e.what()) + ")",
                           "make sure the roles, grant_roles and extension_create items pass", "", ""});
      return;
    }
    bool extensions_ok = std::none_of(items.begin(), items.end(), [](const Item& i) {
      return i.name == "extension_create" && i.status == Status::kFailed;
    });
    items.push_back(trial_failure(first_line(e.what()), user, owners_ok && grantees_ok && extensions_ok));
    return;
  } catch (const std::exception& e) {
    items.push_back(Item{"schema_restore", Status::kFailed, "could not try the schema's restore: " + first_line(e.what()),
                         "check the target's conninfo and run check again", "", ""});
    return;
  }
  items.push_back(passed("schema_restore", "the schema (" + std::to_string(toc.size()) + " objects) restores as " + user +
                                               " on the target (tried in a transaction, rolled back)"));
}

void check_read_privileges(const CheckOptions& o, std::vector<Item>& items, pqxx::connection& src) {
  pqxx::nontransaction t(src);
  std::string selected = "SELECT unnest(" + compile_selection(o, t).oid_array_sql() + ")";
  std::string user = t.exec("SELECT current_user")[0][0].c_str();
  std::vector<std::string> tables = column(t.exec(
      "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.oid IN (" + selected + ") AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1"));
  // The sequences the cutover copies: those of the selected tables and those of no table.
  std::string sequences_sql =
      "SELECT c.oid, c.relnamespace FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dts') AND n.nspname NOT LIKE 'pg\\_%' "
      "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
      "AND (d.deptype = 'e' OR (d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
      "AND d.refobjid NOT IN (" + selected + "))))";
  std::vector<std::string> sequences = column(t.exec(
      "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.oid IN (SELECT oid FROM (" + sequences_sql + ") s) AND NOT has_sequence_privilege(c.oid, 'SELECT,USAGE') "
      "ORDER BY 1"));
  std::vector<std::string> schemas = column(t.exec(
      "SELECT DISTINCT quote_ident(n.nspname) FROM pg_namespace n WHERE (n.oid IN (SELECT c.relnamespace FROM pg_class c "
      "WHERE c.oid IN (" + selected + ")) OR n.oid IN (SELECT relnamespace FROM (" + sequences_sql + ") s)) "
      "AND NOT has_schema_privilege(n.oid, 'USAGE') ORDER BY 1"));
  if (tables.empty() && sequences.empty() && schemas.empty()) {
    items.push_back(passed("read_privilege", "role " + user + " can read every selected table and sequence"));
    return;
  }
  std::string who = quote_ident(user);
  std::string sql;
  if (!schemas.empty()) sql += "GRANT USAGE ON SCHEMA " + joined(schemas) + " TO " + who + ";";
  if (!tables.empty()) sql += std::string(sql.empty() ? "" : " ") + "GRANT SELECT ON TABLE " + joined(tables) + " TO " + who + ";";
  if (!sequences.empty())
    sql += std::string(sql.empty() ? "" : " ") + "GRANT SELECT ON SEQUENCE " + joined(sequences) + " TO " + who + ";";
  std::string reason = "role " + user + " cannot read:";
  if (!tables.empty()) reason += " tables " + shortened(tables);
  if (!sequences.empty()) reason += std::string(tables.empty() ? "" : ";") + " sequences " + shortened(sequences) +
                                    " (the cutover would copy them as never used)";
  if (!schemas.empty()) reason += std::string(tables.empty() && sequences.empty() ? "" : ";") + " schemas " + joined(schemas);
  items.push_back(sql_item("read_privilege", Status::kFailed, reason, "source", sql, "GRANT pg_read_all_data TO " + who + ";"));
}

std::string read_only_missing_sql(bool database_scope, long server_version) {
  // Each row: whether the privilege is missing, and the statement that grants it.
  std::string rows;
  if (database_scope) {
    rows = "(NOT pg_has_role(current_user, (SELECT datdba FROM pg_database WHERE datname = current_database()), 'MEMBER'), "
           "format('ALTER DATABASE %I OWNER TO %I;', current_database(), current_user))";
  } else if (server_version >= 150000) {
    rows = "(NOT has_parameter_privilege('default_transaction_read_only', 'ALTER SYSTEM'), "
           "format('GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only TO %I;', current_user)), "
           "(NOT has_function_privilege('pg_reload_conf()', 'EXECUTE'), "
           "format('GRANT EXECUTE ON FUNCTION pg_reload_conf() TO %I;', current_user))";
  } else {
    // Before PostgreSQL 15 only a superuser may ALTER SYSTEM.
    rows = "(NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), format('ALTER ROLE %I SUPERUSER;', current_user))";
  }
  // Seeing the other sessions' transactions (drain) and ending those that do not end.
  rows += ", (NOT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), format('GRANT pg_read_all_stats TO %I;', current_user))"
          ", (NOT pg_has_role(current_user, 'pg_signal_backend', 'USAGE'), format('GRANT pg_signal_backend TO %I;', current_user))";
  return "SELECT coalesce(string_agg(stmt, ' '), '') FROM (VALUES " + rows + ") AS v(missing, stmt) WHERE missing";
}

void check_read_only_switch(std::vector<Item>& items, pqxx::connection& src) {
  pqxx::nontransaction t(src);
  long version = version_of(t);
  std::string cluster = t.exec(read_only_missing_sql(false, version))[0][0].c_str();
  std::string database = t.exec(read_only_missing_sql(true, version))[0][0].c_str();
  std::string user = t.exec("SELECT current_user")[0][0].c_str();
  if (cluster.empty()) {
    items.push_back(passed("read_only_switch", "role " + user + " can make the source read-only at the cutover "
                                               "(ALTER SYSTEM, reload) and see and end the sessions still writing"));
  } else if (database.empty()) {
    items.push_back(sql_item("read_only_switch", Status::kWarning,
                             "role " + user + " can make only this database read-only: run complete with "
                             "--read-only-scope database, or grant what the cluster scope needs",
                             "source", cluster));
  } else {
    items.push_back(sql_item("read_only_switch", Status::kFailed,
                             "role " + user + " cannot make the source read-only at the cutover (complete)", "source",
                             cluster, "for complete --read-only-scope database: " + database));
  }
}

void check_target_privileges(std::vector<Item>& items, pqxx::connection& tgt) {
  static const char* const kOriginFunctions[] = {
      "pg_replication_origin_create(text)", "pg_replication_origin_oid(text)",
      "pg_replication_origin_session_setup(text)", "pg_replication_origin_xact_setup(pg_lsn, timestamptz)",
      "pg_replication_origin_progress(text, boolean)", "pg_replication_origin_session_reset()",
      "pg_replication_origin_drop(text)"};
  std::string user, db, who;
  std::string sql;
  std::vector<std::string> lacks;
  {
    pqxx::nontransaction t(tgt);
    user = t.exec("SELECT current_user")[0][0].c_str();
    db = t.exec("SELECT current_database()")[0][0].c_str();
    who = quote_ident(user);
    bool superuser = t.exec("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0][0].as<bool>();
    if (!t.exec("SELECT has_database_privilege(current_database(), 'CREATE')")[0][0].as<bool>()) {
      sql += "GRANT CREATE ON DATABASE " + quote_ident(db) + " TO " + who + ";";
      lacks.emplace_back("CREATE on the database");
    }
    std::vector<std::string> functions;
    for (const char* f : kOriginFunctions)
      if (!t.exec("SELECT has_function_privilege(" + t.quote(f) + ", 'EXECUTE')")[0][0].as<bool>()) functions.emplace_back(f);
    if (!functions.empty()) {
      sql += std::string(sql.empty() ? "" : " ") + "GRANT EXECUTE ON FUNCTION " + joined(functions) + " TO " + who + ";";
      lacks.emplace_back("the replication origin functions");
    }
    bool can_set = superuser || (version_of(t) >= 150000 &&
                                 t.exec("SELECT has_parameter_privilege('session_replication_role', 'SET')")[0][0].as<bool>());
    if (!can_set) {
      sql += std::string(sql.empty() ? "" : " ") +
             (version_of(t) >= 150000 ? "GRANT SET ON PARAMETER session_replication_role TO " + who + ";"
                                      : "ALTER ROLE " + who + " SUPERUSER;");
      lacks.emplace_back("SET session_replication_role");
    }
  }
  if (!sql.empty()) {
    items.push_back(sql_item("target_privileges", Status::kFailed, "role " + user + " lacks " + joined(lacks), "target", sql));
    return;
  }
  // Tried as the applier does it, then rolled back.
  try {
    pqxx::work w(tgt);
    w.exec("SET LOCAL session_replication_role = replica");
    w.exec("SELECT pg_replication_origin_oid('dts_check')");
    w.abort();
  } catch (const std::exception& e) {
    items.push_back(Item{"target_privileges", Status::kFailed, "tried as the applier does: " + first_line(e.what()),
                         "grant role " + user + " what the message names on the target", "", ""});
    return;
  }
  items.push_back(passed("target_privileges", "role " + user + " can create objects, use replication origins and set "
                                              "session_replication_role (tried)"));
}

}  // namespace dts::check
