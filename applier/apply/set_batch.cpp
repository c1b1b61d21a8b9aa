#include "apply/set_batch.hpp"

#include "apply/sql_builder.hpp"

namespace dts::apply {
namespace proto = dts::protocol;

namespace {

bool unchanged(const proto::Value& v) { return v.kind == proto::ValueKind::kUnchangedToast; }

size_t value_bytes(const proto::Value& v) { return v.bytes.len + 8; }

void append_value(std::string& out, const proto::Value& v) {
  out.push_back(static_cast<char>(v.kind));
  if (v.kind == proto::ValueKind::kInt) {
    out.append(reinterpret_cast<const char*>(&v.int_value), sizeof v.int_value);
    return;
  }
  uint32_t len = static_cast<uint32_t>(v.bytes.len);
  out.append(reinterpret_cast<const char*>(&len), sizeof len);
  out.append(reinterpret_cast<const char*>(v.bytes.data), v.bytes.len);
}

// The value of match column i of `row` in `shape`: a key-only old tuple holds the key's
// values by position, the other tuples every column.
const proto::Value& match_value(const decode::RowChange& row, const SetShape& shape, size_t i) {
  if (shape.full) return (*row.old_values)[shape.match[i]];
  if (row.old_kind == proto::OldTuple::kKey) return (*row.old_values)[i];
  return (*row.new_values)[shape.match[i]];
}

std::string match_image(const decode::RowChange& row, const SetShape& shape) {
  std::string out;
  for (size_t i = 0; i < shape.match.size(); ++i) append_value(out, match_value(row, shape, i));
  return out;
}

// The row an UPDATE leaves, over the match columns (FULL: where a later change would find it).
std::string new_image(const decode::RowChange& row, const SetShape& shape) {
  std::string out;
  for (size_t col : shape.match) append_value(out, (*row.new_values)[col]);
  return out;
}

}  // namespace

bool SetBatch::shape_of(const decode::RowChange& row, SetShape& shape) {
  const decode::Relation& rel = *row.relation;
  shape.relation = &rel;
  shape.match.clear();
  shape.set.clear();
  shape.is_delete = row.kind == decode::RowKind::kDelete;
  shape.full = row.old_kind == proto::OldTuple::kFull;
  if (row.kind == decode::RowKind::kInsert) return false;
  if (shape.full) {
    for (size_t i = 0; i < rel.columns.size(); ++i)
      if (!unchanged((*row.old_values)[i])) shape.match.push_back(i);
  } else if (shape.is_delete ? row.old_kind == proto::OldTuple::kKey : row.old_kind == proto::OldTuple::kNone) {
    shape.match = rel.key_columns;
  } else {
    return false;  // an UPDATE of the key, or no identity at all
  }
  if (shape.match.empty()) return false;
  if (shape.is_delete) return true;
  for (size_t i = 0; i < rel.columns.size(); ++i) {
    bool left = unchanged((*row.new_values)[i]);
    if (left && shape.full) return false;
    // A key kept is not set again (GENERATED ALWAYS identity keys refuse it).
    if (!left && (shape.full || !rel.columns[i].is_key)) shape.set.push_back(i);
  }
  return !shape.set.empty();
}

bool SetBatch::accepts(const SetShape& shape, const decode::RowChange& row) {
  if (rows_ == 0) return true;
  if (!(shape == shape_) || full()) return false;
  if (shape.full && shape.is_delete) return true;  // identical rows are each taken once
  return changed_.count(match_image(row, shape)) == 0;
}

void SetBatch::add(const SetShape& shape, const decode::RowChange& row, Lsn lsn) {
  if (rows_ == 0) shape_ = shape;
  const decode::Relation& rel = *shape.relation;
  for (size_t i = 0; i < shape.match.size(); ++i) {
    const proto::Value& v = match_value(row, shape, i);
    params_.add_copy(rel.columns[shape.match[i]], v);
    bytes_ += value_bytes(v);
  }
  for (size_t col : shape.set) {
    const proto::Value& v = (*row.new_values)[col];
    params_.add_copy(rel.columns[col], v);
    bytes_ += value_bytes(v);
  }
  if (!shape.full)
    changed_.insert(match_image(row, shape));
  else if (!shape.is_delete)
    changed_.insert(new_image(row, shape));
  lsns_.push_back(lsn);
  rows_++;
}

void SetBatch::clear() {
  params_.clear();
  changed_.clear();
  lsns_.clear();
  rows_ = 0;
  bytes_ = 0;
}

std::string SetBatch::statement_key() const {
  std::string key = "S";
  key += shape_.is_delete ? 'D' : 'U';
  key += shape_.full ? 'F' : 'K';
  for (size_t c : shape_.match) key += std::to_string(c) + ",";
  key += '|';
  for (size_t c : shape_.set) key += std::to_string(c) + ",";
  return key;
}

std::string SetBatch::statement() const {
  const decode::Relation& rel = *shape_.relation;
  return shape_.is_delete ? build_delete_set(rel, shape_.match, shape_.full)
                          : build_update_set(rel, shape_.match, shape_.set, shape_.full);
}

}  // namespace dts::apply
