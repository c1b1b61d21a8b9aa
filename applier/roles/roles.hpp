// The source's roles on the target, before the schema: attributes, stored password verifiers,
// memberships and settings (pg_dumpall --roles-only's ground, but checked against what the
// target already has instead of replayed over it).
//
// Passwords travel as the verifiers the source stores (SCRAM or md5), so logins keep working
// with the same passwords; nobody here sees a password in clear. A source that hides
// pg_authid (a managed service) gives no verifier: the role is created without one and the
// report says so, with the statement to run. A role that exists on the target is never
// changed: its differences are reported, each with the statement that would align it.
#ifndef DTS_APPLIER_ROLES_ROLES_HPP
#define DTS_APPLIER_ROLES_ROLES_HPP

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "pg/connection.hpp"

namespace dts::roles {

struct Role {
  std::string name;
  bool superuser = false, inherit = true, create_role = false, create_db = false, login = false,
       replication = false, bypass_rls = false;
  int conn_limit = -1;
  std::optional<std::string> valid_until;
  std::optional<std::string> verifier;  // unset: the source did not let us read it
  std::vector<std::string> settings;    // "name=value", ALTER ROLE ... SET, every database
  std::vector<std::string> db_settings;  // the same, for the migrated database only
};

struct Membership {
  std::string role, member;
  bool admin = false;
};

// A privilege on a global object that is not a role: a parameter (GRANT SET / ALTER SYSTEM ON
// PARAMETER, PostgreSQL 15) or a tablespace (GRANT CREATE ON TABLESPACE). What pg_dumpall
// --globals-only brings besides roles; pg_dump of one database does not.
struct GlobalGrant {
  std::string kind;       // "PARAMETER" or "TABLESPACE"
  std::string object;     // its name
  std::string grantee;    // "" for PUBLIC
  std::string privilege;  // SET, ALTER SYSTEM, CREATE
  bool grantable = false;
  bool operator<(const GlobalGrant& o) const {
    return std::tie(kind, object, grantee, privilege, grantable) <
           std::tie(o.kind, o.object, o.grantee, o.privilege, o.grantable);
  }
};
std::string grant_statement(const GlobalGrant& g);

struct SourceRoles {
  std::vector<Role> roles;
  std::vector<Membership> memberships;
  std::vector<GlobalGrant> grants;
  bool verifiers_readable = false;
};

// What was done, or is left to the user, for one role.
struct RoleNote {
  enum class Kind { kCreated, kExists, kDiffers, kNoPassword, kRefused, kMembership, kSetting, kGrant };
  Kind kind;
  std::string role;
  std::string detail;
  std::string statement;  // the SQL to run on the target, when something is left to do
};

struct RolesReport {
  std::vector<RoleNote> notes;
  int created = 0, existing = 0, memberships = 0, settings = 0, grants = 0;
  bool verifiers_readable = false;
};

// Every role of the source but the predefined (pg_*) ones; the settings of `source_db` (the
// migrated database) as db_settings.
SourceRoles read_source_roles(const pg::Connection& source);
// Creates what the target lacks (dry_run: only says what it would do).
RolesReport copy_roles(const SourceRoles& roles, const pg::Connection& target, bool dry_run);

// copy_roles, with the report in the log: a line of counts, a warning per thing left to do.
RolesReport copy_and_log(const pg::Connection& source, const pg::Connection& target);

std::string render_text(const RolesReport& report);
std::string render_json(const RolesReport& report);
const char* kind_name(RoleNote::Kind kind);

// The CREATE ROLE statement for `role` (without the superuser-only attributes when `plain`).
std::string create_statement(const Role& role, bool plain);
// " SET name TO value" from a pg_db_role_setting entry ("name=value"), for ALTER ROLE / DATABASE.
std::string set_clause(const std::string& setting);
// ALTER ROLE ... SET from a pg_db_role_setting entry ("name=value"); `database`: IN DATABASE.
std::string setting_statement(const std::string& role, const std::string& setting, const std::string& database = "");

}  // namespace dts::roles

#endif
