// How far the applier has got, seen from outside it: verify and complete run as their own
// processes next to a running migrate/follow, and learn its position from the target (the
// replication origin's progress, set in every commit the applier makes). To see a source
// position reached on an idle source, they write a marker through the slot: a transactional
// logical message, whose commit the applier applies like any other.
#ifndef DTS_APPLIER_FOLLOW_APPLIED_WATCH_HPP
#define DTS_APPLIER_FOLLOW_APPLIED_WATCH_HPP

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>

#include "common/lsn.hpp"
#include "pg/connection.hpp"

namespace dts::follow {

class AppliedWatch {
 public:
  // Both connections must outlive the watch.
  AppliedWatch(const pg::Connection& source, const pg::Connection& target, std::string origin);

  // The target has the applier's origin: a migration streams (or streamed) into it.
  bool has_applier() const;
  // Everything the source committed before this LSN is in the target's committed state.
  Lsn applied() const;
  // The source's WAL insert position: every commit visible to a snapshot taken before this
  // call ends at or before it.
  Lsn source_position() const;
  // Writes a marker through the slot; returns its LSN (its transaction commits after it).
  Lsn write_marker(std::string_view prefix, std::string_view content) const;
  // Waits until the applier has applied everything up to `lsn`, writing a marker if the
  // source goes quiet before. Throws Error(kSource) naming the positions at the deadline.
  // `interrupted`, when given and set (a signal), ends the wait with Error(kInternal).
  void wait_applied(Lsn lsn, std::chrono::milliseconds timeout, const std::atomic<bool>* interrupted = nullptr) const;

 private:
  const pg::Connection& source_;
  const pg::Connection& target_;
  std::string origin_;
};

}  // namespace dts::follow

#endif
