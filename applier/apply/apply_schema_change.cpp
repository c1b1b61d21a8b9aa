// The engine's part of schema changes: a dts.ddl record is one more item of its source
// transaction, replayed on the same target session at the same position, so it commits (or is
// refused) with the rows around it and the origin. What the stream cannot carry — the rows a
// table rewrite or a CREATE TABLE AS wrote — is copied again: the table is emptied in the same
// target transaction, a one-chunk resync is recorded there too (a crash cannot lose it), and
// the stream's later changes of the table are skipped until the copy reads it.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "apply/apply_engine.hpp"
#include "common/error.hpp"
#include "ddl/record_signature.hpp"
#include "migrate/copier.hpp"
#include "resync/resync_driver.hpp"

namespace dts::apply {

void ApplyEngine::replay_schema_changes(const std::string& slot, core::TableSelection selection) {
  replay_ddl_ = true;
  slot_ = slot;
  selection_ = std::move(selection);
  resync::create_request_table(catalog_);
  migrate::create_chunk_table(catalog_);
  if (!source_conninfo_.empty()) ddl_key_ = ddl::signing_key(pg::Connection::open(source_conninfo_, "source")).value_or("");
}

bool ApplyEngine::schema_change_wanted(const ddl::SchemaChange& change) const {
  std::vector<ddl::RelationRef> tables = ddl::tables_of(change);
  for (const auto& t : tables)
    if (t.schema == "dts") return false;  // the migration's own state on the target
  if (selection_.everything()) return true;
  // A subset of tables: their schema changes, nothing else (functions, types and the like of
  // the whole database were not copied either).
  for (const auto& t : tables)
    if (selection_.selects(t.schema, t.name)) return true;
  // A dropped index names no table (it is gone on the source): its table here decides.
  for (const auto& d : change.dropped) {
    if (!d.original || d.object_type != "index") continue;
    pg::Result r = catalog_.exec_params(
        "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = to_regclass($1)",
        {quote_ident(d.schema) + "." + quote_ident(d.name)});
    if (PQntuples(r.get()) == 1 && selection_.selects(PQgetvalue(r.get(), 0, 0), PQgetvalue(r.get(), 0, 1))) return true;
  }
  return false;
}

std::optional<std::string_view> ApplyEngine::verified_with_known_keys(std::string_view content) const {
  std::optional<std::string_view> record = ddl::verified_record(content, ddl_key_);
  if (!record && !previous_ddl_key_.empty()) record = ddl::verified_record(content, previous_ddl_key_);
  return record;
}

uint32_t ApplyEngine::schema_change_subxid(std::string_view content) const {
  std::optional<std::string_view> record = verified_with_known_keys(content);
  return record ? ddl::parse_schema_change(*record).subxid : 0;
}

void ApplyEngine::apply_schema_change(Lsn lsn, std::string_view content) {
  std::optional<std::string_view> record = verified_with_known_keys(content);
  if (!record && !source_conninfo_.empty()) {
    // The extension may have been created, updated to 0.2.0, or dropped and created again
    // (a new key) since this applier started. The key before stays known: records it signed
    // may still be ahead in the stream. Asked on the engine's source session: a forged
    // message costs one query, not a connection (and no wait that a real one could fall in).
    if (!source_) source_ = pg::Connection::open(source_conninfo_, "source");
    std::string key = ddl::signing_key(source_).value_or("");
    if (key != ddl_key_) previous_ddl_key_ = std::exchange(ddl_key_, key);
    record = ddl::verified_record(content, ddl_key_);
  }
  if (!record) {
    // Anyone may write a message with this prefix; only dts_decoding's event triggers sign.
    spdlog::warn("a {} message at {} is not signed by the source's dts_decoding (written by hand, or by another "
                 "source): ignored", ddl::kSchemaChangePrefix, format_lsn(lsn));
    return;
  }
  ddl::SchemaChange change = ddl::parse_schema_change(*record);
  // Made in a subtransaction of a transaction streamed while in progress: its savepoint first
  // (rows make theirs as they come), so that rolling it back takes the schema change away too.
  if (stream_xid_ != 0 && change.subxid != 0) on_stream_xid(change.subxid);
  const uint32_t xid = stream_xid_;
  if (change.kind == ddl::ChangeKind::kCreateAs) {
    creating_as_[xid] = change.identity;
    return;
  }
  if (change.kind == ddl::ChangeKind::kRewrite) {
    rewritten_[{xid, change.objid}] = Rewritten{change.rewritten, change.ancestors};
    return;
  }
  bool created_as = creating_as_.count(xid) > 0 && change.relation &&
                    (change.tag == "CREATE TABLE AS" || change.tag == "SELECT INTO");
  if (created_as) creating_as_.erase(xid);
  if (!schema_change_wanted(change)) {
    spdlog::debug("schema change {} {} not replayed: outside the table selection", change.tag, change.identity);
    return;
  }
  if (entered_selection(change)) {
    // Renamed or moved into the selection from outside it: the target never had the table. It
    // is made there in its new name and copied, as a table CREATE TABLE AS made is.
    change.tag = "CREATE TABLE";
    change.before.reset();
    created_as = true;
  }
  std::vector<ddl::RelationRef> copies = tables_to_copy_again(change, xid);
  bool rewritten = !copies.empty();
  // The replayed command reaches every table below its own on the target: those not emptied
  // keep their rows, which it must convert, not set to NULL (a partition the source did not
  // rewrite, one whose copy is still to come, one a 0.3.0 record left unnamed).
  bool kept = rewritten && change.before && keeps_rows_below(change.before->ref, copies);
  if (rewritten && change.relation->kind == 'p' && unnamed_rewrites(xid, copies))
    spdlog::warn("the source's dts_decoding is older than 0.4.0 and does not name the partitions of {} below its first "
                 "level that this command rewrote: the target converts their rows itself (a USING expression or a "
                 "volatile default of the source is not applied there); run ALTER EXTENSION dts_decoding UPDATE on the "
                 "source, and dts_applier resync --tables {} if the command had one",
                 change.relation->ref.qualified(), change.relation->ref.qualified());
  std::vector<std::string> statements = ddl::replay_statements(change, rewritten && !kept);
  if (statements.empty() && !rewritten && !created_as) return;
  // Rows held here were written in the old shape: they go first.
  flush_coalesced(coalesced_.take_all());
  flush_held();
  if (stream_xid_ == 0) finish_all_commits();  // its locks: nothing earlier may be in flight
  TargetSession& session = current_session();
  note_schema_change();
  if (rewritten) wait_for_copies(copies, session);
  if (rewritten && change.before) {
    // Emptied in the shape they had, each table that is copied again and no other: a partition
    // the command did not rewrite keeps its rows, which the replayed command converts. Replica
    // role: no foreign key trigger fires.
    for (const auto& t : copies) {
      std::string table = t.relid == change.before->ref.relid ? change.before->ref.qualified() : t.qualified();
      session.execute_simple("DELETE FROM ONLY " + table, ChangeContext{table, "", txn_commit_lsn_, "DELETE (a rewrite)"});
    }
  }
  if (!statements.empty()) {
    stats_.schema_changes++;
    stats_.last_schema_change = statements.front().substr(0, 500);
  }
  for (const std::string& sql : statements) {
    spdlog::info("schema change at {}: {}", format_lsn(txn_commit_lsn_), sql);
    session.execute_simple(sql, ChangeContext{sql, "", txn_commit_lsn_, "the schema change"});
  }
  if (change.before && change.relation && change.before->ref.qualified() != change.relation->ref.qualified())
    renamed_to_.emplace(xid, change.relation->ref.qualified());
  if (created_as) copies.push_back(change.relation->ref);
  for (const auto& table : copies) {
    copy_again(table, session);
    rewritten_.erase({xid, table.relid});
  }
}

// The tables the source rewrote for this command: the table itself, or the partitions of a
// partitioned one (table_rewrite fires per partition; the command names the parent).
// Also a table whose copy the stream is still reconciled with, when its columns change: the
// chunks read after the change hold its rows in the new shape, copied in the old one (the
// copy's columns were fixed when it was planned). Once its copy is written, it is copied
// again; while a copy of it is still to come, that copy reads the new shape anyway.
std::vector<ddl::RelationRef> ApplyEngine::tables_to_copy_again(const ddl::SchemaChange& change, uint32_t xid) const {
  bool columns_changed = change.before && change.relation && ddl::columns_differ(*change.before, *change.relation);
  auto copy_of = [&](uint32_t relid) {
    return rewritten_.count({xid, relid}) > 0 ||
           (columns_changed && reconciler_.active() && reconciler_.table(relid) != nullptr && reconciler_.settled(relid));
  };
  std::vector<ddl::RelationRef> copies;
  if (change.relation) {
    if (copy_of(change.relation->ref.relid)) copies.push_back(change.relation->ref);
    for (const auto& p : change.relation->partitions)
      if (copy_of(p.relid)) copies.push_back(p);
    add_rewritten_leaves(xid, change.relation->ref.relid, copies);
  }
  // Partitions left out by --exclude are not on the target.
  if (!selection_.everything())
    copies.erase(std::remove_if(copies.begin(), copies.end(),
                                [&](const ddl::RelationRef& t) { return !selection_.selects(t.schema, t.name); }),
                 copies.end());
  return copies;
}

// Whether the target holds a table below `root` (partitions or inheritance children, at any
// depth), or `root` itself, that is not among `copies`: one the replayed command reaches
// without its being emptied first.
bool ApplyEngine::keeps_rows_below(const ddl::RelationRef& root, const std::vector<ddl::RelationRef>& copies) {
  pg::Result r = catalog_.exec_params(
      "WITH RECURSIVE d(oid) AS (SELECT to_regclass($1)::oid UNION SELECT i.inhrelid FROM pg_inherits i JOIN d ON "
      "i.inhparent = d.oid) SELECT n.nspname, c.relname FROM d JOIN pg_class c ON c.oid = d.oid "
      "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm', 'f')",
      {root.qualified()});
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::string schema = PQgetvalue(r.get(), i, 0), name = PQgetvalue(r.get(), i, 1);
    bool emptied = std::any_of(copies.begin(), copies.end(),
                               [&](const ddl::RelationRef& c) { return c.schema == schema && c.name == name; });
    if (!emptied) return true;
  }
  return false;
}

