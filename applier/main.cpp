// dts_applier: online migration of a PostgreSQL database, one subcommand per step.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <optional>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.hpp"
#include "common/lsn.hpp"
#include "dts/protocol.h"
#include "dts/version.h"
#include "cancel/cancel.hpp"
#include "resync/resync.hpp"
#include "check/check.hpp"
#include "common/error.hpp"
#include "complete/complete.hpp"
#include "core/table_selection.hpp"
#include "follow/follow.hpp"
#include "follow/status.hpp"
#include "migrate/migrate.hpp"
#include "serve/http_api.hpp"
#include "server/server_commands.hpp"
#include "server/server_migrate.hpp"
#include "serve/jobs_cli.hpp"
#include "serve/token.hpp"
#include "roles/roles.hpp"
#include "verify/verify.hpp"

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_signal(int) { g_stop.store(true); }

// Connection strings may hold passwords: blank them in argv so `ps` does not show them.
void scrub_passwords(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    for (const char* key : {"password=", "PASSWORD=", ":"}) {
      if (std::strcmp(key, ":") == 0) {
        // postgresql://user:secret@host URIs
        char* scheme = std::strstr(argv[i], "://");
        if (scheme == nullptr) continue;
        char* at = std::strchr(scheme + 3, '@');
        char* colon = std::strchr(scheme + 3, ':');
        if (at != nullptr && colon != nullptr && colon < at) std::memset(colon + 1, '*', static_cast<size_t>(at - colon - 1));
        continue;
      }
      for (char* p = std::strstr(argv[i], key); p != nullptr; p = std::strstr(p + 1, key)) {
        char* v = p + std::strlen(key);
        char quote = (*v == '\'') ? '\'' : 0;
        if (quote) ++v;
        while (*v != '\0' && (quote ? *v != quote : *v != ' ')) *v++ = '*';
      }
    }
  }
}

// Replication slot names as PostgreSQL accepts them, checked before anything connects.
const CLI::Validator kSlotName(
    [](std::string& v) -> std::string {
      bool ok = !v.empty() && v.size() <= 63;
      for (char c : v) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
      return ok ? "" : "a slot name is 1 to 63 characters of a-z, 0-9 and _";
    },
    "SLOT");

const CLI::Validator kLsn(
    [](std::string& v) -> std::string {
      return dts::parse_lsn(v) ? "" : "\"" + v + "\" is not an LSN; write it as PostgreSQL does, e.g. 16/B374D848";
    },
    "LSN");

std::optional<dts::Lsn> lsn_or_none(const std::string& text) {
  return text.empty() ? std::nullopt : dts::parse_lsn(text);
}

// A wrong --status-file is an error before anything starts, not a run that reports nothing.
void require_status_file(const std::string& path) {
  if (path.empty()) return;
  std::string why = dts::follow::status_file_problem(path);
  if (!why.empty()) throw dts::Error(dts::ErrorKind::kConfig, why);
}

// What a command that failed with an exception it did not handle itself says and returns:
// its message, FAILED in its status file, and the documented exit code (check: 2, FAILED;
// bad options: 2; anything else: 1) - never std::terminate and an abort.
int failed_with(const std::string& command, std::string message, bool config, const std::string& status_file,
                const std::string& slot) {
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  spdlog::error("{} failed: {}", command, message);
  if (!status_file.empty() && dts::follow::status_file_problem(status_file).empty()) {
    dts::follow::Status st;
    st.phase = dts::core::phase_name(dts::core::Phase::kFailed);
    st.slot = slot;
    st.error = message;
    dts::follow::write_status_file(status_file, st);
  }
  return config || command == "check" ? dts::follow::kExitUsage : dts::follow::kExitFailed;
}

// One dialect for every command: the plugin's (core/table_selection.hpp).
constexpr const char* kTablesHelp =
    "only these tables: schema.table patterns, comma-separated; * and ? wildcards; unquoted names fold to lower "
    "case, double-quote the others (\"My Schema\".\"a,b\"); a partitioned table brings its partitions";
constexpr const char* kApplyWorkersHelp =
    "target sessions applying source transactions at once, committed in source order (default: the target's "
    "max_parallel_workers_per_gather, 1 to 4, fewer if its connections are short)";
