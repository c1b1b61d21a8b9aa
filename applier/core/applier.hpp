// What the replicator drives: decoded events of source transactions in, target commits out.
// An applier applies each source transaction exactly once and records the origin's progress
// in the commit that makes it durable; the replicator decides when a group is committed and
// what may be confirmed to the source. Today's implementation is apply::ApplyEngine (one
// pipelined main session, streamed transactions on sessions of their own or spooled); parallel
// apply and schema-change replay plug in here as well.
#ifndef DTS_APPLIER_CORE_APPLIER_HPP
#define DTS_APPLIER_CORE_APPLIER_HPP

#include <cstdint>
#include <string>
#include <vector>

#include "common/lsn.hpp"
#include "decode/decoder.hpp"

namespace dts::core {

// What one apply worker (a lane of parallel apply) is doing.
struct LaneActivity {
  const char* state = "idle";  // idle, building (the group being received), applying (results
                               // awaited), committing (all confirmed, its turn not yet come)
  uint64_t unconfirmed = 0;    // statements sent whose results are not read yet
  Lsn group_end_lsn = 0;       // the source position its group ends at (0: none)
};

struct ApplyStats {
  uint64_t transactions = 0;  // source transactions committed on the target
  uint64_t changes = 0;       // rows inserted, updated or deleted (sent)
  Lsn applied_lsn = 0;        // end LSN of the last source transaction committed on the target
  int64_t applied_commit_time = 0;
  uint64_t spooled_transactions = 0;  // large transactions kept on disk until their commit
  uint64_t spool_peak_bytes = 0;
  uint64_t set_statements = 0;  // set-based UPDATE and DELETE statements sent
  uint64_t set_rows = 0;        // the changes they carried
  uint64_t apply_workers = 1;   // target sessions applying ordinary transactions
  uint64_t conflict_waits = 0;  // a group waited for an earlier one's commit (a row both touch)
  std::string last_conflict_wait;   // what the last such wait waited for
  std::vector<LaneActivity> lanes;  // with several apply workers
  uint64_t schema_changes = 0;  // source schema changes replayed (their statements sent)
  std::string last_schema_change;  // the last one's first statement
};

// When a group of source transactions is committed on the target. The replicator owns it; the
// applier asks it after each source transaction (size), the replicator checks it between
// messages (time).
struct CommitPolicy {
  // A row updated by every source transaction (a counter, a branch balance) and not merged per
  // key gains a version per update that nothing can prune until the group commits, and each
  // later update walks them all (2000 pgbench transactions per group ran 4x slower than 50).
  uint64_t max_changes = 20000;
  // Merged rows gain no versions: a larger group writes a hot row (a pgbench teller or branch)
  // once for more transactions and commits less often (pgbench's backlog: 1000 against 200
  // wrote 4x fewer teller rows); max_age_ms still bounds the group in a live stream.
  uint64_t max_transactions = 1000;       // when the group's rows are merged per key
  uint64_t max_transactions_direct = 50;  // when it sent UPDATEs or DELETEs one by one
  int linger_ms = 2;                      // with a group open, wait this long for more data
  int max_age_ms = 100;                   // a group is committed at least this often

  bool full(uint64_t transactions, uint64_t changes, bool direct_updates) const {
    return changes >= max_changes ||
           transactions >= (direct_updates ? max_transactions_direct : max_transactions);
  }
};

class Applier : public decode::EventHandler {
 public:
  // Commits the open group, if any: every statement confirmed first, the origin set in the
  // same commit. A refused change throws Error(kApply) with nothing of its group committed.
  virtual void commit_group() = 0;
  // Reads the target's results until everything sent is confirmed.
  virtual void sync() = 0;
  // Reads the results that arrived, without waiting (confirmed commits move applied_lsn).
  virtual void poll() = 0;
  virtual bool group_open() const = 0;
  virtual bool in_transaction() const = 0;  // inside a source transaction's records
  // Nothing received is waiting to be applied or confirmed.
  virtual bool idle() const = 0;
  virtual ApplyStats stats() const = 0;
  // The LSN of a stop marker received (0: none): the replicator ends once it is applied.
  virtual Lsn stop_lsn() const = 0;
  // The LSN of the last dts.heartbeat message received (0: none): the source sent every
  // transaction that committed before it.
  virtual Lsn heartbeat_lsn() const { return 0; }
};

}  // namespace dts::core

#endif
