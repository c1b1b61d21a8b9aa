// The privilege items of `check`: what the migrating roles need on each side when they are not
// superusers (the usual case with managed services), found by asking the server
// (has_*_privilege, pg_has_role) and by trying (the schema restored as the target role in a
// transaction that is rolled back). A FAILED item's fix is the GRANTs themselves, runnable as
// printed (Item::fix_sql), for a superuser of the side named in Item::fix_on.
#ifndef DTS_APPLIER_CHECK_PRIVILEGES_HPP
#define DTS_APPLIER_CHECK_PRIVILEGES_HPP

#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "check/check.hpp"

namespace dts::check {

// The selection of --tables/--exclude compiled against the source (check.cpp); empty when the
// patterns are malformed, which the table_selection item reports.
core::CompiledSelection compile_selection(const CheckOptions& o, pqxx::nontransaction& t);

// read_privilege: SELECT on the selected tables (the copy, pg_dump's locks), USAGE on their
// schemas, SELECT on the sequences the cutover copies (without it pg_sequences shows NULL).
void check_read_privileges(const CheckOptions& o, std::vector<Item>& items, pqxx::connection& src);

// read_only_switch: what `complete` needs to make the source read-only and drain it.
void check_read_only_switch(std::vector<Item>& items, pqxx::connection& src);

// target_privileges: CREATE on the database, the replication origin functions, SET
// session_replication_role; tried in a transaction that is rolled back.
void check_target_privileges(std::vector<Item>& items, pqxx::connection& tgt);

// extension_create: the source's extensions that the target lacks, created by the target role
// in a transaction that is rolled back; those it may not create, for a superuser to create.
void check_extension_create(std::vector<Item>& items, pqxx::connection& src, pqxx::connection& tgt);

// roles, grant_roles and schema_restore: the schema dumped as the source role, its owners and
// grantees matched against what the target role may assign, then restored on the target as
// migrate will (--no-owner, --no-privileges) inside a transaction that is rolled back.
void check_schema_restore(const CheckOptions& o, std::vector<Item>& items, pqxx::connection& src,
                          pqxx::connection& tgt);

// One query, for check and complete alike: the statements (";"-terminated, space-separated)
// that would give the current role of the source what `complete` needs with this read-only
// scope; "" when it has it all. `server_version` is server_version_num.
std::string read_only_missing_sql(bool database_scope, long server_version);

}  // namespace dts::check

#endif
