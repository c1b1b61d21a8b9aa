#include "roles/roles.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/error.hpp"
#include "common/text.hpp"
#include "pg/quote.hpp"

namespace dts::roles {
namespace {

using pg::quote_ident;
using pg::quote_literal;

bool is_true(const PGresult* r, int row, int col) { return PQgetvalue(r, row, col)[0] == 't'; }

// The attributes of roles, as pg_roles has them, by name.
std::map<std::string, Role> read_roles(const pg::Connection& c) {
  pg::Result r = c.exec(
      "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls, "
      "rolconnlimit, CASE WHEN rolvaliduntil IS NULL THEN NULL WHEN isfinite(rolvaliduntil) THEN "
      "to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' ELSE rolvaliduntil::text END "
      "FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY rolname");
  std::map<std::string, Role> out;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    Role role;
    role.name = PQgetvalue(r.get(), i, 0);
    role.superuser = is_true(r.get(), i, 1);
    role.inherit = is_true(r.get(), i, 2);
    role.create_role = is_true(r.get(), i, 3);
    role.create_db = is_true(r.get(), i, 4);
    role.login = is_true(r.get(), i, 5);
    role.replication = is_true(r.get(), i, 6);
    role.bypass_rls = is_true(r.get(), i, 7);
    role.conn_limit = std::atoi(PQgetvalue(r.get(), i, 8));
    if (!PQgetisnull(r.get(), i, 9)) role.valid_until = PQgetvalue(r.get(), i, 9);
    out.emplace(role.name, std::move(role));
  }
  return out;
}

// The stored verifiers, if this role may read pg_authid (a superuser may; a managed service's
// administrator may not). Absent verifiers (no password) are not in the map.
std::optional<std::map<std::string, std::string>> read_verifiers(const pg::Connection& c) {
  try {
    pg::Result r = c.exec("SELECT rolname, rolpassword FROM pg_authid WHERE rolname !~ '^pg_' AND rolpassword IS NOT NULL");
    std::map<std::string, std::string> out;
    for (int i = 0; i < PQntuples(r.get()); ++i) out.emplace(PQgetvalue(r.get(), i, 0), PQgetvalue(r.get(), i, 1));
    return out;
  } catch (const Error& e) {
    if (e.sqlstate() != "42501") throw;  // insufficient_privilege: a managed source
    return std::nullopt;
  }
}

// Each role's settings: for every database, and for the current one.
void read_settings(const pg::Connection& c, std::map<std::string, Role>& roles) {
  pg::Result r = c.exec(
      "SELECT r.rolname, s.setdatabase = 0, unnest(s.setconfig) FROM pg_db_role_setting s "
      "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname !~ '^pg_' AND (s.setdatabase = 0 OR "
      "s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())) ORDER BY 1, 2 DESC, 3");
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    auto it = roles.find(PQgetvalue(r.get(), i, 0));
    if (it == roles.end()) continue;
    (is_true(r.get(), i, 1) ? it->second.settings : it->second.db_settings).push_back(PQgetvalue(r.get(), i, 2));
  }
}

std::vector<Membership> read_memberships(const pg::Connection& c) {
  pg::Result r = c.exec(
      "SELECT r.rolname, m.rolname, am.admin_option FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid "
      "JOIN pg_roles m ON m.oid = am.member WHERE m.rolname !~ '^pg_' ORDER BY 1, 2");
  std::vector<Membership> out;
  for (int i = 0; i < PQntuples(r.get()); ++i)
    out.push_back(Membership{PQgetvalue(r.get(), i, 0), PQgetvalue(r.get(), i, 1), is_true(r.get(), i, 2)});
  return out;
}

