#include "apply/apply_engine.hpp"

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "apply/relation_plan.hpp"
#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "dts/protocol.h"

namespace dts::apply {
namespace proto = dts::protocol;

namespace {

// Rows of one INSERT statement (PostgreSQL takes at most 65535 parameters).
constexpr size_t kInsertRows = 100;
// A run of inserts this long goes by binary COPY when every value can (COPY's insert path is
// much cheaper than INSERT statements for a large transaction).
constexpr size_t kCopyRows = 5000;

// Large transactions applied as they stream in, each on a target connection of its own; more
// at once are spooled to disk until they commit (connections stay bounded whatever the load).
constexpr size_t kLiveStreams = 8;
// Merged row images held before they are written out: bounds memory inside one huge source
// transaction (a row merged again after that is simply written again).
constexpr size_t kCoalescedRows = 20000;

std::string savepoint_name(uint32_t subxid) { return "dts_sub_" + std::to_string(subxid); }

}  // namespace

// A large transaction being applied as it streams in.
struct ApplyEngine::Streamed {
  std::unique_ptr<TargetSession> session;  // applied as it arrives, or
  std::unique_ptr<SpoolFile> spool;        // kept on disk until its commit
  // Subtransactions, in the order their savepoints were made, with the session's mark for each.
  std::vector<std::pair<uint32_t, uint64_t>> savepoints;
  bool schema_changed = false;  // a schema change applied in it, uncommitted
};

ApplyEngine::ApplyEngine(std::string target_conninfo, std::string client_encoding, std::string origin, Lsn resume_lsn,
                         core::CommitPolicy policy, size_t workers, Lsn serial_until, ParallelState* parallel)
    : target_conninfo_(std::move(target_conninfo)),
      client_encoding_(std::move(client_encoding)),
      origin_(std::move(origin)),
      serial_until_(serial_until),
      parallel_state_(parallel),
      resume_lsn_(resume_lsn),
      policy_(policy) {
  SpoolDirectory::remove_orphans();
  catalog_ = pg::Connection::open(target_conninfo_, "target");
  open_lanes(workers);
  stats_.applied_lsn = resume_lsn;
}

ApplyEngine::~ApplyEngine() = default;

void ApplyEngine::reconcile_with_copy(const std::string& slot, const std::string& source) {
  source_conninfo_ = source;
  reconciler_.load(catalog_, slot, resume_lsn_);
  if (reconciler_.active()) spdlog::info("reconciling the stream with the chunks of the copy");
}

std::unique_ptr<TargetSession> ApplyEngine::new_session() {
  return std::make_unique<TargetSession>(target_conninfo_, client_encoding_);
}

ApplyEngine::RelationPlan& ApplyEngine::plan_for(const decode::Relation& rel) {
  auto& plan = plans_[rel.relid];
  if (!plan || plan->version != rel.version) {
    plan = std::make_unique<RelationPlan>();
    plan->version = rel.version;
    plan->qualified = qualified_name(rel);
    plan->key_prefix = std::to_string(rel.relid) + ":" + std::to_string(rel.version) + ":";
    plan->copyable = true;
    std::string cols;
    for (const auto& c : rel.columns) {
      plan->types.push_back(param_type_for(c));
      plan->copyable = plan->copyable && binary_copy_type(c.type_oid);
      cols += (cols.empty() ? "" : ", ") + quote_ident(c.name);
    }
    // No column (none, or only generated ones): `COPY t ()` is a syntax error; no list is the same.
    plan->copy_sql = "COPY " + plan->qualified + (cols.empty() ? "" : " (" + cols + ")") + " FROM STDIN (FORMAT binary)";
  }
  return *plan;
}

TargetSession& ApplyEngine::current_session() {
  // A spooled stream block has no session: what is sent meanwhile (merged rows of the group,
  // written out on a quiet moment) belongs to the main session.
  if (current_stream_ != nullptr && current_stream_->session) return *current_stream_->session;
  finish_commit();
  ensure_main_transaction();
  return main();
}

void ApplyEngine::ensure_main_transaction() {
  group_open_ = true;
  if (lane().open) return;
  main().execute_simple("BEGIN", ChangeContext{"", "", txn_commit_lsn_, "BEGIN"});
  lane().open = true;
}

ApplyStats ApplyEngine::stats() const {
  ApplyStats s = stats_;
  s.spooled_transactions = spool_dir_.files_created;
  s.spool_peak_bytes = spool_dir_.peak_bytes;
  if (!parallel()) return s;
  for (size_t i = 0; i < lanes_.size(); ++i) {
    const Lane& l = lanes_[i];
    core::LaneActivity a;
    a.unconfirmed = l.session->pending();
    if (l.pending) {
      a.state = a.unconfirmed > 0 ? "applying" : "committing";
      a.group_end_lsn = l.pending->end_lsn;
    } else if (i == lane_ && group_open_) {
      a.state = "building";
      a.group_end_lsn = group_end_lsn_;
    }
    s.lanes.push_back(a);
  }
  return s;
}

// The group's statements go out now; its origin and COMMIT once they are all confirmed (see
// finish_commit), which overlaps the target's work on this group with decoding the next one.
void ApplyEngine::commit_group() {
  finish_commit();  // the previous group's, waiting for its results if they are not all in
  flush_coalesced(coalesced_.take_all());
  flush_held();
  if (!group_open_ || in_source_txn_) return;
  Lane& l = lane();
  bool queued = false;
  if (group_txns_ == 0) {  // only skipped transactions: nothing to record
    if (l.open) l.session->rollback();
    if (!l.pending) l.keys.clear();
  } else {
    ensure_main_transaction();  // a group that changed nothing here still records its progress
    l.session->flush();
    l.pending = PendingCommit{group_end_lsn_, group_commit_time_, group_txns_};
    commit_order_.push_back(lane_);
    queued = true;
  }
  group_open_ = false;
  l.open = false;
  group_txns_ = 0;
  group_changes_ = 0;
  group_direct_updates_ = 0;
  if (queued) next_lane();
}

// Sends the commits of the groups pending up to the current lane's (one lane: the previous
// group's), then what of the current group waited for it. A refusal throws with nothing of
// the refused group committed.
void ApplyEngine::finish_commit() {
  while (lane().pending) finish_oldest();
}

// Everything before this point committed on the target, and confirmed.
void ApplyEngine::commit_and_wait() {
  commit_group();
  finish_all_commits();
  drain_lanes();
}

void ApplyEngine::sync() {
  finish_all_commits();
  drain_lanes();
  for (auto& [xid, s] : streams_)
    if (s->session) s->session->drain(0);
}

void ApplyEngine::poll() {
  for (Lane& l : lanes_) l.session->poll();
  // The oldest groups whose every result is in commit without waiting.
  while (!commit_order_.empty() && lanes_[commit_order_.front()].session->pending() == 0) finish_oldest();
  for (auto& [xid, s] : streams_)
    if (s->session) s->session->poll();
}

bool ApplyEngine::idle() const {
  bool lanes_idle = std::all_of(lanes_.begin(), lanes_.end(), [](const Lane& l) { return l.session->pending() == 0; });
  return !in_source_txn_ && !group_open_ && commit_order_.empty() && deferred_inserts_.empty() && stream_xid_ == 0 &&
         streams_.empty() && lanes_idle && batch_.rows == 0 && set_batch_.empty();
}

void ApplyEngine::on_begin(uint32_t xid, Lsn final_lsn, int64_t) {
  in_source_txn_ = true;
  txn_commit_lsn_ = final_lsn;
  if (reconciler_.active()) {
    reconciler_.begin(xid, final_lsn);
    if (!reconciler_.active())
      spdlog::info("the stream is past every chunk of the copy: {} changes were already in their chunks, {} "
                   "rows were read again from the source", changes_in_copy_, rows_read_again_);
  }
  // Applied before a restart: the origin's progress is past it. (The server skips such
  // transactions when we start from that progress; this guards the overlap anyway.)
  skipping_ = final_lsn < resume_lsn_;
}

void ApplyEngine::on_commit(Lsn, Lsn end_lsn, int64_t commit_time) {
  in_source_txn_ = false;
  forget_schema_state(0);
  bool schema_changed = std::exchange(schema_changed_, false);
  if (skipping_) {
    skipping_ = false;
    return;
  }
  // Inserts stay batched across the group's transactions (an append-only table written by
  // every small transaction, pgbench's history: one COPY per group instead of one INSERT per
  // transaction; anything but another insert into the same table sends them first, so the
  // order of statements is the source's). A refused batch names the range of transactions
  // it holds rows of. Set-based UPDATEs and DELETEs stay within their transaction.
  flush_set_batch();
  add_to_group(end_lsn, commit_time);
  // A schema change ends its group: what it made (an enum's new value) may be used only once
  // committed, and its locks go with the commit; no later group runs before that commit.
  if (policy_.full(group_txns_, group_changes_, group_direct_updates_ > 0) || schema_changed) commit_group();
  if (schema_changed) finish_all_commits();
}

void ApplyEngine::add_to_group(Lsn end_lsn, int64_t commit_time) {
  // A transaction with nothing to change on the target still moves the progress: the group's
  // commit records it (if nothing else, as a target transaction that only sets the origin).
  group_open_ = true;
  group_txns_++;
  group_end_lsn_ = end_lsn;
  group_commit_time_ = commit_time;
  if (parallel_state_ != nullptr) parallel_state_->seen_lsn = std::max(parallel_state_->seen_lsn, end_lsn);
}

void ApplyEngine::on_origin(std::string_view, Lsn) {}

void ApplyEngine::on_record(uint8_t version, std::string_view raw) {
  record_version_ = version;
  record_ = raw;
}

ApplyEngine::Streamed* ApplyEngine::spooling() {
  return current_stream_ != nullptr && current_stream_->spool ? current_stream_ : nullptr;
}

void ApplyEngine::on_relation(const decode::Relation& relation) {
  // Rows of the new shape need statements of their own; pending rows used the old shape. The
  // same shape sent again (the source's cache was invalidated) keeps its statements, but what
  // the target has besides the key is asked again.
  auto plan = plans_.find(relation.relid);
  if (plan != plans_.end()) plan->second->facts_asked = false;
  // Held rows point at the old shape, which goes once this returns: they are written out now.
  flush_coalesced_of(relation.relid);
  if (!set_batch_.empty() && set_batch_.shape().relation->relid == relation.relid) flush_set_batch();
  if (batch_.relation != nullptr && batch_.relation->relid == relation.relid) flush_inserts();
  // Writing them out while a group awaits its commit holds the inserts back (flush_inserts),
  // still pointing at the old shape: that commit goes first, and they after it. (Done the
  // other way round, merged rows of a relation sent again mid-group were held with a pointer
  // to a freed shape: a crash under a backlog of small transactions when autovacuum made the
  // source send a table's relation again.)
  if (!deferred_inserts_.empty()) finish_commit();
}

bool ApplyEngine::coalescable(const decode::Relation& rel) {
  if (rel.key_columns.empty() || rel.identity == proto::ReplicaIdentity::kFull) return false;
  return ask_target_facts(rel).coalesce;
}

void ApplyEngine::flush_coalesced_of(uint32_t relid) {
  if (coalesced_.has(relid)) flush_coalesced(coalesced_.take(relid));
}

std::string ApplyEngine::describe_key(const decode::Relation& rel, const decode::Values& values, bool key_only) const {
  if (rel.key_columns.empty()) return "";
  std::string names = "(", vals = "(";
  for (size_t i = 0; i < rel.key_columns.size(); ++i) {
    size_t col = rel.key_columns[i];
    const proto::Value& v = key_only ? values[i] : values[col];
    if (i > 0) {
      names += ", ";
      vals += ", ";
    }
    names += quote_ident(rel.columns[col].name);
    vals += describe_value(rel.columns[col], v);
  }
  return names + ")=" + vals + ")";
}

void ApplyEngine::on_row(const decode::RowChange& row) {
  if (skipping_) return;
  if (Streamed* s = spooling()) {
    s->spool->append_relation(row.relation->relid, row.relation->version, row.relation->raw);
    s->spool->append(record_);
    return;
  }
  if (!creating_as_.empty() && creating_as_of(*row.relation)) return;  // copied once it exists (apply_schema_change.cpp)
  if (reconciler_.active() && reconcile_row(row)) return;
  apply_row(row);
}

// A change of a table copied in chunks: skipped if its chunk already holds it; an UPDATE that
// moves a row between two chunks that disagree becomes the half that is missing.
bool ApplyEngine::reconcile_row(const decode::RowChange& row) {
  switch (reconciler_.fate(row)) {
    case RowFate::kApply: return false;
    case RowFate::kSkip: break;
    case RowFate::kDeleteOld:
      apply_row(decode::RowChange{decode::RowKind::kDelete, row.relation, row.old_kind, row.old_values, nullptr});
      break;
    case RowFate::kInsertNew:
      apply_row(decode::RowChange{decode::RowKind::kInsert, row.relation, proto::OldTuple::kNone, nullptr,
                                  row.new_values});
      break;
    case RowFate::kReadNew: read_row_again(row); break;
    case RowFate::kWait:
      // A chunk being copied again is read in a snapshot that does not see this change: it is
      // applied once the chunk's rows are written (nothing here holds a lock in its range).
      finish_all_commits();
      reconciler_.wait_for_chunk();
      return reconcile_row(row);
  }
  changes_in_copy_++;
  return true;
}

// The row an UPDATE moved into a chunk that does not hold it, out of one that no longer does,
// without its unchanged large values: nothing here has them, so the row is read again from the
// source as it is now, in a snapshot that from then on decides for its key (a later change
// the snapshot saw is in the row read; one it did not see is applied on top).
void ApplyEngine::read_row_again(const decode::RowChange& row) {
  const decode::Relation& rel = *row.relation;
  std::optional<int64_t> key = reconciler_.new_key(row);
  if (!key) throw Error(ErrorKind::kInternal, "no integer key to read " + qualified_name(rel) + " again by");
  if (!source_) source_ = pg::Connection::open(source_conninfo_, "source");
  pg::Result found = reconciler_.read_row_now(source_, rel, *key);
  rows_read_again_++;
  if (PQntuples(found.get()) == 0) return;  // gone since: a later change the snapshot saw removed it
  decode::Values values(rel.columns.size());
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    if (PQgetisnull(found.get(), 0, static_cast<int>(i))) continue;  // kNull
    values[i].kind = proto::ValueKind::kText;
    values[i].bytes = proto::Bytes{reinterpret_cast<const uint8_t*>(PQgetvalue(found.get(), 0, static_cast<int>(i))),
                                   static_cast<uint32_t>(PQgetlength(found.get(), 0, static_cast<int>(i)))};
  }
  apply_row(decode::RowChange{decode::RowKind::kInsert, &rel, proto::OldTuple::kNone, nullptr, &values});
  flush_held();  // the values point into `found`
}

