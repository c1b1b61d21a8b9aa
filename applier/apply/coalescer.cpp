#include "apply/coalescer.hpp"

#include <algorithm>

namespace dts::apply {
namespace proto = dts::protocol;

std::string Coalescer::key_of(const decode::Relation& rel, const decode::Values& values) {
  std::string key;
  for (size_t col : rel.key_columns) {
    const proto::Value& v = values[col];
    key.push_back(static_cast<char>(v.kind));
    if (v.kind == proto::ValueKind::kInt) {
      key.append(reinterpret_cast<const char*>(&v.int_value), sizeof(v.int_value));
    } else {
      uint64_t len = v.bytes.len;
      key.append(reinterpret_cast<const char*>(&len), sizeof(len));
      key.append(reinterpret_cast<const char*>(v.bytes.data), v.bytes.len);
    }
  }
  return key;
}

void Coalescer::store(PendingRow& row, size_t col, const proto::Value& v) {
  proto::Value copy = v;
  if (v.kind == proto::ValueKind::kText || v.kind == proto::ValueKind::kBinary) {
    row.owned[col].assign(reinterpret_cast<const char*>(v.bytes.data), v.bytes.len);
    copy.bytes.data = nullptr;  // set by repoint() when the row is taken
  }
  row.values[col] = copy;
}

void Coalescer::add(const decode::Relation& rel, bool is_insert, const decode::Values& values, Lsn lsn) {
  auto [it, fresh] = relations_.try_emplace(rel.relid);
  PerRelation& per = it->second;
  if (fresh) order_.push_back(rel.relid);
  per.relation = &rel;
  std::string key = key_of(rel, values);
  auto found = per.index.find(key);
  if (found == per.index.end()) {
    PendingRow row;
    row.is_insert = is_insert;
    row.lsn = lsn;
    row.values.resize(values.size());
    row.owned.resize(values.size());
    for (size_t c = 0; c < values.size(); ++c) store(row, c, values[c]);
    per.index.emplace(std::move(key), per.rows.size());
    per.rows.push_back(std::move(row));
    rows_++;
    return;
  }
  // A later image of the same row: its values win, except where it left a TOAST value
  // unchanged (then the earlier image's value, or "unchanged" again, stands).
  PendingRow& row = per.rows[found->second];
  for (size_t c = 0; c < values.size(); ++c) {
    if (values[c].kind != proto::ValueKind::kUnchangedToast) store(row, c, values[c]);
  }
}

bool Coalescer::has(uint32_t relid) const { return relations_.count(relid) != 0; }

namespace {

// Rows moved in their vectors (short strings move their bytes): point values at the bytes now.
void repoint(std::vector<PendingRow>& rows) {
  for (PendingRow& row : rows) {
    for (size_t c = 0; c < row.values.size(); ++c) {
      proto::Value& v = row.values[c];
      if (v.kind == proto::ValueKind::kText || v.kind == proto::ValueKind::kBinary)
        v.bytes.data = reinterpret_cast<const uint8_t*>(row.owned[c].data());
    }
  }
}

}  // namespace

std::vector<Coalescer::Batch> Coalescer::take(uint32_t relid) {
  std::vector<Batch> out;
  auto it = relations_.find(relid);
  if (it == relations_.end()) return out;
  out.push_back(Batch{it->second.relation, std::move(it->second.rows)});
  repoint(out.back().rows);
  rows_ -= out.back().rows.size();
  relations_.erase(it);
  order_.erase(std::find(order_.begin(), order_.end(), relid));
  return out;
}

std::vector<Coalescer::Batch> Coalescer::take_all() {
  std::vector<Batch> out;
  for (uint32_t relid : order_) {
    auto& per = relations_[relid];
    out.push_back(Batch{per.relation, std::move(per.rows)});
    repoint(out.back().rows);
  }
  relations_.clear();
  order_.clear();
  rows_ = 0;
  return out;
}

}  // namespace dts::apply
