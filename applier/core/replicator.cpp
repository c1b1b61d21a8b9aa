#include "core/replicator.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "common/error.hpp"
#include "common/text.hpp"
#include "core/migration.hpp"
#include "follow/throttle.hpp"

namespace dts::core {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kFeedbackInterval{1000};
constexpr milliseconds kStatusInterval{1000};
constexpr milliseconds kIdleWait{100};
constexpr milliseconds kProbeInterval{200};
constexpr uint64_t kCatchingUpBytes = 16 * 1024 * 1024;
// Packing: how long follow waits, idle, before it asks the source for a heartbeat.
constexpr milliseconds kHeartbeatInterval{300};

// "dts_decoding 0.3.0 (protocol 1)": pack_transactions came with 0.3.0.
bool plugin_packs(const std::string& version) {
  int major = 0, minor = 0;
  if (std::sscanf(version.c_str(), "dts_decoding %d.%d", &major, &minor) != 2) return false;
  return major > 0 || minor >= 3;
}

stream::PluginOptions plugin_options(const follow::FollowOptions& o, bool pack) {
  stream::PluginOptions p{{"format", "binary"}, {"proto_version", "1"}};
  if (pack) p.emplace_back("pack_transactions", "on");
  if (!o.tables.empty()) p.emplace_back("include_tables", o.tables);
  if (!o.exclude.empty()) p.emplace_back("exclude_tables", o.exclude);
  if (o.streaming) p.emplace_back("streaming", "on");
  // Changes this target applied under its origin are not echoed when the target is itself
  // decoded; on the source, changes carrying an origin (a chain) are still migrated.
  return p;
}

}  // namespace

Replicator::Replicator(const follow::FollowOptions& opts, follow::Status& status, ApplierFactory make_applier)
    : opts_(opts), status_(status), make_applier_(std::move(make_applier)), until_(opts.until_lsn) {
  tty_ = isatty(STDERR_FILENO) != 0;
}

Lsn Replicator::origin_progress(bool flushed) const {
  std::string v = control_.query_value("SELECT pg_replication_origin_progress($1, $2)",
                                       {opts_.origin, flushed ? "true" : "false"});
  return v.empty() ? 0 : parse_lsn(v).value_or(0);
}

// Transactions travel several to a message only if this role can emit heartbeats: with them
// held at the source, a keepalive's position may be past a transaction not sent yet, so an
// idle slot moves only to a heartbeat received (see send_feedback).
bool Replicator::can_pack() {
  if (opts_.no_packing) return false;
  try {
    heartbeat_source_ = pg::Connection::open(opts_.source, "source");
    // CASE: has_function_privilege() raises an error for a function that does not exist. A
    // standby cannot write a heartbeat.
    bool can = heartbeat_source_.query_value(
                   "SELECT CASE WHEN to_regprocedure('dts_decoding.heartbeat()') IS NULL THEN false"
                   " ELSE has_function_privilege('dts_decoding.heartbeat()', 'EXECUTE')"
                   " AND (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user)"
                   " AND NOT pg_is_in_recovery() END") == "t";
    // The library the walsender loads must know the option (0.3.0 and later).
    if (can && !plugin_packs(heartbeat_source_.query_value("SELECT dts_decoding.version()"))) {
      spdlog::info("transactions are not packed: the source's dts_decoding library is older than 0.3.0");
      can = false;
    }
    if (!can) heartbeat_source_.close();
    return can;
  } catch (const Error& e) {
    spdlog::warn("transactions are not packed: {}", first_line(e.what()));
    heartbeat_source_.close();
    return false;
  }
}

void Replicator::connect() {
  control_ = pg::Connection::open(opts_.target, "target");
  source_ = std::make_unique<stream::ReplicationStream>(opts_.source);
  if (opts_.create_slot && source_->create_slot_if_missing(opts_.slot))
    spdlog::info("created replication slot \"{}\" with dts_decoding", opts_.slot);
  // Before touching the target: a slot dropped by cancel must not get its origin back.
  if (!source_->slot_exists(opts_.slot))
    throw Error(ErrorKind::kSource, "replication slot \"" + opts_.slot +
                                        "\" does not exist on the source; create it with --create-slot");
  control_.exec_params("SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL",
                       {opts_.origin});
  resume_ = origin_progress(false);
  applier_ = make_applier_(resume_, source_->server_encoding(), policy_);
  if (!opts_.decoding_work_mem.empty()) source_->set_decoding_work_mem(opts_.decoding_work_mem);
  pack_ = can_pack();
  source_->start(opts_.slot, resume_, plugin_options(opts_, pack_));
  spdlog::info("streaming from slot \"{}\" at {} into origin \"{}\"", opts_.slot, format_lsn(resume_),
               opts_.origin);
  status_.phase = phase_name(Phase::kStreaming);
  received_ = flushed_ = caught_up_to_ = resume_;
  changes_at_last_status_ = status_.apply.changes;
}

