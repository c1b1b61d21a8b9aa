// Applies decoded events to the target, exactly once and in commit order.
//
// Ordinary transactions go to the main session, several of them grouped into one target
// transaction; the origin's progress is set in the same commit, so the target itself records
// how far it got. A group's statements are sent and its confirmation is awaited while the next
// group is decoded: its origin and COMMIT go out once every result is read, before anything of
// the next group. A streamed transaction (sent while still in progress on the source) is
// applied as it arrives on a session of its own, with a savepoint for each subtransaction; at
// its commit the main session's group is committed first, then the streamed one takes the
// origin for its own commit.
//
// With several apply workers (apply_lanes.cpp) there are as many main sessions, "lanes", and
// consecutive groups go to different lanes, so the target works on several at once; they
// still commit one by one in source order, each taking the origin for its commit, and a group
// touching a row an earlier one in flight touched waits for that one's commit first.
#ifndef DTS_APPLIER_APPLY_APPLY_ENGINE_HPP
#define DTS_APPLIER_APPLY_APPLY_ENGINE_HPP

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "apply/coalescer.hpp"
#include "apply/copy_reconciler.hpp"
#include "apply/params.hpp"
#include "apply/row_keys.hpp"
#include "apply/set_batch.hpp"
#include "apply/spool.hpp"
#include "apply/sql_builder.hpp"
#include "apply/target_session.hpp"
#include "core/applier.hpp"
#include "core/table_selection.hpp"
#include "ddl/schema_change.hpp"
#include "decode/decoder.hpp"

namespace dts::apply {

namespace proto = dts::protocol;

// Transactional logical messages written on the source by verify and complete. A marker only
// needs its transaction applied; a stop marker also ends follow once it is.
using protocol::kMarkerPrefix;
using protocol::kStopMarkerPrefix;

using core::ApplyStats;

// What outlives an engine of a run of follow: whether a refusal may come from the order of
// groups applied at once (then follow applies what it received again on one session, to tell
// that from a real refusal).
struct ParallelState {
  bool in_parallel = false;  // groups were in flight on several sessions at once
  Lsn seen_lsn = 0;          // the end of the last source transaction received
};

class ApplyEngine : public core::Applier {
 public:
  // workers: target sessions for ordinary transactions; groups ending before serial_until go
  // one by one even so.
  ApplyEngine(std::string target_conninfo, std::string client_encoding, std::string origin, Lsn resume_lsn,
              core::CommitPolicy policy = {}, size_t workers = 1, Lsn serial_until = 0,
              ParallelState* parallel = nullptr);
  ~ApplyEngine() override;
  // The copy of the migration of `slot` was made of chunks read in snapshots of their own:
  // changes the stream brings that a chunk already holds are skipped (copy_reconciler.hpp).
  // Rows a change needs that no chunk holds are read again from `source`.
  void reconcile_with_copy(const std::string& slot, const std::string& source);
  CopyReconciler& reconciler() { return reconciler_; }
  // Replay the source's schema changes (dts.ddl messages) of the tables `selection` picks; a
  // table the source rewrote or filled by CREATE TABLE AS is copied again (a resync of `slot`).
  void replay_schema_changes(const std::string& slot, core::TableSelection selection);

  // core::Applier
  void commit_group() override;
  void sync() override;
  void poll() override;
  bool group_open() const override { return group_open_ || !commit_order_.empty(); }
  bool in_transaction() const override { return in_source_txn_; }
  bool idle() const override;
  ApplyStats stats() const override;
  Lsn stop_lsn() const override { return stop_lsn_; }
  Lsn heartbeat_lsn() const override { return heartbeat_lsn_; }

  // decode::EventHandler
  void on_record(uint8_t version, std::string_view raw) override;
  void on_begin(uint32_t xid, Lsn final_lsn, int64_t commit_time) override;
  void on_commit(Lsn commit_lsn, Lsn end_lsn, int64_t commit_time) override;
  void on_origin(std::string_view name, Lsn origin_lsn) override;
  void on_relation(const decode::Relation& relation) override;
  void on_row(const decode::RowChange& row) override;
  void on_truncate(const std::vector<const decode::Relation*>& relations, bool cascade,
                   bool restart_identity) override;
  void on_message(bool transactional, Lsn lsn, std::string_view prefix, std::string_view content) override;
  void on_stream_start(uint32_t xid, bool first_segment) override;
  void on_stream_stop() override;
  void on_stream_xid(uint32_t xid) override;
  void on_stream_commit(uint32_t xid, Lsn commit_lsn, Lsn end_lsn, int64_t commit_time) override;
  void on_stream_abort(uint32_t xid, uint32_t subxid) override;

