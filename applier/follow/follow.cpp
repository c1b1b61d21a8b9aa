#include "follow/follow.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "apply/apply_engine.hpp"
#include "common/error.hpp"
#include "core/migration.hpp"
#include "core/replicator.hpp"
#include "follow/status.hpp"
#include "pg/connection.hpp"
#include "resync/resync_driver.hpp"

namespace dts::follow {
namespace {

using std::chrono::milliseconds;

bool completed_meanwhile(const FollowOptions& o) {
  try {
    pg::Connection t = pg::Connection::open(o.target, "target");
    return t.query_value("SELECT coalesce((SELECT " + core::phase_is_sql(core::Phase::kCompleted) +
                             " FROM dts.migration WHERE slot = $1), false)",
                         {o.slot}) == "t";
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

int run_follow(const FollowOptions& options, const std::atomic<bool>& stop) {
  FollowOptions opts = options;
  opts.origin = core::MigrationId::for_slot(opts.slot, opts.origin).origin;
  Status status;
  status.slot = opts.slot;
  status.copy_json = opts.copy_json;
  int backoff_s = 1;
  for (;;) {
    try {
      resync::ResyncDriver resync(opts);
      core::Replicator replicator(
          opts, status, [&opts, &resync](Lsn resume, const std::string& encoding, const core::CommitPolicy& policy) {
            auto engine = std::make_unique<apply::ApplyEngine>(opts.target, encoding, opts.origin, resume, policy);
            engine->reconcile_with_copy(opts.slot, opts.source);
            engine->replay_schema_changes(opts.slot, core::TableSelection(opts.tables, opts.exclude));
            resync.attach(*engine);
            return engine;
          });
      // The resync's copy workers use the engine's state: they stop before the engine goes.
      struct StopResync {
        resync::ResyncDriver& driver;
        ~StopResync() { driver.stop(); }
      } stop_resync{resync};
      replicator.on_tick([&resync, &status] { resync.tick(status.applied_lsn); });
      replicator.run(stop);
      if (status.phase != core::phase_name(core::Phase::kCompleted))
        status.phase = core::phase_name(core::Phase::kStopped);
      if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
      return kExitOk;
    } catch (const Error& e) {
      // A restarted applier may meet a slot that complete has just dropped: the migration is
      // over, which is not an error.
      if (opts.watch_stop_lsn && completed_meanwhile(opts)) {
        spdlog::info("the migration was completed (cut over) meanwhile: nothing left to apply");
        status.phase = core::phase_name(core::Phase::kCompleted);
        status.error.clear();
        if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
        return kExitOk;
      }
      status.error = e.what();
      bool retry = e.is_retryable() && opts.resume_auto && !stop.load();
      spdlog::error("{}", e.what());
      if (!retry) {
        status.phase = core::phase_name(core::Phase::kFailed);
        if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
        if (e.is_retryable()) {
          spdlog::error("resume mode is manual: stopping; run the same command again to resume");
          return kExitConnectionLost;
        }
        return e.kind() == ErrorKind::kConfig ? kExitUsage : kExitFailed;
      }
      status.phase = core::phase_name(core::Phase::kReconnecting);
      status.reconnects++;
      if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
      spdlog::warn("reconnecting in {} s", backoff_s);
      for (int i = 0; i < backoff_s * 10 && !stop.load(); ++i) std::this_thread::sleep_for(milliseconds(100));
      backoff_s = std::min(backoff_s * 2, 30);
    }
  }
}

}  // namespace dts::follow
