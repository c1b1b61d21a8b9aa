#include "migrate/migrate.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>
#include <vector>

#include "apply/sql_builder.hpp"
#include "check/check.hpp"
#include "core/table_selection.hpp"
#include "common/error.hpp"
#include "common/parse.hpp"
#include "common/private_dir.hpp"
#include "core/migration.hpp"
#include "dts/protocol.h"
#include "follow/status.hpp"
#include "migrate/child_process.hpp"
#include "migrate/copier.hpp"
#include "migrate/copy_progress.hpp"
#include "migrate/job_lock.hpp"
#include "migrate/large_objects.hpp"
#include "pg/connection.hpp"
#include "roles/roles.hpp"

extern char** environ;

namespace dts::migrate {
namespace {

constexpr uint64_t kPageSize = 8192;

// The dumps' directory: the schema dump is run against the target, so nobody else may read or
// swap it.
struct TempDir : PrivateDir {
  TempDir() : PrivateDir("dts-migrate") { spdlog::info("schema dumps go to the private directory {}", path); }
};

// Runs a program (no shell), its stderr kept (in the private directory `private_dir`) for the
// error message; its stdout goes to `out_path` if given. Stops it (and throws Stopped) once
// `should_stop` says so.
// A conninfo given with -d loses its password to the child's environment: command lines are
// public (ps, /proc/<pid>/cmdline), environments are not.
void run_in(std::vector<std::string> argv, const std::string& what, const std::string& private_dir,
            const StopCheck& should_stop, const std::string& out_path = "") {
  if (should_stop()) throw Stopped("stopped before " + what);
  std::string err_path = private_dir + "/stderr-XXXXXX";
  int err_fd = mkstemp(err_path.data());
  if (err_fd < 0) throw Error(ErrorKind::kInternal, "cannot create a file in " + private_dir + ": " + std::strerror(errno));
  close(err_fd);
  std::string password;
  for (size_t i = 1; i < argv.size(); ++i)
    if (argv[i - 1] == "-d") argv[i] = pg::conninfo_without_password(argv[i], password);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e)
    if (password.empty() || std::strncmp(*e, "PGPASSWORD=", 11) != 0) env.emplace_back(*e);
  if (!password.empty()) env.push_back("PGPASSWORD=" + password);
  struct RemoveOnExit {
    std::string path;
    ~RemoveOnExit() { std::remove(path.c_str()); }
  } remove_err{err_path};
  int status = run_child(argv, env, out_path, err_path, should_stop);
  std::ifstream in(err_path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string msg = ss.str();
    if (msg.size() > 2000) msg = msg.substr(0, 2000) + "...";
    throw Error(ErrorKind::kApply, what + " failed: " + msg);
  }
}

void run(std::vector<std::string> argv, const std::string& what, const TempDir& dir, const StopCheck& should_stop,
         const std::string& out_path = "") {
  run_in(std::move(argv), what, dir.path, should_stop, out_path);
}

// For check's dry runs: nothing stops them but their end.
bool never() { return false; }

// Every object of the section but the tables left out: the selected tables come with the
// types, functions and schemas they may need. Each -T is one table's exact name, quoted, which
// pg_dump reads literally (its own pattern rules never see the user's patterns).
std::vector<std::string> dump_excluding(const MigrateOptions& o, const std::string& section, const std::string& file,
                                        const std::vector<std::string>& left_out) {
  std::vector<std::string> a = {"pg_dump", "-d", o.source, "--section=" + section, "-Fc", "-f", file};
  for (const auto& t : left_out) a.insert(a.end(), {"-T", t});
  return a;
}


void set_phase(const pg::Connection& target, const std::string& slot, const std::string& phase, const std::string& lsn) {
  target.exec_params(
      "INSERT INTO dts.migration (slot, phase, consistent_point, updated_at) VALUES ($1, $2, NULLIF($3, '')::pg_lsn, now()) "
      "ON CONFLICT (slot) DO UPDATE SET phase = EXCLUDED.phase, "
      "consistent_point = coalesce(EXCLUDED.consistent_point, dts.migration.consistent_point), updated_at = now()",
      {slot, phase, lsn});
}

void report(const MigrateOptions& o, const std::string& phase, const std::string& copy) {
  if (!o.status_file.empty()) {
    follow::Status st;
    st.phase = phase;
    st.slot = o.slot;
    st.copy_json = copy;
    follow::write_status_file(o.status_file, st);
  }
}

// check, before anything is created: FAILED items stop the start unless skipped by name.
void run_prechecks(const MigrateOptions& o, bool restart) {
  check::CheckOptions c;
  c.source = o.source;
  c.target = o.target;
  c.tables = o.tables;
  c.exclude = o.exclude;
  c.resuming = restart;
  c.no_owner = o.no_owner;
  c.no_privileges = o.no_privileges;
  std::vector<check::Item> items = check::run_checks(c);
  std::vector<check::Item> blocking;
  for (auto& item : items) {
    bool skipped = std::find(o.skip_checks.begin(), o.skip_checks.end(), item.name) != o.skip_checks.end();
    if (item.status == check::Status::kWarning) spdlog::warn("check {}: {} (fix: {})", item.name, item.reason, item.fix);
    if (item.status != check::Status::kFailed) continue;
    if (skipped) {
      spdlog::warn("check {} FAILED, skipped as asked: {}", item.name, item.reason);
      continue;
    }
    blocking.push_back(item);
  }
  if (blocking.empty()) {
    spdlog::info("prechecks passed ({} items)", items.size());
    return;
  }
  std::fputs(check::render_table(blocking).c_str(), stderr);
  std::string names;
  for (const auto& b : blocking) names += (names.empty() ? "" : ", ") + b.name;
  throw Error(ErrorKind::kConfig, "prechecks FAILED: " + names + ". Fix them (see above), or, knowing the consequence, "
                                  "pass --skip-check " + blocking.front().name);
}

// The source's roles, before the checks that the schema's owners exist (a restart finds them
// there: they are checked, not created again).
void copy_roles(const MigrateOptions& o) {
  roles::copy_and_log(pg::Connection::open(o.source, "source"), pg::Connection::open(o.target, "target"));
}

// Large objects, which the stream does not carry: copied once here, brought up to date again by
// complete inside the read-only window (migrate/large_objects.hpp).
void copy_large_objects(const MigrateOptions& o) {
  pg::Connection source = pg::Connection::open(o.source, "source");
  if (count_large_objects(source).objects == 0) return;
  LargeObjectSync done = sync_large_objects(source, pg::Connection::open(o.target, "target"));
  spdlog::info("large objects: {}; complete brings them up to date again in its read-only window", done.summary());
}

// The restore's options for ownership and grants, and how the summary says what was done.
std::vector<std::string> ownership_args(const MigrateOptions& o) {
  std::vector<std::string> a;
  if (o.no_owner) a.push_back("--no-owner");
  if (o.no_privileges) a.push_back("--no-privileges");
  return a;
}

std::string ownership_summary(const MigrateOptions& o, const std::string& role) {
  return std::string("objects owned by ") + (o.no_owner ? role + " (--no-owner)" : "their source owners") + ", grants " +
         (o.no_privileges ? "left out (--no-privileges)" : "as on the source (but those on built-in pg_catalog objects)");
}

void report_failure(const MigrateOptions& o, const std::string& error) {
  if (o.status_file.empty()) return;
  follow::Status st;
  st.phase = core::phase_name(core::Phase::kFailed);
  st.slot = o.slot;
  st.error = error;
  follow::write_status_file(o.status_file, st);
}

// Where a migrate that stopped early ends, its tools and copy workers already stopped. Asked
// to (a signal): exit code 0, as follow's; a later run restarts an unfinished copy. Cut off
// (its lifeline terminated, which is what cancel does, or lost): exit code 1.
int stopped(const MigrateOptions& o, const pg::Connection& target, bool by_signal, const std::string& what) {
  if (!by_signal) {
    std::string msg = "stopped: the session holding the migration's lock on the target was terminated (by "
                      "dts_applier cancel, or the target went away); its tools and copy workers are stopped (" +
                      what + ")";
    spdlog::error("{}", msg);
    report_failure(o, msg);
    return follow::kExitFailed;
  }
  // A tool that needed SIGKILL may have left a query running on its server (a CREATE INDEX goes
  // on until it next talks to its client): end what is left of the job's sessions.
  try {
    int ended = terminate_job_sessions(target, o.slot, /*this_run=*/true);
    pg::Connection source = pg::Connection::open(o.source, "source");
    ended += terminate_job_sessions(source, o.slot, /*this_run=*/true);
    if (ended > 0) spdlog::warn("ended {} sessions the stopped tools left on the servers", ended);
  } catch (const Error& e) {
    spdlog::warn("could not look for sessions the stopped tools left: {}", e.what());
  }
  spdlog::info("stopped as asked ({}); running the same command again restarts an unfinished copy", what);
  report(o, core::phase_name(core::Phase::kStopped), "");
  return follow::kExitOk;
}

}  // namespace