// A plain table (not a partition: its parent decides) renamed or moved from outside the
// selection into it, that the target does not have under its old name (one renamed out and
// back is still there: the rename is replayed).
bool ApplyEngine::entered_selection(const ddl::SchemaChange& change) {
  if (selection_.everything() || !change.relation || !change.before || change.relation->kind != 'r' ||
      change.relation->parent)
    return false;
  const ddl::RelationRef& was = change.before->ref;
  const ddl::RelationRef& now = change.relation->ref;
  if (selection_.selects(was.schema, was.name) || !selection_.selects(now.schema, now.name)) return false;
  if (renamed_to_.count({stream_xid_, was.qualified()}) > 0) return false;
  return catalog_.query_value("SELECT to_regclass($1) IS NULL", {was.qualified()}) == "t";
}

// A table rewritten again while an earlier copy of it is under way: emptied only once no chunk
// of that copy is being read (one in flight would commit its rows after the emptying, beside
// the new copy's), and the earlier copy's chunks not read yet are withdrawn in the same target
// transaction (their workers find their dts.copy_chunk rows gone and skip them; the reconciler
// knows the copies apart by generation). Waiting for chunks being read cannot hang: a worker
// whose COPY waits for a lock of ours gives its chunk back within its lock_timeout.
void ApplyEngine::wait_for_copies(const std::vector<ddl::RelationRef>& tables, TargetSession& session) {
  for (const auto& t : tables) {
    if (reconciler_.table(t.relid) == nullptr) continue;
    if (!reconciler_.settled(t.relid)) {
      finish_all_commits();
      reconciler_.wait_not_reading(t.relid);
    }
    session.execute_simple("DELETE FROM dts.copy_chunk WHERE slot = " + quote_literal(slot_) + " AND relid = " +
                               std::to_string(t.relid) + " AND snapshot IS NULL",
                           ChangeContext{t.qualified(), "", txn_commit_lsn_, "withdrawing an earlier copy"});
  }
}