void ApplyEngine::apply_row(const decode::RowChange& row) {
  stats_.changes++;
  if (stream_xid_ == 0) {
    group_changes_++;
    const decode::Relation& rel = *row.relation;
    bool keeps_key = row.kind == decode::RowKind::kInsert ||
                     (row.kind == decode::RowKind::kUpdate && row.old_kind == proto::OldTuple::kNone);
    bool merged = keeps_key && coalescable(rel);
    if (parallel()) order_row(row, merged);
    if (merged) {
      flush_set_batch();  // merged rows are written later: what came before them goes first
      group_open_ = true;
      coalesced_.add(rel, row.kind == decode::RowKind::kInsert, *row.new_values, txn_commit_lsn_);
      if (coalesced_.rows() >= kCoalescedRows) flush_coalesced(coalesced_.take_all());
      return;
    }
    // Anything else on a table with merged rows pending writes them first, in order.
    flush_coalesced_of(rel.relid);
  }
  switch (row.kind) {
    case decode::RowKind::kInsert: apply_insert(row, txn_commit_lsn_); break;
    case decode::RowKind::kUpdate:
      flush_inserts();
      if (!batch_change(row, txn_commit_lsn_)) {
        flush_set_batch();
        apply_update(row);
      }
      if (stream_xid_ == 0) group_direct_updates_++;
      break;
    case decode::RowKind::kDelete:
      flush_inserts();
      if (!batch_change(row, txn_commit_lsn_)) {
        flush_set_batch();
        apply_delete(row);
      }
      if (stream_xid_ == 0) group_direct_updates_++;
      break;
  }
}

