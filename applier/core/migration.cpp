#include "core/migration.hpp"

#include <cctype>

namespace dts::core {
namespace {

constexpr Phase kAll[] = {Phase::kStarting,        Phase::kPreparing,  Phase::kCopying,
                          Phase::kBuildingIndexes, Phase::kCatchingUp, Phase::kStreaming,
                          Phase::kReconnecting,    Phase::kStopped,    Phase::kDone,
                          Phase::kCompleted,       Phase::kFailed};

}  // namespace

const char* phase_name(Phase phase) {
  switch (phase) {
    case Phase::kStarting: return "STARTING";
    case Phase::kPreparing: return "PREPARING";
    case Phase::kCopying: return "COPYING";
    case Phase::kBuildingIndexes: return "BUILDING_INDEXES";
    case Phase::kCatchingUp: return "CATCHING_UP";
    case Phase::kStreaming: return "STREAMING";
    case Phase::kReconnecting: return "RECONNECTING";
    case Phase::kStopped: return "STOPPED";
    case Phase::kDone: return "DONE";
    case Phase::kCompleted: return "COMPLETED";
    case Phase::kFailed: return "FAILED";
  }
  return "FAILED";
}

std::optional<Phase> parse_phase(std::string_view text) {
  std::string upper;
  for (char c : text) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (Phase p : kAll)
    if (upper == phase_name(p)) return p;
  return std::nullopt;
}

std::string phase_is_sql(Phase phase) {
  return std::string("upper(phase) = '") + phase_name(phase) + "'";
}

std::optional<StoredSelection> stored_selection(const pg::Connection& target, const std::string& slot) {
  if (target.query_value("SELECT to_regclass('dts.migration') IS NOT NULL") != "t") return std::nullopt;
  // to_jsonb: a dts.migration written before exclude_tables existed has no such column.
  pg::Result r = target.exec_params("SELECT coalesce(tables, ''), coalesce(to_jsonb(m) ->> 'exclude_tables', '') "
                                    "FROM dts.migration m WHERE slot = $1", {slot});
  if (PQntuples(r.get()) == 0) return std::nullopt;
  return StoredSelection{PQgetvalue(r.get(), 0, 0), PQgetvalue(r.get(), 0, 1)};
}

}  // namespace dts::core
