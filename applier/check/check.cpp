#include "check/check.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <optional>
#include <pqxx/pqxx>

#include "apply/sql_builder.hpp"
#include "check/privileges.hpp"
#include "check/server_checks.hpp"
#include "common/error.hpp"
#include "common/parse.hpp"
#include "common/text.hpp"
#include "core/table_selection.hpp"
#include "pg/connection.hpp"

namespace dts::check {
namespace {

// How long the check waits to create its probe slot (see probe_output_plugin).
constexpr int kSlotProbeSeconds = 10;

Item passed(std::string name, std::string reason) { return Item{std::move(name), Status::kPassed, std::move(reason), "", "", ""}; }
Item warning(std::string name, std::string reason, std::string fix) {
  return Item{std::move(name), Status::kWarning, std::move(reason), std::move(fix), "", ""};
}
Item failed(std::string name, std::string reason, std::string fix) {
  return Item{std::move(name), Status::kFailed, std::move(reason), std::move(fix), "", ""};
}


std::string list_of(const pqxx::result& r, size_t max = 10) {
  std::string out;
  for (size_t i = 0; i < r.size() && i < max; ++i) out += (i > 0 ? ", " : "") + std::string(r[i][0].c_str());
  if (r.size() > max) out += ", ... (" + std::to_string(r.size()) + " in all)";
  return out;
}

// Schema changes reach the stream only through dts_decoding's event triggers (0.2.0 and later).
Item ddl_capture_item(pqxx::nontransaction& t) {
  pqxx::result r = t.exec(
      "SELECT e.extversion, (SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'dts\\_decoding\\_%' "
      "AND evtenabled IN ('O', 'A')), coalesce(current_setting('dts_decoding.capture_ddl', true), 'on') "
      "FROM pg_extension e WHERE e.extname = 'dts_decoding'");
  if (r.empty())
    return warning("ddl_capture",
                   "the dts_decoding extension is not created in this database: schema changes made during the "
                   "migration are not captured (a changed table then stops the migration at its first row of the new "
                   "shape, or its new columns are missed), heartbeats for an idle source are not sent, and small "
                   "transactions travel one per replication message",
                   "CREATE EXTENSION dts_decoding; (as a superuser, in the database being migrated)");
  std::string version = r[0][0].c_str();
  if (version == "0.1.0")
    return failed("ddl_capture", "dts_decoding " + version + " captures no schema changes",
                  "ALTER EXTENSION dts_decoding UPDATE; (as a superuser)");
  if (r[0][1].as<int>() < 4)
    return failed("ddl_capture", "some of dts_decoding's event triggers are disabled or missing: schema changes would be lost",
                  "ALTER EVENT TRIGGER dts_decoding_ddl_start ENABLE; (and dts_decoding_ddl_end, dts_decoding_sql_drop, "
                  "dts_decoding_table_rewrite), or DROP EXTENSION dts_decoding; CREATE EXTENSION dts_decoding;");
  if (std::string(r[0][2].c_str()) == "off")
    return failed("ddl_capture", "dts_decoding.capture_ddl is off for this role or database: schema changes would be lost",
                  "ALTER DATABASE ... RESET dts_decoding.capture_ddl; (or ALTER ROLE / ALTER SYSTEM RESET)");
  if (version == "0.2.0" || version == "0.3.0") {
    std::string lacks =
        "a table rewrite of a partition tree (ALTER COLUMN TYPE on its root) reaches partitions below the first "
        "level unnamed, which the target then converts itself instead of copying them again";
    if (version == "0.2.0")
      lacks = "the dates, intervals and floats of schema changes (partition bounds, defaults) are written in the DDL "
              "session's DateStyle and IntervalStyle, which the target may read otherwise; " + lacks;
    return warning("ddl_capture", "dts_decoding " + version + ": " + lacks, "ALTER EXTENSION dts_decoding UPDATE; (as a superuser)");
  }
  return passed("ddl_capture", "dts_decoding " + version + " captures schema changes in the stream (4 event triggers)");
}

// The plugin is checked by creating a temporary slot with it. A logical slot is made only once
// every transaction open on the source has ended: a long one would hold the check (as it will
// hold the migration's own slot), so the attempt is cancelled after kSlotProbeSeconds and says so.
void probe_output_plugin(pg::Connection& repl, const std::string& slot, std::vector<Item>& items) {
  std::atomic<bool> done{false};
  std::thread watchdog([&] {
    for (int i = 0; i < kSlotProbeSeconds * 10 && !done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (done.load()) return;
    char err[256];
    if (PGcancel* c = PQgetCancel(repl.get())) {
      PQcancel(c, err, sizeof(err));
      PQfreeCancel(c);
    }
  });
  std::string msg;
  try {
    repl.exec("CREATE_REPLICATION_SLOT " + apply::quote_ident(slot) + " TEMPORARY LOGICAL dts_decoding NOEXPORT_SNAPSHOT");
  } catch (const std::exception& e) {
    msg = e.what();
  }
  done = true;
  watchdog.join();
  if (msg.empty()) {
    items.push_back(passed("output_plugin", "dts_decoding loads on the source"));
  } else if (msg.find("canceling statement") != std::string::npos) {
    items.push_back(warning("output_plugin",
                            "a logical slot could not be made within " + std::to_string(kSlotProbeSeconds) +
                                " s: it waits for the transactions open on the source (see long_transactions), and so "
                                "will the migration's own slot",
                            "end the long transactions on the source (pg_stat_activity, oldest xact_start first), then "
                            "check again"));
  } else {
    bool not_listed = msg.find("output_plugin_libraries") != std::string::npos;
    items.push_back(failed("output_plugin",
                           not_listed ? "the source refuses to load dts_decoding: output_plugin_libraries does not list it"
                                      : first_line(msg),
                           not_listed
                               ? "ALTER SYSTEM SET output_plugin_libraries = '<current list>, dts_decoding'; SELECT pg_reload_conf();"
                               : "install the dts_decoding package (make install) on the source server"));
  }
}

void check_source(const CheckOptions& o, std::vector<Item>& items, std::unique_ptr<pqxx::connection>& src) {
  try {
    src = std::make_unique<pqxx::connection>(o.source);
    items.push_back(passed("source_reachable", "connected to " + pg::redact_conninfo(o.source)));
  } catch (const std::exception& e) {
    items.push_back(failed("source_reachable", first_line(e.what()), "check the source conninfo, the server and pg_hba.conf"));
    return;
  }
  pqxx::nontransaction t(*src);
  auto setting = [&](const char* name) { return std::string(t.exec("SELECT current_setting(" + t.quote(name) + ")")[0][0].c_str()); };

  std::string wal_level = setting("wal_level");
  items.push_back(wal_level == "logical"
                      ? passed("wal_level", "wal_level is logical")
                      : failed("wal_level", "wal_level is " + wal_level + "; logical decoding needs logical",
                               "ALTER SYSTEM SET wal_level = logical; then restart the source"));

  auto free_of = [&](const char* item, const char* setting_name, const char* used_sql, const char* what) {
    int64_t cap = parse_int64(setting(setting_name), std::string("the source's ") + setting_name);
    int64_t used = parse_int64(t.exec(used_sql)[0][0].c_str(), std::string("the source's count of ") + what);
    if (cap - used >= 1)
      items.push_back(passed(item, std::to_string(cap - used) + " of " + std::to_string(cap) + " " + what + " free"));
    else
      items.push_back(failed(item, "all " + std::to_string(cap) + " " + what + " are in use",
                             std::string("ALTER SYSTEM SET ") + setting_name + " = " + std::to_string(cap + 4) +
                                 "; then restart the source"));
  };
  free_of("replication_slots", "max_replication_slots", "SELECT count(*) FROM pg_replication_slots", "replication slots");
  free_of("wal_senders", "max_wal_senders", "SELECT count(*) FROM pg_stat_replication", "WAL senders");

  bool can_replicate = t.exec("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")[0][0].as<bool>();
  std::string user = t.exec("SELECT current_user")[0][0].c_str();
  items.push_back(can_replicate ? passed("replication_privilege", "role " + user + " may replicate")
                                : failed("replication_privilege", "role " + user + " has neither REPLICATION nor SUPERUSER",
                                         "ALTER ROLE " + apply::quote_ident(user) + " REPLICATION;"));

  // pg_hba is checked by trying; the plugin by creating a temporary slot with it.
  try {
    pg::Connection repl = pg::Connection::open(o.source, "source", /*replication=*/true);
    items.push_back(passed("replication_connection", "a replication connection succeeded"));
    std::string slot = "dts_check_" + std::to_string(getpid());
    probe_output_plugin(repl, slot, items);
  } catch (const std::exception& e) {
    items.push_back(failed("replication_connection", first_line(e.what()),
                           "add to pg_hba.conf: host replication " + user + " <applier address>/32 scram-sha-256; then reload"));
  }

  int64_t timeout_ms = parse_int64(t.exec("SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'")[0][0].c_str(),
                                   "the source's wal_sender_timeout");
  items.push_back(timeout_ms == 0 ? warning("wal_sender_timeout", "wal_sender_timeout is 0: a dead applier is never noticed",
                                            "ALTER SYSTEM SET wal_sender_timeout = '60s'; SELECT pg_reload_conf();")
                                  : passed("wal_sender_timeout", "wal_sender_timeout is " + std::to_string(timeout_ms) + " ms"));
  int64_t keep_mb = parse_int64(t.exec("SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'")[0][0].c_str(),
                                "the source's max_slot_wal_keep_size");
  if (keep_mb < 0)
    items.push_back(warning("max_slot_wal_keep_size", "unlimited: a stalled migration keeps WAL until the disk fills",
                            "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB' (room for a day of WAL); SELECT pg_reload_conf();"));
  else if (keep_mb < 1024)
    items.push_back(warning("max_slot_wal_keep_size", std::to_string(keep_mb) + " MB: the slot may be invalidated during the copy",
                            "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();"));
  else
    items.push_back(passed("max_slot_wal_keep_size", std::to_string(keep_mb) + " MB"));

  // The applier sets it for its own walsender (--decoding-work-mem); the server's value is what
  // other slots, and a plain pg_recvlogical, get.
  std::string work_mem = setting("logical_decoding_work_mem");
  items.push_back(passed("logical_decoding_work_mem",
                         "server default " + work_mem + "; the applier sets its own walsender's (--decoding-work-mem, 16MB)"));

  items.push_back(ddl_capture_item(t));

  pqxx::result old_tx = t.exec(
      "SELECT format('pid %s (%s)', pid, now() - xact_start) FROM pg_stat_activity "
      "WHERE xact_start < now() - interval '5 minutes' AND backend_type = 'client backend' ORDER BY xact_start");
  pqxx::result prepared = t.exec("SELECT gid FROM pg_prepared_xacts");
  if (old_tx.empty() && prepared.empty())
    items.push_back(passed("long_transactions", "no transaction older than 5 minutes, none prepared"));
  else
    items.push_back(warning("long_transactions",
                            "the slot cannot become consistent before these end: " + list_of(old_tx) +
                                (prepared.empty() ? "" : " prepared: " + list_of(prepared)),
                            "commit or roll them back (COMMIT PREPARED / ROLLBACK PREPARED for prepared ones)"));
}

std::vector<core::CatalogRelation> read_catalog(pqxx::nontransaction& t) {
  std::vector<core::CatalogRelation> catalog;
  for (const auto& row : t.exec(core::kCatalogSql))
    catalog.push_back({row[0].as<uint32_t>(), row[1].c_str(), row[2].c_str(), row[3].c_str()[0], row[4].as<uint32_t>()});
  return catalog;
}

// The selection every command will use (core/table_selection), compiled against the source's
// catalog: a FAILED item when the patterns are malformed or pick nothing.
std::optional<core::CompiledSelection> select_tables(const CheckOptions& o, std::vector<Item>& items,
                                                     pqxx::nontransaction& t) {
  const char* kFix = "write schema.table patterns as the plugin reads them: comma-separated, * and ? wildcards, "
                     "unquoted names folded to lower case, names with capitals, spaces, commas or dots in double quotes "
                     "(\"My Schema\".\"a,b\")";
  std::optional<core::TableSelection> selection;
  try {
    selection.emplace(o.tables, o.exclude);
  } catch (const Error& e) {
    items.push_back(failed("table_selection", e.what(), kFix));
    return std::nullopt;
  }
  core::CompiledSelection compiled = selection->compile(read_catalog(t));
  std::string names;
  size_t partitioned = 0;
  for (size_t i = 0; i < compiled.selected.size(); ++i) {
    partitioned += compiled.selected[i].kind == 'p' ? 1 : 0;
    if (i < 10) names += (i > 0 ? ", " : ": ") + compiled.selected[i].quoted();
  }
  if (compiled.selected.size() > 10) names += ", ...";
  std::string count = std::to_string(compiled.selected.size()) + " tables" +
                      (partitioned > 0 ? " (" + std::to_string(partitioned) + " of them partitioned)" : "");
  if (compiled.selected.empty() && !selection->everything())
    items.push_back(failed("table_selection", "--tables/--exclude select no table of the source", kFix));
  else
    items.push_back(passed("table_selection", (selection->everything() ? "every table: " : "selected: ") + count + names));
  return compiled;
}

// Large objects travel outside the stream: copied after the tables and compared again (an md5
// of each on both sides) inside complete's read-only window, which they lengthen.
void large_objects_item(pqxx::nontransaction& t, std::vector<Item>& items) {
  pqxx::row r = t.exec1("SELECT count(*), pg_total_relation_size('pg_largeobject'), "
                        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR "
                        "current_setting('lo_compat_privileges')::bool FROM pg_largeobject_metadata");
  long count = r[0].as<long>();
  double mb = r[1].as<double>() / (1024.0 * 1024.0);
  if (count == 0) {
    items.push_back(passed("large_objects", "no large objects"));
    return;
  }
  if (!r[2].as<bool>()) {
    pqxx::result unreadable = t.exec(
        "SELECT m.oid::text FROM pg_largeobject_metadata m WHERE NOT pg_has_role(m.lomowner, 'USAGE') AND NOT EXISTS "
        "(SELECT 1 FROM aclexplode(m.lomacl) a WHERE a.privilege_type = 'SELECT' AND (a.grantee = 0 OR "
        "pg_has_role(a.grantee, 'USAGE'))) ORDER BY m.oid LIMIT 20");
    if (!unreadable.empty()) {
      items.push_back(failed("large_objects", "large objects the source role may not read: " + list_of(unreadable),
                             "GRANT SELECT ON LARGE OBJECT <oid> TO the source role for each, or migrate as a superuser"));
      return;
    }
  }
  // The window reads every object on both sides for its md5: about 200 MB/s each here.
  double seconds = mb / 200.0;
  char reason[256];
  std::snprintf(reason, sizeof(reason), "%ld large objects (%.1f MB): copied after the tables, compared and brought up "
                "to date inside complete's read-only window (about %.1f s of it)", count, mb, seconds);
  items.push_back(seconds < 5 ? passed("large_objects", reason)
                              : warning("large_objects", reason, "move large objects into bytea columns (which the "
                                        "stream carries), or plan the longer window"));
}

void check_tables(const CheckOptions& o, std::vector<Item>& items, pqxx::connection& src,
                  std::vector<core::SelectedRelation>* selection) {
  pqxx::nontransaction t(src);
  std::optional<core::CompiledSelection> compiled = select_tables(o, items, t);
  if (!compiled) return;
  if (selection != nullptr) *selection = compiled->selected;
  std::string selected = "SELECT unnest(" + compiled->oid_array_sql() + ")";
  std::string name = "format('%I.%I', n.nspname, c.relname)";

  pqxx::result nokey = t.exec(
      "SELECT " + name + ", coalesce(s.n_tup_upd + s.n_tup_del, 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relkind = 'r' AND c.oid IN (" + selected + ") "
      "AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) "
      "OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))) ORDER BY 1");
  std::string changed, insert_only;
  for (const auto& row : nokey) {
    std::string& dst = row[1].as<long>() > 0 ? changed : insert_only;
    dst += (dst.empty() ? "" : ", ") + std::string(row[0].c_str());
  }
  if (!changed.empty())
    items.push_back(failed("replica_identity",
                           "tables without a usable replica identity get UPDATE or DELETE, which cannot be replayed: " + changed,
                           "add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL"));
  else if (!insert_only.empty())
    items.push_back(warning("replica_identity",
                            "tables without a usable replica identity (no UPDATE or DELETE seen so far, so inserts replay): " +
                                insert_only,
                            "add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL, before they get updates"));
  else
    items.push_back(passed("replica_identity", "every selected table has a usable replica identity"));

  pqxx::result unlogged = t.exec("SELECT " + name + " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE c.relpersistence = 'u' AND c.oid IN (" + selected + ") ORDER BY 1");
  items.push_back(unlogged.empty() ? passed("unlogged_tables", "no unlogged tables")
                                   : warning("unlogged_tables", "not in the WAL, so their changes are not migrated: " + list_of(unlogged),
                                             "ALTER TABLE ... SET LOGGED, or exclude them and copy them during the cutover"));

  pqxx::result fks = t.exec(
      "SELECT format('%s -> %s', conrelid::regclass, confrelid::regclass) FROM pg_constraint "
      "WHERE contype = 'f' AND conrelid IN (" + selected + ") AND confrelid NOT IN (" + selected + ") ORDER BY 1");
  items.push_back(fks.empty() ? passed("foreign_keys", "no foreign key points outside the selection")
                              : failed("foreign_keys", "foreign keys point at tables that are not selected: " + list_of(fks),
                                       "select the referenced tables too, or exclude the referencing ones"));

  large_objects_item(t, items);

  // Names that differ only in case are distinct here, but one of them is lost by every tool or
  // script that does not quote identifiers (and by case-insensitive file systems in dumps).
  pqxx::result clash = t.exec(
      "SELECT string_agg(" + name + ", ' / ' ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.oid IN (" + selected + ") GROUP BY lower(n.nspname), lower(c.relname) HAVING count(*) > 1 ORDER BY 1");
  items.push_back(clash.empty() ? passed("name_clash", "no two selected tables differ only in the case of their names")
                                : warning("name_clash", "selected tables whose names differ only in case: " + list_of(clash),
                                          "quote these names everywhere the application and scripts use them, or rename one "
                                          "(ALTER TABLE ... RENAME TO ...)"));

  pqxx::result generated = t.exec(
      "SELECT DISTINCT format('%I.%I', n.nspname, c.relname) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
      "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attgenerated <> '' AND NOT a.attisdropped "
      "AND c.oid IN (" + selected + ") ORDER BY 1");
  items.push_back(generated.empty() ? passed("generated_columns", "no generated columns")
                                    : passed("generated_columns", "computed again on the target, not copied: " + list_of(generated)));

  pqxx::result identity = t.exec(
      "SELECT DISTINCT format('%I.%I', n.nspname, c.relname) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
      "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attidentity <> '' AND c.oid IN (" + selected + ") ORDER BY 1");
  items.push_back(identity.empty() ? passed("identity_columns", "no identity columns")
                                   : warning("identity_columns", "identity sequences advance only on the source: " + list_of(identity),
                                             "the cutover (complete) copies sequence values; run it before writing to the target"));
}

void check_target(const CheckOptions& o, std::vector<Item>& items, pqxx::connection* src,
                  std::unique_ptr<pqxx::connection>& tgt) {
  try {
    tgt = std::make_unique<pqxx::connection>(o.target);
    items.push_back(passed("target_reachable", "connected to " + pg::redact_conninfo(o.target)));
  } catch (const std::exception& e) {
    items.push_back(failed("target_reachable", first_line(e.what()), "check the target conninfo, the server and pg_hba.conf"));
    return;
  }
  pqxx::nontransaction t(*tgt);
  if (src == nullptr) return;
  pqxx::nontransaction s(*src);
  long sv = s.exec("SELECT current_setting('server_version_num')::int")[0][0].as<long>();
  long tv = t.exec("SELECT current_setting('server_version_num')::int")[0][0].as<long>();
  items.push_back(tv >= sv ? passed("version_order", "target " + std::to_string(tv) + " >= source " + std::to_string(sv))
                           : failed("version_order", "target " + std::to_string(tv) + " is older than source " + std::to_string(sv),
                                    "migrate to a server of the same or a newer major version"));

  pqxx::result tables = t.exec(
      "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables WHERE schemaname NOT IN ('dts') ORDER BY 1");
  if (o.resuming)
    items.push_back(passed("target_empty", "a migration is resuming: the target holds what its first run created"));
  else
    items.push_back(tables.empty() ? passed("target_empty", "the target database has no tables")
                                 : failed("target_empty", "the target already has tables: " + list_of(tables),
                                          "migrate into an empty database (CREATE DATABASE ...), or drop these tables"));

  std::string se = s.exec("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()")[0][0].c_str();
  std::string te = t.exec("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()")[0][0].c_str();
  items.push_back(se == te ? passed("encoding", "both " + se)
                           : failed("encoding", "source " + se + ", target " + te,
                                    "create the target database WITH ENCODING '" + se + "' TEMPLATE template0"));
  std::string sc = s.exec("SELECT datcollate FROM pg_database WHERE datname = current_database()")[0][0].c_str();
  std::string tc = t.exec("SELECT datcollate FROM pg_database WHERE datname = current_database()")[0][0].c_str();
  items.push_back(sc == tc ? passed("collation", "both " + sc)
                           : warning("collation", "source " + sc + ", target " + tc + ": text sorts and indexes may differ",
                                     "create the target database WITH LC_COLLATE '" + sc + "' TEMPLATE template0"));

  pqxx::result exts = s.exec("SELECT extname FROM pg_extension WHERE extname NOT IN ('plpgsql')");
  std::string unavailable;
  for (const auto& row : exts) {
    if (t.exec("SELECT 1 FROM pg_available_extensions WHERE name = " + t.quote(row[0].c_str())).empty())
      unavailable += (unavailable.empty() ? "" : ", ") + std::string(row[0].c_str());
  }
  items.push_back(unavailable.empty() ? passed("extensions", "every extension of the source is available on the target")
                                      : failed("extensions", "not available on the target: " + unavailable,
                                               "install these extensions' packages on the target server"));
}

}  // namespace

core::CompiledSelection compile_selection(const CheckOptions& o, pqxx::nontransaction& t) {
  try {
    return core::TableSelection(o.tables, o.exclude).compile(read_catalog(t));
  } catch (const Error&) {
    return {};  // malformed: the table_selection item says so
  }
}

namespace {

int group_rank(const std::string& name) {
  static const std::vector<std::string> order = {"source", "users", "databases", "hba", "replica identity", "misc"};
  return static_cast<int>(std::find(order.begin(), order.end(), std::string(group_of(name))) - order.begin());
}

}  // namespace

const std::vector<std::string>& step_names() {
  static const std::vector<std::string> names = {"source", "tables", "read privileges", "read-only switch", "target",
                                                 "target privileges", "extensions", "schema restore", "whole server"};
  return names;
}

std::vector<Item> run_checks(const CheckOptions& o, std::vector<core::SelectedRelation>* selection,
                             const Progress& progress) {
  std::vector<Item> items;
  std::unique_ptr<pqxx::connection> src, tgt;
  auto step = [&](const char* name, const auto& run) {
    size_t before = items.size();
    if (progress) progress(name, false, {});
    run();
    if (progress) progress(name, true, std::vector<Item>(items.begin() + static_cast<std::ptrdiff_t>(before), items.end()));
  };
  step("source", [&] { check_source(o, items, src); });
  if (src) {
    step("tables", [&] { check_tables(o, items, *src, selection); });
    step("read privileges", [&] { check_read_privileges(o, items, *src); });
    step("read-only switch", [&] { check_read_only_switch(items, *src); });
  }
  step("target", [&] { check_target(o, items, src.get(), tgt); });
  if (tgt) {
    step("target privileges", [&] { check_target_privileges(items, *tgt); });
    if (src) {
      step("extensions", [&] { check_extension_create(items, *src, *tgt); });
      step("schema restore", [&] { check_schema_restore(o, items, *src, *tgt); });
      step("whole server", [&] { check_server(o, items); });
    }
  }
  // By the runbook's groups, in the order of item_names() within each.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return group_rank(a.name) < group_rank(b.name);
  });
  return items;
}