void run_tool(std::vector<std::string> argv, const std::string& what, const std::string& private_dir,
              const std::string& out_path) {
  run_in(std::move(argv), what, private_dir, never, out_path);
}

std::string restore_list(const std::string& dump) {
  std::string raw = dump + ".all", list = dump + ".list";
  run_in({"pg_restore", "-l", dump}, "pg_restore -l", std::filesystem::path(dump).parent_path().string(), never, raw);
  std::ifstream in(raw);
  std::ofstream out(list);
  std::string line;
  // "<id>; <classid> <oid> ACL pg_catalog FUNCTION pg_reload_conf() <owner>": a grant on a
  // built-in object, which only a superuser could repeat on the target.
  // "<id>; 0 0 COMMENT - EXTENSION <name> <owner>": CREATE EXTENSION sets it from the control
  // file already, and only the extension's owner may set it, which the target role is not
  // when a superuser created the extension there beforehand (check's extension_create).
  // dts_decoding's extension and its schema are the source's side of this migration: the
  // target needs neither (its DDL capture would only add messages there), and only a
  // superuser could create them.
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string id, classid, oid, desc, schema, kind, name;
    words >> id >> classid >> oid >> desc >> schema >> kind >> name;
    bool plugin = schema == "-" && ((desc == "EXTENSION" || desc == "SCHEMA") ? kind == "dts_decoding"
                                                                             : (kind == "EXTENSION" || kind == "SCHEMA") &&
                                                                                   name == "dts_decoding");
    bool skip = plugin || (desc == "ACL" && schema == "pg_catalog") || (desc == "COMMENT" && schema == "-" && kind == "EXTENSION");
    out << (skip ? "; " : "") << line << "\n";
  }
  if (!out.flush()) throw Error(ErrorKind::kInternal, "cannot write the restore list " + list);
  return list;
}

