#include "apply/target_session.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"

namespace dts::apply {
namespace {

// Unread results allowed before we stop sending and read: bounded so neither side's socket
// buffer fills up while the other waits.
constexpr size_t kDrainAt = 2048;

constexpr uint32_t kPgLsnOid = 3220;
constexpr uint32_t kTimestampTzOid = 1184;

void put_be64(char* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

std::string trimmed(const char* s) {
  std::string m = s != nullptr ? s : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

}  // namespace

TargetSession::TargetSession(const std::string& conninfo, const std::string& client_encoding)
    : conn_(pg::Connection::open(conninfo, "target")) {
  conn_.exec("SET session_replication_role = replica");
  conn_.exec("SET synchronous_commit = off");
  conn_.exec("SET client_encoding = " + quote_literal(client_encoding));
  if (PQenterPipelineMode(conn_.get()) != 1)
    throw Error(ErrorKind::kConnection, "could not enter pipeline mode on the target: " + conn_.error_message());
}

void TargetSession::send_check(int ok, const char* doing) {
  if (ok == 1) return;
  ErrorKind kind = conn_.is_ok() ? ErrorKind::kInternal : ErrorKind::kConnection;
  throw Error(kind, std::string("could not send ") + doing + " to the target: " + conn_.error_message());
}

void TargetSession::setup_origin(const std::string& origin) {
  drain(0);
  PQexitPipelineMode(conn_.get());
  // The origin exists (follow creates it before the engine starts). A session of an applier
  // that was just killed may still hold it until its backend notices the closed connection
  // and exits: wait for that, not long.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    try {
      conn_.exec_params("SELECT pg_replication_origin_session_setup($1)", {origin});
      break;
    } catch (const Error& e) {
      bool busy = e.sqlstate() == "55006";  // object_in_use
      if (!busy || std::chrono::steady_clock::now() > deadline)
        throw Error(busy ? ErrorKind::kConfig : e.kind(),
                    std::string(e.what()) + (busy ? "; another dts_applier is applying into origin \"" + origin +
                                                        "\": stop it first"
                                                  : ""),
                    e.sqlstate());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  PQenterPipelineMode(conn_.get());
}

void TargetSession::reset_origin() {
  drain(0);
  PQexitPipelineMode(conn_.get());
  conn_.exec("SELECT pg_replication_origin_session_reset()");
  PQenterPipelineMode(conn_.get());
}

void TargetSession::hand_origin(const std::string& origin) {
  hand_origin_ = origin;
  drain(0);
  PQexitPipelineMode(conn_.get());
  conn_.exec("SET lock_timeout = '5s'");
  PQenterPipelineMode(conn_.get());
}

void TargetSession::send_origin_call(const char* sql, Lsn origin_lsn) {
  const char* values[1] = {hand_origin_.c_str()};
  int nparams = std::strchr(sql, '$') != nullptr ? 1 : 0;
  send_check(PQsendQueryParams(conn_.get(), sql, nparams, nullptr, values, nullptr, nullptr, 0), "the origin");
  expect(Pending{Expect::kCommand, ChangeContext{"", "", origin_lsn, "COMMIT"}, nullptr});
}

void TargetSession::flush_request() {
  end_copy();
  send_check(PQsendFlushRequest(conn_.get()), "a flush request");
  if (PQflush(conn_.get()) < 0) send_check(0, "pending statements");
}

void TargetSession::execute(const std::string& key, const std::function<std::string()>& sql,
                            const std::vector<uint32_t>& types, const ParamSet& params, ChangeContext context,
                            bool expect_one_row) {
  execute(key, sql, types, params.size(), params.values(), params.lengths(), params.formats(), std::move(context),
          expect_one_row);
}

void TargetSession::copy_rows(const std::string& copy_sql, const std::string& rows, const ChangeContext& context) {
  if (copy_open_ && copy_sql != copy_sql_) end_copy();
  if (!copy_open_) {
    if (before_wait_) before_wait_();  // the COPY itself may wait for a lock
    drain(0);
    if (failed_) return;  // a refusal held for a streamed transaction's commit: nothing more applies
    if (PQexitPipelineMode(conn_.get()) != 1)
      throw Error(ErrorKind::kInternal, "could not leave pipeline mode for COPY on the target: " + conn_.error_message());
    copy_seq_ = ++sent_;
    pg::Result r(PQexec(conn_.get(), copy_sql.c_str()));
    if (PQresultStatus(r.get()) != PGRES_COPY_IN) {
      if (!conn_.is_ok() || pg::session_ended(r.get())) throw Error(ErrorKind::kConnection, "lost the connection to the target: " + conn_.error_message());
      PQenterPipelineMode(conn_.get());
      hold_failure(trimmed(PQresultErrorMessage(r.get())), pg::sqlstate(r.get()), context, copy_seq_);
      throw_if_failed();
      return;
    }
    copy_open_ = true;
    copy_sql_ = copy_sql;
    copy_context_ = context;
    copy_batches_ = 0;
    const std::string& header = binary_copy_header();
    if (PQputCopyData(conn_.get(), header.data(), static_cast<int>(header.size())) != 1)
      throw Error(ErrorKind::kConnection, "lost the connection to the target during COPY: " + conn_.error_message());
  }
  copy_batches_++;
  copy_context_.lsn = std::min(copy_context_.lsn, context.lsn);  // merged rows come in key order
  copy_context_.last_lsn = std::max({copy_context_.last_lsn, context.lsn, context.last_lsn});
  if (PQputCopyData(conn_.get(), rows.data(), static_cast<int>(rows.size())) != 1)
    throw Error(ErrorKind::kConnection, "lost the connection to the target during COPY: " + conn_.error_message());
}

void TargetSession::end_copy() {
  if (!copy_open_) return;
  copy_open_ = false;
  const std::string& trailer = binary_copy_trailer();
  if (PQputCopyData(conn_.get(), trailer.data(), static_cast<int>(trailer.size())) != 1 ||
      PQputCopyEnd(conn_.get(), nullptr) != 1)
    throw Error(ErrorKind::kConnection, "lost the connection to the target during COPY: " + conn_.error_message());
  pg::Result done(PQgetResult(conn_.get()));
  std::string msg = done ? trimmed(PQresultErrorMessage(done.get())) : conn_.error_message();
  std::string state = pg::sqlstate(done.get());
  bool ok = done && PQresultStatus(done.get()) == PGRES_COMMAND_OK;
  bool ended = done && pg::session_ended(done.get());
  while (PGresult* more = PQgetResult(conn_.get())) PQclear(more);
  if (!ok && (!conn_.is_ok() || ended)) throw Error(ErrorKind::kConnection, "lost the connection to the target: " + msg);
  // Back in pipeline mode either way: a refusal leaves the transaction to roll back (discard).
  PQenterPipelineMode(conn_.get());
  if (ok) return;
  // Reported as a refused statement is: at once, or in a streamed transaction at its commit
  // (with that commit's LSN) or never if the source aborts it.
  ChangeContext at = copy_context_;
  if (copy_batches_ > 1) at.key += " and the " + std::to_string(copy_batches_ - 1) + " batches sent after it in the same COPY";
  hold_failure(msg, state, at, copy_seq_);
  throw_if_failed();
}

void TargetSession::hold_failure(std::string msg, std::string state, const ChangeContext& context, uint64_t seq) {
  if (failed_) return;
  failed_ = true;
  failure_seq_ = seq;
  failure_ = std::move(msg);
  failure_state_ = std::move(state);
  failure_context_ = context;
}

void TargetSession::execute(const std::string& key, const std::function<std::string()>& sql,
                            const std::vector<uint32_t>& types, int nparams, const char* const* values,
                            const int* lengths, const int* formats, ChangeContext context, bool expect_one_row,
                            size_t expected_rows) {
  end_copy();
  auto it = prepared_.find(key);
  if (it == prepared_.end()) {
    std::string name = "dts_" + std::to_string(next_statement_++);
    std::string text = sql();
    send_check(PQsendPrepare(conn_.get(), name.c_str(), text.c_str(), static_cast<int>(types.size()),
                             reinterpret_cast<const Oid*>(types.data())),
               "a statement");
    expect(Pending{Expect::kPrepare, context, nullptr});
    it = prepared_.emplace(key, std::move(name)).first;
  }
  send_check(PQsendQueryPrepared(conn_.get(), it->second.c_str(), nparams, values, lengths, formats, 0), "a change");
  expect(Pending{expect_one_row ? Expect::kOneRow : Expect::kCommand, std::move(context), nullptr, expected_rows});
  if (expected_.size() >= kDrainAt) {
    flush_request();
    drain(kDrainAt / 2);
  }
}

void TargetSession::execute_simple(const std::string& sql, ChangeContext context) {
  end_copy();
  send_check(PQsendQueryParams(conn_.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0), "a statement");
  expect(Pending{Expect::kCommand, std::move(context), nullptr});
}

void TargetSession::commit(Lsn origin_lsn, int64_t origin_time, std::function<void()> on_done) {
  // The origin may only advance in a commit whose every statement was confirmed: read every
  // result (row counts included) before the origin and COMMIT are even sent. One round trip
  // per group; a refusal rolls the whole group back and throws.
  confirm();
  static const std::string kOriginKey = "\x01origin_xact_setup";
  ParamSet none;
  auto it = prepared_.find(kOriginKey);
  if (it == prepared_.end()) {
    const Oid types[2] = {kPgLsnOid, kTimestampTzOid};
    // pg_current_xact_id(): a transaction without an xid writes no commit record, and only the
    // commit record moves the origin; a group of source transactions that changed nothing here
    // (a marker, filtered tables) must still record its progress.
    send_check(PQsendPrepare(conn_.get(), "dts_origin",
                             "SELECT pg_replication_origin_xact_setup($1, $2), pg_current_xact_id()", 2, types),
               "the origin statement");
    expect(Pending{Expect::kPrepare, ChangeContext{"", "", origin_lsn, "COMMIT"}, nullptr});
    it = prepared_.emplace(kOriginKey, "dts_origin").first;
  }
  if (!hand_origin_.empty()) send_origin_call("SELECT pg_replication_origin_session_setup($1)", origin_lsn);
  char lsn[8], ts[8];
  put_be64(lsn, origin_lsn);
  put_be64(ts, static_cast<uint64_t>(origin_time));
  const char* values[2] = {lsn, ts};
  const int lengths[2] = {8, 8};
  const int formats[2] = {1, 1};
  send_check(PQsendQueryPrepared(conn_.get(), "dts_origin", 2, values, lengths, formats, 0), "the origin progress");
  expect(Pending{Expect::kOriginSetup, ChangeContext{"", "", origin_lsn, "COMMIT"}, nullptr});
  send_check(PQsendQueryParams(conn_.get(), "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0), "COMMIT");
  expect(Pending{Expect::kCommit, ChangeContext{"", "", origin_lsn, "COMMIT"}, std::move(on_done)});
  if (!hand_origin_.empty()) send_origin_call("SELECT pg_replication_origin_session_reset()", origin_lsn);
  send_check(PQpipelineSync(conn_.get()), "a sync");
  expect(Pending{Expect::kSync, ChangeContext{}, nullptr});
}

void TargetSession::confirm() {
  confirming_ = true;
  try {
    drain(0);
  } catch (...) {
    confirming_ = false;
    throw;
  }
  confirming_ = false;
}

void TargetSession::abandon_failed_transaction() {
  // An error aborts the pipeline until its sync, and leaves an explicit transaction block
  // failed after it: end the pipeline, then roll the block back. A row-count refusal left the
  // pipeline running, and the same sequence rolls it back as well.
  send_check(PQpipelineSync(conn_.get()), "a sync");
  expect(Pending{Expect::kSync, ChangeContext{}, nullptr});
  send_check(PQsendQueryParams(conn_.get(), "ROLLBACK", 0, nullptr, nullptr, nullptr, nullptr, 0), "ROLLBACK");
  expect(Pending{Expect::kCommand, ChangeContext{"", "", 0, "ROLLBACK"}, nullptr});
  send_check(PQpipelineSync(conn_.get()), "a sync");
  expect(Pending{Expect::kSync, ChangeContext{}, nullptr});
  while (!expected_.empty()) read_one();
}

void TargetSession::throw_if_failed() {
  if (!failed_ || throwing_ || (defer_failures_ && !confirming_)) return;
  throwing_ = true;
  try {
    abandon_failed_transaction();
  } catch (...) {
    throwing_ = false;
    failed_ = false;
    throw;
  }
  throwing_ = false;
  failed_ = false;
  Pending at{Expect::kCommand, failure_context_, nullptr};
  if (failure_context_.probe) {
    std::string keys = missing_keys(*failure_context_.probe, at.context.lsn);
    if (!keys.empty()) {
      at.context.key = keys;
      failure_ = "no row matches it on the target (the target differs from the source)";
    }
  }
  fail(at, failure_, failure_state_);
}

std::string TargetSession::missing_keys(const KeyProbe& probe, Lsn& lsn) {
  // Only once the transaction is rolled back, outside the pipeline: one lookup per key sent.
  if (PQexitPipelineMode(conn_.get()) != 1) return "";
  std::string out;
  size_t found = 0;
  size_t ncols = probe.columns.size();
  std::vector<const char*> values(ncols);
  std::vector<int> lengths(ncols);
  for (size_t r = 0; r < probe.rows && found < 5; ++r) {
    for (size_t c = 0; c < ncols; ++c) {
      values[c] = probe.values[r * ncols + c].data();
      lengths[c] = static_cast<int>(probe.values[r * ncols + c].size());
    }
    pg::Result res(PQexecParams(conn_.get(), probe.select_sql.c_str(), static_cast<int>(ncols),
                                reinterpret_cast<const Oid*>(probe.types.data()), values.data(), lengths.data(),
                                probe.formats.data() + r * ncols, 0));
    if (PQresultStatus(res.get()) != PGRES_TUPLES_OK) break;
    if (PQntuples(res.get()) > 0) continue;
    if (found == 0) lsn = probe.lsns[r];
    std::string names = "(", vals = "(";
    for (size_t c = 0; c < ncols; ++c) {
      names += (c > 0 ? ", " : "") + quote_ident(probe.columns[c].name);
      vals += (c > 0 ? ", " : "") + describe_param(probe.columns[c], values[c], lengths[c], probe.formats[r * ncols + c]);
    }
    out += (found++ > 0 ? ", " : "") + names + ")=" + vals + ")";
  }
  PQenterPipelineMode(conn_.get());
  return out;
}

void TargetSession::discard() {
  try {
    end_copy();
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kApply) throw;  // a refused row of a transaction being thrown away
  }
  if (!expected_.empty() && expected_.back().expect != Expect::kSync) flush_request();
  while (!expected_.empty()) read_one();
  abandon_failed_transaction();
  failed_ = false;
}

void TargetSession::rollback() {
  end_copy();
  send_check(PQsendQueryParams(conn_.get(), "ROLLBACK", 0, nullptr, nullptr, nullptr, nullptr, 0), "ROLLBACK");
  expect(Pending{Expect::kCommand, ChangeContext{"", "", 0, "ROLLBACK"}, nullptr});
  send_check(PQpipelineSync(conn_.get()), "a sync");
  expect(Pending{Expect::kSync, ChangeContext{}, nullptr});
}

void TargetSession::fail(const Pending& p, const std::string& msg, const std::string& state) {
  std::string where;
  if (std::string_view(p.context.action) == "the schema change") {
    where = "the schema change `" + p.context.table + "`";
  } else if (!p.context.table.empty()) {
    where = std::string(p.context.action) + " on " + p.context.table;
    if (!p.context.key.empty()) where += " key " + p.context.key;
  } else {
    where = p.context.action[0] != '\0' ? p.context.action : "a statement";
  }
  Lsn first = p.context.lsn != 0 ? p.context.lsn : commit_lsn_;
  std::string when = p.context.last_lsn > first
                         ? "source transactions committed at " + format_lsn(first) + " to " + format_lsn(p.context.last_lsn)
                         : "source transaction committed at " + format_lsn(first);
  throw Error(ErrorKind::kApply,
              "the target rejected " + where + " (" + when + "): " + msg + (state.empty() ? "" : " (SQLSTATE " + state + ")") +
                  "; nothing of its group was committed and the origin did not move: fix the target and run "
                  "again to apply it",
              state);
}

void TargetSession::handle_result(PGresult* r, Pending& p) {
  ExecStatusType st = PQresultStatus(r);
  if (st == PGRES_PIPELINE_ABORTED) return;  // an earlier statement failed; reported at the sync
  if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR) {
    if (!conn_.is_ok() || pg::session_ended(r))
      throw Error(ErrorKind::kConnection, "lost the connection to the target: " + trimmed(PQresultErrorMessage(r)));
    hold_failure(trimmed(PQresultErrorMessage(r)), pg::sqlstate(r), p.context, p.seq);
    return;
  }
  if (p.expect == Expect::kOneRow) {
    // An UPDATE or DELETE that found no row: the target lacks a row the source had. Checked as
    // results arrive (a guard inside the statement cost 18% of apply speed); commit() reads
    // them all before it sends the origin and COMMIT, so the group is rolled back instead.
    const char* n = PQcmdTuples(r);
    size_t changed = n != nullptr ? std::strtoull(n, nullptr, 10) : 0;
    if (changed != p.rows)
      hold_failure(p.rows == 1 ? "no row matches it on the target (the target differs from the source)"
                               : std::to_string(p.rows - changed) + " of its " + std::to_string(p.rows) +
                                     " rows have no match on the target (the target differs from the source)",
                   "02000", p.context, p.seq);  // SQL's "no data": what an UPDATE or DELETE that matched nothing reports
    return;
  }
  if ((p.expect == Expect::kCommit || p.expect == Expect::kRollbackTo) && p.on_done) p.on_done();
}

void TargetSession::expect(Pending p) {
  p.seq = ++sent_;
  expected_.push_back(std::move(p));
}

uint64_t TargetSession::savepoint(const std::string& name) {
  execute_simple("SAVEPOINT " + name, ChangeContext{"", "", 0, "SAVEPOINT"});
  return sent_;
}

void TargetSession::rollback_to(const std::string& name, uint64_t mark) {
  end_copy();
  // A sync first: an error after the savepoint aborted the pipeline up to the next one, which
  // would skip the rollback too. A refusal held since the savepoint went with the changes the
  // source aborted; one from before it stays.
  send_check(PQpipelineSync(conn_.get()), "a sync");
  expect(Pending{Expect::kSync, ChangeContext{}, nullptr});
  std::string sql = "ROLLBACK TO SAVEPOINT " + name;
  send_check(PQsendQueryParams(conn_.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0), "a statement");
  expect(Pending{Expect::kRollbackTo, ChangeContext{"", "", 0, "ROLLBACK TO SAVEPOINT"}, [this, mark] {
                   if (failed_ && failure_seq_ > mark) failed_ = false;
                 }});
}

void TargetSession::drain(size_t max_pending) {
  end_copy();
  if (expected_.size() > max_pending && before_wait_) before_wait_();
  if (expected_.size() > max_pending && expected_.back().expect != Expect::kSync) flush_request();
  while (expected_.size() > max_pending) read_one();
  throw_if_failed();
}

void TargetSession::poll() {
  if (expected_.empty() || copy_open_) return;  // an open COPY has no result before its end
  if (PQflush(conn_.get()) < 0 || PQconsumeInput(conn_.get()) == 0)
    throw Error(ErrorKind::kConnection, "lost the connection to the target: " + conn_.error_message());
  while (!expected_.empty() && PQisBusy(conn_.get()) == 0) read_one();
  throw_if_failed();
}

void TargetSession::read_one() {
  Pending p = std::move(expected_.front());
  expected_.pop_front();
  PGresult* r = PQgetResult(conn_.get());
  if (r == nullptr) {
    if (!conn_.is_ok()) throw Error(ErrorKind::kConnection, "lost the connection to the target: " + conn_.error_message());
    throw Error(ErrorKind::kInternal, "the target's results are out of step with the statements sent");
  }
  if (p.expect == Expect::kSync) {
    ExecStatusType st = PQresultStatus(r);
    std::string msg = trimmed(PQresultErrorMessage(r));
    bool ended = pg::session_ended(r);
    PQclear(r);
    if (st != PGRES_PIPELINE_SYNC) {
      if (!conn_.is_ok() || ended) throw Error(ErrorKind::kConnection, "lost the connection to the target: " + msg);
      throw Error(ErrorKind::kInternal, "expected the end of a pipeline from the target, got: " + msg);
    }
    return;  // a failure before it is reported by throw_if_failed, once the transaction is rolled back
  }
  handle_result(r, p);
  PQclear(r);
  // Each statement's results end with a NULL.
  PGresult* end = PQgetResult(conn_.get());
  if (end != nullptr) {
    PQclear(end);
    throw Error(ErrorKind::kInternal, "the target sent more results than expected");
  }
}

}  // namespace dts::apply
