// Reconciles the change stream with a copy made of chunks, each read in a snapshot of its own.
//
// Every chunk of the copy records the snapshot it was read in. A change the stream brings for a
// row of a copied chunk is already in the chunk exactly when that snapshot sees the change's
// transaction: then it is skipped, otherwise applied on top. For each row, the transactions
// that changed it are ordered (each waited for the previous one's row lock), so a snapshot sees
// a prefix of them, and "skip what the snapshot sees, apply the rest" leaves the row as the
// source has it. WAL order alone could not decide it: a commit can be in the WAL and not yet
// visible. See docs/architecture.md ("The copy and the stream").
//
// A chunk is a range of a single integer key column, so that the applier can tell which chunk a
// row is in by comparing numbers; a table without such a key is one chunk.
//
// A table copied again while the stream is applied (resync) has chunks not read yet: a change
// of one of them is skipped, and its transaction must then be seen by the snapshot the chunk is
// read in (start_reading() refuses a snapshot that does not, and the chunk is read in a newer
// one). A change of a chunk being read that its snapshot does not see waits for the chunk to be
// written. The copy workers and the applier share the state under a mutex.
#ifndef DTS_APPLIER_APPLY_COPY_RECONCILER_HPP
#define DTS_APPLIER_APPLY_COPY_RECONCILER_HPP

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/lsn.hpp"
#include "decode/decoder.hpp"
#include "pg/connection.hpp"
#include "pg/snapshot.hpp"

namespace dts::apply {

enum class ChunkState : uint8_t { kPending, kReading, kDone };

struct CopiedChunk {
  int index = 0;  // in dts.copy_chunk
  std::optional<int64_t> lo;  // the key range [lo, hi); unset: unbounded on that side
  std::optional<int64_t> hi;
  ChunkState state = ChunkState::kDone;
  pg::Snapshot snapshot;          // being read or done: the snapshot it is read in
  std::vector<uint32_t> skipped;  // pending: transactions whose changes of it were skipped
};

// A copy again that the stream asked for (a rewrite) before the resync driver took it up:
// its request's id (the chunks' generation) is not known yet (CopyReconciler::adopt).
constexpr int64_t kUnknownGeneration = -1;

struct CopiedTable {
  std::string key_column;  // empty: the table is one chunk
  std::vector<CopiedChunk> chunks;  // by lo
  // The copy's generation in dts.copy_chunk (0: the migration's; a resync's id). A copy worker
  // of an older, superseded copy of the table finds nothing of its own here.
  int64_t generation = 0;
};

// What becomes of a change of a copied table.
enum class RowFate {
  kApply,      // its chunk does not hold it
  kSkip,       // its chunk holds it already
  kDeleteOld,  // an UPDATE moving the row into a chunk that holds it, out of one that does not
  kInsertNew,  // an UPDATE moving the row out of a chunk that holds it, into one that does not
  // The same, but the source did not send the row's unchanged large values, and no chunk has
  // them: the row is read again from the source (add_row_read).
  kReadNew,
  kWait,  // a chunk it touches is being read in a snapshot that does not see it: wait_for_chunk()
};

class CopyReconciler {
 public:
  // The chunks copied for the migration of `slot` (dts.copy_chunk on the target). Nothing to
  // reconcile once the stream resumes at or past every chunk's snapshot.
  void load(const pg::Connection& target, const std::string& slot, Lsn resume);
  void add(uint32_t relid, CopiedTable table, Lsn snapshot_lsn);  // for tests and load()
  // The table is no longer copied (the source dropped it, or the transaction that asked for
  // its copy was rolled back): its changes are applied again.
  void forget(uint32_t relid);
  // The copy workers of a resync: a chunk's snapshot is taken; false if it does not see a
  // transaction whose change of the chunk was skipped (read the chunk in a newer one).
  bool start_reading(uint32_t relid, int64_t generation, int index, const pg::Snapshot& snapshot, Lsn snapshot_lsn);
  void finish_reading(uint32_t relid, int64_t generation, int index);  // its rows are committed on the target
  // A chunk being read is not copied after all (the target's columns are behind the source's,
  // or its COPY waited too long for a lock the applier holds): it is pending again, and read
  // later in a newer snapshot.
  void give_back(uint32_t relid, int64_t generation, int index);
  // The resync driver took up the stream's request for the table: its id is the copy's generation.
  void adopt(uint32_t relid, int64_t generation);
  // The applier, before it empties a table copied again or truncates one being copied (with
  // nothing of its own uncommitted): until no chunk of it is being read. Chunks not read yet
  // hold nothing on the target; a worker never waits on the applier for long (lock_timeout).
  void wait_not_reading(uint32_t relid);
  void fail(const std::string& why);               // a worker failed: waiters throw
  // The applier, after RowFate::kWait (with nothing of its own uncommitted): until the chunk
  // it waits for is written.
  void wait_for_chunk();
  // Every chunk of the table is written.
  bool settled(uint32_t relid) const;
  // One row read again from the source in `snapshot` (taken before `snapshot_lsn`): for that
  // key, the snapshot decides from now on, as a chunk of one row.
  void add_row_read(uint32_t relid, int64_t key, pg::Snapshot snapshot, Lsn snapshot_lsn);
  // Reads the row with this key from the source as it is now (every column of `rel`, as text)
  // and records the read's snapshot for the key (add_row_read).
  pg::Result read_row_now(const pg::Connection& source, const decode::Relation& rel, int64_t key);
  // The integer key of a change's new row, for add_row_read.
  std::optional<int64_t> new_key(const decode::RowChange& row) const;

  // Read for every change: a flag kept with the table map, not a lock.
  bool active() const { return active_.load(std::memory_order_relaxed); }
  // A source transaction begins. Committed at or after the WAL position every chunk was read
  // at, it is in no chunk: reconciliation is over.
  void begin(uint32_t xid, Lsn commit_lsn);
  void begin_streamed(uint32_t xid) { xid_ = xid; }

  // Whether the current transaction's change of this row is already in the copy: the row's key
  // is `key` (new or old values, as `key_only` says how they are laid out).
  bool copied(const decode::Relation& rel, const decode::Values& values, bool key_only);
  RowFate fate(const decode::RowChange& row);
  // A truncate: the rows of a chunk whose snapshot saw it came after it, those of a chunk that
  // did not are older and go. Keeps in `relations` the tables to truncate whole and returns
  // the DELETEs that remove the older chunks of the others.
  std::vector<std::string> truncate(std::vector<const decode::Relation*>& relations);
  const CopiedTable* table(uint32_t relid) const;

 private:
  enum class Held { kNo, kYes, kWait };
  Held held(const decode::Relation& rel, const decode::Values& values, bool key_only);
  CopiedChunk* find(uint32_t relid, int index);
  CopiedChunk* find(uint32_t relid, int64_t generation, int index);

  mutable std::mutex mu_;
  std::atomic<bool> active_{false};  // !tables_.empty(), changed on the applier's thread only
  std::condition_variable changed_;
  std::string failure_;
  std::pair<uint32_t, int> waiting_for_{0, -1};
  std::unordered_map<uint32_t, CopiedTable> tables_;
  std::unordered_map<uint32_t, std::unordered_map<int64_t, pg::Snapshot>> rows_read_;
  Lsn horizon_ = 0;  // the latest WAL position a chunk was read at
  uint32_t xid_ = 0;
};

// A key value as the stream carries it (int2/int4/int8), as a number; nothing for anything else.
std::optional<int64_t> integer_key(const decode::Column& column, const protocol::Value& value);

}  // namespace dts::apply

#endif
