// The data copy of migrate: tables copied from source to target by parallel workers in chunks,
// each chunk read in a short transaction of its own and written, with the record that it is
// done, in one target transaction. No snapshot is held for longer than a chunk, a copy that
// stops resumes with the chunks that were not done, and the stream is reconciled with each
// chunk's snapshot afterwards (apply/copy_reconciler.hpp).
//
// A chunk is a range of the table's key when that key is a single integer column (the applier
// must be able to tell which chunk a row is in); any other table is one chunk.
#ifndef DTS_APPLIER_MIGRATE_COPIER_HPP
#define DTS_APPLIER_MIGRATE_COPIER_HPP

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/table_selection.hpp"
#include "migrate/stop.hpp"
#include "pg/connection.hpp"

namespace dts::migrate {

struct TableToCopy {
  uint32_t oid = 0;  // on the source
  std::string schema;
  std::string name;
  std::vector<std::string> columns;  // stored, non-generated columns, in order
  uint64_t bytes = 0;
  int64_t estimated_rows = 0;
  std::string key_column;  // a single-column int2/int4/int8 key, or empty: one chunk
  std::optional<int64_t> key_min;
  std::optional<int64_t> key_max;
};

struct Chunk {
  size_t table = 0;  // index into the table list
  int index = 0;     // within its table
  std::optional<int64_t> lo;  // key range [lo, hi); unset: unbounded on that side
  std::optional<int64_t> hi;
  bool redone = false;  // started by an earlier run that stopped before it was done
  std::atomic<uint64_t> rows{0};   // copied, known when the chunk is done
  std::atomic<uint64_t> bytes{0};  // streamed so far
  std::atomic<bool> done{false};
  Chunk() = default;
  Chunk(const Chunk& o)
      : table(o.table), index(o.index), lo(o.lo), hi(o.hi), redone(o.redone), rows(o.rows.load()),
        bytes(o.bytes.load()), done(o.done.load()) {}
};

// The selected tables with rows (partitioned tables have none of their own), by oid: their
// columns, size, and the integer key that chunks them, if they have one.
std::vector<TableToCopy> tables_to_copy(const core::CompiledSelection& selection, const pg::Connection& source);

// Key ranges of about `split_bytes` of data each for tables with an integer key, one chunk for
// the others. The first and last ranges are open: keys outside the sampled bounds belong too.
std::vector<Chunk> plan_chunks(const std::vector<TableToCopy>& tables, uint64_t split_bytes);

// The SQL that reads one chunk from the source, and the COPY that writes it on the target.
// `columns`: those to copy (quoted, comma-separated); the plan's (TableToCopy::columns) unless a
// schema change came since (copy_one).
std::string chunk_read_sql(const TableToCopy& t, const Chunk& c, const std::string& columns);
std::string chunk_write_sql(const TableToCopy& t, const std::string& columns);
std::string chunk_range_text(const Chunk& c);  // "1000-1999", "-999", "5000-", "all"

// dts.copy_chunk on the target: the plan of the copy of `slot`, and each chunk's completion
// (its snapshot, the WAL position read just after it, rows and bytes).
void create_chunk_table(const pg::Connection& target);
// generation: 0 for the migration's copy, a resync's id for tables copied again.
void save_plan(const pg::Connection& target, const std::string& slot, int64_t generation,
               const std::vector<TableToCopy>& tables, const std::vector<Chunk>& chunks);
// The plan saved by an earlier run, with what it finished; empty if there is none.
std::vector<Chunk> load_plan(const pg::Connection& target, const std::string& slot, int64_t generation,
                             const std::vector<TableToCopy>& tables);

// Where a copy's chunks are recorded, and, for a copy made while the stream is applied
// (resync), what the applier must know as each chunk is read and written.
struct ChunkRecord {
  std::string slot;
  int64_t generation = 0;
  // A chunk's snapshot was taken: false to read the chunk in a newer one.
  std::function<bool(const TableToCopy&, const Chunk&, const std::string& snapshot, const std::string& lsn)>
      on_snapshot;
  std::function<void(const TableToCopy&, const Chunk&)> on_written;  // its rows are committed
  // The source, in the chunk's snapshot (`shape`: its columns and types, `lsn` the snapshot's
  // position), has columns the target lacks: true to copy those both sides have, false to hand
  // the chunk back and read it again later. Unset: copy those both sides have.
  std::function<bool(const TableToCopy&, const Chunk&, const std::string& shape, const std::string& lsn)>
      copy_common_columns;
  // A chunk handed back, both sides' transactions ended: waits as long as is useful before it is
  // read again (`lsn`: the stream must have applied everything before it; empty: the COPY waited
  // too long for a lock, held by the applier). Set for a copy made while the stream runs, whose
  // target sessions also wait at most a second for a lock.
  std::function<void(const TableToCopy&, const Chunk&, const std::string& lsn)> on_handed_back;
};

struct CopyResult {
  uint64_t rows = 0;
  uint64_t bytes = 0;
};

// Copies every chunk not done with `jobs` workers. Throws dts::Error on the first failure (the
// other workers stop after their chunk). `report` runs about every 500 ms on the calling
// thread while the workers copy. Once `should_stop` (asked every 100 ms, on the calling
// thread) says so, the workers' queries are cancelled on both sides (PQcancel), their chunks
// rolled back, and Stopped is thrown when every worker has ended.
CopyResult copy_chunks(const std::string& source, const std::string& target, const ChunkRecord& record,
                       const std::vector<TableToCopy>& tables, std::vector<Chunk>& chunks, int jobs,
                       const std::function<void()>& report, const StopCheck& should_stop);

}  // namespace dts::migrate

#endif
