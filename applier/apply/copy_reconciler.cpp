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

void CopyReconciler::load(const pg::Connection& target, const std::string& slot, Lsn resume) {
  if (target.query_value("SELECT to_regclass('dts.copy_chunk') IS NOT NULL") != "t") return;
  pg::Result r = target.exec_params(
      "SELECT relid, key_column, lo, hi, snapshot, snapshot_lsn::text FROM dts.copy_chunk "
      "WHERE slot = $1 AND snapshot IS NOT NULL AND snapshot_lsn > $2::pg_lsn ORDER BY relid, lo NULLS FIRST",
      {slot, format_lsn(resume)});
  std::unordered_map<uint32_t, CopiedTable> tables;
  Lsn horizon = 0;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    auto relid = static_cast<uint32_t>(parse_int64(PQgetvalue(r.get(), i, 0), "a chunk's relid"));
    auto snapshot = pg::Snapshot::parse(PQgetvalue(r.get(), i, 4));
    if (!snapshot)
      throw Error(ErrorKind::kInternal, std::string("dts.copy_chunk holds a malformed snapshot: ") + PQgetvalue(r.get(), i, 4));
    CopiedChunk c;
    if (!PQgetisnull(r.get(), i, 2)) c.lo = parse_int64(PQgetvalue(r.get(), i, 2), "a chunk's lower bound");
    if (!PQgetisnull(r.get(), i, 3)) c.hi = parse_int64(PQgetvalue(r.get(), i, 3), "a chunk's upper bound");
    c.snapshot = std::move(*snapshot);
    CopiedTable& t = tables[relid];
    t.key_column = PQgetvalue(r.get(), i, 1);
    t.chunks.push_back(std::move(c));
    horizon = std::max(horizon, parse_lsn(PQgetvalue(r.get(), i, 5)).value_or(0));
  }
  tables_ = std::move(tables);
  horizon_ = horizon;
}

void CopyReconciler::add(uint32_t relid, CopiedTable table, Lsn snapshot_lsn) {
  std::sort(table.chunks.begin(), table.chunks.end(), [](const CopiedChunk& a, const CopiedChunk& b) {
    return a.lo.value_or(INT64_MIN) < b.lo.value_or(INT64_MIN) || (!a.lo && b.lo);
  });
  tables_[relid] = std::move(table);
  horizon_ = std::max(horizon_, snapshot_lsn);
}

void CopyReconciler::add_row_read(uint32_t relid, int64_t key, pg::Snapshot snapshot, Lsn snapshot_lsn) {
  rows_read_[relid][key] = std::move(snapshot);
  horizon_ = std::max(horizon_, snapshot_lsn);
}

void CopyReconciler::begin(uint32_t xid, Lsn commit_lsn) {
  xid_ = xid;
  // Seen by a snapshot means committed before it was taken, so before the WAL insert position
  // read just after: a transaction committed at or past the latest one is in no chunk.
  if (commit_lsn >= horizon_) {
    tables_.clear();
    rows_read_.clear();
  }
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
  auto it = tables_.find(relid);
  return it == tables_.end() ? nullptr : &it->second;
}

bool CopyReconciler::copied(const decode::Relation& rel, const decode::Values& values, bool key_only) const {
  const CopiedTable* t = table(rel.relid);
  if (t == nullptr || t->chunks.empty()) return false;
  if (t->key_column.empty()) return t->chunks.front().snapshot.sees(xid_);
  // The chunk whose range holds the row's key.
  std::optional<int64_t> key;
  for (size_t k = 0; k < rel.key_columns.size() && !key; ++k) {
    size_t col = rel.key_columns[k];
    if (rel.columns[col].name != t->key_column) continue;
    size_t at = key_only ? k : col;
    if (at < values.size()) key = integer_key(rel.columns[col], values[at]);
  }
  if (key) {
    auto read = rows_read_.find(rel.relid);
    if (read != rows_read_.end()) {
      auto row = read->second.find(*key);
      if (row != read->second.end()) return row->second.sees(xid_);
    }
  }
  if (!key)
    throw Error(ErrorKind::kApply, "cannot tell which copied chunk a change of " + rel.schema + "." + rel.name +
                                       " belongs to: its key column \"" + t->key_column +
                                       "\" is not in the change (was the key changed during the copy?); "
                                       "copy the table again with resync");
  auto it = std::upper_bound(t->chunks.begin(), t->chunks.end(), *key, [](int64_t k, const CopiedChunk& c) {
    return c.lo.has_value() && k < *c.lo;
  });
  if (it == t->chunks.begin()) return false;  // below every chunk: cannot happen with an unbounded first
  const CopiedChunk& c = *std::prev(it);
  if (c.hi && *key >= *c.hi) return false;  // in no chunk (a gap cannot happen either)
  return c.snapshot.sees(xid_);
}

RowFate CopyReconciler::fate(const decode::RowChange& row) const {
  const decode::Relation& rel = *row.relation;
  if (table(rel.relid) == nullptr) return RowFate::kApply;
  bool key_only = row.old_kind == proto::OldTuple::kKey;
  if (row.kind == decode::RowKind::kInsert) return copied(rel, *row.new_values, false) ? RowFate::kSkip : RowFate::kApply;
  if (row.kind == decode::RowKind::kDelete) return copied(rel, *row.old_values, key_only) ? RowFate::kSkip : RowFate::kApply;
  bool new_in = copied(rel, *row.new_values, false);
  bool old_in = row.old_kind == proto::OldTuple::kNone ? new_in : copied(rel, *row.old_values, key_only);
  if (old_in == new_in) return new_in ? RowFate::kSkip : RowFate::kApply;
  if (!old_in) return RowFate::kDeleteOld;
  bool whole = std::none_of(row.new_values->begin(), row.new_values->end(),
                            [](const proto::Value& v) { return v.kind == proto::ValueKind::kUnchangedToast; });
  return whole ? RowFate::kInsertNew : RowFate::kReadNew;
}

std::vector<std::string> CopyReconciler::truncate(std::vector<const decode::Relation*>& relations) const {
  std::vector<std::string> deletes;
  std::vector<const decode::Relation*> whole;
  for (const auto* rel : relations) {
    const CopiedTable* t = table(rel->relid);
    std::vector<const CopiedChunk*> older;
    if (t != nullptr)
      for (const auto& c : t->chunks)
        if (!c.snapshot.sees(xid_)) older.push_back(&c);
    if (t == nullptr || older.size() == t->chunks.size()) {
      whole.push_back(rel);
      continue;
    }
    for (const CopiedChunk* c : older) {
      std::string key = quote_ident(t->key_column);
      std::string where = c->lo ? key + " >= " + std::to_string(*c->lo) : "";
      if (c->hi) where += (where.empty() ? "" : " AND ") + key + " < " + std::to_string(*c->hi);
      deletes.push_back("DELETE FROM " + qualified_name(*rel) + (where.empty() ? "" : " WHERE " + where));
    }
  }
  relations = std::move(whole);
  return deletes;
}

}  // namespace dts::apply
