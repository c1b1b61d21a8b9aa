// The source side of follow: a logical replication connection speaking the streaming
// replication protocol with libpq (IDENTIFY_SYSTEM, START_REPLICATION, XLogData, keepalives,
// standby status updates).
#ifndef DTS_APPLIER_STREAM_REPLICATION_STREAM_HPP
#define DTS_APPLIER_STREAM_REPLICATION_STREAM_HPP

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/lsn.hpp"
#include "pg/connection.hpp"

namespace dts::stream {

using PluginOptions = std::vector<std::pair<std::string, std::string>>;

struct StreamMessage {
  Lsn wal_start = 0;   // XLogData: where the data starts
  Lsn wal_end = 0;     // the server's current end of WAL
  int64_t send_time = 0;
  const uint8_t* data = nullptr;  // the frame; valid until the next read
  size_t len = 0;
  bool reply_requested = false;  // keepalive only
};

class ReplicationStream {
 public:
  enum class Event { kData, kKeepalive, kTimeout };

  // Connects (replication=database) and runs IDENTIFY_SYSTEM.
  explicit ReplicationStream(const std::string& conninfo);
  ~ReplicationStream();
  ReplicationStream(const ReplicationStream&) = delete;
  ReplicationStream& operator=(const ReplicationStream&) = delete;

  // Creates the slot with dts_decoding unless it exists; returns true if it created it.
  bool create_slot_if_missing(const std::string& slot);
  bool slot_exists(const std::string& slot);
  void start(const std::string& slot, Lsn start_lsn, const PluginOptions& options);

  // Waits at most `timeout` for the next message.
  Event next(std::chrono::milliseconds timeout, StreamMessage& msg);
  // Tells the server what was written, flushed and applied. `flush` is what the target has
  // durably committed: the slot may release WAL up to it.
  void send_status(Lsn write, Lsn flush, Lsn apply, bool reply_requested = false);

  // Memory the walsender holds a transaction in before streaming it (or spilling it): smaller
  // blocks let decoding on the source and applying on the target overlap.
  void set_decoding_work_mem(std::string value) { decoding_work_mem_ = std::move(value); }
  Lsn server_wal_end() const { return server_wal_end_; }
  const std::string& server_encoding() const { return server_encoding_; }

 private:
  void release_buffer();
  pg::Connection conn_;
  char* buffer_ = nullptr;
  Lsn server_wal_end_ = 0;
  std::string server_encoding_;
  std::string decoding_work_mem_;
};

}  // namespace dts::stream

#endif
