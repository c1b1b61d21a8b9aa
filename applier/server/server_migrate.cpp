#include "server/server_migrate.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "common/error.hpp"
#include "common/lsn.hpp"
#include "common/private_dir.hpp"
#include "follow/follow.hpp"
#include "migrate/child_process.hpp"
#include "roles/roles.hpp"

extern char** environ;

namespace dts::server {
namespace {

// Least advanced first: a job is where its slowest database is.
const std::vector<std::string> kPhaseOrder = {"PREPARING", "COPYING", "BUILDING_INDEXES", "STARTING", "RECONNECTING",
                                              "CATCHING_UP", "STREAMING", "STOPPED", "DONE", "COMPLETED"};

size_t phase_rank(const std::string& phase) {
  auto it = std::find(kPhaseOrder.begin(), kPhaseOrder.end(), phase);
  return it == kPhaseOrder.end() ? 0 : static_cast<size_t>(it - kPhaseOrder.begin());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string own_executable() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) throw Error(ErrorKind::kInternal, "cannot find this program's path (/proc/self/exe)");
  return std::string(exe, static_cast<size_t>(n));
}

// This process's environment with the database's connections: never on a command line.
std::vector<std::string> child_environment(const SourceDatabase& db) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "DTS_SOURCE=", 11) == 0 || std::strncmp(*e, "DTS_TARGET=", 11) == 0) continue;
    env.emplace_back(*e);
  }
  env.push_back("DTS_SOURCE=" + db.source);
  env.push_back("DTS_TARGET=" + db.target);
  return env;
}

struct Child {
  const SourceDatabase* db = nullptr;
  std::string status_file;
  std::atomic<int> exit_code{-1};  // -1: running
  std::atomic<bool> stopped{false};
};

void run_database(const std::string& exe, const migrate::MigrateOptions& o, Child& child,
                  const migrate::StopCheck& should_stop) {
  std::vector<std::string> argv = {exe, "--log-tag", child.db->name};
  std::vector<std::string> args = child_arguments(o);
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--slot", child.db->slot, "--status-file", child.status_file});
  try {
    int status = migrate::run_child(argv, child_environment(*child.db), "", "", should_stop);
    child.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : follow::kExitFailed;
  } catch (const migrate::Stopped&) {
    child.stopped = true;
    child.exit_code = follow::kExitOk;
  } catch (const std::exception& e) {
    spdlog::error("database {}: {}", child.db->name, e.what());
    child.exit_code = follow::kExitFailed;
  }
}

void write_combined(const migrate::MigrateOptions& o, const std::vector<SourceDatabase>& dbs,
                    const std::vector<Child>& children) {
  if (o.status_file.empty()) return;
  std::vector<std::string> statuses;
  std::vector<int> failed_codes;
  for (const auto& c : children) {
    statuses.push_back(read_file(c.status_file));
    int code = c.exit_code.load();
    failed_codes.push_back(code > 0 && !c.stopped.load() ? code : 0);
  }
  std::string json = combined_status(dbs, statuses, o.slot, failed_codes);
  std::string tmp = o.status_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << json << "\n";
  }
  std::rename(tmp.c_str(), o.status_file.c_str());
}

// Where the databases' migrates write their status files: beside the job's own (`<status
// file>.databases`, made 0700 and reused by the next run, so a job killed with SIGKILL leaves
// nothing behind), or a private temporary directory when the job has no status file.
std::string status_dir(const migrate::MigrateOptions& o, std::optional<PrivateDir>& temporary) {
  if (o.status_file.empty()) {
    temporary.emplace("dts-databases");
    return temporary->path;
  }
  std::string dir = o.status_file + ".databases";
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw Error(ErrorKind::kConfig, "cannot make " + dir + " for the databases' status files: " + std::strerror(errno));
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0)
    throw Error(ErrorKind::kConfig, dir + " (beside --status-file) must be a directory of this user that no other "
                                          "account can enter (chmod 700), not a link; remove it to let migrate make it");
  return dir;
}

void prepare_target(const migrate::MigrateOptions& o, const std::vector<SourceDatabase>& dbs) {
  pg::Connection src = pg::Connection::open(o.source, "source");
  pg::Connection tgt = pg::Connection::open(o.target, "target");
  roles::copy_and_log(src, tgt);
  for (const auto& db : dbs)
    if (!server::create_on_target(src, tgt, db)) spdlog::info("database {} exists on the target: used as it is", db.name);
}

}  // namespace

std::vector<std::string> child_arguments(const migrate::MigrateOptions& o) {
  std::vector<std::string> a = {"migrate", "--mode", o.incremental ? "incremental" : "full",
                                "--jobs", std::to_string(o.jobs),
                                "--split-larger-than", std::to_string(o.split_larger_than),
                                "--resume-mode", o.resume_auto ? "auto" : "manual",
                                "--decoding-work-mem", o.decoding_work_mem};
  if (!o.tables.empty()) a.insert(a.end(), {"--tables", o.tables});
  if (!o.exclude.empty()) a.insert(a.end(), {"--exclude", o.exclude});
  if (o.until_lsn) a.insert(a.end(), {"--until-lsn", format_lsn(*o.until_lsn)});
  if (o.apply_workers > 0) a.insert(a.end(), {"--apply-workers", std::to_string(o.apply_workers)});
  if (o.bandwidth_mb_per_s > 0) a.insert(a.end(), {"--bandwidth-limit", std::to_string(o.bandwidth_mb_per_s)});
  if (!o.streaming) a.push_back("--no-streaming");
  if (o.no_owner) a.push_back("--no-owner");
  if (o.no_privileges) a.push_back("--no-privileges");
  for (const auto& s : o.skip_checks) a.insert(a.end(), {"--skip-check", s});
  return a;
}

