#include "apply/copy_reconciler.hpp"

#include <algorithm>

#include "apply/sql_builder.hpp"
#include "common/error.hpp"
#include "common/parse.hpp"

namespace dts::apply {
namespace proto = dts::protocol;

std::optional<int64_t> integer_key(const decode::Column& column, const proto::Value& value) {
  switch (value.kind) {
    case proto::ValueKind::kInt: return value.int_value;
    case proto::ValueKind::kBinary: {
      size_t n = value.bytes.len;
      if (n != 2 && n != 4 && n != 8) return std::nullopt;
      uint64_t v = 0;
      for (size_t i = 0; i < n; ++i) v = (v << 8) | value.bytes.data[i];
      if (n == 2) return static_cast<int16_t>(v);
      if (n == 4) return static_cast<int32_t>(v);
      return static_cast<int64_t>(v);
    }
    case proto::ValueKind::kText: {
      std::string text(reinterpret_cast<const char*>(value.bytes.data), value.bytes.len);
      try {
        return parse_int64(text, "the key of " + column.name);
      } catch (const Error&) {
        return std::nullopt;
      }
    }
    default: return std::nullopt;
  }
}

namespace {

bool all_written(const std::unordered_map<uint32_t, CopiedTable>& tables, uint32_t relid) {
  auto t = tables.find(relid);
  return t == tables.end() || std::all_of(t->second.chunks.begin(), t->second.chunks.end(),
                                          [](const CopiedChunk& c) { return c.state == ChunkState::kDone; });
}

}  // namespace

void CopyReconciler::load(const pg::Connection& target, const std::string& slot, Lsn resume) {
  if (target.query_value("SELECT to_regclass('dts.copy_chunk') IS NOT NULL") != "t") return;
  // Per table, its latest copy (a resync supersedes the first copy): the chunks written after
  // `resume`, and those not written yet (a resync under way: their changes are skipped until
  // they are read).
  pg::Result r = target.exec_params(
      "SELECT relid, key_column, chunk, lo, hi, snapshot, coalesce(snapshot_lsn, '0/0')::text, generation FROM dts.copy_chunk c "
      "WHERE slot = $1 AND generation = (SELECT max(generation) FROM dts.copy_chunk d "
      "  WHERE d.slot = c.slot AND d.relid = c.relid) "
      "AND (snapshot IS NULL OR snapshot_lsn > $2::pg_lsn)",
      {slot, format_lsn(resume)});
  std::unordered_map<uint32_t, CopiedTable> tables;
  Lsn horizon = 0;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    auto relid = static_cast<uint32_t>(parse_int64(PQgetvalue(r.get(), i, 0), "a chunk's relid"));
    CopiedChunk c;
    c.index = static_cast<int>(parse_int64(PQgetvalue(r.get(), i, 2), "a chunk's number"));
    if (!PQgetisnull(r.get(), i, 3)) c.lo = parse_int64(PQgetvalue(r.get(), i, 3), "a chunk's lower bound");
    if (!PQgetisnull(r.get(), i, 4)) c.hi = parse_int64(PQgetvalue(r.get(), i, 4), "a chunk's upper bound");
    if (PQgetisnull(r.get(), i, 5)) {
      c.state = ChunkState::kPending;
    } else {
      auto snapshot = pg::Snapshot::parse(PQgetvalue(r.get(), i, 5));
      if (!snapshot)
        throw Error(ErrorKind::kInternal, std::string("dts.copy_chunk holds a malformed snapshot: ") + PQgetvalue(r.get(), i, 5));
      c.snapshot = std::move(*snapshot);
      horizon = std::max(horizon, parse_lsn(PQgetvalue(r.get(), i, 6)).value_or(0));
    }
    CopiedTable& t = tables[relid];
    t.key_column = PQgetvalue(r.get(), i, 1);
    t.generation = parse_int64(PQgetvalue(r.get(), i, 7), "a chunk's generation");
    t.chunks.push_back(std::move(c));
  }
  for (auto& [relid, t] : tables) add(relid, std::move(t), horizon);
}