// The rows of a CREATE TABLE AS come before its table's record: those of a relation of that
// name, in that transaction, are the command's.
bool ApplyEngine::creating_as_of(const decode::Relation& rel) const {
  auto it = creating_as_.find(stream_xid_);
  return it != creating_as_.end() && it->second == rel.name;
}

void ApplyEngine::forget_schema_state(uint32_t xid) {
  creating_as_.erase(xid);
  for (auto it = renamed_to_.lower_bound({xid, ""}); it != renamed_to_.end() && it->first == xid;) it = renamed_to_.erase(it);
  for (auto it = rewritten_.lower_bound({xid, 0}); it != rewritten_.end() && it->first.first == xid;)
    it = rewritten_.erase(it);
}

namespace {
bool listed_in(const std::vector<ddl::RelationRef>& tables, uint32_t relid) {
  return std::any_of(tables.begin(), tables.end(), [relid](const ddl::RelationRef& t) { return t.relid == relid; });
}
}  // namespace

// The leaves below `root`'s direct partitions that the transaction rewrote: a command on a
// partitioned table rewrites every level, and its record lists only the first.
void ApplyEngine::add_rewritten_leaves(uint32_t xid, uint32_t root, std::vector<ddl::RelationRef>& copies) const {
  for (auto it = rewritten_.lower_bound({xid, 0}); it != rewritten_.end() && it->first.first == xid; ++it) {
    const Rewritten& r = it->second;
    if (!r.table || std::find(r.ancestors.begin(), r.ancestors.end(), root) == r.ancestors.end()) continue;
    if (!listed_in(copies, r.table->relid)) copies.push_back(*r.table);
  }
}