void ApplyEngine::apply_insert(const decode::RowChange& row, Lsn lsn) {
  const decode::Relation& rel = *row.relation;
  const decode::Values& values = *row.new_values;
  flush_set_batch();
  if (batch_.relation != &rel) flush_inserts();
  if (stream_xid_ == 0) group_open_ = true;
  if (batch_.rows == 0) {
    batch_.relation = &rel;
    batch_.first_key = describe_key(rel, values, false);
    batch_.lsn = lsn;
    batch_.last_lsn = lsn;
  }
  // Merged rows come in key order, not commit order.
  batch_.lsn = std::min(batch_.lsn, lsn);
  batch_.last_lsn = std::max(batch_.last_lsn, lsn);
  // Copied: the batch outlives this frame (a large transaction's rows arrive in many frames).
  for (size_t i = 0; i < rel.columns.size(); ++i) batch_.params.add_copy(rel.columns[i], values[i]);
  batch_.rows++;
  size_t max_rows = plan_for(rel).copyable
                        ? kCopyRows
                        : std::max<size_t>(1, std::min(kInsertRows, 65535 / std::max<size_t>(1, rel.columns.size())));
  if (batch_.rows >= max_rows) flush_inserts();
}

void ApplyEngine::flush_held() {
  flush_set_batch();
  flush_inserts();
}