// One message, or a quiet moment: a group is committed when the stream goes quiet (latency),
// and at least every max_age_ms however busy it is.
void Replicator::receive() {
  stream::StreamMessage msg;
  bool can_commit = applier_->group_open() && !applier_->in_transaction();
  auto ev = source_->next(can_commit ? milliseconds(policy_.linger_ms) : kIdleWait, msg);
  reply_ = false;
  got_data_ = ev == stream::ReplicationStream::Event::kData;
  if (got_data_) {
    last_data_ = Clock::now();
    status_.messages_received++;
    decoder_.decode(msg.data, msg.len, msg.wal_start, *applier_);
    received_ = std::max(received_, msg.wal_start);
    status_.bytes_received += msg.len;
    throttle_bytes_ += static_cast<double>(msg.len);
    double elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
    double wait = follow::throttle_wait(throttle_bytes_, opts_.bandwidth_mb_per_s * 1024 * 1024, elapsed);
    if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
  } else if (ev == stream::ReplicationStream::Event::kKeepalive) {
    reply_ = msg.reply_requested;
    keepalive_end_ = msg.wal_end;
  } else {
    applier_->commit_group();
    last_group_commit_ = Clock::now();
    // Waiting for an end position: ask the server where it is (it answers with a keepalive).
    if (until_ && Clock::now() - last_probe_ >= kProbeInterval) {
      source_->send_status(received_, flushed_, flushed_, /*reply_requested=*/true);
      last_probe_ = Clock::now();
    }
  }
  applier_->poll();
  auto now = Clock::now();
  if (applier_->group_open() && !applier_->in_transaction() &&
      now - last_group_commit_ >= milliseconds(policy_.max_age_ms)) {
    applier_->commit_group();
    last_group_commit_ = now;
  }
}

// The slot is confirmed up to what the target's origin holds durably; when nothing is in
// flight, up to the server's last keepalive, which held nothing more for us.
void Replicator::send_feedback(bool stopping) {
  auto now = Clock::now();
  // Not only when idle: a streamed transaction being applied keeps the applier busy while
  // small ones held at the source would wait.
  if (pack_ && !got_data_ && now - last_data_ >= kHeartbeatInterval) ask_heartbeat(now);
  if (!reply_ && !stopping && now - last_feedback_ < kFeedbackInterval) return;
  if (stopping) {
    applier_->commit_group();
    applier_->sync();
  }
  flushed_ = std::max(flushed_, origin_progress(true));
  Lsn confirm = flushed_;
  bool idle_now = applier_->idle() && !got_data_;
  Lsn sent_all = sent_everything_to();
  if (idle_now && flushed_ >= applier_->stats().applied_lsn && sent_all > confirm) {
    confirm = sent_all;
    caught_up_to_ = std::max(caught_up_to_, sent_all);
  }
  // Idle, ask where the server is: its keepalive answer lets us confirm (and report) WAL
  // that held nothing for us, such as aborted or filtered transactions.
  source_->send_status(std::max(received_, confirm), confirm, confirm, idle_now);
  last_feedback_ = now;
}

// Where the source has sent everything up to: with packing, the last heartbeat received
// (the plugin sends what it holds before it); otherwise the last keepalive, if nothing came
// after it.
Lsn Replicator::sent_everything_to() const {
  if (pack_) return applier_->heartbeat_lsn();
  return received_ <= keepalive_end_ ? keepalive_end_ : 0;
}

// With packing, idle: if the server is past what we know was sent, a heartbeat through the
// slot brings whatever the plugin holds, and a position that can be confirmed; if not, a
// keepalive is asked for, to learn where the server is.
void Replicator::ask_heartbeat(Clock::time_point now) {
  if (now - last_heartbeat_ < kHeartbeatInterval) return;
  last_heartbeat_ = now;
  if (keepalive_end_ <= std::max(flushed_, applier_->heartbeat_lsn())) {
    source_->send_status(std::max(received_, flushed_), flushed_, flushed_, /*reply_requested=*/true);
    return;
  }
  try {
    if (!heartbeat_source_.is_ok()) heartbeat_source_ = pg::Connection::open(opts_.source, "source");
    heartbeat_source_.query_value("SELECT dts_decoding.heartbeat()");
    status_.heartbeats++;
  } catch (const Error& e) {
    // The replication connection reports a source that is gone; this one retries later.
    spdlog::debug("heartbeat not emitted: {}", first_line(e.what()));
    heartbeat_source_.close();
  }
}

