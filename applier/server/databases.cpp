#include "server/databases.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/error.hpp"
#include "common/text.hpp"
#include "pg/quote.hpp"
#include "roles/roles.hpp"

namespace dts::server {
namespace {

using pg::quote_ident;
using pg::quote_literal;

std::string shown_list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The source's privileges on the database, as GRANTs (its owner's are implicit). A database
// whose ACL was never changed has the defaults a new one gets.
std::vector<std::string> privilege_statements(const pg::Connection& source, const SourceDatabase& db) {
  pg::Result r = source.exec_params(
      "SELECT a.grantee = 0, coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), ''), a.privilege_type, a.is_grantable "
      "FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = $1 AND a.grantee <> d.datdba ORDER BY 1 DESC, 2, 3",
      {std::to_string(db.oid)});
  std::string acl_set = source.query_value("SELECT datacl IS NOT NULL FROM pg_database WHERE oid = $1", {std::to_string(db.oid)});
  std::vector<std::string> out;
  if (acl_set != "t") return out;
  out.push_back("REVOKE ALL ON DATABASE " + quote_ident(db.name) + " FROM PUBLIC");
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::string grantee = PQgetvalue(r.get(), i, 0)[0] == 't' ? "PUBLIC" : quote_ident(PQgetvalue(r.get(), i, 1));
    out.push_back(std::string("GRANT ") + PQgetvalue(r.get(), i, 2) + " ON DATABASE " + quote_ident(db.name) + " TO " +
                  grantee + (PQgetvalue(r.get(), i, 3)[0] == 't' ? " WITH GRANT OPTION" : ""));
  }
  return out;
}

std::string create_database_sql(const pg::Connection& source, const pg::Connection& target, const SourceDatabase& db) {
  // The locale provider came in 15 (ICU), its locale column was renamed in 17 (with 'b', builtin).
  long version = std::stol(source.query_value("SELECT current_setting('server_version_num')"));
  std::string provider = version >= 150000 ? "datlocprovider" : "'c'";
  std::string locale = version >= 170000 ? "coalesce(datlocale, '')" : version >= 150000 ? "coalesce(daticulocale, '')" : "''";
  pg::Result r = source.exec_params(
      "SELECT pg_encoding_to_char(encoding), datcollate, datctype, " + provider + ", " + locale + ", "
      "pg_get_userbyid(datdba), datconnlimit FROM pg_database WHERE oid = $1", {std::to_string(db.oid)});
  if (PQntuples(r.get()) != 1) throw Error(ErrorKind::kSource, "database " + db.name + " is gone from the source");
  std::string sql = "CREATE DATABASE " + quote_ident(db.name) + " WITH TEMPLATE template0 ENCODING " +
                    quote_literal(PQgetvalue(r.get(), 0, 0)) + " LC_COLLATE " + quote_literal(PQgetvalue(r.get(), 0, 1)) +
                    " LC_CTYPE " + quote_literal(PQgetvalue(r.get(), 0, 2));
  char provider_kind = PQgetvalue(r.get(), 0, 3)[0];
  if (provider_kind == 'i') sql += " LOCALE_PROVIDER icu ICU_LOCALE " + quote_literal(PQgetvalue(r.get(), 0, 4));
  if (provider_kind == 'b') sql += " LOCALE_PROVIDER builtin BUILTIN_LOCALE " + quote_literal(PQgetvalue(r.get(), 0, 4));
  std::string owner = PQgetvalue(r.get(), 0, 5);
  if (target.query_value("SELECT count(*) FROM pg_roles WHERE rolname = $1", {owner}) == "1")
    sql += " OWNER " + quote_ident(owner);
  else
    spdlog::warn("database {}: its owner {} is not a role of the target: it belongs to the target role "
                 "(migrate --roles copies the roles first)", db.name, owner);
  return sql + " CONNECTION LIMIT " + PQgetvalue(r.get(), 0, 6);
}

}  // namespace

std::vector<SourceDatabase> resolve(const DatabaseScope& scope, const std::string& source, const std::string& target,
                                    const std::string& slot) {
  pg::Connection src = pg::Connection::open(source, "source");
  pg::Result r = src.exec("SELECT datname, oid FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1");
  std::vector<SourceDatabase> out;
  std::vector<std::string> unknown = scope.names;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::string name = PQgetvalue(r.get(), i, 0);
    auto named = std::find(unknown.begin(), unknown.end(), name);
    if (!scope.all && named == unknown.end()) continue;
    if (named != unknown.end()) unknown.erase(named);
    SourceDatabase db;
    db.name = name;
    db.oid = static_cast<uint32_t>(std::strtoul(PQgetvalue(r.get(), i, 1), nullptr, 10));
    db.slot = slot + "_db" + std::to_string(db.oid);
    db.source = pg::conninfo_with_dbname(source, name);
    db.target = pg::conninfo_with_dbname(target, name);
    out.push_back(std::move(db));
  }
  if (!unknown.empty())
    throw Error(ErrorKind::kConfig, "--databases names databases the source does not have (or that do not accept "
                                    "connections): " + shown_list(unknown) + "; list them with \\l in psql");
  if (out.empty()) throw Error(ErrorKind::kConfig, "no database to migrate");
  for (const auto& db : out)
    if (db.slot.size() > 63)
      throw Error(ErrorKind::kConfig, "slot " + db.slot + " would be longer than 63 characters: pass a shorter --slot");
  return out;
}

bool create_on_target(const pg::Connection& source, const pg::Connection& target, const SourceDatabase& db) {
  if (target.query_value("SELECT count(*) FROM pg_database WHERE datname = $1", {db.name}) == "1") return false;
  std::string sql = create_database_sql(source, target, db);
  spdlog::info("database {}: {}", db.name, sql);
  target.exec(sql);
  // The database's settings, and its roles' (ALTER ROLE ... IN DATABASE: the roles exist by now).
  pg::Result settings = source.exec_params(
      "SELECT coalesce(pg_get_userbyid(NULLIF(setrole, 0)), ''), unnest(setconfig) FROM pg_db_role_setting "
      "WHERE setdatabase = $1 ORDER BY 1, 2", {std::to_string(db.oid)});
  std::vector<std::string> statements = privilege_statements(source, db);
  for (int i = 0; i < PQntuples(settings.get()); ++i) {
    std::string role = PQgetvalue(settings.get(), i, 0), setting = PQgetvalue(settings.get(), i, 1);
    statements.push_back(role.empty() ? "ALTER DATABASE " + quote_ident(db.name) + roles::set_clause(setting)
                                      : roles::setting_statement(role, setting, db.name));
  }
  for (const auto& s : statements) {
    try {
      target.exec(s);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kConnection) throw;
      spdlog::warn("database {}: the target refused `{}` ({}): run it there as a role allowed to", db.name, s,
                   first_line(e.what()));
    }
  }
  return true;
}

}  // namespace dts::server
