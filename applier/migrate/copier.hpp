// The data copy of migrate: tables copied from source to target by parallel workers, every one
// of them reading in the snapshot the slot exported, so the copy is exactly the slot's
// consistent point. Large tables are cut into ctid ranges copied in parallel; each chunk goes
// as binary COPY streamed from source to target, with no staging file, in one target
// transaction.
#ifndef DTS_APPLIER_MIGRATE_COPIER_HPP
#define DTS_APPLIER_MIGRATE_COPIER_HPP

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "migrate/stop.hpp"

namespace dts::migrate {

struct TableToCopy {
  std::string schema;
  std::string name;
  std::vector<std::string> columns;  // stored, non-generated columns, in order
  uint64_t pages = 0;                // relpages in the snapshot
  int64_t estimated_rows = 0;
};

struct Chunk {
  size_t table = 0;   // index into the table list
  uint64_t first_page = 0;
  uint64_t end_page = 0;  // exclusive; 0 with first_page 0: the whole table
  std::atomic<uint64_t> rows{0};   // copied, known when the chunk is done
  std::atomic<uint64_t> bytes{0};  // streamed so far
  std::atomic<bool> done{false};
  Chunk() = default;
  Chunk(const Chunk& o) : table(o.table), first_page(o.first_page), end_page(o.end_page) {}
};

// Cuts tables larger than `split_pages` into chunks of about that many pages.
std::vector<Chunk> plan_chunks(const std::vector<TableToCopy>& tables, uint64_t split_pages);

// The SQL that reads one chunk from the source, and the COPY that writes it on the target.
std::string chunk_read_sql(const TableToCopy& t, const Chunk& c);
std::string chunk_write_sql(const TableToCopy& t);

struct CopyResult {
  uint64_t rows = 0;
  uint64_t bytes = 0;
};

// Copies every chunk with `jobs` workers, each in the exported snapshot. Throws dts::Error on
// the first failure (the other workers stop).
// `report` runs about every 500 ms on the calling thread while the workers copy. Once
// `should_stop` (asked every 100 ms, on the calling thread) says so, the workers' queries are
// cancelled on both sides (PQcancel), their chunks rolled back, and Stopped is thrown when every
// worker has ended.
CopyResult copy_chunks(const std::string& source, const std::string& target, const std::string& snapshot,
                       const std::vector<TableToCopy>& tables, std::vector<Chunk>& chunks, int jobs,
                       const std::function<void()>& report, const StopCheck& should_stop);

}  // namespace dts::migrate

#endif