void ApplyEngine::flush_inserts() {
  if (batch_.rows == 0) return;
  if (lane().pending && stream_xid_ == 0) {
    // The main session is still confirming the previous group: hold the rows (they are
    // copies) until its COMMIT is sent.
    deferred_inserts_.push_back(std::move(batch_));
    batch_ = InsertBatch{};
    if (!spare_batches_.empty()) {
      batch_ = std::move(spare_batches_.back());
      spare_batches_.pop_back();
    }
    return;
  }
  send_inserts(current_session(), batch_);
  batch_.rows = 0;
  batch_.relation = nullptr;
  batch_.params.clear();
}

void ApplyEngine::send_inserts(TargetSession& session, InsertBatch& batch) {
  const decode::Relation& rel = *batch.relation;
  RelationPlan& plan = plan_for(rel);
  size_t rows = batch.rows;
  size_t ncols = rel.columns.size();
  std::string where = batch.first_key;
  if (rows > 1 && !rel.key_columns.empty()) {
    // The last row's key, read back from its parameters: one of these rows failed.
    std::vector<size_t> positions;
    for (size_t c : rel.key_columns) positions.push_back((rows - 1) * ncols + c);
    where += " to " + describe_param_key(rel, rel.key_columns, batch.params, positions) + ", " + std::to_string(rows) +
             " rows";
  }
  ChangeContext context{plan.qualified, where, batch.lsn, "INSERT"};
  context.last_lsn = batch.last_lsn;
  if (rows > kInsertRows && plan.copyable && batch.params.all_binary()) {
    session.copy_rows(plan.copy_sql, binary_copy_rows(batch.params, rows, ncols), context);
    return;
  }
  // Multi-row INSERTs of at most kInsertRows rows.
  const char* const* values = batch.params.values();
  const int* lengths = batch.params.lengths();
  const int* formats = batch.params.formats();
  for (size_t done = 0; done < rows;) {
    size_t n = std::min(kInsertRows, rows - done);
    n = std::min(n, std::max<size_t>(1, 65535 / std::max<size_t>(1, ncols)));
    // Its own types: this runs from finish_commit(), which may come between another statement's
    // scratch and its sending.
    std::vector<uint32_t> types;
    types.reserve(n * ncols);
    for (size_t r = 0; r < n; ++r) types.insert(types.end(), plan.types.begin(), plan.types.end());
    size_t at = done * ncols;
    session.execute(plan.key_prefix + "I" + std::to_string(n), [&] { return build_insert(rel, n); }, types,
                    static_cast<int>(n * ncols), values + at, lengths + at, formats + at, context, false);
    done += n;
  }
}

