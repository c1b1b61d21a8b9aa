#include "apply/row_keys.hpp"

namespace dts::apply {
namespace proto = dts::protocol;

namespace {

constexpr uint64_t kFnvOffset = 1469598103934665603ULL;
constexpr uint64_t kFnvPrime = 1099511628211ULL;

uint64_t mix(uint64_t h, const uint8_t* data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    h ^= data[i];
    h *= kFnvPrime;
  }
  return h;
}

uint64_t mix_value(uint64_t h, const proto::Value& v) {
  uint8_t kind = static_cast<uint8_t>(v.kind);
  h = mix(h, &kind, 1);
  if (v.kind == proto::ValueKind::kInt) return mix(h, reinterpret_cast<const uint8_t*>(&v.int_value), sizeof v.int_value);
  uint64_t len = v.bytes.len;
  h = mix(h, reinterpret_cast<const uint8_t*>(&len), sizeof len);  // ("ab","c") is not ("a","bc")
  return v.bytes.data != nullptr ? mix(h, v.bytes.data, v.bytes.len) : h;
}

}  // namespace

uint64_t key_hash(const decode::Relation& rel, const decode::Values& values, bool key_only) {
  uint64_t h = mix(kFnvOffset, reinterpret_cast<const uint8_t*>(&rel.relid), sizeof rel.relid);
  for (size_t i = 0; i < rel.key_columns.size(); ++i) {
    size_t at = key_only ? i : rel.key_columns[i];
    if (at < values.size()) h = mix_value(h, values[at]);
  }
  return h;
}

void GroupKeys::record(const RowAccess& access) {
  touched_.insert(access.relid);
  if (access.kind == RowAccess::Kind::kTable || coarse_) whole_.insert(access.relid);
  if (coarse_) return;
  for (int i = 0; i < access.nkeys; ++i) rows_.insert(access.keys[i]);
  if (rows_.size() < kMaxKeys) return;
  coarse_ = true;
  std::unordered_set<uint64_t>().swap(rows_);  // its memory too
  whole_.insert(touched_.begin(), touched_.end());
}

bool GroupKeys::conflicts(const RowAccess& access) const {
  switch (access.kind) {
    case RowAccess::Kind::kAppend: return whole_.count(access.relid) > 0;  // a TRUNCATE's lock
    case RowAccess::Kind::kTable: return touched_.count(access.relid) > 0;
    case RowAccess::Kind::kKeys:
      if (whole_.count(access.relid) > 0) return true;
      for (int i = 0; i < access.nkeys; ++i)
        if (rows_.count(access.keys[i]) > 0) return true;
      return false;
  }
  return true;
}

void GroupKeys::clear() {
  if (coarse_) std::unordered_set<uint64_t>().swap(rows_);
  coarse_ = false;
  rows_.clear();
  touched_.clear();
  whole_.clear();
}

}  // namespace dts::apply