 private:
  struct RelationPlan;
  struct Streamed;
  struct InsertBatch {
    const decode::Relation* relation = nullptr;
    size_t rows = 0;
    ParamSet params;
    std::string first_key;  // for messages
    Lsn lsn = 0;            // its first row's source transaction's commit LSN
    Lsn last_lsn = 0;       // its last row's: a batch spans the transactions of a group
  };
  // A group whose statements are sent: its origin and COMMIT follow once all are confirmed.
  struct PendingCommit {
    Lsn end_lsn = 0;
    int64_t commit_time = 0;
    uint64_t transactions = 0;
  };

  TargetSession& current_session();
  // Lanes (apply_lanes.cpp).
  struct Lane {
    std::unique_ptr<TargetSession> session;
    bool open = false;  // its group's BEGIN was sent
    std::optional<PendingCommit> pending;  // its group, sent, awaiting its commit
    GroupKeys keys;  // what its group touches
  };
  Lane& lane() { return lanes_[lane_]; }
  TargetSession& main() { return *lanes_[lane_].session; }
  void open_lanes(size_t workers);
  void finish_oldest();
  void finish_all_commits();
  void commit_older_than(size_t lane);
  void next_lane();
  bool parallel() const { return lanes_.size() > 1; }
  RowAccess row_access(const decode::RowChange& row);
  void order_row(const decode::RowChange& row, bool held);
  void wait_for_conflicts(const RowAccess& access);
  size_t order_batches(std::vector<Coalescer::Batch>& batches);
  RowAccess merged_row_access(const decode::Relation& rel, const PendingRow& row) const;
  void wait_for_merged_rows(const Coalescer::Batch& batch);
  void drain_lanes();
  RelationPlan& plan_for(const decode::Relation& rel);
  void ensure_main_transaction();
  void finish_commit();
  void commit_and_wait();
  void send_inserts(TargetSession& session, InsertBatch& batch);
  void add_to_group(Lsn end_lsn, int64_t commit_time);
  void flush_inserts();
  void apply_row(const decode::RowChange& row);
  void apply_schema_change(Lsn lsn, std::string_view content);
  void wait_for_copies(const std::vector<ddl::RelationRef>& tables, TargetSession& session);
  bool schema_change_wanted(const ddl::SchemaChange& change) const;
  void copy_again(const ddl::RelationRef& table, TargetSession& session);
  bool reconcile_row(const decode::RowChange& row);
  void read_row_again(const decode::RowChange& row);
  bool reconcile_truncate(std::vector<const decode::Relation*>& relations);
  void apply_insert(const decode::RowChange& row, Lsn lsn);  // lsn: its source transaction's commit
  std::vector<bool> partitioned_on_target(const std::vector<const decode::Relation*>& rels);
  void forget_target_facts();  // after a schema change: asked again at the next use
  void note_schema_change();
  // The record inside a signed schema-change message, with the key or the one before it.
  std::optional<std::string_view> verified_with_known_keys(std::string_view content) const;
  // The subtransaction a signed schema-change record names (0: none, or not verified).
  uint32_t schema_change_subxid(std::string_view content) const;
  // A schema change of the transaction being applied is not committed yet (the catalog session
  // cannot see it).
  bool schema_change_uncommitted() const;
  void apply_update(const decode::RowChange& row);
  void apply_delete(const decode::RowChange& row);
  std::string describe_key(const decode::Relation& rel, const decode::Values& values, bool key_only) const;
  Streamed& stream(uint32_t xid);
  Streamed* spooling();  // the stream block being received, if it goes to a spool file
  void end_stream(uint32_t xid, bool roll_back);
  void replay_spooled(Streamed& s, Lsn commit_lsn, Lsn end_lsn, int64_t commit_time);
  std::unique_ptr<TargetSession> new_session();
  bool coalescable(const decode::Relation& rel);
  void flush_coalesced(std::vector<Coalescer::Batch> batches);
  void flush_coalesced_of(uint32_t relid);
  void update_rows(const decode::Relation& rel, const std::vector<const PendingRow*>& rows);
  std::shared_ptr<const KeyProbe> key_probe(const decode::Relation& rel, const RelationPlan& plan,
                                            const PendingRow* const* rows, size_t n) const;
  void apply_update_values(const decode::Relation& rel, const decode::Values& newv, proto::OldTuple old_kind,
                           const decode::Values* oldv, Lsn lsn);
  // Set-based UPDATEs and DELETEs (apply_set.cpp).
  const RelationPlan& ask_target_facts(const decode::Relation& rel);
  bool set_based(const decode::Relation& rel, const SetShape& shape);
  bool batch_change(const decode::RowChange& row, Lsn lsn);
  void flush_set_batch();
  void send_set_row(TargetSession& session, RelationPlan& plan, size_t r);
  std::string describe_set_row(size_t r) const;
  std::shared_ptr<const KeyProbe> set_probe(const RelationPlan& plan) const;
  // Sends every change held client-side: the set batch, then the insert batch.
  void flush_held();