namespace {

[[noreturn]] void no_identity(const decode::Relation& rel, const char* action) {
  throw Error(ErrorKind::kApply, std::string("cannot apply ") + action + " on " + qualified_name(rel) +
                                     ": the source sent no old key because the table has no replica identity "
                                     "(no primary key, or REPLICA IDENTITY NOTHING); on the source, add a primary "
                                     "key or run ALTER TABLE " + qualified_name(rel) + " REPLICA IDENTITY FULL");
}

}  // namespace

void ApplyEngine::apply_update(const decode::RowChange& row) {
  apply_update_values(*row.relation, *row.new_values, row.old_kind, row.old_values, txn_commit_lsn_);
}

void ApplyEngine::apply_update_values(const decode::Relation& rel, const decode::Values& newv,
                                      proto::OldTuple old_kind, const decode::Values* oldv, Lsn lsn) {
  bool full = old_kind == proto::OldTuple::kFull;
  if (!full && rel.key_columns.empty()) no_identity(rel, "an UPDATE");
  RelationPlan& plan = plan_for(rel);

  // Members reused row after row: these ran once per UPDATE and DELETE.
  std::vector<size_t>& set_columns = set_columns_;
  set_columns.clear();
  // A key the source says is unchanged is not set again: an identity column defined as
  // GENERATED ALWAYS (a common key) can only be updated to DEFAULT.
  bool key_unchanged = old_kind == proto::OldTuple::kNone;
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    if (newv[i].kind != proto::ValueKind::kUnchangedToast && !(key_unchanged && rel.columns[i].is_key))
      set_columns.push_back(i);
  }
  // Nothing to set (a table of generated columns only, or every value an unchanged TOAST
  // value): the row stays as it is, and `UPDATE t SET WHERE` would be a syntax error.
  if (set_columns.empty()) return;
  RowMatch& match = match_;
  std::vector<const proto::Value*>& match_values = match_values_;
  if (old_kind == proto::OldTuple::kNone)
    build_match(rel, newv, false, false, match, match_values);  // key unchanged: from the new row
  else
    build_match(rel, *oldv, old_kind == proto::OldTuple::kKey, full, match, match_values);

  TargetSession& session = current_session();  // before the scratch is filled (see update_rows)
  params_.clear();
  types_.clear();
  std::string key = plan.key_prefix + "U";
  for (size_t c : set_columns) {
    params_.add(rel.columns[c], newv[c]);
    types_.push_back(plan.types[c]);
    key += std::to_string(c);
    key += ',';
  }
  key += match_key(match);
  for (size_t i = 0; i < match.columns.size(); ++i) {
    if (match.is_null[i]) continue;
    params_.add(rel.columns[match.columns[i]], *match_values[i]);
    types_.push_back(plan.types[match.columns[i]]);
  }
  std::string where = old_kind == proto::OldTuple::kKey ? describe_key(rel, *oldv, true) : describe_key(rel, newv, false);
  session.execute(
      key, [&] { return build_update(rel, set_columns, match); }, types_, params_,
      ChangeContext{plan.qualified, where, lsn, "UPDATE"}, true);
}

