// One replicator: replication stream -> decoder -> an applier. It alone owns the commit policy
// (size through the applier, time here), the LSN bookkeeping and the feedback to the source:
// the slot is confirmed only up to what the target's origin holds durably, or up to a
// keepalive's position when nothing is in flight. Every command that streams (follow, migrate's
// follow phase, serve's jobs through migrate) runs one per slot.
#ifndef DTS_APPLIER_CORE_REPLICATOR_HPP
#define DTS_APPLIER_CORE_REPLICATOR_HPP

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/lsn.hpp"
#include "core/applier.hpp"
#include "decode/decoder.hpp"
#include "follow/follow.hpp"
#include "follow/status.hpp"
#include "pg/connection.hpp"
#include "stream/replication_stream.hpp"

namespace dts::core {

// Builds the applier once the replicator knows where the target's origin stands and the
// source's encoding.
using ApplierFactory = std::function<std::unique_ptr<Applier>(
    Lsn resume_lsn, const std::string& source_encoding, const CommitPolicy& policy)>;

class Replicator {
 public:
  Replicator(const follow::FollowOptions& opts, follow::Status& status, ApplierFactory make_applier);
  // Streams until stopped, until the end position or a stop marker is applied, or an error is
  // thrown. Returns normally only when done.
  void run(const std::atomic<bool>& stop);
  // Called between messages, on this thread (the resync driver picks up its requests there).
  void on_tick(std::function<void()> tick) { tick_ = std::move(tick); }

 private:
  using Clock = std::chrono::steady_clock;
  void connect();
  void receive();
  void send_feedback(bool stopping);
  void report(bool stopping);
  void watch_cutover();
  bool reached_end();
  bool can_pack();
  Lsn sent_everything_to() const;
  void ask_heartbeat(Clock::time_point now);
  Lsn origin_progress(bool flushed) const;

  const follow::FollowOptions& opts_;
  follow::Status& status_;
  ApplierFactory make_applier_;
  std::function<void()> tick_;
  CommitPolicy policy_;
  pg::Connection control_;  // target, outside the applier's sessions: the origin's progress
  pg::Connection heartbeat_source_;  // source, when transactions are packed
  bool pack_ = false;
  std::unique_ptr<stream::ReplicationStream> source_;
  std::unique_ptr<Applier> applier_;
  decode::Decoder decoder_;

  Lsn resume_ = 0;
  Lsn received_ = 0;
  Lsn flushed_ = 0;
  Lsn keepalive_end_ = 0;
  Lsn caught_up_to_ = 0;  // everything the server sent up to here is applied or held nothing
  bool reply_ = false;
  bool got_data_ = false;
  std::optional<Lsn> until_;
  bool cut_over_ = false;  // the stop comes from complete (marker or dts.migration)
  double throttle_bytes_ = 0;
  Clock::time_point started_ = Clock::now();
  Clock::time_point last_feedback_ = Clock::now();
  Clock::time_point last_group_commit_ = Clock::now();
  Clock::time_point last_probe_{};
  Clock::time_point last_heartbeat_{};
  Clock::time_point last_data_ = Clock::now();
  Clock::time_point last_status_{};
  Clock::time_point last_stop_check_{};
  Clock::time_point rate_since_ = Clock::now();
  uint64_t changes_at_last_status_ = 0;
  bool tty_ = false;
};

}  // namespace dts::core

#endif
