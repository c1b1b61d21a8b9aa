#include "follow/follow.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "apply/apply_engine.hpp"
#include "common/error.hpp"
#include "decode/decoder.hpp"
#include "follow/status.hpp"
#include "follow/throttle.hpp"
#include "pg/connection.hpp"
#include "stream/replication_stream.hpp"

namespace dts::follow {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kFeedbackInterval{1000};
constexpr milliseconds kStatusInterval{1000};
// With a group open, wait this long for more data before committing it.
constexpr milliseconds kGroupLinger{2};
constexpr milliseconds kIdleWait{100};
// A group of small transactions is committed at least this often, however busy the stream.
constexpr milliseconds kGroupMaxAge{100};
constexpr milliseconds kProbeInterval{200};
constexpr uint64_t kCatchingUpBytes = 16 * 1024 * 1024;

// Throttles the bytes read from the stream to a rate: sleeping stops reading, and the
// walsender's buffers push back on the source.
class Throttle {
 public:
  explicit Throttle(double mb_per_s) : bytes_per_s_(mb_per_s * 1024 * 1024), start_(Clock::now()) {}
  void consumed(size_t bytes) {
    if (bytes_per_s_ <= 0) return;
    total_ += static_cast<double>(bytes);
    double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    double wait = throttle_wait(total_, bytes_per_s_, elapsed);
    if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
  }

 private:
  double bytes_per_s_;
  Clock::time_point start_;
  double total_ = 0;
};

// The origin's progress on the target, read on a connection of its own (outside the pipeline).
struct ProgressReader {
  pg::Connection control;
  std::string origin;