void ApplyEngine::apply_delete(const decode::RowChange& row) {
  const decode::Relation& rel = *row.relation;
  if (row.old_kind == proto::OldTuple::kNone) no_identity(rel, "a DELETE");
  RelationPlan& plan = plan_for(rel);
  bool full = row.old_kind == proto::OldTuple::kFull;
  RowMatch& match = match_;
  std::vector<const proto::Value*>& match_values = match_values_;
  build_match(rel, *row.old_values, !full, full, match, match_values);
  TargetSession& session = current_session();  // before the scratch is filled (see update_rows)
  params_.clear();
  types_.clear();
  for (size_t i = 0; i < match.columns.size(); ++i) {
    if (match.is_null[i]) continue;
    params_.add(rel.columns[match.columns[i]], *match_values[i]);
    types_.push_back(plan.types[match.columns[i]]);
  }
  std::string key = plan.key_prefix + "D" + match_key(match);
  std::string where = full ? describe_key(rel, *row.old_values, false) : describe_key(rel, *row.old_values, true);
  session.execute(
      key, [&] { return build_delete(rel, match); }, types_, params_,
      ChangeContext{plan.qualified, where, txn_commit_lsn_, "DELETE"}, true);
}

void ApplyEngine::on_truncate(const std::vector<const decode::Relation*>& relations, bool cascade,
                              bool restart_identity) {
  if (skipping_) return;
  if (Streamed* s = spooling()) {
    for (const auto* r : relations) s->spool->append_relation(r->relid, r->version, r->raw);
    s->spool->append(record_);
    return;
  }
  for (const auto* r : relations) flush_coalesced_of(r->relid);
  flush_held();
  if (stream_xid_ == 0 && parallel()) {
    // A table lock: nothing earlier may still be in flight, and later groups wait for this one.
    finish_all_commits();
    for (const auto* r : relations) lane().keys.record(RowAccess{RowAccess::Kind::kTable, r->relid, {0, 0}, 0});
  }
  std::vector<const decode::Relation*> truncated = relations;
  if (reconciler_.active() && !reconcile_truncate(truncated)) return;
  std::string names;
  for (const auto* r : truncated) names += (names.empty() ? "" : ", ") + qualified_name(*r);
  current_session().execute_simple(build_truncate(truncated, partitioned_on_target(truncated), cascade, restart_identity),
                                   ChangeContext{names, "", txn_commit_lsn_, "TRUNCATE"});
}

// Which of `rels` are partitioned tables on the target. A table created in the transaction
// being applied is not visible here yet: it counts as not partitioned (one that is, emptied in
// the transaction that made it, would be refused and reported).
std::vector<bool> ApplyEngine::partitioned_on_target(const std::vector<const decode::Relation*>& rels) {
  // One round trip for the whole list (a TRUNCATE ... CASCADE can name many tables).
  std::vector<std::string> names;
  for (const auto* r : rels) names.push_back(qualified_name(*r));
  pg::Result r = catalog_.exec_params(
      "SELECT coalesce(c.relkind = 'p', false) FROM unnest($1::text[]) WITH ORDINALITY AS u(name, n) "
      "LEFT JOIN pg_class c ON c.oid = to_regclass(u.name) ORDER BY u.n",
      {text_array_literal(names)});
  std::vector<bool> out;
  for (int i = 0; i < PQntuples(r.get()); ++i) out.push_back(PQgetvalue(r.get(), i, 0)[0] == 't');
  return out;
}