// Privileges on parameters and tablespaces given to roles (not their owners': implicit; not the
// bootstrap superuser's, whose name differs between servers).
std::set<GlobalGrant> read_grants(const pg::Connection& c) {
  const char* grantee = "coalesce(pg_get_userbyid(NULLIF(a.grantee, 0)), ''), a.privilege_type, a.is_grantable ";
  std::string sql = std::string("SELECT 'TABLESPACE', t.spcname, ") + grantee +
                    "FROM pg_tablespace t, aclexplode(t.spcacl) a "
                    "WHERE t.spcname NOT IN ('pg_default', 'pg_global') AND a.grantee <> t.spcowner";
  if (std::atoi(c.query_value("SHOW server_version_num").c_str()) >= 150000)
    sql += std::string(" UNION ALL SELECT 'PARAMETER', p.parname, ") + grantee +
           "FROM pg_parameter_acl p, aclexplode(p.paracl) a WHERE a.grantee <> 10";
  pg::Result r = c.exec(sql);
  std::set<GlobalGrant> out;
  for (int i = 0; i < PQntuples(r.get()); ++i)
    out.insert(GlobalGrant{PQgetvalue(r.get(), i, 0), PQgetvalue(r.get(), i, 1), PQgetvalue(r.get(), i, 2),
                           PQgetvalue(r.get(), i, 3), is_true(r.get(), i, 4)});
  return out;
}

// Settings whose value is a list of names, which ALTER ROLE takes as separate literals
// (pg_dump's variable_is_guc_list_quote).
bool list_setting(const std::string& name) {
  static const std::set<std::string> lists = {"local_preload_libraries", "search_path", "session_preload_libraries",
                                              "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"};
  return lists.count(name) > 0;
}