void CopyReconciler::add(uint32_t relid, CopiedTable table, Lsn snapshot_lsn) {
  std::sort(table.chunks.begin(), table.chunks.end(), [](const CopiedChunk& a, const CopiedChunk& b) {
    return a.lo.value_or(INT64_MIN) < b.lo.value_or(INT64_MIN) || (!a.lo && b.lo);
  });
  std::lock_guard<std::mutex> lock(mu_);
  rows_read_.erase(relid);
  tables_[relid] = std::move(table);
  active_ = true;
  horizon_ = std::max(horizon_, snapshot_lsn);
}

void CopyReconciler::forget(uint32_t relid) {
  std::lock_guard<std::mutex> lock(mu_);
  tables_.erase(relid);
  rows_read_.erase(relid);
  active_ = !tables_.empty();
}

void CopyReconciler::add_row_read(uint32_t relid, int64_t key, pg::Snapshot snapshot, Lsn snapshot_lsn) {
  std::lock_guard<std::mutex> lock(mu_);
  rows_read_[relid][key] = std::move(snapshot);
  horizon_ = std::max(horizon_, snapshot_lsn);
}

void CopyReconciler::begin(uint32_t xid, Lsn commit_lsn) {
  std::lock_guard<std::mutex> lock(mu_);
  xid_ = xid;
  // Seen by a snapshot means committed before it was taken, so before the WAL insert position
  // read just after: a transaction committed at or past the latest one is in no chunk. Tables
  // with chunks not written yet stay.
  if (commit_lsn < horizon_) return;
  for (auto it = tables_.begin(); it != tables_.end();) {
    if (all_written(tables_, it->first)) {
      rows_read_.erase(it->first);
      it = tables_.erase(it);
    } else {
      ++it;
    }
  }
  active_ = !tables_.empty();
}

CopiedChunk* CopyReconciler::find(uint32_t relid, int index) {
  auto t = tables_.find(relid);
  if (t == tables_.end()) return nullptr;
  for (auto& c : t->second.chunks)
    if (c.index == index) return &c;
  return nullptr;
}

CopiedChunk* CopyReconciler::find(uint32_t relid, int64_t generation, int index) {
  auto t = tables_.find(relid);
  if (t == tables_.end() || t->second.generation != generation) return nullptr;  // another copy's
  return find(relid, index);
}

void CopyReconciler::adopt(uint32_t relid, int64_t generation) {
  std::lock_guard<std::mutex> lock(mu_);
  auto t = tables_.find(relid);
  if (t != tables_.end() && t->second.generation == kUnknownGeneration) t->second.generation = generation;
}

bool CopyReconciler::start_reading(uint32_t relid, int64_t generation, int index, const pg::Snapshot& snapshot,
                                   Lsn snapshot_lsn) {
  std::lock_guard<std::mutex> lock(mu_);
  CopiedChunk* c = find(relid, generation, index);
  if (c == nullptr) return true;
  for (uint32_t xid : c->skipped)
    if (!snapshot.sees(xid)) return false;  // committed in the WAL, not visible yet: a moment later it is
  c->state = ChunkState::kReading;
  c->snapshot = snapshot;
  c->skipped.clear();
  horizon_ = std::max(horizon_, snapshot_lsn);
  return true;
}

void CopyReconciler::finish_reading(uint32_t relid, int64_t generation, int index) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (CopiedChunk* c = find(relid, generation, index)) c->state = ChunkState::kDone;
  }
  changed_.notify_all();
}

void CopyReconciler::give_back(uint32_t relid, int64_t generation, int index) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The transactions its snapshot saw were skipped; any newer snapshot sees them too.
    CopiedChunk* c = find(relid, generation, index);
    if (c != nullptr && c->state == ChunkState::kReading) c->state = ChunkState::kPending;
  }
  changed_.notify_all();
}

void CopyReconciler::wait_not_reading(uint32_t relid) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] {
    auto t = tables_.find(relid);
    return !failure_.empty() || t == tables_.end() ||
           std::none_of(t->second.chunks.begin(), t->second.chunks.end(),
                        [](const CopiedChunk& c) { return c.state == ChunkState::kReading; });
  });
  if (!failure_.empty()) throw Error(ErrorKind::kApply, "the copy of a table being copied again failed: " + failure_);
}