int copy_sequences(const pg::Connection& source, const pg::Connection& target, int64_t shift) {
  // Two round trips however many sequences there are: complete runs this inside its read-only
  // window. The target's sequences (pre-data created those of the selected tables) take the
  // source's values; a sequence never called takes its start value, still uncalled.
  std::string values = source.query_value(
      "SELECT coalesce(json_agg(json_build_object('name', format('%I.%I', schemaname, sequencename), "
      "'last', coalesce(last_value, start_value), 'called', last_value IS NOT NULL)), '[]') FROM pg_sequences");
  // With a shift the next value is last + shift + 1: room for writes that reached the source
  // in a way that the cutover could not see, as "copy-seq 1000" does. In the sequence's own
  // direction (a descending one goes down), within its bounds.
  return static_cast<int>(parse_int64(target.query_value(
      "SELECT count(setval(s.seqrelid::regclass, CASE WHEN s.seqincrement > 0 "
      "THEN least(v.last + $2::numeric, s.seqmax) ELSE greatest(v.last - $2::numeric, s.seqmin) END::bigint, "
      "v.called OR $2::bigint > 0)) "
      "FROM json_to_recordset($1::json) AS v(name text, last numeric, called bool) "
      "JOIN pg_sequence s ON s.seqrelid = to_regclass(v.name) "
      "JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname <> 'dts'",
      {values, std::to_string(shift)}), "the number of sequences set on the target"));
}

