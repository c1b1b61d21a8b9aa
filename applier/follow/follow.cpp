#include "follow/follow.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "apply/apply_engine.hpp"
#include "common/error.hpp"
#include "common/parse.hpp"
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

// The target's own hint at how many cores it may give one query (what tuning guides set to
// about half its cores), from 1 to 4, and no more than a quarter of its free connections.
int apply_workers_for(const FollowOptions& o) {
  if (o.apply_workers > 0) return o.apply_workers;
  pg::Connection t = pg::Connection::open(o.target, "target");
  int64_t hint = parse_int64(t.query_value("SELECT current_setting('max_parallel_workers_per_gather')"),
                             "the target's max_parallel_workers_per_gather");
  int64_t free = parse_int64(t.query_value(
      "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int"
      " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"),
      "the target's free connections");
  return static_cast<int>(std::clamp<int64_t>(std::min(hint, free / 4), 1, 4));
}

}  // namespace

int run_follow(const FollowOptions& options, const std::atomic<bool>& stop) {
  FollowOptions opts = options;
  opts.origin = core::MigrationId::for_slot(opts.slot, opts.origin).origin;
  Status status;
  status.slot = opts.slot;
  status.copy_json = opts.copy_json;
  int backoff_s = 1;
  apply::ParallelState parallel;
  Lsn serial_until = 0;  // after a refusal with several workers: what was received goes on one
  for (;;) {
    try {
      int workers = apply_workers_for(opts);
      parallel.in_parallel = false;
      resync::ResyncDriver resync(opts);
      core::Replicator replicator(
          opts, status,
          [&opts, &resync, workers, serial_until, &parallel](Lsn resume, const std::string& encoding,
                                                             const core::CommitPolicy& policy) {
            auto engine = std::make_unique<apply::ApplyEngine>(opts.target, encoding, opts.origin, resume, policy,
                                                               workers, serial_until, &parallel);
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
      if (e.kind() == ErrorKind::kApply && parallel.in_parallel && parallel.seen_lsn >= serial_until && !stop.load()) {
        // Groups applied at once may have met in a way the engine could not foresee (a lock
        // between them, an order a constraint noticed): nothing past the refused group was
        // committed, so what was received is applied again on one session, which either passes
        // or reports the refusal for what it is.
        serial_until = parallel.seen_lsn + 1;
        status.parallel_retries++;
        spdlog::warn("{}; applying again on one session up to {} to tell a conflict between apply workers from a "
                     "real refusal", e.what(), format_lsn(serial_until));
        continue;
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
