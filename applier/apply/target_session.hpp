// One connection to the target in libpq pipeline mode: statements are sent without waiting
// for their results, which are read back later, in order, against what each was expected to
// do. A rejected change becomes an Error(kApply) naming the table, key, LSN and SQLSTATE.
#ifndef DTS_APPLIER_APPLY_TARGET_SESSION_HPP
#define DTS_APPLIER_APPLY_TARGET_SESSION_HPP

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "apply/params.hpp"
#include "common/lsn.hpp"
#include "pg/connection.hpp"

namespace dts::apply {

// The keys of a multi-row statement, kept until its result is read: when fewer rows matched
// than were sent, they tell which keys the target lacks.
struct KeyProbe {
  std::string select_sql;               // one key's row: SELECT 1 FROM t WHERE k1 = $1 AND ...
  std::vector<decode::Column> columns;  // the key columns, for messages
  std::vector<uint32_t> types;
  size_t rows = 0;
  std::vector<std::string> values;  // rows x columns, row-major
  std::vector<int> formats;
  std::vector<Lsn> lsns;  // per row: the source transaction that wrote it
};

// Where a statement came from, for the error message if the target rejects it.
struct ChangeContext {
  std::string table;  // qualified name
  std::string key;    // "(id)=(42)" or ""
  Lsn lsn = 0;        // the source transaction's commit LSN
  Lsn last_lsn = 0;   // rows of several transactions (an insert batch): the last one's
  const char* action = "";
  std::shared_ptr<const KeyProbe> probe;  // multi-row UPDATEs only

  ChangeContext() = default;
  ChangeContext(std::string table_name, std::string key_text, Lsn commit_lsn, const char* what)
      : table(std::move(table_name)), key(std::move(key_text)), lsn(commit_lsn), action(what) {}
};

class TargetSession {
 public:
  // Connects and prepares the session: session_replication_role = replica (no triggers or FK
  // checks: the source already ran them), asynchronous commit (the origin's progress is the
  // source of truth), the source's encoding, and pipeline mode.
  TargetSession(const std::string& conninfo, const std::string& client_encoding);
  ~TargetSession() = default;
  TargetSession(const TargetSession&) = delete;
  TargetSession& operator=(const TargetSession&) = delete;

  // Outside a pipeline sync only (no statements pending):
  void setup_origin(const std::string& origin);
  void reset_origin();
  // One of several sessions applying at once (apply_lanes.cpp): each commit takes `origin` and
  // gives it back in the same pipeline, and a lock waited for longer than a few seconds ends
  // the statement (a wait between two such sessions that the engine cannot see).
  void hand_origin(const std::string& origin);
  // Runs before this session's results are waited for.
  void before_wait(std::function<void()> hook) { before_wait_ = std::move(hook); }