void CopyReconciler::fail(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_.empty()) failure_ = why;
  }
  changed_.notify_all();
}

void CopyReconciler::wait_for_chunk() {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [this] {
    CopiedChunk* c = find(waiting_for_.first, waiting_for_.second);
    // Given back, it is pending: the change is skipped now (reconcile_row asks again).
    return !failure_.empty() || c == nullptr || c->state != ChunkState::kReading;
  });
  if (!failure_.empty()) throw Error(ErrorKind::kApply, "the copy of a table being copied again failed: " + failure_);
}


bool CopyReconciler::settled(uint32_t relid) const {
  std::lock_guard<std::mutex> lock(mu_);
  return all_written(tables_, relid);
}

pg::Result CopyReconciler::read_row_now(const pg::Connection& source, const decode::Relation& rel, int64_t key) {
  const CopiedTable* t = table(rel.relid);
  if (t == nullptr || t->key_column.empty())
    throw Error(ErrorKind::kInternal, "no integer key to read " + qualified_name(rel) + " again by");
  std::string cols;
  for (const auto& c : rel.columns) cols += (cols.empty() ? "" : ", ") + quote_ident(c.name);
  source.exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
  pg::Result snap = source.exec("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text");
  pg::Result found = source.exec_params("SELECT " + cols + " FROM ONLY " + qualified_name(rel) + " WHERE " +
                                            quote_ident(t->key_column) + " = $1",
                                        {std::to_string(key)});
  source.exec("COMMIT");
  auto snapshot = pg::Snapshot::parse(PQgetvalue(snap.get(), 0, 0));
  if (!snapshot) throw Error(ErrorKind::kSource, "the source gave a malformed snapshot");
  add_row_read(rel.relid, key, std::move(*snapshot), parse_lsn(PQgetvalue(snap.get(), 0, 1)).value_or(0));
  return found;
}

std::optional<int64_t> CopyReconciler::new_key(const decode::RowChange& row) const {
  const CopiedTable* t = table(row.relation->relid);
  if (t == nullptr || row.new_values == nullptr) return std::nullopt;
  const decode::Relation& rel = *row.relation;
  for (size_t col : rel.key_columns)
    if (rel.columns[col].name == t->key_column) return integer_key(rel.columns[col], (*row.new_values)[col]);
  return std::nullopt;
}

const CopiedTable* CopyReconciler::table(uint32_t relid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(relid);
  return it == tables_.end() ? nullptr : &it->second;
}

// Whether the row's chunk holds the current transaction's change of it: yes (skip), no
// (apply), or not known until the chunk being read is written (wait).
CopyReconciler::Held CopyReconciler::held(const decode::Relation& rel, const decode::Values& values, bool key_only) {
  std::lock_guard<std::mutex> lock(mu_);
  auto found = tables_.find(rel.relid);
  if (found == tables_.end() || found->second.chunks.empty()) return Held::kNo;
  CopiedTable& t = found->second;
  CopiedChunk* c = nullptr;
  if (t.key_column.empty()) {
    c = &t.chunks.front();
  } else {
    std::optional<int64_t> key;
    for (size_t k = 0; k < rel.key_columns.size() && !key; ++k) {
      size_t col = rel.key_columns[k];
      if (rel.columns[col].name != t.key_column) continue;
      size_t at = key_only ? k : col;
      if (at < values.size()) key = integer_key(rel.columns[col], values[at]);
    }
    if (!key)
      throw Error(ErrorKind::kApply, "cannot tell which copied chunk a change of " + rel.schema + "." + rel.name +
                                         " belongs to: its key column \"" + t.key_column +
                                         "\" is not in the change (was the key changed during the copy?); "
                                         "copy the table again with resync");
    auto read = rows_read_.find(rel.relid);
    if (read != rows_read_.end()) {
      auto row = read->second.find(*key);
      if (row != read->second.end()) return row->second.sees(xid_) ? Held::kYes : Held::kNo;
    }
    auto it = std::upper_bound(t.chunks.begin(), t.chunks.end(), *key, [](int64_t k, const CopiedChunk& ch) {
      return ch.lo.has_value() && k < *ch.lo;
    });
    if (it == t.chunks.begin()) return Held::kNo;  // below every chunk: cannot happen with an unbounded first
    c = &*std::prev(it);
    if (c->hi && *key >= *c->hi) return Held::kNo;  // in no chunk (a gap cannot happen either)
  }
  switch (c->state) {
    case ChunkState::kPending:
      // Its snapshot, taken later, must see this transaction (start_reading checks).
      if (c->skipped.empty() || c->skipped.back() != xid_) c->skipped.push_back(xid_);
      return Held::kYes;
    case ChunkState::kReading:
      if (c->snapshot.sees(xid_)) return Held::kYes;
      waiting_for_ = {rel.relid, c->index};
      return Held::kWait;
    case ChunkState::kDone: break;
  }
  return c->snapshot.sees(xid_) ? Held::kYes : Held::kNo;
}