// A truncate of tables copied in chunks (copy_reconciler.hpp): keeps in `relations` the tables
// to truncate whole, deletes the older chunks of the others; returns whether any is left.
bool ApplyEngine::reconcile_truncate(std::vector<const decode::Relation*>& relations) {
  for (const auto* rel : relations) {
    if (reconciler_.settled(rel->relid)) continue;
    // A table being copied again: no chunk may be half read when the truncate decides which
    // chunks' rows go (those not read yet will read the table after it).
    finish_all_commits();
    reconciler_.wait_not_reading(rel->relid);
  }
  for (const std::string& sql : reconciler_.truncate(relations))
    current_session().execute_simple(sql, ChangeContext{"", "", txn_commit_lsn_, "TRUNCATE"});
  return !relations.empty();
}

// Logical messages change nothing on the target. A dts.heartbeat is there to move an idle
// slot: the keepalive that follows it lets follow confirm its position. A marker's transaction
// is applied like any other (its commit moves the origin, which is what verify and complete
// wait for); the stop marker of complete also asks follow to end once it is applied.
void ApplyEngine::on_message(bool transactional, Lsn lsn, std::string_view prefix, std::string_view content) {
  if (transactional && !skipping_) {
    if (Streamed* s = spooling()) {
      // A schema change of a subtransaction starts it in the file, as its first row would: an
      // abort of it cuts the file back to before the schema change.
      if (prefix == ddl::kSchemaChangePrefix && replay_ddl_)
        if (uint32_t subxid = schema_change_subxid(content)) s->spool->mark_subtransaction(subxid);
      s->spool->append(record_);
      return;
    }
  }
  if (!transactional && prefix == protocol::kHeartbeatPrefix) heartbeat_lsn_ = std::max(heartbeat_lsn_, lsn);
  if (transactional && !skipping_ && prefix == kStopMarkerPrefix) stop_lsn_ = lsn;
  if (transactional && !skipping_ && replay_ddl_ && prefix == ddl::kSchemaChangePrefix) apply_schema_change(lsn, content);
}

ApplyEngine::Streamed& ApplyEngine::stream(uint32_t xid) {
  auto it = streams_.find(xid);
  if (it != streams_.end()) return *it->second;
  auto s = std::make_unique<Streamed>();
  if (live_streams_ >= kLiveStreams) {
    s->spool = std::make_unique<SpoolFile>(spool_dir_, xid);
  } else {
    live_streams_++;
    if (!idle_sessions_.empty()) {
      s->session = std::move(idle_sessions_.back());
      idle_sessions_.pop_back();
    } else {
      s->session = new_session();
    }
    s->session->defer_failures(true);
    s->session->execute_simple("BEGIN", ChangeContext{"", "", 0, "BEGIN"});
  }
  auto& ref = *s;
  streams_.emplace(xid, std::move(s));
  return ref;
}

void ApplyEngine::end_stream(uint32_t xid, bool roll_back) {
  auto it = streams_.find(xid);
  if (it == streams_.end()) return;
  Streamed& s = *it->second;
  if (auto copies = copies_in_streams_.find(xid); copies != copies_in_streams_.end()) {
    if (roll_back)
      for (uint32_t relid : copies->second) reconciler_.forget(relid);
    copies_in_streams_.erase(copies);
  }
  if (s.session) {
    if (roll_back) s.session->discard();
    idle_sessions_.push_back(std::move(s.session));
    live_streams_--;
  }
  if (current_stream_ == &s) current_stream_ = nullptr;
  streams_.erase(it);  // a spool file goes with it
  forget_schema_state(xid);
}

void ApplyEngine::on_stream_start(uint32_t xid, bool first_segment) {
  flush_held();
  // The source is streaming this transaction again from its start (after a reconnect):
  // throw away what we had of it.
  if (first_segment) end_stream(xid, true);
  stream_xid_ = xid;
  // Its commit LSN is not known yet: its statements are named by it once it is (fail()), not
  // by the ordinary transaction decoded last.
  txn_commit_lsn_ = 0;
  reconciler_.begin_streamed(xid);
  if (!stream(xid).spool) {
    // What the source committed before this block must be committed here before the block's
    // changes run: otherwise a row a streamed change locks could hold up an earlier change
    // still queued on the main session, whose commit the streamed commit waits for. (Before
    // the block's stream is current: the group's rows go to the main session.)
    commit_and_wait();
  }
  current_stream_ = &stream(xid);  // looked up once per block, not once per change
}

void ApplyEngine::on_stream_stop() {
  flush_held();
  if (Streamed* s = spooling()) s->spool->close();
  stream_xid_ = 0;
  current_stream_ = nullptr;
}

