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
#include <vector>

#include "apply/sql_builder.hpp"
#include "check/check.hpp"
#include "common/error.hpp"
#include "follow/status.hpp"
#include "migrate/child_process.hpp"
#include "migrate/copier.hpp"
#include "migrate/job_lock.hpp"
#include "pg/connection.hpp"

extern char** environ;

namespace dts::migrate {
namespace {

constexpr uint64_t kPageSize = 8192;

// The dumps' directory, removed however the copy ends.
struct TempDir {
  std::string path = (std::filesystem::temp_directory_path() / ("dts-migrate-" + std::to_string(getpid()))).string();
  TempDir() { std::filesystem::create_directories(path); }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// Runs a program (no shell), its stderr kept for the error message; its stdout goes to
// `out_path` if given. Stops it (and throws Stopped) once `should_stop` says so.
// A conninfo given with -d loses its password to the child's environment: command lines are
// public (ps, /proc/<pid>/cmdline), environments are not.
void run(std::vector<std::string> argv, const std::string& what, const StopCheck& should_stop,
         const std::string& out_path = "") {
  if (should_stop()) throw Stopped("stopped before " + what);
  // A file of our own for the tool's stderr: a predictable name in /tmp could be a planted link.
  char err_template[] = "/tmp/dts-migrate-XXXXXX";
  int err_fd = mkstemp(err_template);
  if (err_fd < 0) throw Error(ErrorKind::kInternal, std::string("cannot create a temporary file: ") + std::strerror(errno));
  close(err_fd);
  std::string err_path = err_template;
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

std::vector<std::string> split_patterns(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (c != ' ' || !cur.empty()) {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::vector<std::string> dump_args(const MigrateOptions& o, const std::string& section, const std::string& file) {
  std::vector<std::string> a = {"pg_dump", "-d", o.source, "--section=" + section, "-Fc", "-f", file};
  for (const auto& p : split_patterns(o.tables)) a.insert(a.end(), {"-t", p});
  for (const auto& p : split_patterns(o.exclude)) a.insert(a.end(), {"-T", p});
  return a;
}

// Every object of the section but the unselected tables: the selected tables come with the
// types, functions and schemas they may need.
std::vector<std::string> dump_excluding(const MigrateOptions& o, const std::string& section, const std::string& file,
                                        const std::vector<std::string>& unselected) {
  std::vector<std::string> a = {"pg_dump", "-d", o.source, "--section=" + section, "-Fc", "-f", file};
  for (const auto& t : unselected) a.insert(a.end(), {"-T", t});
  return a;
}

// A table name as a pg_dump/plugin pattern that matches it alone: quoted, quotes doubled.
std::string exact_pattern(const std::string& schema, const std::string& name) {
  return apply::quote_ident(schema) + "." + apply::quote_ident(name);
}

// The tables --tables/--exclude select, resolved by pg_dump itself (so its pattern rules apply)
// and returned as exact names; partitions come with their selected partitioned tables. Also
// returns the tables *not* selected, for pg_dump -T.
struct Selection {
  std::vector<std::string> selected;
  std::vector<std::string> unselected;
};

Selection resolve_selection(const MigrateOptions& o, const std::string& snapshot, const std::string& dir,
                            const pg::Connection& snap, const StopCheck& should_stop) {
  std::string dump = dir + "/selection.dump";
  auto args = dump_args(o, "pre-data", dump);
  args.push_back("--snapshot=" + snapshot);
  run(args, "pg_dump resolving --tables/--exclude", should_stop);
  std::string toc = dump + ".toc";
  run({"pg_restore", "-l", dump}, "pg_restore -l", should_stop, toc);
  // TOC lines: "<id>; <classid> <oid> TABLE <schema> <name> <owner>": the oid is what we trust.
  std::ifstream in(toc);
  std::string line, oids;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == ';') continue;
    std::istringstream words(line);
    std::string id, classid, oid, desc;
    words >> id >> classid >> oid >> desc;
    if (desc == "TABLE") oids += (oids.empty() ? "" : ",") + oid;
  }
  pg::Result r = snap.exec_params(
      "WITH picked AS (SELECT unnest(string_to_array(NULLIF($1, ''), ','))::oid AS oid),"
      " chosen AS (SELECT t.relid AS oid FROM picked p, pg_partition_tree(p.oid) t UNION SELECT oid FROM picked)"
      " SELECT n.nspname, c.relname, c.oid IN (SELECT oid FROM chosen) FROM pg_class c"
      " JOIN pg_namespace n ON n.oid = c.relnamespace"
      " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
      " AND n.nspname NOT LIKE 'pg\\_%'",
      {oids});
  Selection sel;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::string name = exact_pattern(PQgetvalue(r.get(), i, 0), PQgetvalue(r.get(), i, 1));
    (std::string(PQgetvalue(r.get(), i, 2)) == "t" ? sel.selected : sel.unselected).push_back(name);
  }
  return sel;
}

void set_phase(const pg::Connection& target, const std::string& slot, const std::string& phase, const std::string& lsn) {
  target.exec_params(
      "INSERT INTO dts.migration (slot, phase, consistent_point, updated_at) VALUES ($1, $2, NULLIF($3, '')::pg_lsn, now()) "
      "ON CONFLICT (slot) DO UPDATE SET phase = EXCLUDED.phase, "
      "consistent_point = coalesce(EXCLUDED.consistent_point, dts.migration.consistent_point), updated_at = now()",
      {slot, phase, lsn});
}

std::vector<TableToCopy> tables_to_copy(const pg::Connection& target, const pg::Connection& snap) {
  // What pre-data created on the target (an empty database before the migration), as the
  // source sees it in the snapshot.
  pg::Result t = target.exec(
      "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dts') "
      "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2");
  std::vector<TableToCopy> out;
  for (int i = 0; i < PQntuples(t.get()); ++i) {
    TableToCopy tc;
    tc.schema = PQgetvalue(t.get(), i, 0);
    tc.name = PQgetvalue(t.get(), i, 1);
    std::string qualified = apply::quote_ident(tc.schema) + "." + apply::quote_ident(tc.name);
    pg::Result info = snap.exec_params(
        "SELECT c.relpages, c.reltuples::bigint, pg_relation_size(c.oid) FROM pg_class c WHERE c.oid = to_regclass($1)",
        {qualified});
    if (PQntuples(info.get()) == 0) continue;  // not on the source
    uint64_t bytes = std::strtoull(PQgetvalue(info.get(), 0, 2), nullptr, 10);
    tc.pages = bytes / kPageSize;
    tc.estimated_rows = std::strtoll(PQgetvalue(info.get(), 0, 1), nullptr, 10);
    pg::Result cols = snap.exec_params(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped "
        "AND attgenerated = '' ORDER BY attnum",
        {qualified});
    for (int j = 0; j < PQntuples(cols.get()); ++j) tc.columns.push_back(PQgetvalue(cols.get(), j, 0));
    out.push_back(std::move(tc));
  }
  return out;
}

std::string copy_json(const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks, double seconds) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  uint64_t rows = 0, bytes = 0;
  size_t done = 0;
  for (const auto& c : chunks) {
    rows += c.rows;
    bytes += c.bytes;
    done += c.done ? 1 : 0;
  }
  w.StartObject();
  w.Key("rows_copied");
  w.Uint64(rows);
  w.Key("bytes_copied");
  w.Uint64(bytes);
  w.Key("chunks");
  w.Uint64(chunks.size());
  w.Key("chunks_done");
  w.Uint64(done);
  w.Key("seconds");
  w.Double(seconds);
  w.Key("tables");
  w.StartArray();
  for (size_t i = 0; i < tables.size(); ++i) {
    uint64_t t_rows = 0, t_chunks = 0, t_done = 0;
    for (const auto& c : chunks) {
      if (c.table != i) continue;
      t_rows += c.rows;
      t_chunks++;
      t_done += c.done ? 1 : 0;
    }
    w.StartObject();
    w.Key("table");
    w.String((tables[i].schema + "." + tables[i].name).c_str());
    w.Key("estimated_rows");
    w.Int64(std::max<int64_t>(tables[i].estimated_rows, 0));
    w.Key("copied_rows");
    w.Uint64(t_rows);
    w.Key("chunks");
    w.Uint64(t_chunks);
    w.Key("chunks_done");
    w.Uint64(t_done);
    // Each chunk: its page range, estimated rows (its share of the table's estimate), copied
    // rows (known when done) and bytes streamed so far.
    w.Key("chunk_progress");
    w.StartArray();
    const TableToCopy& tt = tables[i];
    for (const auto& c : chunks) {
      if (c.table != i) continue;
      uint64_t end = c.end_page != 0 ? c.end_page : std::max<uint64_t>(tt.pages, c.first_page);
      double share = tt.pages > 0 ? static_cast<double>(end - c.first_page) / static_cast<double>(tt.pages) : 1.0;
      w.StartObject();
      w.Key("pages");
      w.String((std::to_string(c.first_page) + "-" + (c.end_page != 0 ? std::to_string(c.end_page) : "end")).c_str());
      w.Key("estimated_rows");
      w.Int64(static_cast<int64_t>(std::max<int64_t>(tt.estimated_rows, 0) * share));
      w.Key("copied_rows");
      w.Uint64(c.rows);
      w.Key("bytes");
      w.Uint64(c.bytes);
      w.Key("done");
      w.Bool(c.done);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
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

// On a terminal: a line for each table as it completes, and a bar for the copy as a whole.
void progress_bar(const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks,
                  std::vector<bool>& reported, double seconds) {
  if (isatty(STDERR_FILENO) == 0) return;
  for (size_t t = 0; t < tables.size(); ++t) {
    if (reported[t]) continue;
    uint64_t rows = 0;
    bool all = true;
    for (const auto& c : chunks) {
      if (c.table != t) continue;
      all = all && c.done;
      rows += c.rows;
    }
    if (!all) continue;
    reported[t] = true;
    std::fprintf(stderr, "\r\033[K  copied %s.%s: %llu rows\n", tables[t].schema.c_str(), tables[t].name.c_str(),
                 static_cast<unsigned long long>(rows));
  }
  uint64_t bytes = 0;
  size_t done = 0;
  for (const auto& c : chunks) {
    bytes += c.bytes;
    done += c.done ? 1 : 0;
  }
  constexpr int kWidth = 30;
  int filled = chunks.empty() ? kWidth : static_cast<int>(kWidth * done / chunks.size());
  std::fprintf(stderr, "\rCOPYING [%s%s] %zu/%zu chunks %.1f MB %.1f MB/s\033[K", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), done, chunks.size(), bytes / 1e6,
               seconds > 0 ? bytes / 1e6 / seconds : 0.0);
}


// check, before anything is created: FAILED items stop the start unless skipped by name.
void run_prechecks(const MigrateOptions& o, bool restart) {
  check::CheckOptions c;
  c.source = o.source;
  c.target = o.target;
  c.tables = o.tables;
  c.exclude = o.exclude;
  c.resuming = restart;
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

void report_failure(const MigrateOptions& o, const std::string& error) {
  if (o.status_file.empty()) return;
  follow::Status st;
  st.phase = "FAILED";
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
    int ended = terminate_job_sessions(target, o.slot);
    pg::Connection source = pg::Connection::open(o.source, "source");
    ended += terminate_job_sessions(source, o.slot);
    if (ended > 0) spdlog::warn("ended {} sessions the stopped tools left on the servers", ended);
  } catch (const Error& e) {
    spdlog::warn("could not look for sessions the stopped tools left: {}", e.what());
  }
  spdlog::info("stopped as asked ({}); running the same command again restarts an unfinished copy", what);
  report(o, "STOPPED", "");
  return follow::kExitOk;
}

}  // namespace

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
  return std::stoi(target.query_value(
      "SELECT count(setval(s.seqrelid::regclass, CASE WHEN s.seqincrement > 0 "
      "THEN least(v.last + $2::numeric, s.seqmax) ELSE greatest(v.last - $2::numeric, s.seqmin) END::bigint, "
      "v.called OR $2::bigint > 0)) "
      "FROM json_to_recordset($1::json) AS v(name text, last numeric, called bool) "
      "JOIN pg_sequence s ON s.seqrelid = to_regclass(v.name) "
      "JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname <> 'dts'",
      {values, std::to_string(shift)}));
}

int run_migrate(const MigrateOptions& opts, const std::atomic<bool>& stop) {
  // Every session of the job, the tools' included, says whose it is (see job_lock.hpp).
  setenv("PGAPPNAME", job_application_name(opts.slot).c_str(), 1);
  pg::Connection target;  // the lifeline: holds the job's lock for as long as migrate runs
  // SIGINT/SIGTERM, or cancel terminated the lifeline: stop the tools and the copy, then exit.
  StopCheck should_stop = [&] { return stop.load() || connection_lost(target); };
  try {
    target = pg::Connection::open(opts.target, "target");
    take_job_lock(target, opts.slot, std::chrono::seconds(10));
    target.exec("CREATE SCHEMA IF NOT EXISTS dts");
    // copy_summary: shown again by a migrate resumed after the copy. stop_lsn: complete's stop
    // marker, so that an applier restarted after applying it still stops there.
    target.exec("CREATE TABLE IF NOT EXISTS dts.migration (slot text PRIMARY KEY, phase text NOT NULL, "
                "consistent_point pg_lsn, tables text, copy_summary text, stop_lsn pg_lsn, "
                "updated_at timestamptz NOT NULL)");
    std::string phase = target.query_value("SELECT phase FROM dts.migration WHERE slot = $1", {opts.slot});
    std::string origin = "dts_" + opts.slot;
    std::string copy_summary;
    std::string selected_list;  // exact names of the selected tables, for follow

    if (phase == "completed") {
      spdlog::info("migration with slot \"{}\" was completed (cut over); nothing to do", opts.slot);
      return follow::kExitOk;
    }
    if (phase != "streaming" && phase != "done") {
      bool restart = !phase.empty();
      run_prechecks(opts, restart);
      // A copy that did not finish is started again from the beginning: its slot and origin
      // go, and pre-data recreates the tables empty (no half-copied table survives).
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
      set_phase(target, opts.slot, "copying", consistent);
      report(opts, "PREPARING", "");
      spdlog::info("slot \"{}\" consistent at {}, snapshot {}", opts.slot, consistent, snapshot);

      TempDir work;
      const std::string& dir = work.path;
      Selection selection;
      bool selecting = !opts.tables.empty() || !opts.exclude.empty();
      if (selecting) {
        pg::Connection sel_snap = pg::Connection::open(opts.source, "source");
        sel_snap.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
        sel_snap.exec("SET TRANSACTION SNAPSHOT " + apply::quote_literal(snapshot));
        selection = resolve_selection(opts, snapshot, dir, sel_snap, should_stop);
        if (selection.selected.empty())
          throw Error(ErrorKind::kConfig, "--tables/--exclude select no table of the source");
        std::string list;
        for (const auto& t : selection.selected) list += (list.empty() ? "" : ",") + t;
        selected_list = list;
      }
      auto pre = dump_excluding(opts, "pre-data", dir + "/pre.dump", selection.unselected);
      pre.push_back("--snapshot=" + snapshot);
      run(pre, "pg_dump of the schema (pre-data)", should_stop);
      std::vector<std::string> restore = {"pg_restore", "-d", opts.target, "--section=pre-data", "--exit-on-error"};
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
      restore.push_back(dir + "/pre.dump");
      run(restore, "pg_restore of the schema (pre-data) into the target", should_stop);

      pg::Connection snap = pg::Connection::open(opts.source, "source");
      snap.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
      snap.exec("SET TRANSACTION SNAPSHOT " + apply::quote_literal(snapshot));
      std::vector<TableToCopy> tables = tables_to_copy(target, snap);
      snap.close();
      std::vector<Chunk> chunks = plan_chunks(tables, opts.split_larger_than / kPageSize);
      auto t0 = std::chrono::steady_clock::now();
      auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
      std::vector<bool> reported(tables.size(), false);
      CopyResult copied = copy_chunks(opts.source, opts.target, snapshot, tables, chunks, opts.jobs, [&] {
        report(opts, "COPYING", copy_json(tables, chunks, elapsed()));
        progress_bar(tables, chunks, reported, elapsed());
      }, should_stop);
      progress_bar(tables, chunks, reported, elapsed());
      double secs = elapsed();
      if (isatty(STDERR_FILENO) != 0) std::fputc('\n', stderr);
      std::string summary = copy_json(tables, chunks, secs);
      report(opts, "BUILDING_INDEXES", summary);
      repl.close();  // the snapshot is no longer needed
      spdlog::info("copied {} rows of {} tables in {} chunks ({:.1f} MB) in {:.1f} s", copied.rows, tables.size(),
                   chunks.size(), copied.bytes / 1e6, secs);

      run(dump_excluding(opts, "post-data", dir + "/post.dump", selection.unselected),
          "pg_dump of the schema (post-data)", should_stop);
      run({"pg_restore", "-d", opts.target, "--section=post-data", "--exit-on-error", "-j",
           std::to_string(std::max(1, opts.jobs)), dir + "/post.dump"},
          "pg_restore of indexes and constraints (post-data) into the target", should_stop);
      pg::Connection source = pg::Connection::open(opts.source, "source");
      copy_sequences(source, target, 0);
      set_phase(target, opts.slot, opts.incremental ? "streaming" : "done", "");
      copy_summary = summary;
      if (!opts.incremental) report(opts, "STOPPED", summary);
      if (!opts.incremental) {
        pg::Connection repl2 = pg::Connection::open(opts.source, "source", true);
        repl2.exec("DROP_REPLICATION_SLOT " + apply::quote_ident(opts.slot));
        spdlog::info("mode full: done, slot dropped");
        return follow::kExitOk;
      }
    } else if (phase == "done") {
      spdlog::info("migration with slot \"{}\" already done", opts.slot);
      return follow::kExitOk;
    }

    follow::FollowOptions f;
    f.source = opts.source;
    f.target = opts.target;
    f.slot = opts.slot;
    // The same tables as the copy, by exact name (resolved with pg_dump's pattern rules). A
    // resume after the copy reads them back from the state table.
    if (!selected_list.empty()) target.exec_params("UPDATE dts.migration SET tables = $2 WHERE slot = $1",
                                                   {opts.slot, selected_list});
    else selected_list = target.query_value("SELECT tables FROM dts.migration WHERE slot = $1", {opts.slot});
    f.tables = selected_list;
    f.status_file = opts.status_file;
    f.until_lsn = opts.until_lsn;
    f.origin = origin;
    f.decoding_work_mem = opts.decoding_work_mem;
    f.bandwidth_mb_per_s = opts.bandwidth_mb_per_s;
    f.resume_auto = opts.resume_auto;
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
