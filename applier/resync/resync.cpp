#include "resync/resync.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "common/error.hpp"
#include "common/parse.hpp"
#include "core/migration.hpp"
#include "core/table_selection.hpp"
#include "follow/follow.hpp"
#include "resync/resync_driver.hpp"

namespace dts::resync {
namespace {

using Clock = std::chrono::steady_clock;

bool finished(const std::string& state) { return state == "DONE" || state == "FAILED"; }

int report(int64_t id, const ResyncState& st) {
  if (st.state == "DONE") {
    std::printf("resync %lld done: %lld chunks, %lld rows copied again\n", static_cast<long long>(id),
                static_cast<long long>(st.chunks), static_cast<long long>(st.rows));
    return follow::kExitOk;
  }
  spdlog::error("resync {} {}: {}", id, st.state == "FAILED" ? "failed" : "did not finish", st.error);
  return follow::kExitFailed;
}

}  // namespace

int64_t request_resync(const pg::Connection& target, const std::string& slot, const std::string& tables,
                       const std::string& exclude, uint64_t chunk_bytes) {
  core::TableSelection check(tables, exclude);  // malformed patterns are refused here
  if (tables.empty()) throw Error(ErrorKind::kConfig, "--tables is required: name the tables to copy again");
  if (target.query_value("SELECT to_regclass('dts.migration') IS NOT NULL") != "t" ||
      target.query_value("SELECT count(*) FROM dts.migration WHERE slot = $1", {slot}) == "0")
    throw Error(ErrorKind::kConfig, "no migration with slot \"" + slot + "\" on the target: resync copies tables of "
                                    "a running migration again (see --slot)");
  // While the first copy runs, its migrate is not streaming yet and must stay the only one to.
  std::string phase = target.query_value("SELECT phase FROM dts.migration WHERE slot = $1", {slot});
  auto at = core::parse_phase(phase);
  if (at != core::Phase::kStreaming && at != core::Phase::kCatchingUp)
    throw Error(ErrorKind::kConfig, "the migration with slot \"" + slot + "\" is " + phase +
                                    ": resync copies tables of a migration that streams; wait for STREAMING");
  create_request_table(target);
  return parse_int64(target.query_value("INSERT INTO dts.resync (slot, tables, exclude_tables, chunk_bytes) "
                                        "VALUES ($1, $2, $3, $4) RETURNING id",
                                        {slot, tables, exclude, std::to_string(std::max<uint64_t>(chunk_bytes, 8192))}),
                     "the resync's id", ErrorKind::kInternal);
}

ResyncState resync_state(const pg::Connection& target, int64_t id) {
  pg::Result r = target.exec_params("SELECT state, coalesce(error, ''), coalesce(chunks, 0), coalesce(rows, 0) "
                                    "FROM dts.resync WHERE id = $1", {std::to_string(id)});
  ResyncState st;
  if (PQntuples(r.get()) == 0) return st;
  st.state = PQgetvalue(r.get(), 0, 0);
  st.error = PQgetvalue(r.get(), 0, 1);
  st.chunks = std::strtoll(PQgetvalue(r.get(), 0, 2), nullptr, 10);
  st.rows = std::strtoll(PQgetvalue(r.get(), 0, 3), nullptr, 10);
  return st;
}

int run_resync(const ResyncOptions& o, const std::atomic<bool>& stop) {
  try {
    pg::Connection target = pg::Connection::open(o.target, "target");
    int64_t id = request_resync(target, o.slot, o.tables, o.exclude, o.chunk_bytes);
    pg::Connection source = pg::Connection::open(o.source, "source");
    bool streaming = source.query_value("SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = $1),"
                                        " false)", {o.slot}) == "t";
    auto deadline = Clock::now() + std::chrono::seconds(o.timeout_s);
    if (streaming) {
      spdlog::info("resync {} requested; the applier streaming from slot \"{}\" copies the tables again", id, o.slot);
      ResyncState st;
      while (!finished((st = resync_state(target, id)).state) && !stop.load() && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      return report(id, st);
    }
    // Nobody streams from the slot: follow here, until the copy is done.
    spdlog::info("resync {} requested; no applier streams from slot \"{}\": following it here until the copy is done",
                 id, o.slot);
    follow::FollowOptions f;
    f.source = o.source;
    f.target = o.target;
    f.slot = o.slot;
    core::StoredSelection stored = core::stored_selection(target, o.slot).value_or(core::StoredSelection{});
    f.tables = stored.tables;
    f.exclude = stored.exclude;
    std::atomic<bool> done{false};
    std::thread watch([&] {
      pg::Connection t = pg::Connection::open(o.target, "target");
      while (!stop.load() && Clock::now() < deadline && !finished(resync_state(t, id).state))
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      done = true;
    });
    int rc = follow::kExitOk;
    try {
      rc = follow::run_follow(f, done);
    } catch (...) {
      done = true;
      watch.join();
      throw;
    }
    done = true;
    watch.join();
    ResyncState st = resync_state(target, id);
    if (rc != follow::kExitOk && !finished(st.state)) return rc;
    return report(id, st);
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return e.kind() == ErrorKind::kConfig ? follow::kExitUsage : follow::kExitFailed;
  }
}

}  // namespace dts::resync