// The follow phase's options: the stream options migrate was given, and the tables the copy
// used (read back from the state table).
follow::FollowOptions follow_options(const MigrateOptions& opts, const pg::Connection& target) {
  follow::FollowOptions f;
  f.source = opts.source;
  f.target = opts.target;
  f.slot = opts.slot;
  // The user's patterns, as the copy used them: the plugin selects the same tables, and tables
  // created later that match are streamed too. A resume reads them back from the state table.
  core::StoredSelection stored =
      core::stored_selection(target, opts.slot).value_or(core::StoredSelection{opts.tables, opts.exclude});
  f.tables = stored.tables;
  f.exclude = stored.exclude;
  if (f.tables != opts.tables || f.exclude != opts.exclude)
    spdlog::warn("the migration copied --tables \"{}\" --exclude \"{}\": following those, not the ones given now",
                 f.tables, f.exclude);
  core::TableSelection(f.tables, f.exclude);  // stored by an older applier: refused here if the plugin would
  f.status_file = opts.status_file;
  f.until_lsn = opts.until_lsn;
  f.origin = "dts_" + opts.slot;
  f.decoding_work_mem = opts.decoding_work_mem;
  f.streaming = opts.streaming;
  f.bandwidth_mb_per_s = opts.bandwidth_mb_per_s;
  f.apply_workers = opts.apply_workers;
  f.resume_auto = opts.resume_auto;
  return f;
}

// What the copy works from: the tables and their chunks, as saved on the target.
struct CopyPlan {
  std::vector<TableToCopy> tables;
  std::vector<Chunk> chunks;
  std::vector<std::string> left_out;  // of the schema dumps: the tables not selected
};

// A fresh start (or a start over, when a run stopped before its plan was saved): the slot, the
// schema's pre-data section restored in the slot's snapshot, then the plan of the copy saved on
// the target. The slot's snapshot is let go here: each chunk is read in a snapshot of its own.
CopyPlan start_copy(const MigrateOptions& opts, const pg::Connection& target,
                    const core::TableSelection& table_selection, bool restart, const TempDir& work,
                    const StopCheck& should_stop) {
  const std::string& dir = work.path;
  std::string origin = "dts_" + opts.slot;
  target.exec_params("DELETE FROM dts.copy_chunk WHERE slot = $1", {opts.slot});  // and any resync's
  pg::Connection repl = pg::Connection::open(opts.source, "source", /*replication=*/true);
  pg::Result exists = repl.exec("SELECT 1 FROM pg_replication_slots WHERE slot_name = " +
                                apply::quote_literal(opts.slot));
  if (PQntuples(exists.get()) > 0) {
    if (!restart)
      throw Error(ErrorKind::kConfig, "replication slot \"" + opts.slot +
                                          "\" already exists on the source; drop it or pass another --slot");
    repl.exec("DROP_REPLICATION_SLOT " + apply::quote_ident(opts.slot) + " WAIT");
  }
  target.exec_params("SELECT pg_replication_origin_drop($1) WHERE pg_replication_origin_oid($1) IS NOT NULL",
                     {origin});
  if (restart) spdlog::warn("the previous copy did not finish: copying again from the start");

  if (should_stop()) throw Stopped("stopped before the slot was created");
  pg::Result slot = repl.exec("CREATE_REPLICATION_SLOT " + apply::quote_ident(opts.slot) +
                              " LOGICAL dts_decoding EXPORT_SNAPSHOT");
  if (should_stop()) {
    // Nothing records it yet (a later run would refuse the slot it does not know), and a
    // cancel may already have looked for it: it goes with us.
    repl.exec("DROP_REPLICATION_SLOT " + apply::quote_ident(opts.slot));
    throw Stopped("stopped as the slot was created");
  }
  std::string consistent = PQgetvalue(slot.get(), 0, 1);
  std::string snapshot = PQgetvalue(slot.get(), 0, 2);
  set_phase(target, opts.slot, core::phase_name(core::Phase::kCopying), consistent);
  report(opts, core::phase_name(core::Phase::kPreparing), "");
  spdlog::info("slot \"{}\" consistent at {}, snapshot {}", opts.slot, consistent, snapshot);

  // The selection compiled in the slot's snapshot: exactly the tables whose changes the
  // slot streams from its consistent point on.
  pg::Connection snap = pg::Connection::open(opts.source, "source");
  snap.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
  snap.exec("SET TRANSACTION SNAPSHOT " + apply::quote_literal(snapshot));
  core::CompiledSelection selection = table_selection.compile(snap);
  if (selection.selected.empty() && !table_selection.everything())
    throw Error(ErrorKind::kConfig, "--tables/--exclude select no table of the source");
  target.exec_params("UPDATE dts.migration SET tables = NULLIF($2, ''), exclude_tables = NULLIF($3, '') "
                     "WHERE slot = $1", {opts.slot, opts.tables, opts.exclude});
  std::vector<std::string> left_out = core::left_out_of_dump(selection);
  auto pre = dump_excluding(opts, "pre-data", dir + "/pre.dump", left_out);
  pre.push_back("--snapshot=" + snapshot);
  run(pre, "pg_dump of the schema (pre-data)", work, should_stop);
  std::vector<std::string> restore = {"pg_restore", "-d", opts.target, "--section=pre-data", "--exit-on-error"};
  for (auto& a : ownership_args(opts)) restore.push_back(a);
  if (restart) {
    // The attempt before may have reached post-data: its foreign keys would stop pre-data's
    // --clean from dropping the tables they point at. (The target holds only what the
    // migration created: check verifies it is empty before the first run.)
    pg::Result fks = target.exec(
        "SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname <> 'dts'");
    for (int i = 0; i < PQntuples(fks.get()); ++i) target.exec(PQgetvalue(fks.get(), i, 0));
    restore.insert(restore.end(), {"--clean", "--if-exists"});
  }
  restore.insert(restore.end(), {"-L", restore_list(dir + "/pre.dump"), dir + "/pre.dump"});
  run(restore, "pg_restore of the schema (pre-data) into the target", work, should_stop);
  CopyPlan plan;
  plan.tables = tables_to_copy(selection, snap);
  plan.left_out = left_out;
  snap.close();
  repl.close();  // ends the exported snapshot; the slot stays
  plan.chunks = plan_chunks(plan.tables, opts.split_larger_than);
  target.exec("BEGIN");  // the whole plan or none of it: a partial one would lose chunks
  save_plan(target, opts.slot, 0, plan.tables, plan.chunks);
  target.exec("COMMIT");
  return plan;
}