std::string combined_status(const std::vector<SourceDatabase>& dbs, const std::vector<std::string>& statuses,
                            const std::string& slot, const std::vector<int>& failed_codes) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  std::string phase = "COMPLETED", error;
  bool failed = false;
  int64_t lag_ms = 0;
  uint64_t lag_bytes = 0, transactions = 0, changes = 0;
  Lsn applied = 0;
  bool applied_known = true;
  w.StartObject();
  w.Key("databases");
  w.StartArray();
  for (size_t i = 0; i < dbs.size(); ++i) {
    rapidjson::Document d;
    d.Parse(i < statuses.size() ? statuses[i].c_str() : "");
    bool ok = !d.HasParseError() && d.IsObject();
    // No status yet: its migrate is preparing (STARTING is follow's, once the copy is done).
    std::string p = ok && d.HasMember("phase") && d["phase"].IsString() ? d["phase"].GetString() : "PREPARING";
    int code = i < failed_codes.size() ? failed_codes[i] : 0;
    if (code != 0) {
      // Killed, or ended by an error before it could say so in its status file.
      p = "FAILED";
      if (error.empty()) error = dbs[i].name + ": its migrate exited with code " + std::to_string(code);
    }
    if (p == "FAILED") failed = true;
    if (!failed && phase_rank(p) < phase_rank(phase)) phase = p;
    if (ok && d.HasMember("error") && d["error"].IsString() && error.empty() && d["error"].GetStringLength() > 0)
      error = dbs[i].name + ": " + d["error"].GetString();
    auto num = [&](const char* key) -> uint64_t { return ok && d.HasMember(key) && d[key].IsUint64() ? d[key].GetUint64() : 0; };
    lag_ms = std::max<int64_t>(lag_ms, static_cast<int64_t>(num("lag_ms")));
    lag_bytes = std::max(lag_bytes, num("lag_bytes"));  // the same WAL: the furthest behind
    transactions += num("transactions_applied");
    changes += num("changes_applied");
    std::optional<Lsn> lsn = ok && d.HasMember("applied_lsn") && d["applied_lsn"].IsString()
                                 ? parse_lsn(d["applied_lsn"].GetString()) : std::nullopt;
    if (lsn && applied_known) applied = i == 0 ? *lsn : std::min(applied, *lsn);
    if (!lsn) applied_known = false;
    w.StartObject();
    w.Key("database");
    w.String(dbs[i].name.c_str());
    w.Key("slot");
    w.String(dbs[i].slot.c_str());
    w.Key("status");
    if (ok) d.Accept(w); else w.Null();
    w.EndObject();
  }
  w.EndArray();
  w.Key("phase");
  w.String(failed ? "FAILED" : phase.c_str());
  w.Key("slot");
  w.String(slot.c_str());
  w.Key("applied_lsn");  // the WAL is the server's: the least any database's slot has applied
  w.String(applied_known ? format_lsn(applied).c_str() : "0/0");
  w.Key("lag_ms");
  w.Int64(lag_ms);
  w.Key("lag_bytes");
  w.Uint64(lag_bytes);
  w.Key("transactions_applied");
  w.Uint64(transactions);
  w.Key("changes_applied");
  w.Uint64(changes);
  w.Key("error");
  w.String(error.c_str());
  w.EndObject();
  return buf.GetString();
}

int run_server_migrate(const migrate::MigrateOptions& o, const DatabaseScope& scope, const std::atomic<bool>& stop) {
  std::vector<SourceDatabase> dbs = resolve(scope, o.source, o.target, o.slot);
  std::string names;
  for (const auto& db : dbs) names += (names.empty() ? "" : ", ") + db.name + " (slot " + db.slot + ")";
  spdlog::info("migrating {} databases as one job: {}", dbs.size(), names);
  prepare_target(o, dbs);
  std::optional<PrivateDir> temporary;
  std::string dir = status_dir(o, temporary);
  std::string exe = own_executable();
  std::vector<Child> children(dbs.size());
  std::atomic<bool> failed{false};
  migrate::StopCheck should_stop = [&] { return stop.load() || failed.load(); };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < dbs.size(); ++i) {
    children[i].db = &dbs[i];
    children[i].status_file = dir + "/" + std::to_string(i) + ".json";
    std::remove(children[i].status_file.c_str());  // an earlier run's: not this run's progress
    threads.emplace_back([&, i] {
      run_database(exe, o, children[i], should_stop);
      if (children[i].exit_code != follow::kExitOk && !children[i].stopped) failed = true;
    });
  }
  auto running = [&] {
    return std::any_of(children.begin(), children.end(), [](const Child& c) { return c.exit_code < 0; });
  };
  while (running()) {
    write_combined(o, dbs, children);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  for (auto& t : threads) t.join();
  write_combined(o, dbs, children);
  int code = follow::kExitOk;
  for (const auto& c : children) {
    if (c.exit_code == follow::kExitOk) continue;
    spdlog::error("database {}: its migration ended with exit code {}", c.db->name, c.exit_code.load());
    code = c.exit_code;
  }
  if (code == follow::kExitOk) spdlog::info("{} databases: every migration ended", dbs.size());
  return code;
}

}  // namespace dts::server
