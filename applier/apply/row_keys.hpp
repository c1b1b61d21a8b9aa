// What a group of source transactions touches on the target, as far as the order between
// groups applied on different sessions goes (parallel apply, apply_lanes.cpp). Two groups in
// flight at once must not touch the same row: the later one waits for the earlier one's commit
// before it sends the statement. A row is known by its table and key where the table has no
// other way for two rows to collide (no unique or exclusion index besides the key, no trigger
// firing); otherwise the whole table is what it touches. Keys are hashed: a collision only makes
// a group wait when it need not.
#ifndef DTS_APPLIER_APPLY_ROW_KEYS_HPP
#define DTS_APPLIER_APPLY_ROW_KEYS_HPP

#include <cstdint>
#include <unordered_set>
#include <vector>

#include "decode/decoder.hpp"

namespace dts::apply {

struct RowAccess {
  enum class Kind {
    kAppend,  // an INSERT into a table with no unique index: collides with no other row (only
              // with a TRUNCATE's lock)
    kKeys,    // the rows of these keys
    kTable,   // the whole table (no key that tells its rows apart)
  };
  Kind kind = Kind::kAppend;
  uint32_t relid = 0;
  uint64_t keys[2] = {0, 0};  // old and new key, when an UPDATE changes it
  int nkeys = 0;
};

// The hash of a row's key: `values` holds every column (positions in key_columns) or, with
// key_only, the key's values alone in key order (an old key sent under the default identity).
uint64_t key_hash(const decode::Relation& rel, const decode::Values& values, bool key_only);

class GroupKeys {
 public:
  void record(const RowAccess& access);
  bool conflicts(const RowAccess& access) const;
  bool empty() const { return touched_.empty(); }
  void clear();

 private:
  // Past this many keys (a huge transaction in one group) the group keeps only its tables, as
  // touched whole: memory stays bounded, and later groups wait for it where they share a table.
  static constexpr size_t kMaxKeys = 65536;
  std::unordered_set<uint64_t> rows_;   // key hashes (with the table in them)
  std::unordered_set<uint32_t> touched_;  // every table it changed
  std::unordered_set<uint32_t> whole_;    // tables it changed as a whole
  bool coarse_ = false;                   // past kMaxKeys: every table it touched is whole
};

}  // namespace dts::apply

#endif
