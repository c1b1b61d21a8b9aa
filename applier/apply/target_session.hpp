// One connection to the target in libpq pipeline mode: statements are sent without waiting
// for their results, which are read back later, in order, against what each was expected to
// do. A rejected change becomes an Error(kApply) naming the table, key, LSN and SQLSTATE.
#ifndef DTS_APPLIER_APPLY_TARGET_SESSION_HPP
#define DTS_APPLIER_APPLY_TARGET_SESSION_HPP

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "apply/params.hpp"
#include "common/lsn.hpp"
#include "pg/connection.hpp"

namespace dts::apply {

// Where a statement came from, for the error message if the target rejects it.
struct ChangeContext {
  std::string table;  // qualified name
  std::string key;    // "(id)=(42)" or ""
  Lsn lsn = 0;        // the source transaction's commit LSN
  const char* action = "";
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

  // Queues a statement. `sql` is only called the first time `key` is seen (it is prepared
  // then and reused). expect_one_row: an UPDATE or DELETE must change exactly one row.
  void execute(const std::string& key, const std::function<std::string()>& sql, const std::vector<uint32_t>& types,
               const ParamSet& params, ChangeContext context, bool expect_one_row);
  // The same with the parameters given as arrays (a slice of a larger ParamSet).
  void execute(const std::string& key, const std::function<std::string()>& sql, const std::vector<uint32_t>& types,
               int nparams, const char* const* values, const int* lengths, const int* formats, ChangeContext context,
               bool expect_one_row, size_t expected_rows = 1);
  void execute_simple(const std::string& sql, ChangeContext context);  // no parameters, not prepared
  // Runs COPY ... FROM STDIN (FORMAT binary) with `data` (a whole binary COPY stream), waiting
  // for the statements before it: leaves pipeline mode for the COPY and comes back.
  void copy_in(const std::string& copy_sql, const std::string& data, const ChangeContext& context);
  // Ends a transaction: record the origin's progress, COMMIT and sync. on_done runs when the
  // server confirms the commit.
  void commit(Lsn origin_lsn, int64_t origin_time, std::function<void()> on_done);
  void rollback();

  // Reads results until at most `max_pending` statements are unread (0: wait for all).
  void drain(size_t max_pending = 0);
  // Reads the results that have already arrived, without waiting.
  void poll();
  size_t pending() const { return expected_.size(); }

 private:
  enum class Expect { kPrepare, kCommand, kOneRow, kOriginSetup, kCommit, kSync };
  struct Pending {
    Expect expect;
    ChangeContext context;
    std::function<void()> on_done;
    size_t rows = 1;  // kOneRow: how many rows the statement must change
  };
  void send_check(int ok, const char* doing);
  void handle_result(PGresult* r, Pending& p);
  [[noreturn]] void fail(const Pending& p, const std::string& msg, const std::string& state);
  void flush_request();
  void read_one();

  pg::Connection conn_;
  std::unordered_map<std::string, std::string> prepared_;  // key -> statement name
  uint64_t next_statement_ = 1;
  std::deque<Pending> expected_;
  bool failed_ = false;
  std::string failure_;
  std::string failure_state_;
  ChangeContext failure_context_;
};

}  // namespace dts::apply

#endif