  // Queues a statement. `sql` is only called the first time `key` is seen (it is prepared
  // then and reused). expect_one_row: an UPDATE or DELETE must change exactly one row.
  void execute(const std::string& key, const std::function<std::string()>& sql, const std::vector<uint32_t>& types,
               const ParamSet& params, ChangeContext context, bool expect_one_row);
  // The same with the parameters given as arrays (a slice of a larger ParamSet).
  void execute(const std::string& key, const std::function<std::string()>& sql, const std::vector<uint32_t>& types,
               int nparams, const char* const* values, const int* lengths, const int* formats, ChangeContext context,
               bool expect_one_row, size_t expected_rows = 1);
  void execute_simple(const std::string& sql, ChangeContext context);  // no parameters, not prepared
  // Sends `rows` (binary COPY tuples: binary_copy_rows) into `copy_sql` (COPY ... FROM STDIN
  // (FORMAT binary)), after every statement sent before it is confirmed: the session leaves
  // pipeline mode for the COPY. The COPY stays open for more rows of the same statement, so the
  // target loads one batch while the next is decoded (a streamed 1M-row insert was 207 COPYs,
  // each waited for, with the target idle while the next batch was built); anything else sent
  // or waited for on the session ends it first, and reads its result: a refused row is
  // reported there, with `context` of its first batch.
  void copy_rows(const std::string& copy_sql, const std::string& rows, const ChangeContext& context);
  // Ends a transaction: confirms every statement sent (results read, row counts checked), then
  // records the origin's progress, COMMIT and sync. on_done runs when the server confirms the
  // commit. A refused statement rolls the transaction back and throws Error(kApply) instead.
  void commit(Lsn origin_lsn, int64_t origin_time, std::function<void()> on_done);
  // Reads every result sent so far; a refused statement rolls the transaction back and throws.
  void confirm();
  void rollback();
  // Rolls back whatever is open and waits for it, forgetting any refusal on the way: for a
  // transaction the source aborted, whose changes need not apply.
  void discard();
  // A streamed transaction's session: a refusal is held until the transaction commits (then
  // reported with that commit's LSN) or aborts (then it does not matter).
  void defer_failures(bool on) { defer_failures_ = on; }
  void set_commit_lsn(Lsn lsn) { commit_lsn_ = lsn; }
  // A streamed transaction's subtransaction: savepoint() returns the mark rollback_to() takes.
  // Rolling back forgets a refusal held since the savepoint (the source aborted the change it
  // refused), not one from before it.
  uint64_t savepoint(const std::string& name);
  void rollback_to(const std::string& name, uint64_t mark);

  // Sends what is buffered and asks the server to send back the results it has, without a sync.
  void flush() { flush_request(); }
  // Reads results until at most `max_pending` statements are unread (0: wait for all). A
  // refused statement among them rolls the transaction back and throws.
  void drain(size_t max_pending = 0);
  // Reads the results that have already arrived, without waiting.
  void poll();
  size_t pending() const { return expected_.size() + (copy_open_ ? 1 : 0); }

 private:
  enum class Expect { kPrepare, kCommand, kOneRow, kOriginSetup, kCommit, kRollbackTo, kSync };
  void send_origin_call(const char* sql, const Lsn origin_lsn);
  struct Pending {
    Expect expect;
    ChangeContext context;
    std::function<void()> on_done;
    size_t rows = 1;  // kOneRow: how many rows the statement must change
    uint64_t seq = 0;  // the order it was sent in (expect())
  };
  void expect(Pending p);
  void send_check(int ok, const char* doing);
  void handle_result(PGresult* r, Pending& p);
  [[noreturn]] void fail(const Pending& p, const std::string& msg, const std::string& state);
  void flush_request();
  void read_one();
  void abandon_failed_transaction();
  std::string missing_keys(const KeyProbe& probe, Lsn& lsn);
  // Records the transaction's first refusal (reported by throw_if_failed).
  void hold_failure(std::string msg, std::string state, const ChangeContext& context, uint64_t seq);
  void throw_if_failed();
  void end_copy();

  pg::Connection conn_;
  std::unordered_map<std::string, std::string> prepared_;  // key -> statement name
  uint64_t next_statement_ = 1;
  std::deque<Pending> expected_;
  bool failed_ = false;
  bool throwing_ = false;  // inside throw_if_failed: the rollback's own reads must not recurse
  bool defer_failures_ = false;
  bool confirming_ = false;
  Lsn commit_lsn_ = 0;  // for statements sent before their transaction's commit LSN was known
  uint64_t sent_ = 0;    // statements and COPYs sent
  std::string failure_;
  std::string failure_state_;
  ChangeContext failure_context_;
  uint64_t failure_seq_ = 0;
  std::string hand_origin_;  // non-empty: the origin each commit takes and gives back
  std::function<void()> before_wait_;
  // The COPY left open by copy_rows: its statement, its first batch's context, batches sent.
  bool copy_open_ = false;
  std::string copy_sql_;
  ChangeContext copy_context_;
  size_t copy_batches_ = 0;
  uint64_t copy_seq_ = 0;
};

}  // namespace dts::apply

#endif