// A run that stopped after its plan was saved: the same slot, the same chunks, those done kept.
// None if there is no plan, or its slot is gone (the copy starts over).
std::optional<CopyPlan> saved_plan(const MigrateOptions& opts, const pg::Connection& target, const std::string& phase) {
  if (phase.empty() ||
      target.query_value("SELECT count(*) FROM dts.copy_chunk WHERE slot = $1 AND generation = 0", {opts.slot}) == "0")
    return std::nullopt;
  pg::Connection source = pg::Connection::open(opts.source, "source");
  if (source.query_value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", {opts.slot}) == "0") {
    spdlog::warn("the copy's slot \"{}\" is gone from the source: copying again from the start", opts.slot);
    return std::nullopt;
  }
  core::StoredSelection stored = core::stored_selection(target, opts.slot).value_or(core::StoredSelection{});
  core::TableSelection selection(stored.tables, stored.exclude);
  core::CompiledSelection compiled = selection.compile(source);
  CopyPlan plan;
  plan.tables = tables_to_copy(compiled, source);
  plan.chunks = load_plan(target, opts.slot, 0, plan.tables);
  plan.left_out = core::left_out_of_dump(compiled);
  size_t done = std::count_if(plan.chunks.begin(), plan.chunks.end(), [](const Chunk& c) { return c.done.load(); });
  size_t redone = std::count_if(plan.chunks.begin(), plan.chunks.end(), [](const Chunk& c) { return c.redone; });
  spdlog::info("resuming the copy: {} of {} chunks were done; {} were in flight and are copied again", done,
               plan.chunks.size(), redone);
  return plan;
}