// "a, \"B c\"" as the literals 'a', 'B c'.
std::string list_literals(const std::string& value) {
  std::vector<std::string> items;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < value.size(); ++i) {
    char ch = value[i];
    if (quoted) {
      if (ch == '"' && i + 1 < value.size() && value[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        cur += ch;
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      items.push_back(cur);
      cur.clear();
    } else if (ch != ' ' || !cur.empty()) {
      cur += ch;
    }
  }
  items.push_back(cur);
  std::string out;
  for (auto& item : items) {
    while (!item.empty() && item.back() == ' ') item.pop_back();
    out += (out.empty() ? "" : ", ") + quote_literal(item);
  }
  return out;
}

// The attributes that differ between a source role and the target's, as ALTER ROLE options.
std::vector<std::string> differing_options(const Role& want, const Role& have) {
  std::vector<std::string> out;
  auto flag = [&out](bool w, bool h, const char* name) {
    if (w != h) out.push_back(std::string(w ? "" : "NO") + name);
  };
  flag(want.superuser, have.superuser, "SUPERUSER");
  flag(want.inherit, have.inherit, "INHERIT");
  flag(want.create_role, have.create_role, "CREATEROLE");
  flag(want.create_db, have.create_db, "CREATEDB");
  flag(want.login, have.login, "LOGIN");
  flag(want.replication, have.replication, "REPLICATION");
  flag(want.bypass_rls, have.bypass_rls, "BYPASSRLS");
  if (want.conn_limit != have.conn_limit) out.push_back("CONNECTION LIMIT " + std::to_string(want.conn_limit));
  if (want.valid_until != have.valid_until && want.valid_until)
    out.push_back("VALID UNTIL " + quote_literal(*want.valid_until));
  return out;
}

struct TargetState {
  std::map<std::string, Role> roles;
  std::optional<std::map<std::string, std::string>> verifiers;
  std::set<std::pair<std::string, std::string>> memberships;
  std::set<std::pair<std::string, std::string>> settings;  // role, "name=value" (every database)
  std::set<GlobalGrant> grants;
  std::set<std::string> tablespaces;
  bool superuser = false;
};

TargetState read_target(const pg::Connection& target) {
  TargetState t;
  t.roles = read_roles(target);
  t.verifiers = read_verifiers(target);
  for (const auto& m : read_memberships(target)) t.memberships.emplace(m.role, m.member);
  read_settings(target, t.roles);
  for (const auto& [name, role] : t.roles)
    for (const auto& s : role.settings) t.settings.emplace(name, s);
  t.grants = read_grants(target);
  pg::Result spaces = target.exec("SELECT spcname FROM pg_tablespace");
  for (int i = 0; i < PQntuples(spaces.get()); ++i) t.tablespaces.insert(PQgetvalue(spaces.get(), i, 0));
  t.superuser = target.query_value("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == "t";
  return t;
}

std::string joined_options(const std::vector<std::string>& options) {
  std::string out;
  for (const auto& o : options) out += " " + o;
  return out;
}

class RoleCopier {
 public:
  RoleCopier(const pg::Connection& target, bool dry_run)
      : target_(target), dry_run_(dry_run), state_(read_target(target)), database_(target.query_value("SELECT current_database()")) {}

  void role(const Role& role, RolesReport& report);
  void membership(const Membership& m, RolesReport& report);
  void settings(const Role& role, RolesReport& report);
  void grant(const GlobalGrant& g, RolesReport& report);

 private:
  // Runs `sql` unless dry; a refusal becomes a note with the statement to run.
  bool run(const std::string& sql, const std::string& shown, const std::string& role, RolesReport& report);
  void existing(const Role& want, const Role& have, RolesReport& report);

  const pg::Connection& target_;
  bool dry_run_;
  TargetState state_;
  std::string database_;
  std::set<std::string> created_;
};

bool RoleCopier::run(const std::string& sql, const std::string& shown, const std::string& role, RolesReport& report) {
  if (dry_run_) return true;
  try {
    target_.exec(sql);
    return true;
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kConnection) throw;
    report.notes.push_back(RoleNote{RoleNote::Kind::kRefused, role, "the target refused it: " + first_line(e.what()), shown});
    return false;
  }
}

void RoleCopier::role(const Role& role, RolesReport& report) {
  auto have = state_.roles.find(role.name);
  if (have != state_.roles.end()) {
    existing(role, have->second, report);
    return;
  }
  bool privileged = role.superuser || role.replication || role.bypass_rls;
  bool plain = privileged && !state_.superuser;  // only a superuser gives those attributes
  std::string sql = create_statement(role, plain);
  std::string shown = sql;
  if (role.verifier) {
    sql += " PASSWORD " + quote_literal(*role.verifier);
    shown += " PASSWORD '<the source''s verifier>'";
  }
  if (!run(sql, shown, role.name, report)) return;
  created_.insert(role.name);
  report.created++;
  report.notes.push_back(RoleNote{RoleNote::Kind::kCreated, role.name,
                                  std::string(dry_run_ ? "to be created" : "created") +
                                      (role.verifier ? ", with the source's password verifier" : ""), ""});
  if (plain) {
    Role none = role;
    none.superuser = none.replication = none.bypass_rls = false;
    report.notes.push_back(RoleNote{RoleNote::Kind::kRefused, role.name,
                                    "only a superuser of the target can give it the attributes it has on the source",
                                    "ALTER ROLE " + quote_ident(role.name) + joined_options(differing_options(role, none)) + ";"});
  }
  if (!role.verifier && role.login && !report.verifiers_readable)
    report.notes.push_back(RoleNote{RoleNote::Kind::kNoPassword, role.name,
                                    "the source does not let us read its password verifier (pg_authid): it has none here",
                                    "ALTER ROLE " + quote_ident(role.name) + " PASSWORD '<its password>';"});
}

void RoleCopier::existing(const Role& want, const Role& have, RolesReport& report) {
  report.existing++;
  std::vector<std::string> options = differing_options(want, have);
  if (!options.empty())
    report.notes.push_back(RoleNote{RoleNote::Kind::kDiffers, want.name,
                                    "exists on the target with other attributes: left as it is",
                                    "ALTER ROLE " + quote_ident(want.name) + joined_options(options) + ";"});
  if (want.verifier && state_.verifiers) {
    auto v = state_.verifiers->find(want.name);
    if (v == state_.verifiers->end() || v->second != *want.verifier)
      report.notes.push_back(RoleNote{RoleNote::Kind::kDiffers, want.name,
                                      "exists on the target with another password (or none): left as it is",
                                      "ALTER ROLE " + quote_ident(want.name) + " PASSWORD '<its password>';"});
  }
  if (options.empty())
    report.notes.push_back(RoleNote{RoleNote::Kind::kExists, want.name, "exists on the target, same attributes", ""});
}

void RoleCopier::membership(const Membership& m, RolesReport& report) {
  if (state_.memberships.count({m.role, m.member}) > 0) return;
  auto on_target = [this](const std::string& r) { return state_.roles.count(r) > 0 || created_.count(r) > 0; };
  bool known = (on_target(m.role) || m.role.rfind("pg_", 0) == 0) && on_target(m.member);
  std::string sql = "GRANT " + quote_ident(m.role) + " TO " + quote_ident(m.member) + (m.admin ? " WITH ADMIN OPTION" : "");
  if (!known) {
    report.notes.push_back(RoleNote{RoleNote::Kind::kRefused, m.member, "a role of this membership is not on the target", sql + ";"});
    return;
  }
  if (!run(sql, sql + ";", m.member, report)) return;
  report.memberships++;
  report.notes.push_back(RoleNote{RoleNote::Kind::kMembership, m.member,
                                  std::string(dry_run_ ? "to be made" : "made") + " a member of " + m.role +
                                      (m.admin ? " (with admin option)" : ""), ""});
}

void RoleCopier::grant(const GlobalGrant& g, RolesReport& report) {
  if (state_.grants.count(g) > 0) return;
  std::string sql = grant_statement(g);
  std::string who = g.grantee.empty() ? "PUBLIC" : g.grantee;
  bool known = g.grantee.empty() || state_.roles.count(g.grantee) > 0 || created_.count(g.grantee) > 0;
  if (!known || (g.kind == "TABLESPACE" && state_.tablespaces.count(g.object) == 0)) {
    report.notes.push_back(RoleNote{RoleNote::Kind::kRefused, who,
                                    known ? "tablespace " + g.object + " is not on the target"
                                          : "a role of this grant is not on the target", sql + ";"});
    return;
  }
  if (!run(sql, sql + ";", who, report)) return;
  report.grants++;
  std::string kind = g.kind == "PARAMETER" ? "parameter " : "tablespace ";
  report.notes.push_back(RoleNote{RoleNote::Kind::kGrant, who,
                                  std::string(dry_run_ ? "to be granted " : "granted ") + g.privilege + " on " + kind +
                                      g.object + (g.grantable ? " (with grant option)" : ""), ""});
}

void RoleCopier::settings(const Role& role, RolesReport& report) {
  bool created = created_.count(role.name) > 0;
  auto apply = [&](const std::string& setting, const std::string& database) {
    std::string sql = setting_statement(role.name, setting, database);
    if (!created) {
      // An existing role is not changed: a setting it lacks is reported.
      if (database.empty() && state_.settings.count({role.name, setting}) == 0)
        report.notes.push_back(RoleNote{RoleNote::Kind::kDiffers, role.name,
                                        "exists on the target without the source's setting " + setting, sql + ";"});
      return;
    }
    if (!run(sql, sql + ";", role.name, report)) return;
    report.settings++;
    report.notes.push_back(RoleNote{RoleNote::Kind::kSetting, role.name,
                                    setting + (database.empty() ? "" : " (in database " + database + ")"), ""});
  };
  for (const auto& s : role.settings) apply(s, "");
  for (const auto& s : role.db_settings) apply(s, database_);
}

}  // namespace

