// A migration's identity and vocabulary, shared by every command: its names on the source and
// the target (slot, origin, the dts.migration row), the one list of phases that the status
// file, dts.migration and serve all speak, and the exit codes.
#ifndef DTS_APPLIER_CORE_MIGRATION_HPP
#define DTS_APPLIER_CORE_MIGRATION_HPP

#include <optional>
#include <string>

#include "pg/connection.hpp"
#include <string>
#include <string_view>

namespace dts::core {

enum class Phase {
  kStarting,         // connecting
  kPreparing,        // migrate: slot and snapshot, pre-data
  kCopying,          // migrate: table data
  kBuildingIndexes,  // migrate: post-data
  kCatchingUp,       // streaming with a backlog of more than a block of WAL
  kStreaming,
  kReconnecting,  // resume mode auto, after a lost connection
  kStopped,       // ended on request or at --until-lsn; run again to go on
  kDone,          // migrate --mode full: copied, slot dropped
  kCompleted,     // cut over by complete
  kFailed,
};

// "STREAMING", "BUILDING_INDEXES", ...
const char* phase_name(Phase phase);
// Case-insensitive: dts.migration rows written by earlier releases hold lower-case names.
std::optional<Phase> parse_phase(std::string_view text);
// The SQL condition that dts.migration's phase column is `phase`, whatever the case it was
// written in: "upper(phase) = 'COMPLETED'".
std::string phase_is_sql(Phase phase);

// The names a migration has on both sides, derived from its slot.
struct MigrationId {
  std::string slot;
  std::string origin;  // replication origin on the target

  static MigrationId for_slot(const std::string& slot, const std::string& origin = "") {
    return MigrationId{slot, origin.empty() ? "dts_" + slot : origin};
  }
};

// The --tables / --exclude a migration was started with, kept in dts.migration on the target
// (the plugin's dialect); none if the target has no migration of that slot.
struct StoredSelection {
  std::string tables;
  std::string exclude;
};
std::optional<StoredSelection> stored_selection(const pg::Connection& target, const std::string& slot);

// Exit codes of every command.
constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;           // bad options or settings, or a FAILED precheck
constexpr int kExitConnectionLost = 3;  // resume mode manual

}  // namespace dts::core

#endif
