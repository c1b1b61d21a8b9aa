// Tables copied again while the stream is applied (`dts_applier resync`, serve's resync route,
// `verify --repair`). A request is a row of dts.resync on the target; the applier that follows
// the migration picks it up between transactions: it empties the tables, and copy workers read
// them again in chunks while the stream goes on, reconciled chunk by chunk
// (apply/copy_reconciler.hpp). One applier writes the target, so the requests go through it.
#ifndef DTS_APPLIER_RESYNC_RESYNC_DRIVER_HPP
#define DTS_APPLIER_RESYNC_RESYNC_DRIVER_HPP

#include <atomic>
#include <chrono>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "apply/apply_engine.hpp"
#include "follow/follow.hpp"
#include "migrate/copier.hpp"
#include "pg/connection.hpp"

namespace dts::resync {

// dts.resync on the target (created if missing).
void create_request_table(const pg::Connection& target);

class ResyncDriver {
 public:
  explicit ResyncDriver(const follow::FollowOptions& opts) : opts_(opts) {}
  ~ResyncDriver() { stop(); }
  ResyncDriver(const ResyncDriver&) = delete;
  ResyncDriver& operator=(const ResyncDriver&) = delete;

  // The applier of a (re)connected replicator: a copy under way for the one before stops first.
  void attach(apply::ApplyEngine& engine);
  // Between messages: picks up a request, starts its copy, records it done once every chunk is
  // written. A failed copy is thrown here (the stream must not go on skipping its changes).
  // `applied`: the position up to which every source transaction is applied on the target.
  void tick(Lsn applied);
  void stop();

 private:
  bool copy_common_columns(const migrate::TableToCopy& t, const std::string& shape, Lsn lsn);
  void wait_before_reading_again(const migrate::TableToCopy& t, const migrate::Chunk& c, Lsn lsn);

  bool start(int64_t id, const std::string& tables, const std::string& exclude, bool resuming);
  void empty_tables(int64_t id);
  void record_stop(int64_t id, const std::string& why);
  core::CompiledSelection planned_tables(int64_t id, const pg::Connection& source);

  const follow::FollowOptions& opts_;
  apply::ApplyEngine* engine_ = nullptr;
  pg::Connection target_;
  std::thread copier_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};
  std::exception_ptr error_;
  int64_t active_ = 0;  // the request being copied
  uint64_t chunk_bytes_ = 0;
  std::vector<migrate::TableToCopy> tables_;
  std::vector<migrate::Chunk> chunks_;
  migrate::ChunkRecord record_;
  std::chrono::steady_clock::time_point last_check_{};
  std::atomic<Lsn> applied_{0};
  // Per table of the copy under way, a shape of the source's columns the target was found to
  // lack, and the WAL position read with it (copy_common_columns).
  std::mutex deferred_mu_;
  std::map<uint32_t, std::pair<std::string, Lsn>> deferred_;
};

}  // namespace dts::resync

#endif