std::string grant_statement(const GlobalGrant& g) {
  return "GRANT " + g.privilege + " ON " + g.kind + " " + quote_ident(g.object) + " TO " +
         (g.grantee.empty() ? "PUBLIC" : quote_ident(g.grantee)) + (g.grantable ? " WITH GRANT OPTION" : "");
}

std::string create_statement(const Role& role, bool plain) {
  std::string sql = "CREATE ROLE " + quote_ident(role.name) + " WITH";
  sql += (role.superuser && !plain) ? " SUPERUSER" : " NOSUPERUSER";
  sql += role.inherit ? " INHERIT" : " NOINHERIT";
  sql += role.create_role ? " CREATEROLE" : " NOCREATEROLE";
  sql += role.create_db ? " CREATEDB" : " NOCREATEDB";
  sql += role.login ? " LOGIN" : " NOLOGIN";
  sql += (role.replication && !plain) ? " REPLICATION" : " NOREPLICATION";
  sql += (role.bypass_rls && !plain) ? " BYPASSRLS" : " NOBYPASSRLS";
  sql += " CONNECTION LIMIT " + std::to_string(role.conn_limit);
  if (role.valid_until) sql += " VALID UNTIL " + quote_literal(*role.valid_until);
  return sql;
}

std::string set_clause(const std::string& setting) {
  size_t eq = setting.find('=');
  std::string name = setting.substr(0, eq), value = eq == std::string::npos ? "" : setting.substr(eq + 1);
  return " SET " + quote_ident(name) + " TO " + (list_setting(name) ? list_literals(value) : quote_literal(value));
}