// The chunks not done, then the post-data section (indexes, constraints) and the sequences.
// Returns the copy's summary.
std::string copy_and_build(const MigrateOptions& opts, const pg::Connection& target, CopyPlan& plan,
                           bool building_started, const TempDir& work, const StopCheck& should_stop) {
  const std::string& dir = work.path;
  std::vector<TableToCopy>& tables = plan.tables;
  std::vector<Chunk>& chunks = plan.chunks;
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  CopyFigures figures;
  if (!building_started) {
    SnapshotWatch watch(opts.source, run_application_name(opts.slot), opts.slot);
    std::vector<bool> reported(tables.size(), false);
    ChunkRecord record{opts.slot, 0, nullptr, nullptr, nullptr, nullptr};
    CopyResult copied = copy_chunks(opts.source, opts.target, record, tables, chunks, opts.jobs, [&] {
      watch.sample();
      figures.seconds = elapsed();
      figures.longest_snapshot_seconds = watch.longest_seconds();
      report(opts, core::phase_name(core::Phase::kCopying), copy_json(tables, chunks, figures));
      progress_bar(tables, chunks, reported, elapsed());
    }, should_stop);
    watch.sample();
    progress_bar(tables, chunks, reported, elapsed());
    if (isatty(STDERR_FILENO) != 0) std::fputc('\n', stderr);
    figures.longest_snapshot_seconds = watch.longest_seconds();
    spdlog::info("copied {} rows of {} tables in {} chunks ({:.1f} MB) in {:.1f} s; the longest snapshot held on "
                 "the source: {:.1f} s", copied.rows, tables.size(), chunks.size(), copied.bytes / 1e6, elapsed(),
                 watch.longest_seconds());
    set_phase(target, opts.slot, core::phase_name(core::Phase::kBuildingIndexes), "");
  }
  figures.seconds = elapsed();
  figures.schema = ownership_summary(opts, target.query_value("SELECT current_user"));
  std::string summary = copy_json(tables, chunks, figures);
  report(opts, core::phase_name(core::Phase::kBuildingIndexes), summary);
  run(dump_excluding(opts, "post-data", dir + "/post.dump", plan.left_out), "pg_dump of the schema (post-data)", work,
      should_stop);
  std::vector<std::string> post = {"pg_restore", "-d", opts.target, "--section=post-data", "--exit-on-error", "-j",
                                   std::to_string(std::max(1, opts.jobs))};
  for (auto& a : ownership_args(opts)) post.push_back(a);
  // A run that stopped while building them left some: they are dropped and built again.
  if (building_started) post.insert(post.end(), {"--clean", "--if-exists"});
  post.insert(post.end(), {"-L", restore_list(dir + "/post.dump"), dir + "/post.dump"});
  run(post, "pg_restore of indexes and constraints (post-data) into the target", work, should_stop);
  spdlog::info("schema restored: {}", figures.schema);
  pg::Connection source = pg::Connection::open(opts.source, "source");
  copy_sequences(source, target, 0);
  // Mode full still applies the changes made during the copy (finish_full_copy).
  set_phase(target, opts.slot, core::phase_name(opts.incremental ? core::Phase::kStreaming : core::Phase::kCatchingUp),
            "");
  return summary;
}

// Mode full: the chunks were read in snapshots of their own, so the copy is one consistent
// state only once the stream has been applied up to the latest of them; then the slot goes.
int finish_full_copy(const MigrateOptions& opts, const pg::Connection& target, const std::string& summary,
                     const std::atomic<bool>& stop) {
  std::string horizon = target.query_value(
      "SELECT coalesce(max(snapshot_lsn), '0/0')::text FROM dts.copy_chunk WHERE slot = $1", {opts.slot});
  follow::FollowOptions f = follow_options(opts, target);
  // A marker through the slot, past the horizon: its commit is applied at once, where a quiet
  // source would leave the stream waiting for its next WAL (the next running-xacts record,
  // up to 15 s) to show that the horizon was passed.
  pg::Connection source = pg::Connection::open(opts.source, "source");
  Lsn marker = parse_lsn(source.query_value("SELECT pg_logical_emit_message(true, $1, 'copy done')::text",
                                            {std::string(protocol::kMarkerPrefix)}))
                   .value_or(0);
  source.close();
  f.until_lsn = std::max(parse_lsn(horizon).value_or(0), marker);
  f.copy_json = summary;
  spdlog::info("mode full: applying the changes made during the copy, up to {}", horizon);
  int rc = follow::run_follow(f, stop);
  if (rc != follow::kExitOk || stop.load()) return rc;
  set_phase(target, opts.slot, core::phase_name(core::Phase::kDone), "");
  report(opts, core::phase_name(core::Phase::kStopped), summary);
  // WAIT: the walsender of the catch-up that just ended may not have released the slot yet.
  pg::Connection repl = pg::Connection::open(opts.source, "source", true);
  repl.exec("DROP_REPLICATION_SLOT " + apply::quote_ident(opts.slot) + " WAIT");
  spdlog::info("mode full: done, slot dropped");
  return follow::kExitOk;
}