bool CopyReconciler::copied(const decode::Relation& rel, const decode::Values& values, bool key_only) {
  return held(rel, values, key_only) == Held::kYes;
}

RowFate CopyReconciler::fate(const decode::RowChange& row) {
  const decode::Relation& rel = *row.relation;
  if (table(rel.relid) == nullptr) return RowFate::kApply;
  auto decided = [](Held h) { return h == Held::kYes ? RowFate::kSkip : RowFate::kApply; };
  bool key_only = row.old_kind == proto::OldTuple::kKey;
  Held now = Held::kNo;
  if (row.kind == decode::RowKind::kInsert) {
    now = held(rel, *row.new_values, false);
    return now == Held::kWait ? RowFate::kWait : decided(now);
  }
  if (row.kind == decode::RowKind::kDelete) {
    now = held(rel, *row.old_values, key_only);
    return now == Held::kWait ? RowFate::kWait : decided(now);
  }
  Held new_in = held(rel, *row.new_values, false);
  Held old_in = row.old_kind == proto::OldTuple::kNone ? new_in : held(rel, *row.old_values, key_only);
  if (new_in == Held::kWait || old_in == Held::kWait) return RowFate::kWait;
  if (old_in == new_in) return decided(new_in);
  if (old_in == Held::kNo) return RowFate::kDeleteOld;
  bool whole = std::none_of(row.new_values->begin(), row.new_values->end(),
                            [](const proto::Value& v) { return v.kind == proto::ValueKind::kUnchangedToast; });
  return whole ? RowFate::kInsertNew : RowFate::kReadNew;
}

std::vector<std::string> CopyReconciler::truncate(std::vector<const decode::Relation*>& relations) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> deletes;
  std::vector<const decode::Relation*> whole;
  for (const auto* rel : relations) {
    // A row read again outside its chunk goes with the truncate like the rest: a later change
    // of its key is decided by its chunk again (the read's snapshot, taken later, may have
    // seen both the truncate and an insert after it, which would then be skipped).
    rows_read_.erase(rel->relid);
    auto found = tables_.find(rel->relid);
    CopiedTable* t = found == tables_.end() ? nullptr : &found->second;
    std::vector<const CopiedChunk*> older;
    if (t != nullptr) {
      for (auto& c : t->chunks) {
        if (c.state == ChunkState::kPending) {
          // Nothing of it on the target yet; read later, it must read the table after this
          // truncate (start_reading refuses a snapshot that does not see it).
          if (c.skipped.empty() || c.skipped.back() != xid_) c.skipped.push_back(xid_);
          continue;
        }
        if (!c.snapshot.sees(xid_)) older.push_back(&c);
      }
    }
    if (t == nullptr || older.size() == t->chunks.size()) {
      whole.push_back(rel);
      continue;
    }
    for (const CopiedChunk* c : older) {
      std::string key = quote_ident(t->key_column);
      std::string where = c->lo ? key + " >= " + std::to_string(*c->lo) : "";
      if (c->hi) where += (where.empty() ? "" : " AND ") + key + " < " + std::to_string(*c->hi);
      deletes.push_back("DELETE FROM ONLY " + qualified_name(*rel) + (where.empty() ? "" : " WHERE " + where));
    }
  }
  relations = std::move(whole);
  return deletes;
}

}  // namespace dts::apply
