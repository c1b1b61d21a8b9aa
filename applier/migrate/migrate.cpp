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
#include "migrate/copier.hpp"
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
// `out_path` if given.
// A conninfo given with -d loses its password to the child's environment: command lines are
// public (ps, /proc/<pid>/cmdline), environments are not.
void run(std::vector<std::string> argv, const std::string& what, const std::string& out_path = "") {
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
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) throw Error(ErrorKind::kInternal, "could not start " + argv[0]);
  if (pid == 0) {
    if (FILE* f = std::freopen(err_path.c_str(), "w", stderr); f == nullptr) _exit(127);
    if (!out_path.empty() && std::freopen(out_path.c_str(), "w", stdout) == nullptr) _exit(127);
    execvpe(args[0], args.data(), envp.data());
    std::fprintf(stderr, "could not run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      status = 255 << 8;  // lost the child: not a success
      break;
    }
  }
  std::ifstream in(err_path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::remove(err_path.c_str());
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
                            const pg::Connection& snap) {
  std::string dump = dir + "/selection.dump";
  auto args = dump_args(o, "pre-data", dump);
  args.push_back("--snapshot=" + snapshot);
  run(args, "pg_dump resolving --tables/--exclude");
  std::string toc = dump + ".toc";
  run({"pg_restore", "-l", dump}, "pg_restore -l", toc);
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

std::string copy_json(const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks, double seconds,
                      const std::string& schema = "") {
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
  if (!schema.empty()) {
    w.Key("schema");  // how ownership and grants were restored
    w.String(schema.c_str());
  }
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

}  // namespace

void run_tool(std::vector<std::string> argv, const std::string& what, const std::string& out_path) {
  run(std::move(argv), what, out_path);
}

std::string restore_list(const std::string& dump) {
  std::string raw = dump + ".all", list = dump + ".list";
  run({"pg_restore", "-l", dump}, "pg_restore -l", raw);
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
  try {
    pg::Connection target = pg::Connection::open(opts.target, "target");
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

      pg::Result slot = repl.exec("CREATE_REPLICATION_SLOT " + apply::quote_ident(opts.slot) +
                                  " LOGICAL dts_decoding EXPORT_SNAPSHOT");
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
        selection = resolve_selection(opts, snapshot, dir, sel_snap);
        if (selection.selected.empty())
          throw Error(ErrorKind::kConfig, "--tables/--exclude select no table of the source");
        std::string list;
        for (const auto& t : selection.selected) list += (list.empty() ? "" : ",") + t;
        selected_list = list;
      }
      auto pre = dump_excluding(opts, "pre-data", dir + "/pre.dump", selection.unselected);
      pre.push_back("--snapshot=" + snapshot);
      run(pre, "pg_dump of the schema (pre-data)");
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
      run(restore, "pg_restore of the schema (pre-data) into the target");

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
      });
      progress_bar(tables, chunks, reported, elapsed());
      double secs = elapsed();
      if (isatty(STDERR_FILENO) != 0) std::fputc('\n', stderr);
      std::string summary = copy_json(tables, chunks, secs, ownership_summary(opts, target.query_value("SELECT current_user")));
      report(opts, "BUILDING_INDEXES", summary);
      repl.close();  // the snapshot is no longer needed
      spdlog::info("copied {} rows of {} tables in {} chunks ({:.1f} MB) in {:.1f} s", copied.rows, tables.size(),
                   chunks.size(), copied.bytes / 1e6, secs);

      run(dump_excluding(opts, "post-data", dir + "/post.dump", selection.unselected),
          "pg_dump of the schema (post-data)");
      std::vector<std::string> post = {"pg_restore", "-d", opts.target, "--section=post-data", "--exit-on-error", "-j",
                                       std::to_string(std::max(1, opts.jobs))};
      for (auto& a : ownership_args(opts)) post.push_back(a);
      post.insert(post.end(), {"-L", restore_list(dir + "/post.dump"), dir + "/post.dump"});
      run(post, "pg_restore of indexes and constraints (post-data) into the target");
      spdlog::info("schema restored: {}", ownership_summary(opts, target.query_value("SELECT current_user")));
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
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    if (!opts.status_file.empty()) {
      follow::Status st;
      st.phase = "FAILED";
      st.slot = opts.slot;
      st.error = e.what();
      follow::write_status_file(opts.status_file, st);
    }
    return e.kind() == ErrorKind::kConfig ? follow::kExitUsage : follow::kExitFailed;
  }
}

}  // namespace dts::migrate