const std::vector<std::string>& item_names() {
  static const std::vector<std::string> names = {
      "source_reachable", "wal_level", "replication_slots", "wal_senders", "replication_privilege",
      "replication_connection", "output_plugin", "wal_sender_timeout", "max_slot_wal_keep_size",
      "logical_decoding_work_mem", "ddl_capture", "long_transactions", "table_selection", "replica_identity",
      "unlogged_tables", "foreign_keys", "large_objects", "name_clash", "generated_columns", "identity_columns",
      "read_privilege", "read_only_switch", "target_reachable", "version_order", "target_empty", "encoding", "collation",
      "extensions", "target_privileges", "extension_create", "roles", "grant_roles", "schema_restore",
      "users", "user_passwords", "databases", "hba", "tablespaces", "event_triggers", "foreign_servers", "publications"};
  return names;
}

const char* group_of(const std::string& name) {
  static const std::vector<std::pair<const char*, std::vector<std::string>>> groups = {
      {"source", {"source_reachable", "wal_level", "replication_slots", "wal_senders", "replication_privilege",
                  "replication_connection", "output_plugin", "wal_sender_timeout", "max_slot_wal_keep_size",
                  "logical_decoding_work_mem", "ddl_capture", "long_transactions", "read_privilege", "read_only_switch"}},
      {"users", {"users", "user_passwords", "roles", "grant_roles"}},
      {"databases", {"databases", "target_reachable", "version_order", "target_empty", "encoding", "collation",
                     "target_privileges", "schema_restore"}},
      {"hba", {"hba"}},
      {"replica identity", {"table_selection", "replica_identity", "unlogged_tables", "foreign_keys", "name_clash",
                            "generated_columns", "identity_columns"}},
      {"misc", {"extensions", "extension_create", "large_objects", "tablespaces", "event_triggers", "foreign_servers",
                "publications"}}};
  for (const auto& [group, names] : groups)
    if (std::find(names.begin(), names.end(), name) != names.end()) return group;
  return "misc";
}

