// The runbook's server-wide items: users, databases, hba, and the misc objects a schema dump
// of one database does not bring (tablespaces, event triggers, foreign servers, publications
// and subscriptions).
#include "check/server_checks.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/error.hpp"
#include "common/text.hpp"
#include "pg/connection.hpp"
#include "pg/quote.hpp"
#include "roles/roles.hpp"

namespace dts::check {
namespace {

constexpr size_t kHbaTries = 50;  // roles tried at most: each try is a connection attempt
constexpr std::chrono::seconds kHbaTime{10};

Item item(const char* name, Status status, std::string reason, std::string fix = "", std::string fix_sql = "",
          std::string fix_on = "") {
  return Item{name, status, std::move(reason), std::move(fix), std::move(fix_sql), std::move(fix_on)};
}

std::vector<std::string> column(const pg::Connection& c, const std::string& sql) {
  pg::Result r = c.exec(sql);
  std::vector<std::string> out;
  for (int i = 0; i < PQntuples(r.get()); ++i) out.emplace_back(PQgetvalue(r.get(), i, 0));
  return out;
}

void users_item(const pg::Connection& src, const pg::Connection& tgt, std::vector<Item>& items) {
  roles::RolesReport plan = roles::copy_roles(roles::read_source_roles(src), tgt, /*dry_run=*/true);
  std::vector<std::string> missing, refused, statements;
  for (const auto& n : plan.notes) {
    if (n.kind == roles::RoleNote::Kind::kCreated) missing.push_back(n.role);
    if (n.kind == roles::RoleNote::Kind::kRefused || n.kind == roles::RoleNote::Kind::kDiffers) {
      refused.push_back(n.role + " (" + n.detail + ")");
      statements.push_back(n.statement);
    }
  }
  if (!refused.empty()) {
    items.push_back(item("users", Status::kWarning, "roles the target cannot take as the source has them: " + shortened(refused),
                         "run on the target as a superuser: " + joined(statements, " "), joined(statements, " "), "target"));
  } else if (!missing.empty()) {
    items.push_back(item("users", Status::kWarning, std::to_string(missing.size()) + " roles of the source are not on the "
                         "target: " + shortened(missing), "migrate --roles (or --all-databases) creates them with their "
                         "passwords; dts_applier roles --dry-run shows how"));
  } else {
    items.push_back(item("users", Status::kPassed, "every role of the source is on the target with the same attributes"));
  }
  if (!plan.verifiers_readable)
    items.push_back(item("user_passwords", Status::kWarning, "the source hides its password verifiers (pg_authid): roles "
                         "are created without passwords", "set each login role's password on the target "
                         "(dts_applier roles lists the statements)"));
  else
    items.push_back(item("user_passwords", Status::kPassed, "password verifiers are readable: logins keep their passwords"));
}

void databases_item(const pg::Connection& src, const pg::Connection& tgt, std::vector<Item>& items) {
  const char* sql = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1";
  std::vector<std::string> on_source = column(src, sql), on_target = column(tgt, sql), lacking;
  for (const auto& d : on_source)
    if (std::find(on_target.begin(), on_target.end(), d) == on_target.end()) lacking.push_back(d);
  std::string reason = "source: " + shortened(on_source) + "; target: " + shortened(on_target);
  items.push_back(lacking.empty() ? item("databases", Status::kPassed, reason)
                                  : item("databases", Status::kPassed, reason + "; migrate --all-databases creates " +
                                         shortened(lacking) + " as the source has them"));
}

// One connection attempt to the target as `role`, without a password: an authentication
// request means a pg_hba.conf line lets the role in (with its password); "no pg_hba.conf
// entry" means none does. (PGPASSWORD or a password file may still answer for it.)
std::string try_login(const std::string& target, const std::string& role) {
  std::string password;  // the migrating role's: never sent for another one
  std::string conninfo = pg::conninfo_without_password(target, password);
  const char* keys[] = {"dbname", "user", "connect_timeout", nullptr};
  const char* values[] = {conninfo.c_str(), role.c_str(), "5", nullptr};
  PGconn* c = PQconnectdbParams(keys, values, 1);
  std::string msg = c == nullptr ? "out of memory" : (PQstatus(c) == CONNECTION_OK ? "" : PQerrorMessage(c));
  if (c != nullptr) PQfinish(c);
  return msg;
}

void hba_item(const pg::Connection& src, const std::string& target, std::vector<Item>& items) {
  std::vector<std::string> logins = column(src, "SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolname !~ '^pg_' ORDER BY 1");
  std::vector<std::string> refused, tried;
  auto deadline = std::chrono::steady_clock::now() + kHbaTime;
  for (const auto& role : logins) {
    if (tried.size() >= kHbaTries || std::chrono::steady_clock::now() > deadline) break;
    tried.push_back(role);
    std::string msg = try_login(target, role);
    // The file's name stays in every translation of the server's message.
    if (msg.find("pg_hba.conf") != std::string::npos) refused.push_back(role);
  }
  std::string more = logins.size() > tried.size() ? " (the first " + std::to_string(tried.size()) + " of " +
                                                        std::to_string(logins.size()) + " tried)" : "";
  if (refused.empty()) {
    items.push_back(item("hba", Status::kPassed, "every role that logs in on the source may connect to the target" + more +
                                                     " (tried: the target asked for their passwords or let them in)"));
    return;
  }
  // Not a reason to refuse the migration, but the application's logins would fail after the cutover.
  items.push_back(item("hba", Status::kWarning, "the target's pg_hba.conf has no line for: " + shortened(refused) + more,
                       "add host lines for these roles to the target's pg_hba.conf (e.g. host all " + refused.front() +
                           " 0.0.0.0/0 scram-sha-256) and SELECT pg_reload_conf()"));
}

void misc_items(const pg::Connection& src, const pg::Connection& tgt, std::vector<Item>& items) {
  std::vector<std::string> spaces = column(src, "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1");
  std::vector<std::string> lacking;
  for (const auto& s : spaces)
    if (tgt.query_value("SELECT count(*) FROM pg_tablespace WHERE spcname = $1", {s}) == "0") lacking.push_back(s);
  items.push_back(lacking.empty() ? item("tablespaces", Status::kPassed, spaces.empty() ? "no tablespaces of its own on the source"
                                                                                      : "on both sides: " + shortened(spaces))
                                  : item("tablespaces", Status::kFailed, "tablespaces the target lacks: " + shortened(lacking),
                                         "create them on the target (CREATE TABLESPACE name LOCATION '/path'), or move the "
                                         "objects to pg_default on the source"));
  std::vector<std::string> triggers = column(src, "SELECT evtname FROM pg_event_trigger WHERE evtname !~ '^dts_' ORDER BY 1");
  items.push_back(triggers.empty() ? item("event_triggers", Status::kPassed, "no event triggers of the application")
                                   : item("event_triggers", Status::kWarning, "event triggers on the source: " + shortened(triggers) +
                                          "; they are restored only by a superuser, and fire on the target's own DDL",
                                          "migrate as a superuser of the target, or create them there after the cutover"));
  std::vector<std::string> servers = column(src, "SELECT srvname FROM pg_foreign_server ORDER BY 1");
  items.push_back(servers.empty() ? item("foreign_servers", Status::kPassed, "no foreign servers")
                                  : item("foreign_servers", Status::kWarning, "foreign servers: " + shortened(servers) +
                                         "; their user mappings' passwords are not copied, and the target must reach them",
                                         "recreate the user mappings on the target (CREATE USER MAPPING ... OPTIONS (password ...))"));
  std::vector<std::string> pubs = column(src, "SELECT pubname FROM pg_publication WHERE pubname !~ '^dts' ORDER BY 1");
  std::vector<std::string> subs = column(src, "SELECT subname FROM pg_subscription WHERE subdbid = "
                                              "(SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1");
  if (!subs.empty())
    items.push_back(item("publications", Status::kWarning, "the source subscribes to another server: " + shortened(subs) +
                         "; the target gets the rows, not the subscription",
                         "after the cutover, CREATE SUBSCRIPTION on the target if it must keep receiving"));
  else
    items.push_back(item("publications", Status::kPassed, pubs.empty() ? "no publications or subscriptions"
                                                                       : "publications (restored with the schema): " + shortened(pubs)));
}

}  // namespace

void check_server(const CheckOptions& o, std::vector<Item>& items) {
  try {
    pg::Connection src = pg::Connection::open(o.source, "source");
    pg::Connection tgt = pg::Connection::open(o.target, "target");
    users_item(src, tgt, items);
    databases_item(src, tgt, items);
    hba_item(src, o.target, items);
    misc_items(src, tgt, items);
  } catch (const Error& e) {
    items.push_back(item("users", Status::kFailed, "could not check the server-wide items: " + first_line(e.what()),
                         "check both conninfos"));
  }
}

}  // namespace dts::check