void Replicator::report(bool stopping) {
  auto now = Clock::now();
  if (now - last_status_ < kStatusInterval && !stopping) return;
  ApplyStats st = applier_->stats();
  status_.received_lsn = received_;
  status_.applied_lsn = std::max(st.applied_lsn, caught_up_to_);
  status_.flushed_lsn = flushed_;
  status_.server_wal_end = source_->server_wal_end();
  status_.apply = st;
  status_.lag_bytes =
      status_.server_wal_end > status_.applied_lsn ? status_.server_wal_end - status_.applied_lsn : 0;
  // A backlog of more than a block's worth of WAL: still catching up.
  status_.phase =
      status_.lag_bytes > kCatchingUpBytes ? phase_name(Phase::kCatchingUp) : phase_name(Phase::kStreaming);
  bool caught_up = applier_->idle() && status_.applied_lsn >= received_;
  status_.lag_ms = caught_up || st.applied_commit_time == 0
                       ? 0
                       : std::max<int64_t>(0, (now_postgres_micros() - st.applied_commit_time) / 1000);
  double secs = std::chrono::duration<double>(now - rate_since_).count();
  if (secs > 0) status_.changes_per_second = static_cast<double>(st.changes - changes_at_last_status_) / secs;
  changes_at_last_status_ = st.changes;
  rate_since_ = now;
  if (!opts_.status_file.empty() && !follow::write_status_file(opts_.status_file, status_))
    spdlog::warn("could not write the status file {}", opts_.status_file);
  if (tty_) std::fprintf(stderr, "\r%s\033[K", follow::status_line(status_).c_str());
  last_status_ = now;
}

// complete's stop marker arrived, or complete recorded it while this applier was not running
// (a restart resumes past the marker and would never see it): end once it is applied.
void Replicator::watch_cutover() {
  if (cut_over_) return;
  if (applier_->stop_lsn() != 0) {
    until_ = applier_->stop_lsn();
    cut_over_ = true;
    spdlog::info("stop marker at {}: the source is cut over; stopping once it is applied",
                 format_lsn(*until_));
    return;
  }
  auto now = Clock::now();
  if (!opts_.watch_stop_lsn || now - last_stop_check_ < kStatusInterval) return;
  last_stop_check_ = now;
  std::string v = control_.query_value(
      "SELECT coalesce(stop_lsn::text, '') FROM dts.migration WHERE slot = $1", {opts_.slot});
  if (auto lsn = parse_lsn(v)) {
    until_ = *lsn;
    cut_over_ = true;
    spdlog::info("complete recorded its stop marker at {}: stopping once it is applied", format_lsn(*lsn));
  }
}

// Reached: applied up to the end, or idle with the server having sent everything up to it.
bool Replicator::reached_end() {
  if (!until_ || applier_->in_transaction()) return false;
  bool idle = applier_->idle();
  if (std::max(applier_->stats().applied_lsn, resume_) < *until_ && !(idle && sent_everything_to() >= *until_))
    return false;
  applier_->commit_group();
  applier_->sync();
  // Wait for durability, so that what we report and confirm is what a restart resumes from.
  Lsn applied = applier_->stats().applied_lsn;
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while ((flushed_ = origin_progress(true)) < applied && Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(20));
  source_->send_status(flushed_, flushed_, flushed_);
  ApplyStats st = applier_->stats();
  status_.flushed_lsn = flushed_;
  status_.applied_lsn = st.applied_lsn;
  status_.apply = st;
  status_.phase = cut_over_ ? phase_name(Phase::kCompleted) : phase_name(Phase::kStopped);
  if (!opts_.status_file.empty()) follow::write_status_file(opts_.status_file, status_);
  spdlog::info("reached {} (applied {})", format_lsn(*until_), format_lsn(st.applied_lsn));
  return true;
}

void Replicator::run(const std::atomic<bool>& stop) {
  connect();
  for (;;) {
    receive();
    if (tick_) tick_();
    bool stopping = stop.load();
    send_feedback(stopping);
    report(stopping);
    if (stopping) {
      if (tty_) std::fputc('\n', stderr);
      spdlog::info("stopped at {} (flushed {})", format_lsn(applier_->stats().applied_lsn),
                   format_lsn(flushed_));
      return;
    }
    watch_cutover();
    if (reached_end()) return;
  }
}

}  // namespace dts::core
