// Parallel apply: consecutive groups of source transactions on different target sessions
// ("lanes"), committed one by one in source order.
//
// Why this neither loses nor repeats anything: a group's commit is sent only once every group
// before it has committed, and it carries the origin's progress, so the origin always names a
// prefix of the source's commits, whatever dies when. Why the lanes never wait for each other in
// a cycle: a later group never sends a statement touching a row an earlier group in flight
// touched (row_keys.hpp: it waits for that group's commit first), table locks (TRUNCATE, schema
// changes) are taken only once nothing earlier is in flight, and before the engine blocks on a
// lane's results it commits every group older than that lane's. What the row keys cannot see (a
// trigger or a constraint on the target that the source did not have) can still make an earlier
// group wait for a later one: the lanes' lock_timeout ends such a wait, and follow applies what
// it had received again on one lane (ParallelState), which tells an order conflict from a real
// refusal.
#include <algorithm>

#include "apply/apply_engine.hpp"
#include "apply/relation_plan.hpp"

namespace dts::apply {
namespace proto = dts::protocol;

void ApplyEngine::open_lanes(size_t workers) {
  workers = std::max<size_t>(1, workers);
  for (size_t i = 0; i < workers; ++i) {
    Lane l;
    l.session = new_session();
    lanes_.push_back(std::move(l));
  }
  // Waits for a session of an applier just killed to let the origin go, and checks it exists.
  lanes_[0].session->setup_origin(origin_);
  if (!parallel()) return;
  // Each commit takes the origin and gives it back (TargetSession::commit).
  lanes_[0].session->reset_origin();
  for (size_t i = 0; i < lanes_.size(); ++i) {
    lanes_[i].session->hand_origin(origin_);
    lanes_[i].session->before_wait([this, i] { commit_older_than(i); });
  }
  stats_.apply_workers = lanes_.size();
}

// Commits the oldest pending group: its statements confirmed, then its origin and COMMIT. With
// several lanes the commit is waited for: the origin is free again only once it is done.
void ApplyEngine::finish_oldest() {
  size_t i = commit_order_.front();
  Lane& l = lanes_[i];
  PendingCommit done = *l.pending;
  l.session->commit(done.end_lsn, done.commit_time, [this, done] {
    stats_.applied_lsn = std::max(stats_.applied_lsn, done.end_lsn);
    stats_.applied_commit_time = done.commit_time;
    stats_.transactions += done.transactions;
  });
  if (parallel()) l.session->drain(0);
  // Popped only now: while it commits, it is the oldest (commit_older_than).
  commit_order_.pop_front();
  l.pending.reset();
  // One lane for groups before serial_until: the group being built there keeps what it
  // recorded (and with it the committed group's, which only makes a later group wait more).
  if (i != lane_) l.keys.clear();
  if (i != lane_ || deferred_inserts_.empty()) return;
  ensure_main_transaction();
  std::vector<InsertBatch> waiting;
  waiting.swap(deferred_inserts_);
  for (InsertBatch& b : waiting) {
    send_inserts(main(), b);
    b.rows = 0;
    b.relation = nullptr;
    b.params.clear();
    spare_batches_.push_back(std::move(b));
  }
}

void ApplyEngine::finish_all_commits() {
  while (!commit_order_.empty()) finish_oldest();
}

// Before waiting for a lane's results: the groups older than its own must not be left waiting
// for a commit only this thread can send.
void ApplyEngine::commit_older_than(size_t lane) {
  while (!commit_order_.empty() && commit_order_.front() != lane) finish_oldest();
}

void ApplyEngine::drain_lanes() {
  for (Lane& l : lanes_) l.session->drain(0);
}

// The group just queued is on its lane; the next one goes to the following lane once that
// lane's own group has committed (round robin: it is the oldest). Groups the source committed
// before serial_until stay on one lane.
void ApplyEngine::next_lane() {
  if (!parallel() || group_end_lsn_ < serial_until_) return;
  if (parallel_state_ != nullptr) parallel_state_->in_parallel = true;
  lane_ = (lane_ + 1) % lanes_.size();
  while (lane().pending) finish_oldest();
}

// What a change touches, in the terms of row_keys.hpp.
RowAccess ApplyEngine::row_access(const decode::RowChange& row) {
  const decode::Relation& rel = *row.relation;
  RowAccess a;
  a.relid = rel.relid;
  const RelationPlan& plan = ask_target_facts(rel);
  if (row.kind == decode::RowKind::kInsert && plan.no_unique_index) return a;  // kAppend
  if (!plan.coalesce) {  // no key alone tells its rows apart (or a trigger sees them)
    a.kind = RowAccess::Kind::kTable;
    return a;
  }
  a.kind = RowAccess::Kind::kKeys;
  if (row.old_kind == proto::OldTuple::kKey && row.old_values != nullptr)
    a.keys[a.nkeys++] = key_hash(rel, *row.old_values, true);
  if (row.new_values != nullptr) a.keys[a.nkeys++] = key_hash(rel, *row.new_values, false);
  return a;
}

// Records what the current group's change touches; unless its statement is held here for
// later (a row merged per key, ordered in order_batches), it waits for an earlier group in
// flight that touched the same.
void ApplyEngine::order_row(const decode::RowChange& row, bool held) {
  RowAccess access = row_access(row);
  if (!held) wait_for_conflicts(access);
  lane().keys.record(access);
}

void ApplyEngine::wait_for_conflicts(const RowAccess& access) {
  // The newest group in flight it conflicts with, and so every group before it, commits.
  for (size_t n = commit_order_.size(); n > 0; --n) {
    size_t blocker = commit_order_[n - 1];
    if (blocker == lane_ || !lanes_[blocker].keys.conflicts(access)) continue;
    stats_.conflict_waits++;
    auto plan = plans_.find(access.relid);
    stats_.last_conflict_wait = "worker " + std::to_string(lane_ + 1) + " waited for worker " + std::to_string(blocker + 1) +
                                "'s group (up to " + format_lsn(lanes_[blocker].pending->end_lsn) + ") to commit: " +
                                (access.kind == RowAccess::Kind::kKeys ? "a row of " : "") +
                                (plan != plans_.end() ? plan->second->qualified : "relation " + std::to_string(access.relid)) +
                                " both touch";
    for (size_t k = 0; k < n; ++k) finish_oldest();
    return;
  }
}

// Merged rows are written at the end of their group: the tables whose rows no group in flight
// touched go first, so that the target works on them while the earlier groups commit. Returns
// how many go first: only the batches after them need wait_for_merged_rows.
size_t ApplyEngine::order_batches(std::vector<Coalescer::Batch>& batches) {
  if (!parallel() || commit_order_.empty() || stream_xid_ != 0) return batches.size();
  auto conflicting = [&](const Coalescer::Batch& b) {
    for (const PendingRow& row : b.rows) {
      RowAccess a = merged_row_access(*b.relation, row);
      for (size_t lane : commit_order_)
        if (lane != lane_ && lanes_[lane].keys.conflicts(a)) return true;
    }
    return false;
  };
  auto later = std::stable_partition(batches.begin(), batches.end(), [&](const Coalescer::Batch& b) { return !conflicting(b); });
  return static_cast<size_t>(later - batches.begin());
}

RowAccess ApplyEngine::merged_row_access(const decode::Relation& rel, const PendingRow& row) const {
  return RowAccess{RowAccess::Kind::kKeys, rel.relid, {key_hash(rel, row.values, false), 0}, 1};
}

// A merged row an earlier group in flight touched waits for that group's commit (after the
// first wait, usually none is left in flight).
void ApplyEngine::wait_for_merged_rows(const Coalescer::Batch& batch) {
  for (const PendingRow& row : batch.rows) {
    if (commit_order_.empty()) return;
    wait_for_conflicts(merged_row_access(*batch.relation, row));
  }
}

}  // namespace dts::apply