int run_migrate(const MigrateOptions& opts, const std::atomic<bool>& stop) {
  // Every session of the job, the tools' included, says whose it is (see job_lock.hpp).
  setenv("PGAPPNAME", run_application_name(opts.slot).c_str(), 1);
  pg::Connection target;  // the lifeline: holds the job's lock for as long as migrate runs
  // SIGINT/SIGTERM, or cancel terminated the lifeline: stop the tools and the copy, then exit.
  StopCheck should_stop = [&] { return stop.load() || connection_lost(target); };
  try {
    // Malformed patterns stop us before anything is created.
    core::TableSelection table_selection(opts.tables, opts.exclude);
    target = pg::Connection::open(opts.target, "target");
    take_job_lock(target, opts.slot, std::chrono::seconds(10));
    target.exec("CREATE SCHEMA IF NOT EXISTS dts");
    // copy_summary: shown again by a migrate resumed after the copy. stop_lsn: complete's stop
    // marker, so that an applier restarted after applying it still stops there.
    target.exec("CREATE TABLE IF NOT EXISTS dts.migration (slot text PRIMARY KEY, phase text NOT NULL, "
                "consistent_point pg_lsn, tables text, copy_summary text, stop_lsn pg_lsn, "
                "updated_at timestamptz NOT NULL)");
    // tables / exclude_tables: the user's --tables / --exclude, the plugin's dialect, which
    // follow passes on and verify compiles again. (Before exclude_tables, tables held the exact
    // names of the selection, quoted: patterns of the same dialect, so still read right.)
    target.exec("ALTER TABLE dts.migration ADD COLUMN IF NOT EXISTS exclude_tables text");
    std::string phase = target.query_value("SELECT phase FROM dts.migration WHERE slot = $1", {opts.slot});
    std::string origin = "dts_" + opts.slot;
    std::string copy_summary;

    if (core::parse_phase(phase) == core::Phase::kCompleted) {
      spdlog::info("migration with slot \"{}\" was completed (cut over); nothing to do", opts.slot);
      return follow::kExitOk;
    }
    std::optional<core::Phase> at = core::parse_phase(phase);
    if (at == core::Phase::kDone) {
      spdlog::info("migration with slot \"{}\" already done", opts.slot);
      return follow::kExitOk;
    }
    if (at != core::Phase::kStreaming && at != core::Phase::kCatchingUp) {
      if (opts.roles) copy_roles(opts);
      run_prechecks(opts, !phase.empty());
      TempDir work;  // before the slot: a TMPDIR that cannot be used leaves nothing behind
      create_chunk_table(target);
      std::optional<CopyPlan> plan = saved_plan(opts, target, phase);
      if (!plan) plan = start_copy(opts, target, table_selection, !phase.empty(), work, should_stop);
      copy_summary = copy_and_build(opts, target, *plan, at == core::Phase::kBuildingIndexes, work, should_stop);
      copy_large_objects(opts);
    }
    if (!opts.incremental) {
      if (copy_summary.empty())
        copy_summary = target.query_value("SELECT coalesce(copy_summary, '') FROM dts.migration WHERE slot = $1", {opts.slot});
      return finish_full_copy(opts, target, copy_summary, stop);
    }

    follow::FollowOptions f = follow_options(opts, target);
    if (!copy_summary.empty())
      target.exec_params("UPDATE dts.migration SET copy_summary = $2 WHERE slot = $1", {opts.slot, copy_summary});
    else
      copy_summary = target.query_value("SELECT coalesce(copy_summary, '') FROM dts.migration WHERE slot = $1", {opts.slot});
    f.copy_json = copy_summary;
    f.watch_stop_lsn = true;
    return follow::run_follow(f, stop);
  } catch (const Stopped& e) {
    return stopped(opts, target, stop.load(), e.what());
  } catch (const Error& e) {
    // A step that failed because cancel cut the lifeline is a stop, not a failure of that step.
    if (target && connection_lost(target)) return stopped(opts, target, stop.load(), e.what());
    spdlog::error("{}", e.what());
    report_failure(opts, e.what());
    return e.kind() == ErrorKind::kConfig ? follow::kExitUsage : follow::kExitFailed;
  }
}

}  // namespace dts::migrate