const char* status_name(Status s) {
  switch (s) {
    case Status::kPassed: return "PASSED";
    case Status::kWarning: return "WARNING";
    case Status::kFailed: return "FAILED";
  }
  return "?";
}

Status overall(const std::vector<Item>& items) {
  Status worst = Status::kPassed;
  for (const auto& i : items) {
    if (i.status == Status::kFailed) return Status::kFailed;
    if (i.status == Status::kWarning) worst = Status::kWarning;
  }
  return worst;
}

std::string render_table(const std::vector<Item>& items) {
  size_t w = 4;
  for (const auto& i : items) w = std::max(w, i.name.size());
  std::string out;
  std::string group;
  for (const auto& i : items) {
    if (group != group_of(i.name)) {
      group = group_of(i.name);
      out += "[" + group + "]\n";
    }
    char head[128];
    std::snprintf(head, sizeof(head), "%-*s  %-7s  ", static_cast<int>(w), i.name.c_str(), status_name(i.status));
    out += head + i.reason + "\n";
    if (!i.fix.empty()) out += std::string(w + 11, ' ') + "fix: " + i.fix + "\n";
  }
  return out;
}

std::string render_json(const std::vector<Item>& items, const std::vector<core::SelectedRelation>* tables) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("result");
  w.String(status_name(overall(items)));
  if (tables != nullptr) {
    // The exact relations migrate, follow, verify and complete will work on.
    w.Key("tables");
    w.StartArray();
    for (const auto& r : *tables) {
      w.StartObject();
      w.Key("schema");
      w.String(r.schema.c_str(), static_cast<rapidjson::SizeType>(r.schema.size()));
      w.Key("name");
      w.String(r.name.c_str(), static_cast<rapidjson::SizeType>(r.name.size()));
      w.Key("kind");
      w.String(r.kind == 'p' ? "partitioned" : "table");
      w.EndObject();
    }
    w.EndArray();
  }
  w.Key("items");
  w.StartArray();
  for (const auto& i : items) {
    w.StartObject();
    w.Key("name");
    w.String(i.name.c_str());
    w.Key("group");
    w.String(group_of(i.name));
    w.Key("status");
    w.String(status_name(i.status));
    w.Key("reason");
    w.String(i.reason.c_str());
    w.Key("fix");
    if (i.fix.empty()) w.Null();
    else w.String(i.fix.c_str());
    if (!i.fix_sql.empty()) {
      w.Key("fix_sql");  // the statements alone, to run as they are
      w.String(i.fix_sql.c_str());
      w.Key("fix_on");  // "source" or "target", as a superuser
      w.String(i.fix_on.c_str());
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize()) + "\n";
}

}  // namespace dts::check