  Lsn origin_progress(bool flushed) const {
    std::string v = control.query_value("SELECT pg_replication_origin_progress($1, $2)",
                                        {origin, flushed ? "true" : "false"});
    return v.empty() ? 0 : parse_lsn(v).value_or(0);
  }
};

stream::PluginOptions plugin_options(const FollowOptions& o) {
  stream::PluginOptions p{{"format", "binary"}, {"proto_version", "1"}};
  if (!o.tables.empty()) p.emplace_back("include_tables", o.tables);
  if (!o.exclude.empty()) p.emplace_back("exclude_tables", o.exclude);
  if (o.streaming) p.emplace_back("streaming", "on");
  // Changes this target applied under its origin are not echoed when the target is itself
  // decoded; on the source, changes carrying an origin (a chain) are still migrated.
  return p;
}

// Runs until stopped, until_lsn is reached, or an error is thrown. Returns normally only when
// done.
void follow_once(const FollowOptions& opts, Status& status, const std::atomic<bool>& stop) {
  ProgressReader s{pg::Connection::open(opts.target, "target"), opts.origin};
  stream::ReplicationStream src(opts.source);
  if (opts.create_slot && src.create_slot_if_missing(opts.slot))
    spdlog::info("created replication slot \"{}\" with dts_decoding", opts.slot);
  // Before touching the target: a slot dropped by cancel must not get its origin back.
  if (!src.slot_exists(opts.slot))
    throw Error(ErrorKind::kSource, "replication slot \"" + opts.slot +
                                        "\" does not exist on the source; create it with --create-slot");

  s.control.exec_params("SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL",
                        {s.origin});
  Lsn resume = s.origin_progress(false);
  apply::ApplyEngine engine(opts.target, src.server_encoding(), s.origin, resume);
  if (!opts.decoding_work_mem.empty()) src.set_decoding_work_mem(opts.decoding_work_mem);
  src.start(opts.slot, resume, plugin_options(opts));
  spdlog::info("streaming from slot \"{}\" at {} into origin \"{}\"", opts.slot, format_lsn(resume), s.origin);
  status.phase = "STREAMING";

  decode::Decoder decoder;
  std::optional<Lsn> until = opts.until_lsn;
  bool cut_over = false;  // the stop comes from complete (marker or dts.migration)
  auto last_stop_check = Clock::time_point{};
  Throttle throttle(opts.bandwidth_mb_per_s);
  Lsn received = resume;
  Lsn flushed = resume;
  Lsn keepalive_end = 0;
  Lsn caught_up_to = resume;  // everything the server sent up to here is applied or held nothing
  auto last_feedback = Clock::now();
  auto last_group_commit = Clock::now();
  auto last_probe = Clock::time_point{};
  auto last_status = Clock::time_point{};
  uint64_t changes_at_last_status = status.changes_applied;
  auto rate_since = Clock::now();
  bool tty = isatty(STDERR_FILENO) != 0;

  for (;;) {
    bool reply = false;
    stream::StreamMessage msg;
    bool can_commit = engine.group_open() && !engine.in_transaction();
    auto ev = src.next(can_commit ? kGroupLinger : kIdleWait, msg);
    if (ev == stream::ReplicationStream::Event::kData) {
      decoder.decode(msg.data, msg.len, msg.wal_start, engine);
      received = std::max(received, msg.wal_start);
      status.bytes_received += msg.len;
      throttle.consumed(msg.len);
    } else if (ev == stream::ReplicationStream::Event::kKeepalive) {
      reply = msg.reply_requested;
      keepalive_end = msg.wal_end;
    } else {
      // Quiet: commit what is grouped so latency stays low.
      engine.commit_group();
      last_group_commit = Clock::now();
      // Waiting for an end position: ask the server where it is (it answers with a keepalive).
      if (until && Clock::now() - last_probe >= kProbeInterval) {
        src.send_status(received, flushed, flushed, /*reply_requested=*/true);
        last_probe = Clock::now();
      }
    }

    engine.poll();
    auto now = Clock::now();
    if (engine.group_open() && !engine.in_transaction() && now - last_group_commit >= kGroupMaxAge) {
      engine.commit_group();
      last_group_commit = now;
    }
    bool stopping = stop.load();
    if (reply || stopping || now - last_feedback >= kFeedbackInterval) {
      if (stopping) {
        engine.commit_group();
        engine.sync();
      }
      flushed = std::max(flushed, s.origin_progress(true));
      Lsn confirm = flushed;
      // Nothing in flight and everything applied is durable: what the server has sent up to
      // its last keepalive holds nothing more for us, so the slot may move past it.
      bool idle_now = engine.idle() && ev != stream::ReplicationStream::Event::kData;
      if (idle_now && flushed >= engine.stats().applied_lsn && keepalive_end > confirm && received <= keepalive_end) {
        confirm = keepalive_end;
        caught_up_to = std::max(caught_up_to, keepalive_end);
      }
      // Idle, ask where the server is: its keepalive answer lets us confirm (and report) WAL
      // that held nothing for us, such as aborted or filtered transactions.
      src.send_status(std::max(received, confirm), confirm, confirm, idle_now);
      last_feedback = now;
    }

    if (now - last_status >= kStatusInterval || stopping) {
      const auto& st = engine.stats();
      status.received_lsn = received;
      status.applied_lsn = std::max(st.applied_lsn, caught_up_to);
      status.flushed_lsn = flushed;
      status.server_wal_end = src.server_wal_end();
      status.transactions_applied = st.transactions;
      status.changes_applied = st.changes;
      status.spooled_transactions = engine.spool().files_created;
      status.spool_peak_bytes = engine.spool().peak_bytes;
      status.lag_bytes = status.server_wal_end > status.applied_lsn ? status.server_wal_end - status.applied_lsn : 0;
      // A backlog of more than a block's worth of WAL: still catching up.
      status.phase = status.lag_bytes > kCatchingUpBytes ? "CATCHING_UP" : "STREAMING";
      bool caught_up = engine.idle() && status.applied_lsn >= received;
      status.lag_ms = caught_up || st.applied_commit_time == 0
                          ? 0
                          : std::max<int64_t>(0, (now_postgres_micros() - st.applied_commit_time) / 1000);
      double secs = std::chrono::duration<double>(now - rate_since).count();
      if (secs > 0) status.changes_per_second = static_cast<double>(st.changes - changes_at_last_status) / secs;
      changes_at_last_status = st.changes;
      rate_since = now;
      if (!opts.status_file.empty() && !write_status_file(opts.status_file, status))
        spdlog::warn("could not write the status file {}", opts.status_file);
      if (tty) std::fprintf(stderr, "\r%s\033[K", status_line(status).c_str());
      last_status = now;
    }

    if (stopping) {
      if (tty) std::fputc('\n', stderr);
      spdlog::info("stopped at {} (flushed {})", format_lsn(engine.stats().applied_lsn), format_lsn(flushed));
      return;
    }
    // complete's stop marker arrived: end once its transaction is applied.
    if (engine.stop_lsn() != 0 && !cut_over) {
      until = engine.stop_lsn();
      cut_over = true;
      spdlog::info("stop marker at {}: the source is cut over; stopping once it is applied", format_lsn(*until));
    }
    // Or complete recorded it while this applier was not running: a restart resumes past the
    // marker and would never see it.
    if (opts.watch_stop_lsn && !cut_over && now - last_stop_check >= kStatusInterval) {
      last_stop_check = now;
      std::string v = s.control.query_value("SELECT coalesce(stop_lsn::text, '') FROM dts.migration WHERE slot = $1",
                                            {opts.slot});
      if (auto lsn = parse_lsn(v)) {
        until = *lsn;
        cut_over = true;
        spdlog::info("complete recorded its stop marker at {}: stopping once it is applied", format_lsn(*lsn));
      }
    }
    // Reached: applied up to it, or idle with the server having sent everything up to it.
    bool idle = engine.idle() && received <= keepalive_end;
    if (until && !engine.in_transaction() &&
        (std::max(engine.stats().applied_lsn, resume) >= *until || (idle && keepalive_end >= *until))) {
      engine.commit_group();
      engine.sync();
      // Wait for durability, so that what we report and confirm is what a restart resumes from.
      auto deadline = Clock::now() + std::chrono::seconds(30);
      while ((flushed = s.origin_progress(true)) < engine.stats().applied_lsn && Clock::now() < deadline)
        std::this_thread::sleep_for(milliseconds(20));
      src.send_status(flushed, flushed, flushed);
      status.flushed_lsn = flushed;
      status.applied_lsn = engine.stats().applied_lsn;
      status.transactions_applied = engine.stats().transactions;
      status.changes_applied = engine.stats().changes;
      status.spooled_transactions = engine.spool().files_created;
      status.spool_peak_bytes = engine.spool().peak_bytes;
      status.phase = cut_over ? "COMPLETED" : "STOPPED";
      if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
      spdlog::info("reached {} (applied {})", format_lsn(*until), format_lsn(engine.stats().applied_lsn));
      return;
    }
  }
}

bool completed_meanwhile(const FollowOptions& o) {
  try {
    pg::Connection t = pg::Connection::open(o.target, "target");
    return t.query_value("SELECT coalesce((SELECT phase = 'completed' FROM dts.migration WHERE slot = $1), false)",
                         {o.slot}) == "t";
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

int run_follow(const FollowOptions& options, const std::atomic<bool>& stop) {
  FollowOptions opts = options;
  if (opts.origin.empty()) opts.origin = "dts_" + opts.slot;
  Status status;
  status.slot = opts.slot;
  status.copy_json = opts.copy_json;
  int backoff_s = 1;
  for (;;) {
    try {
      follow_once(opts, status, stop);
      if (status.phase != "COMPLETED") status.phase = "STOPPED";
      if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
      return kExitOk;
    } catch (const Error& e) {
      // A restarted applier may meet a slot that complete has just dropped: the migration is
      // over, which is not an error.
      if (opts.watch_stop_lsn && completed_meanwhile(opts)) {
        spdlog::info("the migration was completed (cut over) meanwhile: nothing left to apply");
        status.phase = "COMPLETED";
        status.error.clear();
        if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
        return kExitOk;
      }
      status.error = e.what();
      bool retry = e.is_retryable() && opts.resume_auto && !stop.load();
      spdlog::error("{}", e.what());
      if (!retry) {
        status.phase = "FAILED";
        if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
        if (e.is_retryable()) {
          spdlog::error("resume mode is manual: stopping; run the same command again to resume");
          return kExitConnectionLost;
        }
        return e.kind() == ErrorKind::kConfig ? kExitUsage : kExitFailed;
      }
      status.phase = "RECONNECTING";
      status.reconnects++;
      if (!opts.status_file.empty()) write_status_file(opts.status_file, status);
      spdlog::warn("reconnecting in {} s", backoff_s);
      for (int i = 0; i < backoff_s * 10 && !stop.load(); ++i) std::this_thread::sleep_for(milliseconds(100));
      backoff_s = std::min(backoff_s * 2, 30);
    }
  }
}

}  // namespace dts::follow