bool ApplyEngine::unnamed_rewrites(uint32_t xid, const std::vector<ddl::RelationRef>& copies) const {
  for (auto it = rewritten_.lower_bound({xid, 0}); it != rewritten_.end() && it->first.first == xid; ++it) {
    if (!it->second.table && !listed_in(copies, it->first.second)) return true;
  }
  return false;
}

// A resync of one table, in one chunk, recorded in the transaction that emptied (or created)
// it; the resync driver copies it. Until then the stream's changes of it are skipped: the
// copy's snapshot, taken after this transaction commits on the source, holds them.
void ApplyEngine::copy_again(const ddl::RelationRef& table, TargetSession& session) {
  std::string pattern = table.qualified();
  session.execute_simple(
      "WITH r AS (INSERT INTO dts.resync (slot, tables, state, chunks) VALUES (" + quote_literal(slot_) + ", " +
          quote_literal(pattern) + ", 'COPYING', 1) RETURNING id) "
          "INSERT INTO dts.copy_chunk (slot, relid, generation, chunk, table_name, key_column) SELECT " +
          quote_literal(slot_) + ", " + std::to_string(table.relid) + ", r.id, 0, " + quote_literal(pattern) +
          ", '' FROM r",
      ChangeContext{pattern, "", txn_commit_lsn_, "a resync request"});
  CopiedTable copied;
  CopiedChunk chunk;
  chunk.index = 0;
  chunk.state = ChunkState::kPending;
  copied.chunks.push_back(std::move(chunk));
  copied.generation = kUnknownGeneration;  // the request's id: when the resync driver takes it up
  reconciler_.add(table.relid, std::move(copied), 0);
  // (A savepoint rolled back around the schema change of a streamed transaction is not seen
  // here: its table stays skipped. Known gap, README.)
  if (stream_xid_ != 0) copies_in_streams_[stream_xid_].push_back(table.relid);
  spdlog::info("{} is copied again after this schema change (its new rows are not in the stream)", pattern);
}

}  // namespace dts::apply