constexpr const char* kExcludeHelp = "leave out these tables: patterns as for --tables";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dts_applier: online migration of a live PostgreSQL database"};
  app.require_subcommand(0, 1);
  bool version = false;
  std::string log_level = "info";
  app.add_flag("--version", version, "print the version and exit");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  std::string log_tag;  // each database's migrate of a job over several, in the job's log
  app.add_option("--log-tag", log_tag, "a word after each log line's level (e.g. the database)")->group("");

  dts::follow::FollowOptions follow;
  std::string resume_mode = "auto";
  std::string until_lsn;
  auto* f = app.add_subcommand("follow", "stream changes from a slot and apply them to the target, exactly once");
  f->add_option("--source", follow.source, "libpq conninfo of the source (passwords from conninfo or PGPASSFILE)")
      ->required()->envname("DTS_SOURCE");
  f->add_option("--target", follow.target, "libpq conninfo of the target, which already has the schema")->required()->envname("DTS_TARGET");
  f->add_option("--slot", follow.slot, "logical replication slot on the source")->required()->check(kSlotName);
  f->add_flag("--create-slot", follow.create_slot, "create the slot with dts_decoding if it does not exist");
  f->add_option("--tables", follow.tables, kTablesHelp);
  f->add_option("--exclude", follow.exclude, kExcludeHelp);
  f->add_option("--bandwidth-limit", follow.bandwidth_mb_per_s, "read at most this many MB/s from the source (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  f->add_option("--resume-mode", resume_mode, "auto: reconnect with backoff after a lost connection; manual: stop")
      ->check(CLI::IsMember({"auto", "manual"}));
  f->add_option("--until-lsn", until_lsn, "stop once everything committed up to this source LSN is applied (X/X)")
      ->check(kLsn);
  f->add_option("--status-file", follow.status_file, "write progress as JSON to this file, every second");
  f->add_option("--origin", follow.origin, "replication origin on the target (default: dts_<slot>)");
  f->add_option("--decoding-work-mem", follow.decoding_work_mem,
                "logical_decoding_work_mem of the source's walsender: a transaction larger than this is streamed "
                "while in progress (default 16MB)");
  f->add_flag("!--no-streaming", follow.streaming,
              "have the source hold large transactions until commit instead of streaming them");
  f->add_option("--apply-workers", follow.apply_workers, kApplyWorkersHelp)->check(CLI::Range(1, 16));
  f->add_flag("--no-packing", follow.no_packing,
              "one transaction per replication message even in a backlog (packing needs dts_decoding.heartbeat())");

  dts::migrate::MigrateOptions migrate;
  std::string migrate_mode = "incremental";
  std::string migrate_until;
  auto* m = app.add_subcommand("migrate", "copy schema and a consistent snapshot, then follow (mode incremental)");
  m->add_option("--source", migrate.source, "libpq conninfo of the source")->required()->envname("DTS_SOURCE");
  m->add_option("--target", migrate.target, "libpq conninfo of the target (an empty database)")->required()->envname("DTS_TARGET");
  m->add_option("--tables", migrate.tables, kTablesHelp);
  m->add_option("--exclude", migrate.exclude, kExcludeHelp);
  m->add_option("--jobs", migrate.jobs, "parallel copy workers (and pg_restore jobs for indexes)")
      ->check(CLI::Range(1, 64));
  m->add_option("--split-larger-than", migrate.split_larger_than,
                "chunks of about this much data, by ranges of an integer key (e.g. 256MB)")
      ->transform(CLI::AsSizeValue(false));
  m->add_option("--mode", migrate_mode, "incremental: follow after the copy; full: stop after it, drop the slot")
      ->check(CLI::IsMember({"full", "incremental"}));
  m->add_option("--slot", migrate.slot, "replication slot to create on the source (default dts_migrate)")->check(kSlotName);
  m->add_option("--status-file", migrate.status_file, "write progress as JSON to this file");
  m->add_option("--until-lsn", migrate_until, "mode incremental: stop once applied up to this source LSN")->check(kLsn);
  m->add_option("--bandwidth-limit", migrate.bandwidth_mb_per_s,
                "mode incremental: read at most this many MB/s from the slot (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  std::string migrate_resume = "auto";
  m->add_option("--resume-mode", migrate_resume, "auto: reconnect after a lost connection; manual: stop (exit code 3)")
      ->check(CLI::IsMember({"auto", "manual"}));
  m->add_option("--apply-workers", migrate.apply_workers, kApplyWorkersHelp)->check(CLI::Range(1, 16));
  m->add_option("--decoding-work-mem", migrate.decoding_work_mem,
                "mode incremental: logical_decoding_work_mem of the source's walsender (default 16MB)");
  m->add_flag("!--no-streaming", migrate.streaming,
              "mode incremental: have the source hold large transactions until commit instead of streaming them");
  m->add_option("--skip-check", migrate.skip_checks,
                "start even though this precheck item FAILED (repeatable; names as `check` prints them)")
      ->delimiter(',')
      ->check(CLI::IsMember(dts::check::item_names()));
  m->add_flag("--no-owner", migrate.no_owner,
              "objects on the target belong to the target role instead of their source owners (pg_restore --no-owner)");
  m->add_flag("--no-privileges", migrate.no_privileges, "leave out the source's GRANTs (pg_restore --no-privileges)");
  dts::server::DatabaseScope migrate_databases;
  m->add_option("--databases", migrate_databases.names,
                "several databases as one job (comma-separated; roles first, each database created on the target "
                "as on the source, a slot <slot>_db<oid> each)")
      ->delimiter(',');
  m->add_flag("--all-databases", migrate_databases.all, "every database of the source that accepts connections");
  m->add_flag("--roles", migrate.roles,
              "first create the source's roles the target lacks (attributes, password verifiers, memberships, "
              "settings); existing ones are checked, not changed");

  std::string roles_source, roles_target;
  bool roles_dry_run = false, roles_json = false;
  auto* rl = app.add_subcommand("roles", "create the source's roles on the target (what migrate --roles does) and "
                                         "report what is left to do, with the statements to run");
  rl->add_option("--source", roles_source, "libpq conninfo of the source")->required()->envname("DTS_SOURCE");
  rl->add_option("--target", roles_target, "libpq conninfo of the target")->required()->envname("DTS_TARGET");
  rl->add_flag("--dry-run", roles_dry_run, "change nothing: say what would be created");
  rl->add_flag("--json", roles_json, "print JSON instead of text");

  dts::check::CheckOptions check;
  bool check_json = false;
  auto* c = app.add_subcommand("check", "what will break, before anything starts: PASSED / WARNING / FAILED per item");
  c->add_option("--source", check.source, "libpq conninfo of the source")->required()->envname("DTS_SOURCE");
  c->add_option("--target", check.target, "libpq conninfo of the target")->required()->envname("DTS_TARGET");
  c->add_option("--tables", check.tables, kTablesHelp);
  c->add_option("--exclude", check.exclude, kExcludeHelp);
  c->add_flag("--json", check_json, "print JSON instead of a table");
  c->add_flag("--no-owner", check.no_owner, "check as for migrate --no-owner");
  c->add_flag("--no-privileges", check.no_privileges, "check as for migrate --no-privileges");

  dts::verify::VerifyOptions verify;
  bool verify_json = false;
  int verify_wait_s = 120;
  auto* v = app.add_subcommand("verify", "compare every selected table on both sides, while changes keep flowing");
  v->add_option("--source", verify.source, "libpq conninfo of the source")->required()->envname("DTS_SOURCE");
  v->add_option("--target", verify.target, "libpq conninfo of the target")->required()->envname("DTS_TARGET");
  v->add_option("--tables", verify.tables, std::string(kTablesHelp) + " (default: the migration's selection)");
  v->add_option("--exclude", verify.exclude, kExcludeHelp);
  v->add_option("--slot", verify.slot, "the migration's slot, whose applier re-checks wait for (default dts_migrate)")->check(kSlotName);
  v->add_option("--chunk-rows", verify.chunk_rows, "rows per checksummed key range (default 10000)")
      ->check(CLI::Range(int64_t{100}, int64_t{100000000}));
  v->add_option("--wait-timeout", verify_wait_s, "seconds to wait for the applier to pass a source position (default 120)")
      ->check(CLI::Range(1, 86400));
  v->add_flag("--json", verify_json, "print JSON instead of a table");
  v->add_flag("--repair", verify.repair, "copy the tables that differ again (resync) and compare them once more");
  dts::server::DatabaseScope verify_databases;
  v->add_option("--databases", verify_databases.names, "as given to migrate --databases")->delimiter(',');
  v->add_flag("--all-databases", verify_databases.all, "as given to migrate --all-databases");
  bool verify_no_schema = false;
  v->add_flag("--no-schema", verify_no_schema, "compare the rows only, not the schemas (pg_dump --schema-only of both)");

  dts::complete::CompleteOptions complete;
  int64_t max_lag_ms = 1000;
  int complete_timeout_s = 600, drain_timeout_s = 30;
  std::string scope = "cluster";
  auto* k = app.add_subcommand("complete", "cut over: source read-only, last changes applied, sequences copied, slot dropped");
  k->add_option("--source", complete.source, "libpq conninfo of the source")->required()->envname("DTS_SOURCE");
  k->add_option("--target", complete.target, "libpq conninfo of the target")->required()->envname("DTS_TARGET");
  k->add_option("--slot", complete.slot, "the migration's slot (default dts_migrate)")->check(kSlotName);
  k->add_option("--max-lag", max_lag_ms, "cut over once a marker written on the source is applied within this many ms "
                                         "(default 1000)")
      ->check(CLI::Range(int64_t{1}, int64_t{3600000}));
  k->add_option("--sequence-shift", complete.sequence_shift,
                "set the target's sequences this far past the source's values (default 0)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  k->add_flag("--verify", complete.verify, "compare every table once the target is ready, before dropping the slot");
  k->add_option("--tables", complete.tables,
                "with --verify: the tables to compare, as given to follow (default: the migration's selection)");
  k->add_option("--exclude", complete.exclude, "with --verify: " + std::string(kExcludeHelp));
  k->add_option("--read-only-scope", scope,
                "cluster: ALTER SYSTEM, reaches existing sessions; database: ALTER DATABASE, disconnects its sessions")
      ->check(CLI::IsMember({"cluster", "database"}));
  k->add_option("--databases", complete.databases.names, "cut over these databases' migrations in one window "
                                                         "(as given to migrate --databases)")
      ->delimiter(',');
  k->add_flag("--all-databases", complete.databases.all, "as given to migrate --all-databases");
  k->add_option("--timeout", complete_timeout_s, "seconds to wait for the lag to come down (default 600)")
      ->check(CLI::Range(1, 86400));
  k->add_option("--drain-timeout", drain_timeout_s,
                "seconds transactions begun before the read-only point get to end before they are terminated (default 30)")
      ->check(CLI::Range(0, 3600));

  dts::serve::ServeOptions serve;
  auto* sv = app.add_subcommand("serve", "run migrations as jobs, with an HTTP API, metrics and a status page");
  sv->add_option("--listen", serve.listen, "HOST:PORT to listen on (default 127.0.0.1:8888)");
  sv->add_option("--token-file", serve.token_file,
                 "file whose first line is the API token (Authorization: Bearer); default: one serve generates "
                 "into WORK_DIR/api-token on its first start");
  sv->add_option("--state", serve.state, "libpq conninfo of the database that keeps the jobs (schema dts), "
                                         "usually the target")
      ->required()
      ->envname("DTS_STATE");
  serve.work_dir = dts::serve::default_work_dir();
  sv->add_option("--work-dir", serve.work_dir,
                 "the API token, status files and logs of the jobs' processes; private to this user (0700, "
                 "default ~/.dts-serve)");
  sv->add_option("--max-jobs", serve.max_jobs, "jobs running at once; more wait in the queue (default 4)")
      ->check(CLI::Range(1, 256));
  sv->add_option("--tls-cert", serve.tls_cert, "serve HTTPS with this certificate (PEM; with --tls-key)");
  sv->add_option("--tls-key", serve.tls_key, "the certificate's private key (PEM)");
  sv->add_option("--connections", serve.connections_file,
                 "connections that Huawei-style tasks may name by id: a JSON file of name: conninfo, mode 0600");

  dts::serve::JobsCliOptions jobs_cli;
  auto* jc = app.add_subcommand("jobs", "talk to a running serve: list, show, create, start, stop, resume, complete, "
                                        "verify, cancel, resync");
  jc->add_option("action", jobs_cli.action, "what to do")
      ->required()
      ->check(CLI::IsMember({"list", "show", "create", "start", "stop", "resume", "complete", "verify", "cancel",
                             "resync"}));
  jc->add_option("id", jobs_cli.id, "the job's id (all but list and create)")->check(CLI::PositiveNumber);
  jc->add_option("--server", jobs_cli.server, "serve's URL (default http://127.0.0.1:8888; https://... for serve --tls-cert)");
  jc->add_option("--ca-file", jobs_cli.ca_file, "https: the CA or self-signed certificate to trust (PEM; default the system's)");
  jc->add_option("--token-file", jobs_cli.token_file,
                 "file whose first line is the API token (default: WORK_DIR/api-token, for a loopback --server)");
  jobs_cli.work_dir = dts::serve::default_work_dir();
  jc->add_option("--work-dir", jobs_cli.work_dir, "serve's --work-dir, where it keeps its token (default ~/.dts-serve)");
  jc->add_option("--name", jobs_cli.name, "create: the job's name");
  jc->add_option("--source", jobs_cli.source, "create: libpq conninfo of the source")->envname("DTS_SOURCE");
  jc->add_option("--target", jobs_cli.target, "create: libpq conninfo of the target")->envname("DTS_TARGET");
  jc->add_option("--tables", jobs_cli.tables, "create: only these tables; resync: the tables to copy again");
  jc->add_option("--exclude", jobs_cli.exclude, "create, resync: leave out these tables");
  jc->add_option("--mode", jobs_cli.mode, "create: full or incremental")->check(CLI::IsMember({"full", "incremental"}));
  jc->add_option("--jobs", jobs_cli.jobs, "create: parallel copy workers")->check(CLI::Range(1, 64));
  jc->add_option("--start-time", jobs_cli.start_time, "create: ISO 8601 time to start at, e.g. 2026-11-22T02:00:00Z");

  dts::cancel::CancelOptions cancel;
  auto* x = app.add_subcommand("cancel", "stop a migration and remove its slot, origin and state (never any data)");
  x->add_option("--source", cancel.source, "libpq conninfo of the source")->required()->envname("DTS_SOURCE");
  x->add_option("--target", cancel.target, "libpq conninfo of the target")->required()->envname("DTS_TARGET");
  x->add_option("--slot", cancel.slot, "the migration's slot (default dts_migrate)")->check(kSlotName);
  dts::server::DatabaseScope cancel_databases;
  x->add_option("--databases", cancel_databases.names, "as given to migrate --databases")->delimiter(',');
  x->add_flag("--all-databases", cancel_databases.all, "as given to migrate --all-databases");

  dts::resync::ResyncOptions resync;
  auto* rs = app.add_subcommand("resync", "copy tables of a running migration again while its stream goes on");
  rs->add_option("--source", resync.source, "libpq conninfo of the source")->required()->envname("DTS_SOURCE");
  rs->add_option("--target", resync.target, "libpq conninfo of the target")->required()->envname("DTS_TARGET");
  rs->add_option("--slot", resync.slot, "the migration's slot (default dts_migrate)")->check(kSlotName);
  rs->add_option("--tables", resync.tables, "the tables to copy again (table patterns)")->required();
  rs->add_option("--exclude", resync.exclude, "leave out these tables");
  rs->add_option("--split-larger-than", resync.chunk_bytes, "chunks of about this much data (default 64MB)")
      ->transform(CLI::AsSizeValue(false));
  rs->add_option("--timeout", resync.timeout_s, "seconds to wait for the copy (default 3600)")->check(CLI::Range(1, 864000));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 prints what is wrong; every bad command line exits 2, as documented.
    return app.exit(e) == 0 ? 0 : dts::follow::kExitUsage;
  }
  scrub_passwords(argc, argv);
  auto logger = spdlog::stderr_color_mt("dts");
  spdlog::set_default_logger(logger);
  std::string tag;  // a database's name, taken literally
  for (char ch : log_tag) tag += ch == '%' ? std::string("%%") : std::string(1, ch);
  spdlog::set_pattern(tag.empty() ? "%Y-%m-%d %H:%M:%S.%e %^%l%$ %v" : "%Y-%m-%d %H:%M:%S.%e %^%l%$ [" + tag + "] %v");
  spdlog::set_level(spdlog::level::from_str(log_level));

  const std::string command = app.get_subcommands().empty() ? "dts_applier" : app.get_subcommands().front()->get_name();
  const std::string status_file = f->parsed() ? follow.status_file : m->parsed() ? migrate.status_file : "";
  const std::string slot = f->parsed() ? follow.slot : m->parsed() ? migrate.slot : "";
  // Every failure ends in a message and a documented exit code: the commands report their own
  // errors, and whatever escapes them (another library's exception, a bug) ends here.
  auto run_command = [&]() -> int {
    if (version) {
      std::printf("dts_applier %s (record protocol %d)\n", DTS_VERSION, dts::protocol::kVersion);
      return 0;
    }
    if (f->parsed()) {
      follow.resume_auto = resume_mode == "auto";
      follow.until_lsn = lsn_or_none(until_lsn);
      require_status_file(follow.status_file);
      // The plugin would refuse a malformed list only once streaming starts, without naming the
      // pattern; the applier's parser is the plugin's, so it refuses the same lists here.
      dts::core::TableSelection(follow.tables, follow.exclude);
      std::signal(SIGINT, on_signal);
      std::signal(SIGTERM, on_signal);
      return dts::follow::run_follow(follow, g_stop);
    }
    if (x->parsed())
      return cancel_databases.several() ? dts::server::run_cancel_databases(cancel, cancel_databases)
                                        : dts::cancel::run_cancel(cancel);
    if (rs->parsed()) {
      std::signal(SIGINT, on_signal);
      std::signal(SIGTERM, on_signal);
      return dts::resync::run_resync(resync, g_stop);
    }
    if (sv->parsed()) {
      std::signal(SIGINT, on_signal);
      std::signal(SIGTERM, on_signal);
      return dts::serve::run_serve(serve, g_stop);
    }
    if (jc->parsed()) {
      if (jobs_cli.id == 0 && jobs_cli.action != "list" && jobs_cli.action != "create") {
        std::fprintf(stderr, "jobs %s needs the job's id: dts_applier jobs %s ID\n", jobs_cli.action.c_str(),
                     jobs_cli.action.c_str());
        return dts::follow::kExitUsage;
      }
      return dts::serve::run_jobs_cli(jobs_cli);
    }
    if (k->parsed()) {
      complete.max_lag = std::chrono::milliseconds(max_lag_ms);
      complete.timeout = std::chrono::seconds(complete_timeout_s);
      complete.drain_timeout = std::chrono::seconds(drain_timeout_s);
      complete.scope = scope == "database" ? dts::complete::ReadOnlyScope::kDatabase : dts::complete::ReadOnlyScope::kCluster;
      std::signal(SIGINT, on_signal);
      std::signal(SIGTERM, on_signal);
      return dts::complete::run_complete(complete, g_stop);
    }
    if (v->parsed()) {
      verify.wait_timeout = std::chrono::seconds(verify_wait_s);
      verify.schema = !verify_no_schema;
      if (verify_databases.several()) return dts::server::run_verify_databases(verify, verify_databases, verify_json);
      return dts::verify::run_verify(verify, verify_json);
    }
    if (rl->parsed()) {
      auto report = dts::roles::copy_roles(
          dts::roles::read_source_roles(dts::pg::Connection::open(roles_source, "source")),
          dts::pg::Connection::open(roles_target, "target"), roles_dry_run);
      std::fputs((roles_json ? dts::roles::render_json(report) + "\n" : dts::roles::render_text(report)).c_str(), stdout);
      // 0: nothing left to do; 1: some roles need the statements shown.
      return std::any_of(report.notes.begin(), report.notes.end(), [](const auto& n) { return !n.statement.empty(); }) ? 1 : 0;
    }
    if (c->parsed()) {
      std::vector<dts::core::SelectedRelation> selected;
      auto items = dts::check::run_checks(check, &selected);
      std::fputs((check_json ? dts::check::render_json(items, &selected) : dts::check::render_table(items)).c_str(),
                 stdout);
      // 0 passed, 1 warnings, 2 failed.
      return static_cast<int>(dts::check::overall(items));
    }
    if (m->parsed()) {
      migrate.incremental = migrate_mode == "incremental";
      migrate.resume_auto = migrate_resume == "auto";
      migrate.until_lsn = lsn_or_none(migrate_until);
      require_status_file(migrate.status_file);
      std::signal(SIGINT, on_signal);
      std::signal(SIGTERM, on_signal);
      if (migrate_databases.several()) return dts::server::run_server_migrate(migrate, migrate_databases, g_stop);
      return dts::migrate::run_migrate(migrate, g_stop);
    }
    std::fputs(app.help().c_str(), stdout);
    return 0;
  };
  try {
    return run_command();
  } catch (const dts::Error& e) {
    return failed_with(command, e.what(), e.kind() == dts::ErrorKind::kConfig, status_file, slot);
  } catch (const std::exception& e) {
    return failed_with(command, e.what(), false, status_file, slot);
  } catch (...) {
    return failed_with(command, "an exception of unknown type (a bug: please report it with this log)", false,
                       status_file, slot);
  }
}
