#include "follow/applied_watch.hpp"

#include <thread>

#include "apply/apply_engine.hpp"
#include "common/error.hpp"

namespace dts::follow {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kPoll{10};
// Under a steady stream of writes the applier passes any position soon by itself; a marker
// is written only when it has not after this long.
constexpr std::chrono::milliseconds kMarkerAfter{50};

Lsn lsn_of(const std::string& text) { return text.empty() ? 0 : parse_lsn(text).value_or(0); }

}  // namespace

AppliedWatch::AppliedWatch(const pg::Connection& source, const pg::Connection& target, std::string origin)
    : source_(source), target_(target), origin_(std::move(origin)) {}

bool AppliedWatch::has_applier() const {
  return target_.query_value("SELECT pg_replication_origin_oid($1) IS NOT NULL", {origin_}) == "t";
}

Lsn AppliedWatch::applied() const {
  // Not only flushed: what verify reads is the committed state, durable or not.
  return lsn_of(target_.query_value("SELECT pg_replication_origin_progress($1, false)", {origin_}));
}

Lsn AppliedWatch::source_position() const { return lsn_of(source_.query_value("SELECT pg_current_wal_insert_lsn()")); }

Lsn AppliedWatch::write_marker(std::string_view prefix, std::string_view content) const {
  return lsn_of(source_.query_value("SELECT pg_logical_emit_message(true, $1, $2)",
                                    {std::string(prefix), std::string(content)}));
}

void AppliedWatch::wait_applied(Lsn lsn, std::chrono::milliseconds timeout, const std::atomic<bool>* interrupted) const {
  auto start = Clock::now();
  Lsn marker = 0;
  for (;;) {
    if (interrupted != nullptr && interrupted->load())
      throw Error(ErrorKind::kInternal, "interrupted while waiting for the applier to reach " + format_lsn(lsn));
    Lsn at = applied();
    if (at >= lsn) return;
    auto waited = Clock::now() - start;
    if (marker < lsn && waited >= kMarkerAfter) marker = write_marker(apply::kMarkerPrefix, "wait");
    if (waited >= timeout)
      throw Error(ErrorKind::kSource,
                  "the applier has not applied the source up to " + format_lsn(lsn) + " within " +
                      std::to_string(timeout.count() / 1000) + " s (it is at " + format_lsn(at) +
                      "): is `dts_applier migrate` (or follow) running for origin \"" + origin_ + "\"?");
    std::this_thread::sleep_for(kPoll);
  }
}

}  // namespace dts::follow