  std::string target_conninfo_;
  std::string client_encoding_;
  std::string origin_;
  std::vector<Lane> lanes_;
  size_t lane_ = 0;                  // the lane of the group being built
  std::deque<size_t> commit_order_;  // lanes with a pending group, oldest first
  Lsn serial_until_ = 0;
  ParallelState* parallel_state_ = nullptr;
  std::unordered_map<uint32_t, std::unique_ptr<RelationPlan>> plans_;
  SpoolDirectory spool_dir_;  // before streams_: their spool files are removed first
  std::unordered_map<uint32_t, std::unique_ptr<Streamed>> streams_;
  std::vector<std::unique_ptr<TargetSession>> idle_sessions_;
  size_t live_streams_ = 0;  // streams with a session (the others are spooled)
  uint8_t record_version_ = protocol::kVersion;
  std::string_view record_;  // the record being decoded

  // The source transaction being received (ordinary or a stream block).
  bool in_source_txn_ = false;
  bool skipping_ = false;  // already applied before a restart
  Lsn txn_commit_lsn_ = 0;
  uint32_t stream_xid_ = 0;             // non-zero inside a stream block
  Streamed* current_stream_ = nullptr;  // that block's stream (streams_ owns it)

  // The group: source transactions committed together on the lane's session. group_open_: it
  // has something (rows may still be held here); the lane's `open`: its BEGIN was sent.
  bool group_open_ = false;
  // Of the group, held until the commit pending on its own lane is sent (one lane).
  std::vector<InsertBatch> deferred_inserts_;
  std::vector<InsertBatch> spare_batches_;       // sent, kept for their memory
  uint64_t group_txns_ = 0;
  uint64_t group_changes_ = 0;
  uint64_t group_direct_updates_ = 0;  // UPDATEs and DELETEs not merged per key
  Lsn group_end_lsn_ = 0;
  int64_t group_commit_time_ = 0;
  Lsn resume_lsn_;

  // Schema changes (apply_schema_change.cpp).
  bool replay_ddl_ = false;
  std::string slot_;
  std::string ddl_key_;  // signs the source's schema-change records (ddl/record_signature.hpp)
  std::string previous_ddl_key_;  // the one before, if the extension was created again
  core::TableSelection selection_;
  // Per source transaction (its xid inside a stream block, 0 otherwise): tables the source
  // rewrote in it, and whether a CREATE TABLE AS is under way (its rows are copied later).
  struct Rewritten {
    std::optional<ddl::RelationRef> table;  // named by dts_decoding 0.4.0 and later
    std::vector<uint32_t> ancestors;
  };
  std::map<std::pair<uint32_t, uint32_t>, Rewritten> rewritten_;  // (xid, relid)
  std::unordered_map<uint32_t, std::string> creating_as_;  // xid -> the new table's name
  // (xid, qualified name): relations renamed or moved to that name in the transaction, which
  // the target has uncommitted (the catalog session cannot see them yet).
  std::set<std::pair<uint32_t, std::string>> renamed_to_;
  // Tables a streamed transaction asked to copy again: forgotten if the source aborts it.
  std::unordered_map<uint32_t, std::vector<uint32_t>> copies_in_streams_;
  void forget_schema_state(uint32_t xid);
  void add_rewritten_leaves(uint32_t xid, uint32_t root, std::vector<ddl::RelationRef>& copies) const;
  bool unnamed_rewrites(uint32_t xid, const std::vector<ddl::RelationRef>& copies) const;
  bool keeps_rows_below(const ddl::RelationRef& root, const std::vector<ddl::RelationRef>& copies);
  std::vector<ddl::RelationRef> tables_to_copy_again(const ddl::SchemaChange& change, uint32_t xid) const;
  bool entered_selection(const ddl::SchemaChange& change);
  bool creating_as_of(const decode::Relation& rel) const;
  bool schema_changed_ = false;             // in this transaction: its group ends with it

  CopyReconciler reconciler_;
  std::string source_conninfo_;  // for the rows read again
  pg::Connection source_;
  uint64_t changes_in_copy_ = 0;  // skipped: their chunk of the copy already held them
  uint64_t rows_read_again_ = 0;
  Coalescer coalesced_;
  pg::Connection catalog_;  // target, outside the pipeline: what a table has besides its key
  InsertBatch batch_;
  SetBatch set_batch_;
  SetShape set_shape_;  // scratch of batch_change
  ParamSet params_;
  std::vector<uint32_t> types_;
  std::vector<size_t> set_columns_;  // scratch of apply_update_values
  RowMatch match_;                   // scratch of the UPDATE and DELETE paths
  std::vector<const proto::Value*> match_values_;
  ApplyStats stats_;
  core::CommitPolicy policy_;
  Lsn stop_lsn_ = 0;
  Lsn heartbeat_lsn_ = 0;
};

}  // namespace dts::apply

#endif