std::string setting_statement(const std::string& role, const std::string& setting, const std::string& database) {
  std::string sql = "ALTER ROLE " + quote_ident(role);
  if (!database.empty()) sql += " IN DATABASE " + quote_ident(database);
  return sql + set_clause(setting);
}

SourceRoles read_source_roles(const pg::Connection& source) {
  SourceRoles out;
  std::map<std::string, Role> roles = read_roles(source);
  read_settings(source, roles);
  auto verifiers = read_verifiers(source);
  out.verifiers_readable = verifiers.has_value();
  for (auto& [name, role] : roles) {
    if (verifiers) {
      auto v = verifiers->find(name);
      if (v != verifiers->end()) role.verifier = v->second;
    }
    out.roles.push_back(std::move(role));
  }
  out.memberships = read_memberships(source);
  std::set<GlobalGrant> grants = read_grants(source);
  out.grants.assign(grants.begin(), grants.end());
  return out;
}

RolesReport copy_roles(const SourceRoles& roles, const pg::Connection& target, bool dry_run) {
  RolesReport report;
  report.verifiers_readable = roles.verifiers_readable;
  RoleCopier copier(target, dry_run);
  for (const auto& r : roles.roles) copier.role(r, report);
  for (const auto& m : roles.memberships) copier.membership(m, report);
  for (const auto& g : roles.grants) copier.grant(g, report);
  for (const auto& r : roles.roles) copier.settings(r, report);
  return report;
}

RolesReport copy_and_log(const pg::Connection& source, const pg::Connection& target) {
  RolesReport r = copy_roles(read_source_roles(source), target, false);
  spdlog::info("roles: {} created, {} already on the target, {} memberships, {} settings, {} grants on parameters "
               "and tablespaces", r.created, r.existing, r.memberships, r.settings, r.grants);
  for (const auto& n : r.notes)
    if (!n.statement.empty()) spdlog::warn("role {}: {}; run on the target: {}", n.role, n.detail, n.statement);
  return r;
}

const char* kind_name(RoleNote::Kind kind) {
  switch (kind) {
    case RoleNote::Kind::kCreated: return "created";
    case RoleNote::Kind::kExists: return "exists";
    case RoleNote::Kind::kDiffers: return "differs";
    case RoleNote::Kind::kNoPassword: return "no_password";
    case RoleNote::Kind::kRefused: return "refused";
    case RoleNote::Kind::kMembership: return "membership";
    case RoleNote::Kind::kSetting: return "setting";
    case RoleNote::Kind::kGrant: return "grant";
  }
  return "?";
}

std::string render_text(const RolesReport& report) {
  std::string out = "roles: " + std::to_string(report.created) + " created, " + std::to_string(report.existing) +
                    " already on the target, " + std::to_string(report.memberships) + " memberships, " +
                    std::to_string(report.settings) + " settings, " + std::to_string(report.grants) +
                    " grants on parameters and tablespaces" +
                    (report.verifiers_readable ? "" : "; the source hides its password verifiers (pg_authid)") + "\n";
  for (const auto& n : report.notes) {
    out += "  " + std::string(kind_name(n.kind)) + "  " + n.role + ": " + n.detail + "\n";
    if (!n.statement.empty()) out += "      run on the target: " + n.statement + "\n";
  }
  return out;
}

std::string render_json(const RolesReport& report) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("created");
  w.Int(report.created);
  w.Key("existing");
  w.Int(report.existing);
  w.Key("memberships");
  w.Int(report.memberships);
  w.Key("settings");
  w.Int(report.settings);
  w.Key("grants");
  w.Int(report.grants);
  w.Key("verifiersReadable");
  w.Bool(report.verifiers_readable);
  w.Key("notes");
  w.StartArray();
  for (const auto& n : report.notes) {
    w.StartObject();
    w.Key("kind");
    w.String(kind_name(n.kind));
    w.Key("role");
    w.String(n.role.c_str());
    w.Key("detail");
    w.String(n.detail.c_str());
    w.Key("statement");
    w.String(n.statement.c_str());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return buf.GetString();
}

}  // namespace dts::roles
