// What the copy shows while it runs: the status file's copy object (per table and per chunk),
// a bar on a terminal, and how long the migration has held a snapshot on the source.
#ifndef DTS_APPLIER_MIGRATE_COPY_PROGRESS_HPP
#define DTS_APPLIER_MIGRATE_COPY_PROGRESS_HPP

#include <chrono>
#include <string>
#include <vector>

#include "migrate/copier.hpp"
#include "pg/connection.hpp"

namespace dts::migrate {

// Samples, on the source, the oldest transaction holding a snapshot among the job's sessions
// (they all carry its application_name) and the xmin of its slot: the vacuum horizon the
// migration holds back. The copy reads each chunk in a transaction of its own, so the longest
// hold is about one chunk.
class SnapshotWatch {
 public:
  SnapshotWatch(const std::string& source, std::string application_name, std::string slot);
  void sample();
  double longest_seconds() const { return longest_seconds_; }
  bool slot_holds_xmin() const { return slot_holds_xmin_; }

 private:
  pg::Connection source_;
  std::string application_name_;
  std::string slot_;
  double longest_seconds_ = 0;
  bool slot_holds_xmin_ = false;
  bool failed_ = false;
};

struct CopyFigures {
  double seconds = 0;
  double longest_snapshot_seconds = 0;
  std::string schema;  // how ownership and grants were restored (at the end)
};

std::string copy_json(const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks,
                      const CopyFigures& figures);

// On a terminal: a line for each table as it completes, and a bar for the copy as a whole.
void progress_bar(const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks,
                  std::vector<bool>& reported, double seconds);

}  // namespace dts::migrate

#endif