void ApplyEngine::on_stream_xid(uint32_t xid) {
  flush_held();
  if (xid == stream_xid_) return;
  if (current_stream_ == nullptr)
    throw Error(ErrorKind::kProtocol, "a stream xid record outside a stream block (xid " + std::to_string(xid) + ")");
  Streamed& s = *current_stream_;
  if (s.spool) {
    s.spool->mark_subtransaction(xid);
    return;
  }
  auto made = [xid](const auto& sp) { return sp.first == xid; };
  if (std::any_of(s.savepoints.begin(), s.savepoints.end(), made)) return;
  s.savepoints.emplace_back(xid, s.session->savepoint(savepoint_name(xid)));
}

void ApplyEngine::on_stream_abort(uint32_t xid, uint32_t subxid) {
  flush_held();
  auto it = streams_.find(xid);
  if (it == streams_.end()) return;  // nothing of it was applied
  Streamed& s = *it->second;
  if (subxid == xid) {
    end_stream(xid, true);
    return;
  }
  if (s.spool) {
    s.spool->abort_subtransaction(subxid);
    return;
  }
  // Rolling back to a savepoint also drops every savepoint made after it; a subtransaction
  // whose savepoint is already gone had its changes discarded with it.
  auto sp = std::find_if(s.savepoints.begin(), s.savepoints.end(), [subxid](const auto& p) { return p.first == subxid; });
  if (sp == s.savepoints.end()) return;
  s.session->rollback_to(savepoint_name(subxid), sp->second);
  s.savepoints.erase(sp + 1, s.savepoints.end());
}

void ApplyEngine::on_stream_commit(uint32_t xid, Lsn commit_lsn, Lsn end_lsn, int64_t commit_time) {
  flush_held();
  if (commit_lsn < resume_lsn_) {  // applied before a restart: as in on_begin
    end_stream(xid, true);
    return;
  }
  // Everything committed before it on the source must be durable on the target before its
  // origin progress can say so: commit the main group and wait for it.
  commit_and_wait();
  auto it = streams_.find(xid);
  if (it == streams_.end()) {  // no change of it reached us (all filtered): only the progress moves
    add_to_group(end_lsn, commit_time);
    return;
  }
  if (it->second->spool) {
    reconciler_.begin_streamed(xid);
    replay_spooled(*it->second, commit_lsn, end_lsn, commit_time);
    end_stream(xid, false);
    return;
  }
  Streamed& s = *it->second;
  // A change it refused is reported now, with the commit's LSN; the origin has not moved.
  s.session->set_commit_lsn(commit_lsn);
  s.session->confirm();
  // Only one session may hold the origin at a time (with several lanes, none holds it between
  // commits).
  if (!parallel()) main().reset_origin();
  s.session->setup_origin(origin_);
  s.session->commit(end_lsn, commit_time, [this, end_lsn, commit_time] {
    stats_.applied_lsn = std::max(stats_.applied_lsn, end_lsn);
    stats_.applied_commit_time = commit_time;
    stats_.transactions++;
  });
  s.session->drain(0);
  s.session->reset_origin();
  if (!parallel()) main().setup_origin(origin_);
  // What the target has besides the key was asked meanwhile without its schema changes.
  if (s.schema_changed) forget_target_facts();
  end_stream(xid, false);
}

void ApplyEngine::forget_target_facts() {
  for (auto& [relid, plan] : plans_) plan->facts_asked = false;
}

void ApplyEngine::note_schema_change() {
  schema_changed_ = true;
  if (stream_xid_ != 0 && current_stream_ != nullptr) current_stream_->schema_changed = true;
  // A new unique index or trigger changes what may be merged or sent at once, for any table.
  forget_target_facts();
}

bool ApplyEngine::schema_change_uncommitted() const {
  return stream_xid_ == 0 ? schema_changed_ : current_stream_ != nullptr && current_stream_->schema_changed;
}

// A spooled transaction is applied at its commit like an ordinary one, on the main session,
// through a decoder of its own: the relation records it needs are in its file.
void ApplyEngine::replay_spooled(Streamed& s, Lsn commit_lsn, Lsn end_lsn, int64_t commit_time) {
  decode::Decoder replay;
  in_source_txn_ = true;
  txn_commit_lsn_ = commit_lsn;
  s.spool->replay(record_version_, [&](const uint8_t* frame, size_t len) {
    replay.decode(frame, len, commit_lsn, *this);
  });
  in_source_txn_ = false;
  forget_schema_state(0);
  bool schema_changed = std::exchange(schema_changed_, false);
  add_to_group(end_lsn, commit_time);
  // Pending rows point into the replay decoder's relations: out before it goes.
  commit_group();
  if (schema_changed) finish_all_commits();  // a barrier, as for an ordinary transaction (on_commit)
}

}  // namespace dts::apply
